"""Data parallel under torchrun (docs/ddp.md), on CPU with gloo: a 2-process run
trains the same run as 1 process with the same global batch; SIGTERM to one rank stops both
at the same step with one checkpoint, which a 2-process --resume continues; rank 0 alone
writes and reports.

Three runs (about 20 s on 2 cores, the first beside the other two): the run on 1 process;
the same on 2 processes, with SIGTERM sent to rank 1 alone after the first eval; its
--resume on 2 processes, whose completed curve is the one compared with the 1-process curve
(an error in what a rank saves or loads would show there, as a difference far beyond the
tolerance).

The configuration makes the two runs' chunks identical, so that what differs is only the
order of float32 sums. Each microbatch is 3 sequences of 128 tokens (rank 0 trains on 2,
rank 1 on 1: an uneven split) and each chunk one sequence (the CPU chunk is 166 tokens).
Chunks must coincide because the embedding's scale_grad_by_freq (hlb-gpt's) divides each
token's gradient by its count within one forward call, so a different partition of the
microbatch is a different gradient, not a rounding difference. The eval's 5 windows split
3 + 2. At lr 0.07 the microbatch count grows 1 -> 2 -> 4 (dithered) within 30 steps.

Measured (torch 2.13 CPU): while the count is 1 the curves are bit for bit equal (rank 0's
two chunks are summed in the one-process order, then rank 1's); once microbatches are
accumulated, the one-process run adds every chunk into .grad in turn and the ranks add
their own chunks before the all-reduce adds the two sums, so the float32 gradient differs
in its last bits. By step 30 that is at most 2.8e-6 relative in the eval loss, 1.1e-6 in the
gradient norm, 1.5e-7 in the train loss (the eval accuracy is equal). At this learning rate
the run amplifies it about 10x every 2-3 steps from step 28 on (1e-3 by step 38), hence 30
steps and TOLERANCE = 1e-4: 35x the measured difference, while an error in the split or
the weighting (ranks training on the same rows, a chunk weighted by its share of the rank's
rows instead of the global batch) changes the train loss or the gradient from the first step
on by far more. (Ranks that disagree, e.g. gradients not all-reduced, take different
microbatch decisions and then block in mismatched collectives: the fixture's timeouts
turn that into a failure.)"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import trainer_support as ts
from trainer_support import needs_data

pytestmark = [
    pytest.mark.slow,  # two-process runs: about 20 s
    needs_data,
    pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                       reason="torch.distributed with gloo is not available"),
]

TOLERANCE = 1e-4  # relative, on train loss, grad norm and eval loss/accuracy (see above)
FLAGS = ["--width", "32", "--depth", "1", "--max-seq-len", "128", "--seq-len-start", "128",
         "--batch-tokens", "384", "--eval-tokens", "640", "--warmup-tokens", "1536",
         "--device", "cpu", "--quiet", "--lr", "0.07", "--diverge-loss", "30", "--max-steps", "30",
         "--eval-every-tokens", "4608", "--checkpoint-every-tokens", "0", "--run-name", "ddp"]


def torchrun_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            str(ts.REPO / "main.py"), *map(str, args)]


def run_args(data: Path, out: Path, *extra) -> list:
    return ["--data-dir", data, "--cache-dir", data / "cache", "--out", out, *FLAGS, *extra]


def worker_pids(launcher: subprocess.Popen) -> dict[int, int]:
    """{RANK: pid} of torchrun's worker processes (children of the launcher)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid != launcher.pid:
                continue
            env = dict(item.split("=", 1) for item in (entry / "environ").read_bytes().decode(
                errors="replace").split("\0") if "=" in item)
        except (OSError, IndexError, ValueError):
            continue
        if "RANK" in env:
            found[int(env["RANK"])] = int(entry.name)
    return found


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The run on 1 process; on 2, stopped by SIGTERM to rank 1; its 2-process --resume. The
    one-process run goes on beside the others (ranks that wait on each other leave much of
    the two cores idle)."""
    if not Path("/proc/self/environ").exists():
        pytest.skip("needs /proc to find the ranks")
    root = tmp_path_factory.mktemp("ddp")
    data = ts.write_small_data(root / "data")
    out = root / "two"
    log_path = out / "ddp.json"
    proc = subprocess.Popen(torchrun_cmd(*run_args(data, out)), cwd=ts.REPO, env=ts.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    one = ts.fork_main(*run_args(data, root / "one"))
    deadline = time.monotonic() + 120
    while True:  # after the first eval (step 12 of 30), SIGTERM to rank 1 alone
        try:
            if len(ts.read_log(log_path)["curve"]) >= 2:
                break
        except (FileNotFoundError, json.JSONDecodeError):
            pass  # not written yet (the log is replaced atomically, never torn)
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            stdout, stderr = proc.communicate()
            pytest.fail(f"the run ended or stalled before the signal:\n{stdout}\n{stderr}")
        time.sleep(0.01)
    pids = worker_pids(proc)
    assert sorted(pids) == [0, 1], pids
    os.kill(pids[1], signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    stopped = {"returncode": proc.returncode, "stdout": stdout, "stderr": stderr,
               "files": sorted(p.name for p in out.iterdir()), "log": ts.read_log(log_path),
               "checkpoint": torch.load(out / "ddp.ckpt", weights_only=False)
               if (out / "ddp.ckpt").exists() else None}

    resumed = subprocess.run(torchrun_cmd(*run_args(data, out, "--resume")), cwd=ts.REPO,
                             env=ts.env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    _, one_stderr = one.communicate(timeout=300)
    assert one.returncode == 0, one_stderr
    return {"one": ts.read_log(root / "one" / "ddp.json"), "stopped": stopped,
            "two": ts.read_log(log_path), "two_result": resumed, "two_files": sorted(p.name for p in out.iterdir())}


def relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


def test_two_processes_train_the_one_process_run(runs):
    one, two = runs["one"]["curve"], runs["two"]["curve"]
    assert runs["two"]["status"] == "completed" and runs["two"]["env"]["world_size"] == 2
    assert runs["one"]["env"]["world_size"] == 1
    assert len(two) == len(one) >= 3  # the point at initialisation and at least 2 evals
    assert max(p["microbatches"] for p in one) >= 2  # accumulation and the dithering exercised
    worst = {}
    for p, q in zip(one, two):
        # The schedule is decided identically: same steps, tokens, counts, lrs.
        for key in ("step", "tokens", "seq_len", "batch_size", "microbatches", "lr"):
            assert p[key] == q[key], (key, p, q)
        pairs = {"train_loss": (p["train_loss"], q["train_loss"]),
                 "grad_norm": (p["grad_norm"], q["grad_norm"]),
                 "eval_loss": (p["eval"]["valid"]["loss"], q["eval"]["valid"]["loss"]),
                 "eval_accuracy": (p["eval"]["valid"]["accuracy"], q["eval"]["valid"]["accuracy"])}
        for name, (a, b) in pairs.items():
            if a is None or b is None:  # the point at initialisation: no train loss, no norm yet
                assert a is None and b is None, (name, a, b)
                continue
            worst[name] = max(worst.get(name, 0.0), relative(a, b))
    assert all(value <= TOLERANCE for value in worst.values()), worst
    assert runs["two"]["summary"]["steps"] == runs["one"]["summary"]["steps"] == 30


def test_sigterm_to_one_rank_stops_both_at_one_step(runs):
    stopped = runs["stopped"]
    log, state = stopped["log"], stopped["checkpoint"]
    assert stopped["returncode"] != 0  # torchrun reports its workers' 143 as a failure (1)
    assert log["status"] == "interrupted", stopped["stderr"]
    assert [e["detail"] for e in log["events"] if e["kind"] == "signal"] == ["SIGTERM"]
    # One checkpoint, at the step where the log stopped (both ranks stopped there: rank 0
    # writes both files, and rank 1's signal reached it only through the stop flag).
    assert stopped["files"] == ["ddp.ckpt", "ddp.json"]
    assert state is not None and 12 <= state["step"] < 30 and state["step"] == log["summary"]["steps"]
    resumed = [e for e in runs["two"]["events"] if e["kind"] == "resumed"]
    assert len(resumed) == 1 and resumed[0]["step"] == state["step"]


def test_rank_zero_alone_writes_and_reports(runs):
    assert runs["two_files"] == ["ddp.json"]  # the checkpoint deleted once, no temporary files
    stdout = runs["two_result"].stdout
    assert stdout.count("ddp: completed after 30 steps") == 1, stdout
    assert stdout.count("resumed ddp at step") == 1, stdout
