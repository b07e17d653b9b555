"""E models of one shape trained together: stacked weights, Adam on the stack, one step function.

All members' parameters live in one leaf tensor `flat` [E, P] (P = parameters per model); the
forward splits it into views [E, *shape] (`icl.model.ensemble_forward`), so the backward
writes one gradient [E, P] and Adam updates the whole ensemble with a handful of elementwise
kernels. Members differ in seed (init and data), lr and warmup; the lr multipliers are [E]
device tensors computed from the device step counter. Members are independent: the loss
summed over members has each member's own gradient.

`step()` is the whole training step (sample, forward, backward, update) with no host sync.
On CUDA, `capture()` records it in a CUDA graph that `run(n)` replays; eager (CPU, or
--no-cuda-graph) calls it directly. Both compute the same thing. With compile=True the loss
(sampling and forward, and so its backward) and the update go through torch.compile first.

Adam is AdamW (decoupled weight decay): m = b1 m + (1-b1) g, v = b2 v + (1-b2) g^2,
w -= lr_e lr_p (m / c1) / (sqrt(v / c2) + eps) + lr_e lr_p wd wd_p w, with c = 1 - b^t, lr_e the
member's scheduled lr and lr_p, wd_p the parametrization's per-parameter multipliers.
With weight decay 0 (the default, timaeus) it is Adam.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from icl import schedules
from icl.model import ModelConfig, ensemble_forward, make_parametrization, multipliers, build_member
from icl.tasks import STREAM_TRAIN, per_position_loss


@dataclass(frozen=True)
class Member:
    """One model of the ensemble: its seed (init and data), peak lr and warmup steps."""
    seed: int
    lr: float
    warmup: int


@dataclass(frozen=True)
class Optim:
    """The optimizer and schedule settings shared by every member."""
    steps: int
    batch: int = 256                 # timaeus and luis-mueller: 256 fresh sequences per step
    betas: tuple = (0.9, 0.999)      # timaeus: torch Adam defaults
    eps: float = 1e-8
    weight_decay: float = 0.0        # timaeus: 0; luis-mueller: 1e-5 (AdamW)
    grad_clip: float = 0.0           # per-member global norm; 0 = off (timaeus); luis-mueller: 1.0
    decay: str = "cosine"
    warmup_start: float = 0.0        # the lr multiplier at step 0 (onecycle: 1/(N/2-1))
    floor: float = 0.0               # the multiplier the decay ends at



def capture_cuda_graph(step, warmup_steps: int) -> torch.cuda.CUDAGraph:
    """step() recorded in a CUDA graph, after the warmup calls capturing needs, run on a side
    stream as torch.cuda.graphs asks (they change whatever step changes: callers undo them)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup_steps):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph


