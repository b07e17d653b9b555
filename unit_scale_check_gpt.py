"""Unit-scale check: is main.py's u-µP model (`--param umup`) unit-scaled at initialisation?

u-µP's promise (graphcore-research/unit-scaling): at init, every activation, weight and
gradient has RMS close to 1. This check builds main.py's model exactly as the trainer does
(through coord_check_gpt.build), runs one forward and one backward of the mean
cross-entropy on one fixed batch of random token ids, takes no step, and reports per layer:

- activations: the RMS sqrt(mean x^2) of every hooked module output (embedding; per block its
  norm, query and key taps, attention output and the residual stream after it; the final norm;
  the logits), and four block internals recomputed from the hooked values with the block's own
  weights and multipliers (the expand output's linear and gate halves, the GeGLU output and the
  residual branch: the project output). The recomputation is checked against the model: its
  q/k must equal the taps and its residual update the block's output, or the check stops;
- weights: the RMS of every parameter;
- gradients: of every hooked activation and every parameter, as u-µP's scaled backward would
  hold them. main.py's u-µP scales the forward pass only; autograd computes true gradients,
  and u-µP's backward (default constraints) would differ from them by known constants: one
  for the residual stream's activation gradients, that over b_l inside block l's branch, and
  one per parameter for weight gradients (mup_patch/rules.py, umup_grad_scales). Adam's step
  does not change when a parameter's gradient is multiplied by a constant, except through
  eps, and the u-µP groups carry eps / that constant, so training takes u-µP's steps. The
  check multiplies the true gradients by the same constants and judges the result (the true
  RMS is printed beside it).

Expected RMS is 1, except where µP's rules make a value shrink with width at init, which
u-µP keeps, and the check holds these to their prediction instead:
- the logits: u-µP's readout is µP's (output x 1/fan_in, times the loss's softmax multiplier),
  so they are umup_loss_mult / sqrt(width);
- the q and k gradients: they come through the softmax's µP scale umup_attn_mult / qk_width,
  so they are about umup_attn_mult / sqrt(qk_width), like the attention logits (mup's README
  exemption: "the attention logits ... can shrink to 0 at initialization in µP").
The gradient of the position-bias scalar is printed, not judged: u-µP has no such parameter.

Criterion: every judged value within a factor of its expected value: activations 1.25, weights
1.1 (N(0,1) draws; gains and the scalar are exactly 1), gradients 2 (`--tolerance A W G`).
Exit 0 when all pass, 1 otherwise, 2 on bad input.

    python unit_scale_check_gpt.py                          # width 256, depth 4, 4 x 128 tokens
    python unit_scale_check_gpt.py --width 1024 --depth 8
    python unit_scale_check_gpt.py -- --umup-act-mult 2     # after --: main.py flags
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import config
import coord_check_gpt
import main
import runlog
from mup_patch.rules import umup_grad_scales

TOLERANCE = {"activation": 1.25, "weight": 1.1, "gradient": 2.5}
RECOMPUTED = ("expand.linear", "expand.gate", "geglu", "branch")  # block internals, forward only
NOT_JUDGED_GRADS = ("position_bias_mult",)


def rms(x: torch.Tensor) -> float:
    return x.detach().double().pow(2).mean().sqrt().item()


def block_internals(block, x: torch.Tensor, normed: torch.Tensor, query: torch.Tensor,
                    key: torch.Tensor, attention: torch.Tensor, out: torch.Tensor) -> dict:
    """The expand halves, GeGLU output and residual branch of one block, recomputed from its
    input, its hooked norm and attention outputs and its own weights and multipliers, after
    checking the recomputation against the block's q/k taps and its output."""
    cfg = block.cfg
    mult = {name: 1.0 if getattr(block, name) is None else getattr(block, name).item()
            for name in ("expand_mult", "act_mult", "glu_mult", "project_mult")}  # None: not applied
    with torch.no_grad():
        expanded = F.linear(normed, block.expand) * mult["expand_mult"]
        q, k, linear, gate = expanded.split((cfg.qk_dim, cfg.qk_dim, cfg.expand_dim, cfg.expand_dim), dim=-1)
        geglu = linear * F.gelu(gate * mult["act_mult"]) * mult["glu_mult"]
        local = geglu[..., :cfg.expand_dim - cfg.width]
        branch = F.linear(torch.cat([local, attention], dim=-1), block.project) * mult["project_mult"]
        skip, scale = (1.0, 1.0) if block.residual_scales is None else block.residual_scales.tolist()
        rebuilt = x * skip + branch * scale
    for name, ours, theirs in (("query", q, query), ("key", k, key), ("block output", rebuilt, out)):
        if not torch.allclose(ours, theirs, rtol=1e-4, atol=1e-5):
            raise RuntimeError(f"unit_scale_check's recomputed {name} differs from the model's "
                               f"(max |diff| {(ours - theirs).abs().max().item():.3g}): "
                               "update block_internals to follow LatentAttentionBlock.forward")
    return {"expand.linear": linear, "expand.gate": gate, "geglu": geglu, "branch": branch}


