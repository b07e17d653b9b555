"""Figures and tables from icl run logs.

    python -m icl.figures curve runs/icl-garg --out icl_curve.png
        the final per-position loss of every run in the folder (seed mean, min-max band) against
        the baselines on the same eval batch, and the last position's loss over training
    python -m icl.figures transfer runs/icl-w64 runs/icl-w256 --by width --out icl_transfer.png
        final eval loss against lr, one curve per value of --by (width, depth, steps or warmup, the
        warmup's fraction of the run), SP beside µP, with each curve's optimum from a parabola fitted
        in log lr (and its spread over seeds)
    python -m icl.figures transfer runs/icl-warmup-w* --by warmup --panel width --out w.png --summary o.png
        the same with a row of panels per value of --panel (a second axis of the grid), and with
        --summary a second figure: each curve's optimum (per-seed spread) and lowest loss against --by

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

AXES = ("width", "depth", "steps", "warmup")
AXIS_LABELS = {"width": "width (residual channels)", "depth": "depth (blocks)", "steps": "training steps",
               "warmup": "warmup (fraction of the run's steps)"}
PARAM_NAMES = {"sp": "SP", "mup": "µP", "umup": "u-µP"}
TASK_LOSS = {"affine": "L1", "garg": "MSE"}


def final_loss(log: dict, eval_set: str = "valid") -> float | None:
    """A completed run's final loss on eval_set, else None."""
    if log["status"] != runlog.COMPLETED or not log["curve"]:
        return None
    return log["curve"][-1]["eval"].get(eval_set, {}).get("loss")


def axis_value(config: dict, axis: str) -> float:
    """A run's value along an axis of the grid: its config's, but for warmup, which runs of
    different lengths share as a fraction of the run (its steps alone would not compare across lengths)."""
    if axis == "warmup":
        return round(config["warmup_steps"] / config["steps"], 6)
    return config[axis]


def transfer_table(logs: list[dict], by: str, eval_set: str = "valid") -> dict:
    """{(param, value of `by`): {"lrs": [...], "mean": [...], "std": [...], "n": [...],
    "optimum": lr of the mean curve, "edge": grid_edge of the mean curve,
    "seed_optima": [per-seed optimum]}}."""
    cells = defaultdict(lambda: defaultdict(dict))  # (param, value) -> lr -> seed -> loss
    for log in logs:
        c = log["config"]
        value = axis_value(c, by)
        runs_here = cells[(c["param"], value)][c["lr"]]
        if c["seed"] in runs_here:
            raise ValueError(f"two runs at {c['param']} {by} {value} lr {c['lr']} seed {c['seed']} differ in "
                             f"another axis: pass only the folders of the {by} axis (e.g. runs/icl_transfer/*_d2_s4000)"
                             f" or split them with --panel")
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


def transfer_tables(logs: list[dict], by: str, panel: str | None = None, eval_set: str = "valid") -> dict:
    """{value of `panel`: transfer_table of its runs}, in order; {None: the one table} without a panel."""
    if panel is None:
        return {None: transfer_table(logs, by, eval_set)}
    groups = defaultdict(list)
    for log in logs:
        groups[axis_value(log["config"], panel)].append(log)
    return {value: transfer_table(groups[value], by, eval_set) for value in sorted(groups)}


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


def panel_title(param: str, panel: str | None, value) -> str:
    return PARAM_NAMES[param] + (f", {panel} {value}" if panel else "")


