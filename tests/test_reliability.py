"""What survives what (docs/reliability.md): SIGKILL then --resume reproduces the
uninterrupted curve bit for bit; SIGTERM/SIGINT checkpoint and exit 143/130; divergence exits 3
with a summary; bad inputs exit 2 with one line (the flag cases are in test_trainer.py:
test_bad_input_exits_2_with_one_line); a corrupt token cache is rebuilt and the run goes on.
Out-of-GPU-memory shrinking needs a GPU and is not tested here."""
from __future__ import annotations

import json
import signal
import time

import numpy as np
import pytest
import torch

import trainer_support as ts
from trainer_support import needs_data

import data  # noqa: E402
import device_wait  # noqa: E402
import main  # noqa: E402

pytestmark = needs_data


def same(a, b) -> bool:
    """Exact equality of JSON values, NaN equal to NaN (the first curve point's train_loss)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def difference(a, b, where="") -> str:
    """Where two JSON values first differ (for assertion messages)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                return f"{where}.{key}: only in one"
            found = difference(a[key], b[key], f"{where}.{key}")
            if found:
                return found
        return ""
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b)):
            found = difference(x, y, f"{where}[{i}]")
            if found:
                return found
        return f"{where}: lengths {len(a)} and {len(b)}" if len(a) != len(b) else ""
    return "" if same(a, b) else f"{where}: {a!r} != {b!r}"


def assert_same(a, b):
    assert same(a, b), difference(a, b)


