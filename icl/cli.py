"""`python -m icl`: the command line. Every flag, its default and the reason for it is in --help."""
from __future__ import annotations

import argparse
import sys

import torch

import runlog
from icl.ensemble import Member, Optim
from icl.model import ACTIVATIONS, PARAMS
from icl.tasks import TASKS

SCHEDULES = ("onecycle", "cosine", "linear", "constant")

EXAMPLES = """
examples:
  # a tiny CPU run (seconds)
  python -m icl --steps 200 --dim 2 --points 8 --width 32 --depth 1 --heads 2 --batch 64 --lr 3e-3 \
      --eval-batch 256 --eval-log 10 --eval-lin 5 --ckpt-log 0 --ckpt-lin 2 --out runs/icl-tiny
  # timaeus' L2H4 model, 500k steps, 8 seeds at once (GPU; CUDA graph)
  python -m icl --seeds 0 1 2 3 4 5 6 7 --out runs/icl-garg
  # an lr x seed ensemble for a transfer grid (one width, depth and step count per process)
  python -m icl --param mup --width 256 --base-width 64 --steps 20000 --schedule cosine \\
      --lr 1.25e-4 2.5e-4 5e-4 1e-3 2e-3 4e-3 8e-3 1.6e-2 3.2e-2 --seeds 0 1 2 --ckpt-log 0 --ckpt-lin 0 \
      --tf32 --out runs/icl-transfer
  # luis-mueller's affine task and recipe
  python -m icl --task affine --width 256 --heads 16 --mlp-ratio 4 --activation gelu --steps 10000 \\
      --schedule cosine --lr 2.43e-3 --weight-decay 1e-5 --grad-clip 1.0 --out runs/icl-affine

Members: every (lr, seed, warmup) of --lr x --seeds x the warmups is one model; all train
together, each with its own run log <out>/<run name>.json and checkpoints <out>/<run name>.ckpt/.
"""


