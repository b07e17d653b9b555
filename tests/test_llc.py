"""Tests for icl.llc: the SGLD LLC estimate against closed forms and quadrature, its chains against
a one-chain-at-a-time loop, burn-in, seeds and divergence flags. CPU, a few seconds each."""

import math

import pytest
import torch
from matplotlib import image
from torch import nn

from icl.llc import estimate_llc, estimate_llcs, plot_traces, seed_hyperparameters


def mse(model, batch):
    x, y = batch
    return ((model(x) - y) ** 2).mean()


def assert_figure(path):
    """path reads back as the 7 x 4 inch, 120 dpi PNG plot_traces draws, and is not blank."""
    pixels = image.imread(path)
    assert pixels.shape[:2] == (4 * 120, 7 * 120) and pixels[..., :3].std() > 0.05, pixels.shape


def least_squares_model(num_params=4, n=1000, seed=0):
    """A bias-free linear model at the least-squares optimum of n Gaussian samples (noise var 1)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, num_params, generator=gen)
    y = x @ torch.randn(num_params, 1, generator=gen) + torch.randn(n, 1, generator=gen)
    model = nn.Linear(num_params, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.linalg.lstsq(x, y).solution.T)
    return model, x, y


def gaussian_sgld_llc(x, epsilon, nbeta, gamma):
    """Exact stationary E[nbeta*(L - L*)] of this SGLD on the quadratic loss mean((xw - y)^2).

    Per Hessian eigenvalue h (H = 2 x^T x / n), the update is an AR(1) with curvature
    k = nbeta*h + gamma and stationary variance 1 / (k (1 - eps k / 4)); the loss excess is h/2 * var.
    The eps -> 0, gamma -> 0 limit is p/2.
    """
    h = torch.linalg.eigvalsh(2 * x.T @ x / len(x)).double()
    k = nbeta * h + gamma
    return float((nbeta * h / 2 / (k * (1 - epsilon * k / 4))).sum())


class TwoScalars(nn.Module):
    """y = a*b*x (degenerate) or y = a*x0 + b*x1 (regular), both starting at a = b = 0."""

    def __init__(self, degenerate):
        super().__init__()
        self.degenerate = degenerate
        self.a = nn.Parameter(torch.zeros(()))
        self.b = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        if self.degenerate:
            return self.a * self.b * x[:, 0]
        return self.a * x[:, 0] + self.b * x[:, 1]


def uncorrelated_data(n=500, seed=0):
    """x (n, 2) and pure-noise y projected orthogonal to x, so a = b = 0 is an exact minimum of both
    TwoScalars models."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=gen)
    y = torch.randn(n, generator=gen)
    y = y - x @ torch.linalg.lstsq(x, y.unsqueeze(1)).solution.squeeze(1)
    return x, y


def quadrature_llc(nbeta, gamma, c, half_width=4.0, points=1601):
    """E[nbeta * c (ab)^2] under p(a, b) ∝ exp(-nbeta c (ab)^2 - gamma/2 (a^2 + b^2)) on a grid:
    the exact target of the degenerate model's sampler (its loss excess is c (ab)^2, c = mean x0^2)."""
    t = torch.linspace(-half_width, half_width, points, dtype=torch.float64)
    a, b = torch.meshgrid(t, t, indexing="ij")
    excess = c * (a * b) ** 2
    weights = torch.softmax((-nbeta * excess - gamma / 2 * (a ** 2 + b ** 2)).flatten(), 0)
    return float((weights * nbeta * excess.flatten()).sum())


def test_seed_hyperparameters_match_the_paper_sweep():
    got = seed_hyperparameters(noise_scale=1e-3, gradient_scale=0.03, localization_scale=0.003)
    assert got == pytest.approx({"epsilon": 1e-3, "nbeta": 60.0, "gamma": 6.0})


@pytest.mark.slow
def test_regular_model_gives_half_the_parameter_count():
    torch.manual_seed(0)
    model, x, y = least_squares_model(num_params=4)
    settings = dict(epsilon=5e-4, nbeta=100.0, gamma=1.0)
    result = estimate_llc(model, mse, [(x, y)], **settings, num_chains=32, num_draws=400,
                          num_burnin=100, seed=0)
    assert not result.diverged.any()
    assert result.llc_mean == pytest.approx(4 / 2, rel=0.15)
    # and, tighter, the exact stationary value of this discretised, localised sampler
    assert result.llc_mean == pytest.approx(gaussian_sgld_llc(x, **settings), rel=0.07)
    # the default init loss is L(w*) on the draws' batches: here the one full batch
    with torch.no_grad():
        assert result.init_loss == pytest.approx(float(mse(model, (x, y))), rel=1e-5)