def wait_until(proc, predicate, timeout=120.0):
    """Poll predicate() every 10 ms while the process runs; fail if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (FileNotFoundError, json.JSONDecodeError):
            pass  # not written yet (the log is replaced atomically, never torn)
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (status {proc.returncode}) before the test could "
                        f"interrupt it:\n{out}\n{err}")
        time.sleep(0.01)
    proc.kill()
    pytest.fail("timed out waiting for the run")


def curve_tokens(path):
    return [p["tokens"] for p in ts.read_log(path)["curve"]]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return ts.reference_run(tmp_path_factory)


# ----------------------------------------------------------------------------------------
# (1) SIGKILL, then --resume
# ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_sigkill_then_resume_reproduces_the_uninterrupted_curve(reference, tmp_path):
    data, out = reference["data"], tmp_path / "runs"
    log_path, checkpoint = out / "tiny.json", out / "tiny.ckpt"
    proc = ts.fork_main(*ts.run_args(data, out))
    # Checkpoints fall every 7 steps (1792 tokens), evals every 4 (1024): once a checkpoint
    # exists and the log holds a point past it, kill, wherever the process happens to be.
    # (SIGSTOP first, so that the files inspected are the ones the kill leaves; if a newer
    # checkpoint overtook the log's last point meanwhile, let it run to the next eval.)
    past = 1792
    while True:
        wait_until(proc, lambda: checkpoint.exists() and curve_tokens(log_path)[-1] > past)
        proc.send_signal(signal.SIGSTOP)
        state = torch.load(checkpoint, weights_only=False)
        if curve_tokens(log_path)[-1] > state["tokens"]:
            break
        past = state["tokens"]
        proc.send_signal(signal.SIGCONT)
    proc.kill()
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    saved = state["log"]["curve"]
    killed = ts.read_log(log_path)
    assert killed["status"] == "running"  # the log is whole, however the process died
    assert_same(killed["curve"][: len(saved)], saved)
    after = killed["curve"][len(saved):]
    assert after and all(p["tokens"] > state["tokens"] for p in after)  # points past the checkpoint

    result = ts.run_forked(*ts.run_args(data, out, "--resume"))
    assert result.returncode == 0, result.stderr
    assert f"resumed tiny at step {state['step']}" in result.stdout
    log = ts.read_log(log_path)
    ref = reference["log"]
    assert log["status"] == "completed"
    # Bit for bit: every eval loss, accuracy, train loss, grad norm and lr.
    assert_same(ts.without_timing(log["curve"]), ts.without_timing(ref["curve"]))
    # The points from before the checkpoint are the checkpoint's own (timings included); the
    # ones the killed process logged after it were dropped and recomputed, not duplicated.
    assert_same(log["curve"][: len(saved)], saved)
    assert [p["tokens"] for p in log["curve"]] == [p["tokens"] for p in ref["curve"]]
    assert [e["kind"] for e in log["events"]] == ["resumed"]
    assert log["events"][0]["step"] == state["step"]
    for key in ("tokens", "steps", "final_eval", "last_eval", "diverged_at"):
        assert same(log["summary"][key], ref["summary"][key]), key
    assert not checkpoint.exists()


@pytest.mark.slow
def test_resume_of_a_completed_run_exits_at_once(reference):
    log_path = reference["out"] / "tiny.json"
    before = log_path.read_bytes(), log_path.stat().st_mtime_ns
    result = ts.run_forked(*ts.run_args(reference["data"], reference["out"], "--resume"))
    assert result.returncode == 0, result.stderr
    assert "already completed; nothing to do" in result.stdout
    assert "resumed" not in result.stdout and "steps" not in result.stdout  # no training
    assert (log_path.read_bytes(), log_path.stat().st_mtime_ns) == before


@pytest.mark.slow
def test_resume_without_a_checkpoint_starts_over(reference, tmp_path):
    """--resume on a run that never checkpointed (or never started) is a fresh run."""
    result = ts.run_forked(*ts.run_args(reference["data"], tmp_path / "runs", "--resume",
                                      "--total-tokens", "1024"))
    assert result.returncode == 0, result.stderr
    log = ts.read_log(tmp_path / "runs" / "tiny.json")
    assert log["status"] == "completed" and log["events"] == []
    assert_same(ts.without_timing(log["curve"]), ts.without_timing(reference["log"]["curve"][:2]))


# ----------------------------------------------------------------------------------------
# (2) SIGTERM and SIGINT
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
@pytest.mark.slow
def test_signal_checkpoints_and_exits(reference, tmp_path, sig, code):
    data, out = reference["data"], tmp_path / "runs"
    log_path, checkpoint = out / "tiny.json", out / "tiny.ckpt"
    proc = ts.fork_main(*ts.run_args(data, out))
    wait_until(proc, lambda: len(curve_tokens(log_path)) >= 2)  # handlers are in place
    proc.send_signal(sig)
    if sig == signal.SIGINT:  # Ctrl-C under grid.py arrives twice; the second must not abort
        proc.send_signal(sig)
    out_text, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert checkpoint.exists()
    log = ts.read_log(log_path)
    assert log["status"] == "interrupted"
    assert log["events"][-1]["kind"] == "signal" and log["events"][-1]["detail"] == sig.name
    state = torch.load(checkpoint, weights_only=False)
    summary = log["summary"]  # an interrupted run still records its summary
    assert summary["tokens"] == state["tokens"] == log["events"][-1]["tokens"]
    assert summary["steps"] == state["step"] and summary["diverged_at"] is None
    # No final eval for a run stopped early; the last one is named as such, with its point.
    last = log["curve"][-1]
    assert summary["final_eval"] is None
    assert_same(summary["last_eval"], {"tokens": last["tokens"], "step": last["step"], "eval": last["eval"]})
    assert 0 < state["tokens"] < ts.TOTAL_TOKENS
    assert (f"tiny: interrupted after {summary['steps']} steps, {summary['tokens']:,} tokens" in out_text
            and f"; no final eval; the last, at step {last['step']} ({last['tokens']:,} tokens): "
                f"valid loss {last['eval']['valid']['loss']:.4f}" in out_text), out_text
    if sig != signal.SIGTERM:
        # A checkpoint that does not fit the run (here: another width under the same run
        # name) is refused in one line, not half-loaded; the checkpoint is left alone.
        result = ts.run_forked(*ts.run_args(data, out, "--resume", "--width", "40"))
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("main.py: error: cannot resume from "), result.stderr
        assert "tiny.ckpt" in lines[0] and "delete it" in lines[0]
        assert checkpoint.exists() and ts.read_log(log_path)["status"] == "interrupted"
        return
    result = ts.run_forked(*ts.run_args(data, out, "--resume"))
    assert result.returncode == 0, result.stderr
    log = ts.read_log(log_path)
    assert log["status"] == "completed"
    assert [e["kind"] for e in log["events"]] == ["signal", "resumed"]
    assert_same(ts.without_timing(log["curve"]), ts.without_timing(reference["log"]["curve"]))
    assert not checkpoint.exists()


# ----------------------------------------------------------------------------------------
# (3) divergence
# ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_absurd_learning_rate_diverges_with_exit_3(reference, tmp_path):
    # (the loss threshold applies after warmup: a one-step warmup)
    result = ts.run_forked(*ts.run_args(reference["data"], tmp_path / "runs", "--lr", "1e4",
                                      "--warmup-tokens", "256"))
    assert result.returncode == 3, result.stderr
    log = ts.read_log(tmp_path / "runs" / "tiny.json")
    assert log["status"] == "diverged"
    summary = log["summary"]
    at = summary["diverged_at"]
    assert set(at) >= {"step", "tokens", "train_loss"}
    assert isinstance(at["step"], int) and at["step"] >= 1 and at["tokens"] == 256 * at["step"]
    loss = at["train_loss"]
    assert not np.isfinite(loss) or loss > np.log(50304) + 1
    # A diverged run still records its summary, and its curve up to the last eval.
    assert summary["steps"] >= at["step"] and summary["tokens"] >= at["tokens"]
    assert summary["final_eval"] is None and summary["last_eval"]["tokens"] == log["curve"][-1]["tokens"]
    assert_same(summary["last_eval"]["eval"], log["curve"][-1]["eval"])
    assert "tiny: diverged after" in result.stdout


# ----------------------------------------------------------------------------------------
# (3b) a hung device: the wait gives up, the run says so and resumes
# ----------------------------------------------------------------------------------------

class NeverDone:
    """A CUDA event that never completes, as on the H100 where a run hung (docs/performance.md)."""
    def query(self):
        return False


def test_a_wait_on_a_hung_device_gives_up(monkeypatch):
    scalar = device_wait.DeviceScalar(torch.tensor(1.5))
    assert scalar.get() == 1.5
    scalar.event = NeverDone()
    monkeypatch.setattr(device_wait, "DEVICE_WAIT_LIMIT_S", 0.2)
    started = time.monotonic()
    with pytest.raises(device_wait.DeviceHung, match="no result from the device after"):
        scalar.get()
    assert 0.2 <= time.monotonic() - started < 5
    # Once SIGTERM has arrived it gives up after DEVICE_WAIT_AFTER_STOP_S, not the full limit.
    monkeypatch.setattr(device_wait, "DEVICE_WAIT_LIMIT_S", 600)
    monkeypatch.setattr(device_wait, "DEVICE_WAIT_AFTER_STOP_S", 0.1)
    started = time.monotonic()
    with pytest.raises(device_wait.DeviceHung):
        scalar.get([signal.SIGTERM])
    assert time.monotonic() - started < 5


def test_a_device_sync_on_a_hung_device_gives_up(monkeypatch):
    """The clock's syncs (before an eval, a checkpoint, a compile) poll an event too."""
    class NeverRecorded(NeverDone):
        def record(self):
            pass
    monkeypatch.setattr(device_wait.torch.cuda, "Event", NeverRecorded)
    monkeypatch.setattr(device_wait, "DEVICE_WAIT_LIMIT_S", 0.2)
    device_wait.sync("cpu")  # nothing to wait for on CPU
    started = time.monotonic()
    with pytest.raises(device_wait.DeviceHung):
        device_wait.sync("cuda")
    assert time.monotonic() - started < 5


