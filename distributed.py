"""Data parallelism under torchrun (docs/ddp.md): joining the process group, this rank's
share of a batch, the one all-reduce per step, and agreeing on a stop.

`torchrun --nproc_per_node=N main.py ...` trains one run on N processes (NCCL, one GPU
each; gloo on CPU). Every rank draws the whole microbatch from the shared, identically
seeded sampler and trains on its own contiguous block of its sequences (shard); each
chunk's loss keeps its weight in the global batch, so the gradients summed over the ranks
are the one-process gradient. The sum is one all-reduce per optimizer step, after the last
backward (DDP with no_sync on every other backward), of the gradients and the loss sum
together: every rank then holds the same gradients, the same global train loss (decay,
divergence), the same gradient norm and dithering draw (the microbatch count), and takes
the same AdamW step. DDP's wrapper itself is not used: Dynamo cannot trace it inside the
fast path's fullgraph-compiled loss (an Unsupported error on DDP's logger), and without
it parameter names, the µP groups, the compiled graphs and the one-process path stay
exactly as they are. One process (no WORLD_SIZE > 1) never touches torch.distributed.
"""
from __future__ import annotations

import atexit
import datetime
import os

import torch
import torch.distributed as dist

from config import ConfigError

CONTROL_GROUP = None  # gloo, on the host: the stop flag and the data-loading turn


def world() -> tuple[int, int]:
    """(this process's rank, number of processes): (0, 1) unless torchrun started several."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(args) -> None:
    """Join torchrun's process group when it started several processes (WORLD_SIZE > 1):
    NCCL with each rank on cuda:LOCAL_RANK (set as the current device, so "cuda" means the
    rank's own GPU everywhere), or gloo on CPU. A single process does nothing here."""
    global CONTROL_GROUP
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or world()[1] > 1:
        return
    sequences = args.batch_tokens // args.max_seq_len
    if sequences < size:
        raise ConfigError(f"--batch-tokens {args.batch_tokens} holds {sequences} sequence(s) of "
                          f"--max-seq-len {args.max_seq_len}, fewer than the {size} processes: raise it")
    if not (dist.is_available() and (args.device == "cuda" or dist.is_gloo_available())):
        raise ConfigError(f"WORLD_SIZE={size} but this torch cannot run torch.distributed on "
                          f"{args.device}: run one process")
    if args.device == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank))
    else:
        dist.init_process_group("gloo")
    atexit.register(dist.destroy_process_group)
    # Long timeout: the data-loading barrier waits while local rank 0 tokenizes a corpus.
    CONTROL_GROUP = dist.new_group(backend="gloo", timeout=datetime.timedelta(hours=3))


def local_rank_zero_first(load, *args):
    """load(*args), local rank 0 first: it fills a cache (the token cache, a download) once,
    and the other ranks then read the cache."""
    if world()[1] == 1:
        return load(*args)
    first = int(os.environ.get("LOCAL_RANK", "0")) == 0
    if not first:
        dist.barrier(group=CONTROL_GROUP)
    try:
        return load(*args)
    finally:
        if first:
            dist.barrier(group=CONTROL_GROUP)


def shard(rows: torch.Tensor) -> torch.Tensor:
    """This rank's contiguous block of the rows (block sizes differ by at most one, the
    larger ones first); all of them in a single process."""
    rank, size = world()
    return rows.tensor_split(size)[rank] if size > 1 else rows


def shard_size(rows: int) -> int:
    """len(shard(tensor with this many rows))."""
    rank, size = world()
    return rows // size + (rank < rows % size)


def all_reduce_sum_(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Sum the tensors over the ranks, in place: one all-reduce per dtype, of a flat copy.
    Every rank receives the same bytes, so all hold identical sums."""
    by_dtype: dict = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for group in by_dtype.values():
        flat = torch.cat([t.reshape(-1) for t in group])
        dist.all_reduce(flat)
        for t, part in zip(group, flat.split([t.numel() for t in group])):
            t.copy_(part.view_as(t))
    return tensors


def agree_on_stop(stop_signal: list) -> None:
    """After every step: when any rank got SIGINT/SIGTERM, all stop at this step boundary
    with the same signal (the largest number). On the host through gloo, so no device sync."""
    if world()[1] == 1:
        return
    flag = torch.tensor([stop_signal[0] if stop_signal else 0])
    dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=CONTROL_GROUP)
    if flag.item():
        stop_signal[:] = [int(flag.item())]


def broadcast_from_rank_zero_(tensors: list[torch.Tensor]) -> None:
    """Overwrite the tensors with rank 0's, in place (under torchrun)."""
    for t in tensors:
        dist.broadcast(t, 0)
