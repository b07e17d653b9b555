"""The committed GPU results regenerate from their logs, and say what docs/results.md and the
README's findings say."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from matplotlib import image

import runlog
from plots import analysis, fair_study

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.results  # every test here reads committed results
RESULTS = REPO / "docs" / "results.md"
SWEEP_DIRS = [REPO / "runs" / name for name in ("lr_transfer", "lr_transfer_low", "lr_transfer_768",
                                                          "lr_transfer_768_high")]


def run_plots(run_dirs: list, out: Path) -> Path:
    """The plotting command, as experiments/make_figures.sh runs it."""
    done = subprocess.run([sys.executable, "-m", "plots", *map(str, run_dirs), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return out


def final_losses() -> dict:
    """{(param, width): {lr: final books-valid loss}} over every completed sweep run."""
    table = {}
    for log in runlog.load_run_logs(SWEEP_DIRS).values():
        if log["status"] == runlog.COMPLETED:
            config = log["config"]
            table.setdefault((config["param"], config["width"]), {})[config["lr"]] = \
                log["summary"]["final_eval"]["valid"]["loss"]
    return table


def assert_is_a_figure(path: Path) -> None:
    """path is a PNG that reads back as an image of a plausible figure size, not blank."""
    pixels = image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 300 and pixels.shape[1] > 400, (path, pixels.shape)
    assert pixels[..., :3].std() > 0.05, f"{path} is blank"


def test_runs_readme_indexes_every_run_folder():
    """runs/README.md has a row for every folder under runs/, and names no folder that is not there."""
    rows = [line for line in (REPO / "runs" / "README.md").read_text().splitlines() if line.startswith("| `")]
    indexed = {folder for row in rows for folder in re.findall(r"`([a-z0-9_.]+)/`", row.split(" | ")[0])}
    assert indexed == {path.name for path in (REPO / "runs").iterdir() if path.is_dir()}


def test_sweep_logs_hold_the_reported_optima():
    table = final_losses()
    best = {key: min(by_lr, key=by_lr.get) for key, by_lr in table.items()}
    assert {key: len(by_lr) for key, by_lr in table.items()} == {
        ("sp", 128): 8, ("sp", 384): 8, ("sp", 768): 6, ("mup", 128): 8, ("mup", 384): 8, ("mup", 768): 6}
    assert [best["mup", w] for w in (128, 384, 768)] == [1.25e-3, 1.25e-3, 1.25e-3]
    assert [best["sp", w] for w in (128, 384, 768)] == [5e-3, 1.25e-3, 6.25e-4]


@pytest.mark.slow
def test_figures_regenerate_from_a_subset_of_the_logs(tmp_path):
    subset = tmp_path / "runs"
    subset.mkdir()
    for name in ("sp_w128_wu1e6_lr1.25e-3_s0", "sp_w128_wu1e6_lr5e-3_s0",
                 "mup_w128_wu1e6_lr1.25e-3_s0", "mup_w128_wu1e6_lr5e-3_s0",
                 "sp_w384_wu1e6_lr1.25e-3_s0", "sp_w384_wu1e6_lr5e-3_s0",
                 "mup_w384_wu1e6_lr1.25e-3_s0", "mup_w384_wu1e6_lr5e-3_s0"):
        shutil.copy(SWEEP_DIRS[0] / f"{name}.json", subset)
    out = run_plots([subset], tmp_path / "figures")
    for name in ("final_vs_lr_valid.png", "best_vs_width_valid.png", "final_vs_lr_wikitext.png"):
        assert_is_a_figure(out / name)
    summary = (out / "summary.md").read_text()
    assert "| SP | 128 | 5e-3 |" in summary and "| µP | 384 | 1.25e-3 |" in summary


GRID_DIRS = [REPO / "runs" / f"warmup_w384_{param}" for param in ("sp", "mup", "umup")]
WIDE_GRID_DIRS = [REPO / "runs" / f"warmup_w768_{param}" for param in ("sp", "mup")]
WARMUPS = [0, 1_000_000, 2_500_000, 5_000_000, 10_000_000, 20_000_000, 30_000_000]


def grid_logs(directories: list) -> list[dict]:
    """Every grid cell's run log (NAME_sSEED.json) in the folders, parsed."""
    return [runlog.load_run_log(path)
            for directory in directories for path in sorted(directory.glob("*_s[0-9].json"))]


def warmup_finals(directories: list = GRID_DIRS, width: int = 384) -> dict:
    """{(param, warmup_tokens): {seed: final books-valid loss}} over the completed grid runs."""
    table = {}
    for log in grid_logs(directories):
        if log["status"] != "completed":
            continue
        config = log["config"]
        assert config["total_tokens"] == 52_000_000 and config["width"] == width
        table.setdefault((config["param"], config["warmup_tokens"]), {})[config["seed"]] = \
            log["summary"]["final_eval"]["valid"]["loss"]
    return table


def seed_means(table: dict, param: str) -> dict:
    """{warmup_tokens: final loss averaged over the seeds} for one parametrization."""
    return {w: sum(by_seed.values()) / len(by_seed) for (p, w), by_seed in table.items() if p == param}


