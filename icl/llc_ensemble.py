"""SGLD for the LLC of in-context regression checkpoints, on stacked weights: the second backend of
`python -m icl.landscape sweep` (`--backend ensemble`; docs/llc.md, "Ensemble backend").

`icl.llc.estimate_llcs` runs any nn.Module's chains through `vmap(grad_and_value(functional_call))`
with SDPA's math kernel. Here the C chains of G checkpoints of one ICLTransformer shape are the
E = G*C members of `icl.model.ensemble_forward` instead, as the training ensemble (icl.ensemble)
runs them: one leaf tensor `flat` [E, P] (row g*C + c is chain c of checkpoint g), every matmul a
bmm over members (fast_ops' split-K weight gradient, Triton attention on CUDA), and the loss summed
over members gives each chain its own gradient. The step

    w <- w - (eps/2) * (nbeta * grad L_t(w) + gamma * (w - w*)) + sqrt(eps) * N(0, 1)

is estimate_llcs' to the operation order, with w* [E, P] each row's own checkpoint. The whole step
(data, forward, backward, update, loss bookkeeping) has no host sync, so on CUDA it is captured
once in a CUDA graph and replayed; the CPU (and `cuda_graph=False`) runs it eagerly. With
compile=True the forward and the update go through torch.compile first.

- Data: step t's batch is `task.sample([seed], t, grad_batch, data_stream)`, drawn on the device
  from icl.tasks' counter-based hash with the step a device tensor: the batch `icl.landscape.draw`
  gives estimate_llcs at that step. Every chain of every checkpoint sees it, as in estimate_llcs.
- Noise: row e at step t is `icl.tasks.normal` of (seed * NOISE_SEED_STRIDE + e, t, STREAM_NOISE):
  counter-based, so a graph replays it with no generator state, and CPU and GPU draw the same
  numbers. It is not estimate_llcs' `torch.randn` stream, so the two backends' chains agree in
  distribution, not draw for draw; `noise=` injects any step -> [E, P] source (the tests pass
  estimate_llcs' own draws and get its traces).
- Losses: each step writes its [E] chain losses into a [steps, E] device buffer, read once at the
  end; the estimate, burn-in and divergence rule are icl.llc's (`summarise`), so the results are
  `LLCResult`s exactly as estimate_llcs makes them.

One `EnsembleSGLD` is built per sweep and reused for every group of checkpoints: the anchors are
copied into fixed buffers, so the graph is captured (and the step compiled) once. A last group
smaller than `checkpoints_per_call` is padded with copies of its last checkpoint, whose results
are dropped.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import torch

from icl.ensemble import capture_cuda_graph
from icl.llc import LLCResult, summarise
from icl.model import ICLTransformer, ensemble_forward
from icl.tasks import normal, per_position_loss

STREAM_NOISE = 14  # the noise's hash stream: icl.tasks uses 1-3 and icl.landscape's data 11-13
NOISE_SEED_STRIDE = 1 << 20  # noise row e hashes seed * stride + e: rows stay distinct for E < 2^20


class EnsembleSGLD:
    """SGLD at `checkpoints_per_call` checkpoints x `num_chains` chains of `model`'s architecture
    on `task`'s fresh batches. Hyperparameters as in icl.llc.estimate_llcs (epsilon, nbeta, gamma;
    `seed_hyperparameters` converts timaeus'); `seed` seeds the data hash (with `data_stream`)
    and the noise.

    init_from_draws: L(w*) as estimate_llcs' default, the mean loss at w* over the draw steps'
        batches (one more no-grad forward of the G checkpoints per step); False: `estimate` takes
        init_losses.
    noise: step (an int64 device tensor) -> [G*num_chains, P] standard normals; default the
        counter-based hash (module docstring). The tests inject estimate_llcs' draws.
    """

    def __init__(self, model: ICLTransformer, task, *, checkpoints_per_call: int, num_chains: int,
                 epsilon: float, nbeta: float, gamma: float, num_draws: int, num_burnin: int, seed: int,
                 grad_batch: int, data_stream: int, init_from_draws: bool = False,
                 noise: Callable[[torch.Tensor], torch.Tensor] | None = None, compile: bool = False,
                 cuda_graph: bool = True):
        if checkpoints_per_call < 1 or num_chains < 1 or num_draws < 1 or num_burnin < 0:
            raise ValueError(f"need checkpoints_per_call >= 1, num_chains >= 1, num_draws >= 1, num_burnin >= 0; "
                             f"got {checkpoints_per_call}, {num_chains}, {num_draws}, {num_burnin}")
        named = list(model.named_parameters())
        frozen = [name for name, p in named if not p.requires_grad]
        if frozen:
            raise ValueError(f"parameters {frozen} are frozen; ensemble_forward samples every parameter of the "
                             f"model: use icl.llc.estimate_llcs to keep some fixed")
        self.model_config, self.mults, self.task = model.config, model.mults, task
        self.names = [name for name, _ in named]
        self.shapes = [tuple(p.shape) for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.epsilon, self.nbeta, self.gamma = epsilon, nbeta, gamma
        self.num_draws, self.num_burnin, self.grad_batch, self.data_stream = num_draws, num_burnin, grad_batch, data_stream
        self.init_from_draws = init_from_draws
        self.G, self.C = checkpoints_per_call, num_chains
        E, P, steps = self.G * self.C, sum(self.sizes), num_burnin + num_draws
        device, dtype = named[0][1].device, named[0][1].dtype
        qkv_elements = E * grad_batch * self.model_config.seq_len * 3 * self.model_config.width
        if device.type == "cuda" and qkv_elements >= 2 ** 31:
            # fast_ops' Triton attention indexes the qkv activations with int32 offsets
            raise ValueError(f"{E} chains x batch {grad_batch} hold {qkv_elements:,} qkv activations, past the "
                             f"2^31 that fast_ops' attention can index: lower checkpoints_per_call (--group)")
        self.device = device
        self.w_star = torch.zeros(self.G, P, device=device, dtype=dtype)
        self.anchor = torch.zeros(E, P, device=device, dtype=dtype)  # row g*C + c: checkpoint g
        self.flat = torch.zeros(E, P, device=device, dtype=dtype, requires_grad=True)
        self.weights = self.flat.detach()  # the same storage, for in-place updates outside autograd
        self.step_count = torch.zeros((), dtype=torch.int64, device=device)
        self.trace = torch.zeros(steps, E, device=device, dtype=dtype)
        self.init_trace = torch.zeros(steps, self.G, device=device, dtype=dtype)
        self.data_seeds = torch.tensor([seed], dtype=torch.int64, device=device)
        self.noise_seeds = seed * NOISE_SEED_STRIDE + torch.arange(E, dtype=torch.int64, device=device)
        self.noise = noise or (lambda step: normal(self.noise_seeds, step, STREAM_NOISE, P).to(dtype))
        self.use_graph = cuda_graph and device.type == "cuda"
        self.graph = None
        # as icl.ensemble: inductor fuses the hash sampler, LayerNorms, activations and the update
        self._chain_losses = torch.compile(self.chain_losses, dynamic=False) if compile else self.chain_losses
        self._update = torch.compile(self.update, dynamic=False) if compile else self.update

    def params(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """{name: [R, *shape]} views of flat [R, P]."""
        R = flat.shape[0]
        return {n: t.view(R, *s) for n, t, s in zip(self.names, flat.split(self.sizes, dim=1), self.shapes)}

    def mean_losses(self, flat: torch.Tensor, tokens: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """[R] mean loss of each row of flat [R, P] on one shared batch (tokens [B, T, .], y [B, K])."""
        out = ensemble_forward(self.params(flat), tokens.expand(flat.shape[0], *tokens.shape),
                               self.model_config, self.mults)
        return per_position_loss(self.task.predictions(out), y, self.task.loss).mean(dim=1)

    def chain_losses(self, flat: torch.Tensor, step: torch.Tensor):
        """Step `step`'s batch (tokens, y) and every chain's loss on it, [E]."""
        batch = self.task.sample(self.data_seeds, step, self.grad_batch, self.data_stream)
        tokens, y = batch.tokens[0], batch.y[0]
        return self.mean_losses(flat, tokens, y), tokens, y

    def step(self) -> None:
        """One SGLD step of every chain; no host sync (CUDA-graph capturable)."""
        losses, tokens, y = self._chain_losses(self.flat, self.step_count)
        (grad,) = torch.autograd.grad(losses.sum(), self.flat)
        self._update(grad, losses.detach(), tokens, y)

    @torch.no_grad()
    def update(self, grad: torch.Tensor, losses: torch.Tensor, tokens: torch.Tensor, y: torch.Tensor) -> None:
        """Record the losses (at w_t, before the step), then w <- w - (eps/2) drift + sqrt(eps) noise."""
        at = self.step_count.view(1)
        self.trace.index_copy_(0, at, losses[None])
        if self.init_from_draws:  # the burn-in columns are written too and never read
            self.init_trace.index_copy_(0, at, self.mean_losses(self.w_star, tokens, y)[None])
        drift = self.nbeta * grad + self.gamma * (self.weights - self.anchor)
        self.weights.sub_(drift, alpha=self.epsilon / 2).add_(self.noise(self.step_count), alpha=math.sqrt(self.epsilon))
        self.step_count += 1

    def capture(self, warmup_steps: int = 3) -> None:
        """Record step() in a CUDA graph; the warmup steps capturing needs (on a side stream, as
        torch.cuda.graphs asks) are undone by the next `estimate`, which resets every buffer."""
        assert self.device.type == "cuda", "CUDA graphs need a CUDA model; on the CPU the step runs eagerly"
        self.graph = capture_cuda_graph(self.step, warmup_steps)

    @torch.no_grad()
    def _start(self, checkpoints: Sequence[Mapping[str, torch.Tensor]]) -> None:
        """Anchors and chains at the checkpoints (the last repeated to fill the G slots), step 0."""
        missing = [name for checkpoint in checkpoints for name in self.names if name not in checkpoint]
        if missing:
            raise ValueError(f"checkpoints lack parameters {sorted(set(missing))}: pass ICLTransformer state dicts")
        padded = list(checkpoints) + [checkpoints[-1]] * (self.G - len(checkpoints))
        self.w_star.copy_(torch.stack([torch.cat([c[name].detach().reshape(-1).to(self.w_star)
                                                  for name in self.names]) for c in padded]))
        self.anchor.copy_(self.w_star.repeat_interleave(self.C, dim=0))
        self.weights.copy_(self.anchor)
        self.step_count.zero_()
        self.trace.zero_()
        self.init_trace.zero_()

    def estimate(self, checkpoints: Sequence[Mapping[str, torch.Tensor]], init_losses: Sequence[float] | None = None,
                 divergence_loss: float | None = None) -> list[LLCResult]:
        """One LLCResult per checkpoint (1 to checkpoints_per_call state dicts), as estimate_llcs
        returns them; init_losses: one L(w*) per checkpoint, given exactly when not init_from_draws."""
        if not 1 <= len(checkpoints) <= self.G:
            raise ValueError(f"{len(checkpoints)} checkpoints for a sampler of {self.G} per call: "
                             f"pass 1 to {self.G}, or build it with a larger checkpoints_per_call")
        if (init_losses is None) != self.init_from_draws:
            raise ValueError("give init_losses exactly when the sampler was built with init_from_draws=False")
        if init_losses is not None and len(init_losses) != len(checkpoints):
            raise ValueError(f"{len(init_losses)} init losses for {len(checkpoints)} checkpoints")
        if self.use_graph and self.graph is None:
            self._start(checkpoints)  # the capture's warmup steps run on these weights
            self.capture()
        self._start(checkpoints)
        for _ in range(self.num_burnin + self.num_draws):
            if self.graph is not None:
                self.graph.replay()
            else:
                self.step()
        # the one host sync
        traces = self.trace.T.cpu().view(self.G, self.C, -1)
        if self.init_from_draws:
            init_losses = self.init_trace[self.num_burnin:].mean(dim=0).tolist()
        return [summarise(traces[g], float(init_losses[g]), self.num_burnin, divergence_loss, self.epsilon,
                           self.nbeta, self.gamma, g) for g in range(len(checkpoints))]
