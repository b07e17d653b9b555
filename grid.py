"""Run the warmup grid: one trainer run per (parametrization, width, warmup, lr, seed) cell.

Examples:

    python grid.py --param sp mup --warmup-tokens 0 1M 5M 10M --widths 128 256 --seeds 0 1
    python grid.py --param mup --lr 1e-3 3e-3 --dry-run
    python grid.py --param sp --out out/sp_grid -- --total-tokens 20M   # passthrough after --

Every flag grid.py does not know is passed unchanged to every run, so trainer options need no
copy here. Each cell runs as its own subprocess:

    PYTHON TRAINER [passthrough] [--wandb PROJECT] --param P --warmup-tokens N --seed S
        [--width W] [--lr LR] --out DIR --run-name NAME --quiet --resume

and writes DIR/NAME.json; its stdout and stderr go to DIR/logs/NAME.log. DIR/manifest.json
records the grid flags, the passthrough arguments, every cell's command and its status.

Running the same command again resumes the grid: cells whose run log says "completed" or
"diverged" are skipped, every other cell is started again. `--resume` is always passed, so a
trainer that was stopped part way continues from its checkpoint, and a trainer asked to run a
cell that is already complete exits at once. See docs/grid_and_plots.md for the manifest format.

Exit status: 0 when every cell is completed or diverged, 1 otherwise, 2 for bad input, and
128 + signal number when stopped by SIGINT or SIGTERM (which are forwarded to the runs).
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import itertools
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

from config import REPO, DefaultsHelpFormatter
from runlog import (COMPLETED, DIVERGED, EXIT_BAD_INPUT, EXIT_COMPLETED, EXIT_DIVERGED, EXIT_SIGINT,
                    EXIT_SIGTERM, INTERRUPTED, git_state, read_json, write_json)

PARAMETRIZATIONS = ("sp", "mup", "umup")
DEFAULT_PARAMS = ["sp", "mup"]
DEFAULT_WARMUP_TOKENS = ["0", "1e6", "5e6", "1e7", "2e7", "4e7", "6e7"]
MANIFEST_VERSION = 1

# Flags grid.py sets for every cell; the same flag in the passthrough would silently fight
# with the cell's own value, so it is refused (with the grid flag to use instead).
RESERVED_TRAINER_FLAGS = {
    "--param": "--param",
    "--warmup-tokens": "--warmup-tokens",
    "--seed": "--seeds",
    "--width": "--widths",
    "--lr": "--lr",
    "--out": "--out",
    "--run-name": None,
    "--resume": None,
    "--quiet": None,
    "--wandb": "--wandb",
}

# How often the scheduler checks its subprocesses. Runs last minutes, so 0.1 s costs nothing
# and keeps the tests fast.
POLL_SECONDS = 0.1

TOKEN_SUFFIXES = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "b": 10**9}
TOKEN_COUNT_PATTERN = re.compile(r"^(\d+\.?\d*|\.\d+)(e[+-]?\d+)?([kmgb]?)$", re.IGNORECASE)


class GridInputError(ValueError):
    """Bad command-line input; reported as one line on stderr with exit status 2."""


# ----------------------------------------------------------------------------------------------
# Parsing and naming

def parse_token_count(text: str) -> int:
    """Parse a token count such as "0", "1000000", "1e6", "5M", "500K" or "1.5M".

    Suffixes K, M and G (or B) are decimal (1e3, 1e6, 1e9). The value must be a whole,
    non-negative number of tokens.
    """
    if text.strip().startswith("-"):
        raise GridInputError(f"warmup tokens must not be negative: {text!r}")
    match = TOKEN_COUNT_PATTERN.match(text.strip())
    if not match:
        raise GridInputError(f"cannot parse token count {text!r} (examples: 0, 1e6, 5M, 500K)")
    mantissa, exponent, suffix = match.groups()
    try:
        value = Decimal(mantissa + (exponent or "")) * TOKEN_SUFFIXES[suffix.lower()]
    except InvalidOperation as error:
        raise GridInputError(f"cannot parse token count {text!r}") from error
    if value != value.to_integral_value():
        raise GridInputError(f"token count {text!r} is not a whole number of tokens")
    return int(value)


def format_token_count(tokens: int) -> str:
    """Short, exact, filesystem-safe form of a token count: 0, 500, 1e6, 15e5, 6e7."""
    if tokens == 0:
        return "0"
    mantissa, exponent = tokens, 0
    while mantissa % 10 == 0:
        mantissa //= 10
        exponent += 1
    return f"{mantissa}e{exponent}" if exponent >= 3 else str(tokens)


def format_learning_rate(lr: float) -> str:
    """Short, filesystem-safe form of a learning rate: 0.003 -> 3e-3, 0.0025 -> 2.5e-3."""
    mantissa, exponent = f"{lr:.6e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def split_list_values(values: list[str]) -> list[str]:
    """Accept both "--x 1 2 3" and "--x 1,2,3" (and mixtures) for list flags."""
    return [item for value in values for item in value.split(",") if item.strip()]


def parse_positive_int(text: str, flag: str, allow_zero: bool = False) -> int:
    try:
        value = int(text)
    except ValueError as error:
        raise GridInputError(f"{flag}: {text!r} is not an integer") from error
    if value < 0 or (value == 0 and not allow_zero):
        raise GridInputError(f"{flag}: {text!r} must be {'>= 0' if allow_zero else '> 0'}")
    return value


def parse_learning_rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError as error:
        raise GridInputError(f"--lr: {text!r} is not a number") from error
    if not (value > 0 and value != float("inf")):
        raise GridInputError(f"--lr: {text!r} must be a positive finite number")
    return value


def reject_duplicates(values: list, flag: str) -> None:
    seen = set()
    for value in values:
        if value in seen:
            raise GridInputError(f"duplicate cells: {flag} lists {value} more than once")
        seen.add(value)


@dataclass(frozen=True)
class Cell:
    """One run of the grid. width and lr are None when the trainer's default is used."""

    param: str
    width: int | None
    warmup_tokens: int
    lr: float | None
    seed: int

    @property
    def name(self) -> str:
        """Deterministic, filesystem-safe run name, e.g. sp_w384_wu1e6_lr3e-3_s0."""
        parts = [self.param]
        if self.width is not None:
            parts.append(f"w{self.width}")
        parts.append(f"wu{format_token_count(self.warmup_tokens)}")
        if self.lr is not None:
            parts.append(f"lr{format_learning_rate(self.lr)}")
        parts.append(f"s{self.seed}")
        return "_".join(parts)

    def trainer_arguments(self, out_dir: str) -> list[str]:
        """The per-cell trainer flags (the passthrough arguments come before these)."""
        arguments = ["--param", self.param, "--warmup-tokens", str(self.warmup_tokens),
                     "--seed", str(self.seed)]
        if self.width is not None:
            arguments += ["--width", str(self.width)]
        if self.lr is not None:
            arguments += ["--lr", repr(self.lr)]
        return arguments + ["--out", out_dir, "--run-name", self.name, "--quiet", "--resume"]


