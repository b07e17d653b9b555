"""The developmental landscape of `python -m icl` runs: the LLC at every checkpoint of every
member, essential dynamics, stage boundaries, and their figures (docs/landscape.md).

    python -m icl.landscape sweep FOLDER [FOLDER ...] [--limit SECONDS]      # -> FOLDER/llc.json
    python -m icl.landscape figures FOLDER [FOLDER ...] --out DIR             # figures + stages.md

`sweep` reads each folder's run logs (one per member) and checkpoints
(`<run>.ckpt/step_XXXXXXXXX.pt`) and, per member:
1. essential dynamics: the model's full outputs on a fixed batch at every checkpoint (step > 0),
   PCA across checkpoints and the turning points of each PC against log step (icl.stages);
2. the LLC at every (or a log-spaced subset of) checkpoint(s) by SGLD (icl.llc.estimate_llcs) with
   the seed's settings (eps 1e-3, nbeta 60, gamma 6, 8 chains, 500 burn-in + 500 draws, a fresh
   batch of 1024 sequences per step from the run's task; L(w*) on a fixed batch of 131,072);
   `--group` checkpoints (of any members) share one vectorised batch of group x chains chains;
3. stage boundaries: the LLC's turning points per member (icl.stages.turning_points), clustered
   over the members of one condition (same lr and warmup) into a median and a range.
Results are written atomically to `FOLDER/llc.json` after every group, so a sweep can be stopped
at any time; a rerun skips what is done. Checkpoints are visited coarse to fine (ends, then
midpoints), so a sweep cut short by `--limit` still spans the whole of training.

Random data come from icl.tasks' counter-based hash under streams of their own (below), so a
sweep draws the same batches on any device and after any resume.
"""
from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

import runlog
from icl import checkpoints, schedules, stages
from icl.llc import estimate_llcs
from icl.llc_ensemble import EnsembleSGLD
from icl.tasks import make_task, per_position_loss

REPO = Path(__file__).resolve().parent.parent
PUBLISHED_CSV = REPO.parent / "shared" / "reference" / "timaeus_L2H4Minf_llc.csv"
LLC_FILE = "llc.json"  # a sweep with other sampler settings writes a file of another name (--llc-file)
FORMAT = "icl-landscape/1"  # no "schema_version" key: runlog.load_run_logs must not take llc.json for a run log
# icl.tasks uses streams 1-3 (train, task set, eval); these keep the sweep's data apart from them
STREAM_SGLD, STREAM_INIT_LOSS, STREAM_ESSENTIAL = 11, 12, 13
FORWARD_CHUNK = 8192  # sequences per no-grad forward (L(w*), essential dynamics): bounds memory
clock = time.monotonic  # the tests replace it to simulate slow groups


@dataclass(frozen=True)
class Sampler:
    """SGLD settings; defaults are the seed's "LLCs over time" sweep (icl_llc_report.md 2.4)."""
    epsilon: float = 1e-3       # noise_scale 0.001
    nbeta: float = 60.0         # 2 * gradient_scale 0.03 / eps
    gamma: float = 6.0          # 2 * localization_scale 0.003 / eps
    chains: int = 8
    burnin: int = 500
    draws: int = 500
    grad_batch: int = 1024      # fresh sequences per SGLD step (grad_batch_size, infinite dataset)
    init_batch: int = 131072    # L(w*) on this fixed batch (the seed's n); 0: on the draws' own batches
    seed: int = 42              # the seed's init_seed: SGLD noise and the data hash


# -- members, checkpoints, data ------------------------------------------------------------------

@dataclass
class Member:
    run_name: str
    log: dict
    steps: list[int]            # checkpoint steps, ascending

    @property
    def config(self) -> dict:
        return self.log["config"]


def find_members(folder: Path) -> list[Member]:
    """The members of a `python -m icl` output folder that have checkpoints."""
    members = []
    for log in runlog.load_run_logs([folder]).values():
        steps = checkpoints.checkpoint_steps(folder, log["run_name"])
        if steps:
            members.append(Member(log["run_name"], log, steps))
    if not members:
        raise SystemExit(f"{folder}: no run log with checkpoints; train with `python -m icl --out {folder}` "
                         f"and checkpoints on (--ckpt-log/--ckpt-lin)")
    return members


def task_of(config: dict, device):
    return make_task(config["task"], dim=config["dim"], points=config["points"], noise_var=config["noise_var"],
                     num_tasks=config["num_tasks"], task_seed=config["task_seed"], device=device)


