"""What a new user meets first: --help of every tool (a help text and one default for every
flag), the default output folders (git-ignored), the refusal of an hours-long CPU run, the
offline and tokenizer errors, the tokenizing message, and a run stopped mid-step."""
from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
import torch

import trainer_support as ts

import config  # noqa: E402
import coord_check_gpt  # noqa: E402
import data  # noqa: E402
import grid  # noqa: E402
import main  # noqa: E402
import unit_scale_check_gpt  # noqa: E402

PARSERS = {"main.py": config.build_parser, "grid.py": grid.build_parser,
           "coord_check_gpt.py": coord_check_gpt.build_parser,
           "unit_scale_check_gpt.py": unit_scale_check_gpt.build_parser}


# ----------------------------------------------------------------------------------------
# --help
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("tool", sorted(PARSERS))
def test_every_flag_has_help_and_shows_its_default_once(tool):
    parser = PARSERS[tool]()
    formatter = parser._get_formatter()
    flags = [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]
    assert flags
    for action in flags:
        name = action.option_strings[-1]
        assert action.help and action.help.strip(), f"{tool} {name}: no help text"
        shown = formatter._expand_help(action)
        assert shown.count("(default") == 1, f"{tool} {name}: {shown!r}"
        assert "(default: None)" not in shown, f"{tool} {name}: say what None means"
    page = " ".join(parser.format_help().split())  # as printed, line wrapping undone
    assert page.count("(default") == len(flags)


def test_preset_help_states_exactly_what_the_preset_sets():
    """The --preset help lists flag-value pairs: typed as shown, they give the preset's values."""
    help_text = next(a.help for a in config.build_parser()._actions if "--preset" in a.option_strings)
    for name, settings in config.PRESETS.items():
        listed = re.search(rf"{name} sets ((?:--[a-z-]+ \S+ ?)+)", help_text).group(1).split()
        pairs = dict(zip(listed[::2], listed[1::2]))
        assert sorted(pairs) == sorted("--" + key.replace("_", "-") for key in settings)
        preset = config.parse_args(["--preset", name])
        for flag, value in pairs.items():
            key = flag[2:].replace("-", "_")
            assert getattr(config.parse_args([flag, value]), key) == getattr(preset, key) == settings[key]


# ----------------------------------------------------------------------------------------
# Default output folders
# ----------------------------------------------------------------------------------------

def default_out_folders() -> dict:
    return {"main.py": config.build_parser().get_default("out"),
            "grid.py": grid.build_parser().get_default("out"),
            "coord_check_gpt.py": coord_check_gpt.build_parser().get_default("out")}


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_default_output_folders_are_git_ignored():
    for tool, folder in default_out_folders().items():
        relative = config.REPO.joinpath(folder).relative_to(config.REPO)  # inside the repository
        assert relative.parts[0] == "out", tool
        for name in ("run.json", "run.ckpt", "logs/run.log", "manifest.json", "coord_check.png"):
            path = relative / name
            result = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=config.REPO)
            assert result.returncode == 0, f"{tool} writes {path}, which git does not ignore"
    tracked = subprocess.run(["git", "check-ignore", "-q", "runs/README.md"], cwd=config.REPO)
    assert tracked.returncode == 1  # the committed study logs stay visible to git


@ts.needs_data
def test_prepare_data_fills_the_token_cache_and_trains_nothing(tmp_path, capsys):
    """--prepare-data tokenizes every split into the cache and exits: no run log, and a run on
    the same data then reads the cache (its tokens equal a fresh tokenization's)."""
    folder = ts.write_small_data(tmp_path / "data", train_chars=50_000, valid_chars=20_000)
    flags = ["--device", "cpu", "--data-dir", str(folder), "--cache-dir", str(tmp_path / "cache"),
             "--out", str(tmp_path / "out")]
    assert main.main(flags + ["--prepare-data"]) == 0  # the default model: not refused, it trains nothing
    assert "tokenizing" in capsys.readouterr().out
    assert len(list((tmp_path / "cache").iterdir())) == 2 and not (tmp_path / "out").exists()
    cached = main.load_data(main.resolve(main.parse_args(flags)))
    assert "tokenizing" not in capsys.readouterr().out
    assert np.array_equal(cached["train"], data.tokenize((folder / "train.txt").read_text()))


