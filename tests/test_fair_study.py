"""plots.fair_study on a synthetic, partly missing study: every number in summary.md against
a mean, t-interval, paired difference or parabola vertex computed by hand here."""

import math
import re

import pytest
from matplotlib.colors import to_rgb

from plots import analysis, fair_study
from plots_support import M, write_run

T_QUANTILE = {2: 12.706, 3: 4.303}  # 97.5 % quantile of Student's t with n - 1 degrees of freedom
SEED_OFFSETS = {0: -0.01, 1: 0.01, 2: 0.0}  # symmetric: the seed mean of 2 or 3 seeds is offset-free
WARMUP_LOSS_AT_384 = {  # per warmup, a function of the lr: the synthetic lr curve at width 384
    0: lambda lr: 4.0 + 0.05 * (math.log2(lr) - math.log2(2e-3)) ** 2,  # opens upward, vertex 2e-3
    25 * M // 10: lambda lr: 4.5 - 0.02 * (math.log2(lr) - math.log2(1.25e-3)) ** 2,  # opens downward
    10 * M: lambda lr: 4.3 + lr}  # two lrs only


def by_hand(values):
    """(mean, half-width of the 95 % t-interval) with the formulas written out."""
    n, mean = len(values), sum(values) / len(values)
    std = math.sqrt(sum((value - mean) ** 2 for value in values) / (n - 1))
    return mean, T_QUANTILE[n] * std / math.sqrt(n)


