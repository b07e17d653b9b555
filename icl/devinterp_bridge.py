"""devinterp's LLC estimator (PyPI `devinterp` 2.x) on this repository's models and data: the
cross-check of icl.llc (tests/test_llc_devinterp.py) and the `devinterp` mode of
experiments/llc_backend_bench.py. devinterp is optional (not in requirements.txt): it and its
dependencies (`datasets`, `zarr`, ...) are imported only inside `index_dataset` and
`devinterp_llc`, so everything else here, and the package, work without it.

devinterp's data contract. `devinterp.slt.llc.llc` samples minibatches of `batch_size` rows from a
HuggingFace `Dataset` with an int64 `input_ids` column, torch-formatted, and calls
`loss_fn(model, input_ids [B, L]) -> [B, L - 1]`, a loss per token; the SGLD gradient is that of
their mean. Regression samples are no token sequences, so they go through an index adapter: row i
of `index_dataset(n, positions)` is `[i] * (positions + 1)`, and the loss looks sample i up in
fixed tensors and returns its loss at each of `positions` positions (one for a least-squares
sample; the K context positions of an in-context regression sequence, whose squared errors
average to icl.landscape.mean_loss). devinterp cannot draw fresh data per step: it cycles
through the fixed dataset, replaying its first pass (epoch_mode "cycle"); `devinterp_llc` turns
shuffling off, so step t reads rows (t mod n/B)·B onwards, and L(w*) is its mean over every
batch, i.e. over the whole dataset.

`FixedPool` is that fixed dataset for an icl task: sequences sampled once, with the same batches
in the same order offered to our backends (`batches()` for icl.llc.estimate_llcs, `sample` as the
task of icl.llc_ensemble.EnsembleSGLD), so both estimators can read identical data.

Hyperparameters map one to one: lr = epsilon, n_beta = nbeta, localization = gamma,
num_burnin_steps = num_burnin, and num_chains, num_draws, batch_size as named; init_seed = seed
seeds chain c's noise with seed + c through the global torch generator (it calls
torch.manual_seed), so its chains and ours agree in distribution, not draw for draw. Its update
is ours: w <- w - (lr/2)(n_beta grad + localization (w - w*)) + sqrt(lr) N(0, 1).

Conventions: devinterp's `llc_mean` averages the burn-in steps in; its `loss_trace` keeps every
step, so `devinterp_llc` also returns the estimate with the burn-in dropped (our convention),
made by icl.llc.summarise from that trace and devinterp's L(w*). devinterp runs its chains one
after another and writes every step's per-token losses and input_ids to zarr; `devinterp_llc`
writes them into a temporary directory and deletes it.
"""
from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from icl.llc import LLCResult, summarise
from icl.tasks import Batch, per_position_loss

STREAM_POOL = 15  # the pool's hash stream: icl.tasks uses 1-3, icl.landscape 11-13, the ensemble noise 14


@dataclass
class DevinterpLLC:
    """One devinterp estimate, in both conventions."""

    result: LLCResult                    # burn-in dropped: icl.llc.summarise of devinterp's trace and L(w*)
    llc_mean_with_burnin: float          # devinterp's own llc_mean
    llc_per_chain_with_burnin: torch.Tensor  # (chains,) devinterp's llc_per_chain


