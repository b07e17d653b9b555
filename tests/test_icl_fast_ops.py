"""icl.fast_ops against the plain torch ops: the split weight gradient and the explicit attention,
and the fused attention's Triton kernels (on a GPU, or on the CPU through Triton's interpreter)."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from icl import fast_ops

REPO = Path(__file__).resolve().parents[1]


def test_linear_matches_bmm_forward_and_gradients():
    torch.manual_seed(0)
    E, N, fan_in, fan_out = 3, 1024, 7, 5  # N = 4 splits of 256 tokens
    assert fast_ops._splits(N) == 4
    x, w, b = (torch.randn(*s, dtype=torch.float64, requires_grad=True)
               for s in [(E, N, fan_in), (E, fan_out, fan_in), (E, fan_out)])
    g = torch.randn(E, N, fan_out, dtype=torch.float64)
    for bias in (None, b):
        out = fast_ops.linear(x, w, bias)
        ref = torch.bmm(x, w.transpose(1, 2)) + (0 if bias is None else bias[:, None, :])
        torch.testing.assert_close(out, ref)
        inputs = [x, w] + ([] if bias is None else [bias])
        got = torch.autograd.grad(out, inputs, g)
        want = torch.autograd.grad(ref, inputs, g)
        for a, r in zip(got, want):
            torch.testing.assert_close(a, r)


def test_splits_divide_the_tokens():
    for n in (1, 7, 256, 300, 8192, 8191):
        s = fast_ops._splits(n)
        assert n % s == 0 and 1 <= s <= max(1, n // fast_ops.DW_TOKENS_PER_SPLIT)


def _sdpa_reference(qkv, heads, scale):
    S, T, W3 = qkv.shape
    q, k, v = qkv.view(S, T, 3, heads, W3 // 3 // heads).permute(2, 0, 3, 1, 4)
    o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    return o.transpose(1, 2).reshape(S, T, W3 // 3)


def test_causal_attention_matches_sdpa():
    torch.manual_seed(1)
    qkv = torch.randn(5, 9, 3 * 2 * 4, dtype=torch.float64, requires_grad=True)  # 5 sequences, T=9, 2 heads of 4
    g = torch.randn(5, 9, 8, dtype=torch.float64)
    out = fast_ops.causal_attention(qkv, 2, 0.3)
    ref = _sdpa_reference(qkv, 2, 0.3)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(torch.autograd.grad(out, qkv, g)[0], torch.autograd.grad(ref, qkv, g)[0])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("T", [32, 31, 63])
def test_fused_attention_on_gpu_matches_float64(T):
    """The Triton kernels (fp32) against the explicit attention in float64, values and gradients."""
    torch.manual_seed(T)
    qkv = torch.randn(300, T, 3 * 64, device="cuda", requires_grad=True)  # 4 heads of 16
    g = torch.randn(300, T, 64, device="cuda")
    out = fast_ops.causal_attention(qkv, 4, 0.25)
    (grad,) = torch.autograd.grad(out, qkv, g)
    ref_in = qkv.detach().double().requires_grad_(True)
    ref = fast_ops._explicit_attention(ref_in, 4, 0.25)
    (ref_grad,) = torch.autograd.grad(ref, ref_in, g.double())
    for got, want in ((out, ref), (grad, ref_grad)):
        assert torch.isfinite(got).all()
        assert ((got.double() - want).norm() / want.norm()).item() < 1e-5


INTERPRETED_KERNELS = """
import torch
from icl import fast_ops
torch.manual_seed(0)
for T in (31, 32):  # a padded tile and a full one
    qkv = torch.randn(6, T, 3 * 64)  # 4 heads of 16
    g = torch.randn(6, T, 64)
    grid, meta = fast_ops._launch_shape(qkv, 4)
    out, dqkv = qkv.new_empty(6, T, 64), torch.empty_like(qkv)
    fast_ops._attention_fwd[grid](qkv, out, 0.25, **meta)
    fast_ops._attention_bwd[grid](qkv, g, dqkv, 0.25, **meta)
    ref_in = qkv.double().requires_grad_(True)
    ref = fast_ops._explicit_attention(ref_in, 4, 0.25)
    (ref_grad,) = torch.autograd.grad(ref, ref_in, g.double())
    for got, want in ((out, ref), (dqkv, ref_grad)):
        error = ((got.double() - want).norm() / want.norm()).item()
        assert error < 1e-5, (T, error)
print("ok")
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton (pip install triton)")
def test_fused_attention_kernels_match_float64_in_the_triton_interpreter():
    """The Triton kernels themselves, run on the CPU by Triton's interpreter (TRITON_INTERPRET=1,
    which must be set before the kernels are defined: a fresh process), against the explicit
    attention in float64. CPU torch wheels bring no Triton, so CI skips this; the GPU test above
    runs the compiled kernels."""
    done = subprocess.run([sys.executable, "-c", INTERPRETED_KERNELS], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "TRITON_INTERPRET": "1"})
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