def test_warmup_grid_logs_hold_the_reported_answers():
    """docs/results.md's answers at width 384 (two seeds, seven warmups), recomputed from the logs."""
    table = warmup_finals()
    assert {key: len(by_seed) for key, by_seed in table.items() if key[0] != "umup"} == {
        (param, warmup): 2 for param in ("sp", "mup") for warmup in WARMUPS}
    sp, mup = seed_means(table, "sp"), seed_means(table, "mup")
    # SP beats µP by about 0.2, far outside µP's 0.08 run-to-run noise.
    assert 0.19 < min(mup.values()) - min(sp.values()) < 0.23
    # µP's curves spread more across warmups than SP's (0.72 against 0.24).
    assert max(mup.values()) - min(mup.values()) > 2.5 * (max(sp.values()) - min(sp.values()))
    # µP: short warmups are within noise of none; SP: a few million tokens of warmup help.
    assert max(mup[w] for w in (0, 1_000_000, 2_500_000)) - min(mup.values()) < 0.02
    assert sp[0] - max(sp[w] for w in (2_500_000, 5_000_000, 10_000_000)) > 0.04
    assert min(sp, key=sp.get) == 10_000_000 and min(mup, key=mup.get) == 2_500_000


def test_wide_grid_logs_hold_the_reported_transfer():
    """Width 768 (one seed, seven warmups): SP's best is 20M with 10M within SP's 0.03 noise of
    it and 1M-20M within 0.03; µP needs none (0 to 10M within 0.01); 30M costs both less than
    at 384; SP stays about 0.19 below µP."""
    table = warmup_finals(WIDE_GRID_DIRS, width=768)
    sp, mup = seed_means(table, "sp"), seed_means(table, "mup")
    assert sorted(sp) == sorted(mup) == WARMUPS
    assert min(sp, key=sp.get) == 20_000_000 and sp[10_000_000] - sp[20_000_000] < 0.02
    assert max(sp[w] for w in WARMUPS[1:6]) - min(sp.values()) < 0.031
    assert sp[0] - max(sp[w] for w in WARMUPS[1:6]) > 0.06
    assert min(mup, key=mup.get) == 1_000_000
    assert max(mup[w] for w in WARMUPS[:5]) - min(mup.values()) < 0.01
    narrow = warmup_finals()
    narrow_sp, narrow_mup = seed_means(narrow, "sp"), seed_means(narrow, "mup")
    for wide, narrow in ((sp, narrow_sp), (mup, narrow_mup)):
        assert wide[30_000_000] - min(wide.values()) < narrow[30_000_000] - min(narrow.values())
    assert 0.18 < min(mup.values()) - min(sp.values()) < 0.20


FIXED_BATCH_DIRS = [REPO / "runs" / f"warmup_w384_mb1_{param}" for param in ("sp", "mup")]
WIDE_FIXED_BATCH_DIRS = [REPO / "runs" / f"warmup_w768_mb1_{param}" for param in ("sp", "mup")]


def test_fixed_batch_grid_logs_hold_the_reported_answers():
    """--microbatches 1 (two seeds, seven warmups at 384; one seed, 0 and 5M so far at 768):
    every run takes 918 steps, the long warmup stops costing, µP's curves are the bunched ones
    though a short warmup still helps µP a little, and SP still ends ~0.2 lower."""
    steps = {log["summary"]["steps"] for log in grid_logs(FIXED_BATCH_DIRS + WIDE_FIXED_BATCH_DIRS)}
    assert steps == {918}
    table = warmup_finals(FIXED_BATCH_DIRS)
    assert {key: len(by_seed) for key, by_seed in table.items()} == {
        (param, warmup): 2 for param in ("sp", "mup") for warmup in WARMUPS}
    sp, mup = seed_means(table, "sp"), seed_means(table, "mup")
    spread = {name: max(means.values()) - min(means.values()) for name, means in (("sp", sp), ("mup", mup))}
    assert spread["mup"] < 0.021 and 0.045 < spread["sp"] < 0.05
    assert sp[30_000_000] - min(sp.values()) < 0.02 and mup[30_000_000] - min(mup.values()) < 0.021
    assert sp[0] - min(sp.values()) > 0.045
    # µP's best (1M) is 0.015 below no warmup, beyond its largest seed spread (0.009).
    mup_seed_spread = max(max(by_seed.values()) - min(by_seed.values())
                          for (param, _), by_seed in table.items() if param == "mup")
    assert mup_seed_spread < 0.01 < mup[0] - min(mup.values()) < 0.016
    assert 0.19 < min(mup.values()) - min(sp.values()) < 0.21
    wide = warmup_finals(WIDE_FIXED_BATCH_DIRS, width=768)
    assert set(wide) == {(param, warmup) for param in ("sp", "mup") for warmup in (0, 5_000_000)}
    assert 0.07 < wide["sp", 0][0] - wide["sp", 5_000_000][0] < 0.075
    assert 0 < wide["mup", 5_000_000][0] - wide["mup", 0][0] < 0.01