@dataclass
class GridConfig:
    """Everything parsed from grid.py's command line."""

    cells: list[Cell]
    passthrough: list[str]
    out_dir: Path
    trainer: Path
    python: str
    jobs: int | None
    gpus_per_run: int
    port_base: int
    dry_run: bool
    quiet: bool
    wandb: str | None  # Weights & Biases project every run mirrors its log to, or None
    grid_flags: dict


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse prints usage plus the message on error; the contract is one line, exit 2."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


GRID_EPILOG = """\
Each cell is one trainer run (main.py), with a run log DIR/NAME.json and its output in
DIR/logs/NAME.log. Every flag grid.py does not know, and everything after a lone --, goes
unchanged to every run: `grid.py --param sp mup --widths 128 -- --preset cpu-small
--data-dir ../shared/data/books` runs main.py --preset cpu-small --data-dir ... in each
cell (the flags grid.py sets per cell, such as --width or --run-name, are refused there).
Running the same command again resumes the grid. Exit status: 0 when every cell completed
or diverged, 1 otherwise, 2 for bad input, 130/143 when stopped by SIGINT/SIGTERM."""


def build_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: otherwise a passthrough "--width 256" would be taken for "--widths".
    parser = OneLineErrorParser(
        prog="grid.py", allow_abbrev=False, formatter_class=DefaultsHelpFormatter, epilog=GRID_EPILOG,
        description="Run the warmup grid: one trainer run per (parametrization, width, warmup, lr, "
                    "seed) cell; several values per flag, space or comma separated.")
    parser.add_argument("--param", nargs="+", default=DEFAULT_PARAMS,
                        help=f"parametrizations, from {', '.join(PARAMETRIZATIONS)} (main.py's --param)")
    parser.add_argument("--warmup-tokens", nargs="+", default=DEFAULT_WARMUP_TOKENS,
                        help="warmup lengths in tokens, e.g. 0 1e6 5M 500K")
    parser.add_argument("--widths", nargs="+", help="model widths (default: the trainer's)")
    parser.add_argument("--seeds", nargs="+", default=["0"], help="seeds")
    parser.add_argument("--lr", nargs="+", help="learning rates (default: the trainer's)")
    parser.add_argument("--out", default=str(REPO / "out" / "grid"),
                        help="grid folder: run logs, logs/, manifest.json (git-ignored; the "
                             "committed study grids are in runs/)")
    parser.add_argument("--trainer", default=str(REPO / "main.py"), help="trainer script")
    parser.add_argument("--python", default=sys.executable, help="Python interpreter for the runs")
    parser.add_argument("--jobs", type=int,
                        help="runs at a time (default: one per GPU group, or 1 on CPU)")
    parser.add_argument("--gpus-per-run", type=int, default=1,
                        help="GPUs each run gets (a GPU group); the visible GPUs are split into "
                             "groups of this size, one run per group at a time; above 1 a run is "
                             "launched with torchrun across its group")
    parser.add_argument("--port-base", type=int, default=29500,
                        help="torchrun rendezvous port of the first concurrent run; "
                             "run slot i uses port-base + i")
    parser.add_argument("--dry-run", action="store_true", help="list the cells and exit")
    parser.add_argument("--quiet", action="store_true", help="do not print the live table")
    parser.add_argument("--wandb", metavar="PROJECT",
                        help="mirror every run's log to this Weights & Biases project, the runs "
                             "grouped by the grid folder's name (WANDB_MODE=offline: no network) "
                             "(default: off)")
    return parser


