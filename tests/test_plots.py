"""Tests for the plots package on synthetic run logs."""

import json
import math
from pathlib import Path

import pytest
from matplotlib import image

from plots import analysis, figures
from plots.__main__ import main as plots_main
from plots_support import M, write_run

SP_GROUP = analysis.GroupKey("sp", 128, 1e-3)
MUP_GROUP = analysis.GroupKey("mup", 128, 1e-2)


@pytest.fixture
def run_dir(tmp_path):
    """A grid at two widths.

    Width 128, SP (lr 1e-3, seeds 0 and 1): seed-mean finals 4.6 (0), 4.25 (1M), 4.2 (10M,
    best), 4.4 (60M, one seed diverged); an unfinished warmup-0 seed whose last loss (3.9) is
    lower than every completed one, and a diverged run that also logged a low loss.
    Width 128, µP (lr 1e-2, one seed): 4.0, 3.95, 3.9, 3.85 (60M best on valid); on wikitext
    the 60M run is 0.2 worse, so 10M is best there.
    Width 256: SP at two learning rates and µP, so that the width figure is drawn.
    """
    directory = tmp_path / "runs"
    directory.mkdir()
    for warmup, finals in ((0, (4.5, 4.7)), (1 * M, (4.2, 4.3)), (10 * M, (4.1, 4.3))):
        for seed, final in enumerate(finals):
            write_run(directory, "sp", warmup, seed, final)
    write_run(directory, "sp", 60 * M, 0, 4.4)
    write_run(directory, "sp", 60 * M, 1, 3.0, status="diverged")
    write_run(directory, "sp", 0, 2, 3.9, status="running")
    for warmup, final in ((0, 4.0), (1 * M, 3.95), (10 * M, 3.9), (60 * M, 3.85)):
        write_run(directory, "mup", warmup, 0, final, lr=1e-2,
                  wikitext_offset=0.5 if warmup == 60 * M else 0.3)
    for lr, offset in ((1e-3, 0.0), (2e-3, -0.1)):
        for warmup, final in ((0, 4.3), (10 * M, 4.0)):
            write_run(directory, "sp", warmup, 0, final + offset, width=256, lr=lr)
    for warmup, final, steps in ((1 * M, 3.7, 917), (10 * M, 3.8, 450)):
        write_run(directory, "mup", warmup, 0, final, width=256, lr=1e-2, steps=steps)
    (directory / "manifest.json").write_text(json.dumps({"manifest_version": 1, "cells": []}))
    (directory / "notes.json").write_text(json.dumps({"something": "else"}))
    return directory


@pytest.fixture
def groups(run_dir):
    return analysis.group_runs(analysis.load_run_logs([run_dir]))


def test_loading_skips_manifest_and_foreign_json(run_dir):
    runs = analysis.load_run_logs([run_dir, run_dir])  # the same folder twice counts once
    assert len(runs) == 9 + 4 + 4 + 2
    assert analysis.eval_sets_of(runs) == ["valid", "wikitext"]
    assert list(analysis.group_runs(runs)) == [
        SP_GROUP, analysis.GroupKey("sp", 256, 1e-3), analysis.GroupKey("sp", 256, 2e-3),
        MUP_GROUP, analysis.GroupKey("mup", 256, 1e-2)]


def test_best_warmup_uses_seed_means_of_completed_runs_only(groups):
    sp_runs = groups[SP_GROUP]
    results = analysis.warmup_results(sp_runs)
    assert results[0].mean_final_loss == pytest.approx(4.6)  # the running seed is left out
    assert (results[0].n_completed, results[0].n_unfinished) == (2, 1)
    assert results[60 * M].final_losses == (4.4,)  # the diverged seed is left out
    assert results[60 * M].n_diverged == 1
    assert analysis.best_warmup(sp_runs) == 10 * M
    assert analysis.best_warmup(groups[MUP_GROUP], "valid") == 60 * M
    assert analysis.best_warmup(groups[MUP_GROUP], "wikitext") == 10 * M


