"""How grid.py's wall time and one run's throughput scale with the number of GPUs.

Two questions, measured on one machine in one process tree:

1. Grid wall time: how long grid.py takes to run one fixed grid with 1, 2 and 4 GPUs (one run
   per GPU at a time, grid.py's default). The same grid runs once per count in a fresh folder,
   with CUDA_VISIBLE_DEVICES set to the first N GPUs; the wall time of each grid.py call is
   measured around it, and each cell's duration is read from grid.py's manifest (started_at to
   finished_at, whole seconds). The default grid is 8 cells, SP and µP x warmups 0 and 1e6 x
   seeds 0 and 1 at the default width, 4M tokens each.
2. Data parallel: one default GPT run (main.py's default horizon unless --ddp-flags says
   otherwise) on 1 GPU, then on 2 under torchrun (docs/ddp.md); tokens per second are the run
   log's summary.tokens / summary.train_seconds (training alone: compile and evals excluded).

Compile caches. Every run uses the benchmark's own inductor and Triton caches (a folder in the
temp directory, emptied when a new benchmark starts). By default a warm-up pass of the whole
grid at the largest count runs first and pays the torch.compile cold start, so the timed passes
all start from warm caches; each pass records whether the caches were empty when it started
(`compile_caches`: cold / warm; null when no run compiled, as on the CPU) and its cells'
compile_seconds. With --no-warmup-pass the first timed pass is the cold one, and says so.

On a machine without CUDA, N GPUs become grid.py --jobs N on the CPU (and the data-parallel
runs use gloo), so the tool can be tested anywhere; the JSON's `mode` says which ran.

The passes run one after another, and OUT/grid_scaling.json is rewritten (atomically) after
each, so a run stopped part way (a device call's time limit) is continued by the same command
on the same machine: recorded passes are skipped, a pass that was cut off starts again in a
fresh folder. A JSON written with other settings is refused.

    # on a 4-GPU machine, from the repository root (data as experiments/device_call.sh has it)
    GIT_COMMIT=$(git rev-parse HEAD) python experiments/grid_scaling.py --out .gpu_runs/grid_scaling \\
        -- --data-dir .data/books --eval-data wikitext=.data/wikitext-103/wiki.valid.raw.xz

    # the same on the CPU, tiny: 2 cells on 1 and 2 jobs (tests/test_grid_scaling.py runs it
    # on a small data folder)
    python experiments/grid_scaling.py --out out/grid_scaling --gpu-counts 1 2 --no-warmup-pass \\
        --grid-flags "--param sp --widths 32 --warmup-tokens 0 --seeds 0 1 --total-tokens 2048" \\
        --ddp-flags "--width 32 --warmup-tokens 512 --total-tokens 2048" \\
        -- --device cpu --depth 1 --max-seq-len 64 --seq-len-start 16 --batch-tokens 256 \\
        --eval-tokens 512 --checkpoint-every-tokens 0 --data-dir ../shared/data/books --train-chars 1000000

Everything after `--` goes to every run (grid.py passes it through to main.py); --grid-flags are
grid.py's own flags plus any main.py flags for the grid's runs alone; --ddp-flags are main.py
flags for the two data-parallel runs alone. The JSON holds the device names, torch, the git
commit, every command with the environment it ran under, each pass's wall time and cells, the
data-parallel runs' tokens/s and the speed-ups; a markdown table is printed at the end.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import grid  # noqa: E402
import runlog  # noqa: E402
from experiments.wallclock_bench import timed  # noqa: E402
from config import DefaultsHelpFormatter, OneLineParser  # noqa: E402

DEFAULT_GRID_FLAGS = "--param sp mup --warmup-tokens 0 1e6 --seeds 0 1 --total-tokens 4e6"
# Flags this script sets on grid.py itself for every pass.
GRID_FLAGS_SET_HERE = ("--out", "--jobs", "--quiet", "--dry-run")


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    """The script's flags before `--`, the trainer flags after it (args.trainer_flags)."""
    split = argv.index("--") if "--" in argv else len(argv)
    parser = OneLineParser(prog="grid_scaling.py", description=__doc__.split("\n\n")[0],
                           formatter_class=DefaultsHelpFormatter,
                           usage="%(prog)s --out OUT [options] -- [main.py flags for every run]")
    parser.add_argument("--out", type=Path, required=True,
                        help="folder of the passes (a grid folder or run folder each) and the JSON "
                             "(default: none, required)")
    parser.add_argument("--json", type=Path, help="where to write the results "
                        "(default: OUT/grid_scaling.json)")
    parser.add_argument("--gpu-counts", type=int, nargs="+", default=[1, 2, 4],
                        help="GPUs per grid pass (on CPU: grid.py --jobs)")
    parser.add_argument("--grid-flags", default=DEFAULT_GRID_FLAGS,
                        help="grid.py's flags for the grid (and main.py flags for its runs alone)")
    parser.add_argument("--ddp-flags", default="",
                        help="main.py flags for the data-parallel runs alone (default: none: "
                             "main.py's default run)")
    parser.add_argument("--ddp-processes", type=int, default=2,
                        help="processes of the data-parallel run compared with one process")
    parser.add_argument("--warmup-pass", action=argparse.BooleanOptionalAction, default=True,
                        help="run the grid once at the largest count first, untimed, to fill "
                             "the compile caches")
    args = parser.parse_args(argv[:split])
    args.trainer_flags = argv[split + 1:]
    args.json = args.json or args.out / "grid_scaling.json"
    args.grid_flags = shlex.split(args.grid_flags)
    args.ddp_flags = shlex.split(args.ddp_flags)
    if any(count < 1 for count in args.gpu_counts) or len(set(args.gpu_counts)) < len(args.gpu_counts):
        parser.error(f"--gpu-counts {args.gpu_counts}: give distinct counts of 1 or more")
    if args.ddp_processes < 2:
        parser.error(f"--ddp-processes {args.ddp_processes}: use 2 or more (1 process is the baseline)")
    for flag in args.grid_flags:
        if flag.split("=")[0] in GRID_FLAGS_SET_HERE:
            parser.error(f"--grid-flags: {flag} is set by this script per pass; drop it")
    try:  # grid.py's own check of the grid and of the trainer flags, before anything runs
        grid.parse_grid_arguments([*args.grid_flags, "--out", str(args.out), "--", *args.trainer_flags])
    except grid.GridInputError as error:
        parser.error(str(error))
    return args


