"""Tests for icl.llc_ensemble: with estimate_llcs' own batches and noise injected, the stacked-weight
sampler reproduces icl.llc.estimate_llcs (the vmap backend) on a tiny ICL model, 2 checkpoints x 3
chains: traces, burn-in, L(w*) from the draws, divergence flags, padding and reuse; and the
`icl.landscape sweep --backend ensemble` wiring. CPU, seconds."""

import json
import math

import pytest
import torch

from icl import checkpoints, landscape
from icl.cli import main as train
from icl.landscape import STREAM_SGLD, draw, mean_loss
from icl.llc import estimate_llcs
from icl.llc_ensemble import EnsembleSGLD
from icl.model import ICLTransformer, ModelConfig
from icl.tasks import GargTask

TASK = GargTask(dim=2, points=4)
CONFIG = ModelConfig(token_dim=TASK.token_dim, seq_len=TASK.seq_len, width=8, depth=1, heads=2)
HYPER = dict(epsilon=1e-3, nbeta=60.0, gamma=6.0, num_burnin=3, num_draws=5, seed=42)
CHAINS, BATCH = 3, 32
STEPS = HYPER["num_burnin"] + HYPER["num_draws"]


def random_states(n=2):
    states = []
    for seed in range(n):
        torch.manual_seed(seed)
        states.append({k: v.clone() for k, v in ICLTransformer(CONFIG).state_dict().items()})
    return states


def reference_noise(rows: int) -> torch.Tensor:
    """[steps, rows, P]: the torch.randn draws estimate_llcs makes, in its order."""
    P = sum(p.numel() for p in ICLTransformer(CONFIG).parameters())
    gen = torch.Generator().manual_seed(HYPER["seed"])
    return torch.stack([torch.randn(rows, P, generator=gen) for _ in range(STEPS)])


def vmap_results(states, **kwargs):
    return estimate_llcs(ICLTransformer(CONFIG), states, lambda m, b: mean_loss(m, TASK, b),
                         lambda step: draw(TASK, HYPER["seed"], step, BATCH, STREAM_SGLD, "cpu"),
                         num_chains=CHAINS, **HYPER, **kwargs)


def ensemble_sampler(per_call=2, init_from_draws=False, noise_rows=None):
    """noise_rows: estimate_llcs' draws for that many chains fill the first rows (the padding's get zeros)."""
    rows = per_call * CHAINS
    table = reference_noise(noise_rows or rows)
    table = torch.cat([table, table.new_zeros(STEPS, rows - table.shape[1], table.shape[2])], dim=1)
    return EnsembleSGLD(ICLTransformer(CONFIG), TASK, checkpoints_per_call=per_call, num_chains=CHAINS,
                        grad_batch=BATCH, data_stream=STREAM_SGLD, init_from_draws=init_from_draws,
                        noise=lambda step: table[step], **HYPER)