def draw(task, seed: int, step: int, size: int, stream: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens [size, T, token_dim], targets [size, K]) from the run's task distribution, on device."""
    batch = task.sample(torch.tensor([seed], device=device), step, size, stream)
    return batch.tokens[0], batch.y[0]


def mean_loss(model, task, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    tokens, y = batch
    return per_position_loss(task.predictions(model(tokens)), y, task.loss).mean()


def fixed_batch_loss(model, task, size: int, seed: int, device) -> float:
    """The model's mean loss on a fixed batch of `size` sequences, in chunks of FORWARD_CHUNK."""
    total = 0.0
    with torch.no_grad():
        for chunk, start in enumerate(range(0, size, FORWARD_CHUNK)):
            n = min(FORWARD_CHUNK, size - start)
            total += float(mean_loss(model, task, draw(task, seed, chunk, n, STREAM_INIT_LOSS, device))) * n
    return total / size


def select_steps(steps: list[int], max_checkpoints: int | None, every: int) -> list[int]:
    """Every `every`-th checkpoint, then at most `max_checkpoints` of those spread evenly in
    log(step + 1) (the first and last always kept)."""
    chosen = steps[::every]
    if max_checkpoints is None or len(chosen) <= max_checkpoints:
        return chosen
    u = np.log1p(np.asarray(chosen, dtype=float))
    targets = np.linspace(u[0], u[-1], max_checkpoints)
    return sorted({chosen[int(np.abs(u - t).argmin())] for t in targets})


def coarse_to_fine(n: int) -> list[int]:
    """0..n-1 ordered ends first, then midpoints at ever finer levels (every index once)."""
    order, seen, level = [], set(), 1
    while len(order) < n:
        for k in range(level + 1):
            i = round(k * (n - 1) / level)
            if i not in seen:
                seen.add(i)
                order.append(i)
        level *= 2
    return order


# -- the sweep ----------------------------------------------------------------------------------

def finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def essential_dynamics_of(folder: Path, member: Member, task, *, batch: int, seed: int, device) -> dict:
    """PCA of the model's outputs on a fixed batch over its checkpoints at steps > 0 (those
    whose outputs are finite)."""
    considered = [s for s in member.steps if s > 0]
    paths = [checkpoints.checkpoint_path(folder, member.run_name, s) for s in considered]
    tokens, _ = draw(task, seed, 0, batch, STREAM_ESSENTIAL, device)
    model, outputs = checkpoints.load_model(paths[0])[0].to(device), []
    for path in paths:
        model.load_state_dict(checkpoints.load(path)["model"])
        with torch.no_grad():
            outputs.append(torch.cat([model(tokens[i:i + FORWARD_CHUNK])
                                      for i in range(0, batch, FORWARD_CHUNK)]).flatten().cpu().numpy())
    outputs = np.stack(outputs)
    finite = np.isfinite(outputs).all(axis=1)  # a diverged member's later checkpoints output NaN
    steps, outputs = [s for s, ok in zip(considered, finite) if ok], outputs[finite]
    ed = stages.essential_dynamics(steps, outputs, num_components=min(3, *outputs.shape),
                                  sigma=stage_sigma(steps))
    return {"checkpoints": considered, "steps": steps, "sigma": stage_sigma(steps), "pcs": ed.trajectories.tolist(),
            "explained_variance_ratio": ed.explained_variance_ratio.tolist(),
            "turning_points": [[asdict(p) for p in tps] for tps in ed.turning_points]}


def stage_sigma(steps) -> float:
    """icl.stages' smoothing width, widened to half the largest gap in ln(step) where checkpoints
    are sparse (a subset, or a sweep still going), so every point of its grid sees two of them."""
    gaps = np.diff(np.log(np.asarray(sorted(steps), dtype=float)))
    return max(stages.DEFAULT_SIGMA, 0.5 * gaps.max(initial=0.0))


def llc_turning_points(records: list[dict]) -> list[dict]:
    """The LLC's stage boundaries (steps > 0, diverged estimates dropped); [] with under 3 points.
    The kernel keeps icl.stages' width where the checkpoints allow it (boundaries in a gap are
    dropped by the rule itself): widening it to the largest gap (stage_sigma) flattened a dense
    sweep's stages into one peak. Only a sweep too sparse for that width gets the wider kernel."""
    kept = [(r["step"], r["llc_mean"]) for r in records if r["step"] > 0 and r["llc_mean"] is not None]
    if len(kept) < 3:
        return []
    steps, values = zip(*kept)
    try:
        points = stages.turning_points(steps, values)
    except ValueError:  # some point of the kernel's grid sees under two checkpoints
        points = stages.turning_points(steps, values, sigma=stage_sigma(steps))
    return [asdict(p) for p in points]


def cluster_boundaries(per_member: list[list[dict]], factor: float = 2.0) -> list[dict]:
    """Boundaries of several members, grouped where consecutive ones (sorted by step) lie within
    `factor` of each other: each group's median step, range, kinds and how many members have one."""
    points = sorted((p["step"], p["kind"], m) for m, tps in enumerate(per_member) for p in tps)
    groups: list[list] = []
    for point in points:
        if groups and point[0] <= factor * groups[-1][-1][0]:
            groups[-1].append(point)
        else:
            groups.append([point])
    return [{"median_step": statistics.median(p[0] for p in g), "min_step": g[0][0], "max_step": g[-1][0],
             "kinds": sorted({p[1] for p in g}), "members": len({p[2] for p in g})} for g in groups]


def condition_key(config: dict) -> str:
    """Members differing only by seed form one condition (their stages are pooled)."""
    return f"{config['param']} lr={config['lr']:.3g} warmup={config['warmup_steps']}"


def summarise(state: dict) -> None:
    """Per-member LLC stages and per-condition clusters, from the estimates so far (in place)."""
    conditions: dict[str, list[str]] = {}
    for name, entry in state["members"].items():
        entry["llc"].sort(key=lambda r: r["step"])
        entry["llc_stages"] = llc_turning_points(entry["llc"])
        conditions.setdefault(condition_key(entry["config"]), []).append(name)
    state["conditions"] = {key: {"members": names, "stages": cluster_boundaries(
        [state["members"][n]["llc_stages"] for n in names])} for key, names in conditions.items()}


def load_state(path: Path, sampler: Sampler) -> dict:
    state = runlog.read_json(path)
    if state is None:
        return {"format": FORMAT, "sampler": asdict(sampler), "complete": False, "members": {}}
    if state.get("format") != FORMAT or state["sampler"] != asdict(sampler):
        raise SystemExit(f"{path} holds estimates made with sampler {state.get('sampler')}, not {asdict(sampler)}; "
                         f"rerun with those settings to resume it, or move it away to start afresh")
    return state


def sweep(folder: Path, sampler: Sampler, *, group: int, max_checkpoints: int | None, every: int,
          ed_batch: int, ed_seed: int, deadline: float | None, device, log=print, backend: str = "vmap",
          llc_file: str = LLC_FILE, steps: tuple[int, int] | None = None) -> bool:
    """Fill `folder/llc_file`; True once every selected checkpoint is estimated, False when the
    deadline (a `clock()` time) stopped it first. backend: "vmap" (icl.llc.estimate_llcs) or
    "ensemble" (icl.llc_ensemble.EnsembleSGLD, built once for the sweep: CUDA graph + compile on CUDA).
    steps: (first, last) keeps the checkpoints in that range only (say, a stretch resampled with
    another step size into a file of its own)."""
    folder = Path(folder)
    path = folder / llc_file
    members = find_members(folder)
    state = load_state(path, sampler)
    task = task_of(members[0].config, device)
    for m in members:
        entry = state["members"].setdefault(m.run_name, {"llc": []})
        # what the figures need: the condition, and the schedule for the cumulative lr
        entry["config"] = {k: m.config[k] for k in ("param", "lr", "seed", "warmup_steps", "width", "optim")}
        ed = entry.get("essential_dynamics")
        if sum(s > 0 for s in m.steps) >= 2 and (ed is None or ed["checkpoints"] != [s for s in m.steps if s > 0]):
            entry["essential_dynamics"] = essential_dynamics_of(folder, m, task, batch=ed_batch, seed=ed_seed,
                                                                device=device)
    runlog.write_json(path, state)

    pending = []  # (rank in the coarse-to-fine order, member, step)
    for m in members:
        done = {r["step"] for r in state["members"][m.run_name]["llc"]}
        in_range = [s for s in m.steps if steps is None or steps[0] <= s <= steps[1]]
        chosen = select_steps(in_range, max_checkpoints, every)
        pending += [(rank, m.run_name, chosen[i]) for rank, i in enumerate(coarse_to_fine(len(chosen)))
                    if chosen[i] not in done]
    pending.sort()
    total = len(pending)
    log(f"{folder}: {total} checkpoint(s) to estimate, {group} per vectorised call "
        f"({group * sampler.chains} chains)")
    last_seconds, done = 0.0, 0
    ensemble = None
    for start in range(0, total, group):
        if deadline is not None and clock() + last_seconds > deadline:
            log(f"{folder}: stopping at the time limit with {total - start} checkpoint(s) left; "
                f"rerun the same command to continue")
            break
        began = clock()
        batch_items = pending[start:start + group]
        paths = [checkpoints.checkpoint_path(folder, name, step) for _, name, step in batch_items]
        model = checkpoints.load_model(paths[0])[0].to(device)
        states = [checkpoints.load(p)["model"] for p in paths]
        init_losses = None
        if sampler.init_batch:
            init_losses = []
            for sd in states:
                model.load_state_dict(sd)
                init_losses.append(fixed_batch_loss(model, task, sampler.init_batch, sampler.seed, device))
        if backend == "ensemble":
            if ensemble is None:
                ensemble = EnsembleSGLD(
                    model, task, checkpoints_per_call=group, num_chains=sampler.chains, epsilon=sampler.epsilon,
                    nbeta=sampler.nbeta, gamma=sampler.gamma, num_draws=sampler.draws, num_burnin=sampler.burnin,
                    seed=sampler.seed, grad_batch=sampler.grad_batch, data_stream=STREAM_SGLD,
                    init_from_draws=not sampler.init_batch, compile=device.type == "cuda")
            results = ensemble.estimate(states, init_losses)
        else:
            results = estimate_llcs(
                model, states, lambda m_, b: mean_loss(m_, task, b),
                lambda step: draw(task, sampler.seed, step, sampler.grad_batch, STREAM_SGLD, device),
                epsilon=sampler.epsilon, nbeta=sampler.nbeta, gamma=sampler.gamma, num_chains=sampler.chains,
                num_draws=sampler.draws, num_burnin=sampler.burnin, seed=sampler.seed, init_losses=init_losses)
        seconds = clock() - began
        last_seconds = seconds
        for (_, name, step), result in zip(batch_items, results):
            state["members"][name]["llc"].append({
                "step": step, "llc_mean": finite_or_none(result.llc_mean), "llc_std": finite_or_none(result.llc_std),
                "llc_per_chain": [finite_or_none(v) for v in result.llc_per_chain.tolist()],
                "diverged": result.diverged.tolist(), "init_loss": result.init_loss,
                "seconds": seconds / len(batch_items), "group_size": len(batch_items), "backend": backend})
        done += len(batch_items)
        summarise(state)
        state["complete"] = done == total
        runlog.write_json(path, state)
        log(f"{folder}: {done}/{total} done, {seconds:.1f} s for {len(batch_items)} checkpoint(s), "
            f"about {seconds * (total - done) / len(batch_items) / 60:.1f} min to go")
    summarise(state)
    state["complete"] = done == total
    runlog.write_json(path, state)
    return state["complete"]


def first_crossing(records: list[dict], level: float) -> tuple[float, int, int] | None:
    """(step where the LLC first exceeds `level`, interpolated linearly in ln(step) between the two
    estimates around it, the lower checkpoint, the upper one); step 0 and diverged estimates are
    skipped; None if it never does, or does at the first estimate."""
    previous = None
    for r in sorted(records, key=lambda r: r["step"]):
        if r["step"] == 0 or r["llc_mean"] is None:
            continue
        if r["llc_mean"] > level:
            if previous is None:
                return None
            s0, v0 = previous
            t = (level - v0) / (r["llc_mean"] - v0)
            return float(np.exp(np.log(s0) + t * (np.log(r["step"]) - np.log(s0)))), s0, r["step"]
        previous = (r["step"], r["llc_mean"])
    return None


# -- cumulative learning rate -------------------------------------------------------------------

def cumulative_lr(config: dict, steps) -> np.ndarray:
    """Sum of the base lr over the updates before each step (update t = 0..step-1), from a run
    log's config and icl.schedules: what a model at that checkpoint has integrated. Under µP the
    per-layer lrs are fixed multiples of this base lr."""
    o = config["optim"]
    total = o["steps"]
    multipliers = schedules.lr_multipliers(
        torch.arange(total, dtype=torch.float64), total=total,
        warmup=torch.tensor(float(config["warmup_steps"]), dtype=torch.float64),
        start=torch.tensor(float(o["warmup_start"]), dtype=torch.float64), floor=o["floor"], decay=o["decay"])
    summed = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(config["lr"] * multipliers, 0)])
    return summed[torch.as_tensor(steps, dtype=torch.long)].numpy()


