"""The committed GPU results regenerate from their logs, and say what the README says."""
import json
import shutil
import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
SWEEP_DIRS = [REPO / "runs" / name for name in ("lr_transfer", "lr_transfer_low", "lr_transfer_768")]


def final_losses() -> dict:
    """{(param, width): {lr: final books-valid loss}} over every completed sweep run."""
    table = {}
    for directory in SWEEP_DIRS:
        for path in directory.glob("*.json"):
            log = json.loads(path.read_text())
            if log.get("schema_version") != 1 or log["status"] != "completed":
                continue
            config = log["config"]
            table.setdefault((config["param"], config["width"]), {})[config["lr"]] = \
                log["summary"]["final_eval"]["valid"]["loss"]
    return table


def test_sweep_logs_hold_the_reported_optima():
    table = final_losses()
    best = {key: min(by_lr, key=by_lr.get) for key, by_lr in table.items()}
    assert {key: len(by_lr) for key, by_lr in table.items()} == {
        ("sp", 128): 8, ("sp", 384): 8, ("sp", 768): 5, ("mup", 128): 8, ("mup", 384): 8, ("mup", 768): 5}
    assert [best["mup", w] for w in (128, 384, 768)] == [1.25e-3, 1.25e-3, 1.25e-3]
    assert [best["sp", w] for w in (128, 384, 768)] == [5e-3, 1.25e-3, 6.25e-4]


def test_figures_regenerate_from_a_subset_of_the_logs(tmp_path):
    subset = tmp_path / "runs"
    subset.mkdir()
    for name in ("sp_w128_wu1e6_lr1.25e-3_s0", "sp_w128_wu1e6_lr5e-3_s0",
                 "mup_w128_wu1e6_lr1.25e-3_s0", "mup_w128_wu1e6_lr5e-3_s0",
                 "sp_w384_wu1e6_lr1.25e-3_s0", "sp_w384_wu1e6_lr5e-3_s0",
                 "mup_w384_wu1e6_lr1.25e-3_s0", "mup_w384_wu1e6_lr5e-3_s0"):
        shutil.copy(SWEEP_DIRS[0] / f"{name}.json", subset)
    out = tmp_path / "figures"
    done = subprocess.run([sys.executable, "-m", "plots", str(subset), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for name in ("final_vs_lr_valid.png", "best_vs_width_valid.png", "final_vs_lr_wikitext.png",
                 "summary.md"):
        assert (out / name).stat().st_size > 1000, name
    summary = (out / "summary.md").read_text()
    assert "| SP | 128 | 5e-3 |" in summary and "| µP | 384 | 1.25e-3 |" in summary