def assert_same(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.loss_trace.shape == (CHAINS, STEPS) and a.num_burnin == b.num_burnin
        torch.testing.assert_close(a.loss_trace, b.loss_trace, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(a.llc_per_chain, b.llc_per_chain, rtol=1e-3, atol=1e-3)
        assert torch.equal(a.diverged, b.diverged)
        assert a.init_loss == pytest.approx(b.init_loss, rel=1e-5)
        assert a.llc_mean == pytest.approx(b.llc_mean, rel=1e-3, abs=1e-3, nan_ok=True)


def test_traces_and_burnin_match_estimate_llcs():
    states = random_states()
    init = [0.7, 1.3]
    theirs = vmap_results(states, init_losses=init)
    ours = ensemble_sampler().estimate(states, init_losses=init)
    assert_same(ours, theirs)
    # the two checkpoints' chains really differ, and burn-in is left out of the estimate
    assert not torch.allclose(ours[0].loss_trace, ours[1].loss_trace)
    for r, i in zip(ours, init):
        with_burnin = HYPER["nbeta"] * (r.loss_trace.mean(dim=1) - i)
        assert not torch.allclose(r.llc_per_chain, with_burnin)


def test_init_loss_from_the_draws_matches():
    states = random_states()
    assert_same(ensemble_sampler(init_from_draws=True).estimate(states), vmap_results(states))


def test_divergence_flagged_the_same():
    states = random_states()
    init = [1.0, 1.0]
    peaks = vmap_results(states, init_losses=init, divergence_loss=math.inf)
    # a threshold between the chains' peak losses flags some chains and not others
    threshold = torch.cat([r.loss_trace.max(dim=1).values for r in peaks]).median().item()
    with pytest.warns(RuntimeWarning, match="diverged"):
        theirs = vmap_results(states, init_losses=init, divergence_loss=threshold)
    with pytest.warns(RuntimeWarning, match="diverged"):
        ours = ensemble_sampler().estimate(states, init_losses=init, divergence_loss=threshold)
    flags = torch.cat([r.diverged for r in ours])
    assert flags.any() and not flags.all()
    assert_same(ours, theirs)


def test_padded_last_group_and_reuse():
    """One checkpoint on a 2-per-call sampler (padded) gives estimate_llcs' single-checkpoint
    result, and a second call on the same sampler starts afresh."""
    states = random_states()
    theirs = vmap_results(states[:1], init_losses=[1.0])
    sampler = ensemble_sampler(per_call=2, noise_rows=CHAINS)
    assert_same(sampler.estimate(states[:1], init_losses=[1.0]), theirs)
    assert not sampler.estimate(states, init_losses=[1.0, 1.0])[1].loss_trace.isnan().any()
    assert_same(sampler.estimate(states[:1], init_losses=[1.0]), theirs)
    with pytest.raises(ValueError, match="checkpoints for a sampler of 2"):
        sampler.estimate(random_states(3), init_losses=[1.0] * 3)
    with pytest.raises(ValueError, match="init_losses exactly when"):
        sampler.estimate(states)


def test_default_noise_is_standard_normal_and_distinct_per_chain():
    sampler = EnsembleSGLD(ICLTransformer(CONFIG), TASK, checkpoints_per_call=2, num_chains=CHAINS,
                           grad_batch=BATCH, data_stream=STREAM_SGLD, **HYPER)
    noise = sampler.noise(torch.tensor(0))
    assert noise.shape == sampler.flat.shape
    assert abs(noise.mean().item()) < 0.05 and abs(noise.std().item() - 1) < 0.05
    assert not torch.equal(noise[0], noise[1]) and not torch.equal(noise, sampler.noise(torch.tensor(1)))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_equals_eager_on_gpu():
    states = random_states()
    init = [1.0, 1.0]

    def run(**kwargs):
        model = ICLTransformer(CONFIG).cuda()
        sampler = EnsembleSGLD(model, TASK, checkpoints_per_call=2, num_chains=CHAINS, grad_batch=BATCH,
                               data_stream=STREAM_SGLD, **HYPER, **kwargs)
        return sampler.estimate([{k: v.cuda() for k, v in s.items()} for s in states], init_losses=init)

    eager = run(cuda_graph=False)
    for graphed in (run(), run(compile=True)):
        for a, b in zip(graphed, eager):
            torch.testing.assert_close(a.loss_trace, b.loss_trace, rtol=1e-4, atol=1e-5)
    cpu = EnsembleSGLD(ICLTransformer(CONFIG), TASK, checkpoints_per_call=2, num_chains=CHAINS, grad_batch=BATCH,
                       data_stream=STREAM_SGLD, **HYPER).estimate(states, init_losses=init)
    for a, b in zip(cpu, eager):  # the same data and noise hash on both devices
        torch.testing.assert_close(a.loss_trace, b.loss_trace, rtol=1e-3, atol=1e-4)


def test_landscape_sweep_with_the_ensemble_backend(tmp_path):
    """`python -m icl.landscape sweep --backend ensemble` on a tiny 2-member run: every checkpoint
    estimated, each record the EnsembleSGLD estimate rebuilt by hand with L(w*) on the fixed batch."""
    torch.manual_seed(0)
    with torch.random.fork_rng():
        torch.set_num_threads(1)
        assert train(["--dim", "2", "--points", "4", "--width", "8", "--depth", "1", "--heads", "2", "--batch", "8",
                      "--eval-batch", "16", "--quiet", "--steps", "20", "--lr", "1e-2", "--seeds", "0", "1",
                      "--ckpt-log", "3", "--ckpt-lin", "0", "--eval-log", "2", "--eval-lin", "0",
                      "--out", str(tmp_path)]) == 0
    sampler = ["--chains", "2", "--burnin", "2", "--draws", "3", "--grad-batch", "16", "--init-batch", "64",
               "--ed-batch", "16", "--device", "cpu", "--group", "1"]
    assert landscape.main(["sweep", str(tmp_path), "--backend", "ensemble"] + sampler) == 0
    state = json.loads((tmp_path / "llc.json").read_text())
    members = landscape.find_members(tmp_path)
    assert {m.run_name: [r["step"] for r in state["members"][m.run_name]["llc"]] for m in members} == \
        {m.run_name: m.steps for m in members}
    record = state["members"][members[1].run_name]["llc"][-1]
    assert record["backend"] == "ensemble"
    model, ckpt = checkpoints.load_model(checkpoints.checkpoint_path(tmp_path, members[1].run_name, record["step"]))
    task = landscape.task_of(members[1].config, "cpu")
    init = landscape.fixed_batch_loss(model, task, 64, 42, "cpu")
    direct = EnsembleSGLD(model, task, checkpoints_per_call=1, num_chains=2, epsilon=1e-3, nbeta=60.0, gamma=6.0,
                          num_draws=3, num_burnin=2, seed=42, grad_batch=16,
                          data_stream=landscape.STREAM_SGLD).estimate([ckpt["model"]], [init])[0]
    assert record["init_loss"] == pytest.approx(init, rel=1e-6)
    assert record["llc_per_chain"] == pytest.approx(direct.llc_per_chain.tolist(), rel=1e-5, abs=1e-6)
