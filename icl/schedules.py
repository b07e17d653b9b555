"""Learning-rate schedules (per ensemble member, on the device) and log + linear step grids.

Every schedule is linear warmup then decay: for the update at step t (0-based) of an
N-step run, with warmup W and warmup start s,

    t <  W:  s + (1 - s) t / W
    t >= W:  floor + (1 - floor) shape(p),   p = clamp((t - W) / (N - 1 - W), 0, 1)

shape(p) = (1 + cos(pi p)) / 2 (cosine), 1 - p (linear) or 1 (constant). Presets:

- `cosine` (luis-mueller): W = 2.5 % of N, s = 0, cosine to floor 0. (torch's CosineAnnealingLR
  there spans N - W steps, so it ends one step short of 0; here the last step reaches the floor.)
- `onecycle` (timaeus: OneCycleLR, pct_start 0.5, linear, div_factor = final_div_factor = N/2 - 1):
  W = N/2 - 1, s = 1/(N/2 - 1), linear decay to floor s/(N/2 - 1). This is OneCycleLR exactly
  (tests/test_icl_schedules.py compares them step by step).

Warmups differ per member, so the multiplier is computed for all members at once from the
device step counter: no host work per step, and a CUDA graph replays it.
"""
from __future__ import annotations

import math

import torch

DECAYS = ("cosine", "linear", "constant")


def lr_multipliers(step: torch.Tensor, *, total: int, warmup: torch.Tensor, start: torch.Tensor,
                   floor: float, decay: str) -> torch.Tensor:
    """[E] multipliers of each member's lr at `step` (a scalar tensor); warmup and start are [E]."""
    assert decay in DECAYS, f"unknown decay {decay!r}; choose from {DECAYS}"
    t = step.to(warmup.dtype)
    ramp = start + (1 - start) * t / warmup.clamp(min=1)
    p = ((t - warmup) / (total - 1 - warmup).clamp(min=1)).clamp(0, 1)
    if decay == "cosine":
        shape = 0.5 * (1 + torch.cos(math.pi * p))
    elif decay == "linear":
        shape = 1 - p
    else:
        shape = torch.ones_like(p)
    return torch.where(t < warmup, ramp, floor + (1 - floor) * shape)


def step_grid(total: int, log_points: int, linear_points: int) -> list[int]:
    """timaeus' checkpoint and logging steps: the union of `log_points` log-spaced integers in
    [1, total] and `linear_points` evenly spaced integers in [0, total], sorted, without repeats
    (so there are at most log_points + linear_points, fewer where they coincide)."""
    assert total >= 1, f"a run needs at least one step, got {total}"
    steps = set()
    if log_points > 0:
        steps |= {round(math.exp(math.log(total) * i / max(log_points - 1, 1))) for i in range(log_points)}
    if linear_points > 0:
        steps |= {round(total * i / max(linear_points - 1, 1)) for i in range(linear_points)}
    return sorted(steps)