def test_grid_logs_hold_the_reported_step_counts():
    """docs/results.md's optimizer-step table: hlb-gpt's microbatch rule gives µP about half of SP's
    steps, cuts SP's at long warmups, and leaves u-µP at one microbatch every step."""
    steps = {}
    for log in grid_logs(GRID_DIRS + WIDE_GRID_DIRS):
        config = log["config"]
        steps.setdefault((config["param"], config["width"], config["warmup_tokens"]), []).append(
            log["summary"]["steps"])
    mean = {key: sum(values) / len(values) for key, values in steps.items()}
    for width in (384, 768):
        assert 0.45 < mean["mup", width, 0] / mean["sp", width, 0] < 0.6
        assert mean["sp", width, 30_000_000] < 0.4 * mean["sp", width, 0]
    assert {mean["umup", 384, w] for w in WARMUPS} == {918}
    assert mean["mup", 384, 30_000_000] < 0.3 * mean["mup", 384, 0]


def test_mup_rerun_noise_goes_with_the_step_count():
    """docs/results.md's account of µP's 0.08 same-seed noise: the reruns whose batch grew (fewer
    than 400 steps) end near 4.25; those with 456-462 steps agree within 0.01."""
    reruns = [runlog.load_run_log(path)["summary"]
              for path in (REPO / "runs" / "warmup_w384_repeats").glob("mup_*.json")]
    few = [run["final_eval"]["valid"]["loss"] for run in reruns if run["steps"] < 400]
    many = [run["final_eval"]["valid"]["loss"] for run in reruns if 450 <= run["steps"] <= 470]
    assert len(few) == 2 and min(few) > 4.24
    assert len(many) == 4 and max(many) - min(many) < 0.011 and max(many) < 4.18


def test_results_tables_are_the_regenerated_ones():
    """docs/results.md's final-loss and step tables (dynamic batch at widths 384 and 768, then the
    fixed-batch grid) are summary.md's (which experiments/make_figures.sh regenerates from the
    logs), bold aside."""
    def rows(text: str) -> dict:
        table = {}
        for line in text.splitlines():
            cells = [cell.strip().replace("*", "") for cell in line.strip().strip("|").split("|")]
            if cells[0] == "warmup (tokens)":  # the header row
                continue
            if ", " in cells[0] and len(cells) > 1:  # results.md: "SP, 384" | warmups
                param, width = cells[0].split(", ")
                table.setdefault((param, width), []).append(cells[1:])
            elif len(cells) > 3 and cells[1].isdigit():  # summary.md: param | width | lr | warmups
                table.setdefault((cells[0], cells[1]), []).append(cells[3:])
        return table

    def valid(summary: str) -> str:
        return summary.split("Final valid loss of every completed run")[1].split("## Eval set:")[0]
    dynamic = (REPO / "plots" / "warmup_grids" / "summary.md").read_text()
    fixed = (REPO / "plots" / "batch_comparison" / "summary.md").read_text()
    readme = RESULTS.read_text()
    readme = readme[readme.index("## Warmup grids at widths 384 and 768"):readme.index("### The earlier grids' answers")]
    # The doc's order: dynamic losses, dynamic steps, fixed-batch losses (918 steps, in words).
    fixed_rows = "\n".join(line for line in valid(fixed).splitlines() if "microbatch/step" in line)
    assert rows(readme) == rows(valid(dynamic) + dynamic.split("## Optimizer steps")[1] + fixed_rows)
    assert len(rows(readme)) == 9 and len(rows(readme)["SP (1 microbatch/step)", "384"]) == 1


def test_umup_grid_logs_hold_the_reported_answer():
    """u-µP (one seed, all seven warmups): flat up to 5M, within 0.03 end to end, and the long
    warmups cost more than its same-seed rerun noise (0.002, runs/warmup_w384_repeats)."""
    umup = {w: by_seed[0] for (p, w), by_seed in warmup_finals().items() if p == "umup"}
    assert sorted(umup) == WARMUPS
    assert max(umup.values()) - min(umup.values()) < 0.03
    assert max(umup[w] for w in (0, 1_000_000, 2_500_000, 5_000_000)) - min(umup.values()) < 0.01
    assert umup[30_000_000] - min(umup.values()) > 0.01
    repeats = {path.name: runlog.load_run_log(path)["summary"]["final_eval"]["valid"]["loss"]
               for path in (REPO / "runs" / "warmup_w384_repeats").glob("umup_*.json")}
    assert len(repeats) == 2
    for name, loss in repeats.items():
        warmup = {"wu25e5": 2_500_000, "wu3e7": 30_000_000}[name.split("_")[3]]
        assert abs(loss - umup[warmup]) < 0.002, name


@pytest.mark.slow
def test_grid_figures_regenerate_from_a_subset_of_the_logs(tmp_path):
    for directory, names in ((GRID_DIRS[0], ("sp_wu0_s0", "sp_wu0_s1", "sp_wu5e6_s0")),
                             (GRID_DIRS[1], ("mup_wu0_lr1.25e-3_s0", "mup_wu2e7_lr1.25e-3_s0"))):
        subset = tmp_path / directory.name
        subset.mkdir()
        for name in names:
            shutil.copy(directory / f"{name}.json", subset)
    out = run_plots([tmp_path / GRID_DIRS[0].name, tmp_path / GRID_DIRS[1].name], tmp_path / "figures")
    for name in ("overlay_valid_w384.png", "final_vs_warmup_valid.png"):
        assert_is_a_figure(out / name)
    summary = (out / "summary.md").read_text()
    assert "| SP | 384 | 2.52587e-3 | 5M |" in summary and "| µP | 384 | 1.25e-3 | 0 |" in summary


