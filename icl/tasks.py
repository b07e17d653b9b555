"""The two regression tasks, their token layout, and a counter-based random number source.

`garg` (timaeus-research/icl, the developmental-landscape setting): x ~ N(0, I_D), a task vector
w ~ N(0, I_D) drawn fresh per sequence (num_tasks None) or uniformly from M fixed tasks,
y = w.x + N(0, noise_var). Tokens have width D+1: [0, x] and [y, 0..0] interleaved, T = 2K; the
model's prediction of y_k is coordinate 0 of its output at the token of x_k; loss MSE.

`affine` (luis-mueller/icl-linear-regression-mup): y = a x + b with a, b ~ U[-3, 3] per sequence,
x ~ U[-5, 5], no noise, one scalar per token: x_0, y_0, ..., x_{K-1} (the last y is only a
target, so T = 2K - 1); predictions at the x tokens; loss L1 (mean absolute error).

Random numbers come from a hash of (seed, step, stream, element index), not from a
torch.Generator: a batch is a pure function of the member's seed and the step counter, a
device tensor. So sampling runs on the device inside a CUDA graph with no generator state to
register, a resumed run draws exactly the batches it would have drawn, CPU and GPU draw the
same numbers, and an ensemble member sees the data a single run with its seed sees.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

MASK32 = 0xFFFFFFFF
# Multipliers are written as their int32 (two's complement) values: the product's low 32 bits
# are the same, and Inductor, which may compute an arange's product in int32 index arithmetic,
# rejects literals outside int32 ("Scalar 2654435769 is out of range for type int32").
GOLDEN32 = 0x9E3779B9 - (1 << 32)  # 2^32 / golden ratio: spreads small integers (streams, seeds) over 32 bits

# Streams: independent random sequences for the different uses of one (seed, step).
STREAM_TRAIN, STREAM_TASK_SET, STREAM_EVAL = 1, 2, 3
PICK_STREAM_OFFSET = 1000  # stream + this: which of the M fixed tasks each sequence uses


def mix32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 (C. Wellons' integer hash, a full-avalanche bijection of 32-bit words) on int64
    lanes holding 32-bit values. int64 products wrap modulo 2^64, which keeps their low 32 bits exact."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & MASK32
    x = x ^ (x >> 15)
    x = (x * (0x846CA68B - (1 << 32))) & MASK32
    return x ^ (x >> 16)


def uniform(seeds: torch.Tensor, step: torch.Tensor | int, stream: int, n: int) -> torch.Tensor:
    """[len(seeds), n] float32 uniforms in (0, 1), a function of (seed, step, stream, index) alone.

    seeds: int64 [E]; step: an int64 scalar tensor (on the device, so a CUDA graph replays it)
    or an int. The index is hashed before the step is mixed in, so (step, index) pairs never
    share a hash input by a shift of one another."""
    key = mix32((seeds.to(torch.int64) * GOLDEN32 + stream) & MASK32)
    key = mix32(key ^ (torch.as_tensor(step, device=seeds.device, dtype=torch.int64) & MASK32))
    index = mix32(torch.arange(n, device=seeds.device, dtype=torch.int64) * GOLDEN32 & MASK32)
    bits = mix32(mix32(key[:, None] ^ index[None, :]))
    # 24 bits fill float32's mantissa; +0.5 keeps 0 and 1 out (Box-Muller takes a log)
    return ((bits >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))


def normal(seeds: torch.Tensor, step: torch.Tensor | int, stream: int, n: int) -> torch.Tensor:
    """[len(seeds), n] standard normals by Box-Muller on `uniform` (both the cosine and sine halves)."""
    half = (n + 1) // 2
    u = uniform(seeds, step, stream, 2 * half)
    radius = torch.sqrt(-2.0 * torch.log(u[:, :half]))
    angle = (2 * math.pi) * u[:, half:]
    return torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)[:, :n]


@dataclass
class Batch:
    """One batch per ensemble member: inputs x [E, B, K, D], targets y [E, B, K], and the tokens
    the model reads, [E, B, T, token_dim]. For garg, w [E, B, D] is the task vector."""
    x: torch.Tensor
    y: torch.Tensor
    tokens: torch.Tensor
    w: torch.Tensor | None = None


class GargTask:
    """Garg-style D-dimensional linear regression with Gaussian noise (module docstring)."""

    name = "garg"
    loss = "mse"

    def __init__(self, dim: int = 4, points: int = 16, noise_var: float = 0.125,
                 num_tasks: int | None = None, task_seed: int = 0, device="cpu"):
        assert dim >= 1 and points >= 1, f"need dim >= 1 and points >= 1, got dim={dim}, points={points}"
        assert noise_var >= 0, f"noise variance must be >= 0, got {noise_var}"
        assert num_tasks is None or num_tasks >= 1, f"--num-tasks must be >= 1 or inf, got {num_tasks}"
        self.dim, self.points, self.noise_var, self.num_tasks = dim, points, noise_var, num_tasks
        self.token_dim, self.seq_len = dim + 1, 2 * points
        # The M fixed tasks (finite M) are part of the data distribution, shared by every member.
        self.task_set = None if num_tasks is None else normal(
            torch.tensor([task_seed], device=device), 0, STREAM_TASK_SET, num_tasks * dim).view(num_tasks, dim)

    def sample(self, seeds: torch.Tensor, step, batch: int, stream: int = STREAM_TRAIN,
               gaussian_tasks: bool = False) -> Batch:
        """A fresh batch per member; gaussian_tasks draws w ~ N(0, I) even when M is finite
        (the "true" distribution timaeus also evaluates on)."""
        E, B, K, D = len(seeds), batch, self.points, self.dim
        z = normal(seeds, step, stream, B * (K * D + K + D))
        x = z[:, :B * K * D].view(E, B, K, D)
        noise = z[:, B * K * D:B * K * (D + 1)].view(E, B, K)
        if self.task_set is None or gaussian_tasks:
            w = z[:, B * K * (D + 1):].view(E, B, D)
        else:
            pick = uniform(seeds, step, stream + PICK_STREAM_OFFSET, B) * self.num_tasks
            w = self.task_set[pick.long().clamp_(max=self.num_tasks - 1)]
        y = torch.einsum("ebkd,ebd->ebk", x, w) + math.sqrt(self.noise_var) * noise
        return Batch(x=x, y=y, tokens=self.to_tokens(x, y), w=w)

    def to_tokens(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """[..., K, D], [..., K] -> [..., 2K, D+1]: [0, x_k] at 2k, [y_k, 0..0] at 2k+1."""
        *lead, K, D = x.shape
        tokens = x.new_zeros(*lead, K, 2, D + 1)
        tokens[..., 0, 1:] = x
        tokens[..., 1, 0] = y
        return tokens.view(*lead, 2 * K, D + 1)

    def from_tokens(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return tokens[..., 0::2, 1:], tokens[..., 1::2, 0]

    def predictions(self, outputs: torch.Tensor) -> torch.Tensor:
        """The model's outputs [..., T, out] -> its predictions of y_k, [..., K]."""
        return outputs[..., 0::2, 0]