HANG_IN_EVAL = """
import sys, main
evaluate, calls = main.evaluate, []
def hang_in_eval(*args, **kwargs):
    calls.append(1)
    if len(calls) == int(sys.argv[1]):
        raise main.DeviceHung("no result from the device after 300 s")
    return evaluate(*args, **kwargs)
main.evaluate = hang_in_eval
sys.exit(main.main(sys.argv[2:]))
"""


@pytest.mark.parametrize("hung_eval", [1, 3])  # the eval at init, and a later one
@pytest.mark.slow
def test_a_device_hung_in_an_eval_ends_the_run_interrupted_with_exit_4(reference, tmp_path, hung_eval):
    data, out = reference["data"], tmp_path / "runs"
    result = ts.run_forked(hung_eval, *ts.run_args(data, out), script=HANG_IN_EVAL)
    assert result.returncode == main.EXIT_DEVICE_HUNG, result.stderr
    log = ts.read_log(out / "tiny.json")
    assert log["status"] == "interrupted" and [e["kind"] for e in log["events"]] == ["device_hung"]
    assert len(log["curve"]) == hung_eval - 1
    assert log["summary"]["final_eval"] is None
    if hung_eval == 1:
        assert log["summary"]["last_eval"] is None
        assert "; no eval" in result.stdout
    else:
        assert log["summary"]["last_eval"]["eval"] == log["curve"][-1]["eval"]


