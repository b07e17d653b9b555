"""The fair µP-against-SP study (experiments/fair_study.sh): its summary table and figures.

    python -m plots.fair_study RUNS_DIR --out plots/fair_study [--format png|pdf]

reads the study's folders under RUNS_DIR (FOLDERS; any of them may be missing) and writes
OUT/summary.md and the figures, for the main eval set (books 'valid') and 'wikitext'. Every arm
runs hlb-gpt's recipe with one microbatch a step, and a seed draws the same batches in every
cell, so two cells compare by their difference paired seed by seed.

* Width: µP-hlb (lr MUP_LR) against SP-hlb (hlb-gpt's lr law at its width, read from the logs)
  at warmup 2.5M. At BASE_WIDTH µP-hlb is SP-hlb bit for bit, so one set of runs (fair_w384,
  param mup) stands for both and their difference is 0 by construction, not measured.
* Warmup: µP-hlb at MUP_LR, warmups 0, 2.5M and 10M at each width, each against warmup 0.
* Learning rate at BASE_WIDTH: per warmup, the optimum of the seed-mean final losses by
  plots.lr_optimum's rule (the one the in-context study uses: a parabola in log2(lr) around the
  lowest point); an optimum at the grid's first or last lr is reported as not bracketed.
* Single changes (VARIANTS): one change to one cell, run in its own folder on the same seeds
  (no sequence-length warmup; u-µP; each u-µP alpha multiplier halved or doubled), against
  the cell it changes, paired by seed. Their folders hold cells that share the study's keys
  (param, width, lr, warmup, seed), so each folder is read on its own.

Noise, one definition (analysis.seed_statistics): every ± is the half-width of the 95 % t-interval
of a seed mean, or of a paired difference, over its n seeds. One seed gives a mean without an
interval, and no band or error bar is drawn from one. Cells without a completed run are skipped.

Figures per eval set SET: final_vs_width_SET, final_vs_warmup_SET, final_vs_lr_w384_SET,
single_changes_SET (each change's paired difference from its reference), and for
each width and parametrization with two or more warmups at its lr the warmup-coloured loss curves
of `figures.plot_group_curves`, one seed-mean curve per warmup (curves_SET_<group>).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from plots import analysis, figures, lr_optimum
from plots.analysis import RunLog, SeedStatistics
import matplotlib.pyplot as plt  # after plots.figures, which selects the headless backend
from runlog import RunLogError, atomic_write_bytes

FOLDERS = ("fair_hlb_w192", "fair_w384", "fair_hlb_w768", "fair_hlb_w1536", "fair_mup_warmup",
           "fair_mup_warmup_w1536")
EVAL_SETS = (analysis.MAIN_EVAL_SET, "wikitext")
WIDTHS = (192, 384, 768, 1536)
BASE_WIDTH = 384  # µP's --base-width: µP-hlb is SP-hlb here
MUP_LR = 2.5e-3
COMPARISON_WARMUP = 2_500_000
WARMUPS = (0, 2_500_000, 10_000_000)
ARMS = {"mup": f"µP-hlb (lr {analysis.format_lr(MUP_LR)})", "sp": "SP-hlb (hlb-gpt's lr law)"}


@dataclass(frozen=True)
class Variant:
    """One change to one cell, run at COMPARISON_WARMUP in its own folder on the study's seeds."""

    label: str
    folder: str
    width: int
    reference: str | None  # the folder of the cell it changes; None: µP-hlb at this width


UMUP_ALPHAS = ("attn", "act", "residual", "loss")  # experiments/fair_study.sh umup_alpha's flags
VARIANTS = (
    Variant("no sequence-length warmup (--seq-len-start 1024)", "fair_seqlen1024", BASE_WIDTH, None),
    Variant("u-µP (lr 1, its own recipe)", "fair_umup", BASE_WIDTH, None),
    Variant("u-µP (lr 1, its own recipe)", "fair_umup", 1536, None),
    *(Variant(f"u-µP, α {alpha} × {value}", f"fair_umup_alpha_{alpha}_{value}", BASE_WIDTH, "fair_umup")
      for alpha in UMUP_ALPHAS for value in ("0.5", "2")),
)


def loss_label(eval_set: str) -> str:
    return f"final {eval_set} loss (nats/token)"


# ----------------------------------------------------------------------------------------------
# Cells