def parse_grid_arguments(argv: list[str]) -> GridConfig:
    """Parse grid.py's command line; raise GridInputError for bad input."""
    if "--" in argv:
        split = argv.index("--")
        grid_argv, after_separator = argv[:split], argv[split + 1:]
    else:
        grid_argv, after_separator = argv, []
    args, unknown = build_parser().parse_known_args(grid_argv)
    passthrough = unknown + after_separator

    for argument in passthrough:
        flag = argument.split("=", 1)[0]
        if flag in RESERVED_TRAINER_FLAGS:
            grid_flag = RESERVED_TRAINER_FLAGS[flag]
            advice = f"use grid.py's {grid_flag}" if grid_flag else "grid.py sets it per cell"
            raise GridInputError(f"{flag} cannot be passed through to the trainer: {advice}")

    params = [value.lower() for value in split_list_values(args.param)]
    for param in params:
        if param not in PARAMETRIZATIONS:
            raise GridInputError(f"--param: unknown parametrization {param!r} "
                                 f"(choose from {', '.join(PARAMETRIZATIONS)})")
    warmups = [parse_token_count(value) for value in split_list_values(args.warmup_tokens)]
    seeds = [parse_positive_int(value, "--seeds", allow_zero=True)
             for value in split_list_values(args.seeds)]
    widths = ([parse_positive_int(value, "--widths") for value in split_list_values(args.widths)]
              if args.widths else [None])
    lrs = [parse_learning_rate(value) for value in split_list_values(args.lr)] if args.lr else [None]
    for values, flag in ((params, "--param"), (warmups, "--warmup-tokens"), (seeds, "--seeds"),
                         (widths, "--widths"), (lrs, "--lr")):
        if not values:
            raise GridInputError(f"{flag} needs at least one value")
        reject_duplicates(values, flag)
    if args.jobs is not None and args.jobs < 1:
        raise GridInputError(f"--jobs must be >= 1, got {args.jobs}")
    if args.gpus_per_run < 1:
        raise GridInputError(f"--gpus-per-run must be >= 1, got {args.gpus_per_run}")
    trainer = Path(args.trainer)
    if not trainer.is_file():
        raise GridInputError(f"trainer script not found: {trainer}")

    cells = [Cell(param, width, warmup, lr, seed) for param, width, warmup, lr, seed
             in itertools.product(params, widths, warmups, lrs, seeds)]
    cells_by_name: dict[str, Cell] = {}
    for cell in cells:
        if cell.name in cells_by_name:
            raise GridInputError(f"duplicate cells: {cells_by_name[cell.name]} and {cell} "
                                 f"share run name {cell.name}")
        cells_by_name[cell.name] = cell

    grid_flags = {"params": params, "warmup_tokens": warmups,
                  "widths": None if args.widths is None else widths, "seeds": seeds,
                  "lrs": None if args.lr is None else lrs, "jobs": args.jobs,
                  "gpus_per_run": args.gpus_per_run, "port_base": args.port_base,
                  "trainer": str(trainer), "python": args.python, "out": args.out, "wandb": args.wandb}
    return GridConfig(cells=cells, passthrough=passthrough, out_dir=Path(args.out), trainer=trainer,
                      python=args.python, jobs=args.jobs, gpus_per_run=args.gpus_per_run,
                      port_base=args.port_base, dry_run=args.dry_run, quiet=args.quiet,
                      wandb=args.wandb, grid_flags=grid_flags)