def run_mode(needed: int) -> tuple[str, list[str]]:
    """("cuda", the first `needed` visible GPUs) when there are GPUs, else ("cpu", []): on the
    CPU, N GPUs become N jobs or N gloo processes."""
    gpus = grid.visible_gpus()
    if not gpus:
        return "cpu", []
    if needed > len(gpus):
        raise SystemExit(f"grid_scaling.py: {needed} GPUs needed (--gpu-counts, --ddp-processes), "
                         f"{len(gpus)} visible: lower them")
    return "cuda", gpus[:needed]


def device_names(mode: str, count: int) -> list[str]:
    """The name of each GPU used, or the CPU's."""
    import torch
    if mode == "cpu":
        return [platform.processor() or "cpu"]
    return [torch.cuda.get_device_name(index) for index in range(count)]


def run_environment(mode: str, gpus: list[str], count: int, compile_cache: Path) -> dict:
    """The variables a pass sets on top of this process's environment: its GPUs, the shared
    compile cache, and on CPU one thread per process (the runs share the cores)."""
    variables = {"TORCHINDUCTOR_CACHE_DIR": str(compile_cache / "inductor"),
                 "TRITON_CACHE_DIR": str(compile_cache / "triton")}
    if mode == "cuda":
        variables["CUDA_VISIBLE_DEVICES"] = ",".join(gpus[:count])
    else:
        variables["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS", "1")
    return variables


def fill_token_cache(trainer_flags: list[str]) -> None:
    """Tokenize the data once, untimed, before runs that start together would each do it."""
    subprocess.run([sys.executable, str(REPO / "main.py"), "--prepare-data", *trainer_flags], check=True)


def cache_state(compile_cache: Path) -> str:
    """"warm" when the compile caches hold any file, else "cold"."""
    return "warm" if any(path.is_file() for path in compile_cache.rglob("*")) else "cold"


def manifest_seconds(cell: dict) -> float:
    """A cell's duration as grid.py's manifest records it (whole seconds)."""
    started, finished = (datetime.datetime.fromisoformat(cell[key]) for key in ("started_at", "finished_at"))
    return (finished - started).total_seconds()