def test_best_warmup_ties_go_to_the_smaller_warmup_and_none_without_completed_runs(tmp_path):
    write_run(tmp_path, "sp", 5 * M, 0, 4.0)
    write_run(tmp_path, "sp", 1 * M, 0, 4.0)
    write_run(tmp_path, "mup", 1 * M, 0, 3.0, status="diverged")
    write_run(tmp_path, "mup", 5 * M, 0, 3.0, status="interrupted")
    groups = analysis.group_runs(analysis.load_run_logs([tmp_path]))
    assert analysis.best_warmup(groups[analysis.GroupKey("sp", 128, 1e-3)]) == 1 * M
    assert analysis.best_warmup(groups[analysis.GroupKey("mup", 128, 1e-3)]) is None


def test_zero_warmup_sits_at_half_the_smallest_nonzero_warmup():
    positions = analysis.log_warmup_positions([0, 1 * M, 10 * M])
    assert positions[0] == pytest.approx(math.log10(0.5 * M))
    assert positions[10 * M] == pytest.approx(7.0)
    assert analysis.log_warmup_positions([0]) == {0: 0.0}


def test_distances_are_in_log_tokens_from_the_computed_best(groups):
    sp_runs = groups[SP_GROUP]
    best = analysis.best_warmup(sp_runs)
    distances = analysis.warmup_distances([run.warmup_tokens for run in sp_runs], best)
    assert distances == pytest.approx({0: math.log10(20), 1 * M: 1.0, 10 * M: 0.0,
                                       60 * M: math.log10(6)})


def test_colours_darken_towards_the_best_warmup(groups):
    sp_warmups = [run.warmup_tokens for run in groups[SP_GROUP]]
    distances = analysis.warmup_distances(sp_warmups, 10 * M)
    values = analysis.colour_values(distances)
    by_distance = sorted(distances, key=distances.get)
    assert by_distance == [10 * M, 60 * M, 1 * M, 0]
    assert [values[warmup] for warmup in by_distance] == sorted(values.values())
    assert values[10 * M] == 0.0 and values[0] == analysis.WARMUP_COLORMAP_END

    colours = analysis.warmup_colours(sp_warmups, 10 * M)

    def luminance(rgba):
        return 0.2126 * rgba[0] + 0.7152 * rgba[1] + 0.0722 * rgba[2]

    luminances = [luminance(colours[warmup]) for warmup in by_distance]
    assert luminances == sorted(luminances) and len(set(luminances)) == 4


def test_best_cells_choose_lr_and_warmup_jointly(run_dir):
    best = {(cell.series[0], cell.width): cell
            for cell in analysis.best_cells_by_width(analysis.load_run_logs([run_dir]))}
    assert (best["sp", 256].lr, best["sp", 256].warmup_tokens) == (2e-3, 10 * M)
    assert best["sp", 256].mean_final_loss == pytest.approx(3.9)
    assert (best["sp", 128].lr, best["sp", 128].warmup_tokens) == (1e-3, 10 * M)
    assert (best["mup", 256].warmup_tokens, best["mup", 128].warmup_tokens) == (1 * M, 60 * M)


