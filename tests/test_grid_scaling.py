"""experiments/grid_scaling.py on the CPU, where N GPUs become grid.py --jobs N and the
data-parallel runs use gloo: a 2-cell grid of a tiny model on 1 and 2 jobs, and one run on 1
and 2 processes. The JSON must hold what the manifests and run logs say, read here directly
(durations from the manifests' timestamps through time.strptime, tokens/s from the logs'
summaries); run again, it runs nothing. How a benchmark cut off part way continues is tested
with stand-ins for the passes."""
from __future__ import annotations

import calendar
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import runlog
import trainer_support as ts
from trainer_support import needs_data

spec = importlib.util.spec_from_file_location("grid_scaling", ts.REPO / "experiments" / "grid_scaling.py")
grid_scaling = importlib.util.module_from_spec(spec)
spec.loader.exec_module(grid_scaling)

# Two cells (seeds 0 and 1) of 8 steps of 256 tokens, width 32, one block; the data-parallel
# runs the same model for the same 2,048 tokens (4 sequences a microbatch: 2 per process).
GRID_FLAGS = "--param sp --widths 32 --warmup-tokens 0 --seeds 0 1 --total-tokens 2048"
DDP_FLAGS = "--width 32 --warmup-tokens 512 --total-tokens 2048"
TRAINER_FLAGS = ["--device", "cpu", "--depth", "1", "--max-seq-len", "64", "--seq-len-start", "16",
                 "--batch-tokens", "256", "--eval-tokens", "512", "--checkpoint-every-tokens", "0"]


def arguments(out: Path, data: Path) -> list[str]:
    """The benchmark's flags for the tiny CPU runs; without the warm-up pass, which on the CPU
    (nothing compiles) would only add a third pass's 20 s."""
    return ["--out", str(out), "--gpu-counts", "1", "2", "--no-warmup-pass", "--grid-flags", GRID_FLAGS,
            "--ddp-flags", DDP_FLAGS, "--", *TRAINER_FLAGS, "--data-dir", str(data),
            "--cache-dir", str(data / "cache")]


def utc_seconds(timestamp: str) -> int:
    assert timestamp.endswith("+00:00"), timestamp
    return calendar.timegm(time.strptime(timestamp[:19], "%Y-%m-%dT%H:%M:%S"))


def test_passes_run_warmup_first_at_the_largest_count_then_each_count_then_ddp():
    assert grid_scaling.plan("cuda", [1, 2, 4], True, 2) == [
        ("grid_warmup_gpus4", "grid", 4, True), ("grid_gpus1", "grid", 1, False),
        ("grid_gpus2", "grid", 2, False), ("grid_gpus4", "grid", 4, False),
        ("ddp_1proc", "ddp", 1, False), ("ddp_2proc", "ddp", 2, False)]
    assert [label for label, *_ in grid_scaling.plan("cpu", [2, 1], False, 3)] == [
        "grid_jobs2", "grid_jobs1", "ddp_1proc", "ddp_3proc"]


def test_compile_caches_are_cold_until_something_is_in_them(tmp_path):
    assert grid_scaling.cache_state(tmp_path / "missing") == "cold"
    (tmp_path / "inductor").mkdir()
    assert grid_scaling.cache_state(tmp_path) == "cold"  # an empty folder holds no kernels
    (tmp_path / "inductor" / "kernel.py").write_text("")
    assert grid_scaling.cache_state(tmp_path) == "warm"