def load_study(folders: list[Path]) -> list[RunLog]:
    """The run logs of the study's folders; a cell logged twice, or SP-hlb at two lrs at one
    width, raises ValueError (the folders then hold more than this study)."""
    runs, seen = analysis.load_run_logs(folders), {}
    for run in runs:
        cell = (run.param, run.width, run.lr, run.warmup_tokens, run.seed)
        if cell in seen:
            raise ValueError(f"{run.path} and {seen[cell]} are one cell: keep one of them")
        seen[cell] = run.path
    for width in WIDTHS:
        if len(sp_lrs := {run.lr for run in runs if run.param == "sp" and run.width == width}) > 1:
            raise ValueError(f"SP at width {width} ran at lrs {sorted(sp_lrs)}: the study has one per width")
    return runs


def seed_losses(runs: list[RunLog], eval_set: str, param: str, width: int, warmup: int,
                lr: float) -> dict[int, float]:
    """Seed -> final loss of the cell's completed runs."""
    return {run.seed: run.final_loss(eval_set) for run in runs
            if (run.param, run.width, run.warmup_tokens) == (param, width, warmup)
            and run.lr is not None and math.isclose(run.lr, lr) and run.final_loss(eval_set) is not None}


def stats(losses: dict[int, float]) -> SeedStatistics | None:
    return analysis.seed_statistics(losses.values()) if losses else None


@dataclass(frozen=True)
class WidthRow:
    """µP-hlb against SP-hlb at one width, warmup 2.5M."""

    width: int
    mup: SeedStatistics | None
    sp: SeedStatistics | None  # at BASE_WIDTH µP's own statistics: the same runs
    sp_lr: float | None
    difference: SeedStatistics | None  # µP − SP paired by seed; None at BASE_WIDTH (0 by construction)


def width_rows(runs: list[RunLog], eval_set: str) -> list[WidthRow]:
    rows = []
    for width in WIDTHS:
        mup = seed_losses(runs, eval_set, "mup", width, COMPARISON_WARMUP, MUP_LR)
        if width == BASE_WIDTH:
            sp_lr, sp = MUP_LR, mup
        else:
            sp_lr = next((run.lr for run in runs if run.param == "sp" and run.width == width), None)
            sp = {} if sp_lr is None else seed_losses(runs, eval_set, "sp", width, COMPARISON_WARMUP, sp_lr)
        if mup or sp:
            rows.append(WidthRow(width, stats(mup), stats(sp), sp_lr, None if width == BASE_WIDTH
                                 else analysis.paired_difference(mup, sp)))
    return rows


@dataclass(frozen=True)
class WarmupRow:
    """µP-hlb at MUP_LR at one width: per warmup with a completed run, its statistics and its
    difference from warmup 0 paired by seed."""

    width: int
    cells: dict[int, SeedStatistics]
    against_zero: dict[int, SeedStatistics]


def warmup_rows(runs: list[RunLog], eval_set: str) -> list[WarmupRow]:
    rows = []
    for width in WIDTHS:
        losses = {warmup: seed_losses(runs, eval_set, "mup", width, warmup, MUP_LR) for warmup in WARMUPS}
        losses = {warmup: cell for warmup, cell in losses.items() if cell}
        if not losses:
            continue
        differences = {warmup: analysis.paired_difference(losses[warmup], losses[0])
                       for warmup in losses if warmup != 0 and 0 in losses}
        rows.append(WarmupRow(width, {warmup: stats(cell) for warmup, cell in losses.items()},
                              {warmup: d for warmup, d in differences.items() if d is not None}))
    return rows


@dataclass(frozen=True)
class VariantRow:
    variant: Variant
    cell: SeedStatistics
    reference: SeedStatistics | None
    difference: SeedStatistics | None  # variant − reference, paired by seed


def folder_losses(runs: list[RunLog], eval_set: str, width: int) -> dict[int, float]:
    """Seed -> final loss of one folder's completed runs at a width."""
    return {run.seed: run.final_loss(eval_set) for run in runs
            if run.width == width and run.final_loss(eval_set) is not None}


def variant_rows(runs: list[RunLog], variant_runs: dict[str, list[RunLog]], eval_set: str) -> list[VariantRow]:
    """VARIANTS with a completed run (variant_runs: folder -> its run logs)."""
    rows = []
    for variant in VARIANTS:
        losses = folder_losses(variant_runs.get(variant.folder, []), eval_set, variant.width)
        if not losses:
            continue
        reference = (seed_losses(runs, eval_set, "mup", variant.width, COMPARISON_WARMUP, MUP_LR)
                     if variant.reference is None else
                     folder_losses(variant_runs.get(variant.reference, []), eval_set, variant.width))
        rows.append(VariantRow(variant, stats(losses), stats(reference), analysis.paired_difference(losses, reference)))
    return rows


