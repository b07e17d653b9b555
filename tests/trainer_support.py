"""Shared helpers for the tests that run the trainer (tests/test_trainer.py, test_reliability.py, ...).

Real data comes from ../shared/data (beside the repository); tests that need it skip cleanly
when it is absent. Each test writes its own small data folder (the first ~300 KB of the books
validation text as train, a slice after it as valid), so it never depends on the project's
token cache. Training runs go through `python main.py` in a subprocess with one CPU thread:
the 2-core test machine is shared, and with one thread a tiny run is several times faster
there and its arithmetic does not depend on the thread count. Most runs are forked from a
server that has imported main.py once (fork_main, run_forked); run_main starts `python
main.py` itself (the reference run, and the tests of the command line as such).
"""
from __future__ import annotations

import atexit
import json
import lzma
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = SHARED / "data"
BOOKS_VALID = DATA / "books" / "valid.txt.xz"
WIKI_VALID = DATA / "wikitext-103" / "wiki.valid.raw"
TIKTOKEN_DIR = DATA / "tiktoken"

os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(TIKTOKEN_DIR))
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

needs_data = pytest.mark.skipif(
    not (BOOKS_VALID.is_file() and WIKI_VALID.is_file() and TIKTOKEN_DIR.is_dir()),
    reason=f"offline data not found under {DATA}")

# A tiny model (the 50K-vocabulary readout dominates the cost): 256-token microbatches, the
# sequence length doubling 16 -> 32 -> 64 every 4 step-equivalents, 8 windows of 64 tokens
# per eval.
TINY = ["--width", "32", "--depth", "1", "--max-seq-len", "64", "--seq-len-start", "16",
        "--seq-len-double-every", "4", "--batch-tokens", "256", "--eval-tokens", "512",
        "--warmup-tokens", "1024", "--device", "cpu", "--quiet"]
# The run most tests compare with: about 37 steps, evals every 1024 tokens (4 steps at
# first), checkpoints every 1792 tokens (7 steps at first: a checkpoint never holds the latest
# curve point, so resume tests can tell kept points from recomputed ones). At this learning
# rate the microbatch fraction passes 1 after ~25 steps and the count grows to 2 then 4, so
# the dithering generator's state matters to the curve after a resume. Flags given after RUN
# (run_args' extra) override it: argparse keeps the last value.
RUN = TINY + ["--lr", "0.05", "--total-tokens", "12288", "--eval-every-tokens", "1024",
              "--checkpoint-every-tokens", "1792", "--run-name", "tiny"]
TOTAL_TOKENS = 12288

_text_cache: dict = {}


def uniform_tokens(train_tokens: int, valid_tokens: int, seed: int = 0) -> dict:
    """A Trainer's data dict of uniformly random GPT-2 token ids (no tokenizer, no files)."""
    rng = np.random.default_rng(seed)
    return {"train": rng.integers(0, 50257, train_tokens, dtype=np.uint16),
            "valid": rng.integers(0, 50257, valid_tokens, dtype=np.uint16)}


def books_text(chars: int) -> str:
    """The first `chars` characters (about) of the books validation text."""
    if chars not in _text_cache:
        with lzma.open(BOOKS_VALID) as f:
            _text_cache[chars] = f.read(chars).decode("utf-8", errors="ignore")
    return _text_cache[chars]


def write_small_data(folder: Path, train_chars: int = 300_000, valid_chars: int = 40_000) -> Path:
    """A data folder: train = the first ~300 KB of the books valid text, valid = the next 40 KB."""
    text = books_text(train_chars + valid_chars)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.txt").write_text(text[:train_chars], encoding="utf-8")
    (folder / "valid.txt").write_text(text[train_chars:], encoding="utf-8")
    return folder


