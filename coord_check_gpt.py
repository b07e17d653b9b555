"""The coord check (mup_patch/coord_check.py) on main.py's own model.

For each parametrization and width, build the model exactly as the trainer does
(main.parse_args / resolve / make_parametrization / build_model, uniform lr recipe) and hand
it to mup_patch.coord_check, which takes a few AdamW steps on one fixed batch of random GPT-2
token ids (no data files needed; the loss is the mean cross-entropy) and records the mean
absolute value of every module's output.

    python coord_check_gpt.py                              # sp and mup, widths 64..512
    python coord_check_gpt.py --param mup --seeds 5 --out out/coord
    python coord_check_gpt.py --base-width 384             # the trainer's base width
    python coord_check_gpt.py --param umup                 # u-µP, at --umup-lr
    python coord_check_gpt.py -- --readout-zero-init       # after --: main.py flags

Recorded layers: `embedding`; each `blocks.i` (the residual stream after block i), its
`blocks.i.norm`, `blocks.i.query_tap` / `key_tap` (q and k, the attention scores' inputs),
`blocks.i.attn_logits` (q.k times the model's attention scale over the causal entries,
computed from the two taps because SDPA hides the scores) and `blocks.i.attention_tap` (the
attention output); the final `norm`; `readout` (the logits). `readout` and the attention
logits may shrink as 1/sqrt(width) (mup_patch/coord_check.py has the criterion).

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
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import config
import main
import runlog
from mup_patch import coord_check
from mup_patch.coord_check import TOLERANCE, WIDTH_FACTOR, format_table, plot  # noqa: F401 (re-exported)

REPO = Path(__file__).resolve().parent
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
    """(args, parametrization, model), built as main.py's Trainer builds them."""
    args = main.resolve(main.parse_args(model_argv(param, width, depth=depth, seq_len=seq_len, seed=seed,
                                                   lr=lr, base_width=base_width, extra=extra)))
    parametrization = main.make_parametrization(args)
    return args, parametrization, main.build_model(args, parametrization)


