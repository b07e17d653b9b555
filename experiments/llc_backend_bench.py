"""Time the LLC sampler backends of `python -m icl.landscape sweep` on one group of checkpoints:
`vmap` (icl.llc.estimate_llcs) and `ensemble` (icl.llc_ensemble.EnsembleSGLD) eager, CUDA-graphed
and CUDA-graphed + compiled, at the sweep's settings (eps 1e-3, nbeta 60, gamma 6, batch 1024).
Prints a markdown table (device, s per call, ms per SGLD step, s per checkpoint at 1000 steps,
TFLOP/s at 6 x params x tokens) and each backend's LLC per checkpoint; --json writes the rows.

    python experiments/llc_backend_bench.py                               # 8 checkpoints x 8 chains
    python experiments/llc_backend_bench.py --group 32 --modes ensemble-graph-compile
    python experiments/llc_backend_bench.py --folder .gpu_runs/garg_warmup0   # a run's checkpoints
    python experiments/llc_backend_bench.py --folder .gpu_runs/garg_warmup0 --step 500000  # its last ones

Without --folder the checkpoints are freshly initialised L2H4 models (timaeus' paper model, SP
init, seeds 0..group-1): the timing does not depend on the weights. With --folder they are up to
--group checkpoints of its members spread in log step, and the LLCs are comparable between
backends (in distribution: the two backends draw different noise). The first call of each mode
(compile, capture, allocator) is untimed.

devinterp beside ours (`--modes vmap ensemble-graph-compile devinterp`; PyPI devinterp 2.x, not
in requirements.txt, through icl.devinterp_bridge): devinterp's llc runs on the first checkpoint
with the same eps, nbeta, gamma, chains, burn-in, draws and batch, and a second table compares,
on that checkpoint, each mode's s per checkpoint (ours: its call's time over --group) and its
estimate (mean ± std over the chains, burn-in dropped; devinterp's own burn-in-averaged llc_mean
is printed too), and whether it lies within 3 combined standard errors of devinterp's.

    python experiments/llc_backend_bench.py --group 1 --burnin 500 --draws 500 \
        --modes vmap ensemble-graph-compile devinterp [--pool]

- Data. devinterp cannot draw fresh batches: it reads a fixed pool of --pool-batches x
  --grad-batch sequences, sampled once from the task, batch after batch and round again, and
  takes L(w*) on the whole pool. Ours draw a fresh batch every step (the sweep's data) and take
  L(w*) on INIT_BATCH fresh sequences; with --pool they read devinterp's pool instead, the same
  batch at every step (icl.devinterp_bridge.FixedPool), and take L(w*) on it.
- Timing. devinterp's time includes its L(w*) (one forward per pool batch) and its zarr writes of
  every step's losses and input_ids (into a temporary directory, deleted afterwards); ours leave
  L(w*) out. devinterp runs its chains one after another. Its untimed first call is 1 chain x 2
  draws; its import (seconds) happens before any timing.
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
from icl.devinterp_bridge import FixedPool, agree, devinterp_llc, index_dataset, kept_chains  # noqa: E402
from icl.llc import estimate_llcs  # noqa: E402
from icl.llc_ensemble import EnsembleSGLD  # noqa: E402
from icl.model import ModelConfig, build_member, make_parametrization  # noqa: E402
from icl.tasks import GargTask  # noqa: E402

OURS = ("vmap", "ensemble-eager", "ensemble-graph", "ensemble-graph-compile")
MODES = OURS + ("devinterp",)
SEED = 42  # the SGLD noise, the fresh batches and the pool
INIT_BATCH = 8192  # sequences for each checkpoint's L(w*), shared by every mode (the sweep's 131072 is slow to no purpose here)


def paper_checkpoints(group: int, device):
    """timaeus' L2H4 model (D=4, K=16) at `group` SP initialisations."""
    task = GargTask(dim=4, points=16, device=device)
    config = ModelConfig(token_dim=task.token_dim, seq_len=task.seq_len)
    p = make_parametrization(config, param="sp", base_width=config.width)
    models = [build_member(config, p, seed) for seed in range(group)]
    return models[0], [m.state_dict() for m in models], task, [f"init seed {g}" for g in range(group)]