class FixedPool:
    """`num_batches` x `batch` sequences of an icl task, sampled once (hash stream STREAM_POOL,
    step 0, `seed`) on `device`, read in consecutive batches: step t reads batch t mod
    num_batches, which is devinterp's order without shuffling.

    - `batches()`: the list of (tokens, y) that icl.llc.estimate_llcs uses in turn;
    - `sample(seeds, step, batch, stream)`: a stand-in for the task in EnsembleSGLD (seeds and
      stream are ignored: the pool is the data), graph-capturable with `step` a device tensor;
    - `sample_loss(model, index)`: devinterp's loss, each indexed sequence's loss per position.
    """

    def __init__(self, task, num_batches: int, batch: int, seed: int, device):
        if num_batches < 1 or batch < 1:
            raise ValueError(f"need num_batches >= 1 and batch >= 1, got {num_batches}, {batch}")
        drawn = task.sample(torch.tensor([seed], device=device), 0, num_batches * batch, STREAM_POOL)
        self.x, self.y, self.tokens = drawn.x[0], drawn.y[0], drawn.tokens[0]
        self.task, self.num_batches, self.batch = task, num_batches, batch
        self.loss = task.loss

    def __len__(self) -> int:
        return self.num_batches * self.batch

    @property
    def positions(self) -> int:
        return self.y.shape[1]

    def predictions(self, outputs: torch.Tensor) -> torch.Tensor:
        return self.task.predictions(outputs)

    def batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(self.tokens[j * self.batch:(j + 1) * self.batch], self.y[j * self.batch:(j + 1) * self.batch])
                for j in range(self.num_batches)]

    def sample(self, seeds, step, batch: int, stream: int | None = None) -> Batch:
        if batch != self.batch:
            raise ValueError(f"the pool is read in batches of {self.batch}, not {batch}")
        rows = (step % self.num_batches) * batch + torch.arange(batch, device=self.y.device)
        return Batch(x=self.x[rows][None], y=self.y[rows][None], tokens=self.tokens[rows][None])

    def sample_loss(self, model, index: torch.Tensor) -> torch.Tensor:
        """[len(index), positions]: the task's loss of each indexed sequence at each position."""
        pred = self.task.predictions(model(self.tokens[index]))
        # per_position_loss averages over its batch axis: a batch of one per sequence keeps each
        return per_position_loss(pred[:, None], self.y[index][:, None], self.task.loss)


def index_dataset(num_samples: int, positions: int):
    """devinterp's dataset for `num_samples` samples of `positions` losses: row i is [i] * (positions + 1)."""
    from datasets import Dataset
    rows = torch.arange(num_samples)[:, None].expand(num_samples, positions + 1)
    return Dataset.from_dict({"input_ids": rows.tolist()}).with_format("torch")


def devinterp_llc(model: torch.nn.Module, dataset, sample_loss: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor],
                  *, epsilon: float, nbeta: float, gamma: float, num_chains: int, num_draws: int, num_burnin: int,
                  batch_size: int, seed: int, device, divergence_loss: float | None = None) -> DevinterpLLC:
    """devinterp's LLC of `model` at its current weights on `index_dataset` rows.

    sample_loss(model, index [B]) -> [B, positions]: the loss of samples `index` (tensors it
    holds, on `device`) at each position. Batches are read in order (no shuffling); L(w*) is the
    mean over all len(dataset) // batch_size batches. divergence_loss: as icl.llc.estimate_llc,
    for the burn-in-dropped result.
    """
    from devinterp.slt.llc import llc

    if len(dataset) < batch_size:
        raise ValueError(f"a dataset of {len(dataset)} rows holds no batch of {batch_size}")

    def per_token_loss(net, input_ids):
        return sample_loss(net, input_ids[:, 0])

    with tempfile.TemporaryDirectory(prefix="devinterp_") as folder:
        out = llc(model, dataset, {}, lr=epsilon, n_beta=nbeta, localization=gamma, num_chains=num_chains,
                  num_draws=num_draws, num_burnin_steps=num_burnin, batch_size=batch_size,
                  num_init_loss_batches=len(dataset) // batch_size, shuffle=False, init_seed=seed,
                  loss_fn=per_token_loss, device=str(device), output_path=Path(folder) / "samples.zarr")
        # read everything before the zarr store is deleted
        trace = torch.as_tensor(out.loss_trace.values)
        init = float(out.init_loss)
        with_burnin = torch.as_tensor(out.llc_per_chain.values)
        with_burnin_mean = float(out.llc_mean)
    result = summarise(trace, init, num_burnin, divergence_loss, epsilon, nbeta, gamma, 0)
    return DevinterpLLC(result=result, llc_mean_with_burnin=with_burnin_mean, llc_per_chain_with_burnin=with_burnin)


def kept_chains(result: LLCResult) -> torch.Tensor:
    """The per-chain estimates of the chains that did not diverge (those the mean is over)."""
    return result.llc_per_chain[~result.diverged]


def standard_error(per_chain: torch.Tensor) -> float:
    """The standard error of the mean over chains (nan with fewer than two)."""
    return float(per_chain.std()) / math.sqrt(len(per_chain)) if len(per_chain) > 1 else math.nan


def agree(a: torch.Tensor, b: torch.Tensor, k: float = 3.0) -> bool:
    """Whether two sets of per-chain estimates have means within k combined standard errors."""
    return abs(float(a.mean()) - float(b.mean())) < k * math.hypot(standard_error(a), standard_error(b))
