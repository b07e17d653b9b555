"""The CUDA fast path and memory fitting: FlexAttention with the position bias computed
in-kernel, torch.compile (a static graph per shape, or one dynamic graph), and how many tokens one
forward/backward chunk may hold (measured on CUDA, estimated on CPU). The eager SDPA path in
main.py stays the reference; tests/test_gpu.py compares the two, outputs and gradients.
"""
from __future__ import annotations

import functools
import gc
import os

# Expandable segments: the caching allocator grows segments instead of carving fixed blocks,
# so memory freed at one sequence length fits the next one's shapes (without it an eager run
# capped at 38 GB ran out of memory on the first step at length 256, fragmented, not full).
# Read when CUDA first allocates, after every import; a value the user set wins.
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

try:  # the fast attention path (CUDA, compiled); absent before torch 2.5
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
except ImportError:
    create_block_mask = flex_attention = None

# ----------------------------------------------------------------------------------------
# Attention (FlexAttention)
# ----------------------------------------------------------------------------------------
# SDPA has no fused kernel for a float mask that needs a gradient: it falls back to the
# memory-efficient kernel, which reads a T x T mask per layer and writes its T x T gradient.
# FlexAttention generates one Triton kernel (forward and backward) from a score_mod that
# adds the bias in registers, and its block mask skips the blocks above the diagonal, half
# the work at T = 1024. Its backward needs CUDA and its kernels need torch.compile, so this
# path is taken only by compiled CUDA runs; the SDPA path stays the reference
# (tests/test_gpu.py compares the two, outputs and gradients).

# Value heads: the single head's 384-wide value is split into heads that share the query and
# key. Every head computes the same softmax, so concatenating them is the single-head output;
# the kernel's accumulator shrinks from 512 (384 rounded up) to 128 columns per program, at
# the cost of recomputing q.k^T per head. Measured on an H100 at T = 1024 (bench.py
# --value-heads, docs/performance.md): 3 heads 34.9 ms per step, 6 heads 37.0, and 1 head
# does not compile (its kernel needs twice the shared memory the chip has); at width 768,
# 3 heads of 256 do not compile either. So: the fewest heads of at most 128 columns each.
MAX_FLEX_HEAD_WIDTH = 128


def flex_value_heads(value_width: int) -> int:
    return next(h for h in range(1, value_width + 1)
                if value_width % h == 0 and value_width // h <= MAX_FLEX_HEAD_WIDTH)


def _causal(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


@functools.lru_cache(maxsize=None)
def causal_block_mask(seq_len: int, device: str = "cuda"):
    """FlexAttention's block-sparse causal mask for one sequence length (built once)."""
    return create_block_mask(_causal, None, None, seq_len, seq_len, device=device)


def block_masks(args):
    """seq_len -> the block mask that GPT.forward takes: FlexAttention's causal mask on the
    fast path (compiled, CUDA), else None (SDPA with a materialised mask)."""
    if args.compile and args.device == "cuda" and flex_attention is not None:
        return functools.partial(causal_block_mask, device=args.device)
    return lambda seq_len: None


def flex_position_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            slope: torch.Tensor, scale: float, block_mask,
                            value_heads: int | None = None) -> torch.Tensor:
    """softmax(scale * q.k^T + slope * (j - i), causal) @ v for (batch, seq, dim) inputs.

    The slope enters the score_mod detached: FlexAttention differentiates a captured scalar
    with one atomic add per score, all into one address, which serialises. Its gradient,
    sum_ij dS_ij * (j - i), comes instead from the kernel's dQ through three extra q/k
    channels. The query's channels are (slope - slope.detach()) * (1, 1, -i) / scale, zero
    in value (the forward is unchanged) but carrying the slope's gradient; the key's are
    (32 * (j // 32), j % 32, 1), exact in bf16. The kernel's dQ_i = scale * sum_j dS_ij k_j
    then hands autograd sum_j dS_ij * j and -i * sum_j dS_ij for every row i, summed in
    fp32 from the same bf16 dS values, so that the large j and i terms cancel before any
    rounding. (Taking sum_j dS_ij = 0 for granted and using dK with positions alone leaves
    bf16 rounding of dS multiplied by absolute positions: tens of percent off at T = 1024.)
    The q/k width is zero-padded to a power of two (48 + 3 -> 64), the kernel's fast case."""
    batch, seq_len, qk_dim = query.shape
    heads = value_heads or flex_value_heads(value.shape[-1])
    padded = 1 << (qk_dim + 2).bit_length()  # the next power of two above qk_dim + 3
    fixed_slope = slope.detach()
    delta = (slope - fixed_slope) / scale  # zero, with the slope's gradient
    positions = torch.arange(seq_len, device=query.device, dtype=torch.float32)
    query_channels = torch.stack([delta.expand(seq_len), delta.expand(seq_len), -delta * positions], dim=-1)
    key_channels = torch.stack([positions.div(32, rounding_mode="floor") * 32, positions.remainder(32),
                                torch.ones_like(positions)], dim=-1)
    pad = (0, padded - qk_dim - 3)
    q = F.pad(torch.cat([query, query_channels.to(query.dtype).expand(batch, -1, -1)], dim=-1), pad)
    k = F.pad(torch.cat([key, key_channels.to(key.dtype).expand(batch, -1, -1)], dim=-1), pad)
    q = q[:, None].expand(batch, heads, seq_len, padded)
    k = k[:, None].expand(batch, heads, seq_len, padded)
    v = value.unflatten(-1, (heads, -1)).transpose(1, 2)

    def score_mod(score, b, h, q_idx, kv_idx):
        return score + fixed_slope * (kv_idx - q_idx)

    out = flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale)
    return out.transpose(1, 2).flatten(2)


