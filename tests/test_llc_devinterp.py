"""Cross-check of icl.llc against devinterp 2.x on a least-squares model (skipped without devinterp;
it is not in requirements.txt, see docs/llc.md).

devinterp takes a HuggingFace Dataset of int64 `input_ids` and a per-token loss, so the regression
data go through an index adapter: row i is [i, i], and the loss looks sample i up. Its estimate
averages burn-in in; its returned trace holds every step, so both conventions are compared.
"""

import math

import pytest
import torch

from icl.llc import estimate_llc

from test_llc import least_squares_model, mse

pytest.importorskip("devinterp")
from datasets import Dataset  # noqa: E402  (a devinterp dependency)
from devinterp.slt.llc import llc as devinterp_llc  # noqa: E402

SETTINGS = dict(epsilon=5e-4, nbeta=100.0, gamma=1.0)
CHAINS, DRAWS, BURNIN = 8, 300, 50


def standard_error(per_chain: torch.Tensor) -> float:
    return float(per_chain.std()) / math.sqrt(len(per_chain))


def test_same_estimate_as_devinterp_within_the_chain_spread(tmp_path):
    torch.manual_seed(0)
    model, x, y = least_squares_model(num_params=4, n=256)
    dataset = Dataset.from_dict({"input_ids": [[i, i] for i in range(len(x))]}).with_format("torch")

    def per_token_loss(net, input_ids):  # devinterp's contract: (batch, seq_len - 1)
        index = input_ids[:, 0]
        return (net(x[index]) - y[index]) ** 2

    theirs = devinterp_llc(model, dataset, {}, lr=SETTINGS["epsilon"], n_beta=SETTINGS["nbeta"],
                           localization=SETTINGS["gamma"], num_chains=CHAINS, num_draws=DRAWS,
                           num_burnin_steps=BURNIN, batch_size=len(x), num_init_loss_batches=1,
                           shuffle=False, init_seed=0, loss_fn=per_token_loss, device="cpu",
                           output_path=tmp_path / "samples.zarr")
    ours = estimate_llc(model, mse, [(x, y)], **SETTINGS, num_chains=CHAINS, num_draws=DRAWS,
                        num_burnin=BURNIN, seed=0)

    assert float(theirs.init_loss) == pytest.approx(ours.init_loss, rel=1e-5)
    their_trace = torch.as_tensor(theirs.loss_trace.values)
    assert their_trace.shape == ours.loss_trace.shape  # both record burn-in and draws

    nbeta = SETTINGS["nbeta"]
    # devinterp's own number (burn-in averaged in) against ours computed the same way
    their_with_burnin = torch.as_tensor(theirs.llc_per_chain.values)
    our_with_burnin = nbeta * (ours.loss_trace.mean(dim=1) - ours.init_loss)
    # and with the burn-in dropped from devinterp's trace, against our estimate
    their_draws = nbeta * (their_trace[:, BURNIN:].mean(dim=1) - float(theirs.init_loss))
    for theirs_chains, ours_chains in ((their_with_burnin, our_with_burnin),
                                       (their_draws, ours.llc_per_chain)):
        spread = math.hypot(standard_error(theirs_chains), standard_error(ours_chains))
        assert abs(float(theirs_chains.mean()) - float(ours_chains.mean())) < 3 * spread
    assert float(theirs.llc_mean) == pytest.approx(float(their_with_burnin.mean()), rel=1e-5)
