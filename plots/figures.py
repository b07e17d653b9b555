"""Drawing: turns what `analysis` computes into figure files. Headless (Agg backend).

Figures, each made for every eval set:

* curves_<set>_<group>: loss against tokens seen for one (param, width, lr, batch rule) group with several
  warmups, a curve per run, coloured by the distance of its warmup from the group's best warmup.
* overlay_<set>_w<width>: every series (parametrization and batch rule) at one width on one
  axes; line style by series, colour by distance from that series' own best warmup (one
  colour bar for all series).
* final_vs_warmup_<set> (when a group finished two or more warmups): final loss against
  warmup, a line per group, seed min-max band where a warmup has two or more completed seeds.
* final_vs_steps_<set> (when the runs' step counts differ): final loss against the optimizer
  steps each run took, a colour per group, each point labelled with its warmup. hlb-gpt's
  dynamic microbatching sets the batch, so runs of one grid can take very different numbers
  of steps; this shows how much of a loss difference goes with fewer steps.
* best_vs_width_<set> (several widths only): best warmup and best lr against width.

Markers common to the curve figures: a cross ends a diverged run, an open circle ends an
unfinished one (running or interrupted). A series whose numbers equal an earlier one's exactly
is drawn on top of it, so its legend entry says "(identical to ...)" (SP and µP at µP's base
width, for one, are the same model).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import colormaps  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import BoundaryNorm, ListedColormap, Normalize  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from plots import analysis  # noqa: E402
from plots.analysis import GroupKey, RunLog  # noqa: E402
from runlog import atomic_write, atomic_write_bytes  # noqa: E402

PARAM_LINESTYLES = {"sp": "-", "mup": "--", "umup": ":"}
# A fixed batch (--microbatches N) draws its parametrization's line in a dash pattern of its own.
FIXED_BATCH_LINESTYLES = {"sp": (0, (8, 2, 2, 2)), "mup": (0, (2, 1.5)), "umup": (0, (1, 4))}
OUTCOME_LINESTYLES = {"completed": "-", "diverged": "--", "unfinished": ":"}
OUTCOME_END_MARKERS = {"diverged": "x", "unfinished": "o"}
BEST_LINEWIDTH, OTHER_LINEWIDTH = 2.8, 1.2
# The first evals sit far above the rest (the loss starts near ln(vocab)), and a diverged run
# shoots off upwards; the y range is taken from the evals of runs that did not diverge, past
# this fraction of the longest run, so the differences later in training stay visible.
Y_RANGE_FROM_FRACTION = 0.1
# Colour bars: a slim strip beside the axes (matplotlib's defaults take 15 % of the width each).
COLOURBAR_STYLE = dict(fraction=0.03, pad=0.01, aspect=40)
TOKENS_AXIS_LABEL = "tokens seen (training tokens)"


def identical_notes(labels: list[str], data: list) -> list[str]:
    """The labels, each series whose data equal an earlier series' exactly marked
    " (identical to EARLIER)": drawn on top, it hides that series completely."""
    noted = []
    for index, (label, values) in enumerate(zip(labels, data)):
        twin = next((labels[earlier] for earlier in range(index) if data[earlier] == values), None)
        noted.append(label if twin is None else f"{label} (identical to {twin})")
    return noted


def has_seed_band(final_losses: list[list[float]]) -> bool:
    """A min-max band over seeds exists where some point has two or more seeds."""
    return any(len(losses) >= 2 for losses in final_losses)


def loss_axis_label(eval_set: str) -> str:
    name = "validation" if eval_set == analysis.MAIN_EVAL_SET else f"{eval_set} validation"
    return f"{name} loss (nats)"


def file_stem_of_group(key: GroupKey) -> str:
    parts = [key.param]
    if key.width is not None:
        parts.append(f"w{key.width}")
    if key.lr is not None:
        parts.append(f"lr{analysis.format_lr(key.lr)}")
    if key.microbatches is not None:
        parts.append(f"mb{key.microbatches}")
    return "_".join(parts)


def linestyle_of(series: tuple[str, int | None]):
    """Line style by parametrization, in a second pattern when the batch was fixed."""
    param, microbatches = series
    styles = PARAM_LINESTYLES if microbatches is None else FIXED_BATCH_LINESTYLES
    return styles.get(param, "-.")


class CurveAxes:
    """Draws loss curves on one axes; `finish` then labels the axes, fits the y range and adds
    the end markers.

    End markers come last because a diverged run's end usually lies above the y range; it is
    pinned to the top edge so that it stays visible.
    """

    def __init__(self, ax, eval_set: str):
        self.ax, self.eval_set = ax, eval_set
        self.range_points: list[tuple[int, float]] = []
        self.end_markers: list[tuple[int, float, str, tuple]] = []

    def draw(self, run: RunLog, colour, linewidth: float, linestyle: str, label: str | None) -> None:
        tokens, losses = run.loss_curve(self.eval_set)
        if not tokens:
            return
        self.ax.plot(tokens, losses, color=colour, linewidth=linewidth, linestyle=linestyle,
                     label=label)
        if run.outcome != "diverged":
            self.range_points += zip(tokens, losses)
        if run.outcome in OUTCOME_END_MARKERS:
            self.end_markers.append((tokens[-1], losses[-1], OUTCOME_END_MARKERS[run.outcome], colour))

    def finish(self) -> None:
        self.ax.set_xlabel(TOKENS_AXIS_LABEL)
        self.ax.set_ylabel(loss_axis_label(self.eval_set))
        self.ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: analysis.format_tokens(round(x))))
        self.ax.grid(alpha=0.3)
        if self.range_points:
            last_token = max(tokens for tokens, _ in self.range_points)
            late = [loss for tokens, loss in self.range_points
                    if tokens >= Y_RANGE_FROM_FRACTION * last_token]
            low, high = min(late), max(late)
            margin = 0.05 * (high - low) or 0.05
            self.ax.set_ylim(low - margin, high + margin)
        top = self.ax.get_ylim()[1]
        for tokens, loss, marker, colour in self.end_markers:
            self.ax.plot(tokens, min(loss, top), marker=marker, markersize=8, color=colour,
                         markerfacecolor="none" if marker == "o" else colour,
                         markeredgewidth=1.8, clip_on=False)


def add_warmup_colourbar(fig, ax, colours: dict[int, tuple], best: int | None, label: str) -> None:
    """A colour bar with one swatch per warmup, ticked with the real token counts.

    The colour encodes distance from the best warmup, which is not monotone in warmup, so the
    bar is discrete: warmups in increasing order, each in its own colour.
    """
    warmups = sorted(colours)
    colormap = ListedColormap([colours[warmup] for warmup in warmups])
    norm = BoundaryNorm([index - 0.5 for index in range(len(warmups) + 1)], len(warmups))
    colourbar = fig.colorbar(ScalarMappable(norm=norm, cmap=colormap), ax=ax,
                             ticks=list(range(len(warmups))), **COLOURBAR_STYLE)
    colourbar.set_ticklabels([analysis.format_tokens(warmup) + (" (best)" if warmup == best else "")
                              for warmup in warmups])
    colourbar.set_label(label)


def add_distance_colourbar(fig, ax, max_distance: float) -> None:
    """One colour bar for several series coloured on one scale: a warmup's distance from its
    own series' best warmup, in decades of tokens (the series' legend entries name the best)."""
    colormap = colormaps[analysis.WARMUP_COLORMAP]
    truncated = ListedColormap(colormap([analysis.WARMUP_COLORMAP_END * index / 255
                                         for index in range(256)]))
    colourbar = fig.colorbar(ScalarMappable(norm=Normalize(0, max_distance or 1), cmap=truncated),
                             ax=ax, **COLOURBAR_STYLE)
    colourbar.set_label("warmup's distance from its series' best warmup (decades of tokens)")


def outcome_legend_handles(runs: list[RunLog], with_linestyles: bool) -> list[Line2D]:
    """Legend entries explaining how diverged and unfinished runs are drawn, if any exist."""
    handles = []
    for outcome in ("diverged", "unfinished"):
        if any(run.outcome == outcome for run in runs):
            marker = OUTCOME_END_MARKERS[outcome]
            handles.append(Line2D([], [], color="grey", marker=marker, markerfacecolor="none",
                                  linestyle=OUTCOME_LINESTYLES[outcome] if with_linestyles else "",
                                  label=outcome))
    return handles


def save(fig, path: Path) -> Path:
    atomic_write(path, lambda file: fig.savefig(file, dpi=120, format=path.suffix.lstrip(".")))
    plt.close(fig)
    return path


def plot_group_curves(key: GroupKey, runs: list[RunLog], eval_set: str, path: Path,
                      title: str | None = None) -> Path:
    """Figure 1: loss against tokens for one group, a curve per run, best warmup thickest.
    title replaces the default (the group and its seed count), e.g. for seed-mean curves."""
    best = analysis.best_warmup(runs, eval_set)
    colours = analysis.warmup_colours([run.warmup_tokens for run in runs], best)
    fig, ax = plt.subplots(figsize=(9, 5.5), layout="constrained")
    curves, labelled = CurveAxes(ax, eval_set), set()
    for run in runs:
        is_best = run.warmup_tokens == best
        label = None
        if run.warmup_tokens not in labelled:
            label = (f"warmup {analysis.format_tokens(run.warmup_tokens)}"
                     + (" (best)" if is_best else ""))
            labelled.add(run.warmup_tokens)
        curves.draw(run, colours[run.warmup_tokens], BEST_LINEWIDTH if is_best else OTHER_LINEWIDTH,
                    OUTCOME_LINESTYLES[run.outcome], label)
    curves.finish()
    add_warmup_colourbar(fig, ax, colours, best,
                         "warmup tokens (colour: log-distance from best)" if best is not None
                         else "warmup tokens (no run completed yet)")
    seeds = sorted({run.seed for run in runs})
    ax.set_title(title or f"{key.label}: {eval_set} loss, {len(seeds)} seed(s)")
    handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=handles + outcome_legend_handles(runs, with_linestyles=True), fontsize=8)
    return save(fig, path)


def plot_parametrization_overlay(groups: dict[GroupKey, list[RunLog]], eval_set: str,
                                 path: Path) -> Path:
    """Figure 2: several parametrizations at one width; line style by parametrization,
    colour by distance from that parametrization's own best warmup on a shared scale."""
    all_warmups = sorted({run.warmup_tokens for runs in groups.values() for run in runs})
    bests = {key: analysis.best_warmup(runs, eval_set) for key, runs in groups.items()}
    # One colour scale for all: the largest distance any warmup has from its own best.
    max_distance = max(max(analysis.warmup_distances(
        [run.warmup_tokens for run in runs],
        all_warmups[0] if bests[key] is None else bests[key], all_warmups).values())
        for key, runs in groups.items())
    fig, ax = plt.subplots(figsize=(10, 5.5), layout="constrained")
    curves, labels = CurveAxes(ax, eval_set), []
    for key, runs in groups.items():
        colours = analysis.warmup_colours([run.warmup_tokens for run in runs], bests[key],
                                          all_warmups, max_distance)
        for run in runs:
            is_best = run.warmup_tokens == bests[key]
            curves.draw(run, colours[run.warmup_tokens],
                        BEST_LINEWIDTH if is_best else OTHER_LINEWIDTH, linestyle_of(key.series), None)
    curves.finish()
    curves_of = [sorted((run.warmup_tokens, run.seed, run.loss_curve(eval_set)) for run in runs)
                 for runs in groups.values()]
    labels = identical_notes([key.label for key in groups], curves_of)
    handles = []
    for key, label in zip(groups, labels):
        best_text = "none completed" if bests[key] is None else analysis.format_tokens(bests[key])
        handles.append(Line2D([], [], color="black", linestyle=linestyle_of(key.series),
                              label=f"{label}; best warmup {best_text} (thick)"))
    add_distance_colourbar(fig, ax, max_distance)
    runs = [run for group in groups.values() for run in group]
    ax.legend(handles=handles + outcome_legend_handles(runs, with_linestyles=False), fontsize=8)
    width = next(iter(groups)).width
    width_text = "" if width is None else f" at width {width}"
    compared = " vs ".join(analysis.series_label(key.series) for key in groups)
    ax.set_title(f"{compared}{width_text}: {eval_set} loss")
    return save(fig, path)