def run_grid_pass(label: str, count: int, warmup: bool, args, mode: str, gpus: list[str],
                  compile_cache: Path) -> dict:
    """One grid.py call on `count` GPUs (or jobs) in the fresh folder OUT/label."""
    folder = args.out / label
    jobs = ["--jobs", str(count)] if mode == "cpu" else []  # on GPUs grid.py runs one per GPU
    command = [sys.executable, str(REPO / "grid.py"), *args.grid_flags, "--out", str(folder),
               *jobs, "--quiet", "--", *args.trainer_flags]
    variables = run_environment(mode, gpus, count, compile_cache)
    caches = cache_state(compile_cache)
    wall = timed(command, dict(os.environ, **variables), folder / "grid.log")
    manifest = runlog.read_json(folder / "manifest.json")
    cells, compiled = [], False
    for cell in manifest["cells"]:
        summary = runlog.load_run_log(folder / cell["run_log"])["summary"]
        compiled |= summary["compile_seconds"] > 0
        cells.append({"name": cell["name"], "status": cell["status"], "gpus": cell["gpus"],
                      "seconds": manifest_seconds(cell), "tokens": summary["tokens"],
                      "train_seconds": summary["train_seconds"],
                      "compile_seconds": summary["compile_seconds"]})
    return {"label": label, "count": count, "warmup_pass": warmup,
            "compile_caches": caches if compiled else None, "command": command,
            "env": variables, "wall_seconds": round(wall, 2), "cells": cells}


def run_data_parallel(label: str, processes: int, args, mode: str, gpus: list[str],
                      compile_cache: Path) -> dict:
    """One main.py run on `processes` GPUs (gloo processes on CPU), under torchrun above one."""
    folder = args.out / label
    launcher = ([sys.executable] if processes == 1 else
                [sys.executable, "-m", "torch.distributed.run", "--standalone",
                 f"--nproc_per_node={processes}"])
    command = [*launcher, str(REPO / "main.py"), *args.trainer_flags, *args.ddp_flags,
               "--out", str(folder), "--run-name", label, "--quiet"]
    variables = run_environment(mode, gpus, processes, compile_cache)
    wall = timed(command, dict(os.environ, **variables), folder / "main.log")
    log = runlog.load_run_log(folder / f"{label}.json")
    summary = log["summary"]
    return {"label": label, "processes": processes, "command": command, "env": variables,
            "wall_seconds": round(wall, 2), "run_log": str(folder / f"{label}.json"),
            "status": log["status"], "world_size": log["env"]["world_size"],
            "tokens": summary["tokens"], "steps": summary["steps"],
            "train_seconds": summary["train_seconds"], "compile_seconds": summary["compile_seconds"],
            "tokens_per_second": summary["tokens"] / summary["train_seconds"]}


def speedups(result: dict) -> dict:
    """Wall time of the 1-count grid over each count's, and the data-parallel tokens/s ratio."""
    timed = {str(p["count"]): p["wall_seconds"] for p in result["grid"] if not p["warmup_pass"]}
    ddp = {str(run["processes"]): run["tokens_per_second"] for run in result["ddp"]}
    return {"grid_wall_seconds": timed,
            "grid_speedup_vs_1": ({count: timed["1"] / wall for count, wall in timed.items()}
                                  if "1" in timed else {}),
            "ddp_tokens_per_second": ddp,
            "ddp_speedup": (ddp[str(result["settings"]["ddp_processes"])] / ddp["1"]
                            if len(ddp) == 2 else None)}