@pytest.mark.slow
def test_fresh_minibatches_per_step_give_half_the_parameter_count():
    torch.manual_seed(0)
    model, x, y = least_squares_model(num_params=4)
    gen = torch.Generator().manual_seed(1)

    def minibatch(step):
        index = torch.randint(0, len(x), (500,), generator=gen)
        return x[index], y[index]

    result = estimate_llc(model, mse, minibatch, epsilon=5e-4, nbeta=100.0, gamma=1.0,
                          num_chains=32, num_draws=400, num_burnin=100, seed=0)
    assert result.llc_mean == pytest.approx(4 / 2, rel=0.15)


@pytest.mark.slow
def test_degenerate_model_is_below_the_regular_one():
    """y = a b x at a = b = 0 has learning coefficient 1/2 against 1 for two regular parameters.
    At finite nbeta and with localisation the degenerate estimate sits lower still (its valleys
    are cut off by gamma); quadrature of the sampler's exact target pins it down."""
    torch.manual_seed(0)
    x, y = uncorrelated_data()
    temperature = dict(nbeta=300.0, gamma=10.0, num_chains=64, seed=0)
    # the degenerate chains mix slowly along the valleys (rate ~ eps*gamma/2), so they get a
    # larger step; the regular one's curvature 2*nbeta needs a small step to stay unbiased
    degenerate = estimate_llc(TwoScalars(degenerate=True), mse, [(x, y)], **temperature,
                              epsilon=2e-3, num_draws=700, num_burnin=300)
    regular = estimate_llc(TwoScalars(degenerate=False), mse, [(x, y)], **temperature,
                           epsilon=2e-4, num_draws=300, num_burnin=100)
    assert regular.llc_mean == pytest.approx(1.0, rel=0.15)
    assert degenerate.llc_mean < 0.6 * regular.llc_mean
    expected = quadrature_llc(300.0, 10.0, c=float((x[:, 0] ** 2).mean()))
    assert degenerate.llc_mean == pytest.approx(expected, rel=0.15)


def test_same_seed_same_traces_other_seed_different():
    model, x, y = least_squares_model(num_params=3, n=500)
    run = lambda seed: estimate_llc(model, mse, [(x, y)], epsilon=1e-3, nbeta=50.0, gamma=1.0,
                                    num_chains=4, num_draws=30, num_burnin=10, seed=seed)
    first, again, other = run(7), run(7), run(8)
    assert torch.equal(first.loss_trace, again.loss_trace)
    assert not torch.allclose(first.loss_trace, other.loss_trace)
    # chains of one run differ from each other (each has its own noise)
    assert not torch.allclose(first.loss_trace[0], first.loss_trace[1])


@pytest.mark.slow
def test_burn_in_is_excluded_from_the_average():
    """With a small step the loss climbs from L(w*) to its stationary level over ~1/(eps*k) = 200
    steps (k = 2*nbeta + gamma), so averaging the 400 burn-in steps in would pull the estimate
    down by ~30 %."""
    model, x, y = least_squares_model(num_params=4, n=1000)
    burnin = 400
    result = estimate_llc(model, mse, [(x, y)], epsilon=2.5e-5, nbeta=100.0, gamma=1.0,
                          num_chains=16, num_draws=100, num_burnin=burnin, seed=0)
    assert result.loss_trace.shape == (16, 500) and result.num_burnin == burnin
    manual = 100.0 * (result.loss_trace[:, burnin:].mean(dim=1) - result.init_loss)
    assert torch.allclose(result.llc_per_chain, manual, rtol=1e-5)
    assert result.llc_mean == pytest.approx(float(manual.mean()), rel=1e-5)
    with_burnin = 100.0 * (result.loss_trace.mean(dim=1) - result.init_loss)
    assert float(with_burnin.mean()) < 0.9 * result.llc_mean


class SmallMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 1))

    def forward(self, x):
        return self.net(x)