def folder_checkpoints(folder: Path, group: int, device, step: int | None = None):
    """Up to `group` checkpoints of the folder's members: each member's spread in log step, or
    with `step` each member's checkpoint nearest that step (a trained one, where w* is near a
    minimum and the LLC means what it says; the first spread one is the initialisation)."""
    members = landscape.find_members(folder)
    if step is None:
        items = [(m.run_name, s) for m in members for s in landscape.select_steps(m.steps, group, 1)][:group]
    else:
        items = [(m.run_name, min(m.steps, key=lambda s: abs(s - step))) for m in members][:group]
    paths = [checkpoints.checkpoint_path(folder, name, s) for name, s in items]
    model = checkpoints.load_model(paths[0])[0]
    return model, [checkpoints.load(p)["model"] for p in paths], landscape.task_of(members[0].config, device), items


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(OURS),
                   help="devinterp (not a default) runs devinterp's llc on the first checkpoint beside ours")
    p.add_argument("--group", type=int, default=8, help="checkpoints per call (the sweep's CUDA default: 8)")
    p.add_argument("--chains", type=int, default=8, help="chains per checkpoint (seed: 8)")
    p.add_argument("--grad-batch", type=int, default=1024, help="sequences per SGLD step (seed: 1024)")
    p.add_argument("--burnin", type=int, default=50, help="timed burn-in steps (the sweep: 500)")
    p.add_argument("--draws", type=int, default=50, help="timed draw steps (the sweep: 500)")
    p.add_argument("--folder", type=Path, default=None, help="a `python -m icl` output folder with checkpoints")
    p.add_argument("--step", type=int, default=None,
                   help="with --folder: each member's checkpoint nearest this step (default: spread in log step)")
    p.add_argument("--pool", action="store_true",
                   help="ours read devinterp's fixed pool (same batches, same order) instead of fresh batches")
    p.add_argument("--pool-batches", type=int, default=64,
                   help="the fixed pool for devinterp (and --pool), in batches of --grad-batch")
    p.add_argument("--no-tf32", dest="tf32", action="store_false", help="full fp32 matmuls (the sweep uses TF32)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
    if args.folder:
        model, states, task, labels = folder_checkpoints(args.folder, args.group, device, args.step)
    else:
        model, states, task, labels = paper_checkpoints(args.group, device)
    model = model.to(device)
    # copies: a state dict shares the storage of its model's parameters, and `model` is loaded below
    states = [{k: v.to(device, copy=True) for k, v in s.items()} for s in states]
    with_devinterp = "devinterp" in args.modes
    if with_devinterp:
        # first: a missing package fails before any timing, and the import stays out of it
        from devinterp.slt.llc import llc  # noqa: F401
    pool = FixedPool(task, args.pool_batches, args.grad_batch, SEED, device) if with_devinterp or args.pool else None
    dataset = index_dataset(len(pool), pool.positions) if with_devinterp else None

    def init_loss():
        if not args.pool:
            return landscape.fixed_batch_loss(model, task, INIT_BATCH, 0, device)
        with torch.no_grad():  # over the whole pool, as devinterp's
            return sum(float(landscape.mean_loss(model, task, b)) for b in pool.batches()) / pool.num_batches

    init_losses = []
    for s in states:
        model.load_state_dict(s)
        init_losses.append(init_loss())
    sampler_settings = dict(epsilon=1e-3, nbeta=60.0, gamma=6.0)
    hyper = sampler_settings | dict(num_chains=args.chains, seed=SEED)
    steps = args.burnin + args.draws
    params = sum(t.numel() for t in model.parameters())
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    data = pool.batches() if args.pool else (
        lambda t: landscape.draw(task, SEED, t, args.grad_batch, landscape.STREAM_SGLD, device))

    def vmap_call(burnin, draws):
        return estimate_llcs(model, states, lambda m, b: landscape.mean_loss(m, task, b), data,
                             num_burnin=burnin, num_draws=draws, init_losses=init_losses, **hyper)

    def devinterp_call(chains, burnin, draws):
        return devinterp_llc(model, dataset, pool.sample_loss, **sampler_settings, num_chains=chains,
                             num_draws=draws, num_burnin=burnin, batch_size=args.grad_batch, seed=SEED, device=device)

    rows, results, devinterp_result = [], {}, None
    for mode in args.modes:
        if mode == "vmap":
            vmap_call(0, 2)  # untimed: allocator, kernels' first calls
            call = lambda: vmap_call(args.burnin, args.draws)  # noqa: E731
        elif mode == "devinterp":
            model.load_state_dict(states[0])  # devinterp samples the module's own weights
            devinterp_call(1, 0, 2)  # untimed: allocator, kernels' first calls
            call = lambda: [devinterp_call(args.chains, args.burnin, args.draws)]  # noqa: E731
        else:
            sampler = EnsembleSGLD(model, pool if args.pool else task, checkpoints_per_call=len(states),
                                   num_burnin=args.burnin, num_draws=args.draws, grad_batch=args.grad_batch,
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
        out = call()
        sync()
        seconds = time.perf_counter() - began
        if mode == "devinterp":
            devinterp_result = out[0]
            out = [devinterp_result.result]
        results[mode] = out
        tokens_per_step = len(out) * args.chains * args.grad_batch * task.seq_len
        rows.append({"mode": mode, "checkpoints": len(out), "seconds": seconds, "ms_per_step": 1e3 * seconds / steps,
                     "s_per_checkpoint_1000_steps": seconds / steps * 1000 / len(out),
                     "tflops": 6 * params * tokens_per_step * steps / seconds / 1e12,
                     "peak_gb": torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else None})
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"{name}, {len(states)} checkpoints x {args.chains} chains, batch {args.grad_batch}, {steps} steps, "
          f"{params:,} params, tf32 {args.tf32 and device.type == 'cuda'}\n`{' '.join(sys.argv)}`\n")
    print("| mode | checkpoints | s per call | ms per step | s per checkpoint at 1000 steps | TFLOP/s | peak GB |\n"
          "|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        peak = "" if r["peak_gb"] is None else f"{r['peak_gb']:.1f}"
        print(f"| {r['mode']} | {r['checkpoints']} | {r['seconds']:.2f} | {r['ms_per_step']:.1f} "
              f"| {r['s_per_checkpoint_1000_steps']:.2f} | {r['tflops']:.1f} | {peak} |")
    llcs = {mode: [r.llc_mean for r in out] for mode, out in results.items()}
    print("\nLLC per checkpoint (" + ", ".join(args.modes) + "):")
    for g, label in enumerate(labels):
        print(f"  {label}: " + "  ".join(f"{llcs[m][g]:.2f}" if g < len(llcs[m]) else "-" for m in args.modes))
    report = {"device": name, "args": vars(args) | {"folder": str(args.folder), "json": str(args.json)},
              "rows": rows, "llc": llcs, "labels": [str(x) for x in labels]}
    if with_devinterp:
        report["comparison"] = compare(results, rows, args.pool)
        report["devinterp"] = {"checkpoint": str(labels[0]), "pool_sequences": len(pool),
                               "llc_mean_with_burnin": devinterp_result.llc_mean_with_burnin}
        print_comparison(report, args.pool)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


def compare(results: dict, rows: list[dict], pool: bool) -> list[dict]:
    """Each mode's time and estimate at the first checkpoint, and its agreement with devinterp's."""
    reference = kept_chains(results["devinterp"][0])
    comparison = []
    for row in rows:
        result = results[row["mode"]][0]
        chains = kept_chains(result)
        comparison.append({"mode": row["mode"], "data": "fixed pool" if pool or row["mode"] == "devinterp" else "fresh batches",
                           "s_per_checkpoint": row["seconds"] / row["checkpoints"], "llc_mean": result.llc_mean,
                           "llc_std": result.llc_std, "chains": len(chains), "init_loss": result.init_loss,
                           "agrees_with_devinterp": agree(chains, reference)})
    return comparison


def print_comparison(report: dict, pool: bool) -> None:
    info = report["devinterp"]
    print(f"\nAt checkpoint {info['checkpoint']}, burn-in dropped: devinterp on a fixed pool of "
          f"{info['pool_sequences']:,} sequences, ours on {'the same pool' if pool else 'fresh batches'} "
          f"(ours' s per checkpoint: the call's time over its checkpoints)\n")
    print("| mode | data | s per checkpoint | LLC (mean ± std over chains) | L(w*) | within 3 SE of devinterp |\n"
          "|---|---|---:|---:|---:|---|")
    for c in report["comparison"]:
        print(f"| {c['mode']} | {c['data']} | {c['s_per_checkpoint']:.2f} | {c['llc_mean']:.2f} ± {c['llc_std']:.2f} "
              f"({c['chains']} chains) | {c['init_loss']:.4f} | {'yes' if c['agrees_with_devinterp'] else 'NO'} |")
    print(f"\ndevinterp's own llc_mean (burn-in averaged in): {info['llc_mean_with_burnin']:.2f}")


if __name__ == "__main__":
    raise SystemExit(main())
