"""Coord check: does a parametrization keep every activation O(1) as width grows?

microsoft/mup's test, run on main.py's own model. For each parametrization and width, build
the model exactly as the trainer does (main.parse_args / resolve / make_parametrization /
build_model, uniform lr recipe), take a few AdamW steps on one fixed batch, and record the
mean absolute value `x.abs().mean()` of every module's output with forward hooks at each step.
t=1 is the forward pass at initialisation, before any update; t=2 follows one update, and so on.
Seeds change the model's init only; every run sees the same batch of random token ids.

    python -m mup_patch.coord_check                              # sp and mup, widths 64..512
    python -m mup_patch.coord_check --param mup --seeds 5 --out runs/coord
    python -m mup_patch.coord_check --base-width 384             # the trainer's base width
    python -m mup_patch.coord_check --param umup                 # u-µP, at --umup-lr
    python -m mup_patch.coord_check -- --readout-zero-init       # after --: main.py flags

Recorded layers: `embedding`; each `blocks.i` (the residual stream after block i), its
`blocks.i.norm`, `blocks.i.query_tap` / `key_tap` (q and k, the attention scores' inputs),
`blocks.i.attn_logits` (q.k times the model's attention scale over the causal entries,
computed from the two taps because SDPA hides the scores) and `blocks.i.attention_tap` (the
attention output); the final `norm`; `readout` (the logits).

Criterion (microsoft/mup, mup/test/__main__.py CoordCheckCase): for t = 1..3 and every pair of
widths 4x apart, the ratio of seed-averaged mean |x| (wide / narrow) lies in [1/1.2, 1.2].
Exemptions, from mup's README ("the network output and the attention logits in a Transformer
can shrink to 0 at initialization in µP, at a 1/sqrt(width) rate; these are transient"):
- `readout` and `blocks.i.attn_logits` may shrink, at any of t = 1..3, no faster than
  1/sqrt(width) (ratio down to 0.5/1.2 between widths 4x apart), and must not grow (ratio
  <= 1.2). Three steps do not wash the init part out: the readout's random init also acts on
  the updated hidden state, and over the 50K vocabulary entries that term is still iid-like
  (docs/mup.md measures it). The rows that µP must keep flat are all the others.
- a readout initialised to zero (-- --readout-zero-init, microsoft/mup's recommendation)
  removes that term: it must read exactly 0 at t=1 (mup's test) and is then held to the full
  criterion like every other layer.

Base width: the check sets main.py's --base-width to the narrowest width unless told
otherwise. The rules' width exponents do not depend on the base; the base only fixes where µP
equals SP. Widths below the base get a hidden Adam lr above --lr (x base/width), which at a
large lr takes them out of the regime where µP's limit describes them (docs/mup.md).

u-µP (--param umup, docs/umup.md) is held to the same criterion and exemptions as µP: it is
µP with the scales moved into the ops. Its lrs live on their own scale (N(0,1) weights, no base
shapes), so it runs at --umup-lr, not --lr. The default, 0.25, is a quarter of the trainer's:
at 0.5 and above the narrow widths leave µP's regime within one step, because u-µP's norm gains
and position-bias scalar take O(1) steps (lr x depth^-1/2: ±0.35 to ±0.7 here, where µP's
check moves them by 0.01), and the 64->256 pair fails; the deviation shrinks with width (at lr
1: 0.69 for 64->256, 0.83 for 256->1024). At 0.25 the check catches a wrong readout scale but
has little power on the hidden lrs; at lr 1 an unscaled hidden lr shows as growth with width
(1.3 for 256->1024) where the correct rules shrink at the narrow end (docs/umup.md).

Exit status: 0 when every requested parametrization gets its expected verdict, µP and u-µP PASS,
SP FAIL (an SP that passes means the check has no power at this lr: raise --lr); 1 otherwise;
2 on bad input. Results go to DIR/coord_check.json and DIR/coord_check.png (log-log width
vs mean |x|, one row per step, SP beside µP).
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

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # main.py lives at the repository root
    sys.path.insert(0, str(REPO))
import main  # noqa: E402

TOLERANCE = 1.2                # mup's tol: ratios between widths 4x apart within [1/1.2, 1.2]
WIDTH_FACTOR = 4               # ... between widths that differ 4x
INIT_SHRINK = ("readout", "attn_logits")   # may shrink as 1/sqrt(width) (mup README)
EXPECTED_PASS = {"sp": False, "mup": True, "umup": True}
ADAM_EPS = main.ADAM_EPS       # main.Trainer's AdamW eps (u-µP's groups carry their own)
UMUP_LR = 0.25                 # u-µP's lr (its own scale; the trainer's default is 1)
GPT2_TOKENS = 50257


def model_argv(param: str, width: int, *, depth: int, seq_len: int, seed: int, lr: float,
               base_width: int | None = None, extra: list[str] = ()) -> list[str]:
    argv = ["--device", "cpu", "--param", param, "--lr-recipe", "uniform", "--width", str(width),
            "--depth", str(depth), "--max-seq-len", str(seq_len), "--seq-len-start", str(seq_len),
            "--lr", repr(lr), "--seed", str(seed)]
    if base_width is not None:
        argv += ["--base-width", str(base_width)]
    return argv + list(extra)


def build(param: str, width: int, *, depth: int, seq_len: int, seed: int, lr: float,
          base_width: int | None = None, extra: list[str] = ()):
    """(args, parametrization, model, optimizer), built as main.py's Trainer builds them.
    The AdamW is fused: the same algorithm the trainer runs on CUDA, and 5-8x faster on CPU
    than the per-tensor loop (equal to it up to rounding)."""
    args = main.resolve(main.parse_args(model_argv(param, width, depth=depth, seq_len=seq_len, seed=seed,
                                                   lr=lr, base_width=base_width, extra=extra)))
    parametrization = main.make_parametrization(args)
    model = main.build_model(args, parametrization)
    optimizer = torch.optim.AdamW(parametrization.param_groups(model), eps=ADAM_EPS, fused=True)
    return args, parametrization, model, optimizer


def fixed_batch(batch: int, seq_len: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random GPT-2 token ids from a seeded generator: no data files needed."""
    tokens = torch.randint(0, GPT2_TOKENS, (batch, seq_len + 1), generator=torch.Generator().manual_seed(seed))
    return tokens[:, :-1], tokens[:, 1:]


