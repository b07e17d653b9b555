"""Cross-checks of icl.llc against devinterp 2.x through icl.devinterp_bridge (skipped without
devinterp; it is not in requirements.txt, see docs/llc.md): the estimate on a least-squares model,
the fixed pool every estimator can read on a tiny ICL model, and the devinterp mode of
experiments/llc_backend_bench.py.

devinterp's estimate averages burn-in in; its returned trace holds every step, so both
conventions are compared.
"""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from icl.devinterp_bridge import FixedPool, agree, devinterp_llc, index_dataset
from icl.landscape import mean_loss
from icl.llc import estimate_llc, estimate_llcs
from icl.llc_ensemble import EnsembleSGLD
from icl.model import ICLTransformer, ModelConfig
from icl.tasks import GargTask

from test_llc import least_squares_model, mse

pytest.importorskip("devinterp")

REPO = Path(__file__).resolve().parent.parent
SETTINGS = dict(epsilon=5e-4, nbeta=100.0, gamma=1.0)
CHAINS, DRAWS, BURNIN = 8, 300, 50


def test_same_estimate_as_devinterp_within_the_chain_spread():
    torch.manual_seed(0)
    model, x, y = least_squares_model(num_params=4, n=256)

    def sample_loss(net, index):  # one position per sample
        return (net(x[index]) - y[index]) ** 2

    theirs = devinterp_llc(model, index_dataset(len(x), 1), sample_loss, **SETTINGS, num_chains=CHAINS,
                           num_draws=DRAWS, num_burnin=BURNIN, batch_size=len(x), seed=0, device="cpu")
    ours = estimate_llc(model, mse, [(x, y)], **SETTINGS, num_chains=CHAINS, num_draws=DRAWS,
                        num_burnin=BURNIN, seed=0)

    assert theirs.result.init_loss == pytest.approx(ours.init_loss, rel=1e-5)
    their_trace = theirs.result.loss_trace
    assert their_trace.shape == ours.loss_trace.shape  # both record burn-in and draws

    nbeta = SETTINGS["nbeta"]
    # devinterp's own number (burn-in averaged in) against ours computed the same way
    our_with_burnin = nbeta * (ours.loss_trace.mean(dim=1) - ours.init_loss)
    assert agree(theirs.llc_per_chain_with_burnin, our_with_burnin)
    assert theirs.llc_mean_with_burnin == pytest.approx(float(theirs.llc_per_chain_with_burnin.mean()), rel=1e-5)
    # and with the burn-in dropped from devinterp's trace, against our estimate
    their_draws = nbeta * (their_trace[:, BURNIN:].mean(dim=1) - theirs.result.init_loss)
    assert torch.allclose(theirs.result.llc_per_chain, their_draws)
    assert agree(theirs.result.llc_per_chain, ours.llc_per_chain)


def test_every_estimator_reads_the_same_fixed_pool_in_the_same_order():
    """At epsilon 0 no chain moves from w*, so every step's loss is L(w*) on that step's batch:
    devinterp, estimate_llcs on pool.batches() and EnsembleSGLD on the pool as its task must
    record the same trace, through more steps than the pool has batches (the cycle), and the same
    L(w*) over the whole pool."""
    task = GargTask(dim=2, points=4)
    config = ModelConfig(token_dim=task.token_dim, seq_len=task.seq_len, width=8, depth=1, heads=2)
    torch.manual_seed(0)
    model = ICLTransformer(config)
    pool = FixedPool(task, num_batches=3, batch=8, seed=0, device="cpu")
    hyper = dict(epsilon=0.0, nbeta=60.0, gamma=6.0, num_draws=5, num_burnin=2, seed=1)
    theirs = devinterp_llc(model, index_dataset(len(pool), pool.positions), pool.sample_loss, num_chains=2,
                           batch_size=pool.batch, device="cpu", **hyper).result

    def loss(m, batch):
        return mean_loss(m, task, batch)

    with torch.no_grad():
        init = sum(float(loss(model, b)) for b in pool.batches()) / pool.num_batches
    assert theirs.init_loss == pytest.approx(init, rel=1e-5)
    vmap = estimate_llcs(model, [model.state_dict()], loss, pool.batches(), num_chains=2,
                         init_losses=[init], **hyper)[0]
    ensemble = EnsembleSGLD(model, pool, checkpoints_per_call=1, num_chains=2, grad_batch=pool.batch,
                            data_stream=0, **hyper).estimate([model.state_dict()], [init])[0]
    assert len(set(theirs.loss_trace[0, :3].tolist())) == 3  # three different batches
    for ours in (vmap, ensemble):
        assert torch.allclose(ours.loss_trace, theirs.loss_trace, rtol=1e-5)


def test_backend_bench_devinterp_mode(tmp_path):
    """The bench's devinterp mode, tiny: 2 checkpoints for ours and the first for devinterp, 2
    chains, 10 draws; every row has a time and an estimate, on fresh batches and on the pool (where
    checkpoint 0's L(w*) must be devinterp's: the same weights on the same data)."""
    spec = importlib.util.spec_from_file_location("llc_backend_bench", REPO / "experiments" / "llc_backend_bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for pool in (False, True):
        out = tmp_path / f"bench_{pool}.json"
        args = ["--device", "cpu", "--group", "2", "--chains", "2", "--burnin", "3", "--draws", "10",
                "--grad-batch", "16", "--pool-batches", "4", "--modes", "vmap", "ensemble-eager", "devinterp",
                "--json", str(out)] + (["--pool"] if pool else [])
        assert bench.main(args) == 0
        report = json.loads(out.read_text())
        assert [r["mode"] for r in report["rows"]] == ["vmap", "ensemble-eager", "devinterp"]
        assert all(r["seconds"] > 0 for r in report["rows"])
        assert [r["checkpoints"] for r in report["rows"]] == [2, 2, 1]
        rows = {r["mode"]: r for r in report["comparison"]}
        assert set(rows) == {"vmap", "ensemble-eager", "devinterp"}
        for mode, row in rows.items():
            assert row["s_per_checkpoint"] > 0 and row["chains"] == 2
            assert row["llc_mean"] == row["llc_mean"] and row["llc_std"] > 0  # finite, two chains
            assert row["data"] == ("fixed pool" if pool or mode == "devinterp" else "fresh batches")
            assert isinstance(row["agrees_with_devinterp"], bool)
        assert rows["devinterp"]["agrees_with_devinterp"]
        assert report["devinterp"]["pool_sequences"] == 4 * 16
        assert report["devinterp"]["llc_mean_with_burnin"] == report["devinterp"]["llc_mean_with_burnin"]
        if pool:  # the same data: the same L(w*)
            assert rows["devinterp"]["init_loss"] == pytest.approx(rows["vmap"]["init_loss"], rel=1e-5)