# -- figures ------------------------------------------------------------------------------------

def load_published(path: Path = PUBLISHED_CSV) -> dict[int, dict[str, np.ndarray]]:
    """timaeus' L2H4Minf LLC: {model seed: {"step", "llc_mean", "llc_std"}}, sorted by step."""
    rows: dict[int, list] = {}
    with open(path) as file:
        for row in csv.DictReader(file):
            rows.setdefault(int(row["model_seed"]), []).append(
                (int(row["step"]), float(row["llc_mean"]), float(row["llc_std_over_chains"])))
    return {seed: dict(zip(("step", "llc_mean", "llc_std"), map(np.array, zip(*sorted(r)))))
            for seed, r in rows.items()}


def mean_curve(entries: list[dict], min_fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean LLC, members averaged) at the steps where at least `min_fraction` of the members
    have a finite estimate; the mean is over those members. Sparse sweeps cut by the device time
    reach different steps per member, and a checkpoint where every chain diverged has none."""
    per_member = [{r["step"]: r["llc_mean"] for r in e["llc"] if r["llc_mean"] is not None} for e in entries]
    steps = sorted(set().union(*per_member)) if per_member else []
    rows = [(s, [d[s] for d in per_member if s in d]) for s in steps]
    rows = [(s, v) for s, v in rows if len(v) >= min_fraction * len(per_member)]
    return (np.array([s for s, _ in rows], dtype=float), np.array([np.mean(v) for _, v in rows]),
            np.array([len(v) for _, v in rows], dtype=int))


def member_curve(entry: dict) -> tuple[np.ndarray, np.ndarray]:
    kept = [(r["step"], r["llc_mean"]) for r in entry["llc"] if r["llc_mean"] is not None]
    return tuple(np.array(v, dtype=float) for v in zip(*kept)) if kept else (np.array([]), np.array([]))


def positive(steps: np.ndarray, values: np.ndarray):
    """Drop step 0 (no place on a log axis)."""
    keep = steps > 0
    return steps[keep], values[keep]


def figure_llc(state: dict, published: dict | None, title: str):
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, entry in state["members"].items():
        ax.plot(*member_curve(entry), "-o", ms=2.5, lw=0.7, alpha=0.7, label=f"seed {entry['config']['seed']}")
    steps, mean, counts = mean_curve(list(state["members"].values()))
    full = counts == len(state["members"])  # a mean over fewer seeds shifts with their init offsets: not joined
    ax.plot(steps[full], mean[full], lw=2.2, color="k", label="mean over members")
    ax.plot(steps[~full], mean[~full], "o", mfc="white", mec="k", ms=6,
            label="mean over fewer members (not estimated, or all chains diverged)")
    if published:
        pub = np.stack([published[s]["llc_mean"] for s in sorted(published)])
        pub_steps = published[min(published)]["step"]
        pub_mean, pub_std = pub.mean(0), pub.std(0)
        ax.plot(pub_steps, pub_mean, lw=1.8, color="tab:red", ls="--",
                label=f"published (timaeus, one-cycle 50 % warmup, {len(published)} seeds, mean ± std)")
        ax.fill_between(pub_steps, pub_mean - pub_std, pub_mean + pub_std, color="tab:red", alpha=0.15)
    for condition in state.get("conditions", {}).values():
        for s in condition["stages"]:
            ax.axvspan(s["min_step"], s["max_step"], color="0.85", alpha=0.5)
            ax.axvline(s["median_step"], color="0.4", lw=1, ls=":")
    ax.set_xscale("symlog", linthresh=1)  # log above step 1, linear below: step 0 (init) stays on the axis
    ax.set_xlim(0, None)
    ax.axhline(0, color="0.6", lw=0.6)
    ax.set_xlabel("training step (log scale above 1; step 0 = init)")
    ax.set_ylabel("estimated LLC λ̂ (dimensionless)")
    ax.set_title(title + "  (dotted: median stage boundary, grey: its range over seeds)", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def nearest_eval(log: dict, step: float) -> dict:
    points = [p for p in log["curve"] if p.get("eval")]
    return min(points, key=lambda p: abs(math.log1p(p["step"]) - math.log1p(step)))


def figure_stage_losses(state: dict, logs: dict[str, dict], title: str, steps: list[int] | None = None):
    """Per-position eval loss (mean over members) at each median stage boundary (or at `steps`,
    where the checkpoints are too sparse for the boundaries) and at the end, beside the
    baselines, from the run logs' eval point nearest in log step."""
    import matplotlib.pyplot as plt
    boundaries = steps or sorted({s["median_step"] for c in state.get("conditions", {}).values()
                                  for s in c["stages"]})
    last = max(p["step"] for log in logs.values() for p in log["curve"])
    marks = [(b, "" if steps else "stage boundary, ") for b in boundaries if b < last] + [(last, "end, ")]
    cols = min(4, len(marks))
    rows = math.ceil(len(marks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.9 * rows), squeeze=False, sharey=True)
    zero = None
    for ax, (step, what) in zip(axes.flat, marks):
        points = [nearest_eval(log, step) for log in logs.values()]
        losses = np.mean([p["eval"]["valid"]["per_position"] for p in points], axis=0)
        positions = np.arange(1, len(losses) + 1)
        ax.plot(positions, losses, "k-o", ms=3, label="model (mean over members)")
        for name, values in points[0]["eval"]["valid"]["baselines"].items():
            if all(v is not None for v in values):
                ax.plot(positions, values, lw=1, ls="--", label=name)
        zero = points[0]["eval"]["valid"]["baselines"].get("zero") or zero
        ax.set_title(f"{what}step {step:,.0f} (eval at {points[0]['step']:,})", fontsize=8)
        ax.set_xlabel("position k (k−1 examples before)", fontsize=8)
        ax.set_yscale("log")
    for ax in axes.flat[len(marks):]:
        ax.set_axis_off()
    if zero:  # least squares is exactly determined at k-1 = D examples: its spike there would squash the rest
        axes[0][0].set_ylim(None, 2 * max(zero))
    for row in axes:
        row[0].set_ylabel("eval loss at k (MSE)")
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, fontsize=7, loc="upper right")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.85, 1))
    return fig


