"""Two ops of the ensemble forward written for GPU speed at the paper's sizes (E members, each
[N = B*T, width] activations with width ~64), computing what the plain torch ops compute.

`linear`: x [E, N, in] @ w[e]^T (+ b[e]) with a backward whose weight gradient splits the
token dimension. The plain bmm's backward computes dW[e] = g[e]^T x[e] as E products of a
small [out, in] output over K = N = 8192: cuBLAS gives them ~32 thread blocks and no split-K,
so most of an H100 idles (it was 40 % of the step at E=8). Here dW is E*S products over N/S
tokens each, summed over S afterwards: E*S times the blocks, one extra small reduction.

`causal_attention`: softmax(q k^T * scale + causal mask) v read straight from the fused qkv
activations [S, T, 3*width] and written as [S, T, width], the layout the output projection
reads. On CUDA (with Triton) one fused kernel per direction: a program holds one sequence's
head, the whole [T, T] score tile stays in registers (T <= 128), the backward recomputes it;
no scores, permutes or copies go through memory, and fp32 has no flash kernel in torch.
Elsewhere (the CPU, or a head dim Triton's dot cannot take) three batched kernels
(baddbmm carries the mask and scale, softmax, bmm); measurements in docs/icl.md.
"""
from __future__ import annotations

import torch

try:  # Triton comes with CUDA builds of torch; the CPU path needs none
    import triton
    import triton.language as tl
except ImportError:
    triton = None

DW_TOKENS_PER_SPLIT = 256  # tokens per weight-gradient product: enough blocks at E=1, K long enough to amortize
MAX_FUSED_T = 128  # the fused attention keeps one [T, T] score tile in registers
ATTENTION_WARPS = 2  # per program (one sequence and head); a [32, 32] tile is 16 floats a thread at 2 warps


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


def _explicit_attention(qkv: torch.Tensor, heads: int, scale: float) -> torch.Tensor:
    S, T, W3 = qkv.shape
    W, d = W3 // 3, W3 // 3 // heads
    q, k, v = qkv.view(S, T, 3, heads, d).permute(2, 0, 3, 1, 4).reshape(3, S * heads, T, d)
    mask = torch.ones(T, T, dtype=torch.bool, device=qkv.device).triu(1)
    bias = torch.zeros(T, T, dtype=qkv.dtype, device=qkv.device).masked_fill(mask, float("-inf"))
    scores = torch.baddbmm(bias, q, k.transpose(1, 2), alpha=scale)
    o = torch.bmm(scores.softmax(dim=-1), v)
    return o.view(S, heads, T, d).transpose(1, 2).reshape(S, T, W)


def causal_attention(qkv: torch.Tensor, heads: int, scale: float) -> torch.Tensor:
    """qkv [S, T, 3*width] (q, k, v each heads x head_dim) -> [S, T, width]: causal softmax
    attention per sequence and head, heads concatenated."""
    S, T, W3 = qkv.shape
    assert W3 % (3 * heads) == 0, f"qkv width {W3} is not 3 x heads ({heads}) x head_dim"
    d = W3 // 3 // heads
    fused = (qkv.is_cuda and triton is not None and qkv.dtype == torch.float32
             and d >= 16 and d & (d - 1) == 0 and T <= MAX_FUSED_T)
    return _fused_attention(qkv, heads, scale) if fused else _explicit_attention(qkv, heads, scale)


