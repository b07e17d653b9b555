"""icl.figures: the fitted lr optimum, the transfer table, and both figures from real tiny runs."""
import math

import numpy as np
import pytest
import torch

import runlog
from icl import figures
from icl.cli import main as train_main


def fake_log(param, width, lr, seed, loss, status=runlog.COMPLETED):
    log = runlog.new_run_log(run_name=f"icl-x-{param}-{width}-{lr}-{seed}", command=[], eval_sets=["valid"], env={},
                             config={"param": param, "width": width, "depth": 2, "steps": 10, "lr": lr, "seed": seed})
    log["status"] = status
    log["curve"] = [{"step": 10, "eval": {"valid": {"loss": loss}}}]
    return log


def test_an_optimum_at_the_grid_edge_reads_as_a_bound():
    lrs = [1e-3, 2e-3, 4e-3, 8e-3]
    logs = [fake_log("sp", 32, lr, 0, 1.0 / lr) for lr in lrs]  # still falling at the largest lr
    table = figures.transfer_table(logs, "width")
    assert table[("sp", 32)]["edge"] == "high" and "| sp | 32 | >= 0.008 |" in figures.transfer_markdown(table, "width")


def test_transfer_table_groups_seeds_and_skips_diverged_runs():
    logs = [fake_log("mup", 64, lr, seed, (math.log2(lr) + 8 + 0.2 * seed) ** 2 + 1)
            for lr in (2 ** -10, 2 ** -9, 2 ** -8, 2 ** -7, 2 ** -6) for seed in (0, 1)]
    logs.append(fake_log("mup", 64, 2 ** -5, 0, float("nan"), status=runlog.DIVERGED))
    table = figures.transfer_table(logs, "width")
    row = table[("mup", 64)]
    assert row["lrs"][-1] == 2 ** -5 and row["mean"][-1] is None and row["n"] == [2, 2, 2, 2, 2, 0]
    assert row["mean"][2] == pytest.approx(((0) ** 2 + 1 + (0.2) ** 2 + 1) / 2)
    assert sorted(row["seed_optima"]) == pytest.approx([2 ** -8.2, 2 ** -8])
    assert "| mup | 64 |" in figures.transfer_markdown(table, "width")


def test_transfer_table_refuses_runs_of_two_axes_at_one_point():
    """Two runs with the same param, width, lr and seed differ in depth or steps: mixing them into one
    curve would silently keep one of the two, so the table refuses."""
    deep = fake_log("sp", 32, 1e-3, 0, 0.5)
    deep["config"]["depth"] = 4
    with pytest.raises(ValueError, match="pass only the folders of the width axis"):
        figures.transfer_table([fake_log("sp", 32, 1e-3, 0, 0.7), deep], "width")
    assert list(figures.transfer_table([fake_log("sp", 32, 1e-3, 0, 0.7), deep], "depth")) == [("sp", 2), ("sp", 4)]


def test_warmup_axis_split_into_panels_by_width(tmp_path):
    """Warmup is read as a fraction of the run; runs of two widths at one warmup, lr and seed clash in
    one table, so --panel splits them into a table per width, and both figures draw from those."""
    logs = []
    for width in (32, 256):
        for warmup in (0, 100, 400):
            for lr in (1e-3, 2e-3, 4e-3, 8e-3):
                for seed in (0, 1):
                    log = fake_log("mup", width, lr, seed, (math.log2(lr) + 8 + warmup / 400) ** 2 + 1 + 0.1 * seed)
                    log["config"].update(steps=4000, warmup_steps=warmup)
                    logs.append(log)
    assert figures.axis_value(logs[-1]["config"], "warmup") == 0.1
    with pytest.raises(ValueError, match="--panel"):
        figures.transfer_table(logs, "warmup")
    tables = figures.transfer_tables(logs, "warmup", "width")
    assert list(tables) == [32, 256] and list(tables[32]) == [("mup", 0.0), ("mup", 0.025), ("mup", 0.1)]
    assert tables[32]["mup", 0.0]["optimum"] == pytest.approx(2 ** -8)  # the parabola's vertex
    assert figures.transfer_tables(logs[:24], "warmup") == {None: figures.transfer_table(logs[:24], "warmup")}
    figures.plot_transfer(tables, "warmup", tmp_path / "panels.png", panel="width")
    figures.plot_optima(tables, "warmup", tmp_path / "optima.png", panel="width")
    for name in ("panels.png", "optima.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the test machine's 2 cores are shared
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_figures_from_tiny_runs(tmp_path, one_thread):
    runs = tmp_path / "runs"
    assert train_main(["--dim", "2", "--points", "4", "--width", "16", "--depth", "1", "--heads", "2", "--batch", "16",
                       "--steps", "6", "--lr", "1e-3", "2e-3", "4e-3", "--seeds", "0", "1", "--eval-batch", "32",
                       "--eval-log", "2", "--eval-lin", "2", "--ckpt-log", "0", "--ckpt-lin", "0", "--quiet",
                       "--out", str(runs)]) == 0
    assert figures.main(["curve", str(runs), "--out", str(tmp_path / "curve.png")]) == 0
    assert figures.main(["transfer", str(runs), "--by", "width", "--out", str(tmp_path / "transfer.png")]) == 0
    for name in ("curve.png", "transfer.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = figures.transfer_table(list(runlog.load_run_logs([runs]).values()), "width")
    assert list(table) == [("sp", 16)] and table[("sp", 16)]["n"] == [2, 2, 2]
