"""The trainer's contract: model size, schedules, microbatching, eval windows, the
token cache, tokenization, atomic run logs, the run log's schema, and bad-input exits."""
from __future__ import annotations

import io
import json
import math
import os
import platform
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import trainer_support as ts
from trainer_support import needs_data

import checkpoint  # noqa: E402  (trainer_support puts the repository on sys.path)
import data as data_module  # noqa: E402  (data: a common local name here)
import main  # noqa: E402
import runlog  # noqa: E402


# ----------------------------------------------------------------------------------------
# Model size
# ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_default_model_has_46m_parameters():
    """hlb-gpt's count at model_scale 1: per block the fused expand matrix (2*48 q/k + 2*768
    GeGLU rows by 384), the 384x768 project matrix, a 384-wide norm and one position-bias
    scalar; plus untied embedding and readout (50304x384 each) and the final norm."""
    args = main.resolve(main.parse_args(["--device", "cpu"]))
    assert (args.width, args.depth, args.qk_dim) == (384, 8, 48)
    with torch.device("meta"):
        model = main.GPT(main.model_config(args))
    assert all(p.is_meta for p in model.parameters())  # nothing allocated
    per_block = (2 * 48 + 2 * 768) * 384 + 384 * 768 + 384 + 1
    expected = 8 * per_block + 2 * 50304 * 384 + 384
    assert expected == 46_009_736
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == expected
    assert f"{n_params / 1e6:.1f}M" == "46.0M"
    # The lr law sees the same count: 9e7 / ln(P)^8.8 * 2.62 = 2.53e-3 (README).
    assert main.hlb_base_lr(n_params) == pytest.approx(2.53e-3, rel=2e-3)


# ----------------------------------------------------------------------------------------
# Schedules, on the step-equivalent clock t = tokens / batch_tokens
# ----------------------------------------------------------------------------------------

B = 1000          # batch_tokens
W = 100 * B       # warmup_tokens: w = 100 step-equivalents


