"""Per-member checkpoints: `<out>/<run_name>.ckpt/step_<step>.pt`, written atomically (runlog).

Each file is one model: its weights (an ICLTransformer state dict), its Adam moments, the step,
the step its loss first went non-finite (-1: never), the train loss summed since the last eval
and the count of steps summed (so a resumed run logs the same train loss), its train seconds, and everything needed to
rebuild the model (`load_model`): the model config and the parametrization's settings. The data
need no RNG state: a batch is a function of the member's seed and the step (icl.tasks).
"""
from __future__ import annotations

import io
from dataclasses import asdict
from pathlib import Path

import torch

import runlog
from icl.model import ICLTransformer, ModelConfig, make_parametrization, multipliers


def checkpoint_dir(out: Path, run_name: str) -> Path:
    return Path(out) / f"{run_name}.ckpt"


def checkpoint_path(out: Path, run_name: str, step: int) -> Path:
    return checkpoint_dir(out, run_name) / f"step_{step:09d}.pt"


def checkpoint_steps(out: Path, run_name: str) -> list[int]:
    """The steps a member has checkpoints for, ascending."""
    return sorted(int(p.stem.split("_")[1]) for p in checkpoint_dir(out, run_name).glob("step_*.pt"))


def save(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    runlog.atomic_write_bytes(path, buffer.getvalue())


def member_state(*, model: dict, adam_m: dict, adam_v: dict, step: int, diverged_at: int,
                 train_loss_sum: tuple[float, float], train_seconds: float, config: ModelConfig, param: str, base_width: int, attn_mult: float,
                 member: dict, run_name: str) -> dict:
    return {"model": model, "adam": {"m": adam_m, "v": adam_v}, "step": step, "diverged_at": diverged_at,
            "train_loss_sum": train_loss_sum, "train_seconds": train_seconds, "model_config": asdict(config),
            "parametrization": {"param": param, "base_width": base_width, "attn_mult": attn_mult},
            "member": member, "run_name": run_name}


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def load_model(path: Path | str) -> tuple[ICLTransformer, dict]:
    """The model a checkpoint holds, with its parametrization's forward multipliers, and the
    checkpoint itself (step, member, ...). The LLC estimator's entry point."""
    ckpt = load(Path(path))
    config = ModelConfig(**ckpt["model_config"])
    p = ckpt["parametrization"]
    parametrization = make_parametrization(config, param=p["param"], base_width=p["base_width"],
                                           attn_mult=p["attn_mult"])
    model = ICLTransformer(config, multipliers(parametrization))
    model.load_state_dict(ckpt["model"])
    return model, ckpt