def fixed_batch(batch: int, seq_len: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random GPT-2 token ids from a seeded generator: no data files needed."""
    tokens = torch.randint(0, GPT2_TOKENS, (batch, seq_len + 1), generator=torch.Generator().manual_seed(seed))
    return tokens[:, :-1], tokens[:, 1:]


def cross_entropy(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    inputs, targets = batch
    return F.cross_entropy(model(inputs).flatten(0, 1).float(), targets.flatten())


def attention_logits(model: torch.nn.Module):
    """blocks.i.attn_logits = q.k x the model's attention scale over the causal entries, from
    the q and k taps (SDPA and FlexAttention never materialise the scores)."""
    queries: dict[str, torch.Tensor] = {}

    def derive(name: str, output: torch.Tensor) -> dict[str, torch.Tensor]:
        if name.endswith(".query_tap"):
            queries[name[:-len("query_tap")]] = output
        elif name.endswith(".key_tap"):
            prefix = name[:-len("key_tap")]
            causal = torch.ones(output.shape[-2], output.shape[-2], dtype=torch.bool).tril()
            scores = queries.pop(prefix) @ output.transpose(-1, -2) * model.attention_scale
            return {prefix + "attn_logits": scores[..., causal]}
        return {}
    return derive


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


def run_coord_check(params=("sp", "mup"), widths=(64, 128, 256, 512), *, steps: int = 3,
                    seeds=(0, 1, 2), lr: float = 1e-2, umup_lr: float = UMUP_LR, depth: int = 2,
                    seq_len: int = 64, batch: int = 1, base_width: int | None = None, extra: list[str] = (),
                    tolerance: float = TOLERANCE, progress=None) -> dict:
    """mup_patch.coord_check.run_coord_check on main.py's GPT (its result dict, with the
    model's settings in config)."""
    widths, extra = sorted(set(widths)), list(extra)
    base_width = base_width or widths[0]

    def build_run(param: str, width: int, seed: int):
        _, parametrization, model = build(param, width, depth=depth, seq_len=seq_len, seed=seed,
                                          lr=umup_lr if param == "umup" else lr, base_width=base_width,
                                          extra=extra)
        return model, parametrization

    umup_title = f", u-µP lr {umup_lr:g}" if "umup" in params else ""
    config = {"lr": lr, "umup_lr": umup_lr, "depth": depth, "seq_len": seq_len, "batch": batch,
              "base_width": base_width, "main_args": extra,
              "optimizer": "AdamW (fused, eps 1e-9 or the group's own, weight decay 0), "
                           "main.py's param groups",
              "data": "one fixed batch of random token ids (torch.Generator seed 0)",
              "title": f"Coord check: AdamW lr {lr:g} (µP base width {base_width}){umup_title}, depth {depth}, "
                       f"{batch}x{seq_len} tokens, {len(seeds)} seeds; flat = width-independent"}
    return coord_check.run_coord_check(
        build_run, lambda: fixed_batch(batch, seq_len), cross_entropy, widths, params, steps=steps,
        seeds=seeds, tolerance=tolerance, adam_eps=main.ADAM_EPS, derived=attention_logits,
        sort_key=layer_order, config=config, progress=progress)


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
    p = config.OneLineParser(prog="python coord_check_gpt.py",
                           description=__doc__.split("\n\n")[0],
                           formatter_class=config.DefaultsHelpFormatter,
                           epilog="Flags after -- go to main.py's parser (e.g. -- --readout-zero-init "
                                  "--attn-mult 2). Exit 0 iff µP and u-µP pass and SP fails (those "
                                  "requested).")
    add = p.add_argument
    add("--param", nargs="+", choices=["sp", "mup", "umup"], default=["sp", "mup"], help="parametrizations")
    add("--widths", type=int_list, default=[64, 128, 256, 512],
        help="widths (comma or space separated); needs a pair 4x apart")
    add("--steps", type=config.positive(int), default=3, help="forward passes; t=1 is at init")
    add("--seeds", type=config.positive(int), default=3, help="init seeds 0..N-1, averaged")
    add("--lr", type=config.positive(float), default=1e-2,
        help="AdamW lr (under µP: at the base width); large, so that SP fails visibly")
    add("--umup-lr", type=config.positive(float), default=UMUP_LR,
        help="u-µP's AdamW lr (its own scale: N(0,1) weights, absolute width rules)")
    add("--base-width", type=config.positive(int),
        help="main.py's --base-width, where µP equals SP (default: the narrowest width)")
    add("--depth", type=config.positive(int), default=2, help="blocks of every model")
    add("--seq-len", type=config.positive(int), default=64, help="tokens per sequence of the fixed batch")
    add("--batch", type=config.positive(int), default=1, help="sequences in the fixed batch")
    add("--tolerance", type=config.positive(float), default=TOLERANCE,
        help=f"pass when the mean |x| of every layer changes by at most this factor between widths "
        f"{WIDTH_FACTOR}x apart (layers allowed to shrink as 1/sqrt(width) may fall further)")
    add("--out", type=Path, default=REPO / "out" / "coord_check",
        help="folder for coord_check.json and coord_check.png (git-ignored)")
    add("--no-plot", action="store_true", help="write coord_check.json only, no figure")
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
        return runlog.EXIT_BAD_INPUT
    if "--base-width" in extra or any(a.startswith("--base-width=") for a in extra):
        print("coord_check: error: give --base-width before --, as the coord check's own flag",
              file=sys.stderr)
        return runlog.EXIT_BAD_INPUT
    base_width = args.base_width or widths[0]
    for param in args.param:  # main.py rejects bad flags with its own one-line message
        for width in widths:
            try:
                main.resolve(main.parse_args(model_argv(param, width, depth=args.depth, seq_len=args.seq_len,
                                                        seed=0, lr=args.umup_lr if param == "umup" else args.lr,
                                                        base_width=base_width,
                                                        extra=extra)))
            except config.ConfigError as e:
                print(f"coord_check: error: {e}", file=sys.stderr)
                return runlog.EXIT_BAD_INPUT
    started = time.perf_counter()
    progress = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    result = run_coord_check(params=list(dict.fromkeys(args.param)), widths=widths, steps=args.steps,
                             seeds=tuple(range(args.seeds)), lr=args.lr, umup_lr=args.umup_lr, depth=args.depth,
                             seq_len=args.seq_len, batch=args.batch, base_width=base_width, extra=extra,
                             tolerance=args.tolerance, progress=progress)
    result["config"]["seconds"] = round(time.perf_counter() - started, 1)
    print(format_table(result))
    json_path = args.out / "coord_check.json"
    runlog.atomic_write_bytes(json_path, json.dumps(result, separators=(",", ":")).encode())
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