def figure_essential_dynamics(state: dict, title: str):
    import matplotlib.pyplot as plt
    fig, (plane, curves) = plt.subplots(1, 2, figsize=(10, 4))
    drawn = [e for e in state["members"].values() if e.get("essential_dynamics")]
    for m, entry in enumerate(drawn):
        ed = entry["essential_dynamics"]
        pcs, steps, seed = np.array(ed["pcs"]), np.array(ed["steps"]), entry["config"]["seed"]
        if pcs.shape[1] >= 2:
            plane.plot(pcs[:, 0], pcs[:, 1], "-o", ms=2, lw=0.8, label=f"seed {seed}")
        for k in range(pcs.shape[1]):  # one colour per PC; the legend names each PC once
            curves.plot(steps, pcs[:, k], lw=0.8, color=f"C{k}", label=f"PC{k + 1}" if m == 0 else None)
            for tp in ed["turning_points"][k]:
                curves.axvline(tp["step"], color=f"C{k}", lw=0.5, ls=":")
    plane.set_xlabel("PC1 of model outputs (output units)")
    plane.set_ylabel("PC2 of model outputs (output units)")
    plane.legend(fontsize=7)
    curves.set_xscale("log")
    curves.set_xlabel("training step (log scale)")
    curves.set_ylabel("PC coordinate (output units)")
    curves.legend(fontsize=7)
    fig.suptitle(title + "  (dotted: turning points)", fontsize=9)
    fig.tight_layout()
    return fig