def num_tasks(text: str) -> int | None:
    if text in ("inf", "infinity"):
        return None
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"--num-tasks must be >= 1 or 'inf', got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m icl", epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Train an ensemble of small transformers on in-context linear regression.")
    a = p.add_argument_group("task")
    a.add_argument("--task", choices=TASKS, default="garg",
                   help="garg: D-dim x, w ~ N(0,I), y = w.x + noise, MSE (timaeus); affine: y = a x + b, "
                        "scalar tokens, L1 (luis-mueller) (default: %(default)s)")
    a.add_argument("--dim", type=int, default=4, help="D, the dimension of x (garg; timaeus: 4) (default: %(default)s)")
    a.add_argument("--points", type=int, default=None,
                   help="K, examples per sequence (default: 16 for garg as timaeus, 32 for affine as luis-mueller)")
    a.add_argument("--noise-var", type=float, default=None,
                   help="noise variance sigma^2 of y (garg only; default: 0.125 as timaeus)")
    a.add_argument("--num-tasks", type=num_tasks, default=None,
                   help="M: 'inf' draws w fresh per sequence; an integer draws it uniformly from M fixed "
                        "tasks (garg; timaeus' task-diversity sweep) (default: inf)")
    a.add_argument("--task-seed", type=int, default=0, help="seed of the M fixed tasks (default: %(default)s)")
    m = p.add_argument_group("model")
    m.add_argument("--width", type=int, default=64, help="residual width (timaeus L2H4: 64) (default: %(default)s)")
    m.add_argument("--depth", type=int, default=2, help="transformer blocks (timaeus L2H4: 2) (default: %(default)s)")
    m.add_argument("--heads", type=int, default=4,
                   help="attention heads, fixed across widths (timaeus: 4; luis-mueller: 16) (default: %(default)s)")
    m.add_argument("--mlp-ratio", type=float, default=1.0,
                   help="MLP width / width (timaeus: 64/64 = 1; luis-mueller: 4) (default: %(default)s)")
    m.add_argument("--activation", choices=tuple(ACTIVATIONS), default="relu",
                   help="MLP nonlinearity (timaeus: relu; luis-mueller: gelu) (default: %(default)s)")
    m.add_argument("--param", choices=PARAMS, default="sp",
                   help="parametrization, through mup_patch: sp (attention 1/sqrt(d_head)), mup (1/d_head-like, "
                        "hidden lr / width mult, readout / width mult), umup (default: %(default)s)")
    m.add_argument("--base-width", type=int, default=64,
                   help="the width at which mup equals sp (default: %(default)s, the paper model's width)")
    m.add_argument("--attn-mult", type=float, default=1.0, help="µP's attention multiplier (default: %(default)s)")
    m.add_argument("--readout-zero-init", action="store_true",
                   help="µP/u-µP: start the readout at zero (microsoft/mup's recommendation) (default: off)")
    m.add_argument("--query-zero-init", action="store_true",
                   help="start the query weights at zero, so attention is uniform at init at every width "
                        "(microsoft/mup's recommendation; timaeus: off) (default: off)")
    o = p.add_argument_group("optimizer and schedule")
    o.add_argument("--steps", type=int, default=500_000, help="training steps N (timaeus: 500,000) (default: %(default)s)")
    o.add_argument("--batch", type=int, default=256, help="fresh sequences per step and member (default: %(default)s)")
    o.add_argument("--lr", type=float, nargs="+", default=[3e-3],
                   help="peak lr(s), one member each (timaeus' sweep: 3e-3) (default: %(default)s)")
    o.add_argument("--seeds", type=int, nargs="+", default=[0],
                   help="seed(s), one member each: a member's init and data (default: %(default)s)")
    o.add_argument("--schedule", choices=SCHEDULES, default="onecycle",
                   help="onecycle: timaeus' OneCycleLR (50%% linear warmup from lr/(N/2-1), linear decay); "
                        "cosine: linear warmup (default 2.5%% of N, luis-mueller) then cosine to --lr-floor; "
                        "linear: warmup then linear decay; constant: warmup then constant (default: %(default)s)")
    w = o.add_mutually_exclusive_group()
    w.add_argument("--warmup-steps", type=int, nargs="+", default=None,
                   help="warmup length(s) in steps, one member each (default: the schedule's)")
    w.add_argument("--warmup-frac", type=float, nargs="+", default=None,
                   help="warmup length(s) as fractions of --steps, one member each (default: the schedule's: "
                        "onecycle (N/2-1)/N, others 0.025)")
    o.add_argument("--warmup-start", type=float, default=None,
                   help="lr multiplier at step 0 (default: onecycle 1/(N/2-1), others 0)")
    o.add_argument("--lr-floor", type=float, default=None,
                   help="lr multiplier at the last step (default: onecycle 1/(N/2-1)^2, others 0)")
    o.add_argument("--beta1", type=float, default=0.9, help="Adam beta1 (default: %(default)s)")
    o.add_argument("--beta2", type=float, default=0.999, help="Adam beta2 (timaeus: torch's 0.999) (default: %(default)s)")
    o.add_argument("--eps", type=float, default=1e-8, help="Adam eps (default: %(default)s)")
    o.add_argument("--weight-decay", type=float, default=0.0,
                   help="decoupled (AdamW) weight decay of hidden matrices, times mup_patch's multiplier "
                        "(timaeus: 0; luis-mueller: 1e-5) (default: %(default)s)")
    o.add_argument("--grad-clip", type=float, default=0.0,
                   help="clip each member's gradient to this global norm; 0 = off (timaeus: off; "
                        "luis-mueller: 1.0) (default: %(default)s)")
    e = p.add_argument_group("evaluation and checkpoints")
    e.add_argument("--eval-batch", type=int, default=1024, help="sequences in the fixed eval batch (timaeus: 1024) (default: %(default)s)")
    e.add_argument("--eval-seed", type=int, default=1234, help="seed of the eval batch, shared by all members (default: %(default)s)")
    e.add_argument("--eval-log", type=int, default=100, help="log-spaced eval steps in [1, N] (timaeus: 100) (default: %(default)s)")
    e.add_argument("--eval-lin", type=int, default=100, help="linearly spaced eval steps in [0, N] (timaeus: 100) (default: %(default)s)")
    e.add_argument("--ckpt-log", type=int, default=100,
                   help="log-spaced checkpoint steps in [1, N] (timaeus: 100) (default: %(default)s)")
    e.add_argument("--ckpt-lin", type=int, default=100,
                   help="linearly spaced checkpoint steps in [0, N] (timaeus: 10,000; 100 keeps the disk "
                        "at ~0.13 GB per member for the paper model) (default: %(default)s)")
    r = p.add_argument_group("run")
    r.add_argument("--out", default="runs/icl", help="folder for run logs and checkpoints (default: %(default)s)")
    r.add_argument("--resume", action="store_true",
                   help="continue from every member's latest common checkpoint in --out (default: off)")
    r.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="torch device (default: cuda when available, else cpu)")
    r.add_argument("--no-cuda-graph", dest="cuda_graph", action="store_false",
                   help="on CUDA, run eager steps instead of replaying a CUDA graph (default: graph on)")
    r.add_argument("--compile", action="store_true",
                   help="torch.compile the loss (sampling, forward, hence backward) and the Adam update before "
                        "the CUDA graph captures them: fewer kernels; costs a compile of ~1 min (default: off)")
    r.add_argument("--tf32", action="store_true", help="allow TF32 matmuls on CUDA (default: off, full fp32)")
    r.add_argument("--wandb", default=None, metavar="PROJECT", help="mirror run logs to this wandb project (default: off)")
    r.add_argument("--quiet", action="store_true", help="no progress lines (default: off)")
    return p


