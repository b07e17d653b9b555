"""The learning-rate optimum of one loss-against-lr curve: one rule for every study.

A parabola in log2(lr), least squares, through the lowest point and its neighbours, up to two on
each side (3 to 5 points); a point more than UNSTABLE_RATIO times the lowest loss ends the window
on its side: it marks unstable training (a cliff), and a parabola through a cliff puts its vertex
away from the minimum. The optimum is the vertex, clipped to the window's lr range; with fewer than
3 stable points in the window, or a parabola that opens downward, the lowest point stands in. When
the lowest point is the grid's first or last lr the optimum is not bracketed (`edge`): the true one
may lie off the grid, and the tables say <= or >=. Missing points (None, NaN: runs that diverged or
did not finish) are left out; fewer than 3 points give no optimum.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

UNSTABLE_RATIO = 3.0  # final losses above 3x the best are training blow-ups, not the bowl's sides
MIN_POINTS = 3  # a parabola needs three


@dataclass(frozen=True)
class LrFit:
    """The rule applied to one curve."""

    lrs: tuple[float, ...]  # the finite points, ascending
    losses: tuple[float, ...]
    window: tuple[float, ...]  # the lrs the parabola was fitted through (empty: no fit)
    coefficients: tuple[float, float, float] | None  # a x² + b x + c in x = log2(lr)
    optimum: float | None  # None: fewer than MIN_POINTS points
    edge: str  # "low" or "high": the lowest point is the grid's first or last lr; "" when bracketed

    @property
    def best_grid_lr(self) -> float:
        return min(zip(self.losses, self.lrs))[1]

    def text(self) -> str:
        """How the optimum reads in a table: '>= 5e-3' when not bracketed, '-' when there is none."""
        if self.optimum is None:
            return "-"
        if self.edge:
            return f"{'<=' if self.edge == 'low' else '>='} {self.best_grid_lr:.3g}"
        return f"{self.optimum:.3g}"


def fit(lrs: list[float], losses: list[float | None]) -> LrFit:
    points = sorted((lr, loss) for lr, loss in zip(lrs, losses) if loss is not None and math.isfinite(loss))
    if not points:
        return LrFit((), (), (), None, None, "")
    xs, ys = tuple(lr for lr, _ in points), tuple(loss for _, loss in points)
    best = min(range(len(points)), key=lambda i: ys[i])
    edge = "low" if best == 0 else "high" if best == len(points) - 1 else ""
    if len(points) < MIN_POINTS:
        return LrFit(xs, ys, (), None, None, edge)
    stable = lambda i: ys[i] <= UNSTABLE_RATIO * ys[best]  # noqa: E731
    lo = best
    while lo > max(0, best - 2) and stable(lo - 1):
        lo -= 1
    hi = best
    while hi < min(len(points) - 1, best + 2) and stable(hi + 1):
        hi += 1
    if hi - lo + 1 < MIN_POINTS:  # too few stable points to fit a parabola: the lowest point stands in
        return LrFit(xs, ys, (), None, xs[best], edge)
    x = np.log2(xs[lo:hi + 1])
    a, b, c = (float(value) for value in np.polyfit(x, ys[lo:hi + 1], 2))
    optimum = xs[best] if a <= 0 else 2.0 ** float(np.clip(-b / (2 * a), x[0], x[-1]))
    return LrFit(xs, ys, xs[lo:hi + 1], (a, b, c), optimum, edge)


def lr_optimum(lrs: list[float], losses: list[float | None]) -> float | None:
    """The optimum by the module's rule; None with fewer than three finite points."""
    return fit(lrs, losses).optimum


def grid_edge(lrs: list[float], losses: list[float | None]) -> str:
    """"low" or "high" when the lowest finite loss is at the grid's first or last lr, else ""."""
    return fit(lrs, losses).edge
