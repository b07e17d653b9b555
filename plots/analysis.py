"""Numbers behind the figures, computed from run logs alone.

Loading run logs, grouping them, picking the best warmup, the colour of every warmup and the
summary table live here; `figures.py` only draws what these functions return, so tests can
check the numbers without looking at pixels.

Rules (also in docs/grid_and_plots.md):

* Runs are grouped by (parametrization, width, learning rate); warmups and seeds vary within
  a group.
* Best warmup of a group, per eval set: the warmup with the lowest final loss averaged over
  its *completed* seeds. Ties go to the smaller warmup. Diverged and unfinished runs never
  count towards "best" (they are still drawn), so a warmup with no completed seed cannot be
  best, and a warmup's mean is over the seeds that completed.
* Noise, one definition: the seed standard deviation (n - 1 in the denominator) of a cell's
  final loss, a cell being one (group, warmup). A cell's mean comes with a 95 % interval from
  the t-distribution over its seeds; two cells compare by their paired difference, seed by
  seed (runs of one seed see the same data in the same order, main.py's sampler), with its
  own 95 % interval (`seed_statistics`, `paired_difference`).
* Colour: warmup w sits at log10(max(w, w_min / 2)), where w_min is the smallest nonzero
  warmup of the set being coloured. Zero warmup therefore lands half a factor-2 step below
  the smallest real warmup instead of at minus infinity. A warmup's colour is its distance
  from the best warmup on that axis, in decades of tokens; the best is the darkest colour.
"""

from __future__ import annotations

import functools
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, NamedTuple

from matplotlib import colormaps

import runlog

MAIN_EVAL_SET = "valid"
PARAM_ORDER = ("sp", "mup", "umup")
PARAM_LABELS = {"sp": "SP", "mup": "µP", "umup": "u-µP"}
# Viridis from dark (the best warmup) to light green; its last 15% is yellow, which is hard to
# see on white, so the farthest warmup stops short of it.
WARMUP_COLORMAP = "viridis"
WARMUP_COLORMAP_END = 0.85


class GroupKey(NamedTuple):
    """Runs that differ only in warmup and seed."""

    param: str
    width: int | None
    lr: float | None
    microbatches: int | None = None  # fixed per step (--microbatches N); None: hlb-gpt's rule

    @property
    def series(self) -> tuple[str, int | None]:
        """What one line across widths or learning rates follows: parametrization and batch
        rule (the two batch rules give different step counts, so they are never merged)."""
        return self.param, self.microbatches

    @property
    def label(self) -> str:
        parts = [series_label(self.series)]
        if self.width is not None:
            parts.append(f"width {self.width}")
        if self.lr is not None:
            parts.append(f"lr {format_lr(self.lr)}")
        return ", ".join(parts)

    def sort_key(self) -> tuple:
        return (*series_sort_key(self.series), self.width or 0, self.lr or 0.0)


def param_label(param: str) -> str:
    return PARAM_LABELS.get(param, param)


def series_label(series: tuple[str, int | None]) -> str:
    """'SP', or 'SP (1 microbatch/step)' for runs whose batch was fixed."""
    param, microbatches = series
    if microbatches is None:
        return param_label(param)
    return f"{param_label(param)} ({microbatches} microbatch{'' if microbatches == 1 else 'es'}/step)"


def series_sort_key(series: tuple[str, int | None]) -> tuple:
    """hlb-gpt's dynamic batch first, then fixed batches; parametrizations in PARAM_ORDER."""
    param, microbatches = series
    return (microbatches or 0, *param_sort_key(param))


def param_sort_key(param: str) -> tuple[int, str]:
    """SP, µP, u-µP first, in that order; any other parametrization after them by name."""
    return (PARAM_ORDER.index(param) if param in PARAM_ORDER else len(PARAM_ORDER), param)