class BadInput(ValueError):
    """A flag combination that cannot run; main prints it as one line and exits 2."""


def resolve(args) -> tuple[list[Member], Optim]:
    """The members (lr x seed x warmup) and the shared optimizer settings, from the flags
    (and the task-dependent defaults filled into args)."""
    N = args.steps
    if N < 2:
        raise BadInput("--steps must be at least 2")
    if args.task == "affine":
        if args.noise_var not in (None, 0.0) or args.num_tasks is not None:
            raise BadInput("--noise-var and --num-tasks are garg's; the affine task is noiseless with fresh a, b")
        args.noise_var = 0.0
    elif args.noise_var is None:
        args.noise_var = 0.125
    if args.points is None:
        args.points = 16 if args.task == "garg" else 32
    half = max(N // 2 - 1, 1)  # OneCycleLR's phase-1 length with pct_start 0.5, and its div factors
    onecycle = args.schedule == "onecycle"
    if args.warmup_steps is not None:
        warmups = args.warmup_steps
    elif args.warmup_frac is not None:
        warmups = [round(f * N) for f in args.warmup_frac]
    else:
        warmups = [half if onecycle else round(0.025 * N)]
    if any(w < 0 or w >= N for w in warmups):
        raise BadInput(f"warmups {warmups} must lie in [0, --steps)")
    start = args.warmup_start if args.warmup_start is not None else (1 / half if onecycle else 0.0)
    floor = args.lr_floor if args.lr_floor is not None else (1 / half ** 2 if onecycle else 0.0)
    optim = Optim(steps=N, batch=args.batch, betas=(args.beta1, args.beta2), eps=args.eps,
                  weight_decay=args.weight_decay, grad_clip=args.grad_clip,
                  decay="linear" if onecycle else args.schedule, warmup_start=start, floor=floor)
    members = [Member(seed=s, lr=lr, warmup=w) for lr in args.lr for s in args.seeds for w in warmups]
    return members, optim


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def main(argv=None) -> int:
    from icl.train import Trainer  # after parsing, so --help is quick
    args = parse_args(argv)
    try:
        members, optim = resolve(args)
        trainer = Trainer(args, members, optim)
    except (BadInput, AssertionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return runlog.EXIT_BAD_INPUT
    return trainer.train()