# ----------------------------------------------------------------------------------------------
# Run logs, manifest, devices

def run_log_progress(run_log: dict | None) -> tuple[int | None, int | None, float | None]:
    """Tokens seen, optimizer steps and validation loss at the last eval of a run log (None
    when unknown). Steps are shown because hlb-gpt's dynamic microbatching gives runs of one
    grid different batches, and so different step counts for the same tokens."""
    if not run_log or not run_log.get("curve"):
        return None, None, None
    last_point = run_log["curve"][-1]
    valid_eval = last_point.get("eval", {}).get("valid", {})
    return last_point.get("tokens"), last_point.get("step"), valid_eval.get("loss")


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def format_duration(seconds: float) -> str:
    """Whole seconds as m:ss, or h:mm:ss from an hour on."""
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def estimated_seconds_left(durations: list[float], cells_left: int, slots: int) -> float | None:
    """The time the cells still pending or running will take: the mean duration of the cells
    this invocation finished, times the cells left, over the runs at a time that many cells
    can keep busy (None before the first cell finishes)."""
    if not durations:
        return None
    return sum(durations) / len(durations) * cells_left / max(1, min(slots, cells_left))


def status_summary(statuses) -> str:
    """'3 completed, 1 running, ...': how many cells are in each status, in a fixed order."""
    statuses = list(statuses)
    return ", ".join(f"{statuses.count(status)} {status}" for status in
                     ("completed", "running", "pending", "diverged", "interrupted", "failed")
                     if status in statuses)