def set_warmup_ticks(ax, positions: dict[int, float], axis: str) -> None:
    """Ticks at every warmup's log position, labelled with its token count."""
    set_ticks = ax.set_xticks if axis == "x" else ax.set_yticks
    set_ticks(list(positions.values()), [analysis.format_tokens(warmup) for warmup in positions])


def plot_final_loss_vs_warmup(runs: list[RunLog], eval_set: str, path: Path) -> Path:
    """Figure 3: seed-mean final loss against warmup, a line per group, a min-max seed band
    when some warmup has two or more completed seeds.

    Warmups sit on the log axis of `analysis.log_warmup_positions` (0 at w_min / 2). A cross
    at the top marks a warmup where at least one seed diverged.
    """
    positions = analysis.log_warmup_positions(run.warmup_tokens for run in runs)
    fig, ax = plt.subplots(figsize=(9, 5.5), layout="constrained")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    diverged_marks, drawn = [], []  # drawn: (key, colour, completed results, all results, best)
    for index, (key, group) in enumerate(analysis.group_runs(runs).items()):
        colour = colours[index % len(colours)]
        results = analysis.warmup_results(group, eval_set)
        diverged_marks += [(positions[warmup], colour)
                           for warmup, result in results.items() if result.n_diverged]
        done = [result for result in results.values() if result.final_losses]
        if done:
            drawn.append((key, colour, done, results, analysis.best_warmup(group, eval_set)))
    labels = identical_notes([key.label for key, *_ in drawn],
                             [[(r.warmup_tokens, r.final_losses) for r in done] for _, _, done, *_ in drawn])
    banded = has_seed_band([result.final_losses for _, _, done, *_ in drawn for result in done])
    for (key, colour, done, results, best), label in zip(drawn, labels):
        xs = [positions[result.warmup_tokens] for result in done]
        ax.plot(xs, [result.mean_final_loss for result in done], marker="o", color=colour,
                linestyle=linestyle_of(key.series), label=f"{label} (seed mean)")
        if banded:
            ax.fill_between(xs, [min(result.final_losses) for result in done],
                            [max(result.final_losses) for result in done], color=colour, alpha=0.2)
        ax.plot(positions[best], results[best].mean_final_loss, marker="*", markersize=16,
                color=colour, markeredgecolor="black", linestyle="")
    for x, colour in diverged_marks:
        # x in data units, y at the top edge of the axes, so the mark never leaves the plot.
        ax.plot(x, 0.97, marker="x", markersize=9, color=colour, markeredgewidth=2,
                transform=ax.get_xaxis_transform())
    handles, _ = ax.get_legend_handles_labels()
    if banded:
        handles.append(plt.Rectangle((0, 0), 1, 1, color="grey", alpha=0.2,
                                     label="band: min-max over completed seeds"))
    handles.append(Line2D([], [], marker="*", markersize=12, color="grey", markeredgecolor="black",
                          linestyle="", label="best warmup"))
    if diverged_marks:
        handles.append(Line2D([], [], marker="x", color="grey", linestyle="",
                              label="a seed diverged at this warmup"))
    ax.legend(handles=handles, fontsize=8)
    set_warmup_ticks(ax, positions, "x")
    return save_final_loss_figure(fig, ax, eval_set, path, "warmup",
                                  "warmup tokens (log scale; 0 drawn at half the smallest nonzero warmup)")