def format_tokens(tokens: int) -> str:
    """Exact short form of a token count: 0, 500, 1K, 1.5M, 60M, 2B."""
    for unit, suffix in ((10**9, "B"), (10**6, "M"), (10**3, "K")):
        # A suffix is used only when it keeps the number short (at most 3 decimals).
        if tokens >= unit and tokens % max(unit // 1000, 1) == 0:
            return f"{tokens / unit:.10g}{suffix}"
    return str(tokens)


def format_lr(lr: float) -> str:
    """Short form of a learning rate: 0.003 -> 3e-3."""
    mantissa, exponent = f"{lr:.6e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


# ----------------------------------------------------------------------------------------------
# Run logs

@dataclass(frozen=True)
class RunLog:
    """The parts of one trainer run log (runlog's schema) that the figures use."""

    path: Path
    name: str
    param: str
    width: int | None
    lr: float | None
    warmup_tokens: int
    seed: int
    status: str
    eval_sets: tuple[str, ...]
    curve: tuple[dict, ...]
    final_eval: dict | None
    steps: int | None  # optimizer steps taken (hlb-gpt's microbatch rule sets the batch)
    microbatches: int | None  # the fixed count per step, or None for the dynamic rule

    @classmethod
    def from_json(cls, path: Path, content: dict) -> "RunLog":
        config = content["config"]
        microbatches = config.get("microbatches")  # "dynamic" (absent in older logs) or a count
        return cls(path=path, name=content.get("run_name", path.stem), param=config["param"],
                   width=config.get("width"), lr=config.get("lr"),
                   warmup_tokens=int(config["warmup_tokens"]), seed=int(config.get("seed", 0)),
                   status=content["status"], eval_sets=tuple(content.get("eval_sets", [MAIN_EVAL_SET])),
                   curve=tuple(content.get("curve", [])),
                   final_eval=(content.get("summary") or {}).get("final_eval"),
                   steps=(content.get("summary") or {}).get("steps"),
                   microbatches=microbatches if isinstance(microbatches, int) else None)

    @property
    def group(self) -> GroupKey:
        return GroupKey(self.param, self.width, self.lr, self.microbatches)

    @property
    def outcome(self) -> str:
        """completed, diverged or unfinished (running, interrupted, or killed)."""
        return self.status if self.status in (runlog.COMPLETED, runlog.DIVERGED) else "unfinished"

    def loss_curve(self, eval_set: str) -> tuple[list[int], list[float]]:
        """Tokens seen and loss at every eval of eval_set with a finite loss."""
        tokens, losses = [], []
        for point in self.curve:
            loss = point.get("eval", {}).get(eval_set, {}).get("loss")
            if loss is not None and math.isfinite(loss):
                tokens.append(point["tokens"])
                losses.append(loss)
        return tokens, losses

    def final_loss(self, eval_set: str) -> float | None:
        """Final loss on eval_set of a completed run; None for any other run."""
        if self.outcome != "completed":
            return None
        final = (self.final_eval or {}).get(eval_set, {}).get("loss")
        if final is None:
            _, losses = self.loss_curve(eval_set)
            final = losses[-1] if losses else None
        return final


def load_run_logs(directories: Iterable[Path]) -> list[RunLog]:
    """Every run log in the given folders (not recursive), read by runlog.load_run_logs: JSON
    that is not a run log (manifest.json, benchmarks) is left out, and a run log of another
    schema version raises runlog.RunLogError."""
    return [RunLog.from_json(path, content) for path, content in runlog.load_run_logs(directories).items()]


def eval_sets_of(runs: Iterable[RunLog]) -> list[str]:
    """Every eval set the runs logged: the main one first, the rest in order of appearance."""
    names = [MAIN_EVAL_SET]
    for run in runs:
        names += [name for name in run.eval_sets if name not in names]
    return names


def group_runs(runs: Iterable[RunLog]) -> dict[GroupKey, list[RunLog]]:
    """Runs by (param, width, lr, batch rule), groups in a stable order, runs by (warmup, seed)."""
    groups: dict[GroupKey, list[RunLog]] = {}
    for run in runs:
        groups.setdefault(run.group, []).append(run)
    return {key: sorted(groups[key], key=lambda run: (run.warmup_tokens, run.seed))
            for key in sorted(groups, key=GroupKey.sort_key)}


# ----------------------------------------------------------------------------------------------
# Seed statistics

CONFIDENCE = 0.95  # two-sided level of every interval the summaries give


@functools.lru_cache(maxsize=None)
def t_quantile(probability: float, df: int) -> float:
    """The Student t-distribution's quantile, for probability in (0.5, 1): bisection on its
    CDF, 1/2 plus the density's integral from 0 by composite Simpson (4000 intervals: 1e-12
    at df >= 1 up to the 0.999 quantile). Kept here, not scipy's, so plots/ needs no scipy."""
    assert 0.5 < probability < 1 and df >= 1, f"t_quantile({probability}, {df}): need 0.5 < p < 1 and df >= 1"
    norm = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    density = lambda x: norm * (1 + x * x / df) ** (-(df + 1) / 2)

    def cdf(x: float, n: int = 4000) -> float:
        h = x / n
        inner = sum((4 if i % 2 else 2) * density(i * h) for i in range(1, n))
        return 0.5 + h / 3 * (density(0.0) + inner + density(x))

    low, high = 0.0, 1.0
    while cdf(high) < probability:
        high *= 2
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if cdf(middle) < probability else (low, middle)
    return (low + high) / 2


@dataclass(frozen=True)
class SeedStatistics:
    """Mean over seeds of one quantity, its seed standard deviation and the half-width of its
    CONFIDENCE interval (t-distribution, n - 1 degrees of freedom); std and half_width are None
    with fewer than two seeds."""

    n: int
    mean: float
    std: float | None
    half_width: float | None

    def text(self, signed: bool = False) -> str:
        """'4.1234 ± 0.0123' (signed: '+0.0123 ± 0.0045'); the mean alone for one seed."""
        return f"{self.mean:{'+' if signed else ''}.4f}" + (
            "" if self.half_width is None else f" ± {self.half_width:.4f}")


def seed_statistics(values: Iterable[float]) -> SeedStatistics:
    values = list(values)
    assert values, "seed_statistics of no values: pass at least one seed's value"
    n, mean = len(values), statistics.fmean(values)
    if n < 2:
        return SeedStatistics(n, mean, None, None)
    std = statistics.stdev(values)
    return SeedStatistics(n, mean, std, t_quantile((1 + CONFIDENCE) / 2, n - 1) * std / math.sqrt(n))


def paired_difference(a: dict[int, float], b: dict[int, float]) -> SeedStatistics | None:
    """Statistics of a[seed] - b[seed] over the seeds both cells have (seed -> final loss);
    None when they share no seed."""
    seeds = sorted(a.keys() & b.keys())
    return seed_statistics(a[seed] - b[seed] for seed in seeds) if seeds else None


# ----------------------------------------------------------------------------------------------
# Best warmup

@dataclass(frozen=True)
class WarmupResult:
    """The runs of one warmup within a group: final losses of completed seeds and counts."""

    warmup_tokens: int
    final_losses: tuple[float, ...]
    n_completed: int
    n_diverged: int
    n_unfinished: int
    seeds: tuple[int, ...] = ()  # of final_losses, one to one

    @property
    def mean_final_loss(self) -> float | None:
        return statistics.fmean(self.final_losses) if self.final_losses else None

    @property
    def seed_stats(self) -> SeedStatistics | None:
        """Mean, noise (seed std) and 95 % interval of the completed seeds' final losses."""
        return seed_statistics(self.final_losses) if self.final_losses else None

    @property
    def by_seed(self) -> dict[int, float]:
        return dict(zip(self.seeds, self.final_losses))


def warmup_results(runs: Iterable[RunLog], eval_set: str = MAIN_EVAL_SET) -> dict[int, WarmupResult]:
    """Per warmup (ascending) of one group: final losses and run counts."""
    by_warmup: dict[int, list[RunLog]] = {}
    for run in runs:
        by_warmup.setdefault(run.warmup_tokens, []).append(run)
    results = {}
    for warmup in sorted(by_warmup):
        warmup_runs = by_warmup[warmup]
        finals = [(run.seed, loss) for run, loss in ((run, run.final_loss(eval_set)) for run in warmup_runs)
                  if loss is not None]
        outcomes = [run.outcome for run in warmup_runs]
        results[warmup] = WarmupResult(warmup, tuple(loss for _, loss in finals), outcomes.count("completed"),
                                       outcomes.count("diverged"), outcomes.count("unfinished"),
                                       tuple(seed for seed, _ in finals))
    return results


def best_warmup(runs: Iterable[RunLog], eval_set: str = MAIN_EVAL_SET) -> int | None:
    """Warmup with the lowest seed-mean final loss among completed runs (ties: smaller warmup).

    None when no run of the group has completed.
    """
    candidates = [(result.mean_final_loss, warmup)
                  for warmup, result in warmup_results(runs, eval_set).items()
                  if result.mean_final_loss is not None]
    return min(candidates)[1] if candidates else None


@dataclass(frozen=True)
class BestCell:
    """The best (lr, warmup) of one series (parametrization and batch rule) at one width."""

    series: tuple[str, int | None]
    width: int | None
    lr: float | None
    warmup_tokens: int
    mean_final_loss: float


def best_cells_by_width(runs: Iterable[RunLog], eval_set: str = MAIN_EVAL_SET) -> list[BestCell]:
    """Per (series, width): the group and warmup with the lowest seed-mean final loss.

    Learning rate and warmup are chosen jointly. Ties go to the smaller warmup, then the
    smaller learning rate. Widths without any completed run are left out.
    """
    best: dict[tuple, BestCell] = {}
    for key, group in group_runs(runs).items():
        warmup = best_warmup(group, eval_set)
        if warmup is None:
            continue
        loss = warmup_results(group, eval_set)[warmup].mean_final_loss
        candidate = BestCell(key.series, key.width, key.lr, warmup, loss)
        current = best.get((key.series, key.width))
        if current is None or (loss, warmup, key.lr or 0.0) < (
                current.mean_final_loss, current.warmup_tokens, current.lr or 0.0):
            best[(key.series, key.width)] = candidate
    return list(best.values())


def best_group_per_series(groups: dict[GroupKey, list[RunLog]], width: int | None,
                         eval_set: str = MAIN_EVAL_SET) -> list[GroupKey]:
    """For one width, the group of each series (parametrization and batch rule) to compare
    on one figure.

    With several learning rates that is the group holding the series' best cell; when none of
    its runs has completed, its smallest learning rate.
    """
    width_groups = {key: runs for key, runs in groups.items() if key.width == width}
    runs = [run for group in width_groups.values() for run in group]
    best_lr = {cell.series: cell.lr for cell in best_cells_by_width(runs, eval_set)}
    chosen: dict[tuple, GroupKey] = {}
    for key in width_groups:  # sorted by lr within a series
        if key.series not in chosen or best_lr.get(key.series) == key.lr:
            chosen[key.series] = key
    return list(chosen.values())


# ----------------------------------------------------------------------------------------------
# Warmup colours

def log_warmup_positions(warmups: Iterable[int]) -> dict[int, float]:
    """Position of every warmup on a log10 token axis, with 0 placed at w_min / 2.

    w_min is the smallest nonzero warmup in the set. Zero cannot sit on a log axis; half the
    smallest real warmup puts it one factor-2 step below it, close enough to read as "less
    than any warmup" and far enough not to collide. With no nonzero warmup, 0 sits at 0.
    """
    warmups = sorted(set(warmups))
    nonzero = [warmup for warmup in warmups if warmup > 0]
    if not nonzero:
        return {warmup: 0.0 for warmup in warmups}
    zero_stand_in = nonzero[0] / 2
    return {warmup: math.log10(max(warmup, zero_stand_in)) for warmup in warmups}


def warmup_distances(warmups: Iterable[int], reference: int,
                     axis_warmups: Iterable[int] | None = None) -> dict[int, float]:
    """Distance in decades of tokens from each warmup to the reference (best) warmup.

    axis_warmups sets w_min of the log axis (default: the warmups themselves); pass the union
    when colours of several sets must be comparable.
    """
    warmups = sorted(set(warmups))
    positions = log_warmup_positions(list(axis_warmups or []) + warmups + [reference])
    return {warmup: abs(positions[warmup] - positions[reference]) for warmup in warmups}


def colour_values(distances: dict[int, float], max_distance: float | None = None) -> dict[int, float]:
    """Colormap coordinates in [0, WARMUP_COLORMAP_END], proportional to distance.

    max_distance (default: the largest distance) maps to the light end, so that several
    figures or parametrizations can share one scale.
    """
    scale = max(distances.values(), default=0.0) if max_distance is None else max_distance
    return {warmup: WARMUP_COLORMAP_END * (distance / scale if scale > 0 else 0.0)
            for warmup, distance in distances.items()}


def warmup_colours(warmups: Iterable[int], reference: int | None,
                   axis_warmups: Iterable[int] | None = None,
                   max_distance: float | None = None) -> dict[int, tuple]:
    """RGBA colour per warmup, darkest for the reference (best) warmup, lighter with distance.

    Without a reference (no completed run yet) the smallest warmup serves as one, so the
    colours still order the warmups.
    """
    warmups = sorted(set(warmups))
    reference = warmups[0] if reference is None else reference
    distances = warmup_distances(warmups, reference, axis_warmups)
    colormap = colormaps[WARMUP_COLORMAP]
    return {warmup: colormap(value)
            for warmup, value in colour_values(distances, max_distance).items()}


# ----------------------------------------------------------------------------------------------
# Summary table

@dataclass(frozen=True)
class SummaryRow:
    """One line of summary.md: one (param, width, lr, batch rule) group on one eval set."""

    group: GroupKey
    best_warmup: int | None
    best_mean_final_loss: float | None
    warmup_spread: float | None
    seed_std: float | None  # the noise: seed standard deviation of the best warmup's final loss
    n_completed: int
    n_diverged: int
    n_unfinished: int


def summary_rows(runs: Iterable[RunLog], eval_set: str = MAIN_EVAL_SET) -> list[SummaryRow]:
    """Per group: best warmup, its seed-mean final loss, the spread of seed-mean final losses
    across warmups (max - min, None with fewer than two warmups completed), the noise at the
    best warmup (seed std; None with fewer than two completed seeds), and run counts."""
    rows = []
    for key, group in group_runs(runs).items():
        results = warmup_results(group, eval_set)
        means = [result.mean_final_loss for result in results.values()
                 if result.mean_final_loss is not None]
        best = best_warmup(group, eval_set)
        rows.append(SummaryRow(
            group=key, best_warmup=best,
            best_mean_final_loss=None if best is None else results[best].mean_final_loss,
            warmup_spread=max(means) - min(means) if len(means) > 1 else None,
            seed_std=None if best is None else results[best].seed_stats.std,
            n_completed=sum(result.n_completed for result in results.values()),
            n_diverged=sum(result.n_diverged for result in results.values()),
            n_unfinished=sum(result.n_unfinished for result in results.values())))
    return rows


def per_warmup_markdown(runs: list[RunLog], value, fmt: str) -> list[str]:
    """A table with a row per group and a column per warmup; each cell lists value(run) of
    the completed runs, seed by seed ("a / b"), or "–" where no seed completed."""
    warmups = sorted({run.warmup_tokens for run in runs})
    lines = ["| parametrization | width | lr | " + " | ".join(map(format_tokens, warmups)) + " |",
             "|---|---|---|" + "---|" * len(warmups)]
    for key, group in group_runs(runs).items():
        cells = []
        for warmup in warmups:
            values = [value(run) for run in group if run.warmup_tokens == warmup and run.outcome == "completed"]
            cells.append(" / ".join(format(v, fmt) for v in values if v is not None) or "–")
        lines.append(f"| {series_label(key.series)} | {'n/a' if key.width is None else key.width} | "
                     f"{'n/a' if key.lr is None else format_lr(key.lr)} | " + " | ".join(cells) + " |")
    return lines


def seed_statistics_markdown(runs: list[RunLog], eval_set: str) -> list[str]:
    """A row per cell (group, warmup) with a completed seed: n, mean ± interval, noise, and
    the paired difference from the group's best warmup ("best" on the best row itself)."""

    def optional(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    lines = ["| parametrization | width | lr | warmup | seeds | mean ± 95 % | noise (seed std) | "
             "paired difference from best (n) |", "|---|---|---|---|---|---|---|---|"]
    for key, group in group_runs(runs).items():
        results, best = warmup_results(group, eval_set), best_warmup(group, eval_set)
        for warmup, result in results.items():
            if not result.final_losses:
                continue
            stats = result.seed_stats
            if warmup == best:
                difference = "best"
            else:
                paired = paired_difference(result.by_seed, results[best].by_seed)
                difference = "no shared seed" if paired is None else f"{paired.text(signed=True)} ({paired.n})"
            lines.append(f"| {series_label(key.series)} | {'n/a' if key.width is None else key.width} | "
                         f"{'n/a' if key.lr is None else format_lr(key.lr)} | {format_tokens(warmup)} | "
                         f"{stats.n} | {stats.text()} | {optional(stats.std)} | {difference} |")
    return lines


def summary_markdown(runs: list[RunLog], eval_sets: Iterable[str]) -> str:
    """summary.md: per eval set, the best-warmup table and every completed run's final loss;
    then every completed run's optimizer step count."""

    def number(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    lines = ["# Warmup grid summary", "",
             "Best warmup: lowest final loss averaged over completed seeds (ties: smaller warmup); "
             "diverged and unfinished runs are excluded. Spread across warmups: max - min of the "
             "seed-mean final losses. Noise: the seed standard deviation of a cell's final loss "
             "(here the best warmup's). Losses in nats.", ""]
    for eval_set in eval_sets:
        lines += [f"## Eval set: {eval_set}", "",
                  "| parametrization | width | lr | best warmup (tokens) | final loss at best "
                  "(seed mean) | spread across warmups | noise at best (seed std) | completed | "
                  "diverged | unfinished |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for row in summary_rows(runs, eval_set):
            key = row.group
            cells = [series_label(key.series), "n/a" if key.width is None else str(key.width),
                     "n/a" if key.lr is None else format_lr(key.lr),
                     "n/a" if row.best_warmup is None else format_tokens(row.best_warmup),
                     number(row.best_mean_final_loss), number(row.warmup_spread),
                     number(row.seed_std), str(row.n_completed), str(row.n_diverged),
                     str(row.n_unfinished)]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", f"Final {eval_set} loss per cell: seed mean ± the half-width of its "
                  f"{CONFIDENCE:.0%} interval (t over seeds), noise (seed std), and the difference "
                  "from the group's best warmup paired seed by seed, ± its interval (n pairs).", ""]
        lines += seed_statistics_markdown(runs, eval_set)
        lines += ["", f"Final {eval_set} loss of every completed run (seeds in ascending order):", ""]
        lines += per_warmup_markdown(runs, lambda run, name=eval_set: run.final_loss(name), ".3f") + [""]
    lines += ["## Optimizer steps", "",
              "Steps taken by every completed run (seeds in ascending order). With hlb-gpt's dynamic "
              "microbatching (main.py's default) the batch, and so the step count, differs from "
              "run to run; with `--microbatches N` it does not.", ""]
    lines += per_warmup_markdown(runs, lambda run: run.steps, "d") + [""]
    return "\n".join(lines)
