"""Figures and tables from icl run logs.

    python -m icl.figures curve runs/icl-garg --out icl_curve.png
        the final per-position loss of every run in the folder (seed mean, min-max band) against
        the baselines on the same eval batch, and the last position's loss over training
    python -m icl.figures transfer runs/icl-w64 runs/icl-w256 --by width --out icl_transfer.png
        final eval loss against lr, one curve per value of --by (width, depth or steps), SP beside
        µP, with each curve's optimum from a parabola fitted in log lr (and its spread over seeds)

The optimum and whether the grid brackets it: plots.lr_optimum's rule, the one every study uses
(a parabola in log2(lr) around the lowest point; a table marks an optimum at the grid's edge with
<= or >=). Runs that diverged or did not finish count as missing points.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

import runlog
from plots.lr_optimum import grid_edge, lr_optimum

BY_KEYS = {"width": "width", "depth": "depth", "steps": "steps"}
PARAM_NAMES = {"sp": "SP", "mup": "µP", "umup": "u-µP"}
TASK_LOSS = {"affine": "L1", "garg": "MSE"}


def final_loss(log: dict, eval_set: str = "valid") -> float | None:
    """A completed run's final loss on eval_set, else None."""
    if log["status"] != runlog.COMPLETED or not log["curve"]:
        return None
    return log["curve"][-1]["eval"].get(eval_set, {}).get("loss")


def transfer_table(logs: list[dict], by: str, eval_set: str = "valid") -> dict:
    """{(param, value of `by`): {"lrs": [...], "mean": [...], "std": [...], "n": [...],
    "optimum": lr of the mean curve, "edge": grid_edge of the mean curve,
    "seed_optima": [per-seed optimum]}}."""
    key_name = BY_KEYS[by]
    cells = defaultdict(lambda: defaultdict(dict))  # (param, value) -> lr -> seed -> loss
    for log in logs:
        c = log["config"]
        runs_here = cells[(c["param"], c[key_name])][c["lr"]]
        if c["seed"] in runs_here:
            raise ValueError(f"two runs at {c['param']} {by} {c[key_name]} lr {c['lr']} seed {c['seed']} differ in "
                             f"another axis: pass only the folders of the {by} axis (e.g. runs/icl_transfer/*_d2_s4000)")
        runs_here[c["seed"]] = final_loss(log, eval_set)
    table = {}
    for key, by_lr in sorted(cells.items()):
        lrs = sorted(by_lr)
        finite = [[v for v in by_lr[lr].values() if v is not None and math.isfinite(v)] for lr in lrs]
        mean = [statistics.fmean(v) if v else None for v in finite]
        seeds = sorted({s for lr in lrs for s in by_lr[lr]})
        seed_optima = [lr_optimum(lrs, [by_lr[lr].get(s) for lr in lrs]) for s in seeds]
        table[key] = {"lrs": lrs, "mean": mean, "std": [statistics.stdev(v) if len(v) > 1 else 0.0 for v in finite],
                      "n": [len(v) for v in finite], "optimum": lr_optimum(lrs, mean),
                      "edge": grid_edge(lrs, mean),
                      "seed_optima": [o for o in seed_optima if o is not None]}
    return table


def transfer_markdown(table: dict, by: str) -> str:
    """The table as markdown; an optimum not bracketed by the grid reads ">= last lr" or "<= first lr"."""
    lines = [f"| param | {by} | optimum lr (mean curve) | per-seed optima (min-max) | best mean loss |",
             "|---|---:|---:|---:|---:|"]
    for (param, value), row in table.items():
        best = min((m for m in row["mean"] if m is not None), default=None)
        if best is None:
            lines.append(f"| {param} | {value} | - | - | - |")
            continue
        spread = (f"{min(row['seed_optima']):.3g}-{max(row['seed_optima']):.3g}" if row["seed_optima"] else "-")
        edge_lr = {"low": min(row["lrs"]), "high": max(row["lrs"])}.get(row["edge"])
        optimum = (f"{'<=' if row['edge'] == 'low' else '>='} {edge_lr:.3g}" if edge_lr
                   else f"{row['optimum']:.3g}" if row["optimum"] else "-")
        lines.append(f"| {param} | {value} | {optimum} | {spread} | {best:.4g} |")
    return "\n".join(lines)