def plot_transfer(tables: dict, by: str, path: Path, loss_name: str = "loss", panel: str | None = None) -> None:
    """Final loss against lr, a column per parametrization (SP, µP, u-µP order) and a row per value
    of `panel` (transfer_tables' keys), a curve per value of `by`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    params = [p for p in PARAM_NAMES if any(key[0] == p for table in tables.values() for key in table)]
    values = sorted({v for table in tables.values() for _, v in table})
    colour_of = dict(zip(values, plt.cm.viridis(np.linspace(0, 0.9, len(values)))))  # same colour in every panel
    fig, axes = plt.subplots(len(tables), len(params), figsize=(5.5 * len(params), 4.3 * len(tables)),
                             squeeze=False, sharey=True)
    for ax_row, (panel_value, table) in zip(axes, tables.items()):
        for ax, param in zip(ax_row, params):
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
            ax.set_title(panel_title(param, panel, panel_value), fontsize=11)
            ax.legend(fontsize=8)
        ax_row[0].set_ylabel(f"final held-out {loss_name} (mean ± sd over seeds)")
    fig.suptitle("final held-out loss against learning rate; dotted lines: optimum fitted in log lr", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_optima(tables: dict, by: str, path: Path, loss_name: str = "loss", panel: str | None = None) -> None:
    """Per curve of plot_transfer, against its value of `by`: the fitted optimum with the per-seed
    optima's range, and the lowest mean loss (± sd at that lr), a line per parametrization and panel."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    values = sorted({v for table in tables.values() for _, v in table})
    lines = [(param, panel_value) for panel_value, table in tables.items() for param in PARAM_NAMES
             if any(p == param for p, _ in table)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.8))
    for i, (param, panel_value) in enumerate(lines):
        rows = {v: row for (p, v), row in tables[panel_value].items() if p == param and row["seed_optima"]}
        # the axis's values as evenly spaced positions (warmup has 0), each line nudged aside so that
        # lines of the same runs (SP and µP at the base width) stay visible
        x = np.array([values.index(v) for v in rows]) + 0.06 * (i - (len(lines) - 1) / 2)
        optimum = np.array([row["optimum"] for row in rows.values()])
        seeds = np.array([(min(row["seed_optima"]), max(row["seed_optima"])) for row in rows.values()])
        best = [min((m, j) for j, m in enumerate(row["mean"]) if m is not None)[1] for row in rows.values()]
        label = panel_title(param, panel, panel_value)
        # a bar, not error bars: the mean curve's optimum may lie outside its seeds' range
        line, = left.plot(x, optimum, marker="o", label=label)
        colour = line.get_color()
        left.vlines(x, seeds[:, 0], seeds[:, 1], color=colour, lw=3, alpha=0.4)
        for xi, lr, row in zip(x, optimum, rows.values()):
            if row["edge"]:  # not bracketed: the optimum lies at or beyond this edge of the grid
                left.plot(xi, lr, marker="^" if row["edge"] == "high" else "v", ms=12, mfc="none", color=colour)
        lowest = np.array([row["mean"][j] for row, j in zip(rows.values(), best)])
        right.errorbar(x, lowest, yerr=[row["std"][j] for row, j in zip(rows.values(), best)], marker="o", capsize=3,
                       label=label, color=colour)
        right.plot(x[lowest.argmin()], lowest.min(), marker="*", ms=16, mfc="none", color=colour)
    for ax in (left, right):
        ax.set_xticks(range(len(values)), [f"{v:g}" for v in values])
        ax.set_xlabel(AXIS_LABELS[by])
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    left.set_ylabel("optimum lr (mean curve; bars: per-seed optima min-max)")
    right.set_ylabel(f"lowest mean final {loss_name} (± sd at its lr)")
    fig.suptitle(f"the lr optimum and the best loss against {by}\nopen triangles: the optimum at the grid's top "
                 f"or bottom lr, not bracketed; stars: each line's best {by}", fontsize=10)
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
    p.add_argument("--by", choices=AXES, default="width", help="transfer: the curve per value of (default: width)")
    p.add_argument("--panel", choices=AXES, default=None, help="transfer: a row of panels per value of (default: none)")
    p.add_argument("--summary", type=Path, default=None,
                   help="transfer: also write this PNG, the optima and lowest losses against --by")
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
            tables = transfer_tables(logs, args.by, args.panel, args.eval_set)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return runlog.EXIT_BAD_INPUT
        for panel_value, table in tables.items():
            print(("" if args.panel is None else f"{args.panel} {panel_value}:\n") + transfer_markdown(table, args.by))
        plot_transfer(tables, args.by, args.out, loss_name, args.panel)
        if args.summary:
            plot_optima(tables, args.by, args.summary, loss_name, args.panel)
            print(f"wrote {args.summary}", file=sys.stderr)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
