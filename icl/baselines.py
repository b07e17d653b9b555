"""Baseline predictors of y_k from the k examples before it, on the model's evaluation batch.

Each returns predictions [..., B, K] (position k uses (x_j, y_j) for j < k, then x_k):

- zero: predicts 0. For garg its expected MSE is E[(w.x)^2] + noise = D + noise_var.
- least squares: the minimum-norm solution of X_k w = y_k (pseudo-inverse; exact for k >= D
  without noise, and the interpolant of smallest norm below that).
- ridge with lambda = noise_var: (X^T X + noise_var I)^-1 X^T y, the posterior mean of w under
  w ~ N(0, I) and Gaussian noise, so the Bayes-optimal predictor for garg with M = inf
  (noise_var = 0 gives the minimum-norm solution, the noiseless limit).
- dMMSE: the posterior mean over M fixed tasks with a uniform prior, the Bayes-optimal
  predictor for garg with finite M (timaeus' dmmse_predictor).

For the affine task the features are [x, 1] (slope and intercept) and only zero and least
squares apply (its prior is uniform, and it has no noise).
"""
from __future__ import annotations

import torch


def features(task, x: torch.Tensor) -> torch.Tensor:
    """The regression features of a task: x itself (garg) or [x, 1] (affine)."""
    return torch.cat([x, torch.ones_like(x)], dim=-1) if task.name == "affine" else x


def zero(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(y)


def ridge(x: torch.Tensor, y: torch.Tensor, lam: float) -> torch.Tensor:
    """Ridge regression on each prefix; lam = 0 is the minimum-norm least-squares solution."""
    *lead, K, D = x.shape
    preds = torch.zeros_like(y)
    eye = torch.eye(D, dtype=x.dtype, device=x.device)
    for k in range(1, K):
        X, Y = x[..., :k, :], y[..., :k, None]
        if lam > 0:
            w = torch.linalg.solve(X.transpose(-1, -2) @ X + lam * eye, X.transpose(-1, -2) @ Y)
        else:
            w = torch.linalg.pinv(X) @ Y
        preds[..., k] = (x[..., k, :] * w[..., 0]).sum(-1)
    return preds


def least_squares(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ridge(x, y, 0.0)


def dmmse(x: torch.Tensor, y: torch.Tensor, tasks: torch.Tensor, noise_var: float) -> torch.Tensor:
    """Posterior-mean prediction under a uniform prior on the rows of tasks [M, D]."""
    assert noise_var > 0, "dMMSE needs noise_var > 0 (without noise the posterior is a point mass on the consistent tasks)"
    fits = torch.einsum("...kd,md->...km", x, tasks)               # x_j . w_m
    sq_err = (y[..., None] - fits).square()                         # [..., K, M]
    # log posterior before position k: -sum_{j<k} err_j / (2 noise_var); an exclusive cumsum
    log_post = -(sq_err.cumsum(-2) - sq_err) / (2 * noise_var)
    return (torch.softmax(log_post, dim=-1) * fits).sum(-1)


def baseline_predictions(task, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every baseline that applies to the task, by name, computed in float64."""
    x64, y64 = features(task, x).double(), y.double()
    preds = {"zero": zero(x64, y64), "least_squares": least_squares(x64, y64)}
    if task.name == "garg":
        preds["ridge"] = ridge(x64, y64, task.noise_var)
        if task.task_set is not None and task.noise_var > 0:
            preds["dmmse"] = dmmse(x64, y64, task.task_set.to(x64), task.noise_var)
    return preds
