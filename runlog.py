"""The run log: its schema, atomic writes, the git state, exit codes, a reader, and an
optional Weights & Biases mirror. Imports no torch, so grid.py and plots/ run without it.

A run log is one JSON file per run, `<out>/<run_name>.json`, rewritten whole after every eval
(schema version 1; `new_run_log` builds it):

    schema_version  int, SCHEMA_VERSION; readers refuse any other
    run_name        str, the file's stem
    status          RUNNING, then COMPLETED, DIVERGED or INTERRUPTED (STATUSES)
    command         the command line that ran, as a list (sys.executable first)
    config          every resolved setting, JSON-able; the trainer adds "param_groups":
                    {group: {"lr", "betas", "schedule", "weight_decay_mult"}}, each
                    optimizer group's settings before its schedule
    env             software, device, git commit ("<sha>[-dirty]"), host, world size, start time
    eval_sets       the names of the fixed eval sets every curve point scores
    curve           one point per eval: {"tokens", "step", "train_seconds", "lr": {group: lr},
                    "seq_len", "batch_size", "microbatches", "chunk_tokens", "grad_norm",
                    "eval": {set: {"loss", "perplexity", "accuracy"}}, "train_loss"}
                    (train_loss and grad_norm are null before the first step: JSON has no NaN)
    events          {"tokens", "step", "kind", "detail"}: resumed, signal, device_hung, oom_shrink
    summary         at the end: {"tokens", "steps", "train_seconds", "compile_seconds",
                    "final_eval", "last_eval", "diverged_at"}; final_eval is the eval at the end
                    of a completed run ({set: {...}}), null for a run that stopped early
                    (diverged, interrupted); last_eval is the latest curve point's
                    {"tokens", "step", "eval"} (null if there was none); logs written before
                    last_eval existed have no last_eval and may hold the latest eval in
                    final_eval whatever their status

Every file the project writes (run logs, grid manifests, checkpoints) goes through
`atomic_write` (or atomic_write_bytes, write_json): a temporary file in the same folder, fsync, rename, fsync of the folder,
so a kill or a power cut at any moment leaves the old file or the new one, never a torn one.

`RunLogWriter` holds a log, appends points and events, saves it, and with a project name
mirrors every saved curve point to Weights & Biases. wandb is imported only then (it is
optional, slow to import and reaches for the network; WANDB_MODE=offline keeps it local), and
the mirror only reads the log, so the JSON is byte-identical with or without it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

SCHEMA_VERSION = 1

# A run's status, as the log's "status" records it.
RUNNING, COMPLETED, DIVERGED, INTERRUPTED = "running", "completed", "diverged", "interrupted"
STATUSES = (RUNNING, COMPLETED, DIVERGED, INTERRUPTED)

# The trainer's exit codes: its contract with grid.py and any other caller.
EXIT_COMPLETED = 0
EXIT_BAD_INPUT = 2  # a bad flag, file or resume checkpoint; one line on stderr says which
EXIT_DIVERGED = 3  # the loss went non-finite or blew up; the log says where (summary.diverged_at)
EXIT_DEVICE_HUNG = 4  # the device stopped answering; --resume continues from the last checkpoint
EXIT_SIGINT = 128 + signal.SIGINT  # 130, the shell's convention for death by a signal
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143
EXIT_CODES = {
    EXIT_COMPLETED: "completed",
    EXIT_BAD_INPUT: "bad input",
    EXIT_DIVERGED: "diverged",
    EXIT_DEVICE_HUNG: "device hung",
    EXIT_SIGINT: "interrupted by SIGINT",
    EXIT_SIGTERM: "interrupted by SIGTERM",
}
EXIT_SIGNAL = {signal.SIGINT: EXIT_SIGINT, signal.SIGTERM: EXIT_SIGTERM}  # the code each stop signal exits with


class RunLogError(ValueError):
    """A file that is not a readable run log of this schema; str() is one line naming the file and the fix."""


# ----------------------------------------------------------------------------------------------
# Writing and reading files

def atomic_write(path: Path | str, write: Callable[[BinaryIO], object]) -> None:
    """Call write(file) on a temporary file, then put it at path, so that a crash at any moment
    leaves the old file or the new one (checkpoints: `atomic_write(path, lambda f: torch.save(state, f))`).

    The temporary file sits in the same folder (os.replace is atomic only within one file
    system) and is hidden and git-ignored (.*.tmp*). fsync of the file before the rename and
    of the folder after it makes both the content and the rename survive a power cut."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(temporary, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    atomic_write(path, lambda file: file.write(data))


def json_bytes(obj) -> bytes:
    """The project's JSON layout: one-space indent (readable, and diffs well), trailing newline."""
    return (json.dumps(obj, indent=1) + "\n").encode()


def write_json(path: Path | str, obj) -> None:
    atomic_write_bytes(path, json_bytes(obj))


def read_json(path: Path | str) -> dict | None:
    """A JSON file's content, or None when it is missing; an unreadable file warns on stderr and
    gives None (a reader polling a run's log must not die on it)."""
    try:
        with open(path) as file:
            return json.load(file)
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as error:
        print(f"warning: cannot read {path}: {error}", file=sys.stderr)
        return None


# ----------------------------------------------------------------------------------------------
# The schema

def new_run_log(*, run_name: str, command: list[str], config: dict, env: dict, eval_sets) -> dict:
    """A fresh run log, status RUNNING, with an empty curve, no events and an empty summary."""
    return {"schema_version": SCHEMA_VERSION, "run_name": run_name, "status": RUNNING,
            "command": command, "config": config, "env": env, "eval_sets": eval_sets,
            "curve": [], "events": [], "summary": {}}