def save_final_loss_figure(fig, ax, eval_set: str, path: Path, against: str, xlabel: str) -> Path:
    """The common end of the final-loss figures: axis labels, title, grid, file."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"final {loss_axis_label(eval_set)}")
    ax.set_title(f"Final {eval_set} loss against {against}")
    ax.grid(alpha=0.3)
    return save(fig, path)


def plot_final_loss_vs_steps(runs: list[RunLog], eval_set: str, path: Path) -> Path:
    """Final loss of every completed run against its optimizer steps, labelled by warmup."""
    fig, ax = plt.subplots(figsize=(9, 5.5), layout="constrained")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (key, group) in enumerate(analysis.group_runs(runs).items()):
        done = [run for run in group if run.final_loss(eval_set) is not None and run.steps]
        if not done:
            continue
        colour = colours[index % len(colours)]
        ax.scatter([run.steps for run in done], [run.final_loss(eval_set) for run in done],
                   color=colour, label=key.label, s=25)
        for run in done:
            ax.annotate(analysis.format_tokens(run.warmup_tokens), (run.steps, run.final_loss(eval_set)),
                        textcoords="offset points", xytext=(4, 3), fontsize=7, color=colour)
    ax.legend(fontsize=8, title="point labels: warmup tokens", title_fontsize=8)
    return save_final_loss_figure(fig, ax, eval_set, path, "optimizer steps",
                                  "optimizer steps taken (hlb-gpt's dynamic microbatching sets the "
                                  "batch unless --microbatches fixes it)")


def plot_best_against_width(runs: list[RunLog], eval_set: str, path: Path) -> Path:
    """Figure 4: the best warmup and the best learning rate (chosen jointly) against width.

    Drawn only when at least two widths have a completed run.
    """
    best_cells = analysis.best_cells_by_width(runs, eval_set)
    positions = analysis.log_warmup_positions(run.warmup_tokens for run in runs)
    fig, (warmup_ax, lr_ax) = plt.subplots(1, 2, figsize=(11, 4.5), layout="constrained")
    for series in sorted({cell.series for cell in best_cells}, key=analysis.series_sort_key):
        cells = sorted((cell for cell in best_cells if cell.series == series),
                       key=lambda cell: cell.width or 0)
        widths = [cell.width for cell in cells]
        style = dict(marker="o", linestyle=linestyle_of(series), label=analysis.series_label(series))
        warmup_ax.plot(widths, [positions[cell.warmup_tokens] for cell in cells], **style)
        if all(cell.lr is not None for cell in cells):
            lr_ax.plot(widths, [cell.lr for cell in cells], **style)
    set_warmup_ticks(warmup_ax, positions, "y")
    warmup_ax.set_ylabel("best warmup tokens (log scale)")
    lr_ax.set_yscale("log")
    # Every learning rate of the grid gets a tick, so the axis shows the range searched.
    learning_rates = sorted({run.lr for run in runs if run.lr is not None})
    lr_ax.set_yticks(learning_rates, [analysis.format_lr(lr) for lr in learning_rates])
    lr_ax.set_ylabel("best learning rate (log scale)")
    widths = sorted({cell.width for cell in best_cells if cell.width is not None})
    for ax, what in ((warmup_ax, "warmup"), (lr_ax, "learning rate")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(widths, [str(width) for width in widths])
        ax.minorticks_off()
        ax.set_xlabel("width (model dimension)")
        ax.set_title(f"Best {what} against width ({eval_set} loss)")
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=8)
    return save(fig, path)


def plot_final_loss_vs_lr(runs: list[RunLog], eval_set: str, path: Path) -> Path:
    """Figure 4b (learning-rate sweeps): seed-mean final loss against learning rate, one
    panel per series (parametrization and batch rule), a line per (width, warmup), min-max seed
    band, the best learning rate of each line starred. Flat optima across widths = the lr
    transfers."""
    all_series = sorted({run.group.series for run in runs}, key=analysis.series_sort_key)
    fig, axes = plt.subplots(1, len(all_series), figsize=(5.5 * len(all_series), 4.5), sharey=True,
                             layout="constrained", squeeze=False)
    lines: dict[tuple, dict[float, list[float]]] = {}
    for run in runs:
        final = run.final_loss(eval_set)
        if final is not None and run.lr is not None:
            lines.setdefault((run.group.series, run.width or 0, run.warmup_tokens), {}) \
                 .setdefault(run.lr, []).append(final)
    banded = has_seed_band([losses for by_lr in lines.values() for losses in by_lr.values()])
    for ax, series in zip(axes[0], all_series):
        panel = [(line, by_lr) for line, by_lr in sorted(lines.items(), key=lambda item: (
            analysis.series_sort_key(item[0][0]), item[0][1:])) if line[0] == series]
        labels = identical_notes([f"width {width}, warmup {analysis.format_tokens(warmup)}"
                                  for (_, width, warmup), _ in panel],
                                 [sorted(by_lr.items()) for _, by_lr in panel])
        for (_, by_lr), label in zip(panel, labels):
            lrs = sorted(by_lr)
            means = [sum(by_lr[lr]) / len(by_lr[lr]) for lr in lrs]
            drawn = ax.plot(lrs, means, marker="o", label=label)[0]
            if banded:
                ax.fill_between(lrs, [min(by_lr[lr]) for lr in lrs], [max(by_lr[lr]) for lr in lrs],
                                color=drawn.get_color(), alpha=0.2)
            best = min(range(len(lrs)), key=lambda i: means[i])
            ax.plot(lrs[best], means[best], marker="*", markersize=15, color=drawn.get_color(),
                    markeredgecolor="black", linestyle="")
        ax.set_xscale("log", base=2)
        learning_rates = sorted({lr for (line_series, _, _), by_lr in lines.items()
                                 if line_series == series for lr in by_lr})
        ax.set_xticks(learning_rates, [analysis.format_lr(lr) for lr in learning_rates], rotation=45)
        ax.minorticks_off()
        ax.set_xlabel("learning rate (log scale)")
        ax.set_title(f"{analysis.series_label(series)}: final {eval_set} loss against lr")
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=8, title="star: best lr" + ("; band: min-max over seeds" if banded else ""),
                      title_fontsize=7)
    axes[0][0].set_ylabel(f"final {loss_axis_label(eval_set)}")
    return save(fig, path)


def _lrs_per_line(runs: list[RunLog]) -> list[set]:
    """The learning rates each (series, width, warmup) line of a sweep has."""
    lines: dict[tuple, set] = {}
    for run in runs:
        lines.setdefault((run.group.series, run.width, run.warmup_tokens), set()).add(run.lr)
    return list(lines.values())


def make_figures(runs: list[RunLog], out_dir: Path, eval_sets: list[str],
                 file_format: str = "png") -> list[Path]:
    """Every figure for every eval set, plus summary.md; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    widths = sorted({run.width for run in runs}, key=lambda width: width or 0)
    written = []
    for eval_set in eval_sets:
        set_runs = [run for run in runs if eval_set in run.eval_sets]
        if not set_runs:
            continue
        set_groups = analysis.group_runs(set_runs)
        for key, group in set_groups.items():
            if len({run.warmup_tokens for run in group}) < 2:
                continue  # one warmup (an lr sweep): nothing to colour by; see final_vs_lr
            path = out_dir / f"curves_{eval_set}_{file_stem_of_group(key)}.{file_format}"
            written.append(plot_group_curves(key, group, eval_set, path))
        for width in widths:
            compared = analysis.best_group_per_series(set_groups, width, eval_set)
            if len(compared) > 1:
                stem = f"overlay_{eval_set}" + ("" if width is None else f"_w{width}")
                compared_groups = {key: set_groups[key] for key in compared}
                written.append(plot_parametrization_overlay(
                    compared_groups, eval_set, out_dir / f"{stem}.{file_format}"))
        # Against warmup only where a group finished two warmups (an lr sweep has one).
        if any(len({run.warmup_tokens for run in group if run.final_loss(eval_set) is not None}) > 1
               for group in set_groups.values()):
            written.append(plot_final_loss_vs_warmup(
                set_runs, eval_set, out_dir / f"final_vs_warmup_{eval_set}.{file_format}"))
        if len({run.steps for run in set_runs if run.final_loss(eval_set) is not None}) > 1:
            written.append(plot_final_loss_vs_steps(
                set_runs, eval_set, out_dir / f"final_vs_steps_{eval_set}.{file_format}"))
        if any(len(by_lr) > 1 for by_lr in _lrs_per_line(set_runs)):
            written.append(plot_final_loss_vs_lr(
                set_runs, eval_set, out_dir / f"final_vs_lr_{eval_set}.{file_format}"))
        best_widths = {cell.width for cell in analysis.best_cells_by_width(set_runs, eval_set)}
        if len(best_widths) > 1:
            written.append(plot_best_against_width(
                set_runs, eval_set, out_dir / f"best_vs_width_{eval_set}.{file_format}"))
    summary_path = out_dir / "summary.md"
    atomic_write_bytes(summary_path, analysis.summary_markdown(runs, eval_sets).encode())
    written.append(summary_path)
    return written