def run_unit_scale_check(width: int = 256, depth: int = 4, seq_len: int = 128, batch: int = 4,
                         seed: int = 0, extra: list[str] = (), tolerance: dict | None = None) -> dict:
    """Measure and judge; returns a JSON-serialisable dict: config, activations and params
    (each row: name, rms, expected, grad_rms, grad_true_rms, ok flags), passed, failing."""
    tolerance = {**TOLERANCE, **(tolerance or {})}
    tokens = batch * seq_len
    # --batch-tokens = the batch's tokens: the u-µP gradient constants are per backward pass.
    extra = ["--batch-tokens", str(tokens), *extra]
    args, parametrization, model = coord_check_gpt.build("umup", width, depth=depth, seq_len=seq_len,
                                                        seed=seed, lr=1.0, extra=extra)
    if parametrization.name != "umup":
        raise ValueError("the unit-scale check is for --param umup")
    inputs, targets = coord_check_gpt.fixed_batch(batch, seq_len, seed=0)
    model.train()
    outputs: dict[str, torch.Tensor] = {}
    grads: dict[str, torch.Tensor] = {}
    block_inputs: dict[str, torch.Tensor] = {}

    def hook(name):
        def record(module, inputs_, output):
            outputs[name] = output
            if isinstance(module, main.LatentAttentionBlock):
                block_inputs[name] = inputs_[0].detach()
            if output.requires_grad:
                output.register_hook(lambda g: grads.__setitem__(name, g.detach()))
        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in model.named_modules()
               if name and not isinstance(module, torch.nn.ModuleList)]
    try:
        logits = model(inputs)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        loss.backward()
    finally:
        for handle in handles:
            handle.remove()

    scales = parametrization.rules
    activation_scale = parametrization.activation_grad_scale
    branch_scales = parametrization.branch_grad_scales
    logits_scale = umup_grad_scales(tokens=tokens, width=width, vocab_size=model.cfg.vocab_size,
                                    loss_mult=args.umup_loss_mult)["logits"]
    expected_logits = args.umup_loss_mult / math.sqrt(width)
    expected_qk_grad = args.umup_attn_mult / math.sqrt(args.qk_dim)

    activations = []
    for name in outputs:
        parts = name.split(".")
        if parts[0] == "blocks" and len(parts) == 2:  # the internals of the block it closes
            block = model.blocks[int(parts[1])]
            inside = block_internals(block, block_inputs[name], outputs[f"{name}.norm"].detach(),
                                     outputs[f"{name}.query_tap"].detach(), outputs[f"{name}.key_tap"].detach(),
                                     outputs[f"{name}.attention_tap"].detach(), outputs[name].detach())
            for part, value in inside.items():
                activations.append({"name": f"{name}.{part}", "rms": rms(value), "expected": 1.0,
                                    "grad_rms": None, "grad_true_rms": None, "grad_expected": None,
                                    "recomputed": True})
        if name == "readout":
            expected, scale = expected_logits, logits_scale
        elif parts[0] == "blocks" and len(parts) > 2:  # inside block l's residual branch
            expected, scale = 1.0, activation_scale * branch_scales[int(parts[1])]
        else:  # the residual stream: embedding, block outputs, final norm
            expected, scale = 1.0, activation_scale
        g = grads.get(name)
        activations.append({"name": name, "rms": rms(outputs[name]), "expected": expected,
                            "grad_rms": None if g is None else rms(g) * scale,
                            "grad_true_rms": None if g is None else rms(g),
                            "grad_expected": expected_qk_grad if name.endswith(("query_tap", "key_tap")) else 1.0,
                            "recomputed": False})
    activations.sort(key=lambda r: activation_order(r["name"]))
    params = []
    for name, p in model.named_parameters():
        judged = not name.endswith(NOT_JUDGED_GRADS)
        params.append({"name": name, "shape": list(p.shape), "rms": rms(p), "expected": 1.0,
                       "grad_rms": rms(p.grad) * scales[name].grad_scale, "grad_true_rms": rms(p.grad),
                       "grad_scale": scales[name].grad_scale, "grad_judged": judged})

    def within(value, expected, tol):
        return value is not None and expected / tol <= value <= expected * tol

    for row in activations:
        row["ok"] = within(row["rms"], row["expected"], tolerance["activation"])
        row["grad_ok"] = True if row["grad_rms"] is None else \
            within(row["grad_rms"], row["grad_expected"], tolerance["gradient"])
    for row in params:
        row["ok"] = within(row["rms"], row["expected"], tolerance["weight"])
        row["grad_ok"] = within(row["grad_rms"], 1.0, tolerance["gradient"]) if row["grad_judged"] else True
    failing = [r["name"] + suffix for rows in (activations, params) for r in rows
               for suffix, ok in (("", r["ok"]), (" (grad)", r["grad_ok"])) if not ok]
    return {"config": {"width": width, "depth": depth, "seq_len": seq_len, "batch": batch, "seed": seed,
                       "tokens": tokens, "main_args": list(extra), "tolerance": tolerance,
                       "loss": loss.item(), "activation_grad_scale": activation_scale,
                       "branch_grad_scales": list(branch_scales), "logits_grad_scale": logits_scale,
                       "expected_logits_rms": expected_logits, "expected_qk_grad_rms": expected_qk_grad,
                       "op_scales": {"expand": parametrization.expand_mult,
                                     "project": parametrization.project_mult,
                                     "gelu_input": parametrization.act_mult,
                                     "geglu_output": parametrization.glu_mult,
                                     "attention_output": parametrization.attention_out_mult,
                                     "attention_softmax": parametrization.attention_scale,
                                     "readout_input": parametrization.readout_mult,
                                     "residual_taus": list(parametrization.residual_taus)},
                       "torch": torch.__version__},
            "activations": activations, "params": params, "passed": not failing, "failing": failing}