def conditions_of(states: dict[str, dict]) -> list[tuple[str, list[dict], dict]]:
    """(label, member entries, stage clusters) per folder and condition."""
    rows = []
    for label, state in states.items():
        for key, condition in state.get("conditions", {}).items():
            entries = [state["members"][n] for n in condition["members"]]
            rows.append((f"{label}: {key}" if len(state["conditions"]) > 1 else label, entries, condition["stages"]))
    return rows


def figure_compare(states: dict[str, dict]):
    """Mean LLC per folder and condition against step and against cumulative lr."""
    import matplotlib.pyplot as plt
    fig, (by_step, by_lr) = plt.subplots(1, 2, figsize=(11, 4.2))
    for n, (label, entries, _) in enumerate(conditions_of(states)):
        steps, mean, counts = mean_curve(entries)
        full = counts == len(entries)  # joined where every seed has an estimate; open markers elsewhere
        for keep, style in ((full & (steps > 0), dict(ls="-", marker="o", ms=3, lw=1.5, label=label)),
                            (~full & (steps > 0), dict(ls="none", marker="o", ms=5, mfc="white"))):
            x = steps[keep].astype(int)
            by_step.plot(x, mean[keep], color=f"C{n}", **style)
            by_lr.plot(cumulative_lr(entries[0]["config"], x), mean[keep], color=f"C{n}", **style)
    by_step.set_xscale("log")
    by_step.set_xlabel("training step (log scale)")
    by_lr.set_xscale("log")
    by_lr.set_xlabel("cumulative learning rate Σ_{t<step} lr_t (log scale)")
    for ax in (by_step, by_lr):
        ax.set_ylabel("estimated LLC λ̂, mean over seeds")
        ax.legend(fontsize=7, title="open: mean over fewer seeds", title_fontsize=7)
    fig.tight_layout()
    return fig