# ----------------------------------------------------------------------------------------
# An hours-long CPU run is refused
# ----------------------------------------------------------------------------------------

def test_the_default_model_on_a_cpu_is_refused_in_one_line(capsys):
    # hlb-gpt's default run: 46.0M parameters x at least 1000 steps of 57,236 tokens, at
    # 1e10 parameter-tokens/s: 2.64e5 s, about 3 days.
    args = main.resolve(main.parse_args(["--device", "cpu"]))
    days = args.n_params * 1000 * 57_236 / 1e10 / 86_400
    assert round(days) == 3
    ts.assert_one_line_bad_input(main, [], "would take about 3 days on a CPU: use --preset cpu-small", capsys)
    assert main.main(["--device", "cpu", "--show-lr-table"]) == 0  # only training is refused
    config.refuse_slow_cpu_run(main.resolve(main.parse_args(["--device", "cpu", "--allow-slow-cpu"])))
    config.refuse_slow_cpu_run(main.resolve(main.parse_args(["--device", "cpu", "--preset", "cpu-small"])))
    config.refuse_slow_cpu_run(main.resolve(main.parse_args(ts.TINY + ["--total-tokens", "12288"])))
    # The default model over a short run is not refused: the estimate counts the run's tokens.
    short = ["--device", "cpu", "--warmup-tokens", "50K", "--total-tokens"]
    config.refuse_slow_cpu_run(main.resolve(main.parse_args(short + ["500K"])))  # 46.0M x 500K: 38 min
    with pytest.raises(config.ConfigError, match="about 8 hours"):  # 46.0M x 6M tokens / 1e10 per s
        config.refuse_slow_cpu_run(main.resolve(main.parse_args(short + ["6M"])))


# ----------------------------------------------------------------------------------------
# Data: what the log names, the offline error, the tokenizer error, the tokenizing message
# ----------------------------------------------------------------------------------------

def test_config_data_names_what_the_run_trains_on():
    resolved = lambda *argv: config.resolve_flags(config.parse_args(["--device", "cpu", *argv]))
    assert resolved().data == "wikitext-103"
    assert resolved("--data", "wikitext-2").data == "wikitext-2"
    assert resolved("--data-dir", "../shared/data/books").data == "../shared/data/books"
    with pytest.raises(config.ConfigError, match="--data wikitext-2 and --data-dir books both"):
        resolved("--data", "wikitext-2", "--data-dir", "books")


def test_offline_the_download_fails_at_once_naming_the_offline_way(tmp_path, monkeypatch):
    def no_network(address, timeout):
        raise OSError("Temporary failure in name resolution")
    monkeypatch.setattr(data.socket, "create_connection", no_network)
    started = time.monotonic()
    with pytest.raises(config.ConfigError) as error:
        data.download_wikitext("wikitext-103", tmp_path)
    assert time.monotonic() - started < 1
    message = str(error.value)
    assert message.startswith("cannot download wikitext-103: no network (huggingface.co and "
                              "wikitext.smerity.com did not answer); offline, ")
    for words in ("--data-dir ../shared/data/books", "--preset cpu-small",
                  "TIKTOKEN_CACHE_DIR=../shared/data/tiktoken"):
        assert words in message
    assert "\n" not in message and not list(tmp_path.iterdir())  # nothing written