def test_summary_rows_and_markdown_hold_the_right_numbers(run_dir):
    runs = analysis.load_run_logs([run_dir])
    rows = {row.group: row for row in analysis.summary_rows(runs)}
    sp = rows[SP_GROUP]
    assert sp.best_warmup == 10 * M
    assert sp.best_mean_final_loss == pytest.approx(4.2)
    assert sp.warmup_spread == pytest.approx(4.6 - 4.2)
    assert sp.seed_std == pytest.approx(math.sqrt(2 * 0.1 ** 2))  # finals 4.1 and 4.3, n - 1 = 1
    assert (sp.n_completed, sp.n_diverged, sp.n_unfinished) == (7, 1, 1)
    mup = rows[MUP_GROUP]
    assert (mup.best_warmup, mup.seed_std) == (60 * M, None)
    assert mup.warmup_spread == pytest.approx(0.15)

    markdown = analysis.summary_markdown(runs, ["valid", "wikitext"])
    assert "| SP | 128 | 1e-3 | 10M | 4.2000 | 0.4000 | 0.1414 | 7 | 1 | 1 |" in markdown
    # Per cell: mean ± t_{0.975,1} s/sqrt(2) = 12.7062 x 0.1414 / 1.4142, noise, and the
    # difference from the best (10M) paired by seed: 1M's (4.2, 4.3) - (4.1, 4.3) = (0.1, 0).
    assert "| SP | 128 | 1e-3 | 10M | 2 | 4.2000 ± 1.2706 | 0.1414 | best |" in markdown
    assert "| SP | 128 | 1e-3 | 1M | 2 | 4.2500 ± 0.6353 | 0.0707 | +0.0500 ± 0.6353 (2) |" in markdown
    assert "| SP | 128 | 1e-3 | 60M | 1 | 4.4000 | n/a | +0.3000 (1) |" in markdown
    assert "| µP | 128 | 1e-2 | 0 | 1 | 4.0000 | n/a | +0.1500 (1) |" in markdown
    assert "| µP | 128 | 1e-2 | 60M | 3.8500 | 0.1500 | n/a | 4 | 0 | 0 |" in markdown
    valid_section, wikitext_section = markdown.split("## Eval set: wikitext")
    assert "| µP | 128 | 1e-2 | 10M | 4.2000 | 0.1500 | n/a | 4 | 0 | 0 |" in wikitext_section
    # Every completed run's final loss, seed by seed; running and diverged seeds left out.
    assert "| parametrization | width | lr | 0 | 1M | 10M | 60M |" in valid_section
    assert "| SP | 128 | 1e-3 | 4.500 / 4.700 | 4.200 / 4.300 | 4.100 / 4.300 | 4.400 |" in valid_section
    assert "| µP | 256 | 1e-2 | – | 3.700 | 3.800 | – |" in valid_section
    assert "| SP | 128 | 1e-3 | 4.800 / 5.000 | 4.500 / 4.600 | 4.400 / 4.600 | 4.700 |" in wikitext_section
    steps_section = markdown.split("## Optimizer steps")[1]
    assert "| SP | 128 | 1e-3 | 5 / 5 | 5 / 5 | 5 / 5 | 5 |" in steps_section
    assert "| µP | 256 | 1e-2 | – | 917 | 450 | – |" in steps_section


def test_token_counts_are_labelled_exactly():
    assert [analysis.format_tokens(tokens) for tokens in (0, 500, 1500, 1 * M, 15 * M // 10,
                                                           60 * M, 2_000_000_000, 1_234_567)] == \
        ["0", "500", "1.5K", "1M", "1.5M", "60M", "2B", "1234.567K"]


def assert_png(path: Path):
    """path reads back as a PNG of a figure's size (at least 4.5 x 9 inches at 120 dpi) that is not blank."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] >= 540 and pixels.shape[1] >= 1080, pixels.shape
    assert pixels[..., :3].std() > 0.05, f"{path} is blank"


def test_figures_plot_the_logged_losses(run_dir, tmp_path, drawn):
    """The drawn lines hold the numbers in the logs: each run's curve, and the seed means."""
    runs = analysis.load_run_logs([run_dir])
    sp_runs = analysis.group_runs(runs)[SP_GROUP]
    figures.plot_group_curves(SP_GROUP, sp_runs, "valid", tmp_path / "curves_valid_sp_w128_lr1e-3.png")
    figures.plot_final_loss_vs_warmup(runs, "valid", tmp_path / "final_vs_warmup_valid.png")
    # Curves: one line per SP run at width 128, loss falling by 0.5 per eval to its final loss.
    curve_lines = [line for line in drawn["curves_valid_sp_w128_lr1e-3.png"].axes[0].get_lines()
                   if len(line.get_xdata()) == 5]
    expected = sorted((tuple(run.loss_curve("valid")[0]), tuple(run.loss_curve("valid")[1])) for run in sp_runs)
    assert sorted((tuple(line.get_xdata()), tuple(line.get_ydata())) for line in curve_lines) == expected
    assert (tuple(range(10 * M, 60 * M, 10 * M)), (6.5, 6.0, 5.5, 5.0, 4.5)) in expected  # sp wu0 s0
    # Final loss against warmup: the SP width-128 seed means (the fixture's docstring).
    final = drawn["final_vs_warmup_valid.png"].axes[0]
    [sp_line] = [line for line in final.get_lines() if line.get_label() == "SP, width 128, lr 1e-3 (seed mean)"]
    positions = analysis.log_warmup_positions(run.warmup_tokens for run in runs)
    assert list(sp_line.get_xdata()) == [positions[w] for w in (0, 1 * M, 10 * M, 60 * M)]
    assert list(sp_line.get_ydata()) == pytest.approx([4.6, 4.25, 4.2, 4.4])