def stages_table(states: dict[str, dict]) -> str:
    """Markdown: stage boundaries (median [range], members with one) and the mean curve's peak."""
    lines = ["| run | seeds | stage boundaries: median step [min-max] (seeds) | peak LLC | peak step |",
             "|---|---|---|---|---|"]
    for label, entries, clusters in conditions_of(states):
        steps, mean, _ = mean_curve(entries)
        bounds = ", ".join(f"{c['median_step']:,.0f} [{c['min_step']:,.0f}-{c['max_step']:,.0f}] ({c['members']})"
                           for c in clusters) or "none"
        peak = f"{mean.max():.1f} | {steps[mean.argmax()]:,.0f}" if len(mean) else "- | -"
        lines.append(f"| {label} | {len(entries)} | {bounds} | {peak} |")
    return "\n".join(lines) + "\n"


def pool_states(folders: list[Path], llc_file: str = LLC_FILE) -> dict:
    """The llc.json of one or several folders as one (members pooled, stages recomputed by the
    current rule over all of them, never read from the file);
    refused where their sampler settings differ, so estimates made differently are never mixed."""
    states = []
    for folder in folders:
        state = runlog.read_json(folder / llc_file)
        if state is None:
            raise SystemExit(f"{folder}/{llc_file} is missing: run `python -m icl.landscape sweep {folder}` first")
        states.append(state)
    if any(s["sampler"] != states[0]["sampler"] for s in states):
        raise SystemExit(f"{[str(f) for f in folders]}: their llc.json were made with different sampler settings; "
                         f"give them different --labels")
    pooled = {"sampler": states[0]["sampler"], "complete": all(s["complete"] for s in states),
              "members": {name: entry for s in states for name, entry in s["members"].items()}}
    summarise(pooled)
    return pooled