class Ensemble:
    def __init__(self, task, config: ModelConfig, members: list[Member], optim: Optim, *, param: str,
                 base_width: int, attn_mult: float = 1.0, readout_zero_init: bool = False,
                 query_zero_init: bool = False, compile: bool = False, device="cpu"):
        assert members, "an ensemble needs at least one member"
        self.task, self.config, self.members, self.optim = task, config, list(members), optim
        self.device = torch.device(device)
        self.parametrization = make_parametrization(config, param=param, base_width=base_width,
                                                    attn_mult=attn_mult, readout_zero_init=readout_zero_init)
        self.mults = multipliers(self.parametrization)
        models = [build_member(config, self.parametrization, m.seed, query_zero_init) for m in members]
        named = list(models[0].named_parameters())
        self.names = [n for n, _ in named]
        self.shapes = [tuple(p.shape) for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        rules = self.parametrization.rules
        # µP's per-parameter lr and weight-decay multipliers, laid out like one row of `flat`
        self.lr_mult = torch.cat([torch.full((n,), rules[k].lr) for k, n in zip(self.names, self.sizes)]).to(self.device)
        self.wd_mult = torch.cat([torch.full((n,), rules[k].weight_decay_mult)
                                  for k, n in zip(self.names, self.sizes)]).to(self.device)
        flat = torch.stack([torch.cat([p.detach().reshape(-1) for p in model.parameters()]) for model in models])
        self.flat = flat.to(self.device).requires_grad_(True)
        self.weights = self.flat.detach()  # the same storage, for in-place updates outside autograd
        self.m = torch.zeros_like(self.flat, requires_grad=False)
        self.v = torch.zeros_like(self.m)
        E = len(members)
        self.step_count = torch.zeros((), dtype=torch.int64, device=self.device)  # steps taken
        self.seeds = torch.tensor([m.seed for m in members], dtype=torch.int64, device=self.device)
        self.lrs = torch.tensor([m.lr for m in members], dtype=torch.float32, device=self.device)
        self.warmups = torch.tensor([float(m.warmup) for m in members], device=self.device)
        self.warmup_start = torch.full((E,), float(optim.warmup_start), device=self.device)
        # Between two reads: the summed train loss of finite steps, their count, and the first
        # step whose loss was non-finite (-1: none yet), per member.
        self.loss_sum = torch.zeros(E, device=self.device)
        self.loss_count = torch.zeros(E, device=self.device)
        self.diverged_at = torch.full((E,), -1, dtype=torch.int64, device=self.device)
        self.graph = None
        # --compile: inductor fuses the sampler's hash, LayerNorms, activations and Adam's
        # elementwise ops into a few kernels (fewer launches and passes over memory)
        self._member_losses = torch.compile(self.member_losses, dynamic=False) if compile else self.member_losses
        self._update = torch.compile(self.update, dynamic=False) if compile else self.update

    @property
    def size(self) -> int:
        return len(self.members)

    def params(self, flat: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """{name: [E, *shape]} views of flat."""
        flat = self.flat if flat is None else flat
        E = flat.shape[0]
        return {n: t.view(E, *s) for n, t, s in zip(self.names, flat.split(self.sizes, dim=1), self.shapes)}

    def member_state(self, e: int) -> dict[str, torch.Tensor]:
        """Member e's weights as an ICLTransformer state dict (CPU copies)."""
        return {n: t[e].detach().cpu().clone() for n, t in self.params().items()}

    def losses(self, batch, flat: torch.Tensor | None = None) -> torch.Tensor:
        """[E, K] loss at each context position, each member on its own batch (batch.tokens [E, B, T, .])."""
        out = ensemble_forward(self.params(flat), batch.tokens, self.config, self.mults)
        return per_position_loss(self.task.predictions(out), batch.y, self.task.loss)

    def lr_now(self) -> torch.Tensor:
        """[E] each member's lr for the next update."""
        o = self.optim
        return self.lrs * schedules.lr_multipliers(self.step_count, total=o.steps, warmup=self.warmups,
                                                   start=self.warmup_start, floor=o.floor, decay=o.decay)

    def member_losses(self, flat: torch.Tensor, step_count: torch.Tensor) -> torch.Tensor:
        """[E] each member's training loss on its fresh batch of this step."""
        batch = self.task.sample(self.seeds, step_count, self.optim.batch, STREAM_TRAIN)
        return self.losses(batch, flat).mean(dim=1)

    def step(self) -> None:
        """One training step for every member; no host sync (CUDA-graph capturable)."""
        loss = self._member_losses(self.flat, self.step_count)
        (grad,) = torch.autograd.grad(loss.sum(), self.flat)
        self._update(grad, loss.detach())

    @torch.no_grad()
    def update(self, grad: torch.Tensor, loss: torch.Tensor) -> None:
        """Loss and divergence bookkeeping, clipping, and the Adam update of every member."""
        o = self.optim
        finite = torch.isfinite(loss)
        self.loss_sum += torch.where(finite, loss, 0.0)
        self.loss_count += finite.float()
        self.diverged_at.copy_(torch.where(~finite & (self.diverged_at < 0), self.step_count, self.diverged_at))
        if o.grad_clip > 0:
            norm = grad.norm(dim=1, keepdim=True)
            grad = grad * (o.grad_clip / (norm + 1e-6)).clamp(max=1.0)
        b1, b2 = o.betas
        self.m.lerp_(grad, 1 - b1)
        self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        t = (self.step_count + 1).float()
        lr = self.lr_now()[:, None] * self.lr_mult            # [E, P]
        if o.weight_decay > 0:
            self.weights.mul_(1 - lr * (o.weight_decay * self.wd_mult))
        denom = (self.v / (1 - b2 ** t)).sqrt_().add_(o.eps)
        self.weights.addcdiv_(self.m * (lr / (1 - b1 ** t)), denom, value=-1.0)
        self.step_count += 1

    # -- state: what a checkpoint holds and a CUDA graph's warmup must restore -------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {"flat": self.flat, "m": self.m, "v": self.v, "step_count": self.step_count,
                "loss_sum": self.loss_sum, "loss_count": self.loss_count, "diverged_at": self.diverged_at}

    @torch.no_grad()
    def load_state_tensors(self, state: dict[str, torch.Tensor]) -> None:
        for name, tensor in self.state_tensors().items():
            tensor.copy_(state[name])

    def capture(self, warmup_steps: int = 3) -> None:
        """Record step() in a CUDA graph. The warmup steps that capturing needs (on a side
        stream, as torch.cuda.graphs asks) are undone, so training starts where it stood."""
        assert self.device.type == "cuda", "CUDA graphs need --device cuda; use the eager path on the CPU"
        saved = {k: t.detach().clone() for k, t in self.state_tensors().items()}
        self.graph = capture_cuda_graph(self.step, warmup_steps)
        self.load_state_tensors(saved)

    def run(self, n: int) -> None:
        """n training steps: graph replays when captured, eager steps otherwise."""
        for _ in range(n):
            if self.graph is not None:
                self.graph.replay()
            else:
                self.step()

    def read_train_loss(self) -> list[float | None]:
        """Mean train loss per member since the last read (None: no finite step), then reset (syncs)."""
        means = (self.loss_sum / self.loss_count).tolist()
        counts = self.loss_count.tolist()
        with torch.no_grad():
            self.loss_sum.zero_()
            self.loss_count.zero_()
        return [mean if count > 0 and math.isfinite(mean) else None for mean, count in zip(means, counts)]

    @torch.no_grad()
    def evaluate(self, batch, chunk: int) -> torch.Tensor:
        """[E, K] loss per position on one shared batch (tokens [1, N, T, .]), in chunks of sequences."""
        total = None
        N = batch.tokens.shape[1]
        for start in range(0, N, chunk):
            tokens = batch.tokens[:, start:start + chunk].expand(self.size, -1, -1, -1)
            out = ensemble_forward(self.params(), tokens, self.config, self.mults)
            err = self.task.predictions(out) - batch.y[:, start:start + chunk]
            part = (err.square() if self.task.loss == "mse" else err.abs()).sum(dim=1)
            total = part if total is None else total + part
        return total / N