def test_study_coord_check_covers_every_width_of_the_study():
    """The committed coord check (experiments/make_figures.sh) pairs every width the study
    trained (128, 384, 768) with one 4x away, and µP and u-µP pass every check where SP fails."""
    result = json.loads((REPO / "plots" / "coord_check_study" / "coord_check.json").read_text())
    for param, expected in (("sp", False), ("mup", True), ("umup", True)):
        data = result["params"][param]
        assert data["pass"] is expected and all(check["ok"] for check in data["checks"]) is expected
        paired = {width for check in data["checks"] for width in (check["narrow"], check["wide"])}
        assert {128, 384, 768} <= paired


@pytest.mark.slow
def test_hlb_gpt_control_table_is_the_results_table_and_its_claims_hold():
    """docs/results.md's hlb-gpt table is what `experiments/hlb_gpt_control.py --compare` prints from
    the committed logs; the claims beside it hold in those logs."""
    done = subprocess.run([sys.executable, "experiments/hlb_gpt_control.py", "--compare"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() in RESULTS.read_text()

    sys.path.insert(0, str(REPO / "experiments"))
    import hlb_gpt_control as control
    hlb = control.completed_logs(sorted((REPO / "runs" / "hlb_gpt_control").glob("hlb_s*.json")))
    ours = control.our_reference_logs([REPO / "runs" / "h100_reference", REPO / "runs" / "hlb_gpt_control"])
    assert sorted(log["config"]["seed"] for log in hlb) == [0, 1, 2] and len(ours) == 6
    # The fixed windows read the whole split to within 0.01 at every eval of every hlb-gpt run.
    assert max(abs(p["eval"]["valid"]["loss"] - p["eval"]["valid_all"]["loss"])
               for log in hlb for p in log["curve"]) < 0.01

    def mean(logs, tokens):
        values = []
        for log in logs:
            try:
                values.append(control.at_tokens(log["curve"], "valid", tokens))
            except ValueError:
                pass
        return sum(values) / len(values)
    gaps = {tokens: mean(ours, tokens) - mean(hlb, tokens) for tokens in control.COMPARE_TOKENS}
    assert -0.07 < gaps[5.7e6] < -0.06
    assert all(-0.04 < gap < -0.025 for tokens, gap in gaps.items() if tokens > 1e7), gaps
    # With hlb-gpt's bf16 position table: within 0.02 of hlb-gpt's mean everywhere, and within
    # 0.05 of the data README's run at its three anchors.
    bf16 = control.hlb_bf16_logs(REPO / "runs" / "hlb_gpt_control")
    assert sorted(log["config"]["seed"] for log in bf16) == [0, 1, 2]
    assert all(log["config"]["position_bias"] == "hlb-bf16" and not log["config"]["compile"] for log in bf16)
    bf16_gaps = {tokens: mean(bf16, tokens) - mean(hlb, tokens) for tokens in control.COMPARE_TOKENS}
    assert all(abs(gap) < 0.02 for gap in bf16_gaps.values()), bf16_gaps
    assert all(abs(mean(bf16, tokens) - anchor) < 0.05 for tokens, anchor in control.DATA_README_ANCHOR.items())


def test_cpu_position_bias_pair_shows_the_coarse_table_costs_loss():
    """docs/performance.md: the same run with hlb-gpt's bf16 position table ends 0.014-0.026
    above the exact bias from 200K tokens on (same seed: same init and batches)."""
    curves = {name: {p["tokens"]: p["eval"]["valid"]["loss"] for p in
                     runlog.load_run_log(REPO / "runs" / "position_bias_cpu" / f"{name}.json")["curve"]}
              for name in ("exact", "hlb-bf16")}
    assert curves["exact"].keys() == curves["hlb-bf16"].keys()
    gaps = [curves["hlb-bf16"][t] - curves["exact"][t] for t in sorted(curves["exact"]) if t >= 200_000]
    assert len(gaps) == 5 and all(0.013 < gap < 0.027 for gap in gaps), gaps


def test_cpu_demo_grid_trains_away_from_the_base_width_so_sp_and_mup_differ():
    """runs/cpu_grid (experiments/cpu_grid.sh) is at a width other than µP's base width, where
    µP rescales layers SP leaves alone: every µP curve differs from SP's at the same warmup
    (at the base width the two are one model, their logs equal to the last digit)."""
    logs = grid_logs([REPO / "runs" / "cpu_grid"])
    curves = {(log["config"]["param"], log["config"]["warmup_tokens"]):
              [point["eval"]["valid"]["loss"] for point in log["curve"]] for log in logs}
    assert all(log["status"] == "completed" and log["config"]["width"] != log["config"]["base_width"]
               for log in logs)
    warmups = sorted(warmup for param, warmup in curves if param == "sp")
    assert len(warmups) == 3 and warmups == sorted(warmup for param, warmup in curves if param == "mup")
    assert all(curves["sp", w][-1] != curves["mup", w][-1] for w in warmups)


def assert_quoted(path: Path, *phrases: str) -> None:
    """Each phrase (a number as the doc writes it, with its context) is in the file, line breaks
    read as spaces."""
    text = " ".join(path.read_text().split())
    for phrase in phrases:
        assert " ".join(phrase.split()) in text, f"{path.name} lacks {phrase!r}"


def test_reference_runs_are_the_quoted_seeds():
    """Six default runs of this trainer at seeds 0-2, as docs/results.md says."""
    sys.path.insert(0, str(REPO / "experiments"))
    import hlb_gpt_control as control
    ours = control.our_reference_logs([REPO / "runs" / "h100_reference", REPO / "runs" / "hlb_gpt_control"])
    seeds = sorted(log["config"]["seed"] for log in ours)
    assert seeds == [0, 0, 1, 1, 1, 2], seeds  # fast and plain at seeds 0-1, ours_s1, ours_s2
    assert_quoted(RESULTS, f"{len(ours)} default runs (seeds {min(seeds)}-{max(seeds)};")


def test_lr_sweep_noise_and_horizon_are_the_quoted_ones():
    """At width 384 SP and µP compute the same function, so |SP - µP| per lr is run noise: at most
    0.004 up to the optimum, 0.055 at 2.5e-3, 0.084 at most (2e-2). Every run is 6M tokens at
    sequence lengths 32-64, and the runs at the optimum took 105 steps."""
    table = final_losses()
    gap = {lr: abs(table["sp", 384][lr] - table["mup", 384][lr]) for lr in table["sp", 384]}
    low = max(value for lr, value in gap.items() if lr <= 1.25e-3)
    worst = max(gap, key=gap.get)
    assert low < 0.005 and worst == 2e-2
    logs = runlog.load_run_logs(SWEEP_DIRS).values()
    assert {log["config"]["total_tokens"] for log in logs} == {6_000_000}
    assert {point["seq_len"] for log in logs for point in log["curve"]} == {32, 64}
    optimum = [log for log in logs if log["config"]["lr"] == 1.25e-3 and log["config"]["width"] == 384]
    assert {log["summary"]["steps"] for log in optimum} == {105}
    assert_quoted(RESULTS, f"at most {low:.3f} at lr ≤ 1.25e-3", f"{gap[2.5e-3]:.3f} at 2.5e-3",
                  f"up to {gap[worst]:.3f} above\n  (2e-2)", "6M tokens (105 steps) at sequence lengths 32–64")


def test_batch_mode_and_warmup_costs_are_the_quoted_ones():
    """With the batch fixed SP ends higher than with the dynamic batch at every warmup up to 10M
    (one sign, +0.016 to +0.029), µP's two modes differ both ways up to 5M; the 30M and 20M
    costs; the spreads across warmups; µP's fixed-batch best (1M) beats none in both seeds."""
    dynamic, fixed = warmup_finals(), warmup_finals(FIXED_BATCH_DIRS)
    sp, mup = seed_means(dynamic, "sp"), seed_means(dynamic, "mup")
    fixed_sp, fixed_mup = seed_means(fixed, "sp"), seed_means(fixed, "mup")
    sp_gaps = [fixed_sp[w] - sp[w] for w in WARMUPS[:5]]
    mup_gaps = [fixed_mup[w] - mup[w] for w in WARMUPS[:4]]
    assert min(sp_gaps) > 0 and min(mup_gaps) < 0 < max(mup_gaps)
    def cost(means, warmup):
        return means[warmup] - min(means.values())
    def spread(means):
        return max(means.values()) - min(means.values())
    assert_quoted(RESULTS, f"by +{min(sp_gaps):.3f} to +{max(sp_gaps):.3f}",
                  f"differ by −{-min(mup_gaps):.3f} to\n+{max(mup_gaps):.3f} up to 5M",
                  f"30M ends {cost(fixed_sp, 30_000_000):.3f} above the best under SP",
                  f"{cost(fixed_mup, 30_000_000):.3f} under µP (against {cost(mup, 30_000_000):.2f})",
                  f"µP at 20M is already {cost(mup, 20_000_000):.3f} worse\n(seed mean)",
                  f"(spread across the seven warmups {spread(fixed_mup):.3f}\n  against SP's {spread(fixed_sp):.3f}",
                  f"none is {cost(mup, 0):.3f}\n  and {cost(seed_means(warmup_finals(WIDE_GRID_DIRS, 768), 'mup'), 0):.3f} above them")
    assert min(fixed_mup, key=fixed_mup.get) == 1_000_000
    assert all(fixed["mup", 1_000_000][seed] < fixed["mup", 0][seed] for seed in (0, 1))


def test_recipe_comparison_is_the_quoted_one():
    """'Does µP beat SP?': SP-hlb's best against µP-uniform's best, seed means, at 384 in both
    batch modes and at 768 (one seed), and what width gives each."""
    def best(directories, width, param):
        return min(seed_means(warmup_finals(directories, width), param).values())
    rows = [(best(GRID_DIRS, 384, "sp"), best(GRID_DIRS, 384, "mup")),
            (best(FIXED_BATCH_DIRS, 384, "sp"), best(FIXED_BATCH_DIRS, 384, "mup")),
            (best(WIDE_GRID_DIRS, 768, "sp"), best(WIDE_GRID_DIRS, 768, "mup")),
            (best(WIDE_FIXED_BATCH_DIRS, 768, "sp"), best(WIDE_FIXED_BATCH_DIRS, 768, "mup"))]
    phrases = [f"{sp:.3f} against {mup:.3f}" for sp, mup in rows]
    phrases += [f"ends {rows[0][1] - rows[0][0]:.2f} below", f"{rows[1][1] - rows[1][0]:.2f} with the batch fixed",
                f"{rows[2][1] - rows[2][0]:.2f} at 768",
                f"SP −{rows[0][0] - rows[2][0]:.3f}, µP −{rows[0][1] - rows[2][1]:.3f}"]
    assert_quoted(RESULTS, *phrases)


def test_umup_lr_sweep_is_the_quoted_one():
    """u-µP's short sweep: lowest at lr 1 at both widths; lr 2 at width 384 failed (no result)."""
    final = {}
    for log in runlog.load_run_logs([REPO / "runs" / "umup_lr"]).values():
        if log["status"] == runlog.COMPLETED:
            final[log["config"]["width"], log["config"]["lr"]] = log["summary"]["final_eval"]["valid"]["loss"]
    assert (384, 2.0) not in final and (128, 2.0) in final
    for width in (128, 384):
        assert min((loss, lr) for (w, lr), loss in final.items() if w == width)[1] == 1.0
    assert_quoted(RESULTS, f"{final[384, 1.0]:.3f} at width 384", f"{final[128, 1.0]:.3f} at width 128 (lr 2: {final[128, 2.0]:.3f})")
    umup_seeds = {seed for (param, _), by_seed in warmup_finals().items() if param == "umup" for seed in by_seed}
    assert umup_seeds == {0}, "the u-µP grid is one seed; only same-seed reruns measure its noise"


def test_readme_findings_are_the_logs():
    """The README's findings: the fair study's warmup gains, lr optima and µP − SP gaps, and the
    earlier grids' 0.20 gap (fixed batch, best warmups)."""
    runs = fair_runs()
    gains = [-row.against_zero[10_000_000].mean for row in fair_study.warmup_rows(runs, "valid")
             if 10_000_000 in row.against_zero]
    fits = {warmup: fair_study.fit_lr(column) for warmup, column in fair_study.lr_table(runs, "valid").items()}
    rows = {row.width: row for row in fair_study.width_rows(runs, "valid")}
    assert max(abs(rows[w].difference.mean) for w in (192, 768)) <= 0.005
    fixed = warmup_finals(FIXED_BATCH_DIRS)
    sp, mup = seed_means(fixed, "sp"), seed_means(fixed, "mup")
    assert_quoted(REPO / "README.md",
                  f"beats none by {min(gains):.3f}-{max(gains):.3f} nats at widths 192, 384, 768 and 1536",
                  f"the fitted optimum is {fits[0].optimum * 1e3:.3g}e-3 without\nwarmup, while with 10M the lowest loss "
                  f"is at the largest lr tried, {fits[10_000_000].best_grid_lr * 1e3:.3g}e-3 (not bracketed)",
                  f"and {rows[1536].difference.mean:.3f} ± {rows[1536].difference.half_width:.3f} above it at 1536",
                  f"The {min(mup.values()) - min(sp.values()):.2f}-nat gap in the earlier grids")


# ----------------------------------------------------------------------------------------------
# The fair study (experiments/fair_study.sh, plots/fair_study.py)

FAIR_DIRS = [REPO / "runs" / name for name in fair_study.FOLDERS]
FIRST_MACHINE = ("422d3c6", "NVIDIA H200")  # 4 GPUs, calls 1-4
SECOND_MACHINE = ("c851268", "NVIDIA H200")  # 2 GPUs, calls 5-7


def fair_runs():
    return fair_study.load_study(FAIR_DIRS)


def fair_variant_rows(eval_set="valid"):
    return {(row.variant.folder, row.variant.width): row
            for row in fair_study.variant_rows(fair_runs(), fair_study.load_variants(REPO / "runs"), eval_set)}


def test_fair_study_tables_in_the_docs_are_its_summary(tmp_path):
    """docs/results.md's three fair-study tables are the regenerated summary's rows (books valid),
    and the committed summary is what the logs give today."""
    done = subprocess.run([sys.executable, "-m", "plots.fair_study", "runs", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = (tmp_path / "summary.md").read_text()
    assert summary == (REPO / "plots" / "fair_study" / "summary.md").read_text()
    valid = summary[:summary.index("## Eval set: wikitext")]
    docs = RESULTS.read_text()
    fair = docs[docs.index("## The fair study"):docs.index("## The earlier grids")]
    doc_rows = [line for line in fair.splitlines() if re.match(r"\| (\d|6\.25e|1\.25e|2\.5e|5e|no seq|u-µP)", line)]
    assert len(doc_rows) == 4 + 4 + 4 + 3
    for line in doc_rows:
        assert line in valid, f"docs/results.md row not in the summary: {line}"


def test_fair_study_design_and_runs_are_as_described():
    """The design paragraph: the arms' lrs, 918 steps with one microbatch, every group warming
    up, the two machines and commits, 54 logs of the first machine of which the two named are
    not completed, 14 completed on the second, and the training and compile times."""
    runs = fair_runs()
    assert len(runs) == 60
    assert sorted(run.name for run in runs if run.outcome != "completed") == \
        ["mup_wu25e5_lr1.25e-3_s0", "sp_w768_wu25e5_s2"]
    variant_dirs = [REPO / "runs" / name for name in fair_study.load_variants(REPO / "runs")]
    every_log = list(runlog.load_run_logs(FAIR_DIRS + variant_dirs).values())
    for log in every_log:
        config, env = log["config"], log["env"]
        assert (config["microbatches"], config["warmup_groups"]) == (1, "all")
        assert config["lr_recipe"] == ("uniform" if config["param"] == "umup" else "hlb")
        assert env["world_size"] == 1
        if log["status"] == runlog.COMPLETED:  # a batch of 1024-token sequences from the start: 924 steps
            assert log["summary"]["steps"] == (924 if config["seq_len_start"] == 1024 else 918)
            assert log["summary"]["tokens"] >= 52e6
    machine = lambda log: (log["env"]["git_commit"][:7], log["env"]["device"])
    assert {machine(log) for log in every_log} == {FIRST_MACHINE, SECOND_MACHINE}
    second = [log for log in every_log if machine(log) == SECOND_MACHINE]
    assert len(second) == 14 and all(log["status"] == runlog.COMPLETED for log in second)
    assert {log["config"]["out"].split("/")[-1] for log in second} == {"fair_mup_warmup_w1536", *(d.name for d in variant_dirs)}
    second_train = {}
    for log in second:
        second_train.setdefault(log["config"]["width"], set()).add(round(log["summary"]["train_seconds"]))
    umup_compile = [log["summary"]["compile_seconds"] for log in second
                    if log["config"]["param"] == "umup" and log["summary"]["compile_seconds"] > 30]
    assert (second_train, len(umup_compile), round(min(umup_compile)), round(max(umup_compile))) == \
        ({1536: {157}, 384: {32}}, 2, 166, 192)
    assert_quoted(RESULTS, "2 NVIDIA H200s at commit c851268 (calls 5-7)", "14 runs\ncompleted",
                  "Training took 157 s (1536) and 32 s\n(384)", "compiled cold (166-192 s")
    logs = [log for log in every_log if machine(log) == FIRST_MACHINE]
    assert len(logs) == 54
    sp_lrs = {log["config"]["width"]: log["config"]["lr"] for log in logs if log["config"]["param"] == "sp"}
    assert {w: f"{lr:.3g}" for w, lr in sorted(sp_lrs.items())} == {192: "0.00375", 768: "0.00168", 1536: "0.00108"}
    assert {log["config"]["lr"] for log in logs if log["config"]["param"] == "mup" and log["config"]["width"] != 384} == {2.5e-3}
    train = {}
    compile_s = []
    for log in logs:
        if log["status"] == runlog.COMPLETED:
            train.setdefault(log["config"]["width"], []).append(log["summary"]["train_seconds"])
            compile_s.append(log["summary"]["compile_seconds"])
    assert [round(min(train[w])) for w in (192, 384, 768, 1536)] == [20, 30, 59, 154]
    assert [round(max(train[w])) for w in (192, 384, 768, 1536)] == [20, 31, 60, 156]
    cold = [c for c in compile_s if c > 30]
    assert (round(min(cold)), round(max(cold)), round(min(compile_s)), round(max(set(compile_s) - set(cold)))) == (65, 88, 4, 11)
    assert (len(cold), len(compile_s) - len(cold)) == (8, 44)
    assert_quoted(REPO / "docs" / "performance.md", "8 of the 52 completed runs compiled cold,\n65-88 s each",
                  "The other 44 compiled in 4-11 s")
    cold_runs = sorted(log["run_name"] for log in logs
                       if log["status"] == runlog.COMPLETED and log["summary"]["compile_seconds"] > 30)
    assert cold_runs == ["mup_w1536_wu25e5_lr2.5e-3_s0", "mup_w1536_wu25e5_lr2.5e-3_s1", "mup_w192_wu25e5_lr2.5e-3_s0",
                         "mup_w768_wu0_lr2.5e-3_s0", "mup_wu0_lr6.25e-4_s0", "sp_w1536_wu25e5_s0",
                         "sp_w1536_wu25e5_s1", "sp_w192_wu25e5_s0"]
    assert_quoted(RESULTS, "3.75e-3 at 192, 1.68e-3 at 768, 1.08e-3 at 1536", "(`--microbatches 1`, 918 steps)",
                  "54 runs, 52 completed", "Training took 20 s (width 192), 30-31 s (384), 59-60 s (768) and "
                  "154-156 s (1536)", "65-88 s for a cold compile or 4-11 s from the compile cache")


def test_fair_study_answers_are_the_logs():
    """Every number of the three answers, from the same functions the summary uses."""
    runs = fair_runs()
    warmup = {row.width: row for row in fair_study.warmup_rows(runs, "valid")}
    gain = {w: warmup[w].against_zero[10_000_000] for w in (192, 384, 768, 1536)}
    assert all(d.mean + d.half_width < 0 for d in gain.values()), "each interval excludes 0"
    for w in (192, 384, 768, 1536):
        cells = warmup[w].cells
        assert cells[0].mean > cells[2_500_000].mean > cells[10_000_000].mean
    fits = {wu: fair_study.fit_lr(column) for wu, column in fair_study.lr_table(runs, "valid").items()}
    assert (fits[0].edge, fits[10_000_000].edge) == ("", "high"), "bracketed without warmup, at the top lr with 10M"

    def paired(lr, a, b, eval_set="valid"):
        return analysis.paired_difference(fair_study.seed_losses(runs, eval_set, "mup", 384, a, lr),
                                          fair_study.seed_losses(runs, eval_set, "mup", 384, b, lr))
    at5, at2, at1 = paired(5e-3, 10_000_000, 0), paired(2.5e-3, 10_000_000, 0), paired(1.25e-3, 10_000_000, 0)
    width = {row.width: row for row in fair_study.width_rows(runs, "valid")}
    wiki = {row.width: row for row in fair_study.width_rows(runs, "wikitext")}
    assert all(abs(wiki[w].difference.mean) < wiki[w].difference.half_width for w in (192, 768, 1536))
    sp_lr = width[1536].sp_lr
    by_seed = {s: fair_study.seed_losses(runs, "valid", "mup", 1536, 2_500_000, 2.5e-3)[s]
               - fair_study.seed_losses(runs, "valid", "sp", 1536, 2_500_000, sp_lr)[s] for s in (0, 1, 2)}
    assert all(d > 0 for d in by_seed.values()), "SP lower in all three seeds"
    neg = lambda stat: f"{-stat.mean:.4f} ± {stat.half_width:.4f}"
    diff = lambda stat: f"{abs(stat.mean):.4f} ± {stat.half_width:.4f}"
    wiki_text = lambda stat: f"{stat.mean:+.4f} ± {stat.half_width:.4f}".replace("-", "−")
    gains = [-d.mean for d in gain.values()]
    assert_quoted(RESULTS,
                  f"by {neg(gain[192])} at width 192, {neg(gain[384])} at 384,\n{neg(gain[768])} at 768 and {neg(gain[1536])} at 1536",
                  f"is {fits[0].optimum * 1e3:.3g}e-3 without\nwarmup, while with 10M the lowest seed mean is at the largest "
                  f"lr tried, {fits[10_000_000].best_grid_lr * 1e3:.3g}e-3, so that optimum\nlies at or above",
                  f"At lr 5e-3 the 10M warmup gains {neg(at5)} (n=2) against\n{neg(at2)} (n=3) at 2.5e-3",
                  f"within {diff(width[192].difference)} of each other at 192 and {diff(width[768].difference)} at 768 (n=2)",
                  f"SP-hlb ends lower by {width[1536].difference.mean:.4f} ± {width[1536].difference.half_width:.4f} (n=3",
                  f"(µP − SP {wiki_text(wiki[192].difference)}, {wiki_text(wiki[768].difference)}, "
                  f"{wiki_text(wiki[1536].difference)})",
                  f"with one recipe it is {width[1536].difference.mean:.4f} or less",
                  f"µP gains {min(gains):.3f}-{max(gains):.3f} from a 10M warmup",
                  f"(and at lr 1.25e-3 still {neg(at1)}, n=2)")
    assert max(abs(width[w].difference.mean) for w in (192, 768)) <= width[1536].difference.mean


def test_fair_study_single_changes_are_the_logs():
    """The single changes' prose: the sequence-length warmup's effect and its interval against
    the 10M warmup's gains, u-µP against µP-hlb, the one α setting run."""
    rows = fair_variant_rows()
    assert set(rows) == {("fair_seqlen1024", 384), ("fair_umup", 384), ("fair_umup_alpha_attn_0.5", 384)}
    seqlen, umup, alpha = rows["fair_seqlen1024", 384], rows["fair_umup", 384], rows["fair_umup_alpha_attn_0.5", 384]
    low, high = seqlen.difference.mean - seqlen.difference.half_width, seqlen.difference.mean + seqlen.difference.half_width
    gains = [-row.against_zero[10_000_000].mean for row in fair_study.warmup_rows(fair_runs(), "valid")]
    assert low < 0 < high and max(abs(low), abs(high)) < min(gains), "no effect, and the interval leaves out the warmup's gains"
    assert umup.difference.mean - umup.difference.half_width > 0 and (umup.difference.n, alpha.difference.n) == (3, 2)
    text = lambda stat: f"{stat.mean:.4f} ± {stat.half_width:.4f}"
    assert_quoted(RESULTS, f"changes the final loss by {text(seqlen.difference)} (n=3)",
                  f"The interval, {low:.4f} to {high:+.4f}, leaves out effects as large as the\n"
                  f"{min(gains):.3f}-{max(gains):.3f} that the 10M lr warmup gains".replace("The", "the"),
                  f"ends {text(umup.difference)} above µP-hlb at 384\n(n=3)", f"halved: {text(alpha.difference)} (n=2)")