def draw_figures(folders: list[Path], out: Path, labels: list[str] | None, published: dict | None,
                 loss_steps: list[int] | None = None, llc_file: str = LLC_FILE) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels = labels or [Path(f).name for f in folders]
    if len(labels) != len(folders):
        raise SystemExit(f"{len(labels)} --labels for {len(folders)} folders: give one label per folder "
                         f"(repeat a label to pool folders, e.g. seeds run in two calls)")
    out.mkdir(parents=True, exist_ok=True)
    pooled: dict[str, list[Path]] = {}
    for folder, label in zip(folders, labels):
        pooled.setdefault(label, []).append(Path(folder))
    states, written = {}, []
    for label, group in pooled.items():
        state = pool_states(group, llc_file)
        # a sweep cut short is drawn as it stands: its name says so in every title, legend and
        # table, and its LLC markers show which checkpoints were estimated
        shown = label if state["complete"] else f"{label} (sweep incomplete: marked checkpoints only)"
        states[shown] = state
        logs = {log["run_name"]: log for log in runlog.load_run_logs(group).values()
                if log["run_name"] in state["members"]}
        for name, fig in (("llc", figure_llc(state, published, shown)),
                          ("stage_losses", figure_stage_losses(state, logs, shown, loss_steps)),
                          ("essential_dynamics", figure_essential_dynamics(state, shown))):
            written.append(out / f"{label}_{name}.png")
            fig.savefig(written[-1], dpi=130)
            plt.close(fig)
    if len(states) > 1:
        fig = figure_compare(states)
        written.append(out / "compare_llc.png")
        fig.savefig(written[-1], dpi=130)
        plt.close(fig)
    written.append(out / "stages.md")
    written[-1].write_text(stages_table(states))
    return written


