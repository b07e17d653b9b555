"""Tests for runlog: atomic writes, the schema and its reader, exit codes, the wandb mirror, and
that grid.py and plots run where torch cannot be imported."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import runlog

REPO = Path(__file__).resolve().parent.parent


def sample_log(run_name: str = "sp_wu0_s0") -> dict:
    return runlog.new_run_log(run_name=run_name, command=["python", "main.py", "--param", "sp"],
                              config={"param": "sp", "width": 64, "lr": 1e-3, "warmup_tokens": 0, "seed": 0}, env={"device": "cpu"},
                              eval_sets=["valid"])


def curve_point(step: int, loss: float) -> dict:
    return {"tokens": 1000 * step, "step": step, "train_seconds": 0.5 * step, "lr": {"hidden": 1e-3},
            "seq_len": 32, "batch_size": 4, "microbatches": 1, "chunk_tokens": 4096, "grad_norm": None if step == 0 else 0.5,
            "eval": {"valid": {"loss": loss, "perplexity": 2.0 ** loss, "accuracy": 0.1}},
            "train_loss": None if step == 0 else loss + 0.1}


def write_sample_run(path: Path, wandb_project: str | None = None) -> runlog.RunLogWriter:
    """A run as main.py logs one: points, an event, the end status and summary, a save after each."""
    writer = runlog.RunLogWriter(path, sample_log(path.stem), wandb_project=wandb_project)
    for step, loss in ((0, 10.0), (10, 7.5), (20, 6.25)):
        writer.add_point(curve_point(step, loss))
        writer.save()
    writer.add_event(tokens=20000, step=20, kind="resumed", detail="ckpt")
    writer.log["status"] = runlog.COMPLETED
    writer.log["summary"].update({"tokens": 20000, "steps": 20, "final_eval": writer.log["curve"][-1]["eval"]})
    writer.save()
    writer.close()
    return writer


# ----------------------------------------------------------------------------------------------
# Atomic writes

def test_a_failed_rename_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "log.json"
    runlog.write_json(path, {"version": "old"})

    def crash(source, target):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(runlog.os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        runlog.write_json(path, {"version": "new"})
    assert json.loads(path.read_text()) == {"version": "old"}
    assert [p.name for p in tmp_path.iterdir()] == ["log.json"]


def test_a_crash_while_writing_leaves_the_old_file(tmp_path):
    path = tmp_path / "model.ckpt"
    runlog.atomic_write_bytes(path, b"old checkpoint")

    def torn_write(file):
        file.write(b"half of a new chec")
        raise KeyboardInterrupt  # killed part way through torch.save

    with pytest.raises(KeyboardInterrupt):
        runlog.atomic_write(path, torn_write)
    assert path.read_bytes() == b"old checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["model.ckpt"]


def test_a_write_fsyncs_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor):
        kind = "folder" if os.path.isdir(f"/proc/self/fd/{descriptor}") else "file"
        calls.append(kind)
        real_fsync(descriptor)

    monkeypatch.setattr(runlog.os, "fsync", fsync)
    monkeypatch.setattr(runlog.os, "replace", lambda a, b: (calls.append("rename"), real_replace(a, b)))
    runlog.write_json(tmp_path / "sub" / "log.json", {"a": 1})
    assert calls == ["file", "rename", "folder"]
    assert (tmp_path / "sub" / "log.json").read_text() == '{\n "a": 1\n}\n'


def test_grid_writes_its_manifest_with_runlogs_write(monkeypatch):
    import grid
    assert grid.write_json is runlog.write_json and grid.read_json is runlog.read_json
    assert grid.git_state is runlog.git_state


# ----------------------------------------------------------------------------------------------
# Schema and reader

@pytest.mark.results
def test_new_run_log_has_the_layout_main_writes_and_committed_logs_have():
    committed = json.loads((REPO / "runs/cpu_grid/sp_w64_wu0_lr1e-2_s0.json").read_text())
    log = sample_log()
    assert list(log) == list(committed)  # same keys, same order
    assert log["schema_version"] == committed["schema_version"] == runlog.SCHEMA_VERSION
    assert (log["status"], log["curve"], log["events"], log["summary"]) == ("running", [], [], {})
    assert set(committed["curve"][1]) == set(curve_point(10, 1.0))
    assert committed["status"] in runlog.STATUSES


def test_a_saved_log_reads_back_equal(tmp_path):
    writer = write_sample_run(tmp_path / "run.json")
    (tmp_path / "manifest.json").write_text(json.dumps({"manifest_version": 1}))
    (tmp_path / "bench.json").write_text(json.dumps({"tokens_per_second": 1.0}))
    assert runlog.load_run_log(tmp_path / "run.json") == writer.log
    assert [e["kind"] for e in writer.log["events"]] == ["resumed"]
    assert [p["eval"]["valid"]["loss"] for p in writer.log["curve"]] == [10.0, 7.5, 6.25]
    # The folder twice counts once; the manifest and foreign JSON are no run logs.
    assert runlog.load_run_logs([tmp_path, tmp_path]) == {tmp_path / "run.json": writer.log}


@pytest.mark.parametrize("content, expected", [
    ({**sample_log(), "schema_version": 2}, "schema_version 2"),
    ({"curve": []}, "not a run log"),
    ("{ torn", "cannot read it as JSON"),
])
def test_a_bad_run_log_is_a_one_line_error_naming_file_and_fix(tmp_path, content, expected):
    path = tmp_path / "bad.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(runlog.RunLogError) as error:
        runlog.load_run_log(path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message and expected in message
    assert any(fix in message for fix in ("rerun", "pass a run's"))


def test_load_run_logs_refuses_a_folder_holding_another_schema(tmp_path):
    write_sample_run(tmp_path / "good.json")
    (tmp_path / "old.json").write_text(json.dumps({**sample_log(), "schema_version": 0}))
    with pytest.raises(runlog.RunLogError, match="old.json: run log schema_version 0"):
        runlog.load_run_logs([tmp_path])


def test_git_commit_honours_GIT_COMMIT_and_marks_a_dirty_tree(tmp_path, monkeypatch):
    monkeypatch.delenv("GIT_COMMIT", raising=False)
    assert runlog.git_state(tmp_path) == (None, None) and runlog.git_commit(tmp_path) == "unknown"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git + ["init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "f").write_text("1")
    subprocess.run(git + ["add", "f"], cwd=tmp_path, check=True)
    subprocess.run(git + ["commit", "-qm", "c"], cwd=tmp_path, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True,
                          text=True, check=True).stdout.strip()
    assert runlog.git_commit(tmp_path) == head
    (tmp_path / "f").write_text("2")
    assert runlog.git_state(tmp_path) == (head, True) and runlog.git_commit(tmp_path) == head + "-dirty"
    monkeypatch.setenv("GIT_COMMIT", "abc123")
    assert runlog.git_commit(tmp_path) == "abc123"


# ----------------------------------------------------------------------------------------------
# Exit codes

def test_exit_code_table_is_the_one_main_and_grid_use():
    import grid
    import main
    assert runlog.EXIT_CODES == {0: "completed", 2: "bad input", 3: "diverged", 4: "device hung",
                                 130: "interrupted by SIGINT", 143: "interrupted by SIGTERM"}
    assert 128 + signal.SIGINT == runlog.EXIT_SIGINT and 128 + signal.SIGTERM == runlog.EXIT_SIGTERM
    for module in (main, grid):
        assert (module.EXIT_BAD_INPUT, module.EXIT_DIVERGED) == (runlog.EXIT_BAD_INPUT, runlog.EXIT_DIVERGED)
    assert main.EXIT_DEVICE_HUNG == runlog.EXIT_DEVICE_HUNG and main.EXIT_SIGNAL == runlog.EXIT_SIGNAL
    assert (grid.EXIT_COMPLETED, grid.EXIT_SIGINT, grid.EXIT_SIGTERM) == (0, 130, 143)
    bad_flag = subprocess.run([sys.executable, "grid.py", "--no-such-flag-either", "--", "--out", "x"],
                              cwd=REPO, capture_output=True, text=True, timeout=60)
    assert bad_flag.returncode == runlog.EXIT_BAD_INPUT, bad_flag.stderr


# ----------------------------------------------------------------------------------------------
# No torch in grid.py and plots

HIDE_TORCH = textwrap.dedent("""
    import importlib.abc, sys

    class HideTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError(f"torch is hidden: {name}")
            return None

    sys.meta_path.insert(0, HideTorch())