def record_run(param: str, width: int, seed: int, inputs: torch.Tensor, targets: torch.Tensor, *,
               steps: int, depth: int, lr: float, base_width: int | None = None,
               extra: list[str] = ()) -> tuple[dict[str, list[float]], dict]:
    """({layer: [mean |x| at t=1, ..., t=steps]}, facts about the model) for one run."""
    args, parametrization, model, optimizer = build(param, width, depth=depth, seq_len=inputs.shape[1],
                                                    seed=seed, lr=lr, base_width=base_width, extra=extra)
    for group in optimizer.param_groups:  # no weight decay: a few steps on one batch
        group["weight_decay"] = 0.0
    model.train()
    records: dict[str, list[float]] = {}
    current: dict[str, float] = {}
    queries: dict[str, torch.Tensor] = {}
    causal = torch.ones(inputs.shape[1], inputs.shape[1], dtype=torch.bool).tril()

    def measure(name: str, value: torch.Tensor) -> None:
        current[name] = value.abs().mean().item()

    def hook(name):
        def record(module, inputs_, output):
            with torch.no_grad():
                output = output.detach()
                measure(name, output)
                if name.endswith(".query_tap"):
                    queries[name[:-len("query_tap")]] = output
                elif name.endswith(".key_tap"):
                    prefix = name[:-len("key_tap")]
                    scores = queries.pop(prefix) @ output.transpose(-1, -2) * model.attention_scale
                    measure(prefix + "attn_logits", scores[..., causal])
        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in model.named_modules()
               if name and not isinstance(module, torch.nn.ModuleList)]
    losses = []
    try:
        for t in range(1, steps + 1):
            current.clear()
            logits = model(inputs)
            for name, value in current.items():
                records.setdefault(name, []).append(value)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):
                raise FloatingPointError(f"{param} width {width} seed {seed}: loss {losses[-1]} at t={t}")
            if t == steps:
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    finally:
        for handle in handles:
            handle.remove()
    info = {"readout_zero_init": parametrization.rules["readout.weight"].init_std == 0,
            "base_width": args.base_width, "attention_scale": parametrization.attention_scale,
            "readout_mult": parametrization.readout_mult,
            "lr": {g["name"]: g["lr"] for g in optimizer.param_groups}, "loss": losses}
    return records, info


