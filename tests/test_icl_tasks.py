"""icl.tasks and icl.baselines: samplers, token layout, and the baselines against closed forms."""
import numpy as np
import pytest
import torch

from icl import baselines
from icl.tasks import STREAM_TRAIN, AffineTask, GargTask, normal, per_position_loss, uniform

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_uniform_and_normal_moments_and_determinism():
    seeds = torch.tensor([0, 1])
    u = uniform(seeds, torch.tensor(7), STREAM_TRAIN, 50_000)
    assert u.shape == (2, 50_000) and 0 < u.min() and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    z = normal(seeds, 7, STREAM_TRAIN, 50_001)
    assert z.shape == (2, 50_001)
    assert abs(z.mean()) < 0.02 and abs(z.var() - 1) < 0.03 and abs((z ** 4).mean() - 3) < 0.15
    assert torch.equal(z, normal(seeds, torch.tensor(7), STREAM_TRAIN, 50_001))  # a function of (seed, step)
    other_step = normal(seeds, 8, STREAM_TRAIN, 50_001)
    assert abs(torch.corrcoef(torch.stack([z[0], other_step[0]]))[0, 1]) < 0.02
    assert abs(torch.corrcoef(z)[0, 1]) < 0.02  # members' streams are uncorrelated
    # a member's numbers do not depend on which other members are drawn with it
    assert torch.equal(normal(torch.tensor([1]), 7, STREAM_TRAIN, 50_001), z[1:])


def test_garg_shapes_noiseless_targets_and_token_round_trip():
    task = GargTask(dim=3, points=5, noise_var=0.0)
    batch = task.sample(torch.tensor([4, 5]), 0, 6)
    assert batch.x.shape == (2, 6, 5, 3) and batch.y.shape == (2, 6, 5) and batch.w.shape == (2, 6, 3)
    assert batch.tokens.shape == (2, 6, 10, 4) == (2, 6, task.seq_len, task.token_dim)
    torch.testing.assert_close(batch.y, (batch.x * batch.w[:, :, None, :]).sum(-1))
    x, y = task.from_tokens(batch.tokens)
    assert torch.equal(x, batch.x) and torch.equal(y, batch.y)
    assert torch.all(batch.tokens[..., 0::2, 0] == 0) and torch.all(batch.tokens[..., 1::2, 1:] == 0)
    # the prediction slot of position k is the token of x_k
    outputs = torch.arange(10.0)[None, :, None].expand(1, 10, 4)
    assert task.predictions(outputs).tolist() == [[0.0, 2.0, 4.0, 6.0, 8.0]]


def test_garg_noise_variance_and_finite_task_set():
    task = GargTask(dim=2, points=4, noise_var=0.5, num_tasks=3)
    batch = task.sample(torch.tensor([0]), 0, 4000)
    residual = batch.y - (batch.x * batch.w[:, :, None, :]).sum(-1)
    assert abs(residual.var() - 0.5) < 0.03
    distance = (batch.w[0, :, None, :] - task.task_set[None]).abs().sum(-1)
    assert torch.all(distance.min(dim=1).values == 0)  # every w is one of the 3 tasks
    used = distance.argmin(dim=1).bincount(minlength=3)
    assert torch.all((used - 4000 / 3).abs() < 150)  # uniformly
    gaussian = task.sample(torch.tensor([0]), 0, 200, gaussian_tasks=True)
    assert (gaussian.w[0, :, None, :] - task.task_set[None]).abs().sum(-1).min() > 0


def test_affine_ranges_layout_and_round_trip():
    task = AffineTask(points=32)
    batch = task.sample(torch.tensor([0, 1]), 3, 500)
    assert batch.tokens.shape == (2, 500, 63, 1) and batch.y.shape == (2, 500, 32)
    assert batch.x.min() >= -5 and batch.x.max() <= 5 and batch.x.min() < -4.9 and batch.x.max() > 4.9
    # y = a x + b with a, b in [-3, 3]: recover a and b from the first two points
    x, y = batch.x[..., 0], batch.y
    a = (y[..., 1] - y[..., 0]) / (x[..., 1] - x[..., 0])
    b = y[..., 0] - a * x[..., 0]
    assert a.abs().max() <= 3 + 1e-3 and b.abs().max() <= 3 + 1e-3 and a.abs().max() > 2.9
    torch.testing.assert_close(y, a[..., None] * x + b[..., None], atol=1e-4, rtol=1e-4)
    tx, ty = task.from_tokens(batch.tokens)
    assert torch.equal(tx, batch.x) and torch.equal(ty, batch.y[..., :-1])  # the last y is only a target


def test_zero_predictor_mse_is_dim_plus_noise():
    task = GargTask(dim=4, points=16, noise_var=0.125)
    batch = task.sample(torch.tensor([0]), 0, 20_000)
    mse = per_position_loss(baselines.zero(batch.x[0], batch.y[0]), batch.y[0], "mse")
    # E[(w.x)^2] = E|w|^2 = D; Var(y^2) / n over 20,000 x 16 draws gives ~0.5 % standard error
    assert abs(mse.mean().item() - 4.125) < 0.05


def test_noiseless_least_squares_is_exact_from_k_equals_dim():
    task = GargTask(dim=3, points=8, noise_var=0.0)
    batch = task.sample(torch.tensor([1]), 0, 64)
    x, y = batch.x[0].double(), batch.y[0].double()
    preds = baselines.least_squares(x, y)
    # exact up to y's float32 rounding (the sampler computes y = w.x in float32)
    torch.testing.assert_close(preds[:, 3:], y[:, 3:], atol=1e-4, rtol=0)
    assert (preds[:, 1:3] - y[:, 1:3]).abs().max() > 1e-2  # below D it cannot be exact


def test_ridge_is_the_gaussian_posterior_mean():
    noise_var = 0.3
    task = GargTask(dim=3, points=6, noise_var=noise_var)
    batch = task.sample(torch.tensor([2]), 0, 5)
    x, y = batch.x[0].double(), batch.y[0].double()
    preds = baselines.ridge(x, y, noise_var)
    X, Y = x.numpy(), y.numpy()
    for b in range(5):
        for k in range(1, 6):
            # posterior of w ~ N(0, I) given y_j = w.x_j + N(0, noise_var): covariance and mean
            cov = np.linalg.inv(np.eye(3) + X[b, :k].T @ X[b, :k] / noise_var)
            mean = cov @ X[b, :k].T @ Y[b, :k] / noise_var
            assert abs(preds[b, k].item() - X[b, k] @ mean) < 1e-10
    assert torch.all(preds[:, 0] == 0)


def test_dmmse_is_the_discrete_posterior_mean():
    noise_var = 0.5
    task = GargTask(dim=2, points=5, noise_var=noise_var, num_tasks=4)
    batch = task.sample(torch.tensor([3]), 0, 6)
    x, y, tasks = batch.x[0].double(), batch.y[0].double(), task.task_set.double()
    preds = baselines.dmmse(x, y, tasks, noise_var)
    X, Y, Wt = x.numpy(), y.numpy(), tasks.numpy()
    for b in range(6):
        for k in range(5):
            likelihood = np.array([np.prod([np.exp(-(Y[b, j] - X[b, j] @ w) ** 2 / (2 * noise_var))
                                            for j in range(k)]) for w in Wt])
            posterior = likelihood / likelihood.sum()
            assert abs(preds[b, k].item() - X[b, k] @ (posterior[:, None] * Wt).sum(0)) < 1e-9