""")


@pytest.fixture
def torch_hidden_env(tmp_path):
    """An environment whose Python cannot import torch (a sitecustomize inserts the finder)."""
    (tmp_path / "sitecustomize.py").write_text(HIDE_TORCH)
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]), MPLBACKEND="Agg")


def run_python(arguments: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable] + arguments, cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.slow
def test_grid_and_plots_import_and_run_without_torch(torch_hidden_env, tmp_path):
    check = run_python(["-c", textwrap.dedent("""
        try:
            import torch
        except ImportError:
            pass
        else:
            raise SystemExit("torch was not hidden")
        import grid, runlog, plots, plots.analysis, plots.figures, plots.__main__
        import sys
        assert not [m for m in sys.modules if m.split(".")[0] in ("torch", "main")], "torch got in"
        print("ok")
    """)], torch_hidden_env)
    assert check.returncode == 0 and check.stdout.strip() == "ok", check.stderr
    for arguments in (["grid.py", "--help"], ["-m", "plots", "--help"]):
        result = run_python(arguments, torch_hidden_env)
        assert result.returncode == 0 and "usage:" in result.stdout, (arguments, result.stderr)
    dry = run_python(["grid.py", "--param", "sp", "--warmup-tokens", "0", "--out", str(tmp_path / "g"),
                      "--dry-run"], torch_hidden_env)
    assert dry.returncode == 0 and "1 cells" in dry.stdout, dry.stderr


@pytest.mark.slow
def test_plots_draws_from_run_logs_without_torch(torch_hidden_env, tmp_path):
    runs = tmp_path / "runs"
    write_sample_run(runs / "sp_wu0_s0.json")
    result = run_python(["-m", "plots", str(runs), "--out", str(tmp_path / "figures")], torch_hidden_env)
    assert result.returncode == 0 and "1 runs" in result.stdout, result.stderr
    assert (tmp_path / "figures" / "summary.md").exists()


@pytest.mark.slow
def test_plots_cli_reports_a_log_of_another_schema_in_one_line(tmp_path):
    (tmp_path / "old.json").write_text(json.dumps({**sample_log(), "schema_version": 0}))
    result = subprocess.run([sys.executable, "-m", "plots", str(tmp_path), "--out", str(tmp_path / "f")],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    error_line = result.stderr.strip().splitlines()[-1]  # after argparse's usage line
    assert result.returncode == 2 and "old.json: run log schema_version 0" in error_line
    assert error_line.endswith("or rerun the run")


# ----------------------------------------------------------------------------------------------
# The Weights & Biases mirror

def test_without_a_project_wandb_is_never_imported(tmp_path):
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import sys, runlog
        sys.path.insert(0, {str(REPO / 'tests')!r})
        from test_runlog import write_sample_run
        from pathlib import Path
        write_sample_run(Path({str(tmp_path / 'run.json')!r}))
        assert "wandb" not in sys.modules
    """)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_a_missing_wandb_package_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    with pytest.raises(runlog.RunLogError, match="--wandb warmup: the wandb package is not installed; pip install wandb"):
        runlog.RunLogWriter(tmp_path / "run.json", sample_log(), wandb_project="warmup")  # before any training