class AffineTask:
    """luis-mueller's scalar affine regression, y = a x + b (module docstring)."""

    name = "affine"
    loss = "l1"
    noise_var = 0.0
    num_tasks = None
    dim = 1

    def __init__(self, points: int = 32, param_range: float = 3.0, x_range: float = 5.0, device="cpu"):
        assert points >= 1, f"need points >= 1, got {points}"
        self.points, self.param_range, self.x_range = points, param_range, x_range
        self.token_dim, self.seq_len = 1, 2 * points - 1

    def sample(self, seeds: torch.Tensor, step, batch: int, stream: int = STREAM_TRAIN) -> Batch:
        E, B, K = len(seeds), batch, self.points
        u = uniform(seeds, step, stream, B * (K + 2))
        x = ((2 * u[:, :B * K] - 1) * self.x_range).view(E, B, K, 1)
        a, b = ((2 * u[:, B * K:] - 1) * self.param_range).view(E, 2, B, 1).unbind(1)
        y = a * x[..., 0] + b
        return Batch(x=x, y=y, tokens=self.to_tokens(x, y))

    def to_tokens(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """[..., K, 1], [..., K] -> [..., 2K-1, 1]: x_0, y_0, ..., x_{K-1}."""
        pairs = torch.stack([x[..., 0], y], dim=-1).flatten(-2)
        return pairs[..., :-1, None]

    def from_tokens(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inverse of to_tokens up to the last y, which the tokens do not hold (returned as the
        K-1 known ys)."""
        return tokens[..., 0::2, :], tokens[..., 1::2, 0]

    def predictions(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs[..., 0::2, 0]


TASKS = ("garg", "affine")


def make_task(name: str, *, dim: int, points: int, noise_var: float, num_tasks: int | None,
              task_seed: int, device) -> GargTask | AffineTask:
    """The task a run trains on (dim, noise_var, num_tasks and task_seed are garg's)."""
    if name == "garg":
        return GargTask(dim=dim, points=points, noise_var=noise_var, num_tasks=num_tasks,
                        task_seed=task_seed, device=device)
    assert name == "affine", f"unknown task {name!r}; choose from {TASKS}"
    return AffineTask(points=points)


def per_position_loss(pred: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """[..., B, K] predictions and targets -> [..., K], the loss at each context position."""
    err = pred - y
    return (err.square() if kind == "mse" else err.abs()).mean(dim=-2)