def reference_label(variant: Variant) -> str:
    return ARMS["mup"] if variant.reference is None else next(
        other.label for other in VARIANTS if other.folder == variant.reference)


def lr_table(runs: list[RunLog], eval_set: str) -> dict[int, dict[float, SeedStatistics]]:
    """Warmup -> lr -> statistics of µP-hlb at BASE_WIDTH, cells with a completed run."""
    lrs = sorted({run.lr for run in runs if run.param == "mup" and run.width == BASE_WIDTH})
    table = {}
    for warmup in WARMUPS:
        column = {lr: stats(seed_losses(runs, eval_set, "mup", BASE_WIDTH, warmup, lr)) for lr in lrs}
        if column := {lr: cell for lr, cell in column.items() if cell is not None}:
            table[warmup] = column
    return table


def fit_lr(column: dict[float, SeedStatistics]) -> lr_optimum.LrFit:
    return lr_optimum.fit(list(column), [cell.mean for cell in column.values()])


def fit_text(fit: lr_optimum.LrFit) -> str:
    """One line of the summary and the figure's legend."""
    best = f"best grid lr {analysis.format_lr(fit.best_grid_lr)}"
    if fit.optimum is None:
        return f"{len(fit.lrs)} lr(s), fewer than {lr_optimum.MIN_POINTS}: no fit; {best}"
    if fit.edge:
        return (f"lowest at the grid's {'first' if fit.edge == 'low' else 'last'} lr: optimum "
                f"{'<=' if fit.edge == 'low' else '>='} {analysis.format_lr(fit.best_grid_lr)} (not bracketed)")
    return f"fitted optimum {analysis.format_lr(float(f'{fit.optimum:.3g}'))} ({len(fit.window)} lrs in the fit); {best}"


# ----------------------------------------------------------------------------------------------
# Summary

def cell_text(cell: SeedStatistics | None, signed: bool = False) -> str:
    return "–" if cell is None else f"{cell.text(signed)} (n={cell.n})"