# ----------------------------------------------------------------------------------------
# Compilation
# ----------------------------------------------------------------------------------------

def _room_for_every_shape() -> None:
    """Room in dynamo's cache for every graph a run compiles: six sequence lengths, an eval
    shape or two, a remainder chunk where memory cuts microbatches, each with and without
    autograd."""
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), 64))


def compile_fn(fn, dynamic: bool = False):
    """torch.compile, whole graph. Static (the default): one graph per input shape, each
    specialised to it. Dynamic (--compile-shapes dynamic): sizes are symbols, so one graph serves
    every sequence length and chunk size (dynamo still specialises a size of 1)."""
    _room_for_every_shape()
    return torch.compile(fn, dynamic=dynamic, fullgraph=True)


def compile_module(module: torch.nn.Module, dynamic: bool = False) -> None:
    """Compile a module's forward in place (its state_dict keys unchanged), as compile_fn does.
    Modules of one class share the compiled code: dynamo treats their parameters as graph
    inputs, so the second block of a model reuses the first one's graphs."""
    _room_for_every_shape()
    module.compile(dynamic=dynamic, fullgraph=True)


# ----------------------------------------------------------------------------------------
# A fused readout loss (measured slower than the compiled one: docs/performance.md)
# ----------------------------------------------------------------------------------------

def liger_head_loss(model: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """main.head_loss through liger-kernel's fused linear cross-entropy (--fused-loss liger): the
    readout matmul and the loss in chunks, the gradient computed in the forward, so the logits
    never exist whole; bf16 operands, fp32 accumulation, as autocast gives head_loss."""
    from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=hidden.is_cuda):
        x = model.norm(hidden)
        if model.readout_mult != 1.0:
            x = x * model.readout_mult
    return liger_fused_linear_cross_entropy(x.flatten(0, 1).to(torch.bfloat16),
                                            model.readout.weight.to(torch.bfloat16), targets.flatten())


# ----------------------------------------------------------------------------------------
# Memory
# ----------------------------------------------------------------------------------------

def standin_batch(batch_size: int, seq_len: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Made-up (inputs, targets) with the sampler's layout: slices of (batch, seq_len + 1)
    windows, so a graph compiled on them (static shapes guard on strides) is the one that
    training's batches use."""
    windows = (torch.arange(batch_size * (seq_len + 1), device=device) * 7919 % 50257).view(batch_size, -1)
    return windows[:, :-1], windows[:, 1:]


def cap_gpu_memory(args) -> None:
    """--gpu-memory-fraction: runs sharing one GPU each take their share of it. The caching
    allocator then raises OutOfMemoryError at this share, which the memory probe and the
    training step handle (halving their chunks), and memory_chunk_tokens sizes chunks to it."""
    if args.device == "cuda" and args.gpu_memory_fraction < 1:
        torch.cuda.set_per_process_memory_fraction(args.gpu_memory_fraction)


def memory_chunk_tokens(model: torch.nn.Module, args, loss_fn, block_mask_for=None,
                        probe_tokens: int = 8192) -> int:
    """How many tokens one forward/backward chunk of loss_fn(model, inputs, targets,
    block_mask) may hold. On CUDA: the memory this process may still take (free device
    memory, capped by torch.cuda's per-process memory fraction), less the model and
    optimizer state, over the peak bytes per token of a measured probe at
    the final sequence length. The probe runs the step's own loss function: compiled, it
    keeps far less per token (no fp32 logits), and the trainer probes at the step's own shape
    so that the graph compiled here is one that training uses; a probe that does not fit is
    halved. On CPU: half the available RAM over an estimate of the bytes per token (fp32
    logits, their gradient and the softmax dominate)."""
    if args.device == "cuda":
        seq_len = args.max_seq_len
        block_mask = block_mask_for(seq_len) if block_mask_for else None
        params = [p for p in model.parameters() if p.requires_grad]
        probe_seqs = max(1, probe_tokens // seq_len)
        while True:
            x, y = standin_batch(probe_seqs, seq_len, args.device)
            gc.collect()  # garbage freed during the probe would hide its peak
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            try:  # autograd.grad: the probe leaves no .grad behind
                torch.autograd.grad(loss_fn(model, x, y, block_mask), params)
                break
            except torch.cuda.OutOfMemoryError:
                if probe_seqs == 1:
                    raise
                probe_seqs //= 2
                torch.cuda.empty_cache()
        peak = torch.cuda.max_memory_allocated() - before
        free, total = torch.cuda.mem_get_info()
        allocated = torch.cuda.memory_allocated()
        available = free + torch.cuda.memory_reserved() - allocated
        fraction = getattr(torch.cuda, "get_per_process_memory_fraction", lambda: 1.0)()
        available = min(available, fraction * total - allocated)
        # Keep room for AdamW's two moments and the gradients (3 fp32 copies of the weights).
        state_bytes = 3 * 4 * sum(p.numel() for p in params)
        usable = 0.85 * available - state_bytes
        return max(args.max_seq_len, int(usable / (peak / x.numel())))
    # Keep every logits buffer under glibc's largest mmap threshold (32 MiB), which we raise
    # to that maximum: buffers are then reused from the heap instead of being mapped and
    # page-faulted afresh for every chunk, which cost more than the matmuls on 2 cores.
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 30)   # M_TRIM_THRESHOLD: keep freed memory for the next chunk
    except OSError:
        pass
    available = 8 << 30
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        available = int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        pass
    cfg = model.cfg
    bytes_per_token = 4 * (3 * cfg.vocab_size + 12 * cfg.expand_dim * cfg.depth)
    logits_cap = (32 << 20) // (4 * cfg.vocab_size)
    return max(args.max_seq_len, min(logits_cap, int(0.5 * available / bytes_per_token)))