def test_the_tokenizer_error_names_tiktoken_cache_dir_not_data_dir(monkeypatch):
    import tiktoken

    def offline(name):
        raise ConnectionError("no network")
    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "/nowhere")
    with pytest.raises(config.ConfigError) as error:
        data.get_tokenizer()
    assert str(error.value) == (
        "cannot load the gpt2 tokenizer (ConnectionError): its files are not in "
        "TIKTOKEN_CACHE_DIR=/nowhere and could not be downloaded; set TIKTOKEN_CACHE_DIR to a "
        "folder holding tiktoken's gpt2 files (e.g. TIKTOKEN_CACHE_DIR=../shared/data/tiktoken)")
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR")
    with pytest.raises(config.ConfigError, match=r"\(ConnectionError\): its files could not be downloaded; "):
        data.get_tokenizer()


def test_tokenizing_says_so_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(data, "tokenize", lambda text: np.arange(len(text.split()), dtype=np.uint16))
    text = "word " * 2_500_000
    first = data.cached_tokens(b"key", lambda: text, tmp_path, "books/train.txt")
    assert capsys.readouterr().out == (f"tokenizing books/train.txt, 12M characters (once: the tokens "
                                       f"are cached in {tmp_path})\n")
    again = data.cached_tokens(b"key", lambda: text, tmp_path, "books/train.txt")
    assert capsys.readouterr().out == "" and np.array_equal(first, again)


# ----------------------------------------------------------------------------------------
# A signal mid-step: the run stops before the step ends, and resumes to the same curve
# ----------------------------------------------------------------------------------------

def tiny_trainer(out, *extra) -> main.Trainer:
    argv = ts.TINY + ["--lr", "0.05", "--microbatches", "2", "--total-tokens", "2048",
                      "--eval-every-tokens", "1024", "--checkpoint-every-tokens", "0", "--out", str(out),
                      "--run-name", "tiny", *extra]
    trainer = main.Trainer(main.resolve(main.parse_args(argv)), ts.uniform_tokens(1 << 14, 1 << 12))
    trainer.chunk_tokens = 256  # one chunk a microbatch, whatever the RAM free (fastpath.memory_chunk_tokens)
    return trainer


def test_a_signal_mid_step_stops_at_once_and_resume_gives_the_same_curve(tmp_path, one_thread):
    reference = tiny_trainer(tmp_path / "reference")
    assert reference.run([]) == main.EXIT_COMPLETED  # 4 steps of 2 x 256 tokens
    assert [p["tokens"] for p in reference.log["curve"]] == [0, 1024, 2048]

    trainer = tiny_trainer(tmp_path / "stopped")
    stop, chunks, loss_fn = [], [], trainer.loss_fn

    def signal_in_step_3(*args):  # SIGTERM after the first microbatch of the third step
        chunks.append(trainer.step)
        if trainer.step == 2 and chunks.count(2) == 1:
            stop.append(signal.SIGTERM)
        return loss_fn(*args)
    trainer.loss_fn = signal_in_step_3
    assert trainer.run(stop) == main.EXIT_SIGNAL[signal.SIGTERM]
    assert chunks == [0, 0, 1, 1, 2]  # the second microbatch of step 3 never ran
    log = json.loads((tmp_path / "stopped" / "tiny.json").read_text())
    summary = log["summary"]
    assert (log["status"], summary["steps"], summary["tokens"]) == ("interrupted", 2, 1024)
    assert summary["final_eval"] is None  # the run did not reach its end
    assert summary["last_eval"] == {"tokens": 1024, "step": 2, "eval": log["curve"][-1]["eval"]}
    assert log["curve"][-1]["tokens"] == 1024

    resumed = tiny_trainer(tmp_path / "stopped", "--resume")
    main.load_checkpoint(resumed.checkpoint_path, resumed.load_state_dict, "cpu")
    assert (resumed.step, resumed.tokens) == (2, 1024)
    assert resumed.run([]) == main.EXIT_COMPLETED
    assert ts.without_timing(resumed.log["curve"]) == ts.without_timing(reference.log["curve"])
    assert resumed.log["summary"]["final_eval"] == reference.log["curve"][-1]["eval"]