def layer_order(name: str) -> tuple:
    """embedding, blocks in depth order (block output, then its parts), norm, readout."""
    parts = name.split(".")
    if parts[0] == "embedding":
        return (0,)
    if parts[0] == "blocks":
        inner = ["", "norm", "query_tap", "key_tap", "attn_logits", "attention_tap"]
        sub = ".".join(parts[2:])
        return (1, int(parts[1]), inner.index(sub) if sub in inner else len(inner), sub)
    tail = ["norm", "readout"]
    return (2, tail.index(name) if name in tail else len(tail), name)


def rule_for(layer: str, t: int, readout_zero_init: bool, tolerance: float) -> tuple[str, float, float]:
    """(rule, low, high) for one layer at one step; see the module docstring."""
    flat = ("flat", 1 / tolerance, tolerance)
    if layer == "readout" and readout_zero_init:
        return ("zero", 0.0, 0.0) if t == 1 else flat
    if layer.split(".")[-1] in INIT_SHRINK:
        return "may shrink as 1/sqrt(width)", WIDTH_FACTOR ** -0.5 / tolerance, tolerance
    return flat


def judge(means: dict[str, dict[int, list[float]]], widths: list[int], steps: int,
          tolerance: float = TOLERANCE, readout_zero_init: bool = False) -> tuple[list[dict], bool, list[str]]:
    """Checks of one parametrization: (checks, passed, failing layers). Steps 1..3 are judged,
    as in mup's test."""
    pairs = [(a, b) for a in widths for b in widths if b == WIDTH_FACTOR * a]
    checks = []
    for layer in sorted(means, key=layer_order):
        for t in range(1, min(steps, 3) + 1):
            rule, low, high = rule_for(layer, t, readout_zero_init, tolerance)
            for narrow, wide in pairs:
                lo_value, hi_value = means[layer][narrow][t - 1], means[layer][wide][t - 1]
                if rule == "zero":
                    ratio, ok = None, lo_value == hi_value == 0.0
                else:
                    ratio = hi_value / lo_value if lo_value > 0 else (math.inf if hi_value > 0 else math.nan)
                    ok = low <= ratio <= high
                checks.append({"layer": layer, "t": t, "narrow": narrow, "wide": wide,
                               "mean_narrow": lo_value, "mean_wide": hi_value, "ratio": ratio,
                               "low": low, "high": high, "rule": rule, "ok": bool(ok)})
    failing = sorted({c["layer"] for c in checks if not c["ok"]}, key=layer_order)
    return checks, not failing, failing