HANG_AT_STEP_9 = """
import sys, main
launch_step = main.Trainer.launch_step
def hang_at_step_9(self):
    if self.step == 9:
        raise main.DeviceHung("no result from the device after 300 s")
    return launch_step(self)
main.Trainer.launch_step = hang_at_step_9
sys.exit(main.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_hung_device_ends_the_run_interrupted_with_exit_4_and_resume_finishes_it(reference, tmp_path):
    data, out = reference["data"], tmp_path / "runs"
    result = ts.run_forked(*ts.run_args(data, out), script=HANG_AT_STEP_9)
    assert result.returncode == main.EXIT_DEVICE_HUNG, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        "main.py: error: the device stopped responding"), result.stderr
    log = ts.read_log(out / "tiny.json")
    assert log["status"] == "interrupted"
    assert [(e["kind"], e["step"]) for e in log["events"]] == [("device_hung", 9)]
    assert (out / "tiny.ckpt").exists()  # the step-7 checkpoint (every 1792 tokens)

    resumed = ts.run_forked(*ts.run_args(data, out, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed tiny at step 7" in resumed.stdout
    log = ts.read_log(out / "tiny.json")
    assert log["status"] == "completed"
    assert_same(ts.without_timing(log["curve"]), ts.without_timing(reference["log"]["curve"]))


# ----------------------------------------------------------------------------------------
# (4) bad data: a sequence longer than the data, a corrupt token cache
# ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_sequence_longer_than_the_data_exits_2(tmp_path):
    folder = ts.write_small_data(tmp_path / "data", train_chars=20_000, valid_chars=150)
    result = ts.run_forked(*ts.run_args(folder, tmp_path / "runs"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("main.py: error: valid split has ") and "--max-seq-len 64" in lines[0]
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_corrupt_token_cache_is_rebuilt_and_the_run_proceeds(tmp_path):
    folder = ts.write_small_data(tmp_path / "data", train_chars=100_000, valid_chars=20_000)
    cache = folder / "cache"
    tokens = {split: data.file_tokens(folder / f"{split}.txt", cache) for split in ("train", "valid")}
    entries = sorted(cache.glob("tokens-*.npy"))
    assert len(entries) == 2
    for entry in entries:
        entry.write_bytes(entry.read_bytes()[:200])  # the header and a few tokens: truncated
    result = ts.run_forked(*ts.run_args(folder, tmp_path / "runs", "--total-tokens", "1024"))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: token cache")]
    assert len(warnings) == 2 and all("corrupt" in w and "rebuilding" in w for w in warnings)
    assert ts.read_log(tmp_path / "runs" / "tiny.json")["status"] == "completed"
    rebuilt = [np.load(entry) for entry in entries]  # whole again on disk
    assert sorted(map(len, rebuilt)) == sorted(map(len, tokens.values()))
    assert all(any(np.array_equal(r, t) for t in tokens.values()) for r in rebuilt)
