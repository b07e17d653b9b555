"""`python -m icl.bench`: training steps per second for one model and for ensembles, eager and
CUDA-graphed, on the CPU and (when there is one) the GPU. Prints a markdown table with the
device, the command and the commit; --json also writes the rows.

A step is the whole training step of every member (sample, forward, backward, Adam), so an
ensemble of E at s steps/s trains E x s model-steps per second. The default model is timaeus'
L2H4 (width 64, 2 layers, 4 heads, MLP 64, D=4, K=16) at batch 256; "500k steps" is the
time the paper's 500,000-step run takes at that rate (the issue's goal: 8 members in <= 10 min).

    python -m icl.bench                                  # CPU, and CUDA if present
    python -m icl.bench --devices cuda --sizes 1 8 32 --steps 300
    python -m icl.bench --devices cuda --sizes 1 8 32 --compile --tf32   # the fastest mode (docs/icl.md)
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

import runlog
from icl.ensemble import Ensemble, Member, Optim
from icl.model import ModelConfig
from icl.tasks import GargTask
from icl.train import REPO


def steps_per_second(device: str, size: int, graph: bool, compile: bool, steps: int, args) -> float:
    task = GargTask(dim=args.dim, points=args.points, device=device)
    config = ModelConfig(token_dim=task.token_dim, seq_len=task.seq_len, width=args.width, depth=args.depth,
                         heads=args.heads, mlp_ratio=args.mlp_ratio)
    members = [Member(seed=s, lr=1e-3 * (1 + s % 4), warmup=100) for s in range(size)]
    ensemble = Ensemble(task, config, members, Optim(steps=10 ** 6, batch=args.batch), param=args.param,
                        base_width=args.width, compile=compile, device=device)
    if graph:
        ensemble.capture()
    ensemble.run(args.warmup)  # first-call costs (allocator, kernels' autotuning)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    ensemble.run(steps)
    sync()
    return steps / (time.perf_counter() - start)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m icl.bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []),
                   help="devices to time (default: cpu, and cuda when available)")
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 32], help="ensemble sizes (default: %(default)s)")
    p.add_argument("--steps", type=int, default=None,
                   help="timed steps per row (default: 20 on cpu, 500 on cuda)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps before timing (default: %(default)s)")
    p.add_argument("--width", type=int, default=64, help="(default: %(default)s, timaeus L2H4)")
    p.add_argument("--depth", type=int, default=2, help="(default: %(default)s)")
    p.add_argument("--heads", type=int, default=4, help="(default: %(default)s)")
    p.add_argument("--mlp-ratio", type=float, default=1.0, help="(default: %(default)s)")
    p.add_argument("--dim", type=int, default=4, help="D (default: %(default)s)")
    p.add_argument("--points", type=int, default=16, help="K (default: %(default)s)")
    p.add_argument("--batch", type=int, default=256, help="sequences per step and member (default: %(default)s)")
    p.add_argument("--param", default="sp", help="parametrization (default: %(default)s)")
    p.add_argument("--tf32", action="store_true", help="allow TF32 matmuls on CUDA (default: off)")
    p.add_argument("--compile", action="store_true",
                   help="also time torch.compile'd steps on CUDA, graphed (default: off; 15-25 s compile per row on an H100)")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    rows = []
    for device in args.devices:
        name = torch.cuda.get_device_name() if device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
        steps = args.steps or (500 if device == "cuda" else 20)
        for size in args.sizes:
            modes = [(False, False)] + ([(True, False)] if device == "cuda" else [])
            modes += [(True, True)] if device == "cuda" and args.compile else []
            for graph, compile in modes:
                rate = steps_per_second(device, size, graph, compile, steps, args)
                mode = ("cuda graph" if graph else "eager") + (" + compile" if compile else "")
                rows.append({"device": name, "mode": mode, "ensemble": size,
                             "steps_per_s": rate, "model_steps_per_s": rate * size,
                             "minutes_500k": 500_000 / rate / 60})
                print(f"{name} {rows[-1]['mode']} E={size}: {rate:.1f} steps/s", file=sys.stderr, flush=True)
    commit = runlog.git_commit(REPO)
    command = "python -m icl.bench " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"\nCommand: `{command.strip()}`; commit {commit}; torch {torch.__version__}; "
          f"model width {args.width}, depth {args.depth}, heads {args.heads}, batch {args.batch}, fp32"
          f"{' (tf32 matmuls)' if args.tf32 else ''}.\n")
    print("| device | mode | ensemble | steps/s | model-steps/s | 500k steps (min) |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['device']} | {r['mode']} | {r['ensemble']} | {r['steps_per_s']:.1f} | "
              f"{r['model_steps_per_s']:.0f} | {r['minutes_500k']:.1f} |")
    if args.json:
        runlog.write_json(args.json, {"command": command, "commit": commit, "torch": torch.__version__,
                                      "config": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