def env() -> dict:
    return {**os.environ, "TIKTOKEN_CACHE_DIR": os.environ["TIKTOKEN_CACHE_DIR"],
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def main_cmd(*args) -> list[str]:
    return [sys.executable, str(REPO / "main.py"), *map(str, args)]


def run_main(*args, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(main_cmd(*args), cwd=REPO, env=env(), capture_output=True, text=True,
                          timeout=timeout)


# main.py runs forked from one server process that has imported main.py and torch._dynamo
# (which torch.optim imports on first use): together ~4.5 s of every fresh process, paid once
# a session instead of once a run. Each run is a process of its own, so its exit status,
# signals, stdout and stderr are a real process's. The child does what `python main.py` does:
# sys.exit(main()), an uncaught exception printing its traceback and exiting 1; given a
# script, it does what `python -c SCRIPT ARGS` does (for tests that patch main first). The
# server reaps its children and writes each one's exit status (Popen's returncode) to a file.
_FORK_SERVER = r"""
import json, os, select, signal, sys, traceback
sys.path.insert(0, sys.argv[1])
import main
import torch
import torch._dynamo


def run(request):
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    for fd, name in ((1, "stdout"), (2, "stderr")):
        os.dup2(os.open(request[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    argv, script = request["argv"], request["script"]
    torch.set_num_threads(request["threads"])
    sys.argv = ["-c" if script else "main.py", *argv]
    try:
        if script:
            exec(script, {"__name__": "__main__"})
            return 0
        return main.main(argv)
    except SystemExit as e:
        if not isinstance(e.code, int):
            return 0 if e.code is None else (print(e.code, file=sys.stderr) or 1)
        return e.code
    except BaseException:
        traceback.print_exc()
        return 1


status_files, listening = {}, True
while listening or status_files:
    if select.select([sys.stdin] if listening else [], [], [], 0.01)[0]:
        line = sys.stdin.readline()  # one request at a time: the client waits for its pid
        if not line:  # the session is over: nothing should still run
            listening = False
            for pid in status_files:
                os.kill(pid, signal.SIGKILL)
            continue
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:  # the child: it never comes back to this loop
            code = 1
            try:
                code = run(request)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        status_files[pid] = request["status"]
        print(pid, flush=True)
    while status_files:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if not pid:
            break
        path = status_files.pop(pid)
        with open(path + ".tmp", "w") as f:
            f.write(str(os.waitstatus_to_exitcode(status)))
        os.replace(path + ".tmp", path)
"""


class ForkedRun:
    """One run forked by the server, with the parts of subprocess.Popen the tests use."""

    def __init__(self, pid: int, files: dict[str, Path]):
        self.pid, self.files, self.returncode = pid, files, None

    def poll(self):
        if self.returncode is None and self.files["status"].exists():
            self.returncode = int(self.files["status"].read_text())
        return self.returncode

    def send_signal(self, sig) -> None:
        if self.poll() is None:  # never a pid the server has reaped (it may be reused)
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"main.py (forked, pid {self.pid})", timeout)
            time.sleep(0.01)
        return self.files["stdout"].read_text(), self.files["stderr"].read_text()


class _ForkServer:
    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="fork_server_"))
        self.process = subprocess.Popen([sys.executable, "-c", _FORK_SERVER, str(REPO)], cwd=REPO, env=env(),
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.runs = 0
        atexit.register(self.close)

    def start(self, argv: list[str], script: str | None, threads: int) -> ForkedRun:
        self.runs += 1
        files = {name: self.folder / f"{self.runs}.{name}" for name in ("stdout", "stderr", "status")}
        request = {"argv": argv, "script": script, "threads": threads,
                   **{name: str(path) for name, path in files.items()}}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        reply = self.process.stdout.readline()
        assert reply, f"the fork server exited with status {self.process.wait()}"
        return ForkedRun(int(reply), files)

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=60)
        shutil.rmtree(self.folder, ignore_errors=True)


_fork_server: list = []


def fork_server() -> _ForkServer:
    """The session's fork server, started on first use (its imports take ~5 s)."""
    if not _fork_server:
        _fork_server.append(_ForkServer())
    return _fork_server[0]


def fork_main(*args, script: str | None = None, threads: int = 1) -> ForkedRun:
    """`python main.py ARGS` (or `python -c SCRIPT ARGS`), forked from the warm server, on
    `threads` CPU threads."""
    return fork_server().start([str(a) for a in args], script, threads)


def run_forked(*args, script: str | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """fork_main, waited for: subprocess.run's result (a run past the timeout is killed)."""
    run = fork_main(*args, script=script)
    try:
        out, err = run.communicate(timeout)
    except subprocess.TimeoutExpired:
        run.kill()
        run.communicate()
        raise
    return subprocess.CompletedProcess(args, run.returncode, out, err)


def run_args(data: Path, out: Path, *extra) -> list[str]:
    return ["--data-dir", data, "--cache-dir", data / "cache", "--out", out, *RUN, *extra]


def read_log(path: Path) -> dict:
    return json.loads(path.read_text())


def without_timing(curve: list[dict]) -> list[dict]:
    """Curve points minus train_seconds, the only field that depends on the wall clock."""
    return [{k: v for k, v in point.items() if k != "train_seconds"} for point in curve]


_reference: dict = {}


def reference_run(tmp_path_factory) -> dict:
    """One uninterrupted run of RUN, shared by every test that needs it (done once per session):
    `python main.py` itself, so the forked runs whose curves must equal its curve are checked
    against a fresh process's. Returns {'data': folder, 'out': folder, 'log': parsed log,
    'result': CompletedProcess}."""
    if not _reference:
        fork_server()  # its imports overlap this run, for the tests that fork runs after it
        root = tmp_path_factory.mktemp("reference")
        data = write_small_data(root / "data")
        out = root / "runs"
        result = run_main(*run_args(data, out))
        assert result.returncode == 0, result.stderr
        _reference.update(data=data, out=out, result=result, log=read_log(out / "tiny.json"))
    return _reference


def assert_one_line_bad_input(main_module, argv, needle, capsys) -> None:
    """main.main(argv) exits 2 with one stderr line naming `needle` and prints nothing else."""
    try:
        status = main_module.main(["--device", "cpu", *argv])
    except SystemExit as e:  # argparse's errors (OneLineParser exits 2)
        status = e.code
    captured = capsys.readouterr()
    assert status == main_module.EXIT_BAD_INPUT
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], captured.err
    assert captured.out == ""
