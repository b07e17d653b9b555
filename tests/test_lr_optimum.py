"""plots.lr_optimum: the one rule for a loss-against-lr curve's optimum, against parabolas whose
vertex is known in closed form."""
import math

import numpy as np
import pytest

from plots.lr_optimum import fit, grid_edge, lr_optimum


def test_lr_optimum_is_the_vertex_of_a_parabola_in_log_lr():
    lrs = [2.0 ** e for e in range(-10, -3)]
    losses = [(math.log2(lr) + 7.3) ** 2 + 1 for lr in lrs]
    assert lr_optimum(lrs, losses) == pytest.approx(2 ** -7.3, rel=1e-9)
    # the lowest point at the grid's edge: the vertex is clipped to the grid
    assert lr_optimum(lrs, [-math.log2(lr) for lr in lrs]) == pytest.approx(2.0 ** -4)
    assert lr_optimum(lrs[:2], losses[:2]) is None  # too few points to fit


def test_lr_optimum_ignores_a_blow_up_beyond_the_minimum():
    """A final loss above UNSTABLE_RATIO x the best ends the fit window: the vertex is that of the
    parabola through the stable points, not one bent toward the cliff."""
    lrs = [2.0 ** e for e in range(-10, -3)]
    bowl = [(math.log2(lr) + 6.6) ** 2 / 10 + 1 for lr in lrs]  # minimum at 2^-6.6, lowest point 2^-7
    blown = bowl[:5] + [10.0, 30.0]  # 2^-5 and 2^-4 blew up
    assert lr_optimum(lrs[:5], bowl[:5]) == pytest.approx(2 ** -6.6, rel=1e-9)
    assert lr_optimum(lrs, blown) == pytest.approx(2 ** -6.6, rel=1e-9)
    window = np.log2(lrs[2:])  # what the old 5-point window through the cliff would have fitted
    a, b, _ = np.polyfit(window, blown[2:], 2)
    assert abs(-b / (2 * a) + 6.6) > 0.3  # ...far from the minimum


def test_grid_edge_says_whether_the_optimum_is_bracketed():
    lrs = [1e-3, 2e-3, 4e-3, 8e-3]
    assert grid_edge(lrs, [4, 3, 2, 1]) == "high"
    assert grid_edge(lrs, [1, 2, 3, None]) == "low"
    assert grid_edge(lrs, [4, 3, None, 1]) == "high"  # the last finite point is the edge
    assert grid_edge(lrs, [4, 1, 2, 3]) == ""
    assert fit(lrs, [4, 3, 2, 1]).text() == ">= 0.008" and fit(lrs, [1, 2, 3, 4]).text() == "<= 0.001"


def test_a_parabola_through_three_points_is_the_one_by_finite_differences():
    """Three points: the least-squares parabola passes through them; its vertex by hand."""
    means = (4.3, 4.1, 4.2)  # at x = log2 lr = -10, -9, -8
    result = fit([2.0 ** x for x in (-10, -9, -8)], list(means))
    a = (means[0] - 2 * means[1] + means[2]) / 2
    b = (means[2] - means[0]) / 2 - 2 * a * (-9)
    assert result.coefficients[:2] == pytest.approx((a, b))
    assert result.optimum == pytest.approx(2.0 ** (-b / (2 * a)))
    assert math.log2(result.optimum) == pytest.approx(-9 + 0.05 / 0.3)
    assert result.window == result.lrs and result.edge == "" and result.text() == f"{result.optimum:.3g}"


def test_a_downward_parabola_or_too_few_stable_points_fall_back_to_the_lowest_point():
    lrs = [2.0 ** x for x in (-10, -9, -8, -7)]
    hill = [4.0 - (x + 8.5) ** 2 for x in (-10, -9, -8, -7)]  # lowest at both ends: the first counts
    assert fit(lrs, hill).coefficients[0] < 0 and lr_optimum(lrs, hill) == lrs[0]
    cliff = [1.0, 0.9, 5.0, 6.0]  # only two stable points around the lowest
    assert lr_optimum(lrs, cliff) == 2.0 ** -9 and fit(lrs, cliff).window == ()
    assert fit(lrs[:2], [1.0, 2.0]).optimum is None and fit([], []).optimum is None