@pytest.fixture
def runs_dir(tmp_path):
    """The study's folders with some cells missing: no SP at 1536 and only seed 0 of µP there,
    SP at 768 with seed 2 diverged, µP at 768 warmup 10M with one seed, one unfinished run at
    384, fair_mup_warmup_w1536 absent; and a stray SP run at 384 that must not count."""
    def study_run(folder, param, width, warmup, seed, final, lr=fair_study.MUP_LR, status="completed"):
        (tmp_path / folder).mkdir(exist_ok=True)
        write_run(tmp_path / folder, param, warmup, seed, final, status=status, width=width, lr=lr, microbatches=1)

    for width, mup, sp_lr, sp in ((192, (4.10, 4.14, 4.12), 4e-3, (4.20, 4.21, 4.25)),
                                  (768, (3.80, 3.83, 3.81), 1.6e-3, (3.90, 3.86))):
        for seed, final in enumerate(mup):
            study_run(f"fair_hlb_w{width}", "mup", width, 25 * M // 10, seed, final)
        for seed, final in enumerate(sp):
            study_run(f"fair_hlb_w{width}", "sp", width, 25 * M // 10, seed, final, lr=sp_lr)
    study_run("fair_hlb_w768", "sp", 768, 25 * M // 10, 2, 3.0, lr=1.6e-3, status="diverged")
    study_run("fair_hlb_w1536", "mup", 1536, 25 * M // 10, 0, 3.60)
    for width, warmup, finals in ((192, 0, (4.30, 4.33, 4.36)), (192, 10 * M, (4.20, 4.22, 4.21)),
                                  (768, 0, (3.90, 3.92, 3.91)), (768, 10 * M, (3.85,))):
        for seed, final in enumerate(finals):
            study_run("fair_mup_warmup", "mup", width, warmup, seed, final)
    for warmup, loss in WARMUP_LOSS_AT_384.items():
        for lr in (6.25e-4, 1.25e-3, 2.5e-3, 5e-3) if warmup < 10 * M else (2.5e-3, 5e-3):
            for seed in (0, 1, 2) if lr == 2.5e-3 else (0, 1):
                unfinished = (warmup, lr, seed) == (25 * M // 10, 6.25e-4, 1)
                study_run("fair_w384", "mup", 384, warmup, seed, loss(lr) + SEED_OFFSETS[seed], lr=lr,
                          status="running" if unfinished else "completed")
    study_run("fair_w384", "sp", 384, 25 * M // 10, 0, 9.0)
    return tmp_path


def cells_of(summary: str, eval_set: str, section: str, first_cell: str) -> list[str]:
    """The cells after the first of the row starting `| first_cell |` in the summary's table
    under `### section...` of `## Eval set: eval_set`."""
    block = summary.split(f"## Eval set: {eval_set}\n")[1].split("\n## ")[0]
    table = block.split(f"### {section}")[1].split("\n### ")[0]
    [row] = [line for line in table.splitlines() if line.startswith(f"| {first_cell} |")]
    return [cell.strip() for cell in row.strip("|").split("|")][1:]


def parsed(cell: str) -> tuple:
    """'4.1200 ± 0.0497 (n=3)' -> (4.12, 0.0497, 3); without an interval the half-width is None."""
    match = re.fullmatch(r"([+-]?[\d.]+)(?: ± ([\d.]+))? \(n=(\d+)\)", cell)
    assert match, cell
    mean, half_width, n = match.groups()
    return float(mean), None if half_width is None else float(half_width), int(n)


def assert_cell(cell: str, values: list[float]):
    mean, half_width, n = parsed(cell)
    assert n == len(values)
    assert mean == pytest.approx(sum(values) / len(values), abs=6e-5)
    if len(values) == 1:
        assert half_width is None
    else:
        assert half_width == pytest.approx(by_hand(values)[1], abs=2e-4)  # 4.303 is the quantile to 3 decimals


def load(runs_dir):
    return fair_study.load_study([runs_dir / name for name in fair_study.FOLDERS if (runs_dir / name).is_dir()])


@pytest.fixture
def summary(runs_dir):
    """summary.md's text (the figures test checks that the command writes it)."""
    return fair_study.summary_markdown(load(runs_dir), ["valid", "wikitext"])


def test_width_table_pairs_mup_and_sp_by_seed(summary):
    width = "µP-hlb against SP-hlb across width"
    mup, sp, sp_lr, difference = cells_of(summary, "valid", width, "192")
    assert_cell(mup, [4.10, 4.14, 4.12])
    assert_cell(sp, [4.20, 4.21, 4.25])
    assert sp_lr == "4e-3"
    assert_cell(difference, [4.10 - 4.20, 4.14 - 4.21, 4.12 - 4.25])
    mup, sp, sp_lr, difference = cells_of(summary, "valid", width, "768")
    assert_cell(sp, [3.90, 3.86])  # the diverged seed 2 is left out...
    assert_cell(difference, [3.80 - 3.90, 3.83 - 3.86])  # ...and so is its pair
    assert cells_of(summary, "valid", width, "1536") == ["3.6000 (n=1)", "–", "–", "–"]
    assert_cell(cells_of(summary, "wikitext", width, "192")[0], [4.40, 4.44, 4.42])  # valid + 0.3


def test_the_base_width_row_is_one_set_of_runs(summary, runs_dir):
    """At 384 both columns are µP's lr-2.5e-3, warmup-2.5M runs (the stray SP run is ignored),
    and the difference is 0 by construction, not a measured noise."""
    mup, sp, sp_lr, difference = cells_of(summary, "valid", "µP-hlb against SP-hlb across width", "384")
    assert_cell(mup, [WARMUP_LOSS_AT_384[25 * M // 10](2.5e-3) + SEED_OFFSETS[seed] for seed in (0, 1, 2)])
    assert (sp, sp_lr, difference) == ("= µP (same runs)", "2.5e-3", "0 (not applicable)")
    assert "384: one set of runs; µP = SP at the base width" in summary
    [row] = [row for row in fair_study.width_rows(load(runs_dir), "valid") if row.width == 384]
    assert row.sp == row.mup and row.difference is None


def test_warmup_table_against_warmup_zero(summary):
    section = "µP-hlb warmup per width"
    zero, middle, long, middle_minus_zero, long_minus_zero = cells_of(summary, "valid", section, "192")
    assert_cell(zero, [4.30, 4.33, 4.36])
    assert_cell(middle, [4.10, 4.14, 4.12])  # from fair_hlb_w192
    assert_cell(middle_minus_zero, [4.10 - 4.30, 4.14 - 4.33, 4.12 - 4.36])
    assert_cell(long_minus_zero, [4.20 - 4.30, 4.22 - 4.33, 4.21 - 4.36])
    assert_cell(cells_of(summary, "valid", section, "768")[2], [3.85])
    assert_cell(cells_of(summary, "valid", section, "768")[4], [3.85 - 3.90])
    assert cells_of(summary, "valid", section, "1536") == ["–", "3.6000 (n=1)", "–", "–", "–"]


def test_lr_table_and_fitted_optimum(summary):
    section = "Learning rate at width 384"
    loss = WARMUP_LOSS_AT_384
    zero, middle, long = cells_of(summary, "valid", section, "6.25e-4")
    assert_cell(zero, [loss[0](6.25e-4) - 0.01, loss[0](6.25e-4) + 0.01])
    assert_cell(middle, [loss[25 * M // 10](6.25e-4) - 0.01])  # seed 1 unfinished: not counted
    assert long == "–"
    # Seed means lie on 0.05 (x - log2 2e-3)^2 + 4, so the fit is that parabola: a = 0.05,
    # b = -2 a log2(2e-3), vertex -b / 2a = log2(2e-3).
    assert "- warmup 0: fitted optimum 2e-3 (4 lrs in the fit); best grid lr 2.5e-3" in summary
    # Opens downward: the lowest mean is the grid's last lr, so the optimum is not bracketed.
    assert "- warmup 2.5M: lowest at the grid's last lr: optimum >= 5e-3 (not bracketed)" in summary
    assert "- warmup 10M: 2 lr(s), fewer than 3: no fit; best grid lr 2.5e-3" in summary
    assert "mup_w384_wu2500000_lr0.000625_s1_mb1 (running)" in summary


def test_an_optimum_at_the_grid_edge_is_not_bracketed():
    """A parabola that bottoms out beyond the largest lr: the lowest mean is the grid's last lr,
    and the text says the optimum lies at or above it (plots/lr_optimum.py's rule, tested there)."""
    lrs = (1e-3, 2e-3, 4e-3)
    column = {lr: analysis.SeedStatistics(1, (math.log2(lr) + 5) ** 2, None, None) for lr in lrs}
    fit = fair_study.fit_lr(column)
    assert fit.edge == "high" and fit.best_grid_lr == 4e-3
    assert fair_study.fit_text(fit) == "lowest at the grid's last lr: optimum >= 4e-3 (not bracketed)"


def test_figures_are_written_and_never_show_an_interval_from_one_seed(runs_dir, tmp_path, drawn):
    out = tmp_path / "out"
    assert fair_study.main([str(runs_dir), "--out", str(out)]) == 0
    assert (out / "summary.md").read_text() == fair_study.summary_markdown(load(runs_dir), ["valid", "wikitext"])
    for eval_set in ("valid", "wikitext"):
        for name in ("final_vs_width", "final_vs_warmup", "final_vs_lr_w384"):
            assert (out / f"{name}_{eval_set}.png").read_bytes()[:4] == b"\x89PNG"
        for width in (192, 384, 768):  # 1536 has one warmup: no colours to compare
            assert (out / f"curves_{eval_set}_mup_w{width}_lr2.5e-3_mb1.png").is_file()
    assert not list(out.glob("curves_*_sp_*"))
    # Width: bars at every point with two or more seeds (µP 192, 384, 768; SP 192, 384, 768),
    # none at µP's one-seed 1536.
    width_ax = drawn["final_vs_width_valid.png"].axes[0]
    bars = [segment for collection in width_ax.collections for segment in collection.get_segments()]
    assert sorted(segment[0][0] for segment in bars) == [192, 192, 384, 384, 768, 768]
    # Warmup at 768: the band spans warmups 0 and 2.5M (3 seeds each), never 10M (one seed).
    warmup_ax = drawn["final_vs_warmup_valid.png"].axes[0]
    [line_768] = [line for line in warmup_ax.get_lines() if line.get_label() == "width 768"]
    band_768 = [collection for collection in warmup_ax.collections
                if collection.get_facecolor()[0][:3].tolist() == list(to_rgb(line_768.get_color()))]
    x_10m = line_768.get_xdata()[-1]
    assert band_768 and all(path.vertices[:, 0].max() < x_10m for path in band_768[0].get_paths())
    # Curves: one seed-mean curve per warmup; the loss falls by 0.5 per eval to the mean final.
    curves = drawn["curves_valid_mup_w192_lr2.5e-3_mb1.png"].axes[0]
    drawn_curves = sorted(list(line.get_ydata()) for line in curves.get_lines() if len(line.get_ydata()) == 5)
    for curve, final in zip(drawn_curves, (4.12, 4.21, 4.33)):
        assert curve == pytest.approx([final + 0.5 * k for k in (4, 3, 2, 1, 0)])


def test_cli_names_the_folders_it_looks_for(tmp_path, capsys):
    with pytest.raises(SystemExit):
        fair_study.main([str(tmp_path), "--out", str(tmp_path / "out")])
    assert "none of fair_hlb_w192" in capsys.readouterr().err


def test_single_changes_pair_each_change_with_the_cell_it_changes(runs_dir, tmp_path, drawn):
    """Variant folders share the study's cell keys yet are read on their own; each row pairs the
    change with its reference by seed (µP-hlb for the first, u-µP at 384 for an α setting), and
    a pair of one seed gets a point without a bar."""
    def variant_run(folder, param, width, seed, final):
        (runs_dir / folder).mkdir(exist_ok=True)
        write_run(runs_dir / folder, param, 25 * M // 10, seed, final, width=width, lr=fair_study.MUP_LR, microbatches=1)

    seqlen = (4.44, 4.51, 4.47)  # µP-hlb at 384, 2.5M: WARMUP_LOSS_AT_384 at 2.5e-3 plus the seed offsets
    umup = (4.70, 4.80, 4.75)
    for seed in (0, 1, 2):
        variant_run("fair_seqlen1024", "mup", 384, seed, seqlen[seed])
        variant_run("fair_umup", "umup", 384, seed, umup[seed])
    variant_run("fair_umup", "umup", 1536, 0, 3.9)
    variant_run("fair_umup_alpha_act_2", "umup", 384, 0, 4.60)
    variant_run("fair_umup_alpha_act_2", "umup", 384, 1, 4.90)
    text = fair_study.summary_markdown(load(runs_dir), ["valid"], fair_study.load_variants(runs_dir))
    reference = [WARMUP_LOSS_AT_384[25 * M // 10](2.5e-3) + SEED_OFFSETS[seed] for seed in (0, 1, 2)]
    rows = {line.split(" | ")[0][2:] + " @" + line.split(" | ")[1]: [cell.strip() for cell in line.strip("|").split("|")]
            for line in text.split("### Single changes")[1].splitlines() if line.startswith("| ") and "|---" not in line
            and not line.startswith("| change")}
    assert set(rows) == {"no sequence-length warmup (--seq-len-start 1024) @384", "u-µP (lr 1, its own recipe) @384",
                         "u-µP (lr 1, its own recipe) @1536", "u-µP, α act × 2 @384"}
    row = rows["no sequence-length warmup (--seq-len-start 1024) @384"]
    assert_cell(row[3], list(seqlen))
    assert_cell(row[5], reference)
    assert_cell(row[6], [a - b for a, b in zip(seqlen, reference)])
    assert_cell(rows["u-µP (lr 1, its own recipe) @1536"][6], [3.9 - 3.60])
    row = rows["u-µP, α act × 2 @384"]
    assert row[4] == "u-µP (lr 1, its own recipe)"
    assert_cell(row[6], [4.60 - 4.70, 4.90 - 4.80])
    out = tmp_path / "out"
    assert fair_study.main([str(runs_dir), "--out", str(out)]) == 0
    ax = drawn["single_changes_valid.png"].axes[0]
    bars = [segment for collection in ax.collections for segment in collection.get_segments()]
    assert len(bars) == 3, "bars for the three changes with two or more pairs, none for 1536's one"