@pytest.mark.parametrize("schedule, tokens, warmup, batch, expected", [
    # base: 0.02 + 0.98 t/w during warmup, 1 at the peak, (t - w + 1)^-0.08 after
    ("base", 0, W, B, 0.02),
    ("base", 25 * B, W, B, 0.265),                # 0.02 + 0.98 * 25/100
    ("base", 50 * B, W, B, 0.51),                 # mid-warmup
    ("base", 99 * B, W, B, 0.9902),               # 0.02 + 0.98 * 0.99
    ("base", 99_500, W, B, 0.9951),               # fractional step-equivalent t = 99.5
    ("base", W, W, B, 1.0),                       # the peak: (0 + 1)^-0.08
    ("base", W + 9 * B, W, B, 0.8317637711026709),    # 10^-0.08
    ("base", W + 999 * B, W, B, 0.5754399373371567),  # 1000^-0.08: 0.58x at t - w = 999
    ("base", 50 * B, W, 2 * B, 0.51),             # the clock is tokens/batch: t = 25, w = 50
    ("base", 50 * B, W, B // 2, 0.51),            # t = 100 but w = 200: mid-warmup
    ("base", 0, 0, B, 1.0),                       # no warmup: full rate from the first step
    ("base", 3 * B, 0, B, 0.8950250709279725),    # 4^-0.08
    # output (hlb readout group) under --warmup-groups hlb: (t + 1)^-0.2, no warmup
    ("output", 0, W, B, 1.0),
    ("output", 3 * B, W, B, 0.7578582832551990),  # 4^-0.2
    ("output", 99 * B, W, B, 0.3981071705534972),  # 100^-0.2
    ("output", 198 * B, W, 2 * B, 0.3981071705534972),  # same t = 99 at twice the batch
    # position_bias (hlb position-bias group) under --warmup-groups hlb: 0.995^t
    ("position_bias", 0, W, B, 1.0),
    ("position_bias", 100 * B, W, B, 0.6057704364907279),  # 0.995^100
    ("position_bias", 100 * B, W, 4 * B, 0.8822202429488013),  # 0.995^25
])
def test_lr_multiplier_at_chosen_points(schedule, tokens, warmup, batch, expected):
    assert main.lr_multiplier(schedule, tokens, warmup, batch, "hlb") == pytest.approx(expected, rel=1e-12)
    if schedule == "base":  # the base group warms up under either setting
        assert main.lr_multiplier(schedule, tokens, warmup, batch, "all") == main.lr_multiplier(
            schedule, tokens, warmup, batch, "hlb")


@pytest.mark.parametrize("schedule, tokens, warmup, expected", [
    # --warmup-groups all: every group rises 0.02 -> 1 over the warmup as base does, then
    # decays on its own law from the warmup's end (s = t - w)
    ("output", 0, W, 0.02),
    ("output", 50 * B, W, 0.51),
    ("output", W, W, 1.0),
    ("output", W + 3 * B, W, 0.7578582832551990),         # 4^-0.2
    ("position_bias", 0, W, 0.02),
    ("position_bias", 25 * B, W, 0.265),
    ("position_bias", W, W, 1.0),
    ("position_bias", W + 100 * B, W, 0.6057704364907279),  # 0.995^100
    ("output", 99 * B, 0, 0.3981071705534972),              # no warmup: the same as hlb's
    ("position_bias", 100 * B, 0, 0.6057704364907279),
])
def test_every_group_warms_up_under_warmup_groups_all(schedule, tokens, warmup, expected):
    assert main.lr_multiplier(schedule, tokens, warmup, B, "all") == pytest.approx(expected, rel=1e-12)


def test_warmup_groups_all_starts_every_group_at_the_warmup_start_and_raises_it():
    """Token 0 to the warmup's end: every group of both recipes starts at 0.02 of its lr and
    rises to its full lr; under hlb the readout and position-bias groups only fall."""
    for schedule in ("base", "output", "position_bias"):
        values = [main.lr_multiplier(schedule, t * B, W, B, "all") for t in range(101)]
        assert values[0] == 0.02 and values[-1] == 1.0
        assert all(a < b for a, b in zip(values, values[1:]))
    for schedule in ("output", "position_bias"):
        values = [main.lr_multiplier(schedule, t * B, W, B, "hlb") for t in range(101)]
        assert values[0] == 1.0 and all(a > b for a, b in zip(values, values[1:]))


def test_base_schedule_is_continuous_and_monotone_around_the_peak():
    before = main.lr_multiplier("base", W - 1, W, B, "all")
    assert before < 1.0 and before == pytest.approx(1.0, abs=1e-5)
    values = [main.lr_multiplier("base", t * B, W, B, "all") for t in range(0, 400)]
    peak = values.index(max(values))
    assert peak == 100 and values[peak] == 1.0
    assert all(a < b for a, b in zip(values[:peak], values[1:peak + 1]))
    assert all(a > b for a, b in zip(values[peak:], values[peak + 1:]))
    with pytest.raises(ValueError):
        main.lr_multiplier("cosine", 0, W, B, "all")


def test_sequence_length_warmup_on_the_token_clock():
    args = main.resolve(main.parse_args(["--device", "cpu", "--batch-tokens", "2000"]))
    # 32 doubling every 80 step-equivalents (160,000 tokens here), capped at 1024.
    tokens = (0, 159_999, 160_000, 320_000, 480_000, 799_999, 800_000, 10**9)
    assert [main.seq_len_at(t, args) for t in tokens] == [32, 32, 64, 128, 256, 512, 1024, 1024]


@needs_data
@pytest.mark.slow
def test_the_run_applies_each_groups_schedule(tmp_path_factory):
    """Every logged lr is the group's initial lr times its schedule at the tokens seen before
    that step (the step-equivalent clock), for the hlb recipe's three schedules."""
    ref = ts.reference_run(tmp_path_factory)
    args = main.resolve(main.parse_args([str(a) for a in ts.run_args(ref["data"], ref["out"])]))
    parametrization = main.make_parametrization(args)
    with torch.device("meta"):
        groups = parametrization.param_groups(main.GPT(main.model_config(args)))
    schedules = {g["name"]: (g["initial_lr"], g["schedule"]) for g in groups}
    assert {s for _, s in schedules.values()} == {"base", "output", "position_bias"}
    for point in ref["log"]["curve"][1:]:
        tokens_before = point["tokens"] - point["microbatches"] * point["batch_size"] * point["seq_len"]
        for name, lr in point["lr"].items():
            initial, schedule = schedules[name]
            expected = initial * main.lr_multiplier(schedule, tokens_before, 1024, 256, args.warmup_groups)
            assert lr == pytest.approx(expected, rel=1e-12), (point["step"], name)


def test_one_seed_draws_one_data_order_whatever_the_lr_and_warmup(tmp_path):
    """The protocol's pairing: with the batch fixed (--microbatches 1), runs of one seed see
    the same batches in the same order whatever --lr, --warmup-tokens and --warmup-groups (the
    sampler's generator depends on the seed alone, and the shapes on the token clock alone);
    another seed sees others. Under --warmup-groups all every group's first step runs at 0.02
    of its lr, the warmup's start."""
    data = ts.uniform_tokens(1 << 15, 1 << 10)
    runs = {"a": ("0.05", "1024", "all", "0"), "b": ("0.002", "0", "hlb", "0"), "c": ("0.05", "1024", "all", "1")}
    batches, first_lrs = {}, {}
    for name, (lr, warmup, groups, seed) in runs.items():
        args = main.resolve(main.parse_args(ts.TINY + [
            "--lr", lr, "--warmup-tokens", warmup, "--warmup-groups", groups, "--seed", seed,
            "--microbatches", "1", "--out", str(tmp_path), "--run-name", name]))
        trainer = main.Trainer(args, data)
        seen, draw = [], trainer.sampler.batch
        trainer.sampler.batch = lambda *shape: seen.append(draw(*shape)) or seen[-1]
        for step in range(5 if name != "c" else 1):  # 16-token sequences, then 32 from step 4
            trainer.train_step()
            first_lrs.setdefault(name, {g["name"]: g["lr"] / g["initial_lr"] for g in trainer.optimizer.param_groups})
        batches[name] = seen
    assert [x.shape[1] for x, _ in batches["a"]] == [16] * 4 + [32]
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb)
               for (xa, ya), (xb, yb) in zip(batches["a"], batches["b"], strict=True))
    assert not torch.equal(batches["a"][0][0], batches["c"][0][0])
    assert first_lrs["a"] == {"vector": 0.02, "hidden": 0.02, "scalar": 0.02, "readout": 0.02}
    assert first_lrs["b"] == {"vector": 1.0, "hidden": 1.0, "scalar": 1.0, "readout": 1.0}  # no warmup