def markdown_tables(result: dict) -> str:
    unit = "GPUs" if result["mode"] == "cuda" else "jobs (CPU)"
    summary = result["summary"]
    lines = [f"| {unit} | pass | compile caches | wall s | cells | mean cell s | max cell s | speed-up vs 1 |",
             "|---|---|---|---|---|---|---|---|"]
    for p in result["grid"]:
        seconds = [cell["seconds"] for cell in p["cells"]]
        speedup = summary["grid_speedup_vs_1"].get(str(p["count"])) if not p["warmup_pass"] else None
        lines.append(f"| {p['count']} | {'warm-up' if p['warmup_pass'] else 'timed'} | "
                     f"{p['compile_caches'] or 'no compile'} | {p['wall_seconds']:.1f} | {len(seconds)} | "
                     f"{sum(seconds) / len(seconds):.1f} | {max(seconds):.0f} | "
                     f"{'-' if speedup is None else f'{speedup:.2f}x'} |")
    if result["ddp"]:
        lines += ["", "| processes | tokens | train s | tokens/s | speed-up |", "|---|---|---|---|---|"]
        for run in result["ddp"]:
            speedup = run["tokens_per_second"] / summary["ddp_tokens_per_second"]["1"]
            lines.append(f"| {run['processes']} | {run['tokens']:,} | {run['train_seconds']:.1f} | "
                         f"{run['tokens_per_second']:,.0f} | {speedup:.2f}x |")
    return "\n".join(lines)


def plan(mode: str, gpu_counts: list[int], warmup_pass: bool, ddp_processes: int) -> list[tuple]:
    """The passes in the order they run: (label, "grid" or "ddp", GPUs or processes, warm-up?)."""
    unit, largest = ("gpus" if mode == "cuda" else "jobs"), max(gpu_counts)
    passes = [(f"grid_warmup_{unit}{largest}", "grid", largest, True)] if warmup_pass else []
    passes += [(f"grid_{unit}{count}", "grid", count, False) for count in gpu_counts]
    return passes + [(f"ddp_{n}proc", "ddp", n, False) for n in (1, ddp_processes)]


def compile_cache_folder(out: Path) -> Path:
    """The benchmark's own inductor and Triton caches: outside OUT, whose run logs travel back
    from a GPU machine in an archive that hundreds of MB of kernels would overflow; named after
    OUT so that two benchmarks never share one."""
    digest = hashlib.sha1(str(out.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"grid_scaling_compile_cache_{digest}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_arguments(argv)
    mode, gpus = run_mode(max(*args.gpu_counts, args.ddp_processes))
    settings = {"mode": mode, "gpu_counts": args.gpu_counts, "grid_flags": args.grid_flags,
                "trainer_flags": args.trainer_flags, "ddp_flags": args.ddp_flags,
                "ddp_processes": args.ddp_processes, "warmup_pass": args.warmup_pass}
    compile_cache = compile_cache_folder(args.out)
    result = runlog.read_json(args.json)
    if result is None:  # a new benchmark: its first compile is cold
        import torch
        shutil.rmtree(compile_cache, ignore_errors=True)
        result = {"benchmark": "grid_scaling", "mode": mode, "devices": device_names(mode, len(gpus)),
                  "torch": torch.__version__, "python": platform.python_version(),
                  "git_commit": runlog.git_commit(REPO), "hostname": platform.node(),
                  "command": shlex.join([sys.executable, "experiments/grid_scaling.py", *argv]),
                  "settings": settings, "grid": [], "ddp": [], "summary": {}, "complete": False}
    elif result["settings"] != settings:
        raise SystemExit(f"grid_scaling.py: {args.json} was written with other settings "
                         f"({result['settings']}): choose another --out or --json")

    passes = plan(mode, args.gpu_counts, args.warmup_pass, args.ddp_processes)
    order = [label for label, *_ in passes]  # entries stay in this order, rerun or not
    recorded = {entry["label"] for entry in result["grid"] + result["ddp"]}
    todo = [step for step in passes if step[0] not in recorded]
    if todo:
        fill_token_cache(args.trainer_flags)
    for label, kind, count, warmup in todo:
        if (args.out / label).exists():  # cut off by an earlier invocation: start it afresh
            print(f"grid_scaling.py: {label} did not finish before; running it again", flush=True)
            shutil.rmtree(args.out / label)
        entry = (run_grid_pass(label, count, warmup, args, mode, gpus, compile_cache) if kind == "grid"
                 else run_data_parallel(label, count, args, mode, gpus, compile_cache))
        result[kind].append(entry)
        result[kind].sort(key=lambda recorded_entry: order.index(recorded_entry["label"]))
        result["summary"], result["complete"] = speedups(result), label == todo[-1][0]
        runlog.write_json(args.json, result)
        print(f"grid_scaling.py: {label}: {entry['wall_seconds']:.1f} s wall", flush=True)
    print(markdown_tables(result))
    print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
