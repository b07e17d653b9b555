"""The in-context regression transfer study: lr sweeps for SP and µP across width,
depth, steps, all three jointly, and warmup, on luis-mueller's affine task.

Every cell is one `python -m icl` process training an ensemble (the lr grid x seeds, and for the
warmup axis x warmups) on one GPU; cells are spread over the visible GPUs, JOBS at a time on
each (small models leave a GPU mostly idle, so several share one). A cell whose every member log
is complete is skipped, and an interrupted cell (SIGINT/SIGTERM at the time limit) checkpoints
and is resumed with --resume, so rerunning the same command continues the study.

    python experiments/icl_transfer.py --out .gpu_runs/icl_transfer [--only width,depth] [--limit 540]
    python experiments/icl_transfer.py --list            # the cells and their flags, no runs

The recipe, held fixed across cells (luis-mueller's, scaled down so the whole study fits a few
GPU-minutes): affine task, 32 shots, L1; heads 4, MLP 4x, gelu; batch 64 (theirs: 256);
AdamW with weight decay 1e-5, gradient clip 1, 2.5 % linear warmup then cosine to 0; base width
32 (where µP equals SP). The lr grid is x2 from 2.5e-4 to 3.2e-2 (2.1 decades around their
optimum 2.43e-3), 3 seeds. Cells of width >= 128 or >= 10,000 steps run compiled (--compile:
15-25 s to compile, then about twice the steps/s; not worth it for the short, narrow cells). Axes (width, depth, steps), SP and µP each:
    width   32, 64, 128, 256 (8x)     at depth 2, 4,000 steps
    depth   2, 4, 8 (4x)              at widths 32 (µP == SP) and 128, 4,000 steps
    steps   4,000, 10,000, 20,000 (5x) at widths 32 (µP == SP) and 128, depth 2
    joint   (32, 2, 4k), (64, 4, 10k), (128, 8, 20k): 4x width, 4x depth, 5x steps together
    warmup  width 32 and 256 at depth 2, 4,000 steps, warmups 0, 2.5 %, 10 %, 30 % of the run
    lrhigh  lrs 6.4e-2 and 1.28e-1 for the curves whose lowest loss sat at the grid's top lr, or within
            one seed sd of it there (µP's width axis; width 32 at depth 4, 8 and 10,000 steps; µP at
            width 128 over 10,000 and 20,000 steps; the warmup axis at width 32, and µP's at 256; SP
            only at width 32, where it is µP, since its optimum moves into the grid with width): a cell
            of its own (`<shape>_lrhigh`), read together with the shape's cell (icl.figures merges lrs)
    lrlow   lrs 6.25e-5 and 1.25e-4 where the lowest loss sat at the grid's bottom lr (SP at width 256
            without warmup): `<shape>_lrlow`, likewise
A warmup shape's continuation runs every warmup of its shape.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import runlog  # noqa: E402

LRS = ["2.5e-4", "5e-4", "1e-3", "2e-3", "4e-3", "8e-3", "1.6e-2", "3.2e-2"]  # x2, 2.1 decades
LRS_HIGH = ["6.4e-2", "1.28e-1"]  # the grid continued, where its top lr was the lowest point
LRS_LOW = ["6.25e-5", "1.25e-4"]  # and downward, where its bottom lr was
SEEDS = ["0", "1", "2"]
WARMUP_FRACS = ["0", "0.025", "0.1", "0.3"]  # 0.025: the other axes' warmup, a consistency check
AXES = ("width", "lrhigh", "lrlow", "depth", "steps", "joint", "warmup")
CONTINUED = {"lrhigh": LRS_HIGH, "lrlow": LRS_LOW}  # the axes that continue another shape's lr grid
RECIPE = ["--task", "affine", "--heads", "4", "--mlp-ratio", "4", "--activation", "gelu", "--batch", "64",
          "--weight-decay", "1e-5", "--grad-clip", "1", "--schedule", "cosine", "--base-width", "32",
          "--eval-batch", "1024", "--eval-log", "10", "--eval-lin", "10", "--ckpt-log", "0", "--ckpt-lin", "0",
          "--tf32", "--quiet"]


def cells() -> dict[str, tuple[str, list[str]]]:
    """{cell name: (axis, flags)} in run order: axes by importance, then cheap cells first (a
    time-limited call completes whole cells), SP beside µP; a cell shared by two axes appears once.
    A shape is (width, depth, steps, whether it runs the warmups)."""
    shapes = {("width", (w, 2, 4000, False)) for w in (32, 64, 128, 256)}
    # Depth and steps at the base width (32), where µP's runs are SP's, and at 128 (4x), where the
    # two differ: only there do these axes compare the parametrizations.
    shapes |= {("depth", (w, d, 4000, False)) for w in (32, 128) for d in (4, 8)}
    shapes |= {("steps", (w, 2, s, False)) for w in (32, 128) for s in (10000, 20000)}
    shapes |= {("joint", (w, d, s, False)) for w, d, s in ((64, 4, 10000), (128, 8, 20000))}
    shapes |= {("warmup", (w, 2, 4000, True)) for w in (32, 256)}
    shapes |= {("lrhigh", shape) for shape in ((32, 2, 4000, False), (64, 2, 4000, False), (128, 2, 4000, False),
                                               (256, 2, 4000, False), (32, 4, 4000, False), (32, 8, 4000, False),
                                               (32, 2, 10000, False), (128, 2, 10000, False), (128, 2, 20000, False),
                                               (32, 2, 4000, True), (256, 2, 4000, True))}
    shapes |= {("lrlow", (256, 2, 4000, True))}
    out = {}
    for axis, (w, d, s, warmups) in sorted(shapes, key=lambda a: (AXES.index(a[0]), a[1][0] ** 2 * a[1][1] * a[1][2])):
        for param in ("sp", "mup"):
            if axis == "lrhigh" and param == "sp" and w > 32:  # SP's optimum there lies inside the grid
                continue
            if axis == "lrlow" and param == "mup":  # µP's optima lie far above the grid's bottom
                continue
            flags = ["--param", param, "--width", str(w), "--depth", str(d), "--steps", str(s),
                     "--lr", *CONTINUED.get(axis, LRS), "--seeds", *SEEDS]
            if warmups:
                flags += ["--warmup-frac", *WARMUP_FRACS]
            if w >= 128 or s >= 10000:  # compiling costs 15-25 s, then about doubles the steps/s
                flags += ["--compile"]
            suffix = ("_warmup" if warmups else "") + (f"_{axis}" if axis in CONTINUED else "")
            out[f"{param}_w{w}_d{d}_s{s}{suffix}"] = (axis, flags)
    return out


def complete(folder: Path, members: int) -> bool:
    logs = list(folder.glob("*.json"))
    return len(logs) == members and all(runlog.read_json(p)["status"] in (runlog.COMPLETED, runlog.DIVERGED)
                                        for p in logs)


def flag_values(flags: list[str], flag: str) -> list[str]:
    """The values after `flag` up to the next flag; [] when it is absent."""
    if flag not in flags:
        return []
    values = flags[flags.index(flag) + 1:]
    return values[:next((i for i, value in enumerate(values) if value.startswith("--")), len(values))]


def members_of(flags: list[str]) -> int:
    """Ensemble members of a cell: lrs x seeds x warmups (an absent flag: one value)."""
    return math.prod(max(1, len(flag_values(flags, flag))) for flag in ("--lr", "--seeds", "--warmup-frac"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=".gpu_runs/icl_transfer", help="one folder per cell below this")
    p.add_argument("--only", default=None, help="comma-separated axes to run (default: all)")
    p.add_argument("--jobs", type=int, default=3, help="cells at a time on each GPU (default: %(default)s)")
    p.add_argument("--limit", type=float, default=None, help="seconds before running cells are stopped (SIGINT)")
    p.add_argument("--list", action="store_true", help="print the cells and exit")
    args = p.parse_args(argv)
    todo = {n: c for n, c in cells().items() if args.only is None or c[0] in args.only.split(",")}
    if args.list:
        for name, (axis, flags) in todo.items():
            print(f"{axis:7s} {name:32s} members {members_of(flags):3d}  {' '.join(flags)}")
        return 0
    out = Path(args.out)
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")
    queue = [(n, f) for n, (_, f) in todo.items() if not complete(out / n, members_of(f))]
    print(f"{len(todo) - len(queue)} of {len(todo)} cells complete; {len(queue)} to run on GPUs {gpus}", flush=True)
    start, running, stopping = time.time(), {}, False  # running: pid -> (name, gpu, Popen)
    while queue or running:
        for pid, (name, gpu, proc) in list(running.items()):
            if proc.poll() is not None:
                print(f"{name}: exit {proc.returncode} ({time.time() - start:.0f} s)", flush=True)
                del running[pid]
        if args.limit and time.time() - start > args.limit and not stopping:
            stopping = True
            queue = []
            for _, _, proc in running.values():
                proc.send_signal(signal.SIGINT)  # the trainer checkpoints and exits 130
        load = {g: sum(1 for _, gg, _ in running.values() if gg == g) for g in gpus}
        while queue and min(load.values()) < args.jobs:
            gpu = min(load, key=load.get)
            name, flags = queue.pop(0)
            folder = out / name
            resume = ["--resume"] if folder.exists() and any(folder.glob("*.ckpt")) else []
            out.mkdir(parents=True, exist_ok=True)
            log = open(out / f"{name}.log", "a")
            proc = subprocess.Popen([sys.executable, "-m", "icl", *RECIPE, *flags, "--out", str(folder), *resume],
                                    cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                    env={**os.environ, "CUDA_VISIBLE_DEVICES": gpu})
            running[proc.pid] = (name, gpu, proc)
            load[gpu] += 1
            print(f"{name}: started on GPU {gpu}", flush=True)
        time.sleep(1)
    done = sum(complete(out / n, members_of(f)) for n, (_, f) in todo.items())
    print(f"{done} of {len(todo)} cells complete", flush=True)
    return 0 if done == len(todo) else 1


if __name__ == "__main__":
    sys.exit(main())
