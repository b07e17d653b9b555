"""Time the LLC sampler backends of `python -m icl.landscape sweep` on one group of checkpoints:
`vmap` (icl.llc.estimate_llcs) and `ensemble` (icl.llc_ensemble.EnsembleSGLD) eager, CUDA-graphed
and CUDA-graphed + compiled, at the sweep's settings (eps 1e-3, nbeta 60, gamma 6, batch 1024).
Prints a markdown table (device, s per call, ms per SGLD step, s per checkpoint at 1000 steps,
TFLOP/s at 6 x params x tokens) and each backend's LLC per checkpoint; --json writes the rows.

    python experiments/llc_backend_bench.py                               # 8 checkpoints x 8 chains
    python experiments/llc_backend_bench.py --group 32 --modes ensemble-graph-compile
    python experiments/llc_backend_bench.py --folder .gpu_runs/garg_warmup0   # a run's checkpoints

Without --folder the checkpoints are freshly initialised L2H4 models (timaeus' paper model, SP
init, seeds 0..group-1): the timing does not depend on the weights. With --folder they are up to
--group checkpoints of its members spread in log step, and the LLCs are comparable between
backends (in distribution: the two backends draw different noise). The first call of each mode
(compile, capture, allocator) is untimed.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from icl import checkpoints, landscape  # noqa: E402
from icl.llc import estimate_llcs  # noqa: E402
from icl.llc_ensemble import EnsembleSGLD  # noqa: E402
from icl.model import ModelConfig, build_member, make_parametrization  # noqa: E402
from icl.tasks import GargTask  # noqa: E402

MODES = ("vmap", "ensemble-eager", "ensemble-graph", "ensemble-graph-compile")
INIT_BATCH = 8192  # sequences for each checkpoint's L(w*), shared by every mode (the sweep's 131072 is slow to no purpose here)


def paper_checkpoints(group: int, device):
    """timaeus' L2H4 model (D=4, K=16) at `group` SP initialisations."""
    task = GargTask(dim=4, points=16, device=device)
    config = ModelConfig(token_dim=task.token_dim, seq_len=task.seq_len)
    p = make_parametrization(config, param="sp", base_width=config.width)
    models = [build_member(config, p, seed) for seed in range(group)]
    return models[0], [m.state_dict() for m in models], task, [f"init seed {g}" for g in range(group)]


def folder_checkpoints(folder: Path, group: int, device):
    """Up to `group` checkpoints of the folder's members, each member's spread in log step."""
    members = landscape.find_members(folder)
    items = [(m.run_name, s) for m in members for s in landscape.select_steps(m.steps, group, 1)][:group]
    paths = [checkpoints.checkpoint_path(folder, name, step) for name, step in items]
    model = checkpoints.load_model(paths[0])[0]
    return model, [checkpoints.load(p)["model"] for p in paths], landscape.task_of(members[0].config, device), items


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--group", type=int, default=8, help="checkpoints per call (the sweep's CUDA default: 8)")
    p.add_argument("--chains", type=int, default=8, help="chains per checkpoint (seed: 8)")
    p.add_argument("--grad-batch", type=int, default=1024, help="sequences per SGLD step (seed: 1024)")
    p.add_argument("--burnin", type=int, default=50, help="timed burn-in steps (the sweep: 500)")
    p.add_argument("--draws", type=int, default=50, help="timed draw steps (the sweep: 500)")
    p.add_argument("--folder", type=Path, default=None, help="a `python -m icl` output folder with checkpoints")
    p.add_argument("--no-tf32", dest="tf32", action="store_false", help="full fp32 matmuls (the sweep uses TF32)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
    if args.folder:
        model, states, task, labels = folder_checkpoints(args.folder, args.group, device)
    else:
        model, states, task, labels = paper_checkpoints(args.group, device)
    model = model.to(device)
    states = [{k: v.to(device) for k, v in s.items()} for s in states]
    init_losses = []
    for s in states:
        model.load_state_dict(s)
        init_losses.append(landscape.fixed_batch_loss(model, task, INIT_BATCH, 0, device))
    hyper = dict(epsilon=1e-3, nbeta=60.0, gamma=6.0, num_chains=args.chains, seed=42)
    steps = args.burnin + args.draws
    params = sum(t.numel() for t in model.parameters())
    tokens_per_step = len(states) * args.chains * args.grad_batch * task.seq_len
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def vmap_call(burnin, draws):
        return estimate_llcs(model, states, lambda m, b: landscape.mean_loss(m, task, b),
                             lambda t: landscape.draw(task, 42, t, args.grad_batch, landscape.STREAM_SGLD, device),
                             num_burnin=burnin, num_draws=draws, init_losses=init_losses, **hyper)

    rows, llcs = [], {}
    for mode in args.modes:
        if mode == "vmap":
            vmap_call(0, 2)  # untimed: allocator, kernels' first calls
            call = lambda: vmap_call(args.burnin, args.draws)  # noqa: E731
        else:
            sampler = EnsembleSGLD(model, task, checkpoints_per_call=len(states), num_burnin=args.burnin,
                                   num_draws=args.draws, grad_batch=args.grad_batch,
                                   data_stream=landscape.STREAM_SGLD, compile=mode.endswith("compile"),
                                   cuda_graph=mode != "ensemble-eager", **hyper)
            began = time.perf_counter()
            sampler.estimate(states, init_losses)  # untimed: compile, capture
            print(f"{mode}: first call (compile, capture) {time.perf_counter() - began:.1f} s", file=sys.stderr)
            call = lambda: sampler.estimate(states, init_losses)  # noqa: E731
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        sync()
        began = time.perf_counter()
        results = call()
        sync()
        seconds = time.perf_counter() - began
        llcs[mode] = [r.llc_mean for r in results]
        rows.append({"mode": mode, "seconds": seconds, "ms_per_step": 1e3 * seconds / steps,
                     "s_per_checkpoint_1000_steps": seconds / steps * 1000 / len(states),
                     "tflops": 6 * params * tokens_per_step * steps / seconds / 1e12,
                     "peak_gb": torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else None})
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"{name}, {len(states)} checkpoints x {args.chains} chains, batch {args.grad_batch}, {steps} steps, "
          f"{params:,} params, tf32 {args.tf32 and device.type == 'cuda'}\n`{' '.join(sys.argv)}`\n")
    print("| mode | s per call | ms per step | s per checkpoint at 1000 steps | TFLOP/s | peak GB |\n|---|---:|---:|---:|---:|---:|")
    for r in rows:
        peak = "" if r["peak_gb"] is None else f"{r['peak_gb']:.1f}"
        print(f"| {r['mode']} | {r['seconds']:.2f} | {r['ms_per_step']:.1f} | {r['s_per_checkpoint_1000_steps']:.2f} "
              f"| {r['tflops']:.1f} | {peak} |")
    print("\nLLC per checkpoint (" + ", ".join(args.modes) + "):")
    for g, label in enumerate(labels):
        print(f"  {label}: " + "  ".join(f"{llcs[m][g]:.2f}" for m in args.modes))
    if args.json:
        args.json.write_text(json.dumps({"device": name, "args": vars(args) | {"folder": str(args.folder),
                                                                               "json": str(args.json)},
                                         "rows": rows, "llc": llcs, "labels": [str(x) for x in labels]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
