"""The committed GPU results regenerate from their logs, and say what the README says."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from matplotlib import image

import runlog

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.results  # every test here reads committed results
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
    indexed = {folder for row in rows for folder in re.findall(r"`([a-z0-9_]+)/`", row.split(" | ")[0])}
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
    """The README's answers at width 384 (two seeds, seven warmups), recomputed from the logs."""
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
    """The README's optimizer-step table: hlb-gpt's microbatch rule gives µP about half of SP's
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
    """The README's account of µP's 0.08 same-seed noise: the reruns whose batch grew (fewer
    than 400 steps) end near 4.25; those with 456-462 steps agree within 0.01."""
    reruns = [runlog.load_run_log(path)["summary"]
              for path in (REPO / "runs" / "warmup_w384_repeats").glob("mup_*.json")]
    few = [run["final_eval"]["valid"]["loss"] for run in reruns if run["steps"] < 400]
    many = [run["final_eval"]["valid"]["loss"] for run in reruns if 450 <= run["steps"] <= 470]
    assert len(few) == 2 and min(few) > 4.24
    assert len(many) == 4 and max(many) - min(many) < 0.011 and max(many) < 4.18


def test_readme_tables_are_the_regenerated_ones():
    """The README's final-loss and step tables (dynamic batch at widths 384 and 768, then the
    fixed-batch grid) are summary.md's (which experiments/make_figures.sh regenerates from the
    logs), bold aside."""
    def rows(text: str) -> dict:
        table = {}
        for line in text.splitlines():
            cells = [cell.strip().replace("*", "") for cell in line.strip().strip("|").split("|")]
            if cells[0] == "warmup (tokens)":  # the README's header row
                continue
            if ", " in cells[0] and len(cells) > 1:  # README: "SP, 384" | warmups
                param, width = cells[0].split(", ")
                table.setdefault((param, width), []).append(cells[1:])
            elif len(cells) > 3 and cells[1].isdigit():  # summary.md: param | width | lr | warmups
                table.setdefault((cells[0], cells[1]), []).append(cells[3:])
        return table

    def valid(summary: str) -> str:
        return summary.split("Final valid loss of every completed run")[1].split("## Eval set:")[0]
    dynamic = (REPO / "plots" / "warmup_grids" / "summary.md").read_text()
    fixed = (REPO / "plots" / "batch_comparison" / "summary.md").read_text()
    readme = (REPO / "README.md").read_text()
    readme = readme[readme.index("**Warmup grids at widths 384 and 768"):readme.index("- **Does µP need warmup?**")]
    # The README's order: dynamic losses, dynamic steps, fixed-batch losses (918 steps, in words).
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
def test_hlb_gpt_control_table_is_the_readme_table_and_its_claims_hold():
    """README's issue-2 table is what `experiments/hlb_gpt_control.py --compare` prints from
    the committed logs; the claims beside it hold in those logs."""
    done = subprocess.run([sys.executable, "experiments/hlb_gpt_control.py", "--compare"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() in (REPO / "README.md").read_text()

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
    # 0.05 of the data README's run at its three anchors (must-show 1).
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