# ----------------------------------------------------------------------------------------
# Microbatching
# ----------------------------------------------------------------------------------------

N = 1_000_000


def per_param_norm_for_ratio(scheduler, step, ratio):
    """The grad norm whose per-parameter norm is `ratio` times the target at `step`."""
    return ratio * scheduler.target(step) * math.sqrt(N)


def test_microbatch_target_is_hlb_power_law():
    s = main.MicrobatchScheduler(N, seed=0)
    log_p = math.log(N)
    for step in (0, 5, 100):
        assert s.target(step) == pytest.approx((log_p * N * (step + 0.01)) ** (-0.677 * log_p ** -0.2))
    assert s.target(0) > s.target(5) > s.target(100)


def test_microbatch_fraction_starts_at_zero_then_floor():
    s = main.MicrobatchScheduler(N, seed=0)
    assert (s.fraction, s.count) == (0.0, 1)
    s.update(0, per_param_norm_for_ratio(s, 0, 5.0))  # 0 * anything = 0, floored at 0.1
    assert s.fraction == 0.1 and s.count == 1
    s.update(5, per_param_norm_for_ratio(s, 5, 0.01))  # shrinking never goes below 0.1
    assert s.fraction == 0.1


def test_microbatch_fraction_grows_and_shrinks_with_the_ratio():
    s = main.MicrobatchScheduler(N, seed=0)
    s.fraction = 2.0
    s.update(10, per_param_norm_for_ratio(s, 10, 2.0))  # 2 * (1 + 5*0.1*(2-1)) = 3
    assert s.fraction == pytest.approx(3.0) and s.count == 3
    s.update(15, per_param_norm_for_ratio(s, 15, 1.0))  # at the target: unchanged
    assert s.fraction == pytest.approx(3.0)
    s.update(20, per_param_norm_for_ratio(s, 20, 0.5))  # 3 * (1 - 0.25) = 2.25
    assert s.fraction == pytest.approx(2.25) and s.count in (2, 3)


def test_microbatch_dithering_draws_come_from_its_own_generator():
    seed = 7
    s = main.MicrobatchScheduler(N, seed=seed)
    s.fraction = 1.3
    twin = torch.Generator().manual_seed(seed + 1)  # the scheduler's documented seed
    global_rng = torch.get_rng_state()
    counts = []
    for i in range(400):
        step = 5 * (i + 1)
        s.update(step, per_param_norm_for_ratio(s, step, 1.0))
        frac = s.fraction % 1
        draw = torch.bernoulli(torch.tensor(frac, dtype=torch.float64), generator=twin).item()
        assert s.count == int(s.fraction // 1 + draw)
        counts.append(s.count)
    assert torch.equal(torch.get_rng_state(), global_rng)  # the global RNG is untouched
    assert set(counts) == {1, 2}
    assert np.mean(counts) == pytest.approx(1.3, abs=0.07)  # the count's mean is the fraction


def test_microbatch_state_dict_round_trip():
    a = main.MicrobatchScheduler(N, seed=3)
    a.fraction = 1.5
    for step in range(0, 50, 5):
        a.update(step, per_param_norm_for_ratio(a, step, 1.0 + step / 100))
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)  # as in a checkpoint
    b = main.MicrobatchScheduler(N, seed=99)
    b.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=False))
    assert (b.fraction, b.count) == (a.fraction, a.count)
    for step in range(50, 300, 5):
        norm = per_param_norm_for_ratio(a, step, 1.0)
        a.update(step, norm)
        b.update(step, norm)
        assert (b.fraction, b.count) == (a.fraction, a.count)


def test_fixed_microbatches_never_move():
    s = main.MicrobatchScheduler(N, seed=0, fixed=3)
    for step in range(0, 200, 5):
        s.update(step, per_param_norm_for_ratio(s, step, 10.0 if step < 100 else 0.01))
        assert s.count == 3 and s.grad_norm is not None  # still sampled, for the log
    s.load_state_dict(main.MicrobatchScheduler(N, seed=0).state_dict())  # a dynamic run's checkpoint
    assert s.count == 3


@pytest.mark.slow
def test_fixed_microbatches_hold_every_step_of_a_run(tmp_path):
    """--microbatches 3: every step takes three microbatches (tokens advance by 3 x 256),
    where the dynamic rule, on the same tokens and settings, moves the count."""
    data = ts.uniform_tokens(1 << 16, 1 << 12)
    counts = {}
    # The dynamic rule first moves the count after about 30 steps here; ten fixed steps suffice.
    for microbatches, steps in (("3", 10), ("dynamic", 40)):
        args = main.resolve(main.parse_args(ts.TINY + ["--lr", "0.05", "--total-tokens", "100000",
                                                       "--microbatches", microbatches, "--out", str(tmp_path)]))
        trainer = main.Trainer(args, data)
        counts[microbatches] = []
        for step in range(steps):
            tokens = trainer.tokens
            trainer.train_step()
            counts[microbatches].append(trainer.last["microbatches"])
            assert trainer.tokens - tokens == trainer.last["microbatches"] * 256
    assert counts["3"] == [3] * 10
    assert len(set(counts["dynamic"])) > 1


