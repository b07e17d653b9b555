"""docs/performance.md's start-up section says what runs/startup_h100/ holds: the wall-clock
rows (experiments/wallclock_bench.py's JSON and the run logs behind them), the throughput rows
(bench.py's JSON) and the loss per token of the regional path against the plain path."""
import json
from pathlib import Path

import numpy as np
import pytest

import runlog
from experiments.wallclock_bench import seconds_to_loss, table

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "runs" / "startup_h100"
DOC = REPO / "docs" / "performance.md"
pytestmark = pytest.mark.results
PEAK_TFLOPS = 788  # the highest bf16 matmul rate measured on these H100s (docs/performance.md)


def doc_rows() -> set[str]:
    return {line.strip() for line in DOC.read_text().splitlines() if line.startswith("|")}


def wallclock_rows() -> list[dict]:
    return [row for name in ("wallclock_blocks_s0", "wallclock_whole_s0", "wallclock_blocks_s1")
            for row in json.loads((RUNS / f"{name}.json").read_text())["rows"]]


def test_wallclock_rows_are_the_json_and_the_json_is_the_logs():
    rows = wallclock_rows()
    logs = {"this trainer, blocks cold 0": "blocks_cold_s0", "this trainer, blocks warm 0": "blocks_warm_s0",
            "this trainer, blocks cold 1": "blocks_cold_s1", "this trainer, blocks warm 1": "blocks_warm_s1",
            "this trainer, whole cold 0": "whole_cold_s0", "hlb-gpt v0.4.1 - 0": "hlb_s0"}
    for row in rows:
        seed = row["command"].split("--seed")[1].lstrip("s").split()[0]  # --seed S, or hlb-gpt's --seeds S
        log = runlog.load_run_log(RUNS / f"{logs[row['trainer'] + ' ' + row['cache'] + ' ' + seed]}.json")
        assert log["summary"]["train_seconds"] == pytest.approx(row["train_seconds"], abs=1e-3)
        assert row["seconds_to_3.97"] == pytest.approx(seconds_to_loss(log["curve"], "valid"))
    # Each measured cell appears in the doc's table with the numbers the JSON holds.
    text = DOC.read_text()
    for line in table(rows).splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")][2:]  # wall s .. s to 3.97
        assert any(" | ".join(cells) in row for row in doc_rows()), f"performance.md lacks {cells}"
    assert "263 s to 153-156 s" in text and "170 s to 79-80 s" in text


def test_regional_compile_halves_the_cold_compile_and_keeps_the_loss():
    rows = {(r["trainer"], r["cache"], r["command"].split("--seed ")[1].split()[0]): r for r in wallclock_rows()
            if r["trainer"].startswith("this")}
    whole, blocks = rows["this trainer, whole", "cold", "0"], rows["this trainer, blocks", "cold", "0"]
    assert blocks["compile_seconds"] < 0.5 * whole["compile_seconds"]
    assert blocks["wall_seconds"] < 0.6 * whole["wall_seconds"]
    for seed in "01":  # cold and warm compute the same run
        assert rows["this trainer, blocks", "cold", seed]["final_valid"] == rows["this trainer, blocks", "warm", seed]["final_valid"]


def test_throughput_rows_are_bench_json():
    labels = {"bench_blocks": "width 384", "bench_whole": "width 384, whole-model compile",
              "bench_liger": "width 384, liger loss"}
    rows = doc_rows()
    for name in ("bench_blocks", "bench_whole", "bench_liger", "bench_w768", "bench_w1536"):
        data = json.loads((RUNS / f"{name}.json").read_text())
        assert data["device"] == "NVIDIA H100 80GB HBM3" and data["git_commit"].startswith("d44c497")
        for r in data["results"]:
            cells = (f"| {r['seq_len']} | {r['ms_per_step']:.2f} | {r['tokens_per_s'] / 1e6:.2f}M |" if r["tokens_per_s"] >= 1e6
                     else f"| {r['seq_len']} | {r['ms_per_step']:.2f} | {r['tokens_per_s'] / 1e3:.0f}K |")
            cells += f" {r['tflops']:.0f} | {100 * r['tflops'] / PEAK_TFLOPS:.0f} | {r['peak_memory_gb']:.1f} |"
            label = labels.get(name, f"width {data['model']['width']}")
            assert any(row.startswith(f"| {label}") and row.endswith(cells) for row in rows), (name, cells)


def test_loss_per_token_matches_the_plain_path_within_its_seed_gap():
    def at(path: Path, tokens: float) -> float:
        curve = [(p["tokens"], p["eval"]["valid"]["loss"]) for p in runlog.load_run_log(path)["curve"] if p.get("eval")]
        return float(np.interp(tokens, *zip(*curve)))

    plain = [REPO / "runs" / "h100_reference" / f"plain_s{s}.json" for s in (0, 1)]
    regional = [RUNS / f"blocks_cold_s{s}.json" for s in (0, 1)]
    rows = doc_rows()
    for tokens, label in ((5.7e6, "5.7M"), (28.5e6, "28.5M"), (42.6e6, "42.6M"), (67e6, "67M")):
        p, r = [at(f, tokens) for f in plain], [at(f, tokens) for f in regional]
        difference = np.mean(r) - np.mean(p)
        assert abs(difference) <= abs(p[0] - p[1]), (label, difference)
        assert f"| {label} | {p[0]:.3f} | {p[1]:.3f} | {r[0]:.3f} | {r[1]:.3f} | {difference:+.3f} |" in rows


def test_choices_quotes_the_liger_measurement():
    ms = {name: json.loads((RUNS / f"{name}.json").read_text())["results"][-1]["ms_per_step"]
          for name in ("bench_liger", "bench_blocks")}
    text = " ".join((REPO / "docs" / "choices.md").read_text().split())
    assert f"{ms['bench_liger']:.2f} ms per step at length 1024 against {ms['bench_blocks']:.2f}" in text


def test_training_doc_quotes_the_wall_clock():
    rows = wallclock_rows()
    ours = {r["cache"]: [] for r in rows}
    for r in rows:
        if r["trainer"] == "this trainer, blocks":
            ours[r["cache"]].append(r)
    hlb = next(r for r in rows if r["trainer"].startswith("hlb"))
    span = lambda key, cache: "-".join(f"{v:.0f}" for v in sorted({round(r[key]) for r in ours[cache]}))
    text = " ".join((REPO / "docs" / "training.md").read_text().split())
    assert (f"is {span('wall_seconds', 'cold')} s for the default command ({span('compile_seconds', 'cold')} s of it "
            f"compiling), {span('wall_seconds', 'warm')} s with warm caches, against {hlb['wall_seconds']:.0f} s") in text
