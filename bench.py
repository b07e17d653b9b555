"""Training throughput of main.py's own step, per sequence length, eager and optimised.

For each mode and each sequence length, bench.py builds main.py's Trainer on random tokens
(never zeros: they can run faster than real data), pins the sequence length and one
microbatch per step, compiles (timed apart), warms up, then times a fixed number of whole
optimizer steps (sampling, forward, backward, weight decay, AdamW, the grad-norm read every
5 steps) between two synchronisations. It prints a table and writes JSON with tokens/s,
ms/step, achieved TFLOP/s, the fraction of the bf16 matmul peak it measures itself, peak
memory, and the device, torch version and git commit.

FLOPs per token (the hlb-gpt/PaLM convention): 6 x the matmul parameters (expand, project,
readout; the embedding is a lookup) + 6 x depth x seq_len x (qk_dim + width) for attention's
two products, counted in full although causal attention needs half of them.

Modes: eager (the plain path: no compile, SDPA with a float mask), compiled (the default on
CUDA: torch.compile + FlexAttention), compiled-sdpa (torch.compile, SDPA with a mask).

    python bench.py                                   # the default 46M model on CUDA
    python bench.py --modes compiled --value-heads 1 3 6 --seq-lens 1024
    python bench.py --device cpu --width 64 --depth 2 --max-seq-len 64 --batch-tokens 512 \\
        --seq-lens 32,64 --steps 2 --modes eager      # a CPU smoke run (tests/test_bench.py)

Every flag bench.py does not know goes to main.py's parser (model size, --batch-tokens, ...).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import fastpath
import main
import runlog
from config import REPO

MODES = ("eager", "compiled", "compiled-sdpa")
FLOOR_SECONDS_PER_100M = 25.0  # the physical floor quoted for the default model (docs/performance.md)
AUTO_VALUE_HEADS = fastpath.flex_value_heads  # the trainer's rule; --value-heads overrides it


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--seq-lens", default="128,256,512,1024", help="comma-separated lengths")
    p.add_argument("--modes", default=None, help=f"comma-separated, of {', '.join(MODES)} "
                   "(default: eager,compiled on CUDA, eager on CPU)")
    p.add_argument("--steps", type=int, default=20, help="timed optimizer steps per length")
    p.add_argument("--warmup-steps", type=int, default=3, help="untimed steps after compiling")
    p.add_argument("--value-heads", type=int, nargs="*", default=[],
                   help="compiled modes: time each FlexAttention value-head count")
    p.add_argument("--sync-every-step", action="store_true",
                   help="also time each mode with a host sync after every step (the old loop)")
    p.add_argument("--json", type=Path, default=Path("bench.json"), help="where to write results")
    p.add_argument("--git-commit", default=None,
                   help="record this commit (default: git rev-parse HEAD, where .git exists)")
    p.add_argument("--profile", action="store_true",
                   help="after timing, profile 3 steps at the last length; print the top kernels")
    p.add_argument("--data-tokens", type=int, default=1 << 22, help="random training tokens")
    bench, rest = p.parse_known_args(argv)
    bench.seq_lens = [int(x) for x in bench.seq_lens.split(",") if x]
    bench.git_commit = bench.git_commit or runlog.git_commit(REPO)
    args = main.resolve(main.parse_args(rest + ["--quiet"]))
    bench.modes = (bench.modes.split(",") if bench.modes else
                   ["eager", "compiled"] if args.device == "cuda" else ["eager"])
    for mode in bench.modes:
        if mode not in MODES:
            p.error(f"unknown mode {mode!r}: use {', '.join(MODES)}")
    for seq_len in bench.seq_lens:
        if seq_len > args.max_seq_len:
            p.error(f"--seq-lens {seq_len} exceeds --max-seq-len {args.max_seq_len}")
    if bench.steps < 1 or bench.warmup_steps < 0:
        p.error("--steps must be 1 or more and --warmup-steps 0 or more")
    return bench, args


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: str) -> dict:
    """The dense matmul rate of this device: bf16 8192^3 on CUDA (random data), fp32 on CPU;
    the median of timed repeats after about a second of warm-up. (With three warm-up products
    the same H100 read 726 TFLOP/s once and 779-788 in four other runs; the longer warm-up is
    meant to let the clocks settle, not yet checked to remove that spread.)"""
    n, dtype, reps, warmup = (8192, torch.bfloat16, 20, 1.0) if device == "cuda" else (512, torch.float32, 5, 0.0)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    deadline = time.perf_counter() + warmup
    a @ b
    sync(device)
    while time.perf_counter() < deadline:
        a @ b
        sync(device)
    times = []
    for _ in range(reps):
        sync(device)
        started = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - started)
    seconds = statistics.median(times)
    return {"n": n, "dtype": str(dtype).replace("torch.", ""), "seconds": seconds,
            "tflops": 2 * n ** 3 / seconds / 1e12}


def model_flops_per_token(model: main.GPT, seq_len: int) -> float:
    cfg = model.cfg
    matmul = sum(p.numel() for name, p in model.named_parameters()
                 if p.dim() == 2 and name != "embedding.weight")
    return 6 * matmul + 6 * cfg.depth * seq_len * (cfg.qk_dim + cfg.width)


def random_data(tokens: int, valid_tokens: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"train": rng.integers(0, 50257, tokens, dtype=np.uint16),
            "valid": rng.integers(0, 50257, valid_tokens, dtype=np.uint16)}


def bench_mode(mode: str, bench, args, data, peak_tflops: float, value_heads=None,
               sync_every_step: bool = False) -> list[dict]:
    args = args.replace(compile=mode != "eager")
    fastpath.flex_value_heads = (lambda value_width: value_heads) if value_heads else AUTO_VALUE_HEADS
    torch.manual_seed(0)
    started = time.perf_counter()
    trainer = main.Trainer(args, data)  # compiled: the memory probe compiles the longest length
    init_seconds = time.perf_counter() - started
    if mode == "compiled-sdpa":
        trainer.block_mask_for = lambda seq_len: None
    # One microbatch per step, the sequence length pinned: the numbers are per shape.
    trainer.microbatches.count = 1
    trainer.microbatches.update = lambda step, grad_norm: None
    rows = []
    for seq_len in bench.seq_lens:
        trainer.args = args = args.replace(seq_len_start=seq_len, seq_len_double_every=1e30)
        started = time.perf_counter()
        trainer.compile_for(seq_len)
        sync(args.device)
        compile_seconds = time.perf_counter() - started
        for _ in range(bench.warmup_steps):
            trainer.launch_step()
        sync(args.device)
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        for _ in range(bench.steps):
            loss, _ = trainer.launch_step()
            if sync_every_step:
                loss.get()
                sync(args.device)
        sync(args.device)
        seconds = (time.perf_counter() - started) / bench.steps
        last_loss = loss.get()
        tokens = trainer.last["batch_size"] * seq_len
        flops = model_flops_per_token(trainer.model, seq_len)
        tflops = tokens / seconds * flops / 1e12
        row = {"mode": mode, "value_heads": (fastpath.flex_value_heads(trainer.model.cfg.width)
                                              if mode == "compiled" else None),
               "sync_every_step": sync_every_step, "seq_len": seq_len,
               "batch_size": trainer.last["batch_size"], "chunk_tokens": trainer.chunk_tokens,
               "tokens_per_step": tokens, "ms_per_step": 1e3 * seconds,
               "tokens_per_s": tokens / seconds, "model_flops_per_token": flops,
               "tflops": tflops, "fraction_of_peak": tflops / peak_tflops,
               "seconds_per_100M_tokens": 1e8 * seconds / tokens,
               "floor_fraction": FLOOR_SECONDS_PER_100M / (1e8 * seconds / tokens),
               "peak_memory_gb": (torch.cuda.max_memory_allocated() / 1e9
                                  if args.device == "cuda" else None),
               "compile_seconds": compile_seconds, "trainer_init_seconds": init_seconds,
               "final_train_loss": last_loss}
        rows.append(row)
        print(format_row(row), flush=True)
    if bench.profile and not sync_every_step:
        profile_steps(trainer, args.device)
    del trainer
    if args.device == "cuda":
        torch.cuda.empty_cache()
    return rows


def profile_steps(trainer, device: str, steps: int = 3, top: int = 25) -> None:
    """Device time per kernel over a few steps: where a step's milliseconds go."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            trainer.launch_step()
        sync(device)
    sort = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=top, max_name_column_width=90), flush=True)