def summary_markdown(runs: list[RunLog], eval_sets: list[str],
                     variant_runs: dict[str, list[RunLog]] | None = None) -> str:
    t = analysis.format_tokens
    variant_runs = variant_runs or {}
    every_run = runs + [run for folder in variant_runs.values() for run in folder]
    folders = sorted({run.path.parent.name for run in every_run})
    left_out = [f"{run.path.parent.name}/{run.name} ({run.status})" for run in every_run if run.outcome != "completed"]
    lines = ["# The fair study: µP-hlb against SP-hlb", "",
             f"{len(every_run)} run logs from {', '.join(folders)}; not counted (not completed): "
             f"{', '.join(left_out) or 'none'}.", "",
             f"Noise: every ± is the half-width of the {analysis.CONFIDENCE:.0%} t-interval (n − 1 "
             "degrees of freedom) of a seed mean, or of a difference paired seed by seed (a seed draws "
             "the same batches in every cell); n is the number of seeds or pairs. No interval from one "
             "seed; '–': no completed run. Losses are final losses in nats/token.", ""]
    for eval_set in eval_sets:
        lines += [f"## Eval set: {eval_set}", "",
                  f"### µP-hlb against SP-hlb across width, warmup {t(COMPARISON_WARMUP)}", "",
                  f"| width | {ARMS['mup']} | {ARMS['sp']} | SP lr | µP − SP (paired) |", "|---|---|---|---|---|"]
        for row in width_rows(runs, eval_set):
            same = row.width == BASE_WIDTH
            lines.append(f"| {row.width} | {cell_text(row.mup)} | "
                         f"{'= µP (same runs)' if same else cell_text(row.sp)} | "
                         f"{'–' if row.sp_lr is None else analysis.format_lr(float(f'{row.sp_lr:.3g}'))} | "
                         f"{'0 (not applicable)' if same else cell_text(row.difference, signed=True)} |")
        lines += ["", f"{BASE_WIDTH}: one set of runs; µP = SP at the base width (fair_w384, lr "
                  f"{analysis.format_lr(MUP_LR)}, warmup {t(COMPARISON_WARMUP)}).", "",
                  f"### µP-hlb warmup per width, lr {analysis.format_lr(MUP_LR)}", "",
                  "| width | " + " | ".join(f"warmup {t(w)}" for w in WARMUPS) + " | "
                  + " | ".join(f"{t(w)} − 0 (paired)" for w in WARMUPS[1:]) + " |",
                  "|---|" + "---|" * (2 * len(WARMUPS) - 1)]
        for row in warmup_rows(runs, eval_set):
            lines.append(f"| {row.width} | " + " | ".join(cell_text(row.cells.get(w)) for w in WARMUPS)
                         + " | " + " | ".join(cell_text(row.against_zero.get(w), signed=True)
                                              for w in WARMUPS[1:]) + " |")
        table = lr_table(runs, eval_set)
        lrs = sorted({lr for column in table.values() for lr in column})
        lines += ["", f"### Learning rate at width {BASE_WIDTH} (µP-hlb = SP-hlb)", "",
                  "| lr | " + " | ".join(f"warmup {t(w)}" for w in table) + " |", "|---|" + "---|" * len(table)]
        lines += [f"| {analysis.format_lr(lr)} | " + " | ".join(cell_text(column.get(lr)) for column in table.values())
                  + " |" for lr in lrs]
        lines += ["", "Optimum per warmup, of the seed means: the vertex of a least-squares parabola in "
                  "log2(lr) through the lowest point and up to two neighbours each side (plots/lr_optimum.py); "
                  "an optimum at the grid's first or last lr is not bracketed.", ""]
        lines += [f"- warmup {t(warmup)}: {fit_text(fit_lr(column))}" for warmup, column in table.items()] + [""]
        if rows := variant_rows(runs, variant_runs, eval_set):
            lines += [f"### Single changes, warmup {t(COMPARISON_WARMUP)}", "",
                      "| change | width | folder | loss | reference | reference loss | change − reference (paired) |",
                      "|---|---|---|---|---|---|---|"]
            lines += [f"| {row.variant.label} | {row.variant.width} | {row.variant.folder} | {cell_text(row.cell)} | "
                      f"{reference_label(row.variant)} | {cell_text(row.reference)} | "
                      f"{cell_text(row.difference, signed=True)} |" for row in rows] + [""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Figures

def draw_error_bars(ax, xs: list, cells: list[SeedStatistics], colour) -> None:
    """The 95 % intervals as error bars, only at points with two or more seeds."""
    kept = [(x, cell) for x, cell in zip(xs, cells) if cell.half_width is not None]
    if kept:
        ax.errorbar([x for x, _ in kept], [cell.mean for _, cell in kept],
                    yerr=[cell.half_width for _, cell in kept], fmt="none", color=colour, capsize=4)


def draw_band(ax, xs: list, cells: list[SeedStatistics], colour) -> None:
    """The 95 % interval as a band, filled only between neighbouring points that both have two
    or more seeds (fill_between's `where`)."""
    banded = [cell.half_width is not None for cell in cells]
    if any(left and right for left, right in zip(banded, banded[1:])):
        ax.fill_between(xs, [cell.mean - (cell.half_width or 0) for cell in cells],
                        [cell.mean + (cell.half_width or 0) for cell in cells],
                        where=banded, color=colour, alpha=0.2, linewidth=0)


def finish(fig, ax, eval_set: str, xlabel: str, title: str, path: Path) -> Path:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(loss_label(eval_set))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figures.save(fig, path)


def plot_final_vs_width(rows: list[WidthRow], eval_set: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(9, 5.5), layout="constrained")
    for param, marker in (("mup", "o"), ("sp", "s")):
        points = [(row.width, getattr(row, param)) for row in rows if getattr(row, param) is not None]
        if points:
            line = ax.plot([w for w, _ in points], [cell.mean for _, cell in points], marker=marker,
                           markerfacecolor="none", linestyle=figures.PARAM_LINESTYLES[param],
                           label=f"{ARMS[param]}, seed mean")[0]
            draw_error_bars(ax, [w for w, _ in points], [cell for _, cell in points], line.get_color())
    ax.set_xscale("log", base=2)
    ax.set_xticks([row.width for row in rows], [str(row.width) for row in rows])
    ax.minorticks_off()
    return finish(fig, ax, eval_set, "width (model dimension, log scale)",
                  f"Warmup {analysis.format_tokens(COMPARISON_WARMUP)}, bars: 95 % interval over seeds; "
                  f"{BASE_WIDTH}: one set of runs (µP = SP)", path)


def plot_final_vs_warmup(rows: list[WarmupRow], eval_set: str, path: Path) -> Path:
    positions = analysis.log_warmup_positions(warmup for row in rows for warmup in row.cells)
    fig, ax = plt.subplots(figsize=(9, 5.5), layout="constrained")
    for row in rows:
        warmups = sorted(row.cells)
        xs, cells = [positions[w] for w in warmups], [row.cells[w] for w in warmups]
        line = ax.plot(xs, [cell.mean for cell in cells], marker="o", label=f"width {row.width}")[0]
        # A band needs two points: a width run at one warmup gets an error bar instead.
        (draw_band if len(cells) > 1 else draw_error_bars)(ax, xs, cells, line.get_color())
    figures.set_warmup_ticks(ax, positions, "x")
    return finish(fig, ax, eval_set, "warmup (tokens, log scale; 0 drawn at half the smallest nonzero warmup)",
                  f"{ARMS['mup']}: seed mean, band (bar at a lone point): 95 % interval over seeds", path)


def plot_final_vs_lr(table: dict[int, dict[float, SeedStatistics]], eval_set: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(9, 5.5), layout="constrained")
    for warmup, column in table.items():
        fit, lrs = fit_lr(column), list(column)
        line = ax.plot(lrs, fit.losses, marker="o",
                       label=f"warmup {analysis.format_tokens(warmup)}: {fit_text(fit)}")[0]
        draw_band(ax, lrs, list(column.values()), line.get_color())
        if fit.coefficients is not None:
            x = np.linspace(math.log2(fit.window[0]), math.log2(fit.window[-1]), 50)
            ax.plot(2 ** x, np.polyval(fit.coefficients, x), linestyle=":", color=line.get_color())
        if fit.optimum is not None and fit.coefficients is not None and not fit.edge:
            ax.plot(fit.optimum, np.polyval(fit.coefficients, math.log2(fit.optimum)), marker="*",
                    markersize=15, color=line.get_color(), markeredgecolor="black", linestyle="")
    ax.set_xscale("log", base=2)
    all_lrs = sorted({lr for column in table.values() for lr in column})
    ax.set_xticks(all_lrs, [analysis.format_lr(lr) for lr in all_lrs])
    ax.minorticks_off()
    return finish(fig, ax, eval_set, "learning rate (log scale)",
                  f"Width {BASE_WIDTH} (µP-hlb = SP-hlb): seed mean, band: 95 % interval over seeds\n"
                  "dotted: parabola in log2(lr) around the lowest mean, star: its optimum (none when not bracketed)", path)


def plot_single_changes(rows: list[VariantRow], eval_set: str, path: Path) -> Path:
    """Each change's paired difference from its reference, bars only where two or more seeds pair."""
    fig, ax = plt.subplots(figsize=(9, 1.5 + 0.45 * len(rows)), layout="constrained")
    kept = [row for row in rows if row.difference is not None]
    ys = list(range(len(kept)))[::-1]
    for y, row in zip(ys, kept):
        ax.errorbar(row.difference.mean, y, xerr=row.difference.half_width, fmt="o", color="C0", capsize=4)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(ys, [f"{row.variant.label}, width {row.variant.width} (n={row.difference.n})\n"
                       f"against {reference_label(row.variant)}" for row in kept], fontsize=8)
    ax.set_xlabel(f"change − reference, final {eval_set} loss (nats/token; < 0: the change is better)")
    ax.set_title(f"Single changes at warmup {analysis.format_tokens(COMPARISON_WARMUP)}, each against the cell it changes\n"
                 "paired by seed; bar: 95 % interval (none from one pair)", fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    return figures.save(fig, path)


def seed_mean_run(cell: list[RunLog]) -> RunLog:
    """One run standing for a cell's completed seeds: the mean of their losses at every eval
    that all of them logged, and of their final losses."""
    completed = [run for run in cell if run.outcome == "completed"]
    points: dict[int, dict] = {}
    for name in completed[0].eval_sets:
        curves = [dict(zip(*run.loss_curve(name))) for run in completed]
        for tokens in set.intersection(*(set(curve) for curve in curves)):
            points.setdefault(tokens, {"tokens": tokens, "eval": {}})["eval"][name] = \
                {"loss": statistics.fmean(curve[tokens] for curve in curves)}
    final = {name: {"loss": statistics.fmean(run.final_loss(name) for run in completed)}
             for name in completed[0].eval_sets if all(run.final_loss(name) is not None for run in completed)}
    return replace(completed[0], curve=tuple(points[tokens] for tokens in sorted(points)), final_eval=final)


def plot_seed_mean_curves(runs: list[RunLog], eval_set: str, out_dir: Path, file_format: str) -> list[Path]:
    """figures.plot_group_curves on seed means, per width and parametrization (µP at MUP_LR,
    SP at its lr) with two or more warmups that completed a seed."""
    written = []
    for key, group in analysis.group_runs(runs).items():
        if key.param != "sp" and not (key.lr is not None and math.isclose(key.lr, MUP_LR)):
            continue
        cells = {}
        for run in group:
            cells.setdefault(run.warmup_tokens, []).append(run)
        counts = {w: sum(run.outcome == "completed" for run in cell) for w, cell in cells.items()}
        if sum(count > 0 for count in counts.values()) < 2:
            continue
        seeds = ", ".join(f"{analysis.format_tokens(w)}: {n}" for w, n in counts.items() if n)
        path = out_dir / f"curves_{eval_set}_{figures.file_stem_of_group(key)}.{file_format}"
        written.append(figures.plot_group_curves(
            key, [seed_mean_run(cell) for w, cell in cells.items() if counts[w]], eval_set, path,
            title=f"{key.label}: {eval_set} loss\nseed mean per warmup (seeds per warmup {seeds})"))
    return written


def write_study(runs: list[RunLog], out_dir: Path, file_format: str = "png",
                variant_runs: dict[str, list[RunLog]] | None = None) -> list[Path]:
    """summary.md and every figure with data, for each of EVAL_SETS the runs logged."""
    out_dir.mkdir(parents=True, exist_ok=True)
    variant_runs = variant_runs or {}
    eval_sets = [name for name in EVAL_SETS if any(name in run.eval_sets for run in runs)]
    written = [out_dir / "summary.md"]
    atomic_write_bytes(written[0], summary_markdown(runs, eval_sets, variant_runs).encode())
    for eval_set in eval_sets:
        if rows := width_rows(runs, eval_set):
            written.append(plot_final_vs_width(rows, eval_set, out_dir / f"final_vs_width_{eval_set}.{file_format}"))
        if rows := warmup_rows(runs, eval_set):
            written.append(plot_final_vs_warmup(rows, eval_set, out_dir / f"final_vs_warmup_{eval_set}.{file_format}"))
        if table := lr_table(runs, eval_set):
            written.append(plot_final_vs_lr(table, eval_set, out_dir / f"final_vs_lr_w{BASE_WIDTH}_{eval_set}.{file_format}"))
        if rows := variant_rows(runs, variant_runs, eval_set):
            written.append(plot_single_changes(rows, eval_set, out_dir / f"single_changes_{eval_set}.{file_format}"))
        written += plot_seed_mean_curves(runs, eval_set, out_dir, file_format)
    return written


def load_variants(runs_dir: Path) -> dict[str, list[RunLog]]:
    """Folder -> run logs, for VARIANTS' folders present under runs_dir (each read on its own)."""
    names = dict.fromkeys(variant.folder for variant in VARIANTS)
    return {name: analysis.load_run_logs([runs_dir / name]) for name in names if (runs_dir / name).is_dir()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m plots.fair_study", description=__doc__.split("\n")[0])
    parser.add_argument("runs_dir", type=Path, help=f"the folder holding {', '.join(FOLDERS)}")
    parser.add_argument("--out", type=Path, required=True, help="folder for summary.md and the figures")
    parser.add_argument("--format", choices=("png", "pdf"), default="png", help="default: png")
    args = parser.parse_args(argv)
    folders = [args.runs_dir / name for name in FOLDERS if (args.runs_dir / name).is_dir()]
    if not folders:
        parser.error(f"none of {', '.join(FOLDERS)} in {args.runs_dir}: pass the folder holding them (runs/)")
    try:
        runs, variant_runs = load_study(folders), load_variants(args.runs_dir)
    except (RunLogError, ValueError) as error:
        parser.error(str(error))
    if not runs:
        parser.error(f"no run logs in {', '.join(map(str, folders))}")
    written = write_study(runs, args.out, args.format, variant_runs)
    print(f"{len(runs)} runs -> {len(written)} files in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