@pytest.mark.slow
def test_cli_writes_every_figure_for_every_eval_set(run_dir, tmp_path, capsys):
    out_dir = tmp_path / "figures"
    assert plots_main([str(run_dir), "--out", str(out_dir)]) == 0
    expected = []
    for eval_set in ("valid", "wikitext"):
        expected += [f"curves_{eval_set}_sp_w128_lr1e-3.png", f"curves_{eval_set}_sp_w256_lr1e-3.png",
                     f"curves_{eval_set}_sp_w256_lr2e-3.png", f"curves_{eval_set}_mup_w128_lr1e-2.png",
                     f"curves_{eval_set}_mup_w256_lr1e-2.png", f"overlay_{eval_set}_w128.png",
                     f"overlay_{eval_set}_w256.png", f"final_vs_warmup_{eval_set}.png",
                     f"best_vs_width_{eval_set}.png",
                     f"final_vs_lr_{eval_set}.png",  # sp at width 256 has two learning rates
                     f"final_vs_steps_{eval_set}.png"]  # two µP runs took 917 and 450 steps
    assert sorted(path.name for path in out_dir.iterdir()) == sorted(expected + ["summary.md"])
    for name in expected:
        assert_png(out_dir / name)
    assert "| SP | 128 | 1e-3 | 10M |" in (out_dir / "summary.md").read_text()
    assert "19 runs" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_one_eval_set_as_pdf(run_dir, tmp_path):
    out_dir = tmp_path / "figures"
    assert plots_main([str(run_dir), "--out", str(out_dir), "--format", "pdf",
                       "--eval-set", "wikitext"]) == 0
    names = sorted(path.name for path in out_dir.iterdir())
    assert names and all("wikitext" in name for name in names if name != "summary.md")
    assert (out_dir / "final_vs_warmup_wikitext.pdf").read_bytes()[:4] == b"%PDF"


