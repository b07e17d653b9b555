"""docs/results_icl.md's in-context regression section says what the committed logs hold.

Every number the section quotes is recomputed here from runs/icl_transfer, runs/icl_landscape
and runs/icl_bench and looked up in the section's text, so an edit to either shows up here.
"""
import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest

import runlog
from icl import figures

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "runs"
pytestmark = pytest.mark.results  # every test here reads committed results
DOC = REPO / "docs" / "results_icl.md"
HEADING = "## In-context linear regression and µP transfer"
ONECYCLE = ("garg_onecycle_a", "garg_onecycle_b")  # timaeus' recipe, seeds 0-2 and 3-4


def sci(x: float, digits: int = 3) -> str:
    """1.96e-2 style, as the section writes learning rates."""
    mantissa, exponent = f"{x:.{digits - 1}e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def section() -> str:
    """The section's text with every run of whitespace as one space, so a quote may wrap a line."""
    text = DOC.read_text()
    assert HEADING in text, f"{DOC.name} has no '{HEADING}' section"
    body = text.split(HEADING, 1)[1]
    return " ".join(body.split("\n## ", 1)[0].split())


def landscape(folder: str) -> list[dict]:
    logs = runlog.load_run_logs([RUNS / "icl_landscape" / folder]).values()
    return sorted(logs, key=lambda log: log["config"]["seed"])


def final_eval(log: dict) -> dict:
    return log["curve"][-1]["eval"]["valid"]


AXES = {"width": "*_d2_s4000", "depth": "*_w32_d*_s4000", "steps": "*_w32_d2_s*"}  # each axis's cells


def transfer(axis: str = "width") -> dict:
    """figures.transfer_table of that axis's cells (the folders the section's figure commands pass)."""
    logs = list(runlog.load_run_logs(sorted((RUNS / "icl_transfer").glob(AXES[axis]))).values())
    return figures.transfer_table(logs, axis)


def optimum_text(row: dict) -> str:
    """The optimum as the table writes it: >= the grid's edge when not bracketed."""
    if row["edge"]:
        return ("≥ " if row["edge"] == "high" else "≤ ") + sci(max(row["lrs"]) if row["edge"] == "high"
                                                               else min(row["lrs"]), 2)
    return sci(row["optimum"])


def row_text(label: str, value: int, row: dict) -> str:
    """One table row: param, the axis value, optimum of the mean curve, per-seed optima (min-max),
    the lowest mean loss and its lr."""
    best = min(range(len(row["lrs"])), key=lambda i: row["mean"][i])
    return (f"| {label} | {value:,} | {optimum_text(row)} | "
            f"{sci(min(row['seed_optima']))} - {sci(max(row['seed_optima']))} | "
            f"{row['mean'][best]:.3f} ± {row['std'][best]:.3f} at {sci(row['lrs'][best], 2)} |")


def transfer_rows() -> list[str]:
    """The width table's rows, SP then µP."""
    table = transfer()
    return [row_text(figures.PARAM_NAMES[param], width, row)
            for param in ("sp", "mup") for (p, width), row in table.items() if p == param]


def test_transfer_grid_width_axis_and_the_table_matches():
    table = transfer()
    assert sorted(table) == [("mup", 32), ("mup", 64), ("mup", 128), ("mup", 256),
                             ("sp", 32), ("sp", 64), ("sp", 128), ("sp", 256)]
    assert all(row["n"] == [3] * 8 for row in table.values()), "every cell: 8 lrs x 3 seeds, all finished"
    # µP at the base width computes what SP computes: the two w32 cells are the same runs
    assert table["mup", 32]["mean"] == table["sp", 32]["mean"]
    text = section()
    for row in transfer_rows():
        assert row in text, f"results_icl.md lacks the transfer row {row!r}"