def visible_gpus() -> list[str]:
    """Identifiers of the GPUs this process may use, as CUDA_VISIBLE_DEVICES would name them.

    CUDA_VISIBLE_DEVICES, when set, decides (CUDA stops at the first invalid entry, so "-1"
    hides every GPU); otherwise torch counts the devices. torch is imported only here because
    importing it takes seconds and grid.py needs nothing else from it.
    """
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        gpus = []
        for entry in (entry.strip() for entry in listed.split(",")):
            if not entry or entry.startswith("-"):
                break
            gpus.append(entry)
        return gpus
    try:
        import torch
    except ImportError:
        return []
    return [str(index) for index in range(torch.cuda.device_count())]


def lock_grid_folder(out_dir: Path) -> int:
    """Take an exclusive lock on the grid folder; return its file descriptor.

    Two grid.py processes on one folder would train the same cells twice. The descriptor is
    also handed to every run, so the lock lasts until the last run has exited, even when
    grid.py itself was killed and its runs carry on. The kernel drops it when they are gone.
    """
    descriptor = os.open(out_dir / ".grid.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise GridInputError(f"{out_dir} is in use by another grid.py or by runs it started")
    return descriptor


@dataclass(frozen=True)
class Slot:
    """A place to run one cell: its GPUs (empty on CPU) and its torchrun port."""

    index: int
    gpus: tuple[str, ...]
    port: int
    memory_fraction: float | None = None  # the run's share of its GPU's memory, when shared


# Of a GPU that several runs share, the share their caching allocators may take together: each
# process also holds a CUDA context and cuBLAS handles (about 0.5 GB) outside that cap. Without
# a cap, runs starting together each sized their chunks to the whole card, and the later ones
# failed at once (CUBLAS_STATUS_ALLOC_FAILED) while the first ones ran.
SHARED_GPU_MEMORY = 0.85


def make_slots(gpus: list[str], gpus_per_run: int, jobs: int | None, port_base: int) -> list[Slot]:
    """Split the visible GPUs into groups of gpus_per_run, one concurrent run per group.

    --jobs overrides the number of concurrent runs; with more jobs than groups, groups are
    shared round-robin.
    """
    if gpus_per_run > 1 and gpus_per_run > len(gpus):
        raise GridInputError(f"--gpus-per-run {gpus_per_run} needs that many GPUs, "
                             f"{len(gpus)} visible")
    groups = [tuple(gpus[start:start + gpus_per_run])
              for start in range(0, len(gpus) - gpus_per_run + 1, gpus_per_run)]
    concurrency = jobs if jobs is not None else max(len(groups), 1)
    runs_per_group = math.ceil(concurrency / len(groups)) if groups else 1
    fraction = round(SHARED_GPU_MEMORY / runs_per_group, 4) if runs_per_group > 1 else None
    return [Slot(index, groups[index % len(groups)] if groups else (), port_base + index, fraction)
            for index in range(concurrency)]


def cell_command(config: GridConfig, cell: Cell, slot: Slot | None) -> list[str]:
    """The command line that runs one cell (with torchrun when a run gets several GPUs)."""
    launcher = [config.python]
    if config.gpus_per_run > 1:
        # Single-node rendezvous like torchrun --standalone, but on a port chosen per slot:
        # --standalone picks a free port itself, which races when several runs start at once.
        port = slot.port if slot else config.port_base
        launcher += ["-m", "torch.distributed.run", "--nnodes=1",
                     f"--nproc-per-node={config.gpus_per_run}", "--rdzv-backend=c10d",
                     f"--rdzv-endpoint=localhost:{port}", f"--rdzv-id={cell.name}"]
    # A fraction in the passthrough wins: several grids sharing one GPU must split it together.
    share = ([] if slot is None or slot.memory_fraction is None
             or any(a.split("=")[0] == "--gpu-memory-fraction" for a in config.passthrough)
             else ["--gpu-memory-fraction", str(slot.memory_fraction)])
    wandb = ["--wandb", config.wandb] if config.wandb else []
    return (launcher + [str(config.trainer)] + config.passthrough + share + wandb
            + cell.trainer_arguments(str(config.out_dir)))


def status_after_exit(exit_code: int, log_status: str | None, log_written_by_attempt: bool) -> str:
    """Cell status once its process has ended, from the exit code and the run log's status.

    A clean exit must be backed by the run log. torchrun turns any failing worker's exit code
    into 1, so a diverged or interrupted multi-GPU run would look like a crash; the run log
    decides then, provided this attempt wrote it (an older log may say anything).
    """
    if exit_code == EXIT_COMPLETED:
        return COMPLETED if log_status == COMPLETED else "failed"
    if exit_code == EXIT_DIVERGED:
        return DIVERGED
    # Negative codes: killed by the signal before the trainer's handler could exit cleanly.
    if exit_code in (EXIT_SIGINT, EXIT_SIGTERM, -signal.SIGINT, -signal.SIGTERM):
        return INTERRUPTED
    if log_written_by_attempt and log_status in (DIVERGED, INTERRUPTED):
        return log_status
    return "failed"


# ----------------------------------------------------------------------------------------------
# The scheduler

@dataclass
class CellState:
    """What the manifest records about one cell."""

    cell: Cell
    command: list[str]
    status: str = "pending"
    exit_code: int | None = None
    gpus: tuple[str, ...] = ()
    tokens: int | None = None
    steps: int | None = None
    last_valid_loss: float | None = None
    started_at: str | None = None
    finished_at: str | None = None
    launch_time: float = 0.0  # time.time() at launch, to tell a fresh run log from an old one

    def to_json(self) -> dict:
        return {"name": self.cell.name, "param": self.cell.param, "width": self.cell.width,
                "warmup_tokens": self.cell.warmup_tokens, "lr": self.cell.lr,
                "seed": self.cell.seed, "status": self.status, "exit_code": self.exit_code,
                "command": self.command, "gpus": list(self.gpus), "tokens": self.tokens,
                "steps": self.steps, "last_valid_loss": self.last_valid_loss, "run_log": f"{self.cell.name}.json",
                "log": f"logs/{self.cell.name}.log", "started_at": self.started_at,
                "finished_at": self.finished_at}


class GridRunner:
    """Launches the cells, keeps the manifest current and handles SIGINT/SIGTERM."""

    def __init__(self, config: GridConfig, argv: list[str]):
        self.config = config
        self.argv = argv
        self.manifest_path = config.out_dir / "manifest.json"
        self.git_commit, self.git_dirty = git_state(Path(__file__).resolve().parent)
        self.started_at = utc_now()
        self.states = [CellState(cell, cell_command(config, cell, None)) for cell in config.cells]
        self.running: dict[int, tuple[CellState, subprocess.Popen]] = {}  # slot index -> run
        self.stop_signal: int | None = None
        self.lock_descriptor: int | None = None
        # Progress lines (printed with or without --quiet): cell i/N numbers the cells this
        # invocation runs, in launch order; the durations of those finished give the ETA.
        self.progress_numbers: dict[str, int] = {}
        self.progress_total = 0
        self.finished_durations: list[float] = []
        self.slot_count, self.start_time = 1, 0.0

    def run_log_path(self, cell: Cell) -> Path:
        return self.config.out_dir / f"{cell.name}.json"

    def run_log(self, cell: Cell) -> dict | None:
        return read_json(self.run_log_path(cell))

    def load_previous_state(self) -> None:
        """Mark cells already finished by an earlier invocation, from their run logs.

        The run log is the truth. The previous manifest is consulted for divergence, so that a
        run which diverged before writing any log is not retried either, and for a finished
        cell's launch record (exit code, GPUs, start and finish times), which no later
        invocation can observe again.
        """
        previous_manifest = read_json(self.manifest_path) or {}
        previous = {entry["name"]: entry for entry in previous_manifest.get("cells", [])}
        if previous_manifest and previous_manifest.get("passthrough") != self.config.passthrough:
            print("grid.py: warning: passthrough arguments differ from the previous invocation's "
                  f"({previous_manifest.get('passthrough')}); finished cells are not rerun",
                  file=sys.stderr)
        for state in self.states:
            run_log = self.run_log(state.cell)
            state.tokens, state.steps, state.last_valid_loss = run_log_progress(run_log)
            log_status = run_log.get("status") if run_log else None
            entry = previous.get(state.cell.name, {})
            if log_status in ("completed", "diverged"):
                state.status = log_status
            elif entry.get("status") == "diverged":
                state.status = "diverged"
            if state.status != "pending" and entry.get("status") == state.status:
                state.exit_code, state.gpus = entry.get("exit_code"), tuple(entry.get("gpus", ()))
                state.started_at, state.finished_at = entry.get("started_at"), entry.get("finished_at")

    def write_manifest(self) -> None:
        write_json(self.manifest_path, {
            "manifest_version": MANIFEST_VERSION,
            "started_at": self.started_at,
            "updated_at": utc_now(),
            "git_commit": self.git_commit,
            "git_dirty": self.git_dirty,
            "grid_argv": self.argv,
            "grid": self.config.grid_flags,
            "passthrough": self.config.passthrough,
            "stopped_by_signal": self.stop_signal,
            "cells": [state.to_json() for state in self.states],
        })

    def print_table(self) -> None:
        if self.config.quiet:
            return
        summary = status_summary(state.status for state in self.states)
        width = max(len(state.cell.name) for state in self.states)
        lines = [f"[{time.strftime('%H:%M:%S')}] {self.config.out_dir}: {summary}",
                 f"{'cell':<{width}}  {'status':<16}  {'tokens':>12}  {'steps':>6}  {'valid loss':>10}"]
        for state in self.states:
            status = state.status
            if status == "failed":
                status = f"failed (exit {state.exit_code})"
            tokens = "" if state.tokens is None else f"{state.tokens:,}"
            steps = "" if state.steps is None else str(state.steps)
            loss = "" if state.last_valid_loss is None else f"{state.last_valid_loss:.4f}"
            lines.append(f"{state.cell.name:<{width}}  {status:<16}  {tokens:>12}  {steps:>6}  {loss:>10}")
        print("\n".join(lines) + "\n", flush=True)

    def print_progress(self, state: CellState, event: str) -> None:
        """One line per cell started or finished: its number, name and outcome, the time since
        the grid started and the estimated time left."""
        number = f"cell {self.progress_numbers[state.cell.name]}/{self.progress_total}"
        line = f"[{time.strftime('%H:%M:%S')}] grid.py: {number} {event}: {state.cell.name}"
        if event == "finished":
            status = (f"failed (exit {state.exit_code}, see logs/{state.cell.name}.log)"
                      if state.status == "failed" else state.status)
            which = "final" if state.status == COMPLETED else "last"  # a stopped run's last eval
            loss = ("" if state.last_valid_loss is None
                    else f", {which} valid loss {state.last_valid_loss:.4f}")
            left = sum(1 for other in self.states if other.status in ("pending", "running"))
            eta = estimated_seconds_left(self.finished_durations, left, self.slot_count)
            line += (f" {status}{loss}; elapsed {format_duration(time.time() - self.start_time)}"
                     + (f", about {format_duration(eta)} left" if left and eta is not None else ""))
        print(line, flush=True)

    def handle_signal(self, signum, frame) -> None:
        """Stop launching cells and pass the signal on; the runs save and exit 130/143."""
        self.stop_signal = signum
        for _, process in self.running.values():
            if process.poll() is None:
                process.send_signal(signum)

    def launch(self, state: CellState, slot: Slot) -> None:
        state.command = cell_command(self.config, state.cell, slot)
        environment = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.config.wandb:  # wandb.init reads it: the grid's runs form one group
            environment.setdefault("WANDB_RUN_GROUP", self.config.out_dir.resolve().name)
        if slot.gpus:
            environment["CUDA_VISIBLE_DEVICES"] = ",".join(slot.gpus)
        log_path = self.config.out_dir / "logs" / f"{state.cell.name}.log"
        with open(log_path, "a") as log_file:
            log_file.write(f"=== grid.py {utc_now()}: {shlex.join(state.command)}\n")
            log_file.flush()
            # The child stays in grid.py's process group, so Ctrl-C or a signal to the group
            # reaches it directly even if grid.py is gone.
            process = subprocess.Popen(state.command, stdout=log_file, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env=environment,
                                       pass_fds=(self.lock_descriptor,))
        state.status, state.gpus, state.exit_code = "running", slot.gpus, None
        state.started_at, state.finished_at, state.launch_time = utc_now(), None, time.time()
        self.running[slot.index] = (state, process)
        self.print_progress(state, "started")
        if self.stop_signal is not None:  # the signal arrived while the process was starting
            process.send_signal(self.stop_signal)

    def collect_finished(self) -> bool:
        """Record runs that have ended; return whether any did."""
        changed = False
        for slot_index, (state, process) in list(self.running.items()):
            exit_code = process.poll()
            if exit_code is None:
                continue
            del self.running[slot_index]
            run_log = self.run_log(state.cell)
            log_status = run_log.get("status") if run_log else None
            log_written_by_attempt = (
                run_log is not None
                and self.run_log_path(state.cell).stat().st_mtime >= state.launch_time)
            state.exit_code = exit_code
            state.status = status_after_exit(exit_code, log_status, log_written_by_attempt)
            state.tokens, state.steps, state.last_valid_loss = run_log_progress(run_log)
            state.finished_at = utc_now()
            self.finished_durations.append(time.time() - state.launch_time)
            self.print_progress(state, "finished")
            changed = True
        return changed

    def run(self) -> int:
        """Run every unfinished cell; return grid.py's exit status."""
        slots = make_slots(visible_gpus(), self.config.gpus_per_run, self.config.jobs,
                           self.config.port_base)
        (self.config.out_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.lock_descriptor = lock_grid_folder(self.config.out_dir)
        self.load_previous_state()
        pending = [state for state in self.states if state.status not in ("completed", "diverged")]
        for state in pending:
            state.status = "pending"
        self.progress_numbers = {state.cell.name: number for number, state in enumerate(pending, 1)}
        self.progress_total, self.slot_count, self.start_time = len(pending), len(slots), time.time()
        print(f"grid.py: {len(pending)} of {len(self.states)} cells to run in {self.config.out_dir}, "
              f"{len(slots)} at a time (logs: {self.config.out_dir / 'logs'})", flush=True)
        previous_handlers = {signum: signal.signal(signum, self.handle_signal)
                             for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.write_manifest()
            self.print_table()
            while self.running or (pending and self.stop_signal is None):
                changed = self.collect_finished()
                free_slots = [slot for slot in slots if slot.index not in self.running]
                while free_slots and pending and self.stop_signal is None:
                    self.launch(pending.pop(0), free_slots.pop(0))
                    changed = True
                if changed:
                    self.write_manifest()
                    self.print_table()
                time.sleep(POLL_SECONDS)
            self.write_manifest()
        finally:
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)
            os.close(self.lock_descriptor)
        if self.stop_signal is not None:
            return 128 + self.stop_signal
        finished = all(state.status in ("completed", "diverged") for state in self.states)
        return 0 if finished else 1


def print_dry_run(config: GridConfig) -> None:
    """List the cells, whether an earlier run finished them, and their commands."""
    print(f"{len(config.cells)} cells in {config.out_dir}")
    for cell in config.cells:
        run_log = read_json(config.out_dir / f"{cell.name}.json")
        status = run_log.get("status", "pending") if run_log else "pending"
        print(f"{cell.name}  [{status}]\n    {shlex.join(cell_command(config, cell, None))}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        config = parse_grid_arguments(argv)
        if config.dry_run:
            print_dry_run(config)
            return 0
        return GridRunner(config, argv).run()
    except GridInputError as error:
        print(f"grid.py: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
