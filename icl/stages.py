"""Developmental stages from curves over training: turning points against log step, and
essential dynamics (PCA of model outputs across checkpoints). Pure functions on arrays.

Stage rule (`turning_points`), following the seed's boundaries at critical points of the LLC
against log step (timaeus' `figures/derivatives.py` differentiates in log t):
1. Smooth the curve by local-linear regression in u = ln(step) with a Gaussian kernel of width
   `sigma` (in ln-step units), evaluated on `num_points` points evenly spaced in u. The local
   slope is the derivative d value / d ln(step) directly; the grid makes the result independent
   of how densely checkpoints were saved (the seed mixes a log grid with a dense linear one).
2. A boundary is placed at
   - a "peak" or "trough" (a local maximum or minimum of the smoothed curve, where the slope
     changes sign) that stands out by at least `min_prominence` x the curve's range on both
     sides (measured as scipy's peak prominence), so SGLD noise on a flat stretch is no stage;
   - a "plateau": a local minimum of |slope| between two movements in the same direction (two
     rises or two falls), where the curve moves at under `plateau_fraction` x its fastest rate,
     and from which |slope| recovers by at least `min_prominence` x its maximum on both sides.
3. A boundary must sit on data: one whose nearest checkpoint lies farther than `sigma` in
   ln(step) is dropped, since there the smoothed curve only joins the points on either side (an
   LLC sweep has such gaps where every chain diverged).
   On the published LLC (timaeus, 5 seeds, defaults) this gives a plateau at 0.9-1.2k in 5 of 5
   seeds (the paper: 1.5k), a peak at 40-44k in 5 of 5 (40k) and a trough at 0.36-0.38M in 3 of 5
   (320k; in the other two the LLC ends flat, without rising again). The paper's boundary at
   ~126k is no critical point of that curve (its fall only steepens there) and is not found.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# 0.2 in ln(step) (a factor 1.22 in step) smooths SGLD noise of a few per cent while keeping
# stages a factor ~3 apart distinct (0.3 already loses the published curve's late trough)
DEFAULT_SIGMA = 0.2
# a stall counts as a plateau when the curve moves at under 10 % of its fastest rate
DEFAULT_PLATEAU_FRACTION = 0.1
# a peak or trough must stand 1 % of the curve's range out of its surroundings, and a plateau's
# dip in |slope| 1 % of the top speed (the published LLC's late trough stands 1-4 % of its range,
# its ~1k stall 1.4-6 % in speed; SGLD noise near init ~0.01 %)
DEFAULT_MIN_PROMINENCE = 0.01
DEFAULT_NUM_POINTS = 400


@dataclass(frozen=True)
class TurningPoint:
    step: float   # where on the evaluation grid (exp of its ln-step)
    kind: str     # "peak", "trough" or "plateau"


@dataclass
class SmoothedCurve:
    steps: np.ndarray   # (num_points,) evaluation grid, evenly spaced in ln(step)
    values: np.ndarray  # smoothed curve on the grid
    slope: np.ndarray   # d value / d ln(step) on the grid


def smooth_in_log_step(steps, values, *, sigma: float = DEFAULT_SIGMA,
                       num_points: int = DEFAULT_NUM_POINTS) -> SmoothedCurve:
    """Local-linear Gaussian-kernel fit of values against ln(step), on an even ln-step grid."""
    steps = np.asarray(steps, dtype=float)
    values = np.asarray(values, dtype=float)
    if steps.ndim != 1 or steps.shape != values.shape:
        raise ValueError(f"steps and values must be 1-d and equally long, got {steps.shape} and {values.shape}")
    if (steps <= 0).any():
        raise ValueError("steps must be > 0 for a log axis: drop step 0 (or shift every step by 1)")
    if not np.isfinite(values).all():
        raise ValueError("values contain nan/inf: drop those checkpoints (e.g. diverged LLC estimates) first")
    u = np.log(steps)
    grid = np.linspace(u.min(), u.max(), num_points)
    offsets = u[None, :] - grid[:, None]                  # (grid, data)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    # weighted least squares of values on [1, offset] at each grid point
    s0 = weights.sum(1)
    s1 = (weights * offsets).sum(1)
    s2 = (weights * offsets ** 2).sum(1)
    t0 = weights @ values
    t1 = (weights * offsets) @ values
    det = s0 * s2 - s1 ** 2
    if (det <= 1e-12 * s0 ** 2).any():
        raise ValueError(f"sigma={sigma} is too small for these steps: some grid points see fewer than "
                         f"two checkpoints; raise sigma or lower num_points")
    level = (s2 * t0 - s1 * t1) / det
    slope = (s0 * t1 - s1 * t0) / det
    return SmoothedCurve(steps=np.exp(grid), values=level, slope=slope)


def _prominence(values: np.ndarray, i: int) -> float:
    """How far values[i] (a local maximum) stands above the higher of the lowest points on each
    side, each side searched up to the next higher point or the end (as scipy's peak prominence)."""
    bases = []
    for side in (values[i::-1], values[i:]):
        higher = np.nonzero(side > values[i])[0]
        reach = side[:higher[0]] if len(higher) else side
        bases.append(reach.min())
    return float(values[i] - max(bases))


def _local_maxima(values: np.ndarray) -> list[int]:
    """Interior indices not lower than the left neighbour and higher than the right one."""
    return [i for i in range(1, len(values) - 1) if values[i - 1] <= values[i] > values[i + 1]]


def turning_points(steps, values, *, sigma: float = DEFAULT_SIGMA,
                   plateau_fraction: float = DEFAULT_PLATEAU_FRACTION,
                   min_prominence: float = DEFAULT_MIN_PROMINENCE,
                   num_points: int = DEFAULT_NUM_POINTS) -> list[TurningPoint]:
    """Stage boundaries of a curve against log step, by the rule in the module docstring."""
    curve = smooth_in_log_step(steps, values, sigma=sigma, num_points=num_points)
    level, speed = curve.values, np.abs(curve.slope)
    points = []
    for kind, signed in (("peak", level), ("trough", -level)):
        needed = min_prominence * (level.max() - level.min())
        points += [(i, kind) for i in _local_maxima(signed) if _prominence(signed, i) >= needed]
    for i in _local_maxima(-speed):
        moving_on = curve.slope[i - 1] * curve.slope[i + 1] > 0
        slow = speed[i] < plateau_fraction * speed.max()
        if moving_on and slow and _prominence(-speed, i) >= min_prominence * speed.max():
            points.append((i, "plateau"))
    data = np.log(np.asarray(steps, dtype=float))
    return [TurningPoint(step=float(curve.steps[i]), kind=kind) for i, kind in sorted(points)
            if np.abs(data - np.log(curve.steps[i])).min() <= sigma]


@dataclass
class EssentialDynamics:
    trajectories: np.ndarray        # (checkpoints, num_components): each checkpoint's PC coordinates
    components: np.ndarray          # (num_components, features): unit principal directions
    explained_variance_ratio: np.ndarray  # (num_components,)
    turning_points: list[list[TurningPoint]]  # per component, against log step


def essential_dynamics(steps, outputs, *, num_components: int = 3, sigma: float = DEFAULT_SIGMA,
                       plateau_fraction: float = DEFAULT_PLATEAU_FRACTION,
                       min_prominence: float = DEFAULT_MIN_PROMINENCE) -> EssentialDynamics:
    """PCA of model outputs across checkpoints (timaeus' essential dynamics) and the turning
    points of each principal-component trajectory against log step.

    outputs: (checkpoints, ...) array, each row a model's outputs on one fixed batch (flattened
    here). Rows are centred by their mean over checkpoints. Each component's sign is fixed so that
    its trajectory's largest-magnitude coordinate is positive (the SVD's sign is arbitrary).
    steps must be > 0 (see `smooth_in_log_step`).
    """
    steps = np.asarray(steps, dtype=float)
    outputs = np.asarray(outputs, dtype=float).reshape(len(steps), -1)
    if not 1 <= num_components <= min(outputs.shape):
        raise ValueError(f"num_components={num_components} must be between 1 and "
                         f"min(checkpoints, features)={min(outputs.shape)}")
    centred = outputs - outputs.mean(axis=0)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    u, s, vt = u[:, :num_components], s[:num_components], vt[:num_components]
    signs = np.sign(u[np.abs(u).argmax(axis=0), np.arange(num_components)])
    trajectories = u * s * signs
    total = (centred ** 2).sum()
    return EssentialDynamics(
        trajectories=trajectories, components=vt * signs[:, None],
        explained_variance_ratio=s ** 2 / total,
        turning_points=[turning_points(steps, trajectories[:, k], sigma=sigma,
                                       plateau_fraction=plateau_fraction,
                                       min_prominence=min_prominence)
                        for k in range(num_components)])
