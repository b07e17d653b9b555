"""bench.py on CPU: a tiny model, two lengths, two steps each; checks the JSON it writes."""
import json
import math

import pytest
import torch

import bench
import main

TINY = ["--device", "cpu", "--width", "32", "--depth", "1", "--max-seq-len", "32",
        "--batch-tokens", "128", "--seq-lens", "16,32", "--steps", "2", "--warmup-steps", "1"]


@pytest.mark.slow
def test_bench_writes_json_on_cpu(tmp_path):
    out = tmp_path / "bench.json"
    report = bench.run(TINY + ["--json", str(out)])
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(report))
    assert saved["device"] and saved["torch"] == torch.__version__
    assert isinstance(saved["git_commit"], str) and saved["git_commit"]
    assert saved["model"]["width"] == 32 and saved["model"]["params"] > 0
    assert saved["matmul_peak"]["tflops"] > 0
    rows = saved["results"]
    assert [(r["mode"], r["seq_len"]) for r in rows] == [("eager", 16), ("eager", 32)]
    for r in rows:
        assert r["batch_size"] == 128 // r["seq_len"]
        assert r["tokens_per_step"] == 128
        assert r["tokens_per_s"] > 0 and r["ms_per_step"] > 0
        assert abs(r["tokens_per_s"] * r["ms_per_step"] / 1e3 - r["tokens_per_step"]) < 1e-6 * r["tokens_per_step"]
        # 6 x the matmul parameters (expand, project, readout) + 6 x depth x T x (qk + v)
        matmul = (2 * 4 + 2 * 64) * 32 + 32 * 64 + 32 * main.VOCAB_SIZE
        assert r["model_flops_per_token"] == 6 * matmul + 6 * 1 * r["seq_len"] * (4 + 32)
        assert r["tflops"] > 0 and 0 < r["fraction_of_peak"]
        assert r["peak_memory_gb"] is None  # CPU
        # Two steps on random tokens from a fresh model: the loss of a near-uniform guess, ln(vocab).
        assert abs(r["final_train_loss"] - math.log(main.VOCAB_SIZE)) < 0.5


@pytest.mark.slow
def test_bench_rejects_a_length_over_the_model(capsys):
    try:
        bench.parse_args(["--device", "cpu", "--max-seq-len", "32", "--seq-lens", "64"])
    except SystemExit as e:
        assert e.code == 2
    else:
        raise AssertionError("bench accepted --seq-lens over --max-seq-len")
    assert "exceeds --max-seq-len" in capsys.readouterr().err


def test_seconds_to_loss_interpolates_on_the_training_clock():
    from experiments.wallclock_bench import seconds_to_loss
    curve = [{"train_seconds": 0.0, "eval": {"valid": {"loss": 10.0}}},
             {"train_seconds": 10.0},  # a point without an eval is skipped
             {"train_seconds": 20.0, "eval": {"valid": {"loss": 4.0}}},
             {"train_seconds": 30.0, "eval": {"valid": {"loss": 3.9}}},
             {"train_seconds": 40.0, "eval": {"valid": {"loss": 3.95}}}]
    assert seconds_to_loss(curve, "valid", 3.97) == pytest.approx(20.0 + 10.0 * 0.03 / 0.1)
    assert seconds_to_loss(curve, "valid", 3.5) is None
