"""Tests for grid.py, run against a small fake trainer that honours the trainer's contract."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import grid

REPO_ROOT = Path(__file__).resolve().parent.parent

# The fake trainer: writes its run log atomically after every "eval", resumes from that log,
# appends its run name to --counter each time it completes, exits 3 when its lr equals
# --diverge-lr, 1 when its seed equals --crash-seed, and 130/143 on SIGINT/SIGTERM.
FAKE_TRAINER = textwrap.dedent('''
    import argparse, json, os, signal, sys, time

    parser = argparse.ArgumentParser()
    parser.add_argument("--param", required=True)
    parser.add_argument("--warmup-tokens", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--out", required=True)
    parser.add_argument("--run-name", required=True)
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--evals", type=int, default=4)
    parser.add_argument("--eval-seconds", type=float, default=0.05)
    parser.add_argument("--tokens-per-eval", type=int, default=1000)
    parser.add_argument("--counter", required=True)
    parser.add_argument("--diverge-lr", type=float)
    parser.add_argument("--crash-seed", type=int)
    args = parser.parse_args()

    path = os.path.join(args.out, args.run_name + ".json")

    def write(log):
        temporary = path + ".tmp"
        with open(temporary, "w") as file:
            json.dump(log, file)
        os.replace(temporary, path)

    if args.resume and os.path.exists(path):
        with open(path) as file:
            log = json.load(file)
        if log["status"] == "completed":
            sys.exit(0)
        log["events"].append({"tokens": log["summary"]["tokens"], "step": len(log["curve"]),
                              "kind": "resumed", "detail": ""})
    else:
        log = {"schema_version": 1, "run_name": args.run_name, "status": "running",
               "command": sys.argv,
               "config": {"param": args.param, "width": args.width, "depth": 2,
                          "warmup_tokens": args.warmup_tokens, "lr": args.lr, "seed": args.seed},
               "env": {}, "eval_sets": ["valid"], "curve": [], "events": [],
               "summary": {"tokens": 0, "steps": 0, "train_seconds": 0.0,
                           "final_eval": None, "diverged_at": None}}
    log["status"] = "running"

    stop_signal = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda signum, frame: stop_signal.append(signum))

    if args.seed == args.crash_seed:
        sys.exit(1)
    for index in range(len(log["curve"]), args.evals):
        time.sleep(args.eval_seconds)
        if stop_signal:
            log["status"] = "interrupted"
            write(log)
            sys.exit(128 + stop_signal[0])
        tokens = (index + 1) * args.tokens_per_eval
        if args.lr == args.diverge_lr and index == 1:
            log["status"] = "diverged"
            log["summary"]["diverged_at"] = {"step": index + 1, "tokens": tokens}
            write(log)
            sys.exit(3)
        evaluation = {"valid": {"loss": 5.0 - 0.1 * index, "perplexity": 1.0, "accuracy": 0.1}}
        log["curve"].append({"tokens": tokens, "step": index + 1, "train_loss": 5.0,
                             "eval": evaluation})
        log["summary"].update(tokens=tokens, steps=index + 1, final_eval=evaluation)
        write(log)
    log["status"] = "completed"
    write(log)
    with open(args.counter, "a") as file:
        file.write(args.run_name + "\\n")
''')


@pytest.fixture
def fake_trainer(tmp_path):
    path = tmp_path / "fake_trainer.py"
    path.write_text(FAKE_TRAINER)
    return path


def grid_command(trainer, out_dir, *arguments):
    return [sys.executable, str(REPO_ROOT / "grid.py"), "--trainer", str(trainer),
            "--out", str(out_dir), "--quiet", *arguments]


def cpu_environment():
    # An empty CUDA_VISIBLE_DEVICES means "no GPU", and spares grid.py importing torch.
    return dict(os.environ, CUDA_VISIBLE_DEVICES="")


def run_grid(command, timeout=30):
    return subprocess.run(command, capture_output=True, text=True, env=cpu_environment(),
                          timeout=timeout)


def read_manifest(out_dir):
    return json.loads((out_dir / "manifest.json").read_text())


def completions(counter):
    return sorted(counter.read_text().split()) if counter.exists() else []


def wait_until(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def manifest_statuses(out_dir):
    try:
        return [cell["status"] for cell in read_manifest(out_dir)["cells"]]
    except (FileNotFoundError, json.JSONDecodeError):
        return []


def run_log_tokens(out_dir, name):
    try:
        return json.loads((out_dir / f"{name}.json").read_text())["summary"]["tokens"]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


# ----------------------------------------------------------------------------------------------
# Parsing and naming

@pytest.mark.parametrize("text, tokens", [
    ("0", 0), ("1000000", 1_000_000), ("1e6", 1_000_000), ("5M", 5_000_000),
    ("500K", 500_000), ("1.5M", 1_500_000), ("6e7", 60_000_000), ("2g", 2_000_000_000),
])
def test_parse_token_count_accepts_common_forms(text, tokens):
    assert grid.parse_token_count(text) == tokens


@pytest.mark.parametrize("text", ["-1", "abc", "1.5", "1e-3", "5X", ""])
def test_parse_token_count_rejects_bad_values(text):
    with pytest.raises(grid.GridInputError):
        grid.parse_token_count(text)


def test_run_names_are_compact_stable_and_filesystem_safe():
    cell = grid.Cell(param="sp", width=384, warmup_tokens=1_000_000, lr=0.003, seed=0)
    assert cell.name == "sp_w384_wu1e6_lr3e-3_s0"
    assert grid.Cell("mup", None, 1_500_000, 0.0025, 2).name == "mup_wu15e5_lr2.5e-3_s2"
    assert grid.Cell("sp", None, 0, None, 1).name == "sp_wu0_s1"
    assert grid.format_token_count(500) == "500"


def test_arguments_split_into_grid_flags_and_passthrough(fake_trainer):
    config = grid.parse_grid_arguments([
        "--trainer", str(fake_trainer), "--param", "sp,mup", "--warmup-tokens", "0", "5M",
        "--seeds", "0", "1", "--depth", "4", "--widths", "128", "--", "--total-tokens", "1M"])
    assert config.passthrough == ["--depth", "4", "--total-tokens", "1M"]
    assert len(config.cells) == 2 * 2 * 2
    command = grid.cell_command(config, config.cells[0], None)
    assert command[:2] == [sys.executable, str(fake_trainer)]
    assert command[2:6] == ["--depth", "4", "--total-tokens", "1M"]
    assert command[-6:] == ["--out", str(grid.REPO / "out" / "grid"), "--run-name", "sp_w128_wu0_s0", "--quiet",
                            "--resume"]


def test_several_gpus_per_run_launch_torchrun_on_distinct_ports(fake_trainer):
    config = grid.parse_grid_arguments(["--trainer", str(fake_trainer), "--param", "sp",
                                        "--warmup-tokens", "0", "--gpus-per-run", "2"])
    slots = grid.make_slots(["0", "1", "2", "3"], gpus_per_run=2, jobs=None, port_base=29500)
    assert [(slot.gpus, slot.port) for slot in slots] == [(("0", "1"), 29500), (("2", "3"), 29501)]
    command = grid.cell_command(config, config.cells[0], slots[1])
    assert command[1:3] == ["-m", "torch.distributed.run"]
    assert "--nproc-per-node=2" in command and "--rdzv-endpoint=localhost:29501" in command


def test_slots_default_to_one_run_per_gpu_or_one_on_cpu():
    assert [slot.gpus for slot in grid.make_slots(["0", "1"], 1, None, 29500)] == [("0",), ("1",)]
    assert [slot.gpus for slot in grid.make_slots([], 1, None, 29500)] == [()]
    assert len(grid.make_slots([], 1, 3, 29500)) == 3
    with pytest.raises(grid.GridInputError):
        grid.make_slots(["0"], 2, None, 29500)


def test_runs_sharing_a_gpu_split_its_memory_unless_the_passthrough_says(fake_trainer):
    # Five runs on two GPUs: three share one card, so every run gets a third of 0.85.
    slots = grid.make_slots(["0", "1"], 1, 5, 29500)
    assert {slot.memory_fraction for slot in slots} == {round(0.85 / 3, 4)}
    assert all(slot.memory_fraction is None for slot in grid.make_slots(["0", "1"], 1, 2, 29500))
    assert grid.make_slots([], 1, 3, 29500)[0].memory_fraction is None  # CPU: nothing to share
    argv = ["--trainer", str(fake_trainer), "--param", "sp", "--warmup-tokens", "0"]
    config = grid.parse_grid_arguments(argv)
    command = grid.cell_command(config, config.cells[0], slots[0])
    assert command[command.index("--gpu-memory-fraction") + 1] == str(round(0.85 / 3, 4))
    config = grid.parse_grid_arguments(argv + ["--", "--gpu-memory-fraction", "0.1"])
    command = grid.cell_command(config, config.cells[0], slots[0])
    assert command.count("--gpu-memory-fraction") == 1 and "0.1" in command


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert grid.visible_gpus() == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert grid.visible_gpus() == []


@pytest.mark.parametrize("exit_code, log_status, fresh_log, status", [
    (0, "completed", True, "completed"),
    (0, "running", True, "failed"),            # a clean exit the run log does not back
    (3, "diverged", True, "diverged"),
    (143, "interrupted", True, "interrupted"),
    (-signal.SIGKILL, "running", True, "failed"),
    (1, "diverged", True, "diverged"),         # torchrun reports a worker's exit 3 as 1
    (1, "interrupted", False, "failed"),       # an old run log says nothing about this crash
])
def test_status_after_exit(exit_code, log_status, fresh_log, status):
    assert grid.status_after_exit(exit_code, log_status, fresh_log) == status


# ----------------------------------------------------------------------------------------------
# Command line behaviour

@pytest.mark.parametrize("arguments, message", [
    (["--param", "xp"], "unknown parametrization"),
    (["--warmup-tokens", "abc"], "cannot parse token count"),
    (["--warmup-tokens", "-5"], "negative"),
    (["--warmup-tokens", "1e6", "1M"], "duplicate cells"),
    (["--lr", "-0.1"], "positive"),
    (["--seeds", "-1"], ">= 0"),
    (["--seed", "3"], "--seeds"),
    (["--", "--run-name", "x"], "--run-name"),
    (["--", "--wandb", "project"], "use grid.py's --wandb"),
])
def test_bad_input_exits_2_with_one_line_error(fake_trainer, tmp_path, arguments, message):
    result = run_grid(grid_command(fake_trainer, tmp_path / "grid", *arguments))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert message in result.stderr


def test_dry_run_lists_cells_and_commands_and_writes_nothing(fake_trainer, tmp_path):
    out_dir = tmp_path / "grid"
    result = run_grid(grid_command(fake_trainer, out_dir, "--param", "sp", "mup",
                                   "--warmup-tokens", "0", "1M", "--dry-run", "--evals", "2"))
    assert result.returncode == 0
    for name in ("sp_wu0_s0", "sp_wu1e6_s0", "mup_wu0_s0", "mup_wu1e6_s0"):
        assert name in result.stdout
    assert "--evals 2 --param sp --warmup-tokens 1000000" in result.stdout
    assert not out_dir.exists()


def test_wandb_project_goes_to_every_run_grouped_by_the_grid_folder(tmp_path):
    """--wandb PROJECT reaches each run as its own flag, with WANDB_RUN_GROUP (which wandb.init
    reads) naming the grid folder, and the manifest records it."""
    trainer = tmp_path / "recording_trainer.py"
    trainer.write_text(textwrap.dedent('''
        import json, os, sys
        argv = sys.argv[1:]
        out, name = argv[argv.index("--out") + 1], argv[argv.index("--run-name") + 1]
        log = {"schema_version": 1, "run_name": name, "status": "completed", "curve": [],
               "config": {"argv": argv, "group": os.environ.get("WANDB_RUN_GROUP")}}
        with open(os.path.join(out, name + ".json"), "w") as file:
            json.dump(log, file)
    '''))
    out_dir = tmp_path / "warmup_grid"
    environment = {key: value for key, value in cpu_environment().items() if key != "WANDB_RUN_GROUP"}
    result = subprocess.run(grid_command(trainer, out_dir, "--param", "sp", "mup", "--warmup-tokens", "0",
                                         "--wandb", "warmup-study"),
                            capture_output=True, text=True, env=environment, timeout=30)
    assert result.returncode == 0, result.stderr
    for name in ("sp_wu0_s0", "mup_wu0_s0"):
        config = json.loads((out_dir / f"{name}.json").read_text())["config"]
        assert config["group"] == "warmup_grid"
        assert config["argv"][config["argv"].index("--wandb") + 1] == "warmup-study"
    assert read_manifest(out_dir)["grid"]["wandb"] == "warmup-study"


# ----------------------------------------------------------------------------------------------
# Running, failure, divergence and resumption

def test_diverged_and_failed_cells_are_recorded_and_the_grid_goes_on(fake_trainer, tmp_path):
    out_dir, counter = tmp_path / "grid", tmp_path / "completions.txt"
    command = grid_command(fake_trainer, out_dir, "--param", "sp", "--warmup-tokens", "0",
                           "--lr", "1e-3", "2e-3", "--seeds", "0", "1", "--jobs", "2",
                           "--counter", str(counter), "--diverge-lr", "2e-3", "--crash-seed", "1",
                           "--eval-seconds", "0.01")
    result = run_grid(command)
    assert result.returncode == 1  # the crashed cells are neither completed nor diverged
    statuses = {cell["name"]: (cell["status"], cell["exit_code"])
                for cell in read_manifest(out_dir)["cells"]}
    assert statuses == {"sp_wu0_lr1e-3_s0": ("completed", 0), "sp_wu0_lr2e-3_s0": ("diverged", 3),
                        "sp_wu0_lr1e-3_s1": ("failed", 1), "sp_wu0_lr2e-3_s1": ("failed", 1)}
    assert completions(counter) == ["sp_wu0_lr1e-3_s0"]
    # --quiet keeps one line per cell started and one per cell finished, numbered i/4.
    lines = result.stdout.splitlines()
    assert lines[0] == f"grid.py: 4 of 4 cells to run in {out_dir}, 2 at a time (logs: {out_dir / 'logs'})"
    started = [line.split("grid.py: ")[1] for line in lines if " started: " in line]
    assert sorted(started) == sorted(f"cell {i}/4 started: {name}" for i, name in enumerate(
        ["sp_wu0_lr1e-3_s0", "sp_wu0_lr1e-3_s1", "sp_wu0_lr2e-3_s0", "sp_wu0_lr2e-3_s1"], 1))
    finished = {line.split(": ")[2].split()[0]: line for line in lines if " finished: " in line}
    assert len(finished) == 4 and all("elapsed " in line for line in finished.values())
    assert " completed, final valid loss " in finished["sp_wu0_lr1e-3_s0"]
    assert " failed (exit 1, see logs/sp_wu0_lr1e-3_s1.log)" in finished["sp_wu0_lr1e-3_s1"]

    first = {cell["name"]: cell for cell in read_manifest(out_dir)["cells"]}

    # Rerun: the diverged cell is not retried, the failed ones are; the finished cells keep
    # their launch record (exit code, start and finish times) in the manifest.
    run_grid(command)
    second = {cell["name"]: cell for cell in read_manifest(out_dir)["cells"]}
    launch_record = ("status", "exit_code", "gpus", "started_at", "finished_at")
    for name in ("sp_wu0_lr1e-3_s0", "sp_wu0_lr2e-3_s0"):
        assert first[name]["started_at"] is not None
        assert [second[name][key] for key in launch_record] == [first[name][key] for key in launch_record]
    assert (out_dir / "logs" / "sp_wu0_lr2e-3_s0.log").read_text().count("=== grid.py") == 1
    assert (out_dir / "logs" / "sp_wu0_lr1e-3_s1.log").read_text().count("=== grid.py") == 2
    assert completions(counter) == ["sp_wu0_lr1e-3_s0"]


@pytest.mark.slow
def test_grid_killed_mid_run_resumes_and_completes_every_cell_exactly_once(fake_trainer, tmp_path):
    out_dir, counter = tmp_path / "grid", tmp_path / "completions.txt"
    command = grid_command(fake_trainer, out_dir, "--param", "sp", "mup", "--warmup-tokens",
                           "0", "1M", "--jobs", "2", "--counter", str(counter),
                           "--evals", "6", "--eval-seconds", "0.1")
    names = ["sp_wu0_s0", "sp_wu1e6_s0", "mup_wu0_s0", "mup_wu1e6_s0"]
    # A session of its own, so that SIGKILL to its process group takes grid.py and its runs
    # down together, as a lost machine or `kill -9 -PGID` would.
    process = subprocess.Popen(command, env=cpu_environment(), start_new_session=True)
    try:
        # Kill once the first pair has completed and the second pair is part way through.
        wait_until(lambda: len(completions(counter)) == 2
                   and all(run_log_tokens(out_dir, name) >= 2000 for name in names[2:]))
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert manifest_statuses(out_dir).count("running") == 2
    assert not list(out_dir.glob("*.tmp")) and not list(out_dir.glob(".*.tmp"))

    result = run_grid(command)
    assert result.returncode == 0, result.stderr
    assert completions(counter) == sorted(names)
    manifest = read_manifest(out_dir)
    assert [cell["status"] for cell in manifest["cells"]] == ["completed"] * 4
    assert all(cell["tokens"] == 6000 and cell["steps"] == 6 for cell in manifest["cells"])
    for name in names[2:]:  # continued from their last eval instead of starting again
        run_log = json.loads((out_dir / f"{name}.json").read_text())
        assert [point["tokens"] for point in run_log["curve"]] == [1000 * i for i in range(1, 7)]
        assert [event["kind"] for event in run_log["events"]] == ["resumed"]


@pytest.mark.slow
def test_sigterm_is_forwarded_runs_are_marked_interrupted_and_resume(fake_trainer, tmp_path):
    out_dir, counter = tmp_path / "grid", tmp_path / "completions.txt"
    command = grid_command(fake_trainer, out_dir, "--param", "sp", "--warmup-tokens", "0", "1M",
                           "--jobs", "2", "--counter", str(counter), "--evals", "20",
                           "--eval-seconds", "0.05")
    process = subprocess.Popen(command, env=cpu_environment(), start_new_session=True)
    try:
        wait_until(lambda: all(run_log_tokens(out_dir, name) > 0
                               for name in ("sp_wu0_s0", "sp_wu1e6_s0")))
        second = run_grid(command)  # the same folder while the first grid runs
        assert second.returncode == 2 and "in use" in second.stderr
        process.send_signal(signal.SIGTERM)  # to grid.py alone; it must pass it on
        assert process.wait(timeout=10) == 128 + signal.SIGTERM
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    manifest = read_manifest(out_dir)
    assert manifest["stopped_by_signal"] == signal.SIGTERM
    assert [(cell["status"], cell["exit_code"]) for cell in manifest["cells"]] == \
        [("interrupted", 143)] * 2
    assert completions(counter) == []

    assert run_grid(command).returncode == 0
    assert completions(counter) == ["sp_wu0_s0", "sp_wu1e6_s0"]


def test_run_log_progress_reads_the_last_eval():
    log = {"curve": [{"tokens": 100, "step": 2, "eval": {"valid": {"loss": 5.0}}},
                     {"tokens": 300, "step": 4, "eval": {"valid": {"loss": 4.5}}}]}
    assert grid.run_log_progress(log) == (300, 4, 4.5)
    assert grid.run_log_progress({"curve": []}) == grid.run_log_progress(None) == (None, None, None)


def test_status_summary_counts_cells_in_a_fixed_order():
    """The live table's first line and device_call.sh's end-of-call report."""
    assert grid.status_summary(["pending", "completed", "failed", "completed"]) == \
        "2 completed, 1 pending, 1 failed"
    assert grid.status_summary([]) == ""


def test_progress_durations_and_time_left():
    assert [grid.format_duration(s) for s in (0, 59.6, 61, 3600, 3725)] == \
        ["0:00", "1:00", "1:01", "1:00:00", "1:02:05"]
    assert grid.estimated_seconds_left([], 4, 2) is None  # nothing finished yet
    # Two cells of 60 s and 100 s done, 5 left, 2 at a time: 80 s each, two and a half rounds.
    assert grid.estimated_seconds_left([60.0, 100.0], 5, 2) == 200.0
    assert grid.estimated_seconds_left([60.0, 100.0], 1, 2) == 80.0  # one left keeps one slot busy


@pytest.mark.parametrize("experiment, cells", [("wide", 12), ("narrow", 18), ("base", 27), ("wide_warmup", 6),
                                               ("uniform", 12), ("seqlen", 9), ("umup", 6), ("umup_alpha", 19)])
def test_fair_study_cells_are_valid_trainer_commands(tmp_path, experiment, cells):
    """experiments/fair_study.sh (DRY=1 lists the cells): each experiment has the cells its header
    promises, and every cell's main.py command parses and resolves (a typo in a flag, or a flag
    combination the trainer refuses, fails here rather than on a GPU)."""
    import main
    listed = subprocess.run(["bash", "experiments/fair_study.sh", experiment], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=120, env={**os.environ, "DRY": "1", "RUNS": str(tmp_path)})
    assert listed.returncode == 0, listed.stderr
    # A queue lists a cell once per grid that names it: count distinct cells.
    commands = sorted({line.strip() for line in listed.stdout.splitlines() if line.strip().split(" ")[-1] == "--resume"})
    assert len(commands) == cells
    commands = [command.split() for command in commands]
    for command in commands:
        flags = command[command.index(str(REPO_ROOT / "main.py")) + 1:]
        config = main.resolve(main.parse_args(flags + ["--device", "cpu"]))
        assert config.microbatches == 1 and config.warmup_groups == "all" and config.total_tokens == 52e6
