"""icl.fast_ops against the plain torch ops: the split weight gradient and the explicit attention."""
import torch
import torch.nn.functional as F

from icl import fast_ops


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


def test_causal_attention_matches_sdpa():
    torch.manual_seed(1)
    q, k, v = (torch.randn(6, 9, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    g = torch.randn(6, 9, 4, dtype=torch.float64)
    out = fast_ops.causal_attention(q, k, v, 0.3)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.3)
    torch.testing.assert_close(out, ref)
    for a, r in zip(torch.autograd.grad(out, (q, k, v), g), torch.autograd.grad(ref, (q, k, v), g)):
        torch.testing.assert_close(a, r)