# ----------------------------------------------------------------------------------------
# Sampling and eval windows
# ----------------------------------------------------------------------------------------

def test_eval_windows_are_fixed_and_evenly_spread():
    tokens = torch.arange(10_001, dtype=torch.int32)
    inputs, targets = main.eval_windows(tokens, 640, 64)
    again_inputs, again_targets = main.eval_windows(tokens, 640, 64)
    assert torch.equal(inputs, again_inputs) and torch.equal(targets, again_targets)
    assert inputs.shape == targets.shape == (10, 64) and inputs.dtype == torch.long
    assert torch.equal(targets, inputs + 1)  # targets are the next tokens
    starts = inputs[:, 0]
    assert starts[0] == 0 and starts[-1] + 64 == len(tokens) - 1  # first and last windows
    gaps = starts.diff()
    assert gaps.max() - gaps.min() <= 1 and gaps.min() >= 64  # even, non-overlapping
    # Asking for more tokens than the split holds gives every whole window, all in range.
    inputs, targets = main.eval_windows(tokens[:1000], 10**6, 64)
    assert inputs.shape == (15, 64) and targets.max() <= 999


def test_train_sampler_is_reproducible_from_its_generator_state():
    tokens = torch.arange(5000, dtype=torch.int32)
    a, b = main.TrainSampler(tokens, seed=1), main.TrainSampler(tokens, seed=1)
    for _ in range(3):
        (xa, ya), (xb, yb) = a.batch(8, 32), b.batch(8, 32)
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(ya, xa + 1)
    state = a.generator.get_state()
    expected = a.batch(8, 32)[0]
    c = main.TrainSampler(tokens, seed=2)
    c.generator.set_state(state)
    assert torch.equal(c.batch(8, 32)[0], expected)


# ----------------------------------------------------------------------------------------
# Token cache and tokenization
# ----------------------------------------------------------------------------------------

@pytest.fixture
def counted_tokenize(monkeypatch):
    calls = []
    real = data_module.tokenize

    def counting(text):
        calls.append(len(text))
        return real(text)
    monkeypatch.setattr(data_module, "tokenize", counting)
    return calls


@needs_data
def test_token_cache_is_reused(tmp_path, counted_tokenize):
    text = ts.books_text(60_000)
    source = tmp_path / "valid.txt"
    source.write_text(text, encoding="utf-8")
    cache = tmp_path / "cache"
    first = data_module.file_tokens(source, cache)
    assert len(counted_tokenize) == 1 and len(list(cache.glob("tokens-*.npy"))) == 1
    second = data_module.file_tokens(source, cache)
    assert len(counted_tokenize) == 1  # read back, not re-tokenized
    assert np.array_equal(first, second) and second.dtype == np.uint16
    # load_data reads through the same cache.
    (tmp_path / "data").mkdir()
    for split in ("train", "valid"):
        (tmp_path / "data" / f"{split}.txt").write_text(text, encoding="utf-8")
    args = main.resolve(main.parse_args(["--data-dir", str(tmp_path / "data"), "--cache-dir", str(cache),
                                         "--max-seq-len", "64", "--device", "cpu"]))
    data = main.load_data(args)
    assert len(counted_tokenize) == 1 and np.array_equal(data["train"], first)


@needs_data
def test_token_cache_is_invalidated_by_new_content(tmp_path, counted_tokenize):
    source = tmp_path / "valid.txt"
    cache = tmp_path / "cache"
    source.write_text(ts.books_text(60_000), encoding="utf-8")
    before = data_module.file_tokens(source, cache)
    source.write_text(ts.books_text(60_000).replace("the", "a"), encoding="utf-8")
    after = data_module.file_tokens(source, cache)
    assert len(counted_tokenize) == 2
    assert len(list(cache.glob("tokens-*.npy"))) == 2  # a new entry beside the old one
    assert not np.array_equal(before, after)
    assert np.array_equal(after, data_module.tokenize(source.read_text(encoding="utf-8")))