@pytest.mark.slow
def test_the_wandb_mirror_in_offline_mode_leaves_the_log_unchanged(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    for name, value in (("WANDB_MODE", "offline"), ("WANDB_DIR", str(tmp_path)), ("WANDB_SILENT", "true"),
                        ("WANDB_CONFIG_DIR", str(tmp_path / "config")), ("WANDB_CACHE_DIR", str(tmp_path / "cache"))):
        monkeypatch.setenv(name, value)
    # Record what reaches the real (offline) wandb run: every history row, and its summary at the end.
    history, summary, run_dirs = [], {}, []
    real_start, real_finish = runlog.WandbMirror.start, runlog.WandbMirror.finish

    def start(self, log):
        real_start(self, log)
        real_log = self.run.log
        self.run.log = lambda row: (history.append(row), real_log(row))

    def finish(self):
        summary.update(self.run.summary)
        run_dirs.append(Path(self.run.dir).parent)  # the run's offline folder (its files/ is run.dir)
        real_finish(self)

    monkeypatch.setattr(runlog.WandbMirror, "start", start)
    monkeypatch.setattr(runlog.WandbMirror, "finish", finish)
    mirrored = write_sample_run(tmp_path / "with" / "run.json", wandb_project="warmup-test")
    plain = write_sample_run(tmp_path / "without" / "run.json")
    assert (tmp_path / "with" / "run.json").read_bytes() == (tmp_path / "without" / "run.json").read_bytes()
    assert mirrored.log == plain.log
    # Each saved point went once, flattened, nulls left out; the summary holds the end state.
    assert history == [runlog.flatten(point) for point in plain.log["curve"]]
    assert history[1]["eval/valid/loss"] == 7.5 and "grad_norm" not in history[0]
    assert summary["status"] == runlog.COMPLETED and summary["eval/valid/loss"] == 6.25
    assert summary["final_eval/valid/loss"] == 6.25 and summary["steps"] == 20
    assert wandb.run is None and mirrored.mirror.run is None  # the wandb run was closed
    [run_dir] = run_dirs
    assert run_dir.name.startswith("offline-run-") and list(run_dir.glob("*.wandb"))  # local, for `wandb sync`


@pytest.mark.slow
def test_a_main_run_with_the_wandb_mirror_logs_what_a_run_without_it_logs(tmp_path, monkeypatch):
    """Two tiny CPU runs of main.py, one with --wandb (offline): their logs differ only where the
    flag and the clock are recorded."""
    pytest.importorskip("wandb")
    import torch

    import main
    import trainer_support as ts
    if not (ts.BOOKS_VALID.is_file() and ts.TIKTOKEN_DIR.is_dir()):
        pytest.skip("needs ../shared/data (books text and tiktoken files)")
    for name, value in (("WANDB_MODE", "offline"), ("WANDB_DIR", str(tmp_path)), ("WANDB_SILENT", "true"),
                        ("WANDB_CONFIG_DIR", str(tmp_path / "config")), ("WANDB_CACHE_DIR", str(tmp_path / "cache"))):
        monkeypatch.setenv(name, value)
    mirrored_points, real_finish = [], runlog.WandbMirror.finish
    monkeypatch.setattr(runlog.WandbMirror, "finish",
                        lambda self: (mirrored_points.append(self.sent), real_finish(self)))
    data = ts.write_small_data(tmp_path / "data")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the two runs compute bit for bit alike
    logs = {}
    try:
        for label, extra in (("plain", []), ("mirrored", ["--wandb", "warmup-test"])):
            argv = ts.run_args(data, tmp_path / label, "--total-tokens", "1024", "--eval-every-tokens", "512",
                               "--run-name", "run", *extra)
            assert main.main([str(a) for a in argv]) == runlog.EXIT_COMPLETED
            logs[label] = runlog.load_run_log(tmp_path / label / "run.json")
    finally:
        torch.set_num_threads(threads)

    def comparable(log: dict) -> dict:
        log = json.loads(json.dumps(log))
        for key in ("command", "env"):
            log.pop(key)
        for key in ("wandb", "out"):
            log["config"].pop(key, None)
        for point in log["curve"]:
            point.pop("train_seconds")
        for key in ("train_seconds", "compile_seconds"):
            log["summary"].pop(key)
        return log

    assert logs["mirrored"]["config"]["wandb"] == "warmup-test" and logs["plain"]["config"]["wandb"] is None
    assert len(logs["plain"]["curve"]) == 3 and logs["plain"]["status"] == runlog.COMPLETED
    assert comparable(logs["mirrored"]) == comparable(logs["plain"])
    assert mirrored_points == [3]  # one wandb run, closed, that got every point
