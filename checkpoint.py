"""Checkpoints and resume, and the records of a run that its log keeps beside the curve (the
resolved config and the environment). A checkpoint is the Trainer's state_dict, written
atomically (runlog.atomic_write: a kill at any moment leaves the old checkpoint or the new
one) by rank 0; a completed run deletes it, so --resume of a completed run has nothing to do.
"""
from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Callable

import torch

import distributed
from config import REPO, ConfigError
from runlog import COMPLETED, atomic_write, git_commit, read_json


def save_checkpoint(path: Path, state_dict: Callable[[], dict]) -> None:
    """Save state_dict() at path. Under torchrun rank 0 writes (every rank holds the same
    state), and every rank returns once the checkpoint is on disk."""
    rank, world_size = distributed.world()
    if rank == 0:
        atomic_write(path, lambda file: torch.save(state_dict(), file))
    if world_size > 1:
        torch.distributed.barrier(group=distributed.CONTROL_GROUP)


def load_checkpoint(path: Path, load_state_dict, device: str) -> None:
    """load_state_dict(the checkpoint at path); under torchrun every rank loads it, onto its
    own device. A checkpoint that is unreadable, or saved by a run with other shapes, is a
    ConfigError that says to delete it."""
    try:
        map_location = device if distributed.world()[1] > 1 else None
        load_state_dict(torch.load(path, weights_only=False, map_location=map_location))
    except Exception as e:
        detail = " ".join(str(e).split())[:200]
        raise ConfigError(f"cannot resume from {path} ({type(e).__name__}: {detail}); "
                          "delete it to start the run over")


def completed_before(log_path: Path) -> bool:
    """Whether the run log at log_path says its run completed (then --resume does nothing)."""
    log = read_json(log_path) if log_path.exists() else None
    return isinstance(log, dict) and log.get("status") == COMPLETED


def environment(args) -> dict:
    return {"torch": torch.__version__, "python": platform.python_version(),
            "device": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu",
            "git_commit": git_commit(REPO), "hostname": platform.node(), "world_size": distributed.world()[1],
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def config_for_log(args) -> dict:
    return {k: (str(v) if isinstance(v, Path) else
                {n: str(p) for n, p in v.items()} if isinstance(v, dict) else v)
            for k, v in sorted(vars(args).items())}