if triton is not None:
    @triton.jit
    def _load_qkv(QKV, T: tl.constexpr, BT: tl.constexpr, H: tl.constexpr, W: tl.constexpr, D: tl.constexpr):
        """This program's sequence and head: its q, k, v tiles [BT, D] (rows t >= T zero), the
        rows and columns of its [T, W] slice of the outputs, its positions t and their mask."""
        n, h = tl.program_id(0) // H, tl.program_id(0) % H
        t = tl.arange(0, BT)
        tmask = t < T
        rows = n * T + t
        cols = h * D + tl.arange(0, D)
        at = QKV + rows[:, None] * (3 * W) + cols[None, :]
        q = tl.load(at, mask=tmask[:, None], other=0.0)
        k = tl.load(at + W, mask=tmask[:, None], other=0.0)
        v = tl.load(at + 2 * W, mask=tmask[:, None], other=0.0)
        return q, k, v, rows, cols, t, tmask

    @triton.jit
    def _probs(q, k, t, scale, PREC: tl.constexpr):
        # padded rows (t >= T) see key 0 at least, so they stay finite; nothing reads them
        s = (tl.dot(q, tl.trans(k), input_precision=PREC) * scale).to(tl.float32)  # Inductor passes scale as fp64
        s = tl.where(t[:, None] >= t[None, :], s, float("-inf"))
        p = tl.exp(s - tl.max(s, 1)[:, None])
        return p / tl.sum(p, 1)[:, None]

    @triton.jit
    def _attention_fwd(QKV, O, scale, T: tl.constexpr, BT: tl.constexpr, H: tl.constexpr, D: tl.constexpr,
                       W: tl.constexpr, PREC: tl.constexpr):
        q, k, v, rows, cols, t, tmask = _load_qkv(QKV, T, BT, H, W, D)
        o = tl.dot(_probs(q, k, t, scale, PREC), v, input_precision=PREC)
        tl.store(O + rows[:, None] * W + cols[None, :], o, mask=tmask[:, None])

    @triton.jit
    def _attention_bwd(QKV, DO, DQKV, scale, T: tl.constexpr, BT: tl.constexpr, H: tl.constexpr, D: tl.constexpr,
                       W: tl.constexpr, PREC: tl.constexpr):
        q, k, v, rows, cols, t, tmask = _load_qkv(QKV, T, BT, H, W, D)
        do = tl.load(DO + rows[:, None] * W + cols[None, :], mask=tmask[:, None], other=0.0)
        p = _probs(q, k, t, scale, PREC)
        dv = tl.dot(tl.trans(p), do, input_precision=PREC)
        dp = tl.dot(do, tl.trans(v), input_precision=PREC)
        ds = (p * (dp - tl.sum(p * dp, 1)[:, None]) * scale).to(tl.float32)  # softmax backward; rowsum(p dp) = rowsum(do o)
        dq = tl.dot(ds, k, input_precision=PREC)
        dk = tl.dot(tl.trans(ds), q, input_precision=PREC)
        at = DQKV + rows[:, None] * (3 * W) + cols[None, :]
        tl.store(at, dq, mask=tmask[:, None])
        tl.store(at + W, dk, mask=tmask[:, None])
        tl.store(at + 2 * W, dv, mask=tmask[:, None])

    def _launch_shape(qkv, heads):
        S, T, W3 = qkv.shape
        # the dots follow torch's TF32 switch for matmuls, as cuBLAS does for the linears
        precision = "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"
        return (S * heads,), dict(T=T, BT=max(16, triton.next_power_of_2(T)), H=heads, D=W3 // 3 // heads, W=W3 // 3,
                                  PREC=precision, num_warps=ATTENTION_WARPS)

    @torch.library.triton_op("icl::causal_attention", mutates_args={})
    def _fused_attention(qkv: torch.Tensor, heads: int, scale: float) -> torch.Tensor:
        qkv = qkv.contiguous()
        S, T, W3 = qkv.shape
        out = qkv.new_empty(S, T, W3 // 3)
        grid, meta = _launch_shape(qkv, heads)
        torch.library.wrap_triton(_attention_fwd)[grid](qkv, out, scale, **meta)
        return out

    @torch.library.triton_op("icl::causal_attention_backward", mutates_args={})
    def _fused_attention_backward(qkv: torch.Tensor, grad: torch.Tensor, heads: int, scale: float) -> torch.Tensor:
        qkv, grad = qkv.contiguous(), grad.contiguous()
        dqkv = torch.empty_like(qkv)
        grid, meta = _launch_shape(qkv, heads)
        torch.library.wrap_triton(_attention_bwd)[grid](qkv, grad, dqkv, scale, **meta)
        return dqkv

    def _setup_context(ctx, inputs, output):
        qkv, ctx.heads, ctx.scale = inputs
        ctx.save_for_backward(qkv)

    def _backward(ctx, grad):
        (qkv,) = ctx.saved_tensors
        return _fused_attention_backward(qkv, grad, ctx.heads, ctx.scale), None, None

    _fused_attention.register_autograd(_backward, setup_context=_setup_context)