def test_transfer_shifts_quoted():
    table = transfer()
    text = section()
    sp64, sp128, sp256 = (table["sp", w]["optimum"] for w in (64, 128, 256))
    mup128, mup256 = table["mup", 128]["optimum"], table["mup", 256]["optimum"]
    assert f"at least ×{3.2e-2 / sp256:.0f} over width ×8" in text  # SP: from the grid's top (w32) to w256
    assert f"×{sp64 / sp256:.1f} from 64 to 256" in text  # SP over the seed's span, width x4
    assert f"×{sp64 / sp128:.1f} from 64 to 128" in text and f"×{sp128 / sp256:.1f} from 128 to 256" in text
    assert f"×{mup256 / mup128:.2f}" in text  # µP: w128 -> w256
    assert f"×{3.2e-2 / mup128:.1f}" in text  # µP: at least this from w32 to w128
    assert f"µP's optimum is ×{mup256 / sp256:.0f} SP's" in text  # the two at width 256
    # SP at the largest lr blows up more with width; the section quotes those mean losses
    top = [f"{table['sp', width]['mean'][-1]:.2f}" for width in (32, 64, 128, 256)]
    assert f"{', '.join(top[:3])} and {top[3]} at widths 32-256" in text
    # our µP optimum (widths 128 and 256) against the seed's 2.43e-3
    assert f"about {statistics.fmean([mup128, mup256]) / 2.43e-3:.0f}× larger" in text
    # best losses: SP worse with width, µP better up to 128
    sp_best = [f"{min(table['sp', width]['mean']):.3f}" for width in (32, 64, 128, 256)]
    assert f"({', '.join(sp_best)})" in text
    assert f"{min(table['mup', 128]['mean']):.3f}" in text and f"{min(table['mup', 256]['mean']):.3f}" in text
    # the seed's optimum 2.43e-3 lies between our grid's 2e-3 and 4e-3: µP's mean losses there
    for width in (32, 256):
        assert f"{table['mup', width]['mean'][3]:.2f}" in text


def same_runs_rows(axis: str) -> list[str]:
    """The depth or steps table's rows: at width 32, the base width, µP's cells are SP's runs."""
    table = transfer(axis)
    values = sorted({v for _, v in table})
    assert sorted(table) == sorted((p, v) for p in ("sp", "mup") for v in values)
    for v in values:
        assert table["mup", v]["mean"] == table["sp", v]["mean"], f"µP and SP differ at {axis} {v} (width 32)"
        assert table["sp", v]["n"] == [3] * 8, "every cell: 8 lrs x 3 seeds, all finished"
    return [row_text("SP = µP", v, table["sp", v]) for v in values]


def test_transfer_depth_axis():
    table = transfer("depth")
    assert sorted({v for _, v in table}) == [2, 4, 8]
    text = section()
    for row in same_runs_rows("depth"):
        assert row in text, f"results_icl.md lacks the depth row {row!r}"
    d4, d8 = table["sp", 4]["optimum"], table["sp", 8]["optimum"]
    assert table["sp", 2]["edge"] == "high" and not table["sp", 4]["edge"] and not table["sp", 8]["edge"]
    assert f"×{d8 / d4:.2f} from depth 4 to 8" in text and f"at least ×{3.2e-2 / d4:.1f} above depth 4's" in text
    # at the grid's top lr, depths 4 and 8 blow up in some seeds (final L1 above 2), depth 2 in none
    logs = runlog.load_run_logs(sorted((RUNS / "icl_transfer").glob("sp_w32_d*_s4000"))).values()
    blown = {d: sum(log["config"]["lr"] == 3.2e-2 and log["config"]["depth"] == d and figures.final_loss(log) > 2
                    for log in logs) for d in (2, 4, 8)}
    assert f"{blown[4]} of 3 seeds at depth 4 and {blown[8]} of 3 at depth 8" in text and blown[2] == 0
    # deeper is better at every lr up to 1.6e-2 (the grid's second-largest)
    means = {d: table["sp", d]["mean"] for d in (2, 4, 8)}
    assert all(means[2][i] > means[4][i] > means[8][i] for i in range(7))
    assert f"best mean L1 {', '.join(f'{min(means[d]):.3f}' for d in (2, 4, 8))}" in text


def test_transfer_steps_axis():
    table = transfer("steps")
    assert sorted({v for _, v in table}) == [4000, 10000]  # 20,000 steps: interrupted, not committed
    text = section()
    for row in same_runs_rows("steps"):
        assert row in text, f"results_icl.md lacks the steps row {row!r}"
    assert table["sp", 4000]["edge"] == table["sp", 10000]["edge"] == "high"
    mean = table["sp", 10000]["mean"]
    assert f"{mean[-2]:.3f} at 1.6e-2 against {mean[-1]:.3f} at 3.2e-2" in text
    assert mean[-2] - mean[-1] < min(table["sp", 10000]["std"][-2:]), "within one seed sd"