def test_cli_rejects_folders_without_run_logs_and_unknown_eval_sets(run_dir, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        plots_main([str(empty), "--out", str(tmp_path / "figures")])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        plots_main([str(run_dir), "--out", str(tmp_path / "figures"), "--eval-set", "nope"])
    assert "nope" in capsys.readouterr().err


def test_single_width_single_parametrization_grid_still_plots(tmp_path):
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    for warmup in (0, 5 * M):
        write_run(runs_dir, "sp", warmup, 0, 4.0, status="running")
    written = figures.make_figures(analysis.load_run_logs([runs_dir]), tmp_path / "figures", ["valid"])
    # No run has completed, so there is no final loss to draw against warmup.
    assert [path.name for path in written] == ["curves_valid_sp_w128_lr1e-3.png", "summary.md"]
    assert_png(written[0])
    assert "| SP | 128 | 1e-3 | n/a | n/a | n/a | n/a | 0 | 0 | 2 |" in written[-1].read_text()


def test_lr_sweep_with_one_warmup_draws_no_per_group_curves(tmp_path):
    """A group with one warmup has nothing to colour by: no curves_ figure, but the loss
    against lr (where a sweep's information is) and the summary."""
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    for lr, final in ((1e-3, 4.2), (2e-3, 4.0), (4e-3, 4.3)):
        write_run(runs_dir, "sp", M, 0, final, lr=lr)
    written = figures.make_figures(analysis.load_run_logs([runs_dir]), tmp_path / "figures", ["valid"])
    names = [path.name for path in written]
    assert not [name for name in names if name.startswith(("curves_", "final_vs_warmup_"))]
    assert "final_vs_lr_valid.png" in names and names[-1] == "summary.md"


@pytest.mark.slow
def test_fixed_and_dynamic_batch_runs_are_separate_series(tmp_path):
    """The same cell run with hlb-gpt's dynamic batch (logged "dynamic", or no key in older
    logs) and with --microbatches 1 must not be merged as seeds of one group."""
    for warmup, dynamic, fixed in ((0, 4.5, 4.3), (10 * M, 4.2, 4.35)):
        write_run(tmp_path, "sp", warmup, 0, dynamic, microbatches="dynamic" if warmup else None)
        write_run(tmp_path, "sp", warmup, 0, fixed, microbatches=1)
    runs = analysis.load_run_logs([tmp_path])
    groups = analysis.group_runs(runs)
    assert list(groups) == [analysis.GroupKey("sp", 128, 1e-3), analysis.GroupKey("sp", 128, 1e-3, 1)]
    assert [analysis.best_warmup(group) for group in groups.values()] == [10 * M, 0]
    assert [key.label for key in groups] == ["SP, width 128, lr 1e-3",
                                             "SP (1 microbatch/step), width 128, lr 1e-3"]
    summary = analysis.summary_markdown(runs, ["valid"])
    assert "| SP | 128 | 1e-3 | 4.500 | 4.200 |" in summary
    assert "| SP (1 microbatch/step) | 128 | 1e-3 | 4.300 | 4.350 |" in summary
    written = {path.name for path in figures.make_figures(runs, tmp_path / "figures", ["valid"])}
    assert {"curves_valid_sp_w128_lr1e-3.png", "curves_valid_sp_w128_lr1e-3_mb1.png",
            "overlay_valid_w128.png", "final_vs_warmup_valid.png"} <= written


# ----------------------------------------------------------------------------------------------
# Seed statistics: one noise definition, t intervals, paired differences


@pytest.mark.parametrize("df, expected", [
    (1, math.tan(math.pi * 0.475)),                  # Cauchy: tan(pi (p - 1/2))
    (2, 0.95 * math.sqrt(2 / (1 - 0.95 ** 2))),      # F(x) = 1/2 + x / (2 sqrt(2 + x^2))
    (4, 2.7764451051977934),   # scipy.stats.t.ppf(0.975, df)
    (30, 2.0422724563012378),
])
def test_t_quantile_against_closed_forms_and_tables(df, expected):
    assert analysis.t_quantile(0.975, df) == pytest.approx(expected, rel=1e-9)


def test_seed_statistics_and_paired_difference_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    a = {0: 3.91, 1: 3.87, 2: 3.95, 3: 3.90}
    b = {0: 3.85, 1: 3.84, 2: 3.93, 3: 3.80, 7: 1.0}  # seed 7 has no partner: left out
    cell = analysis.seed_statistics(a.values())
    low, high = stats.t.interval(0.95, len(a) - 1, loc=cell.mean, scale=stats.sem(list(a.values())))
    assert cell.std == pytest.approx(stats.tstd(list(a.values())), rel=1e-12)
    assert (cell.mean - cell.half_width, cell.mean + cell.half_width) == pytest.approx((low, high), rel=1e-9)
    paired = analysis.paired_difference(a, b)
    reference = stats.ttest_rel([a[s] for s in range(4)], [b[s] for s in range(4)]).confidence_interval(0.95)
    assert paired.n == 4 and paired.mean == pytest.approx(0.0525, rel=1e-12)
    assert (paired.mean - paired.half_width, paired.mean + paired.half_width) == pytest.approx(
        (reference.low, reference.high), rel=1e-9)
    # One seed: a mean without noise or interval; no shared seed: no difference.
    assert analysis.seed_statistics([4.0]) == analysis.SeedStatistics(1, 4.0, None, None)
    assert analysis.paired_difference({0: 1.0}, {1: 1.0}) is None


# What the legends promise is what is drawn

def legend_texts(ax) -> list[str]:
    return [text.get_text() for text in ax.get_legend().get_texts()]


@pytest.mark.parametrize("seeds, banded", [((0,), False), ((0, 1), True)])
def test_seed_band_is_drawn_and_named_only_with_two_or_more_seeds(tmp_path, drawn, seeds, banded):
    for warmup in (0, M):
        for seed in seeds:
            write_run(tmp_path, "sp", warmup, seed, 4.0 + 0.1 * seed)
    figures.plot_final_loss_vs_warmup(analysis.load_run_logs([tmp_path]), "valid", tmp_path / "f.png")
    ax = drawn["f.png"].axes[0]
    assert bool(ax.collections) == banded  # fill_between's PolyCollection
    assert ("band: min-max over completed seeds" in legend_texts(ax)) == banded


def test_identical_series_say_so_in_the_legend(tmp_path, drawn):
    """SP and µP with the same numbers (µP at its base width): µP's line hides SP's, so its
    legend entry names SP; a µP that differs is not marked."""
    for warmup, final in ((0, 4.2), (M, 4.0)):
        write_run(tmp_path, "sp", warmup, 0, final)
        write_run(tmp_path, "mup", warmup, 0, final)
        write_run(tmp_path, "umup", warmup, 0, final + 0.1)
    runs = analysis.load_run_logs([tmp_path])
    figures.plot_final_loss_vs_warmup(runs, "valid", tmp_path / "final.png")
    groups = analysis.group_runs(runs)
    figures.plot_parametrization_overlay(groups, "valid", tmp_path / "overlay.png")
    assert legend_texts(drawn["final.png"].axes[0])[:3] == [
        "SP, width 128, lr 1e-3 (seed mean)",
        "µP, width 128, lr 1e-3 (identical to SP, width 128, lr 1e-3) (seed mean)",
        "u-µP, width 128, lr 1e-3 (seed mean)"]
    overlay = legend_texts(drawn["overlay.png"].axes[0])
    assert [text.split(";")[0] for text in overlay] == [
        "SP, width 128, lr 1e-3", "µP, width 128, lr 1e-3 (identical to SP, width 128, lr 1e-3)",
        "u-µP, width 128, lr 1e-3"]
    assert figures.identical_notes(["a", "b", "c"], [[1.0], [1.0 + 1e-12], [1.0]]) == \
        ["a", "b", "c (identical to a)"]  # exact equality only


def test_overlay_has_one_slim_colour_bar(run_dir, drawn, tmp_path):
    groups = analysis.group_runs(analysis.load_run_logs([run_dir]))
    figures.plot_parametrization_overlay({key: groups[key] for key in (SP_GROUP, MUP_GROUP)}, "valid",
                                         tmp_path / "overlay.png")
    fig = drawn["overlay.png"]
    fig.canvas.draw()
    main_axes, colour_bar = fig.axes  # one colour bar for both series
    assert colour_bar.get_position().width < 0.05 < main_axes.get_position().width


def test_coord_check_panels_give_their_verdicts_and_mark_the_layers_that_may_shrink(tmp_path, monkeypatch):
    """A µP-like result: flat hidden layers, a readout shrinking as 1/sqrt(width), which the
    criterion allows; an SP-like one whose hidden layer grows at t=2."""
    from matplotlib.figure import Figure
    from mup_patch import coord_check
    widths, steps = [64, 256], 3
    shrinking = {64: [1.0, 1.0, 1.0], 256: [0.5, 0.5, 0.5]}
    mup_means = {"embedding": {w: [1.0] * steps for w in widths}, "readout": shrinking}
    sp_means = {"embedding": {64: [1.0] * steps, 256: [1.0, 2.0, 2.0]}, "readout": shrinking}
    result = {"config": {"steps": steps, "widths": widths, "seeds": [0]}, "params": {}}
    for param, means in (("sp", sp_means), ("mup", mup_means)):
        checks, passed, failing = coord_check.judge(means, widths, steps)
        result["params"][param] = {"pass": passed, "layers": list(means), "checks": checks,
                                   "mean_abs": {layer: {str(w): v for w, v in by_width.items()}
                                                for layer, by_width in means.items()}}
    saved = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, path, **kwargs: saved.append(fig))
    coord_check.plot(result, tmp_path / "coord.png")
    [fig] = saved
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["SP, t=1 (init): pass", "µP, t=1 (init): pass",
                      "SP, t=2 (after 1 step): FAIL (1 layer)", "µP, t=2 (after 1 step): pass",
                      "SP, t=3 (after 2 steps): FAIL (1 layer)", "µP, t=3 (after 2 steps): pass"]
    styles = {line.get_label(): (line.get_linestyle(), line.get_color()) for line in fig.legends[0].get_lines()}
    assert styles["readout (may shrink)"][0] == "--" and styles["embedding"][0] == "-"
    assert styles["embedding"][1] != styles["readout (may shrink)"][1]
    assert coord_check.SHRINK_NOTE in styles