def run_coord_check(params=("sp", "mup"), widths=(64, 128, 256, 512), *, steps: int = 3,
                    seeds=(0, 1, 2), lr: float = 1e-2, umup_lr: float = UMUP_LR, depth: int = 2,
                    seq_len: int = 64,
                    batch: int = 1, base_width: int | None = None, extra: list[str] = (),
                    tolerance: float = TOLERANCE, progress=None) -> dict:
    """The whole check; returns a JSON-serialisable dict:
    config; params[P] = {pass, expected_pass, failing_layers, layers, mean_abs[layer][width]
    = [t=1..steps] (seed mean), per_seed[layer][width][seed], checks (one per layer, t and
    width pair), runs[width] (base width, attention scale, readout mult, group lrs, losses)}."""
    widths, extra = sorted(set(widths)), list(extra)
    if not any(WIDTH_FACTOR * w in widths for w in widths):
        raise ValueError(f"widths {widths} contain no pair {WIDTH_FACTOR}x apart")
    if steps < 1:
        raise ValueError("steps must be at least 1")
    base_width = base_width or widths[0]
    inputs, targets = fixed_batch(batch, seq_len)
    result = {"config": {"params": list(params), "widths": widths, "steps": steps, "seeds": list(seeds),
                         "lr": lr, "umup_lr": umup_lr, "depth": depth, "seq_len": seq_len, "batch": batch,
                         "base_width": base_width, "main_args": extra, "tolerance": tolerance,
                         "width_factor": WIDTH_FACTOR,
                         "optimizer": "AdamW (fused, eps 1e-9 or the group's own, weight decay 0), "
                                      "main.py's param groups",
                         "data": "one fixed batch of random token ids (torch.Generator seed 0)",
                         "torch": torch.__version__},
              "params": {}}
    for param in params:
        runs, infos = {}, {}  # width -> seed -> layer -> [t]
        for width in widths:
            for seed in seeds:
                started = time.perf_counter()
                runs.setdefault(width, {})[seed], info = record_run(
                    param, width, seed, inputs, targets, steps=steps, depth=depth,
                    lr=umup_lr if param == "umup" else lr, base_width=base_width, extra=extra)
                infos.setdefault(width, info)
                if progress:
                    progress(f"{param} width {width} seed {seed}: {time.perf_counter() - started:.1f} s")
        layers = sorted(runs[widths[0]][seeds[0]], key=layer_order)
        means = {layer: {w: [sum(runs[w][s][layer][t] for s in seeds) / len(seeds) for t in range(steps)]
                         for w in widths} for layer in layers}
        zero_init = infos[widths[0]]["readout_zero_init"]
        checks, passed, failing = judge(means, widths, steps, tolerance, readout_zero_init=zero_init)
        result["params"][param] = {
            "pass": passed, "expected_pass": EXPECTED_PASS.get(param), "failing_layers": failing,
            "layers": layers,
            "mean_abs": {layer: {str(w): means[layer][w] for w in widths} for layer in layers},
            "per_seed": {layer: {str(w): {str(s): runs[w][s][layer] for s in seeds} for w in widths}
                         for layer in layers},
            "checks": checks,
            "runs": {str(w): infos[w] for w in widths}}
    return result


# ----------------------------------------------------------------------------------------
# Report and picture
# ----------------------------------------------------------------------------------------

