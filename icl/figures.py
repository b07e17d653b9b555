"""Figures and tables from icl run logs.

    python -m icl.figures curve runs/icl-garg --out icl_curve.png
        the final per-position loss of every run in the folder (seed mean, min-max band) against
        the baselines on the same eval batch, and the last position's loss over training
    python -m icl.figures transfer runs/icl-w64 runs/icl-w256 --by width --out icl_transfer.png
        final eval loss against lr, one curve per value of --by (width, depth or steps), SP beside
        µP, with each curve's optimum from a parabola fitted in log lr (and its spread over seeds)

The optimum: a parabola in log2(lr) through the lowest point and its two neighbours on each side
that exist (3 to 5 points), least squares; its vertex, clipped to the grid's range. Runs that
diverged or did not finish count as missing points.
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

BY_KEYS = {"width": "width", "depth": "depth", "steps": "steps"}


def final_loss(log: dict, eval_set: str = "valid") -> float | None:
    """A completed run's final loss on eval_set, else None."""
    if log["status"] != runlog.COMPLETED or not log["curve"]:
        return None
    return log["curve"][-1]["eval"].get(eval_set, {}).get("loss")


def lr_optimum(lrs: list[float], losses: list[float]) -> float | None:
    """The lr at the vertex of a parabola in log2(lr) fitted around the lowest loss (docstring)."""
    points = sorted((lr, loss) for lr, loss in zip(lrs, losses) if loss is not None and math.isfinite(loss))
    if len(points) < 3:
        return None
    best = min(range(len(points)), key=lambda i: points[i][1])
    window = points[max(0, best - 2):best + 3]
    x = np.log2([lr for lr, _ in window])
    y = np.array([loss for _, loss in window])
    a, b, _ = np.polyfit(x, y, 2)
    if a <= 0:  # no minimum in the window: the lowest point is the estimate
        return points[best][0]
    vertex = float(np.clip(-b / (2 * a), np.log2(points[0][0]), np.log2(points[-1][0])))
    return 2.0 ** vertex


def transfer_table(logs: list[dict], by: str, eval_set: str = "valid") -> dict:
    """{(param, value of `by`): {"lrs": [...], "mean": [...], "std": [...], "n": [...],
    "optimum": lr of the mean curve, "seed_optima": [per-seed optimum]}}."""
    key_name = BY_KEYS[by]
    cells = defaultdict(lambda: defaultdict(dict))  # (param, value) -> lr -> seed -> loss
    for log in logs:
        c = log["config"]
        cells[(c["param"], c[key_name])][c["lr"]][c["seed"]] = final_loss(log, eval_set)
    table = {}
    for key, by_lr in sorted(cells.items()):
        lrs = sorted(by_lr)
        finite = [[v for v in by_lr[lr].values() if v is not None and math.isfinite(v)] for lr in lrs]
        mean = [statistics.fmean(v) if v else None for v in finite]
        seeds = sorted({s for lr in lrs for s in by_lr[lr]})
        seed_optima = [lr_optimum(lrs, [by_lr[lr].get(s) for lr in lrs]) for s in seeds]
        table[key] = {"lrs": lrs, "mean": mean, "std": [statistics.stdev(v) if len(v) > 1 else 0.0 for v in finite],
                      "n": [len(v) for v in finite], "optimum": lr_optimum(lrs, mean),
                      "seed_optima": [o for o in seed_optima if o is not None]}
    return table


def transfer_markdown(table: dict, by: str) -> str:
    lines = [f"| param | {by} | optimum lr (mean curve) | per-seed optima (min-max) | best mean loss |",
             "|---|---:|---:|---:|---:|"]
    for (param, value), row in table.items():
        best = min((m for m in row["mean"] if m is not None), default=None)
        spread = (f"{min(row['seed_optima']):.3g}-{max(row['seed_optima']):.3g}" if row["seed_optima"] else "-")
        optimum = f"{row['optimum']:.3g}" if row["optimum"] else "-"
        lines.append(f"| {param} | {value} | {optimum} | {spread} | {best:.4g} |" if best is not None
                     else f"| {param} | {value} | - | - | - |")
    return "\n".join(lines)


def plot_transfer(table: dict, by: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    params = sorted({p for p, _ in table})
    fig, axes = plt.subplots(1, len(params), figsize=(5.5 * len(params), 4), squeeze=False, sharey=True)
    for ax, param in zip(axes[0], params):
        rows = [(v, row) for (p, v), row in table.items() if p == param]
        colours = plt.cm.viridis(np.linspace(0, 0.9, len(rows)))
        for colour, (value, row) in zip(colours, rows):
            pts = [(lr, m, s) for lr, m, s in zip(row["lrs"], row["mean"], row["std"]) if m is not None]
            if not pts:
                continue
            lrs, mean, std = map(np.array, zip(*pts))
            ax.errorbar(lrs, mean, yerr=std, color=colour, marker="o", ms=3, capsize=2, label=f"{by} {value}")
            if row["optimum"]:
                ax.axvline(row["optimum"], color=colour, ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("peak lr")
        ax.set_title(f"{param}: final eval loss (mean ± sd over seeds); dotted: fitted optimum")
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("final eval loss")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curve(logs: list[dict], path: Path, eval_set: str = "valid") -> None:
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
    left.set_ylabel("loss at position k")
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
    right.set_ylabel("loss at the last position")
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
    if args.kind == "curve":
        plot_curve(logs, args.out, args.eval_set)
    else:
        table = transfer_table(logs, args.by, args.eval_set)
        print(transfer_markdown(table, args.by))
        plot_transfer(table, args.by, args.out)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
