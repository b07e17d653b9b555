"""Shared helpers for tests/test_trainer.py and tests/test_reliability.py.

Real data comes from ../shared/data (beside the repository); tests that need it skip cleanly
when it is absent. Each test writes its own small data folder (the first ~300 KB of the books
validation text as train, a slice after it as valid), so it never depends on the project's
token cache. Training runs go through `python main.py` in a subprocess with one CPU thread:
the 2-core test machine is shared, and with one thread a tiny run is several times faster
there and its arithmetic does not depend on the thread count.
"""
from __future__ import annotations

import json
import lzma
import os
import subprocess
import sys
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


def start_main(*args) -> subprocess.Popen:
    return subprocess.Popen(main_cmd(*args), cwd=REPO, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


# Runs main.main(argv) for many argument lists, each in a process of its own forked from one
# that has imported main.py once: the exit status and stderr are a real process's, without
# paying ~2 s of `import torch` per case. The child does what `python main.py` does:
# sys.exit(main()), an uncaught exception printing its traceback and exiting 1.
_FORK_RUNNER = r"""
import json, os, sys, traceback
sys.path.insert(0, sys.argv[1])
import main
results = {}
for name, (argv, out_path, err_path) in json.load(sys.stdin).items():
    pid = os.fork()
    if pid == 0:
        os.dup2(os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 1)
        os.dup2(os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
        sys.argv = ["main.py", *argv]
        try:
            code = main.main(argv)
        except SystemExit as e:
            code = e.code
            if not isinstance(code, int):
                code = 0 if code is None else (print(code, file=sys.stderr) or 1)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    results[name] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
json.dump(results, sys.stdout)
"""


def run_main_forked(cases: dict[str, list], scratch: Path) -> dict[str, tuple[int, str, str]]:
    """{name: argv} -> {name: (exit status, stdout, stderr)}, each case in its own process."""
    scratch.mkdir(parents=True, exist_ok=True)
    spec = {name: ([str(a) for a in argv], str(scratch / f"{i}.out"), str(scratch / f"{i}.err"))
            for i, (name, argv) in enumerate(cases.items())}
    result = subprocess.run([sys.executable, "-c", _FORK_RUNNER, str(REPO)], input=json.dumps(spec),
                            cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    codes = json.loads(result.stdout)
    return {name: (codes[name], Path(out).read_text(), Path(err).read_text())
            for name, (_, out, err) in spec.items()}


def run_args(data: Path, out: Path, *extra) -> list[str]:
    return ["--data-dir", data, "--cache-dir", data / "cache", "--out", out, *RUN, *extra]


def read_log(path: Path) -> dict:
    return json.loads(path.read_text())


def without_timing(curve: list[dict]) -> list[dict]:
    """Curve points minus train_seconds, the only field that depends on the wall clock."""
    return [{k: v for k, v in point.items() if k != "train_seconds"} for point in curve]


_reference: dict = {}


def reference_run(tmp_path_factory) -> dict:
    """One uninterrupted run of RUN, shared by every test that needs it (done once per session).
    Returns {'data': folder, 'out': folder, 'log': parsed log, 'result': CompletedProcess}."""
    if not _reference:
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