def format_table(result: dict) -> str:
    """Per parametrization: each layer's wide/narrow ratios per step, and its verdict."""
    lines = []
    cfg = result["config"]
    steps = min(cfg["steps"], 3)
    for param, data in result["params"].items():
        by_layer: dict[str, list[dict]] = {}
        for check in data["checks"]:
            by_layer.setdefault(check["layer"], []).append(check)
        pairs = sorted({(c["narrow"], c["wide"]) for c in data["checks"]})
        cell = 8 * len(pairs) + 2
        head = f"{'layer':26s}" + "".join(f"{'t=' + str(t):>{cell}s}" for t in range(1, steps + 1)) + "  verdict"
        verdict = "PASS" if data["pass"] else "FAIL"
        expected = data["expected_pass"]
        note = "" if expected is None else (" (as expected)" if expected == data["pass"]
                                              else f" (UNEXPECTED: {param} should "
                                                   f"{'pass' if expected else 'fail'})")
        lines.append(f"== {param}: {verdict}{note}")
        lines.append(f"   mean |x| ratio wide/narrow for width pairs {', '.join(f'{a}->{b}' for a, b in pairs)}; "
                     f"allowed [{1 / cfg['tolerance']:.3f}, {cfg['tolerance']:.3f}], "
                     f"~ rows [{WIDTH_FACTOR ** -0.5 / cfg['tolerance']:.3f}, {cfg['tolerance']:.3f}] "
                     f"(may shrink as 1/sqrt(width)), * = outside")
        lines.append(head)
        for layer in data["layers"]:
            cells = []
            for t in range(1, steps + 1):
                parts = []
                for check in (c for c in by_layer.get(layer, []) if c["t"] == t):
                    text = "0" if check["rule"] == "zero" else f"{check['ratio']:.3g}"
                    mark = "*" if not check["ok"] else ("~" if check["rule"].startswith("may") else " ")
                    parts.append(f"{text:>7s}{mark}")
                cells.append(f"{''.join(parts) or '-':>{cell}s}")
            ok = all(c["ok"] for c in by_layer.get(layer, []))
            lines.append(f"{layer:26s}" + "".join(cells) + f"  {'pass' if ok else 'FAIL'}")
        lines.append("")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = result["config"]
    params = list(result["params"])
    steps, widths = cfg["steps"], cfg["widths"]
    titles = {"sp": "SP", "mup": "µP", "umup": "u-µP"}
    # Colour: what the layer is; line style: which block it belongs to.
    kinds = ["embedding", "block output", "norm", "query_tap", "key_tap", "attn_logits",
             "attention_tap", "final norm", "readout"]
    colours = dict(zip(kinds, plt.get_cmap("tab10").colors))
    dashes = ["-", "--", ":", "-."]

    def style(layer: str) -> dict:
        parts = layer.split(".")
        if parts[0] == "blocks":
            kind = "block output" if len(parts) == 2 else parts[2]
            return dict(color=colours.get(kind, "black"), linestyle=dashes[int(parts[1]) % len(dashes)],
                        marker="o", markersize=3, linewidth=1.3)
        kind = {"norm": "final norm"}.get(layer, layer)
        return dict(color=colours.get(kind, "black"), linestyle="-", marker="s", markersize=3.5, linewidth=2)
    fig, axes = plt.subplots(steps, len(params), figsize=(4.4 * len(params) + 2.8, 3.0 * steps),
                             squeeze=False, sharex=True, sharey=True)
    for column, param in enumerate(params):
        data = result["params"][param]
        verdict = "PASS" if data["pass"] else "FAIL"
        for t in range(steps):
            ax = axes[t][column]
            for layer in data["layers"]:
                ys = [data["mean_abs"][layer][str(w)][t] for w in widths]
                if min(ys) <= 0:  # a zero-initialised readout at t=1: no log
                    continue
                ax.plot(widths, ys, label=layer, **style(layer))
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(widths, [str(w) for w in widths])
            ax.minorticks_off()
            ax.grid(True, which="major", alpha=0.3)
            ax.set_title(f"{titles.get(param, param)} ({verdict}), t={t + 1}"
                         + (" (init)" if t == 0 else f" (after {t} step{'s' * (t > 1)})"), fontsize=10)
            if t == steps - 1:
                ax.set_xlabel("width")
            if column == 0:
                ax.set_ylabel("mean |activation|")
    handles = {}
    for row in axes:
        for ax in row:
            for h, l in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(l, h)
    ordered = sorted(handles, key=layer_order)
    fig.legend([handles[l] for l in ordered], ordered, loc="center right", fontsize=7, frameon=False)
    umup_lr = f", u-µP lr {cfg['umup_lr']:g}" if "umup" in params and "umup_lr" in cfg else ""
    fig.suptitle(f"Coord check: AdamW lr {cfg['lr']:g} (µP base width {cfg['base_width']}){umup_lr}, depth {cfg['depth']}, "
                 f"{cfg['batch']}x{cfg['seq_len']} tokens, {len(cfg['seeds'])} seeds; "
                 f"flat = width-independent", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1 - 2.6 / fig.get_figwidth(), 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ----------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------

def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of whole numbers")
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give positive numbers")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = main.OneLineParser(prog="python -m mup_patch.coord_check",
                           description=__doc__.split("\n\n")[0],
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                           epilog="Flags after -- go to main.py's parser (e.g. -- --readout-zero-init "
                                  "--attn-mult 2). Exit 0 iff µP and u-µP pass and SP fails (those "
                                  "requested).")
    add = p.add_argument
    add("--param", nargs="+", choices=["sp", "mup", "umup"], default=["sp", "mup"], help="parametrizations")
    add("--widths", type=int_list, default=[64, 128, 256, 512],
        help="widths (comma or space separated); needs a pair 4x apart")
    add("--steps", type=main.positive(int), default=3, help="forward passes; t=1 is at init")
    add("--seeds", type=main.positive(int), default=3, help="init seeds 0..N-1, averaged")
    add("--lr", type=main.positive(float), default=1e-2,
        help="AdamW lr (under µP: at the base width); large, so that SP fails visibly")
    add("--umup-lr", type=main.positive(float), default=UMUP_LR,
        help="u-µP's AdamW lr (its own scale: N(0,1) weights, absolute width rules)")
    add("--base-width", type=main.positive(int), help="main.py's --base-width; None: the narrowest width")
    add("--depth", type=main.positive(int), default=2)
    add("--seq-len", type=main.positive(int), default=64)
    add("--batch", type=main.positive(int), default=1, help="sequences in the fixed batch")
    add("--tolerance", type=main.positive(float), default=TOLERANCE)
    add("--out", type=Path, default=REPO / "runs" / "coord_check",
        help="folder for coord_check.json and coord_check.png")
    add("--no-plot", action="store_true")
    add("--quiet", action="store_true", help="no per-run progress lines")
    return p