@pytest.mark.parametrize("extra, message", [
    (["--gpu-counts", "1", "1"], "distinct counts"),
    (["--grid-flags", "--param sp --jobs 2"], "--jobs is set by this script"),
    (["--ddp-processes", "1"], "use 2 or more"),
])
def test_bad_flags_stop_with_one_line(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as stop:
        grid_scaling.parse_arguments(["--out", str(tmp_path), *extra])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


def test_trainer_flags_that_grid_sets_per_cell_are_refused_before_anything_runs(tmp_path, capsys):
    with pytest.raises(SystemExit):
        grid_scaling.parse_arguments(["--out", str(tmp_path), "--", "--width", "64"])
    assert "use grid.py's --widths" in capsys.readouterr().err


def test_a_json_with_other_settings_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # the CPU mode, also on a GPU machine
    runlog.write_json(tmp_path / "grid_scaling.json", {"settings": {"gpu_counts": [1, 4]}})
    with pytest.raises(SystemExit, match="other settings"):
        grid_scaling.main(arguments(tmp_path, tmp_path))


class CutOff(Exception):
    """A device call's time limit, in the stand-in passes."""


def test_a_benchmark_cut_off_continues_from_the_pass_it_was_in(tmp_path, monkeypatch, capsys):
    """Stand-ins for the passes (their wall times and tokens/s made up) record what runs: the
    second invocation reruns the pass that was cut off, in a fresh folder, and the ones after
    it; the third runs nothing. The speed-ups are the made-up numbers' ratios."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr(grid_scaling, "fill_token_cache", lambda flags: None)
    ran, cut_at = [], {"grid_jobs2"}

    def grid_pass(label, count, warmup, args, *rest):
        assert not (args.out / label).exists()  # every pass starts in a fresh folder
        ran.append(label)
        (args.out / label).mkdir(parents=True)
        if label in cut_at:
            raise CutOff
        return {"label": label, "count": count, "warmup_pass": warmup, "compile_caches": None,
                "wall_seconds": 12.0 / count, "cells": [{"seconds": 3.0}]}

    def data_parallel(label, processes, args, *rest):
        ran.append(label)
        return {"label": label, "processes": processes, "tokens": 1000, "train_seconds": 10 / processes,
                "tokens_per_second": 100.0 * processes, "wall_seconds": 20.0}

    monkeypatch.setattr(grid_scaling, "run_grid_pass", grid_pass)
    monkeypatch.setattr(grid_scaling, "run_data_parallel", data_parallel)
    argv = arguments(tmp_path, tmp_path)
    argv.remove("--no-warmup-pass")
    with pytest.raises(CutOff):
        grid_scaling.main(argv)
    first = json.loads((tmp_path / "grid_scaling.json").read_text())
    assert [p["label"] for p in first["grid"]] == ["grid_warmup_jobs2", "grid_jobs1"]
    assert first["complete"] is False and first["summary"]["grid_speedup_vs_1"] == {"1": 1.0}

    ran.clear(), cut_at.clear()
    assert grid_scaling.main(argv) == 0
    assert ran == ["grid_jobs2", "ddp_1proc", "ddp_2proc"]
    assert "grid_jobs2 did not finish before; running it again" in capsys.readouterr().out
    result = json.loads((tmp_path / "grid_scaling.json").read_text())
    assert result["complete"] is True and result["grid"][:2] == first["grid"]
    assert result["summary"] == {"grid_wall_seconds": {"1": 12.0, "2": 6.0},
                                 "grid_speedup_vs_1": {"1": 1.0, "2": 2.0},
                                 "ddp_tokens_per_second": {"1": 100.0, "2": 200.0}, "ddp_speedup": 2.0}

    ran.clear()
    assert grid_scaling.main(argv) == 0
    assert ran == []


@pytest.mark.slow  # 8 trainer processes: about a minute on 2 cores
@needs_data
@pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                    reason="torch.distributed with gloo is not available")
def test_cpu_benchmark_records_what_its_manifests_and_run_logs_say(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # the CPU mode, also on a GPU machine
    data = ts.write_small_data(tmp_path / "data", train_chars=100_000, valid_chars=20_000)
    out = tmp_path / "bench"
    finished = subprocess.run([sys.executable, str(ts.REPO / "experiments" / "grid_scaling.py"),
                               *arguments(out, data)], env=ts.env(), capture_output=True,
                              text=True, timeout=300)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    result = json.loads((out / "grid_scaling.json").read_text())

    assert result["mode"] == "cpu" and result["complete"] is True
    assert result["torch"] == torch.__version__ and result["devices"]
    assert result["git_commit"] == runlog.git_commit(ts.REPO)
    assert result["settings"]["gpu_counts"] == [1, 2] and result["settings"]["warmup_pass"] is False

    # Grid passes: each cell's duration is its manifest's finish minus start.
    assert [(p["label"], p["count"], p["warmup_pass"]) for p in result["grid"]] == [
        ("grid_jobs1", 1, False), ("grid_jobs2", 2, False)]
    intervals = {}
    for grid_pass in result["grid"]:
        folder = out / grid_pass["label"]
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["grid"]["jobs"] == grid_pass["count"]
        assert grid_pass["command"][grid_pass["command"].index("--jobs") + 1] == str(grid_pass["count"])
        assert grid_pass["compile_caches"] is None  # no torch.compile on the CPU
        assert grid_pass["env"]["OMP_NUM_THREADS"] == "1"
        by_name = {cell["name"]: cell for cell in grid_pass["cells"]}
        assert sorted(by_name) == ["sp_w32_wu0_s0", "sp_w32_wu0_s1"]
        spans = []
        for cell in manifest["cells"]:
            recorded = by_name[cell["name"]]
            start, end = utc_seconds(cell["started_at"]), utc_seconds(cell["finished_at"])
            assert recorded["seconds"] == end - start
            log = json.loads((folder / f"{cell['name']}.json").read_text())
            assert log["status"] == recorded["status"] == "completed"
            assert recorded["tokens"] == log["summary"]["tokens"] == 2048
            assert recorded["train_seconds"] == log["summary"]["train_seconds"]
            spans.append((start, end))
        intervals[grid_pass["count"]] = sorted(spans)
        # The wall time holds every cell (timestamps are whole seconds, hence the 1 s).
        assert grid_pass["wall_seconds"] >= max(end for _, end in spans) - min(s for s, _ in spans) - 1
    (_, first_end), (second_start, _) = intervals[1]
    assert second_start >= first_end  # one job: one cell after the other
    (first_start, first_end), (second_start, _) = intervals[2]
    assert second_start < first_end  # two jobs: side by side

    walls = {str(p["count"]): p["wall_seconds"] for p in result["grid"]}
    assert result["summary"]["grid_wall_seconds"] == walls
    assert result["summary"]["grid_speedup_vs_1"] == pytest.approx(
        {"1": 1.0, "2": walls["1"] / walls["2"]})

    # Data parallel: tokens/s from each run log's summary, the same global batch on 1 and 2.
    rates = {}
    for run, world_size in zip(result["ddp"], (1, 2)):
        log = json.loads((out / f"ddp_{world_size}proc" / f"ddp_{world_size}proc.json").read_text())
        assert log["env"]["world_size"] == run["world_size"] == run["processes"] == world_size
        assert log["status"] == "completed" and log["summary"]["tokens"] == 2048
        rates[world_size] = log["summary"]["tokens"] / log["summary"]["train_seconds"]
        assert run["tokens_per_second"] == pytest.approx(rates[world_size])
    assert "torch.distributed.run" in result["ddp"][1]["command"]
    assert "torch.distributed.run" not in result["ddp"][0]["command"]
    assert result["summary"]["ddp_speedup"] == pytest.approx(rates[2] / rates[1])
    assert "| processes | tokens | train s | tokens/s | speed-up |" in finished.stdout

    # Run again: every pass is recorded, nothing runs, the JSON stays as it was.
    before = (out / "grid_scaling.json").read_bytes()
    assert grid_scaling.main(arguments(out, data)) == 0
    assert (out / "grid_scaling.json").read_bytes() == before
    printed = capsys.readouterr().out
    assert "s wall" not in printed and "| jobs (CPU) | pass |" in printed