HEADER = (f"{'mode':>14s} {'vh':>3s} {'sync':>4s} {'len':>5s} {'batch':>6s} {'ms/step':>8s} "
          f"{'tokens/s':>10s} {'TFLOP/s':>8s} {'%peak':>6s} {'s/100M':>7s} {'mem GB':>7s} {'compile s':>9s}")


def format_row(r: dict) -> str:
    mem = f"{r['peak_memory_gb']:7.1f}" if r["peak_memory_gb"] is not None else f"{'-':>7s}"
    return (f"{r['mode']:>14s} {str(r['value_heads'] or '-'):>3s} {'y' if r['sync_every_step'] else 'n':>4s} "
            f"{r['seq_len']:5d} {r['batch_size']:6d} {r['ms_per_step']:8.2f} {r['tokens_per_s']:10.0f} "
            f"{r['tflops']:8.3g} {100 * r['fraction_of_peak']:6.1f} {r['seconds_per_100M_tokens']:7.1f} "
            f"{mem} {r['compile_seconds']:9.1f}")


def run(argv=None) -> dict:
    bench, args = parse_args(argv)
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu"
    peak = matmul_peak(args.device)
    print(f"{device_name}, torch {torch.__version__}, commit {bench.git_commit}; measured "
          f"{peak['dtype']} matmul peak {peak['tflops']:.1f} TFLOP/s", flush=True)
    data = random_data(bench.data_tokens, 4 * args.max_seq_len + 2, args.seed)
    print(HEADER, flush=True)
    results = []
    for mode in bench.modes:
        variants = bench.value_heads if mode == "compiled" and bench.value_heads else [None]
        for heads in variants:
            results += bench_mode(mode, bench, args, data, peak["tflops"], heads)
            if bench.sync_every_step:
                results += bench_mode(mode, bench, args, data, peak["tflops"], heads, sync_every_step=True)
    model = main.GPT(main.model_config(args))
    report = {"device": device_name, "torch": torch.__version__, "python": platform.python_version(),
              "git_commit": bench.git_commit, "command": [sys.executable] + sys.argv,
              "model": {"width": args.width, "depth": args.depth, "qk_dim": args.qk_dim,
                        "batch_tokens": args.batch_tokens,
                        "params": sum(p.numel() for p in model.parameters())},
              "steps": bench.steps, "warmup_steps": bench.warmup_steps,
              "matmul_peak": peak, "results": results}
    runlog.write_json(bench.json, report)
    print(f"wrote {bench.json}")
    return report


if __name__ == "__main__":
    run()