def loop_reference(checkpoints, batches, chains, steps, eps, nbeta, gamma, seed):
    """(checkpoints, chains, steps) loss traces from a plain loop over checkpoints and chains with
    autograd, fed the noise the estimator documents: one randn(G * chains, P) per step from a
    generator seeded with `seed`, row g * chains + c for chain c of checkpoint g."""
    anchors = [nn.utils.parameters_to_vector(m.parameters()).detach() for m in checkpoints]
    gen = torch.Generator().manual_seed(seed)
    noise = [torch.randn(len(checkpoints) * chains, len(anchors[0]), generator=gen) for _ in range(steps)]
    reference = torch.empty(len(checkpoints), chains, steps)
    replica = SmallMLP()
    for g, w_star in enumerate(anchors):
        for chain in range(chains):
            w = w_star.clone()
            for step in range(steps):
                nn.utils.vector_to_parameters(w, replica.parameters())
                loss = mse(replica, batches[step % len(batches)])
                grad = nn.utils.parameters_to_vector(torch.autograd.grad(loss, list(replica.parameters())))
                reference[g, chain, step] = loss.detach()
                step_noise = math.sqrt(eps) * noise[step][g * chains + chain]
                w = (w - eps / 2 * (nbeta * grad + gamma * (w - w_star)) + step_noise).detach()
    return reference


SAMPLER = dict(epsilon=1e-2, nbeta=20.0, gamma=2.0, num_chains=3, num_draws=11, num_burnin=4, seed=5)


def test_vectorised_chains_equal_a_one_chain_loop():
    torch.manual_seed(0)
    model = SmallMLP()
    batches = [(torch.randn(32, 3), torch.randn(32, 1)) for _ in range(2)]
    result = estimate_llc(model, mse, batches, **SAMPLER)
    reference = loop_reference([model], batches, 3, 15, 1e-2, 20.0, 2.0, seed=5)
    assert torch.allclose(result.loss_trace, reference[0], rtol=1e-5, atol=1e-6)


def test_several_checkpoints_at_once_equal_the_loop_and_their_own_init_losses():
    torch.manual_seed(0)
    checkpoints = [SmallMLP(), SmallMLP()]
    batches = [(torch.randn(32, 3), torch.randn(32, 1)) for _ in range(2)]
    results = estimate_llcs(checkpoints[0], [m.state_dict() for m in checkpoints], mse, batches, **SAMPLER)
    reference = loop_reference(checkpoints, batches, 3, 15, 1e-2, 20.0, 2.0, seed=5)
    for g, (result, model) in enumerate(zip(results, checkpoints)):
        assert torch.allclose(result.loss_trace, reference[g], rtol=1e-5, atol=1e-6)
        with torch.no_grad():  # draws are steps 4..14, so batches 0,1,0,... from step 4
            draw_losses = [float(mse(model, batches[step % 2])) for step in range(4, 15)]
        assert result.init_loss == pytest.approx(sum(draw_losses) / len(draw_losses), rel=1e-5)


def test_huge_step_size_flags_every_chain_and_gives_no_mean(tmp_path):
    model, x, y = least_squares_model(num_params=3, n=500)
    with pytest.warns(RuntimeWarning, match="3 of 3 chains diverged"):
        result = estimate_llc(model, mse, [(x, y)], epsilon=10.0, nbeta=100.0, gamma=1.0,
                              num_chains=3, num_draws=50, num_burnin=10, seed=0)
    assert result.diverged.all()
    assert math.isnan(result.llc_mean)
    plot_traces(result, tmp_path / "traces.png")
    assert_figure(tmp_path / "traces.png")


@pytest.mark.slow
def test_chains_over_the_divergence_loss_are_flagged_and_left_out_of_the_mean(tmp_path):
    model, x, y = least_squares_model(num_params=3, n=500)
    settings = dict(epsilon=1e-3, nbeta=50.0, gamma=1.0, num_chains=8, num_draws=100,
                    num_burnin=20, seed=0)
    healthy = estimate_llc(model, mse, [(x, y)], **settings)
    assert not healthy.diverged.any()
    # a threshold between the chains' peak losses splits them
    peaks = healthy.loss_trace.max(dim=1).values
    threshold = float(peaks.median())
    with pytest.warns(RuntimeWarning, match="diverged"):
        flagged = estimate_llc(model, mse, [(x, y)], **settings, divergence_loss=threshold)
    assert torch.equal(flagged.diverged, peaks > threshold)
    kept = healthy.llc_per_chain[peaks <= threshold]
    assert flagged.llc_mean == pytest.approx(float(kept.mean()), rel=1e-6)
    assert flagged.llc_std == pytest.approx(float(kept.std()), rel=1e-6)
    plot_traces(flagged, tmp_path / "traces.png")
    assert_figure(tmp_path / "traces.png")