def activation_order(name: str) -> tuple:
    parts = name.split(".")
    if parts[0] == "embedding":
        return (0,)
    if parts[0] == "blocks":
        inner = ["norm", "query_tap", "key_tap", "expand.linear", "expand.gate", "geglu", "attention_tap",
                 "branch", ""]
        sub = ".".join(parts[2:])
        return (1, int(parts[1]), inner.index(sub) if sub in inner else len(inner))
    return (2, ["norm", "readout"].index(name) if name in ("norm", "readout") else 2)


def format_table(result: dict) -> str:
    cfg, tol = result["config"], result["config"]["tolerance"]
    mark = lambda ok: " " if ok else "*"
    lines = [f"u-µP unit-scale check at init: width {cfg['width']}, depth {cfg['depth']}, "
             f"{cfg['batch']}x{cfg['seq_len']} random tokens, seed {cfg['seed']}, loss {cfg['loss']:.4f}",
             f"RMS within a factor of the expected value (1 unless shown): activations "
             f"{tol['activation']:g}, weights {tol['weight']:g}, gradients {tol['gradient']:g}; * = outside.",
             "Gradients as u-µP's scaled backward holds them: the true gradient times u-µP's constant "
             f"(residual stream x {cfg['activation_grad_scale']:.4g}, block l's branch x that x 1/b_l = "
             f"{', '.join(f'{b:.3g}' for b in cfg['branch_grad_scales'])}, logits x "
             f"{cfg['logits_grad_scale']:.4g}; parameters: last column).",
             "",
             f"{'activation':28s} {'rms':>8s} {'expected':>9s} {'grad rms':>9s} {'expected':>9s} {'true grad':>10s}"]
    for r in result["activations"]:
        exp = "" if r["expected"] == 1.0 else f"{r['expected']:.4g}"
        grad = "-" if r["grad_rms"] is None else f"{r['grad_rms']:.3f}"
        grad_exp = "" if r["grad_expected"] in (None, 1.0) else f"{r['grad_expected']:.4g}"
        true = "(recomputed)" if r["recomputed"] else f"{r['grad_true_rms']:.3g}"
        lines.append(f"{r['name']:28s} {r['rms']:7.3f}{mark(r['ok'])} {exp:>9s} {grad:>8s}{mark(r['grad_ok'])} "
                     f"{grad_exp:>9s} {true:>10s}")
    lines += ["", f"{'parameter':28s} {'rms':>8s} {'grad rms':>9s} {'true grad':>10s} {'grad const':>11s}"]
    for r in result["params"]:
        grad = f"{r['grad_rms']:.3f}" + (mark(r["grad_ok"]) if r["grad_judged"] else "~")
        lines.append(f"{r['name']:28s} {r['rms']:7.3f}{mark(r['ok'])} {grad:>9s} {r['grad_true_rms']:10.3g} "
                     f"{r['grad_scale']:11.4g}")
    lines.append("~ = printed, not judged (the position-bias scalar has no u-µP counterpart)")
    lines.append("")
    lines.append(f"unit-scale check: {'PASS' if result['passed'] else 'FAIL'}"
                 + ("" if result["passed"] else f" ({', '.join(result['failing'])})"))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = config.OneLineParser(prog="python unit_scale_check_gpt.py", description=__doc__.split("\n\n")[0],
                           formatter_class=config.DefaultsHelpFormatter,
                           epilog="Flags after -- go to main.py's parser (e.g. -- --umup-act-mult 2). "
                                  "Exit 0 iff every judged RMS is within tolerance.")
    add = p.add_argument
    add("--width", type=config.positive(int), default=256, help="model width")
    add("--depth", type=config.positive(int), default=4, help="blocks")
    add("--seq-len", type=config.positive(int), default=128, help="tokens per sequence of the fixed batch")
    add("--batch", type=config.positive(int), default=4, help="sequences in the fixed batch")
    add("--seed", type=int, default=0, help="init seed")
    add("--tolerance", type=config.positive(float), nargs=3, metavar=("ACT", "WEIGHT", "GRAD"),
        default=[TOLERANCE["activation"], TOLERANCE["weight"], TOLERANCE["gradient"]],
        help="largest factor by which an activation's, a weight's and a gradient's RMS may differ "
        "from its expected value (mostly 1), either way")
    add("--json", type=Path, help="also write the result here (default: no file)")
    return p


def cli(argv=None) -> int:
    own, extra = coord_check_gpt.split_passthrough(argv)
    args = build_parser().parse_args(own)
    if any(a == "--param" or a.startswith("--param=") for a in extra):
        print("unit_scale_check: error: the check is for --param umup only; drop --param",
              file=sys.stderr)
        return runlog.EXIT_BAD_INPUT
    try:
        main.resolve(main.parse_args(coord_check_gpt.model_argv("umup", args.width, depth=args.depth,
                                                            seq_len=args.seq_len, seed=args.seed, lr=1.0,
                                                            extra=extra)))
    except config.ConfigError as e:
        print(f"unit_scale_check: error: {e}", file=sys.stderr)
        return runlog.EXIT_BAD_INPUT
    started = time.perf_counter()
    result = run_unit_scale_check(args.width, args.depth, args.seq_len, args.batch, args.seed, extra,
                                  dict(zip(("activation", "weight", "gradient"), args.tolerance)))
    result["config"]["seconds"] = round(time.perf_counter() - started, 1)
    print(format_table(result))
    if args.json:
        runlog.atomic_write_bytes(args.json, json.dumps(result, indent=1).encode())
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(cli())