@needs_data
@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_token_cache_is_rebuilt_with_a_warning(tmp_path, counted_tokenize, capsys, damage):
    source = tmp_path / "valid.txt"
    cache = tmp_path / "cache"
    source.write_text(ts.books_text(60_000), encoding="utf-8")
    good = data_module.file_tokens(source, cache)
    (entry,) = cache.glob("tokens-*.npy")
    raw = entry.read_bytes()
    entry.write_bytes({"truncated": raw[: len(raw) // 2], "garbage": os.urandom(4096),
                       "empty": b""}[damage])
    capsys.readouterr()
    rebuilt = data_module.file_tokens(source, cache)
    err = capsys.readouterr().err
    assert "warning: token cache" in err and "corrupt" in err and "rebuilding" in err
    assert len(counted_tokenize) == 2
    assert np.array_equal(rebuilt, good)
    assert np.array_equal(np.load(entry), good)  # the entry is repaired on disk


@needs_data
@pytest.mark.slow
def test_tokenize_equals_encode_ordinary_on_real_text():
    """tokenize() cuts texts over 1 MiB into chunks encoded in parallel; the cuts must not
    change a single token. Real texts with many newlines (the books text separates every
    paragraph with a blank line), cut several times."""
    import tiktoken
    encoder = tiktoken.get_encoding("gpt2")
    books = ts.books_text(3_500_000)
    wiki = ts.WIKI_VALID.read_text(encoding="utf-8")
    for text in (books, wiki[:1_200_000] + books[:1_200_000]):
        assert len(text) > 2 * (1 << 20) and text.count("\n") > 10_000
        expected = np.array(encoder.encode_ordinary(text), dtype=np.uint16)
        assert np.array_equal(data_module.tokenize(text), expected)


@needs_data
@pytest.mark.slow
def test_tokenize_equals_encode_ordinary_on_whitespace_heavy_text():
    """A synthetic text where every possible cut point sits next to runs of spaces, blank
    lines, tabs and unusual whitespace (the chunk boundary is where tokenizers go wrong)."""
    import random
    import tiktoken
    encoder = tiktoken.get_encoding("gpt2")
    rng = random.Random(0)
    pieces = ["word", "Word", " ", "  ", "\n", "\n\n", " \n", "\n ", "\t", "'s", "!", "12",
              "é", "\u3000", "\u00a0", "\x1c", "...", "'", "\r\n"]
    text = "".join(rng.choice(pieces) for _ in range(1_300_000))
    assert len(text) > 2 * (1 << 20)
    expected = np.array(encoder.encode_ordinary(text), dtype=np.uint16)
    assert np.array_equal(data_module.tokenize(text), expected)


# ----------------------------------------------------------------------------------------
# Atomic JSON
# ----------------------------------------------------------------------------------------

def test_json_is_written_and_read_back(tmp_path):
    path = tmp_path / "sub" / "run.json"
    obj = {"status": "running", "curve": [{"tokens": 0, "eval": {"valid": {"loss": 10.9}}}],
           "summary": {}, "name": "µP"}
    runlog.write_json(path, obj)
    assert json.loads(path.read_text()) == obj
    obj["status"] = "completed"
    runlog.write_json(path, obj)
    assert json.loads(path.read_text()) == obj
    assert [p.name for p in path.parent.iterdir()] == ["run.json"]  # no temporary left


@pytest.mark.parametrize("crash_in", ["replace", "fsync", "write"])
def test_json_is_never_left_truncated(tmp_path, monkeypatch, crash_in):
    """A crash between writing the temporary file and renaming it (or during the write)
    leaves the previous log intact, byte for byte."""
    path = tmp_path / "run.json"
    runlog.write_json(path, {"status": "running", "curve": [1, 2, 3]})
    old = path.read_bytes()

    class Crash(BaseException):
        pass

    def crash(*args, **kwargs):
        raise Crash
    with monkeypatch.context() as m:
        if crash_in == "write":  # half the data reaches the temporary file, then the crash
            real_open = open

            class HalfWriter:
                def __init__(self, f):
                    self.f = f

                def write(self, data):
                    self.f.write(data[: len(data) // 2])
                    self.f.flush()
                    raise Crash

                def __getattr__(self, name):
                    return getattr(self.f, name)

                def __enter__(self):
                    return self

                def __exit__(self, *exc):
                    self.f.close()
            m.setattr("builtins.open", lambda *a, **k: HalfWriter(real_open(*a, **k)))
        else:
            m.setattr(runlog.os, crash_in, crash)
        with pytest.raises(Crash):
            runlog.write_json(path, {"status": "completed", "curve": list(range(10_000))})
    assert path.read_bytes() == old
    assert json.loads(old) == {"status": "running", "curve": [1, 2, 3]}


# ----------------------------------------------------------------------------------------
# A short real run's log
# ----------------------------------------------------------------------------------------

@needs_data
@pytest.mark.slow
def test_run_log_schema(tmp_path_factory):
    ref = ts.reference_run(tmp_path_factory)
    log = ref["log"]
    assert set(log) == {"schema_version", "run_name", "status", "command", "config", "env",
                        "eval_sets", "curve", "events", "summary"}
    assert log["schema_version"] == runlog.SCHEMA_VERSION == 1
    assert log["run_name"] == "tiny" and log["status"] == "completed"
    assert log["command"][1].endswith("main.py") and "--total-tokens" in log["command"]
    config = log["config"]
    for key, value in {"width": 32, "depth": 1, "qk_dim": 4, "warmup_tokens": 1024, "batch_tokens": 256,
                       "total_tokens": ts.TOTAL_TOKENS, "lr": 0.05, "lr_recipe": "hlb", "param": "sp",
                       "device": "cpu", "eval_every_tokens": 1024, "run_name": "tiny"}.items():
        assert config[key] == value, key
    assert config["n_params"] == 2 * 50304 * 32 + (2 * 4 + 2 * 64) * 32 + 32 * 64 + 32 + 1 + 32
    # Every optimizer group's settings before its schedule: hlb-gpt's multipliers of lr 0.05.
    assert config["warmup_groups"] == "all"
    assert config["param_groups"] == {
        "vector": {"lr": 32 * 0.05, "betas": [0.9, 0.95], "schedule": "base", "weight_decay_mult": 0.0},
        "hidden": {"lr": 0.05, "betas": [0.9, 0.95], "schedule": "base", "weight_decay_mult": 1.0},
        "scalar": {"lr": 100 * 0.05, "betas": [0.9, 0.95], "schedule": "position_bias", "weight_decay_mult": 0.0},
        "readout": {"lr": 2 * 0.05, "betas": [0.6, 0.95], "schedule": "output", "weight_decay_mult": 0.0}}
    env = log["env"]
    assert env["torch"] == torch.__version__ and env["python"] == platform.python_version()
    assert env["device"] == (platform.processor() or "cpu")
    assert isinstance(env["git_commit"], str) and env["git_commit"]
    assert env["git_commit"] == "unknown" or len(env["git_commit"].split("-")[0]) == 40
    assert env["hostname"] and env["started"]
    assert log["eval_sets"] == ["valid"]
    assert log["events"] == []

    curve = log["curve"]
    fields = {"tokens", "step", "train_seconds", "lr", "seq_len", "batch_size", "microbatches",
              "chunk_tokens", "grad_norm", "train_loss", "eval"}
    assert all(set(point) == fields for point in curve)
    # CPU: no OOM shrink, so the chunk stays what memory_chunk_tokens chose (at least a sequence)
    assert len({point["chunk_tokens"] for point in curve}) == 1 and curve[0]["chunk_tokens"] >= 64
    first = curve[0]  # at initialisation
    assert (first["tokens"], first["step"], first["train_seconds"], first["grad_norm"]) == (0, 0, 0, None)
    assert first["train_loss"] is None  # no training loss before the first step (strict JSON)
    assert first["eval"]["valid"]["loss"] == pytest.approx(math.log(50304), abs=0.5)
    args = main.resolve(main.parse_args([str(a) for a in ts.run_args(ref["data"], ref["out"])]))
    for i, point in enumerate(curve[1:], start=1):
        # An eval after the first step to reach each multiple of --eval-every-tokens, and at the end.
        step_tokens = point["microbatches"] * point["batch_size"] * point["seq_len"]
        tokens_before = point["tokens"] - step_tokens
        assert tokens_before < 1024 * i <= point["tokens"] or point is curve[-1]
        assert point["seq_len"] == main.seq_len_at(tokens_before, args)  # 16 -> 32 -> 64
        assert point["batch_size"] * point["seq_len"] == 256 and point["microbatches"] >= 1
        assert point["train_seconds"] > 0 and math.isfinite(point["train_loss"])
        assert point["grad_norm"] > 0
        assert set(point["lr"]) == {"hidden", "vector", "scalar", "readout"}
    assert [p["seq_len"] for p in curve[1:4]] == [16, 32, 64]
    assert max(p["microbatches"] for p in curve) > 1  # the dynamic microbatching acted
    assert curve[-1]["tokens"] >= ts.TOTAL_TOKENS > curve[-2]["tokens"]
    assert all(a["tokens"] < b["tokens"] and a["step"] < b["step"] and
               a["train_seconds"] <= b["train_seconds"] for a, b in zip(curve, curve[1:]))
    for point in curve:
        result = point["eval"]["valid"]
        assert set(result) == {"loss", "perplexity", "accuracy"}
        assert result["perplexity"] == pytest.approx(math.exp(result["loss"]))
        assert 0 <= result["accuracy"] <= 1
    assert curve[-1]["eval"]["valid"]["loss"] < curve[0]["eval"]["valid"]["loss"] - 2  # it learns

    summary = log["summary"]  # the documented keys (others, such as compile_seconds, may follow)
    documented = {"tokens": curve[-1]["tokens"], "steps": curve[-1]["step"],
                  "train_seconds": curve[-1]["train_seconds"], "final_eval": curve[-1]["eval"],
                  "last_eval": {"tokens": curve[-1]["tokens"], "step": curve[-1]["step"],
                                "eval": curve[-1]["eval"]},
                  "diverged_at": None}
    assert {key: summary.get(key) for key in documented} == documented
    assert not (ref["out"] / "tiny.ckpt").exists()  # a completed run deletes its checkpoint
    assert f"tiny: completed after {summary['steps']} steps" in ref["result"].stdout
    assert f"s of training; final valid loss {curve[-1]['eval']['valid']['loss']:.4f}\n" in ref["result"].stdout
    assert config["data"] == str(ref["data"])  # what it trained on, not the download default


@needs_data
@pytest.mark.slow
def test_log_is_rewritten_after_every_eval(tmp_path, monkeypatch):
    """In-process: after each eval the file on disk holds the curve so far."""
    data = ts.write_small_data(tmp_path / "data")
    argv = ts.run_args(data, tmp_path / "runs", "--total-tokens", "2048", "--eval-every-tokens", "512",
                       "--lr", "0.01")
    args = main.resolve(main.parse_args([str(a) for a in argv]))
    trainer = main.Trainer(args, main.load_data(args))
    on_disk = []
    real = trainer.record_eval

    def record_eval(*a):
        real(*a)
        on_disk.append(json.loads(trainer.log_path.read_text())["curve"])
        assert len(on_disk[-1]) == len(trainer.log["curve"])
    monkeypatch.setattr(trainer, "record_eval", record_eval)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert trainer.run([]) == 0
    finally:
        torch.set_num_threads(threads)
    assert [len(c) for c in on_disk] == [1, 2, 3, 4, 5]  # init + evals at 512..2048
    assert [c[-1]["tokens"] for c in on_disk] == [0, 512, 1024, 1536, 2048]


# ----------------------------------------------------------------------------------------
# Bad inputs: exit status 2 and one line on stderr naming the problem
# ----------------------------------------------------------------------------------------

def bad_input_cases(tmp: Path) -> dict:
    """name -> (argv, words the message must contain). Files are made under tmp."""
    good = ts.write_small_data(tmp / "good")
    missing_valid = tmp / "missing_valid"
    missing_valid.mkdir()
    (missing_valid / "train.txt").write_text("some text\n" * 100)
    empty = tmp / "empty"
    empty.mkdir()
    (empty / "train.txt").write_text("some text\n" * 100)
    (empty / "valid.txt").write_text("  \n\n")
    latin1 = tmp / "latin1"
    latin1.mkdir()
    (latin1 / "train.txt").write_bytes("Café crème, naïve façade.\n".encode("latin-1") * 50)
    (latin1 / "valid.txt").write_text("fine\n" * 100)
    common = ["--device", "cpu", "--preset", "cpu-small", "--quiet", "--out", str(tmp / "runs"),
              "--cache-dir", str(tmp / "cache")]
    data = ["--data-dir", str(good)] + common
    return {
        "unknown --data": (["--data", "pile"] + common, ["--data", "pile"]),
        "missing data folder": (["--data-dir", str(tmp / "nowhere")] + common, ["nowhere", "no such folder"]),
        "missing valid file": (["--data-dir", str(missing_valid)] + common, ["valid", "no file"]),
        "missing --eval-data file": (data + ["--eval-data", f"wiki={tmp / 'nope.raw'}"],
                                     ["nope.raw", "no such file"]),
        "empty file": (["--data-dir", str(empty)] + common, ["valid.txt", "empty"]),
        "non-UTF-8 file": (["--data-dir", str(latin1)] + common, ["train.txt", "UTF-8"]),
        "zero total tokens": (data + ["--total-tokens", "0"], ["--total-tokens", "'0'", "positive"]),
        "negative batch tokens": (data + ["--batch-tokens", "-256"], ["--batch-tokens", "positive"]),
        "infinite total tokens": (data + ["--total-tokens", "inf"], ["--total-tokens", "inf"]),
        "negative warmup": (data + ["--warmup-tokens", "-5"], ["--warmup-tokens", "negative"]),
        "nan learning rate": (data + ["--lr", "nan"], ["--lr", "nan"]),
        "warmup longer than the run": (data + ["--warmup-tokens", "5M", "--total-tokens", "1M"],
                                       ["--warmup-tokens", "5000000", "longer than the run"]),
        "width not a multiple of 8": (data + ["--width", "36"], ["--width 36", "multiple of 8"]),
        "GPU memory fraction over 1": (data + ["--gpu-memory-fraction", "1.5"],
                                       ["--gpu-memory-fraction 1.5", "outside (0, 1]"]),
        "zero microbatches": (data + ["--microbatches", "0"], ["--microbatches '0'", "whole number"]),
        "microbatches not a number": (data + ["--microbatches", "two"], ["--microbatches 'two'", "dynamic"]),
        "the default model on a CPU": (["--data-dir", str(good), "--device", "cpu"],
                                       ["would take about 3 days on a CPU", "--preset cpu-small",
                                        "--allow-slow-cpu"]),
        "--data with --data-dir": (data + ["--data", "wikitext-2"], ["--data wikitext-2 and --data-dir"]),
    }


CASE_NAMES = ["unknown --data", "missing data folder", "missing valid file", "missing --eval-data file",
              "empty file", "non-UTF-8 file", "zero total tokens", "negative batch tokens",
              "infinite total tokens", "negative warmup",
              "nan learning rate", "warmup longer than the run", "width not a multiple of 8",
              "GPU memory fraction over 1", "zero microbatches", "microbatches not a number",
              "the default model on a CPU", "--data with --data-dir"]


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    if not ts.BOOKS_VALID.is_file():
        pytest.skip("offline data not found")
    tmp = tmp_path_factory.mktemp("bad")
    cases = bad_input_cases(tmp)
    assert sorted(cases) == sorted(CASE_NAMES)
    return tmp, cases


@pytest.fixture(scope="module")
def bad_input_results(bad_inputs):
    """Every case in a process of its own (forked after one import of main.py and torch)."""
    _, cases = bad_inputs
    results = {name: ts.run_forked(*argv) for name, (argv, _) in cases.items()}
    return {name: (results[name].returncode, results[name].stdout, results[name].stderr, words)
            for name, (_, words) in cases.items()}


def check_one_line_error(returncode, out, err, words):
    assert returncode == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("main.py: error: ")
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "Traceback" not in err


@pytest.mark.parametrize("case", CASE_NAMES)
@pytest.mark.slow
def test_bad_input_exits_2_with_one_line(bad_input_results, case):
    check_one_line_error(*bad_input_results[case])


@pytest.mark.parametrize("case", ["unknown --data", "empty file"])
@pytest.mark.slow
def test_bad_input_through_the_command_line(bad_inputs, case):
    """The same, through `python main.py` itself: an argparse error and a data error."""
    tmp, cases = bad_inputs
    argv, words = cases[case]
    result = ts.run_main(*argv)
    check_one_line_error(result.returncode, result.stdout, result.stderr, words)


def test_git_commit_env_names_the_commit(monkeypatch):
    """$GIT_COMMIT wins over the local .git (stale on the GPU machine), in run logs and manifests."""
    import grid
    monkeypatch.setenv("GIT_COMMIT", "8f3bb0a")
    env = lambda: checkpoint.environment(main.resolve(main.parse_args(["--device", "cpu"])))
    assert env()["git_commit"] == "8f3bb0a"
    assert grid.git_state(checkpoint.REPO) == ("8f3bb0a", False)
    monkeypatch.delenv("GIT_COMMIT")
    assert env()["git_commit"] != "8f3bb0a"


@pytest.mark.slow
def test_progress_bar_counts_steps_without_a_token_total(tmp_path, capsys):
    """The default run length is --max-steps alone: the bar then counts steps towards it, so
    that it shows a total and an ETA."""
    argv = [a for a in ts.TINY if a != "--quiet"] + ["--max-steps", "3", "--out", str(tmp_path),
                                                    "--run-name", "bar"]
    trainer = main.Trainer(main.resolve(main.parse_args(argv)), ts.uniform_tokens(1 << 14, 1 << 12))
    assert trainer.args.total_tokens is None
    assert trainer.run([]) == 0
    log = json.loads((tmp_path / "bar.json").read_text())
    assert (log["status"], log["summary"]["steps"]) == ("completed", 3)
    bar = capsys.readouterr().err.split("\r")[-1]
    assert re.search(r"100%\|.*\| 3/3 \[\d\d:\d\d<00:00, .*(step/s|s/step)", bar), bar  # elapsed<remaining


def bf16_round(values: np.ndarray) -> np.ndarray:
    """Round-to-nearest-even to bf16's 8 significant bits, by hand (for integers < 2^15)."""
    out = np.zeros_like(values, dtype=np.float64)
    nonzero = values != 0
    spacing = 2.0 ** (np.floor(np.log2(np.abs(values[nonzero]))) - 7)
    out[nonzero] = np.round(values[nonzero] / spacing) * spacing  # np.round: half to even
    return out


def test_hlb_bf16_position_table_matches_a_hand_rounded_one():
    args = main.resolve(main.parse_args(["--device", "cpu", "--position-bias", "hlb-bf16"]))
    table = main.position_distances(main.model_config(args)).numpy()
    positions = bf16_round(np.arange(1024, dtype=np.float64) - 1023)
    expected = bf16_round(positions[None, :] - positions[:, None])
    assert np.array_equal(table, expected)
    assert table[0, :5].tolist() == [0, 0, 4, 4, 4]  # at the start neighbours share a bias
    assert table[1023, 1023 - 256:].tolist() == list(range(-256, 1))  # exact near the end
    exact = main.position_distances(main.model_config(main.resolve(main.parse_args(["--device", "cpu"]))))
    assert np.array_equal(exact.numpy(), np.arange(1024)[None, :] - np.arange(1024)[:, None])
    model = main.GPT(main.model_config(args))
    assert torch.equal(model.position_bias[0], torch.from_numpy(table))


def test_hlb_bf16_position_table_asks_for_the_plain_path_on_cuda(monkeypatch):
    monkeypatch.setattr(main.torch.cuda, "is_available", lambda: True)
    with pytest.raises(main.ConfigError, match="add --no-compile"):
        main.resolve(main.parse_args(["--device", "cuda", "--position-bias", "hlb-bf16"]))
    assert main.resolve(main.parse_args(["--device", "cuda", "--position-bias", "hlb-bf16",
                                         "--no-compile"])).position_bias == "hlb-bf16"


@needs_data
def test_wandb_without_the_package_is_one_line_bad_input(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    folder = ts.write_small_data(tmp_path / "data", train_chars=20_000, valid_chars=5_000)
    for split in ("train", "valid"):  # tokenized already: the run prints nothing before the error
        data_module.file_tokens(folder / f"{split}.txt", tmp_path / "cache")
    capsys.readouterr()
    argv = ts.TINY + ["--data-dir", str(folder), "--cache-dir", str(tmp_path / "cache"),
                      "--out", str(tmp_path / "runs"), "--wandb", "warmup"]
    ts.assert_one_line_bad_input(main, argv, "--wandb warmup: the wandb package is not installed", capsys)
    assert not (tmp_path / "runs").exists()  # nothing written