def split_passthrough(argv=None) -> tuple[list, list]:
    """(this tool's arguments, main.py flags after `--`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    return argv[:split], argv[split + 1:]


def cli(argv=None) -> int:
    own, extra = split_passthrough(argv)
    args = build_parser().parse_args(own)
    widths = sorted(set(args.widths))
    if not any(WIDTH_FACTOR * w in widths for w in widths):
        print(f"coord_check: error: --widths {','.join(map(str, widths))} has no pair of widths "
              f"{WIDTH_FACTOR}x apart (e.g. 64,256)", file=sys.stderr)
        return main.EXIT_BAD_INPUT
    if "--base-width" in extra or any(a.startswith("--base-width=") for a in extra):
        print("coord_check: error: give --base-width before --, as the coord check's own flag",
              file=sys.stderr)
        return main.EXIT_BAD_INPUT
    base_width = args.base_width or widths[0]
    for param in args.param:  # main.py rejects bad flags with its own one-line message
        for width in widths:
            try:
                main.resolve(main.parse_args(model_argv(param, width, depth=args.depth, seq_len=args.seq_len,
                                                        seed=0, lr=args.umup_lr if param == "umup" else args.lr,
                                                        base_width=base_width,
                                                        extra=extra)))
            except main.ConfigError as e:
                print(f"coord_check: error: {e}", file=sys.stderr)
                return main.EXIT_BAD_INPUT
    started = time.perf_counter()
    progress = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    result = run_coord_check(params=list(dict.fromkeys(args.param)), widths=widths, steps=args.steps,
                             seeds=tuple(range(args.seeds)), lr=args.lr, umup_lr=args.umup_lr, depth=args.depth,
                             seq_len=args.seq_len, batch=args.batch, base_width=base_width, extra=extra,
                             tolerance=args.tolerance, progress=progress)
    result["config"]["seconds"] = round(time.perf_counter() - started, 1)
    print(format_table(result))
    json_path = args.out / "coord_check.json"
    main.atomic_write_bytes(json_path, json.dumps(result, separators=(",", ":")).encode())
    written = [str(json_path)]
    if not args.no_plot:
        png_path = args.out / "coord_check.png"
        plot(result, png_path)
        written.append(str(png_path))
    as_expected = all(d["pass"] == d["expected_pass"] for d in result["params"].values())
    summary = ", ".join(f"{p} {'PASS' if d['pass'] else 'FAIL'}" for p, d in result["params"].items())
    print(f"coord check: {summary}; {'every verdict as expected' if as_expected else 'UNEXPECTED verdict'}"
          f" ({result['config']['seconds']} s); wrote {', '.join(written)}")
    return 0 if as_expected else 1


if __name__ == "__main__":
    sys.exit(cli())