def new_event(*, tokens: int, step: int, kind: str, detail: str | None = None) -> dict:
    """One entry of a log's events: what happened (kind) at which point of training."""
    return {"tokens": tokens, "step": step, "kind": kind, "detail": detail}


def is_run_log(content) -> bool:
    """Whether a JSON file's content claims to be a run log (any schema version)."""
    return isinstance(content, dict) and "schema_version" in content


def check_run_log(path: Path | str, content) -> dict:
    """content itself when it is a run log of SCHEMA_VERSION; RunLogError otherwise."""
    if not is_run_log(content):
        raise RunLogError(f"{path}: not a run log (no schema_version); pass a run's <out>/<run_name>.json")
    if content["schema_version"] != SCHEMA_VERSION:
        raise RunLogError(f"{path}: run log schema_version {content['schema_version']!r}, this code reads "
                          f"{SCHEMA_VERSION}; read it with the commit that wrote it (env.git_commit) "
                          f"or rerun the run")
    return content


def load_run_log(path: Path | str) -> dict:
    """The run log at path, checked to be of this schema (RunLogError: one line with the fix)."""
    try:
        content = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise RunLogError(f"{path}: cannot read it as JSON ({error}); check the path, or rerun "
                          f"the run if the file is damaged") from None
    return check_run_log(path, content)


def load_run_logs(directories: Iterable[Path | str]) -> dict[Path, dict]:
    """Every run log in the given folders (not recursive), by path, in path order; a folder
    named twice counts once. JSON files that are not run logs (manifest.json, benchmarks) are
    left out; a run log of another schema version raises RunLogError."""
    logs, seen = {}, set()
    for directory in directories:
        for path in sorted(Path(directory).glob("*.json")):
            if path.resolve() in seen or path.name == "manifest.json":
                continue
            seen.add(path.resolve())
            try:
                content = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as error:
                raise RunLogError(f"{path}: cannot read it as JSON ({error}); move it out of "
                                  f"{directory} or rerun its run") from None
            if is_run_log(content):
                logs[path] = check_run_log(path, content)
    return logs


# ----------------------------------------------------------------------------------------------
# Git state

def git_state(directory: Path | str) -> tuple[str | None, bool | None]:
    """(commit, uncommitted changes to tracked files) of the repository at directory, or
    (None, None). $GIT_COMMIT, when set, names the commit: a GPU machine's .git can stay at an
    older commit while the working tree travels, so its HEAD is stale."""
    if os.environ.get("GIT_COMMIT"):
        return os.environ["GIT_COMMIT"], False
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True,
                                text=True, check=True, timeout=10).stdout.strip()
        changes = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=directory,
                                 capture_output=True, text=True, check=True, timeout=10).stdout
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return None, None
    return commit, bool(changes.strip())


def git_commit(directory: Path | str) -> str:
    """The commit as a run log's env records it: "<sha>", "<sha>-dirty" or "unknown"."""
    commit, dirty = git_state(directory)
    return "unknown" if commit is None else commit + ("-dirty" if dirty else "")


# ----------------------------------------------------------------------------------------------
# The writer and its Weights & Biases mirror

def flatten(tree: dict, prefix: str = "") -> dict:
    """{"eval": {"valid": {"loss": 1.0}}} -> {"eval/valid/loss": 1.0}; None values are left out
    (wandb would draw them as zeros)."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "/"))
        elif value is not None:
            flat[name] = value
    return flat


class WandbMirror:
    """Sends a run log's curve points, status and summary to one Weights & Biases run.

    The wandb run starts at the first point sent, named after the run, with the log's config.
    Each process mirrors the whole curve it saves (a resumed run starts a new wandb run that
    holds every point of the log), with tokens as the x-axis."""

    def __init__(self, project: str):
        try:
            import wandb  # here, not at the top: optional, slow to import, only wanted with a project
        except ImportError:
            raise RunLogError(f"--wandb {project}: the wandb package is not installed; "
                              f"pip install wandb, or drop --wandb") from None
        self.wandb = wandb
        self.project = project
        self.run = None
        self.sent = 0  # curve points already sent

    def start(self, log: dict) -> None:
        param = log["config"].get("param")
        self.run = self.wandb.init(project=self.project, name=log["run_name"], config=log["config"],
                                   tags=[param] if param else None)
        self.run.define_metric("*", step_metric="tokens")

    def update(self, log: dict) -> None:
        if self.run is None:
            self.start(log)
        for point in log["curve"][self.sent:]:
            self.run.log(flatten(point))
        self.sent = len(log["curve"])
        self.run.summary.update({"status": log["status"], **flatten(log["summary"] or {})})

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


class RunLogWriter:
    """A run log (`self.log`, a plain dict of the schema above) and the file it is saved to.

    Callers append with add_point/add_event, set status and summary on self.log, and call
    save(). A resumed run replaces self.log with its checkpoint's copy. With wandb_project,
    every save also mirrors the new curve points; the file written does not depend on it."""

    def __init__(self, path: Path | str, log: dict, *, wandb_project: str | None = None):
        self.path = Path(path)
        self.log = log
        self.mirror = WandbMirror(wandb_project) if wandb_project else None

    def add_point(self, point: dict) -> None:
        self.log["curve"].append(point)

    def add_event(self, *, tokens: int, step: int, kind: str, detail: str | None = None) -> None:
        self.log["events"].append(new_event(tokens=tokens, step=step, kind=kind, detail=detail))

    def save(self) -> None:
        write_json(self.path, self.log)
        if self.mirror is not None:
            self.mirror.update(self.log)

    def close(self) -> None:
        """End the wandb run, if any (the JSON needs no closing)."""
        if self.mirror is not None:
            self.mirror.finish()
