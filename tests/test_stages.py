"""Tests for icl.stages on synthetic curves whose turning points and principal components are known
in closed form."""

import math

import numpy as np
import pytest

from icl.stages import essential_dynamics, smooth_in_log_step, turning_points


def checkpoint_steps(last=10_000_000, log_points=100, linear_points=2000):
    """The seed's kind of grid: a log grid unioned with a dense linear one (irregular in ln t)."""
    log_grid = np.unique(np.round(np.logspace(1, math.log10(last), log_points)))
    linear_grid = np.linspace(10, last, linear_points).round()
    return np.unique(np.concatenate([log_grid, linear_grid]))


def near(step, expected, factor=1.2):
    return expected / factor <= step <= expected * factor


def test_local_linear_slope_is_exact_on_a_line_in_log_step():
    steps = checkpoint_steps()
    curve = smooth_in_log_step(steps, 3.0 * np.log(steps) - 2.0)
    assert np.allclose(curve.slope, 3.0)
    assert np.allclose(curve.values, 3.0 * np.log(curve.steps) - 2.0)


def test_steps_must_be_positive():
    with pytest.raises(ValueError, match="drop step 0"):
        smooth_in_log_step([0, 1, 2], [1.0, 2.0, 3.0])


def test_peak_and_trough_of_a_noisy_wave_in_log_step():
    """cos(2 pi (log10 t - 3) / 4) on 10..1e7 peaks at 1e3 and dips at 1e5 (the ends are no turning
    points); noise of 2 % of the range does not add any."""
    steps = checkpoint_steps()
    rng = np.random.default_rng(0)
    values = np.cos(2 * np.pi * (np.log10(steps) - 3) / 4) + 0.02 * rng.standard_normal(len(steps))
    points = turning_points(steps, values)
    assert [p.kind for p in points] == ["peak", "trough"]
    assert near(points[0].step, 1e3) and near(points[1].step, 1e5)


def test_plateau_between_two_rises_at_the_slowest_point():
    """Two logistic rises in ln t (at 1e2 and 1e4); the stall between them is where the analytic
    derivative is smallest."""
    steps = checkpoint_steps()

    def rises(u):
        return 1 / (1 + np.exp(-(u - math.log(1e2)) / 0.4)) + 4 / (1 + np.exp(-(u - math.log(1e4)) / 0.4))

    points = turning_points(steps, rises(np.log(steps)))
    assert [p.kind for p in points] == ["plateau"]
    u = np.linspace(math.log(1e2), math.log(1e4), 100_001)
    slowest = math.exp(u[np.gradient(rises(u), u).argmin()])
    assert near(points[0].step, slowest)


def test_flat_noisy_curve_has_no_turning_points():
    """Noise on an otherwise flat start (like SGLD estimates near init) followed by one rise."""
    steps = checkpoint_steps()
    rng = np.random.default_rng(1)
    values = 100 / (1 + np.exp(-(np.log(steps) - math.log(1e5)) / 0.5)) + 0.05 * rng.standard_normal(len(steps))
    assert turning_points(steps, values) == []


def test_essential_dynamics_recovers_known_components_and_their_turning_points():
    """Outputs = mean + 3 cos(phase) v1 + sin(phase) v2 + small noise, phase = 2 pi (log10 t - 1)/6
    over exactly one period on a log-uniform grid, so the two coefficient series are orthogonal and
    PCA must return v1 and v2 with variance shares 9/10 and 1/10. cos dips at t = 1e4; sin peaks at
    10^2.5 and dips at 10^5.5."""
    steps = np.logspace(1, 7, 600, endpoint=False)
    phase = 2 * np.pi * (np.log10(steps) - 1) / 6
    rng = np.random.default_rng(2)
    v1, v2 = np.linalg.qr(rng.standard_normal((200, 2)))[0].T
    coefficients = np.stack([3 * np.cos(phase), np.sin(phase)], axis=1)
    outputs = 5.0 + coefficients @ np.stack([v1, v2]) + 1e-3 * rng.standard_normal((len(steps), 200))
    ed = essential_dynamics(steps, outputs.reshape(len(steps), 20, 10), num_components=2)

    assert ed.trajectories.shape == (600, 2) and ed.components.shape == (2, 200)
    assert np.allclose(ed.explained_variance_ratio, [0.9, 0.1], atol=1e-3)
    expected_turns = [[(1e4, "trough")], [(10 ** 2.5, "peak"), (10 ** 5.5, "trough")]]
    flip = {"peak": "trough", "trough": "peak"}
    for k, (truth, direction) in enumerate(zip(coefficients.T, (v1, v2))):
        sign = np.sign(ed.components[k] @ direction)
        assert abs(ed.components[k] @ direction) > 0.999
        assert np.allclose(ed.trajectories[:, k], sign * truth, atol=1e-2)
        # the documented sign convention: the largest-magnitude coordinate is positive
        assert ed.trajectories[np.abs(ed.trajectories[:, k]).argmax(), k] > 0
        found = ed.turning_points[k]
        want = [(step, kind if sign > 0 else flip[kind]) for step, kind in expected_turns[k]]
        assert [p.kind for p in found] == [kind for _, kind in want]
        assert all(near(p.step, step) for p, (step, _) in zip(found, want))


def test_a_turning_point_in_a_gap_of_the_data_is_dropped():
    """A peak at step 10^4 is found where checkpoints cover it; with every checkpoint within a
    factor e^1.5 of it removed (as when all chains diverge there), the smoothed curve still peaks in
    the gap, but no data lie within sigma of that peak, so the rule places no boundary there."""
    u = np.linspace(0, np.log(1e6), 200)
    steps = np.exp(u)
    values = np.exp(-0.5 * ((u - np.log(1e4)) / 1.5) ** 2)
    assert [(round(math.log10(p.step)), p.kind) for p in turning_points(steps, values)] == [(4, "peak")]
    kept = np.abs(u - np.log(1e4)) > 1.5
    curve = smooth_in_log_step(steps[kept], values[kept])
    peak = curve.steps[curve.values.argmax()]
    assert 1e4 / math.e ** 1.5 < peak < 1e4 * math.e ** 1.5, "the smoothed curve should peak inside the gap"
    assert turning_points(steps[kept], values[kept]) == []
