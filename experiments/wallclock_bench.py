"""The wall clock a user sees: the default command from empty compile caches and from warm ones,
side by side with hlb-gpt v0.4.1 on the same data, in one process tree on one GPU.

Each variant of this trainer runs `python main.py --data-dir D --eval-data wikitext=W` (plus the
variant's flags) as a new process, first with empty inductor and Triton caches (cold: a new
machine, or a new torch), then again with the caches the first run left (warm: a user's second
run, or every run of a grid after its first). The wall time is measured around the process;
the run log gives its compile and training seconds; the rest (start-up, data, evals, the
final checkpoint) is wall minus both. hlb-gpt runs through experiments/hlb_gpt_control.py (its
main.py unchanged, the same token files), whose wall time also holds its evals on this
trainer's fixed windows (a few seconds, outside its training clock). "Time to 3.97" is where
books/valid first reaches 3.97, linear between evals, on each trainer's training clock.

The token caches are filled before anything is timed (tokenizing is not compiling).

    python experiments/wallclock_bench.py --data-dir .data/books \\
        --eval-data wikitext=.data/wikitext-103/wiki.valid.raw \\
        --variant blocks= --variant whole=--compile-scope=whole --hlb-main .hlb_gpt/main.py \\
        --json runs/h100_reference/wallclock.json
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import runlog  # noqa: E402

TARGET_LOSS = 3.97  # hlb-gpt v0.4.1's books/valid loss at the end of its default run


def seconds_to_loss(curve: list, eval_set: str, target: float = TARGET_LOSS) -> float | None:
    """Training seconds at which `eval_set`'s loss first reaches `target`, linear between the two
    evals around the crossing; None if it never does."""
    points = [(p["train_seconds"], p["eval"][eval_set]["loss"]) for p in curve
              if eval_set in (p.get("eval") or {})]
    for (s0, l0), (s1, l1) in zip(points, points[1:]):
        if l1 <= target < l0:
            return s0 + (s1 - s0) * (l0 - target) / (l0 - l1)
    return points[0][0] if points and points[0][1] <= target else None


def timed(command: list[str], env: dict, log_file: Path, cwd: Path | None = None) -> float:
    """Run command (output to log_file) and return its wall seconds; a failure stops the
    benchmark with a line naming the log."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(log_file, "w") as log:
        code = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              cwd=cwd).returncode
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"{shlex.join(command)} exited {code}: see {log_file}")
    return seconds


def run_ours(label: str, flags: list[str], cache: str, args, work: Path) -> dict:
    caches = work / f"cache_{label}"
    if cache == "cold":
        shutil.rmtree(caches, ignore_errors=True)
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(caches / "inductor"),
               TRITON_CACHE_DIR=str(caches / "triton"))
    name = f"{label}_{cache}"
    command = [sys.executable, "main.py", "--data-dir", str(args.data_dir), *sum((["--eval-data", e]
               for e in args.eval_data), []), "--seed", str(args.seed), "--out", str(work),
               "--run-name", name, *flags]
    wall = timed(command, env, work / f"{name}.out", cwd=REPO)
    log = runlog.load_run_log(work / f"{name}.json")
    summary = log["summary"]
    return {"trainer": f"this trainer, {label}", "cache": cache, "command": shlex.join(command),
            "wall_seconds": round(wall, 1), "compile_seconds": summary["compile_seconds"],
            "train_seconds": summary["train_seconds"],
            "other_seconds": round(wall - summary["compile_seconds"] - summary["train_seconds"], 1),
            "tokens": summary["tokens"], "final_valid": summary["final_eval"]["valid"]["loss"],
            "seconds_to_3.97": seconds_to_loss(log["curve"], "valid")}


def run_hlb(args, work: Path) -> dict:
    out = work / "hlb"
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "experiments/hlb_gpt_control.py", "--hlb-main", str(args.hlb_main),
               "--data-dir", str(args.data_dir), "--seeds", str(args.seed), "--out", str(out)]
    wall = timed(command, dict(os.environ), work / "hlb.out", cwd=REPO)
    log = runlog.load_run_log(out / f"hlb_s{args.seed}.json")
    return {"trainer": "hlb-gpt v0.4.1", "cache": "-", "command": shlex.join(command),
            "wall_seconds": round(wall, 1), "compile_seconds": 0.0,
            "train_seconds": log["summary"]["train_seconds"],
            "other_seconds": round(wall - log["summary"]["train_seconds"], 1),
            "tokens": log["summary"]["tokens"], "final_valid": log["summary"]["final_eval"]["valid"]["loss"],
            "seconds_to_3.97": seconds_to_loss(log["curve"], "valid")}


def table(rows: list[dict]) -> str:
    lines = ["| trainer | caches | wall s | compile s | training s | other s | books/valid | s to 3.97 |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        to_target = "never" if r["seconds_to_3.97"] is None else f"{r['seconds_to_3.97']:.1f}"
        lines.append(f"| {r['trainer']} | {r['cache']} | {r['wall_seconds']:.1f} | {r['compile_seconds']:.1f} "
                     f"| {r['train_seconds']:.1f} | {r['other_seconds']:.1f} | {r['final_valid']:.3f} | {to_target} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", type=Path, required=True, help="main.py's --data-dir (books)")
    p.add_argument("--eval-data", action="append", default=[], help="main.py's --eval-data NAME=PATH")
    p.add_argument("--variant", action="append", default=[],
                   help="LABEL=FLAGS: a variant of this trainer and the main.py flags it adds "
                   "(FLAGS split on spaces); each runs cold, then warm")
    p.add_argument("--caches", nargs="+", choices=["cold", "warm"], default=["cold", "warm"],
                   help="which cache states to run, in order (warm reuses the cold run's caches)")
    p.add_argument("--hlb-main", type=Path, default=None,
                   help="hlb-gpt v0.4.1's main.py; also run it (default: skip hlb-gpt)")
    p.add_argument("--seed", type=int, default=0, help="the seed of every run")
    p.add_argument("--work", type=Path, default=None, help="folder for caches and run logs (default: a temp dir)")
    p.add_argument("--json", type=Path, required=True, help="where to write the rows")
    args = p.parse_args(argv)
    variants = []
    for item in args.variant or ["blocks="]:
        label, sep, flags = item.partition("=")
        if not sep or not label:
            p.error(f"--variant {item!r}: use LABEL=FLAGS, e.g. whole=--compile-scope=whole")
        variants.append((label, flags.split()))
    work = args.work or Path(tempfile.mkdtemp(prefix="wallclock_"))
    work.mkdir(parents=True, exist_ok=True)
    # Fill the token caches untimed (main.load_data is what every run calls first).
    subprocess.run([sys.executable, "main.py", "--prepare-data", "--data-dir", str(args.data_dir),
                    *sum((["--eval-data", e] for e in args.eval_data), [])], cwd=REPO, check=True)
    import torch
    rows = []
    for label, flags in variants:
        for cache in args.caches:
            rows.append(run_ours(label, flags, cache, args, work))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    if args.hlb_main:
        rows.append(run_hlb(args, work))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    result = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
              "torch": torch.__version__, "git_commit": runlog.git_commit(REPO), "rows": rows}
    runlog.write_json(args.json, result)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
