"""Two ops of the ensemble forward written for GPU speed at the paper's sizes (E members, each
[N = B*T, width] activations with width ~64), computing what the plain torch ops compute.

`linear`: x [E, N, in] @ w[e]^T (+ b[e]) with a backward whose weight gradient splits the
token dimension. The plain bmm's backward computes dW[e] = g[e]^T x[e] as E products of a
small [out, in] output over K = N = 8192: cuBLAS gives them ~32 thread blocks and no split-K,
so most of an H100 idles (it was 40 % of the step at E=8). Here dW is E*S products over N/S
tokens each, summed over S afterwards: E*S times the blocks, one extra small reduction.

`causal_attention`: softmax(q k^T * scale + causal mask) v as three batched kernels (the mask
and scale ride in baddbmm). At T = 32 and head dim 16 the [T, T] scores are as small as q
itself, and fp32 has no flash kernel; this beat SDPA's memory-efficient kernel (docs/icl.md).
"""
from __future__ import annotations

import torch

DW_TOKENS_PER_SPLIT = 256  # tokens per weight-gradient product: enough blocks at E=1, K long enough to amortize


def _splits(n: int) -> int:
    """The number of chunks the weight gradient splits n tokens into (a divisor of n)."""
    s = max(1, n // DW_TOKENS_PER_SPLIT)
    while n % s:
        s -= 1
    return s


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        wt = w.transpose(1, 2)
        return torch.bmm(x, wt) if b is None else torch.baddbmm(b[:, None, :], x, wt)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        E, N, fan_in = x.shape
        fan_out = w.shape[1]
        gx = torch.bmm(g, w) if ctx.needs_input_grad[0] else None
        gw = gb = None
        if ctx.needs_input_grad[1]:
            S = _splits(N)
            gw = torch.bmm(g.reshape(E * S, N // S, fan_out).transpose(1, 2),
                           x.reshape(E * S, N // S, fan_in)).view(E, S, fan_out, fan_in).sum(1)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g.sum(1)
        return gx, gw, gb


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """x [E, N, in], w [E, out, in], b [E, out] or None -> [E, N, out]."""
    return _Linear.apply(x, w, b)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """q, k, v [S, T, d] (S sequences x heads) -> [S, T, d], causal softmax attention."""
    T = q.shape[1]
    mask = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
    bias = torch.zeros(T, T, dtype=q.dtype, device=q.device).masked_fill(mask, float("-inf"))
    scores = torch.baddbmm(bias, q, k.transpose(1, 2), alpha=scale)
    return torch.bmm(scores.softmax(dim=-1), v)
