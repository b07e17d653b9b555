"""Local learning coefficient (LLC) by SGLD localised at a checkpoint, for any model and loss.

The sampler (Lau et al. 2023, as in timaeus-research/icl `sgld.py`) starts every chain at the
checkpoint w* and runs

    w <- w - (eps/2) * (nbeta * grad L_t(w) + gamma * (w - w*)) + N(0, eps)

where L_t is the mean loss on step t's batch. The estimate is

    llc = nbeta * (E_draws[L_t(w_t)] - L(w*)),

averaged over the draws only: the first `num_burnin` steps of each chain are recorded in the
trace but never enter the average (devinterp 2.0.1 averages them in; this module does not).

All chains run together: the parameters are one (chains, P) tensor, and the loss and its gradient
for every chain come from one `torch.func.vmap` of `torch.func.grad_and_value` over
`torch.func.functional_call`. `estimate_llcs` stacks the chains of several checkpoints into the
same batch. Losses stay on the device and are read back once at the end, so a GPU run has no
per-step host sync.

Hyperparameters: timaeus' configs give (noise_scale, gradient_scale, localization_scale);
`seed_hyperparameters` converts them (eps = noise_scale, nbeta = 2*gradient_scale/eps,
gamma = 2*localization_scale/eps). The paper's sweep is noise 1e-3, gradient 0.03, localization
0.003, i.e. eps=1e-3, nbeta=60, gamma=6, with 8 chains, 500 draws, 500 burn-in steps and a fresh
batch of 1024 sequences per step.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

# A chain whose loss ever exceeds this multiple of L(w*) has left the basin of w*: at a usable
# step size SGLD keeps the loss within about llc/nbeta of L(w*) (for the paper's model, ~3 above
# an init loss of 0.2-4, i.e. under 20x).
DEFAULT_DIVERGENCE_FACTOR = 100.0


def seed_hyperparameters(noise_scale: float, gradient_scale: float,
                         localization_scale: float) -> dict[str, float]:
    """timaeus' (noise_scale, gradient_scale, localization_scale) -> {epsilon, nbeta, gamma}.

    eps = noise_scale; nbeta = 2 * gradient_scale / eps; gamma = 2 * localization_scale / eps.
    (From `SamplerConfig`: T = (2*gradient_scale/(eps*n))^-1, so nbeta = n/T.)
    """
    epsilon = noise_scale
    return {"epsilon": epsilon, "nbeta": 2 * gradient_scale / epsilon,
            "gamma": 2 * localization_scale / epsilon}


@dataclass
class LLCResult:
    """One LLC estimate. Tensors are on the CPU; chains that diverged are excluded from the mean."""

    llc_mean: float            # mean of llc_per_chain over the chains that did not diverge
    llc_std: float             # their standard deviation (0 with one chain)
    llc_per_chain: torch.Tensor  # (chains,), every chain, diverged ones included (may be nan/inf)
    loss_trace: torch.Tensor   # (chains, num_burnin + num_draws); loss at w_t before step t
    num_burnin: int            # the trace's first num_burnin columns are burn-in
    init_loss: float           # L(w*)
    diverged: torch.Tensor     # (chains,) bool
    divergence_loss: float     # the loss above which a chain counted as diverged
    epsilon: float
    nbeta: float
    gamma: float


def _batch_source(batches: Callable[[int], Any] | Sequence[Any]) -> Callable[[int], Any]:
    """A step -> batch callable: fresh data as given, or a fixed list of batches used in turn."""
    if callable(batches):
        return batches
    if len(batches) == 0:
        raise ValueError("batches is an empty sequence: give at least one batch or a step -> batch callable")
    return lambda step: batches[step % len(batches)]


def estimate_llc(model: nn.Module, loss_fn: Callable[[Callable, Any], torch.Tensor],
                 batches: Callable[[int], Any] | Sequence[Any], *, epsilon: float, nbeta: float,
                 gamma: float, num_chains: int, num_draws: int, num_burnin: int, seed: int,
                 init_loss: float | None = None, divergence_loss: float | None = None) -> LLCResult:
    """Estimate the LLC of `model` at its current parameters w* by vectorised SGLD.

    loss_fn(model, batch) -> scalar mean loss. Inside the sampler `model` is a stand-in callable
    that runs the module with one chain's parameters, so loss_fn may only *call* it
    (`model(x)`), not read its attributes. It must be a pure tensor function (no `.item()`).
    batches: a callable step -> batch (fresh data each step; step runs 0..num_burnin+num_draws-1)
        or a sequence of batches used in turn (step % len). Every chain sees the same batch at a
        step; batches must already be on the model's device.
    epsilon, nbeta, gamma: step size, inverse temperature n*beta, localisation strength (see
        `seed_hyperparameters` for timaeus' parametrisation).
    init_loss: L(w*). Default: the mean of loss_fn at w* over the draw steps' batches, i.e. on
        exactly the data the draws' losses come from, which cancels batch-to-batch noise.
    divergence_loss: a chain is flagged diverged if its loss is ever non-finite or above this.
        Default DEFAULT_DIVERGENCE_FACTOR * |L(w*)|; set it explicitly when L(w*) is ~0.

    Every trainable parameter (requires_grad) is sampled; buffers and frozen parameters stay
    fixed. The noise is reproducible: each step draws one `torch.randn(num_chains, P)` from a
    generator on the model's device seeded with `seed`, P being the trainable parameters
    flattened and concatenated in `named_parameters()` order.
    """
    trainable = {name: param for name, param in model.named_parameters() if param.requires_grad}
    return estimate_llcs(model, [trainable], loss_fn, batches, epsilon=epsilon, nbeta=nbeta,
                         gamma=gamma, num_chains=num_chains, num_draws=num_draws,
                         num_burnin=num_burnin, seed=seed,
                         init_losses=None if init_loss is None else [init_loss],
                         divergence_loss=divergence_loss)[0]


def estimate_llcs(model: nn.Module, checkpoints: Sequence[Mapping[str, torch.Tensor]],
                  loss_fn: Callable[[Callable, Any], torch.Tensor],
                  batches: Callable[[int], Any] | Sequence[Any], *, epsilon: float, nbeta: float,
                  gamma: float, num_chains: int, num_draws: int, num_burnin: int, seed: int,
                  init_losses: Sequence[float] | None = None,
                  divergence_loss: float | None = None) -> list[LLCResult]:
    """`estimate_llc` at several checkpoints of one architecture at once: G checkpoints x
    num_chains chains run as one vectorised batch of G*num_chains chains (on a GPU, many small
    models' sampling fills the device where one checkpoint's chains would not).

    checkpoints: G mappings (e.g. state dicts) holding every trainable parameter of `model` by
        name; other keys are ignored, and buffers and frozen parameters come from `model`.
    init_losses: one L(w*) per checkpoint, or None for the default of `estimate_llc`.
    Everything else as in `estimate_llc`; all checkpoints see the same batches. The noise per step
    is one `torch.randn(G * num_chains, P)`; row g * num_chains + c drives chain c of checkpoint g.
    Returns one LLCResult per checkpoint, in order.
    """
    if num_chains < 1 or num_draws < 1 or num_burnin < 0:
        raise ValueError(f"need num_chains >= 1, num_draws >= 1, num_burnin >= 0; got "
                         f"{num_chains}, {num_draws}, {num_burnin}")
    if init_losses is not None and len(init_losses) != len(checkpoints):
        raise ValueError(f"{len(init_losses)} init losses for {len(checkpoints)} checkpoints")
    batch_at = _batch_source(batches)
    names, shapes, fixed = [], [], {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            names.append(name)
            shapes.append(param.shape)
        else:
            fixed[name] = param.detach()
    if not names:
        raise ValueError("model has no parameter with requires_grad=True to sample")
    fixed.update({name: buf for name, buf in model.named_buffers()})
    sizes = [math.prod(shape) for shape in shapes]
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    for g, checkpoint in enumerate(checkpoints):
        missing = [name for name in names if name not in checkpoint]
        if missing:
            raise ValueError(f"checkpoint {g} lacks trainable parameters {missing}: pass the "
                             f"model's state_dict() at that checkpoint")
    w_star = torch.stack([torch.cat([checkpoint[name].detach().reshape(-1).to(device, dtype)
                                     for name in names]) for checkpoint in checkpoints])

    def chain_loss(flat: torch.Tensor, batch: Any) -> torch.Tensor:
        params = {name: piece.view(shape)
                  for name, piece, shape in zip(names, flat.split(sizes), shapes)}
        params.update(fixed)

        def forward(*args, **kwargs):
            return functional_call(model, params, args, kwargs)
        return loss_fn(forward, batch)

    grads_and_losses = vmap(grad_and_value(chain_loss), in_dims=(0, None))
    checkpoint_losses = vmap(chain_loss, in_dims=(0, None))
    generator = torch.Generator(device=device).manual_seed(seed)
    num_checkpoints, num_steps = len(checkpoints), num_burnin + num_draws
    anchor = w_star.repeat_interleave(num_chains, dim=0)  # row g*C + c is checkpoint g
    w = anchor.clone()
    trace = torch.empty(len(w), num_steps, device=device, dtype=dtype)
    init_trace = torch.empty(num_checkpoints, num_draws, device=device, dtype=dtype)
    # vmap has no batching rule for the fused attention kernels' backward (nor for CPU flash
    # attention at all) and would loop over chains there; SDPA's math kernel is plain batched matmuls
    with sdpa_kernel([SDPBackend.MATH]):
        for step in range(num_steps):
            batch = batch_at(step)
            grads, losses = grads_and_losses(w, batch)
            trace[:, step] = losses.detach()
            if init_losses is None and step >= num_burnin:
                with torch.no_grad():
                    init_trace[:, step - num_burnin] = checkpoint_losses(w_star, batch)
            noise = torch.randn(w.shape, generator=generator, device=device, dtype=dtype)
            drift = nbeta * grads + gamma * (w - anchor)
            w = w - (epsilon / 2) * drift + math.sqrt(epsilon) * noise

    # the one host sync
    traces = trace.cpu().view(num_checkpoints, num_chains, num_steps)
    inits = init_trace.mean(dim=1).tolist() if init_losses is None else [float(x) for x in init_losses]
    return [summarise(traces[g], inits[g], num_burnin, divergence_loss, epsilon, nbeta, gamma, g)
            for g in range(num_checkpoints)]


def summarise(trace: torch.Tensor, init: float, num_burnin: int, divergence_loss: float | None,
               epsilon: float, nbeta: float, gamma: float, checkpoint: int) -> LLCResult:
    """One checkpoint's LLCResult from its (chains, steps) trace; warns about diverged chains."""
    if divergence_loss is None:
        divergence_loss = DEFAULT_DIVERGENCE_FACTOR * abs(init)
    diverged = ~torch.isfinite(trace).all(dim=1) | (trace.nan_to_num(nan=math.inf) > divergence_loss).any(dim=1)
    per_chain = nbeta * (trace[:, num_burnin:].mean(dim=1) - init)
    kept = per_chain[~diverged]
    if diverged.any():
        warnings.warn(f"LLC at checkpoint {checkpoint}: {int(diverged.sum())} of {len(trace)} chains "
                      f"diverged (loss non-finite or above {divergence_loss:.3g}; chains "
                      f"{diverged.nonzero().flatten().tolist()}) and are excluded from the mean; "
                      f"lower epsilon or raise gamma", RuntimeWarning, stacklevel=3)
    mean = float(kept.mean()) if len(kept) else math.nan
    std = float(kept.std()) if len(kept) > 1 else 0.0
    return LLCResult(llc_mean=mean, llc_std=std, llc_per_chain=per_chain, loss_trace=trace,
                     num_burnin=num_burnin, init_loss=init, diverged=diverged,
                     divergence_loss=float(divergence_loss), epsilon=epsilon, nbeta=nbeta, gamma=gamma)


def plot_traces(result: LLCResult, path: str, title: str | None = None) -> None:
    """Draw each chain's loss trace against SGLD step to `path` (burn-in shaded, L(w*) dashed,
    diverged chains in red and named in the legend)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    steps = torch.arange(result.loss_trace.shape[1])
    if result.num_burnin:
        ax.axvspan(0, result.num_burnin, color="0.9", label="burn-in (not averaged)")
    for chain, (losses, bad) in enumerate(zip(result.loss_trace, result.diverged)):
        finite = torch.isfinite(losses)
        ax.plot(steps[finite], losses[finite], lw=0.8, color="red" if bad else None,
                label=f"chain {chain} DIVERGED" if bad else None)
    ax.axhline(result.init_loss, color="k", ls="--", lw=1, label="L(w*)")
    if result.diverged.any():
        # keep the healthy chains readable: clip the axis at the divergence threshold
        ax.set_ylim(top=result.divergence_loss)
    ax.set_xlabel("SGLD step")
    ax.set_ylabel("minibatch loss")
    ax.set_title(title or f"LLC {result.llc_mean:.3g} ± {result.llc_std:.2g} "
                          f"(eps={result.epsilon:g}, nbeta={result.nbeta:g}, gamma={result.gamma:g})")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