# -- command line -------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m icl.landscape", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("sweep", help="estimate LLCs and essential dynamics into FOLDER/llc.json")
    run.add_argument("folders", nargs="+", type=Path, help="output folders of `python -m icl`")
    defaults = Sampler()
    run.add_argument("--epsilon", type=float, default=defaults.epsilon, help="SGLD step size (seed: 1e-3)")
    run.add_argument("--nbeta", type=float, default=defaults.nbeta, help="inverse temperature n*beta (seed: 60)")
    run.add_argument("--gamma", type=float, default=defaults.gamma, help="localisation strength (seed: 6)")
    run.add_argument("--chains", type=int, default=defaults.chains, help="chains per checkpoint (seed: 8)")
    run.add_argument("--burnin", type=int, default=defaults.burnin, help="burn-in steps, not averaged (seed: 500)")
    run.add_argument("--draws", type=int, default=defaults.draws, help="steps averaged (seed: 500)")
    run.add_argument("--grad-batch", type=int, default=defaults.grad_batch,
                     help="fresh sequences per SGLD step (seed: 1024)")
    run.add_argument("--init-batch", type=int, default=defaults.init_batch,
                     help="fixed sequences for L(w*) (seed: n = 131072); 0: the draws' own batches")
    run.add_argument("--seed", type=int, default=defaults.seed, help="SGLD noise and data seed (seed: 42)")
    run.add_argument("--group", type=int, default=None,
                     help="checkpoints per vectorised call; default 8 on CUDA (64 chains of batch 1024 "
                          "fill an H100, docs/landscape.md), 2 on the CPU")
    run.add_argument("--max-checkpoints", type=int, default=None,
                     help="per member, at most this many checkpoints, evenly spread in log step (default: all)")
    run.add_argument("--every", type=int, default=1, help="use every N-th checkpoint (default: all)")
    run.add_argument("--steps", type=int, nargs=2, metavar=("FIRST", "LAST"), default=None,
                     help="only the checkpoints with FIRST <= step <= LAST (default: all)")
    run.add_argument("--ed-batch", type=int, default=1024,
                     help="sequences whose full outputs the essential dynamics' PCA reads (seed: 1024)")
    run.add_argument("--ed-seed", type=int, default=0, help="seed of that fixed batch")
    run.add_argument("--limit", type=float, default=None,
                     help="seconds; no new group starts once the last group's time would pass it (default: none)")
    run.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                     help="where to sample (default: cuda when present, else cpu)")
    run.add_argument("--no-tf32", dest="tf32", action="store_false",
                     help="full fp32 matmuls on CUDA (TF32 is on by default: the sampler's noise, "
                          "sqrt(eps)=0.03 per weight per step, dwarfs TF32's rounding)")
    run.add_argument("--backend", choices=("vmap", "ensemble"), default="vmap",
                     help="vmap: icl.llc.estimate_llcs; ensemble: icl.llc_ensemble, chains as ensemble members "
                          "in one CUDA graph, about 3x vmap's speed on a GPU with the same estimates "
                          "(experiments/llc_backend_bench.py; docs/results_icl.md)")
    figs = commands.add_parser("figures", help="draw the figures and the stages table from llc.json")
    for command in (run, figs):
        command.add_argument("--llc-file", default=LLC_FILE,
                             help="the estimates' file in each folder: a sweep with other sampler settings (say a "
                                  "smaller --epsilon) needs a name of its own, since a file holds one setting")
    figs.add_argument("folders", nargs="+", type=Path)
    figs.add_argument("--out", type=Path, required=True, help="folder for the PNGs and stages.md")
    figs.add_argument("--loss-steps", nargs="+", type=int, default=None,
                      help="steps for the per-position loss panels (default: the median stage boundaries; "
                           "give steps where the LLC checkpoints are too sparse to place them)")
    figs.add_argument("--labels", nargs="+", default=None, help="one per folder (default: folder names); folders given the same label are pooled")
    figs.add_argument("--published", type=Path, default=PUBLISHED_CSV,
                      help="timaeus' LLC trajectory CSV to overlay (skipped when missing)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "figures":
        published = load_published(args.published) if args.published.exists() else None
        if published is None:
            print(f"warning: {args.published} not found; figures drawn without the published LLC", file=sys.stderr)
        for path in draw_figures(args.folders, args.out, args.labels, published, args.loss_steps, args.llc_file):
            print(path)
        return 0
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
    sampler = Sampler(epsilon=args.epsilon, nbeta=args.nbeta, gamma=args.gamma, chains=args.chains,
                      burnin=args.burnin, draws=args.draws, grad_batch=args.grad_batch,
                      init_batch=args.init_batch, seed=args.seed)
    group = args.group or (8 if device.type == "cuda" else 2)
    deadline = None if args.limit is None else clock() + args.limit
    complete = True
    for folder in args.folders:
        complete = sweep(folder, sampler, group=group, max_checkpoints=args.max_checkpoints, every=args.every,
                         ed_batch=args.ed_batch, ed_seed=args.ed_seed, deadline=deadline, device=device,
                         backend=args.backend, llc_file=args.llc_file, steps=args.steps) and complete
    print("complete" if complete else "stopped at --limit; rerun the same command to continue")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