def test_garg_last_position_against_ridge():
    logs = [log for folder in ONECYCLE for log in landscape(folder)]
    assert [log["config"]["seed"] for log in logs] == [0, 1, 2, 3, 4]
    assert all(log["status"] == runlog.COMPLETED and log["curve"][-1]["step"] == 500_000 for log in logs)
    ridge = final_eval(logs[0])["baselines"]["ridge"]
    assert all(final_eval(log)["baselines"]["ridge"] == ridge for log in logs), "one eval batch for all seeds"
    last = [final_eval(log)["last_position"] for log in logs]
    above = [100 * (v / ridge[-1] - 1) for v in last]
    text = section()
    assert f"{ridge[-1]:.4f}" in text
    for v, pct in zip(last, above):
        assert f"{v:.4f} (+{pct:.1f} %)" in text
    assert sum(pct <= 10 for pct in above) == 1 and "1 of 5" in text
    others = [pct for pct in above if pct > 10]
    assert f"{min(others):.0f}-{max(others):.0f} % above" in text
    assert len(logs[0]["curve"]) == 190 and "190 evals" in text
    # the per-position curve: equal to ridge before k = 4, well above it after
    mean = np.mean([final_eval(log)["per_position"] for log in logs], axis=0)
    ratio = 100 * (mean / np.array(ridge) - 1)
    assert max(ratio[:4]) < 3 and f"{max(ratio[:4]):.1f} %" in text
    assert f"{max(ratio[4:]):.0f} %" in text and f"k = {int(np.argmax(ratio[4:])) + 4}" in text
    assert f"{ratio[-1]:.0f} %" in text


def test_garg_loss_still_falling_at_the_end():
    """The seed-mean last-position MSE over the last 50k steps against the 50k before."""
    logs = [log for folder in ONECYCLE for log in landscape(folder)]

    def window(log, lo, hi):
        return statistics.fmean(p["eval"]["valid"]["last_position"] for p in log["curve"] if lo < p["step"] <= hi)

    before = statistics.fmean(window(log, 400_000, 450_000) for log in logs)
    after = statistics.fmean(window(log, 450_000, 500_000) for log in logs)
    text = section()
    assert f"{before:.4f}" in text and f"{after:.4f}" in text
    assert f"{100 * (1 - after / before):.1f} %" in text


def test_garg_warmup_variants():
    text = section()
    for folder in (*ONECYCLE, "garg_warmup10k", "garg_warmup0"):
        assert all(log["status"] == runlog.COMPLETED for log in landscape(folder))
    groups = {"one-cycle (50 %)": [log for folder in ONECYCLE for log in landscape(folder)],
              "10k steps": landscape("garg_warmup10k"), "none": landscape("garg_warmup0")}
    assert [len(v) for v in groups.values()] == [5, 3, 3]
    for name, logs in groups.items():
        last = [final_eval(log)["last_position"] for log in logs]
        row = (f"| {name} | {len(last)} | {statistics.fmean(last):.4f} ± {statistics.stdev(last):.4f} | "
               f"{min(last):.4f} - {max(last):.4f} |")
        assert row in text, f"results_icl.md lacks the warmup row {row!r}"


def test_training_seconds_and_benchmark():
    text = section()
    for folder in ONECYCLE:
        seconds = {log["summary"]["train_seconds"] for log in landscape(folder)}
        assert len(seconds) == 1, "one ensemble per folder"
        assert f"{seconds.pop():.0f} s" in text
    gpu = json.loads((RUNS / "icl_bench" / "bench_icl.json").read_text())
    h100 = json.loads((RUNS / "icl_bench" / "bench_icl_h100.json").read_text())
    cpu = json.loads((RUNS / "icl_bench" / "bench_icl_cpu.json").read_text())
    for bench in (gpu, h100, cpu):
        assert bench["commit"][:7] in text
        for row in bench["rows"]:
            line = (f"| {row['device']} | {row['mode']} | {row['ensemble']} | {row['steps_per_s']:.1f} | "
                    f"{row['minutes_500k']:.1f} |")
            assert line in text, f"results_icl.md lacks the benchmark row {line!r}"
    # the goal: 8 seeds x 500k steps in at most 10 minutes on one H100 (missed), and the H200 at the edge
    e8 = {b["rows"][0]["device"]: next(r for r in b["rows"] if r["ensemble"] == 8 and r["mode"] == "cuda graph + compile")
          for b in (gpu, h100)}
    on_h100 = e8["NVIDIA H100 80GB HBM3"]
    assert math.isclose(on_h100["minutes_500k"], 500_000 / on_h100["steps_per_s"] / 60) and on_h100["minutes_500k"] > 10
    assert (f"{on_h100['steps_per_s']:.1f} steps/s, {on_h100['minutes_500k']:.1f} min for 500k steps "
            f"({100 * (on_h100['minutes_500k'] / 10 - 1):.0f} % over)") in text
    on_h200 = e8["NVIDIA H200"]
    assert f"({on_h200['steps_per_s']:.1f} steps/s, {on_h200['minutes_500k']:.1f} min)" in text