def plot_transfer(table: dict, by: str, path: Path, loss_name: str = "loss") -> None:
    """Final loss against lr, a panel per parametrization (SP, µP, u-µP order), a curve per value."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    params = [p for p in PARAM_NAMES if any(key[0] == p for key in table)]
    values = sorted({v for _, v in table})
    colour_of = dict(zip(values, plt.cm.viridis(np.linspace(0, 0.9, len(values)))))  # same colour in every panel
    fig, axes = plt.subplots(1, len(params), figsize=(5.5 * len(params), 4.3), squeeze=False, sharey=True)
    for ax, param in zip(axes[0], params):
        rows = [(v, row) for (p, v), row in table.items() if p == param]
        for value, row in rows:
            colour = colour_of[value]
            pts = [(lr, m, s) for lr, m, s in zip(row["lrs"], row["mean"], row["std"]) if m is not None]
            if not pts:
                continue
            lrs, mean, std = map(np.array, zip(*pts))
            ax.errorbar(lrs, mean, yerr=std, color=colour, marker="o", ms=3, capsize=2, label=f"{by} {value}")
            if row["optimum"]:
                ax.axvline(row["optimum"], color=colour, ls=":", lw=1.2)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("peak learning rate")
        ax.set_title(f"{PARAM_NAMES[param]}", fontsize=11)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel(f"final held-out {loss_name} (mean ± sd over seeds)")
    fig.suptitle("final held-out loss against learning rate; dotted lines: optimum fitted in log lr", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curve(logs: list[dict], path: Path, eval_set: str = "valid", loss_name: str = "loss") -> None:
    """Final per-position loss against the baselines, and the last position's loss over steps."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    done = [log for log in logs if final_loss(log, eval_set) is not None]
    assert done, "no completed run with that eval set; check the folder and --eval-set"
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    final = np.array([log["curve"][-1]["eval"][eval_set]["per_position"] for log in done])
    k = np.arange(final.shape[1])
    left.plot(k, final.mean(0), "k-o", ms=3, label=f"model (mean of {len(done)} runs)")
    left.fill_between(k, final.min(0), final.max(0), color="k", alpha=0.15)
    for name, values in done[0]["curve"][-1]["eval"][eval_set]["baselines"].items():
        clipped = [v if v is not None and v < 10 * final.max() else np.nan for v in values]
        left.plot(k, clipped, "--", label=name)
    left.set_yscale("log")
    left.set_xlabel("context position k (examples seen)")
    left.set_ylabel(f"held-out {loss_name} at position k")
    left.set_title("final step: model against the baselines", fontsize=10)
    left.legend(fontsize=8)
    for log in done:
        steps = [p["step"] for p in log["curve"] if p["step"] > 0]
        last = [p["eval"][eval_set]["last_position"] for p in log["curve"] if p["step"] > 0]
        right.plot(steps, last, lw=1, alpha=0.7)
    ridge = done[0]["curve"][-1]["eval"][eval_set]["baselines"].get("ridge")
    if ridge:
        right.axhline(ridge[-1], color="k", ls="--", label="ridge (Bayes) at the last position")
        right.legend(fontsize=8)
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("step")
    right.set_ylabel(f"held-out {loss_name} at the last position")
    right.set_title("over training, one line per run", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m icl.figures", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("kind", choices=("curve", "transfer"))
    p.add_argument("dirs", nargs="+", type=Path, help="folders of icl run logs")
    p.add_argument("--by", choices=tuple(BY_KEYS), default="width", help="transfer: the curve per value of (default: width)")
    p.add_argument("--eval-set", default="valid", help="(default: %(default)s)")
    p.add_argument("--out", type=Path, required=True, help="the PNG to write")
    args = p.parse_args(argv)
    logs = [log for log in runlog.load_run_logs(args.dirs).values() if log["run_name"].startswith("icl-")]
    if not logs:
        print(f"error: no icl run logs in {[str(d) for d in args.dirs]}", file=sys.stderr)
        return runlog.EXIT_BAD_INPUT
    tasks = {log["config"].get("task") for log in logs}
    loss_name = TASK_LOSS.get(tasks.pop(), "loss") if len(tasks) == 1 else "loss"
    if args.kind == "curve":
        plot_curve(logs, args.out, args.eval_set, loss_name)
    else:
        try:
            table = transfer_table(logs, args.by, args.eval_set)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return runlog.EXIT_BAD_INPUT
        print(transfer_markdown(table, args.by))
        plot_transfer(table, args.by, args.out, loss_name)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
