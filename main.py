"""A single-file GPT trainer for studying learning-rate warmup under SP and µP.

Derived from hlb-gpt v0.4.1 (fused latent attention blocks, learnable linear position bias,
dynamic microbatching from the expected gradient norm, sequence-length warmup), extended
with token-based warmup schedules, a µP switch (rules in mup_patch/), JSON run logs,
checkpoints and resume.

Commands (offline data lives in ../shared/data; online users drop --data-dir):

    # the default 46M SP model, hlb-gpt's recipe, 1000 steps, books corpus + WikiText valid
    TIKTOKEN_CACHE_DIR=../shared/data/tiktoken python main.py \\
        --data-dir ../shared/data/books --eval-data wikitext=../shared/data/wikitext-103/wiki.valid.raw

    # the same under µP with a token-based warmup of 5M tokens
    python main.py --param mup --warmup-tokens 5e6 --data-dir ../shared/data/books

    # a small CPU run (about a minute on 2 cores)
    python main.py --preset cpu-small --data-dir ../shared/data/books

    # the parametrization as resolved, then exit
    python main.py --param mup --width 768 --show-lr-table

Sections: hyperparameters, data, model, schedules, microbatching and memory, run log and
checkpoints, training, evaluation, sampling.
"""
from __future__ import annotations

import argparse
import atexit
import datetime
import functools
import gc
import hashlib
import json
import lzma
import math
import os
import platform
import signal
import subprocess
import sys
import time
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Expandable segments: the caching allocator grows segments instead of carving fixed blocks,
# so memory freed at one sequence length fits the next one's shapes (without it an eager run
# capped at 38 GB ran out of memory on the first step at length 256, fragmented, not full).
# Read when CUDA first allocates; a value the user set wins.
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

try:  # the fast attention path (CUDA, compiled); absent before torch 2.5
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
except ImportError:
    create_block_mask = flex_attention = None

from grid import git_state
from mup_patch import Parametrization, build_parametrization

REPO = Path(__file__).resolve().parent
SCHEMA_VERSION = 1
EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_DEVICE_HUNG = 2, 3, 4
# A value the host waits for is at most one optimizer step of device work away (well under a
# second at the default size, seconds at the largest): a wait this long means a hung device.
DEVICE_WAIT_LIMIT_S = 300
# After SIGINT/SIGTERM a wait gives up sooner, so that a stopped run exits while its caller waits.
DEVICE_WAIT_AFTER_STOP_S = 30
ADAM_EPS = 1e-9  # hlb-gpt's; u-µP groups carry their own (mup_patch/rules.py, build_umup)
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}
VOCAB_SIZE = 50304  # GPT-2's 50257 tokens rounded up to a multiple of 64, for fast matmuls


class ConfigError(Exception):
    """Bad input: main() prints it as one line and exits with status 2."""


# ----------------------------------------------------------------------------------------
# Hyperparameters
# ----------------------------------------------------------------------------------------

def hlb_batch_tokens(model_scale: float) -> int:
    """hlb-gpt's tokens per microbatch: the capacity of a 40 GB A100 at this model scale.
    Here it is part of the recipe (it sets the optimization batch and the step-equivalent
    clock), not a memory limit: memory only decides how many chunks a microbatch is cut into."""
    return math.floor(114688 / (1.52174 + 0.482 * model_scale ** 0.87))


def hlb_width(model_scale: float) -> int:
    return round(384 * math.log2(1 + model_scale) / 64) * 64


def hlb_depth(model_scale: float) -> int:
    return round(8 * math.log2(1 + model_scale))


def hlb_base_lr(n_params: int) -> float:
    """hlb-gpt's pared-down GPT-3 learning-rate law times its base multiplier 2.62."""
    return 9e7 / math.log(n_params) ** 8.8 * 2.62


# u-µP's default base lr (--param umup): its lrs are on their own scale (N(0,1) weights, the
# width rules absolute, so --lr is u-µP's global η), where hlb-gpt's law means nothing. Chosen
# by a CPU sweep of the cpu-small preset (docs/umup.md).
UMUP_DEFAULT_LR = 1.0

PRESETS = {
    # About a minute on 2 CPU cores; the 50K-vocabulary readout dominates the cost.
    "cpu-small": dict(width=64, depth=2, max_seq_len=128, batch_tokens=4096,
                      total_tokens=250_000, warmup_tokens=40_960, eval_tokens=16_384,
                      eval_every_tokens=50_000, lr=1e-2),
}


def parse_count(text: str) -> int:
    """Token counts accept 5e6, 5M, 500K, 5_000_000."""
    s = text.strip().replace("_", "").upper()
    scale = {"K": 1e3, "M": 1e6, "G": 1e9, "B": 1e9}.get(s[-1:], 1)
    try:
        value = float(s[:-1] if scale != 1 else s) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count (examples: 5e6, 5M, 500K)")
    if not math.isfinite(value):  # int(inf) would raise OverflowError, not a usage error
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite count")
    if value != int(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    return int(value)


def positive(kind):
    def check(text):
        value = kind(text)
        if not (value > 0 and math.isfinite(value)):  # also rejects nan and inf
            raise argparse.ArgumentTypeError(f"{text!r} must be positive and finite")
        return value
    check.__name__ = getattr(kind, "__name__", "value")  # argparse: "invalid int value: 'x'"
    return check


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="main.py", description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = p.add_argument
    g = p.add_argument_group("data")
    add = g.add_argument
    add("--data", default="wikitext-103", choices=["wikitext-103", "wikitext-2"],
        help="dataset to download (through `datasets`, else the official raw zip)")
    add("--data-dir", type=Path, help="read local train/valid text files (plain or .xz) "
        "from this folder instead of downloading")
    add("--eval-data", action="append", default=[], metavar="NAME=PATH",
        help="an extra validation set, logged as its own curve (repeatable)")
    add("--cache-dir", type=Path, default=REPO / "data_cache",
        help="where tokenized data is cached, keyed by the content")
    add("--preset", choices=sorted(PRESETS), help="a named set of defaults; explicit flags win")

    g = p.add_argument_group("model")
    add = g.add_argument
    add("--model-scale", type=positive(float), default=1.0,
        help="hlb-gpt's size knob: width 384*log2(1+s) (to 64), depth 8*log2(1+s)")
    add("--width", type=positive(int), help="override the width from --model-scale")
    add("--depth", type=positive(int), help="override the depth from --model-scale")
    add("--qk-div", type=positive(int), default=8, help="q/k width = width / qk-div")
    add("--max-seq-len", type=positive(int), default=1024, help="final sequence length")
    add("--position-bias", choices=["exact", "hlb-bf16"], default="exact",
        help="exact: the attention bias is slope*(j-i); hlb-bf16: hlb-gpt v0.4.1's own table, whose "
        "positions are rounded to bf16, so that in the first half of a 1024 window distances "
        "come in steps of 4 (to reproduce hlb-gpt's curves; plain path only)")

    g = p.add_argument_group("parametrization")
    add = g.add_argument
    add("--param", choices=["sp", "mup", "umup"], default="sp",
        help="parametrization (mup_patch/; umup: unit-scaled µP, docs/umup.md)")
    add("--lr-recipe", choices=["hlb", "uniform"],
        help="hlb: hlb-gpt's group multipliers, output betas and per-group schedules; "
        "uniform: one lr, one schedule for every group (default: hlb for sp, uniform otherwise)")
    add("--lr", type=positive(float), help="base Adam learning rate (default: hlb-gpt's "
        "law 9e7/ln(P)^8.8*2.62, with P the parameters of the model at the base width; "
        f"under umup, u-µP's global lr, default {UMUP_DEFAULT_LR:g}, presets' lr not applied)")
    add("--base-width", type=positive(int), default=384, help="µP base width: where µP "
        "equals SP; 384 is hlb-gpt's default model, the one whose warmup is tuned")
    add("--input-mult", type=positive(float), default=1.0, help="µP embedding multiplier")
    add("--output-mult", type=positive(float), default=1.0, help="µP readout multiplier")
    add("--attn-mult", type=positive(float), default=1.0, help="µP attention multiplier")
    add("--readout-zero-init", action="store_true", help="µP, u-µP: initialise the readout to 0")
    add("--umup-attn-mult", type=positive(float), default=1.0,
        help="u-µP: attention softmax scale umup-attn-mult / qk_width")
    add("--umup-act-mult", type=positive(float), default=1.0,
        help="u-µP: the GeGLU's gelu(umup-act-mult * x)")
    add("--umup-residual-mult", type=positive(float), default=1.0,
        help="u-µP: residual branch weight; the blocks together add umup-residual-mult^2 "
        "times the embedding's variance to the residual stream")
    add("--umup-loss-mult", type=positive(float), default=1.0,
        help="u-µP: softmax multiplier of the cross-entropy (logits x umup-loss-mult)")
    add("--weight-decay", default="dynamic", help="'dynamic' (hlb-gpt: 16/(0.007*(0.01 "
        "lnP)^-4)^loss) or a fixed value; hidden matrices only, in every parametrization")
    add("--show-lr-table", action="store_true",
        help="print every parameter's class, shape, init std and lr, then exit")

    g = p.add_argument_group("schedule and length")
    add = g.add_argument
    add("--warmup-tokens", type=parse_count,
        help="linear warmup length in tokens (default: 100 step-equivalents, hlb-gpt's 100 steps)")
    add("--batch-tokens", type=positive(parse_count), help="tokens per microbatch and per "
        "step-equivalent (default: hlb-gpt's 57,236 at model scale 1)")
    add("--microbatches", default="dynamic", help="microbatches per optimizer step: 'dynamic' "
        "(hlb-gpt's rule from the gradient norm) or a fixed count, which keeps the batch, and so "
        "the step count, the same in every run of a grid")
    add("--total-tokens", type=positive(parse_count), help="stop after this many tokens")
    add("--max-steps", type=positive(int), default=1000, help="stop after this many optimizer steps")
    add("--seq-len-start", type=positive(int), default=32, help="initial sequence length")
    add("--seq-len-double-every", type=positive(float), default=80,
        help="double the sequence length every this many step-equivalents")

    g = p.add_argument_group("evaluation, logging and checkpoints")
    add = g.add_argument
    add("--eval-every-tokens", type=positive(parse_count), default=2_000_000)
    add("--eval-tokens", type=positive(parse_count), default=153_600,
        help="tokens per eval set, as fixed windows of --max-seq-len")
    add("--out", type=Path, default=REPO / "runs", help="folder for the run log and checkpoint")
    add("--run-name", help="run log name (default: built from the key settings)")
    add("--checkpoint-every-tokens", type=parse_count, default=25_000_000,
        help="checkpoint interval in tokens (0: only on SIGINT/SIGTERM)")
    add("--resume", action="store_true", help="continue from the run's checkpoint; "
        "a completed run exits at once")
    add("--diverge-loss", type=positive(float), help="after warmup, a train loss above this "
        "means diverged (default: ln(vocab)+1)")
    add("--quiet", action="store_true", help="no progress bar (for grids)")
    add("--sample", action="store_true", help="print a continuation of hlb-gpt's demo prompt")
    add("--seed", type=int, default=0)
    add("--device", choices=["cuda", "cpu"], help="default: cuda when available")

    g = p.add_argument_group("performance (docs/performance.md)")
    add = g.add_argument
    add("--compile", action=argparse.BooleanOptionalAction, default=None,
        help="the fast path: torch.compile of the forward/backward and the eval, one graph per "
        "shape, compiled before the timer starts; on CUDA also FlexAttention with the position "
        "bias computed in-kernel (default: on for cuda, off for cpu)")
    add("--param-dtype", choices=["float32", "bfloat16"], default="float32",
        help="float32: fp32 weights, gradients and AdamW moments, bf16 autocast on CUDA; "
        "bfloat16: all of them in bf16, as hlb-gpt stores them (its curves were measured so)")
    add("--gpu-memory-fraction", type=float, default=1.0,
        help="share of the GPU's memory this run may take (0-1]; grid.py sets it when several "
        "runs share a GPU, so that runs starting together do not each size their batch "
        "chunks to the whole card and starve one another")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.preset:  # presets change defaults only: re-parse so explicit flags win
        defaults = dict(PRESETS[args.preset])
        if args.param == "umup":  # a preset's lr is on SP/µP's scale: u-µP keeps its default
            defaults.pop("lr", None)
        parser.set_defaults(**defaults)
        args = parser.parse_args(argv)
    return args


@dataclass(frozen=True)
class ModelConfig:
    width: int
    depth: int
    qk_dim: int
    expand_dim: int
    max_seq_len: int
    vocab_size: int = VOCAB_SIZE
    position_bias: str = "exact"  # see position_distances


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Every derived quantity, computed once, with input checks that name the fix."""
    args.width = args.width or hlb_width(args.model_scale)
    args.depth = args.depth or hlb_depth(args.model_scale)
    for name in ("width", "base_width"):
        w = getattr(args, name)
        if w % args.qk_div:
            raise ConfigError(f"--{name.replace('_', '-')} {w} does not split into whole q/k "
                              f"(width/{args.qk_div}) and value widths: use a multiple of {args.qk_div}")
    args.qk_dim = args.width // args.qk_div
    args.lr_recipe = args.lr_recipe or ("hlb" if args.param == "sp" else "uniform")
    if args.param in ("mup", "umup") and args.lr_recipe == "hlb":
        raise ConfigError(f"--param {args.param} replaces hlb-gpt's lr recipe: drop --lr-recipe hlb")
    # u-µP's multipliers mean nothing elsewhere, and µP's nothing under u-µP (SP has always
    # ignored µP's): a flag that would change nothing is an error.
    foreign = (("umup", ("umup_attn_mult", "umup_act_mult", "umup_residual_mult", "umup_loss_mult"))
               if args.param != "umup" else ("mup", ("input_mult", "output_mult", "attn_mult")))
    unused = ["--" + n.replace("_", "-") for n in foreign[1] if getattr(args, n) != 1.0]
    if unused:
        raise ConfigError(f"{', '.join(unused)}: only for --param {foreign[0]}; drop under --param {args.param}")
    args.batch_tokens = args.batch_tokens or hlb_batch_tokens(args.model_scale)
    if args.warmup_tokens is None:
        args.warmup_tokens = 100 * args.batch_tokens
    if args.warmup_tokens < 0:
        raise ConfigError(f"--warmup-tokens {args.warmup_tokens} is negative: use 0 or more")
    if args.total_tokens and args.warmup_tokens > args.total_tokens:
        raise ConfigError(f"--warmup-tokens {args.warmup_tokens} is longer than the run "
                          f"(--total-tokens {args.total_tokens}): shorten the warmup")
    if args.seq_len_start > args.max_seq_len:
        raise ConfigError(f"--seq-len-start {args.seq_len_start} exceeds --max-seq-len {args.max_seq_len}")
    if args.batch_tokens < args.max_seq_len:
        raise ConfigError(f"--batch-tokens {args.batch_tokens} is less than one sequence of "
                          f"--max-seq-len {args.max_seq_len}: raise it or shorten the sequence")
    if args.weight_decay != "dynamic":
        try:
            args.weight_decay = float(args.weight_decay)
        except ValueError:
            raise ConfigError(f"--weight-decay {args.weight_decay!r}: use 'dynamic' or a number")
        if args.weight_decay < 0:
            raise ConfigError("--weight-decay must be 0 or more")
    if args.microbatches != "dynamic":
        text = args.microbatches
        args.microbatches = int(text) if text.isdigit() else 0
        if args.microbatches < 1:
            raise ConfigError(f"--microbatches {text!r}: use 'dynamic' or a whole number of 1 or more")
    if args.checkpoint_every_tokens < 0:
        raise ConfigError("--checkpoint-every-tokens must be 0 (off) or more")
    args.diverge_loss = args.diverge_loss or math.log(VOCAB_SIZE) + 1
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.compile is None:
        args.compile = args.device == "cuda"
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda but no CUDA GPU is visible: use --device cpu")
    if args.position_bias != "exact" and args.compile and args.device == "cuda":
        raise ConfigError(f"--position-bias {args.position_bias} is not in the fast path's attention "
                          "kernel: add --no-compile")
    if not 0 < args.gpu_memory_fraction <= 1:
        raise ConfigError(f"--gpu-memory-fraction {args.gpu_memory_fraction} is outside (0, 1]: "
                          "use e.g. 0.2 for one of four runs sharing a GPU")
    extra = {}
    for item in args.eval_data:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--eval-data {item!r}: use NAME=PATH")
        if name == "valid" or name in extra:
            raise ConfigError(f"--eval-data name {name!r} is used twice: pick another name")
        extra[name] = Path(path)
    args.eval_data = extra
    args.run_name = args.run_name or (
        f"{args.param}_w{args.width}_d{args.depth}_wu{args.warmup_tokens}_s{args.seed}")
    if "/" in args.run_name or args.run_name.startswith("."):
        raise ConfigError(f"--run-name {args.run_name!r} must be a plain file name")
    return args


def model_config(args, width=None) -> ModelConfig:
    width = width or args.width
    return ModelConfig(width=width, depth=args.depth, qk_dim=width // args.qk_div,
                       expand_dim=2 * width, max_seq_len=args.max_seq_len,
                       position_bias=args.position_bias)


# ----------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------

WIKITEXT_ZIPS = {"wikitext-103": "https://wikitext.smerity.com/wikitext-103-raw-v1.zip",
                 "wikitext-2": "https://wikitext.smerity.com/wikitext-2-raw-v1.zip"}
OFFLINE_HINT = ("pass --data-dir DIR (a folder with train and valid text files, plain or .xz) "
                "and set TIKTOKEN_CACHE_DIR to a folder holding tiktoken's gpt2 files")


def read_text(path: Path) -> str:
    """A text file, plain or .xz, checked for the problems users actually hit."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        raw = path.read_bytes()
        if path.suffix == ".xz":
            raw = lzma.decompress(raw)
    except (OSError, lzma.LZMAError) as e:
        raise ConfigError(f"{path}: cannot read ({e})")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); convert it to UTF-8")
    if not text.strip():
        raise ConfigError(f"{path}: file is empty")
    return text


def find_split(folder: Path, split: str) -> Path:
    if not folder.is_dir():
        raise ConfigError(f"--data-dir {folder}: no such folder")
    found = sorted(f for f in folder.iterdir() if f.is_file() and split in f.name.lower())
    if len(found) != 1:
        what = "no file" if not found else f"{len(found)} files ({', '.join(f.name for f in found)})"
        raise ConfigError(f"--data-dir {folder}: {what} with '{split}' in its name; "
                          f"put exactly one {split} file (plain or .xz) there")
    return found[0]


def download_wikitext(name: str, cache_dir: Path) -> dict[str, str]:
    """Raw WikiText splits through `datasets`, else the official zip."""
    try:
        import datasets  # lazily: heavy, and absent on some GPU images
        parts = datasets.load_dataset("Salesforce/wikitext", f"{name}-raw-v1")
        return {split: "".join(parts[key]["text"]) for split, key in
                (("train", "train"), ("valid", "validation"))}
    except Exception as first_error:
        zip_path = cache_dir / f"{name}-raw-v1.zip"
        try:
            if not zip_path.exists():
                cache_dir.mkdir(parents=True, exist_ok=True)
                request = urllib.request.Request(WIKITEXT_ZIPS[name], headers={"User-Agent": "curl"})
                with urllib.request.urlopen(request, timeout=60) as response:
                    atomic_write_bytes(zip_path, response.read())
            with zipfile.ZipFile(zip_path) as z:
                return {split: z.read(f"{name}-raw/wiki.{split}.raw").decode("utf-8")
                        for split in ("train", "valid")}
        except Exception as e:
            raise ConfigError(f"cannot download {name} ({type(first_error).__name__}, then "
                              f"{type(e).__name__}: {e}); offline, {OFFLINE_HINT}")


def get_tokenizer():
    import tiktoken
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as e:
        raise ConfigError(f"cannot load the gpt2 tokenizer ({type(e).__name__}); offline, {OFFLINE_HINT}")


def tokenize(text: str) -> np.ndarray:
    """GPT-2 tokens of a text, batched across threads. Chunks are cut only where a space,
    tab or newline follows a non-space character: no GPT-2 pre-token spans that boundary,
    and the pre-tokenizer's lookaheads (\\s+(?!\\S), \\s++$) only ever act on whitespace
    before it, so the result equals encode_ordinary(text) (tests/test_trainer.py checks it).
    (Cutting after a newline is not safe: a chunk ending in a blank line would end in one
    whitespace token where the full text has two.)"""
    encoder = get_tokenizer()
    chunks, start, target = [], 0, 1 << 20
    while start < len(text):
        cut = start + target
        while cut < len(text) and not (text[cut] in " \t\n" and not text[cut - 1].isspace()):
            cut += 1
        chunks.append(text[start:cut])
        start = cut
    encoded = encoder.encode_ordinary_batch(chunks, num_threads=os.cpu_count() or 1)
    return np.fromiter((t for chunk in encoded for t in chunk), dtype=np.uint16)


def cached_tokens(key_bytes: bytes, text_fn, cache_dir: Path, label: str) -> np.ndarray:
    """Tokens cached on disk under a hash of the source bytes; a corrupt cache is rebuilt."""
    key = hashlib.sha256(b"gpt2-encode_ordinary-v2\0" + key_bytes).hexdigest()[:24]
    path = cache_dir / f"tokens-{key}.npy"
    if path.exists():
        try:
            return np.load(path, allow_pickle=False)
        except Exception as e:
            print(f"warning: token cache {path} is corrupt ({type(e).__name__}); rebuilding",
                  file=sys.stderr)
    tokens = tokenize(text_fn())
    if len(tokens) < 2:
        raise ConfigError(f"{label}: fewer than 2 tokens")
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp, tokens)
    os.replace(tmp, path)
    return tokens


def file_tokens(path: Path, cache_dir: Path) -> np.ndarray:
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e})")
    return cached_tokens(raw, lambda: read_text(path), cache_dir, str(path))


def load_data(args) -> dict[str, np.ndarray]:
    """{'train': tokens, 'valid': tokens, NAME: tokens for each --eval-data}."""
    if args.data_dir:
        data = {split: file_tokens(find_split(args.data_dir, split), args.cache_dir)
                for split in ("train", "valid")}
    else:
        texts = None

        def text_of(split):
            nonlocal texts
            texts = texts or download_wikitext(args.data, args.cache_dir)
            return texts[split]
        data = {split: cached_tokens(f"{args.data}:{split}".encode(), lambda s=split: text_of(s),
                                     args.cache_dir, f"{args.data} {split}")
                for split in ("train", "valid")}
    for name, path in args.eval_data.items():
        data[name] = file_tokens(path, args.cache_dir)
    for name, tokens in data.items():
        if len(tokens) <= args.max_seq_len + 1:
            raise ConfigError(f"{name} split has {len(tokens)} tokens, not more than one "
                              f"sequence of --max-seq-len {args.max_seq_len}: lower --max-seq-len")
    return data


class TrainSampler:
    """Uniformly random windows of the training tokens (hlb-gpt's sampler). The start
    indices come from a CPU generator, so a run draws the same windows on any device and
    resumes exactly from the generator's saved state."""

    def __init__(self, tokens: torch.Tensor, seed: int):
        self.tokens = tokens
        self.generator = torch.Generator().manual_seed(seed)

    def batch(self, batch_size: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(len(self.tokens) - seq_len - 1, (batch_size,), generator=self.generator)
        if self.tokens.is_cuda:  # a blocking copy would wait for every step already queued
            starts = starts.pin_memory().to(self.tokens.device, non_blocking=True)
        index = starts.to(self.tokens.device).unsqueeze(1) + torch.arange(seq_len + 1, device=self.tokens.device)
        windows = self.tokens[index].long()
        return windows[:, :-1], windows[:, 1:]


def eval_windows(tokens: torch.Tensor, eval_tokens: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed windows spread evenly over a validation split: the same in every eval of every
    run with the same --eval-tokens and --max-seq-len, so curves compare point by point."""
    count = max(1, min(eval_tokens // seq_len, (len(tokens) - 1) // seq_len))
    starts = torch.linspace(0, len(tokens) - seq_len - 1, count).long()
    index = starts.unsqueeze(1) + torch.arange(seq_len + 1)
    windows = tokens.cpu()[index].long().to(tokens.device)
    return windows[:, :-1], windows[:, 1:]


# ----------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------

class LatentAttentionBlock(nn.Module):
    """hlb-gpt's fused block: one pre-norm, one input matmul split into query, key, linear
    and pre-GELU parts, a GeGLU whose output is split into a local part and the value of a
    single-head causal attention with a learnable linear position bias, one output matmul,
    one residual add. The nn.Identity taps cost nothing and let the coord check hook the
    attention logits' inputs and the attention output."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.norm = nn.LayerNorm(cfg.width, bias=False)
        self.expand = nn.Parameter(torch.empty(2 * cfg.qk_dim + 2 * cfg.expand_dim, cfg.width))
        self.project = nn.Parameter(torch.empty(cfg.width, cfg.expand_dim))
        # Each layer learns its attention range; softplus keeps the slope positive.
        self.position_bias_mult = nn.Parameter(torch.tensor(1.0))
        self.query_tap, self.key_tap, self.attention_tap = nn.Identity(), nn.Identity(), nn.Identity()
        # u-µP's op scales, set by GPT.configure(); at 1.0 (SP, µP) they are skipped.
        self.expand_mult = self.project_mult = self.act_mult = self.glu_mult = 1.0
        self.attention_out_mult = 1.0
        self.residual_scales = None  # (skip, branch) multipliers; None: x + branch

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor, attention_scale: float,
                block_mask=None) -> torch.Tensor:
        cfg, seq_len = self.cfg, x.shape[1]
        expanded = F.linear(self.norm(x), self.expand)
        if self.expand_mult != 1.0:
            expanded = expanded * self.expand_mult
        query, key, linear, pre_gelu = expanded.split(
            (cfg.qk_dim, cfg.qk_dim, cfg.expand_dim, cfg.expand_dim), dim=-1)
        if self.act_mult != 1.0:
            pre_gelu = pre_gelu * self.act_mult
        geglu = linear * F.gelu(pre_gelu)
        if self.glu_mult != 1.0:
            geglu = geglu * self.glu_mult
        local, value = geglu.split((cfg.expand_dim - cfg.width, cfg.width), dim=-1)
        slope = F.softplus(self.position_bias_mult)
        query, key = self.query_tap(query), self.key_tap(key)
        if block_mask is None:  # the plain path: SDPA with the bias materialised as a T x T mask
            distance, causal = position_bias[0, :seq_len, :seq_len], position_bias[1, :seq_len, :seq_len]
            # torch.where, not a product with -inf, so the multiplier's gradient stays finite.
            bias = torch.where(causal > 0, slope * distance, float("-inf"))
            attention = F.scaled_dot_product_attention(query, key, value, attn_mask=bias.to(query.dtype),
                                                       scale=attention_scale)
        else:  # the fast path (compiled, CUDA): the bias is computed inside the attention kernel
            attention = flex_position_attention(query, key, value, slope, attention_scale, block_mask)
        if self.attention_out_mult != 1.0:
            attention = attention * self.attention_out_mult
        branch = F.linear(torch.cat([local, self.attention_tap(attention)], dim=-1), self.project)
        if self.project_mult != 1.0:
            branch = branch * self.project_mult
        if self.residual_scales is None:
            return x + branch
        skip, scale = self.residual_scales  # u-µP: (x + tau * branch) / sqrt(1 + tau^2)
        return x * skip + branch * scale


def position_distances(cfg: ModelConfig) -> torch.Tensor:
    """distance[i, j] = j - i, which the learned slope turns into the attention bias.
    'hlb-bf16' is the table hlb-gpt v0.4.1 builds: positions counted back from the last one
    (k - (max_seq_len - 1)) and subtracted in bf16, which keeps 8 significant bits, so
    positions more than 256 before the window's last are rounded to steps of 2, 4, ... Short
    sequences use the table's first rows: at length 64 neighbours 0-3 apart get the same bias.
    hlb-gpt's curves were measured with it (experiments/hlb_gpt_control.py --check)."""
    index = torch.arange(cfg.max_seq_len)
    if cfg.position_bias == "exact":
        return (index[None, :] - index[:, None]).float()
    positions = (index - (cfg.max_seq_len - 1)).to(torch.bfloat16)
    return (positions[None, :] - positions[:, None]).float()


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.width, scale_grad_by_freq=True)
        self.blocks = nn.ModuleList(LatentAttentionBlock(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width, bias=False)
        self.readout = nn.Linear(cfg.width, cfg.vocab_size, bias=False)  # untied
        # Forward multipliers; set by configure() from the parametrization.
        self.input_mult, self.attention_scale, self.readout_mult = 1.0, cfg.qk_dim ** -0.5, 1.0
        # position_bias[0, i, j] = j - i (a linear distance penalty once scaled by the
        # learned multiplier); position_bias[1] = 1 on and below the diagonal (causal).
        index = torch.arange(cfg.max_seq_len)
        causal = (index[None, :] <= index[:, None]).float()
        self.register_buffer("position_bias", torch.stack([position_distances(cfg), causal]),
                             persistent=False)

    def configure(self, parametrization: Parametrization) -> None:
        self.input_mult = parametrization.input_mult
        self.attention_scale = parametrization.attention_scale
        self.readout_mult = parametrization.readout_mult
        taus = parametrization.residual_taus
        assert not taus or len(taus) == len(self.blocks), "one residual tau per block"
        for i, block in enumerate(self.blocks):
            for name in ("expand_mult", "project_mult", "act_mult", "glu_mult", "attention_out_mult"):
                setattr(block, name, getattr(parametrization, name))
            block.residual_scales = ((1 + taus[i] ** 2) ** -0.5, taus[i] * (1 + taus[i] ** 2) ** -0.5) \
                if taus else None

    def forward(self, tokens: torch.Tensor, block_mask=None) -> torch.Tensor:
        """Logits. With a block_mask (causal_block_mask(seq_len)), attention runs through
        FlexAttention; without one, through SDPA with a materialised mask (CPU, eager)."""
        x = self.embedding(tokens)
        if self.input_mult != 1.0:
            x = x * self.input_mult
        for block in self.blocks:
            x = block(x, self.position_bias, self.attention_scale, block_mask)
        x = self.norm(x)
        if self.readout_mult != 1.0:
            x = x * self.readout_mult
        return self.readout(x)


# ----------------------------------------------------------------------------------------
# Fast attention (FlexAttention)
# ----------------------------------------------------------------------------------------
# SDPA has no fused kernel for a float mask that needs a gradient: it falls back to the
# memory-efficient kernel, which reads a T x T mask per layer and writes its T x T gradient.
# FlexAttention generates one Triton kernel (forward and backward) from a score_mod that
# adds the bias in registers, and its block mask skips the blocks above the diagonal, half
# the work at T = 1024. Its backward needs CUDA and its kernels need torch.compile, so this
# path is taken only by compiled CUDA runs; the SDPA path stays the reference
# (tests/test_gpu.py compares the two, outputs and gradients).

# Value heads: the single head's 384-wide value is split into heads that share the query and
# key. Every head computes the same softmax, so concatenating them is the single-head output;
# the kernel's accumulator shrinks from 512 (384 rounded up) to 128 columns per program, at
# the cost of recomputing q.k^T per head. Measured on an H100 at T = 1024 (bench.py
# --value-heads, docs/performance.md): 3 heads 34.9 ms per step, 6 heads 37.0, and 1 head
# does not compile (its kernel needs twice the shared memory the chip has); at width 768,
# 3 heads of 256 do not compile either. So: the fewest heads of at most 128 columns each.
MAX_FLEX_HEAD_WIDTH = 128


def flex_value_heads(value_width: int) -> int:
    return next(h for h in range(1, value_width + 1)
                if value_width % h == 0 and value_width // h <= MAX_FLEX_HEAD_WIDTH)


def _causal(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


@functools.lru_cache(maxsize=None)
def causal_block_mask(seq_len: int, device: str = "cuda"):
    """FlexAttention's block-sparse causal mask for one sequence length (built once)."""
    return create_block_mask(_causal, None, None, seq_len, seq_len, device=device)


def flex_position_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            slope: torch.Tensor, scale: float, block_mask,
                            value_heads: int | None = None) -> torch.Tensor:
    """softmax(scale * q.k^T + slope * (j - i), causal) @ v for (batch, seq, dim) inputs.

    The slope enters the score_mod detached: FlexAttention differentiates a captured scalar
    with one atomic add per score, all into one address, which serialises. Its gradient,
    sum_ij dS_ij * (j - i), comes instead from the kernel's dQ through three extra q/k
    channels. The query's channels are (slope - slope.detach()) * (1, 1, -i) / scale, zero
    in value (the forward is unchanged) but carrying the slope's gradient; the key's are
    (32 * (j // 32), j % 32, 1), exact in bf16. The kernel's dQ_i = scale * sum_j dS_ij k_j
    then hands autograd sum_j dS_ij * j and -i * sum_j dS_ij for every row i, summed in
    fp32 from the same bf16 dS values, so that the large j and i terms cancel before any
    rounding. (Taking sum_j dS_ij = 0 for granted and using dK with positions alone leaves
    bf16 rounding of dS multiplied by absolute positions: tens of percent off at T = 1024.)
    The q/k width is zero-padded to a power of two (48 + 3 -> 64), the kernel's fast case."""
    batch, seq_len, qk_dim = query.shape
    heads = value_heads or flex_value_heads(value.shape[-1])
    padded = 1 << (qk_dim + 2).bit_length()  # the next power of two above qk_dim + 3
    fixed_slope = slope.detach()
    delta = (slope - fixed_slope) / scale  # zero, with the slope's gradient
    positions = torch.arange(seq_len, device=query.device, dtype=torch.float32)
    query_channels = torch.stack([delta.expand(seq_len), delta.expand(seq_len), -delta * positions], dim=-1)
    key_channels = torch.stack([positions.div(32, rounding_mode="floor") * 32, positions.remainder(32),
                                torch.ones_like(positions)], dim=-1)
    pad = (0, padded - qk_dim - 3)
    q = F.pad(torch.cat([query, query_channels.to(query.dtype).expand(batch, -1, -1)], dim=-1), pad)
    k = F.pad(torch.cat([key, key_channels.to(key.dtype).expand(batch, -1, -1)], dim=-1), pad)
    q = q[:, None].expand(batch, heads, seq_len, padded)
    k = k[:, None].expand(batch, heads, seq_len, padded)
    v = value.unflatten(-1, (heads, -1)).transpose(1, 2)

    def score_mod(score, b, h, q_idx, kv_idx):
        return score + fixed_slope * (kv_idx - q_idx)

    out = flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale)
    return out.transpose(1, 2).flatten(2)


READOUT_NAMES = {"readout.weight"}


def reference_init_std(name: str, width: int, cfg: ModelConfig) -> float | None:
    """hlb-gpt's init std of a parameter at a width (None: the module's own init)."""
    expand_factor = cfg.expand_dim / cfg.width
    if name.endswith("expand"):
        return 0.5 / math.sqrt(width) / expand_factor
    if name.endswith("project"):
        return 1.0 / math.sqrt(width) / expand_factor / cfg.depth
    if name == "embedding.weight":
        return 0.25 / math.sqrt(width)
    if name == "readout.weight":
        return 0.5 / math.sqrt(width)
    return None


def parameter_shapes(args, width: int) -> dict[str, tuple]:
    with torch.device("meta"):
        model = GPT(model_config(args, width))
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


def make_parametrization(args) -> Parametrization:
    cfg = model_config(args)
    if args.lr is None and args.param == "umup":
        args.lr = UMUP_DEFAULT_LR
    if args.lr is None:  # hlb-gpt's law, evaluated where µP and SP coincide
        args.lr = hlb_base_lr(decay_law_params(args))
    umup = None
    if args.param == "umup":
        umup = dict(depth=cfg.depth, expand_dim=cfg.expand_dim, vocab_size=cfg.vocab_size,
                    batch_tokens=args.batch_tokens, max_seq_len=cfg.max_seq_len,
                    # softplus of the position-bias multiplier's init (LatentAttentionBlock: 1.0)
                    attention_slope=math.log1p(math.e),
                    block_of=lambda name: int(name.split(".")[1]) if name.startswith("blocks.") else None,
                    decay_lr=hlb_base_lr(decay_law_params(args)), adam_eps=ADAM_EPS,
                    attn_mult=args.umup_attn_mult, act_mult=args.umup_act_mult,
                    residual_mult=args.umup_residual_mult, loss_mult=args.umup_loss_mult)
    return build_parametrization(
        param=args.param, lr_recipe=args.lr_recipe, lr=args.lr, width=args.width,
        base_width=args.base_width, qk_dim=args.qk_dim, base_qk_dim=args.base_width // args.qk_div,
        shapes_at=lambda w: parameter_shapes(args, w), readout_names=READOUT_NAMES,
        reference_init_std=lambda name, w: reference_init_std(name, w, cfg),
        input_mult=args.input_mult, output_mult=args.output_mult, attn_mult=args.attn_mult,
        readout_zero_init=args.readout_zero_init, umup=umup)


def build_model(args, parametrization: Parametrization) -> GPT:
    model = GPT(model_config(args))
    parametrization.init_(model, torch.Generator().manual_seed(args.seed))
    model.configure(parametrization)
    return model.to(args.device, getattr(torch, getattr(args, "param_dtype", "float32")))


# ----------------------------------------------------------------------------------------
# Schedules
# ----------------------------------------------------------------------------------------
# One clock for every group: step-equivalents t = tokens / batch_tokens, so that hlb-gpt's
# step-tuned decay keeps its shape whatever the warmup or the batch (lesson 1 of the
# earlier study). With w = warmup_tokens / batch_tokens:
#   base:          0.02 + 0.98 * t / w            while t < w
#                  (t - w + 1) ** -0.08           after
#   output:        (t + 1) ** -0.2                (hlb recipe's readout group; no warmup)
#   position_bias: 0.995 ** t                     (hlb recipe's position-bias group)

def lr_multiplier(schedule: str, tokens: int, warmup_tokens: int, batch_tokens: int) -> float:
    t, w = tokens / batch_tokens, warmup_tokens / batch_tokens
    if schedule == "base":
        return 0.02 + 0.98 * t / w if t < w else (t - w + 1) ** -0.08
    if schedule == "output":
        return (t + 1) ** -0.2
    if schedule == "position_bias":
        return 0.995 ** t
    raise ValueError(f"unknown schedule {schedule!r}")


def seq_len_at(tokens: int, args) -> int:
    """hlb-gpt's sequence-length warmup (32 doubling every 80 steps) on the token clock."""
    doublings = int(tokens / (args.seq_len_double_every * args.batch_tokens))
    return min(args.max_seq_len, args.seq_len_start * 2 ** min(doublings, 30))


def dynamic_weight_decay(loss: float, n_params: int, at_zero_loss: float = 16.0) -> float:
    """hlb-gpt's decay that grows as the loss falls (after PaLM section 5)."""
    return at_zero_loss / (0.007 * (0.01 * math.log(n_params)) ** -4) ** loss


def decay_law_params(args) -> int:
    """The parameter count hlb-gpt's lr law and dynamic decay law are evaluated at: the
    model's own under SP; under µP and u-µP the base-width model's, so that the lr and the
    per-step decay lr * wd stay width-independent as µP's rules intend."""
    width = args.base_width if args.param in ("mup", "umup") else args.width
    return sum(math.prod(s) for s in parameter_shapes(args, width).values())


# ----------------------------------------------------------------------------------------
# Microbatching and memory
# ----------------------------------------------------------------------------------------

class MicrobatchScheduler:
    """hlb-gpt's dynamic gradient accumulation. Every `sample_every` steps it compares the
    gradient norm per parameter with a power law in the step, grows or shrinks a fractional
    microbatch count by the ratio, and draws the integer count by Bernoulli dithering from
    its own generator (saved in checkpoints). The power law was fitted to hlb-gpt's SP: other
    parametrizations (and long warmups) move the gradient norm and so the batch, which is why
    `fixed` (--microbatches N) exists; the norm is still sampled and logged."""
    sample_every, rate = 5, 0.1

    def __init__(self, n_params: int, seed: int, fixed: int | None = None):
        self.n_params, self.fixed = n_params, fixed
        self.fraction, self.count = 0.0, fixed or 1
        self.grad_norm = None  # the latest sample, logged with every eval until the next one
        self.generator = torch.Generator().manual_seed(seed + 1)

    def target(self, step: int) -> float:
        log_p = math.log(self.n_params)
        return (log_p * self.n_params * (step + 0.01)) ** (-0.677 * log_p ** -0.2)

    def update(self, step: int, grad_norm: float) -> None:
        self.grad_norm = grad_norm
        if self.fixed:
            return
        ratio = grad_norm / math.sqrt(self.n_params) / self.target(step)
        self.fraction = max(0.1, self.fraction * (1 + self.sample_every * self.rate * (ratio - 1)))
        whole, frac = divmod(self.fraction, 1)
        draw = torch.bernoulli(torch.tensor(frac, dtype=torch.float64), generator=self.generator)
        self.count = max(1, int(whole + draw.item()))

    def state_dict(self):
        return {"fraction": self.fraction, "count": self.count, "grad_norm": self.grad_norm,
                "generator": self.generator.get_state()}

    def load_state_dict(self, state):
        self.fraction, self.count = state["fraction"], self.fixed or state["count"]
        self.grad_norm = state.get("grad_norm")
        self.generator.set_state(state["generator"])


def standin_batch(batch_size: int, seq_len: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Made-up (inputs, targets) with the sampler's layout: slices of (batch, seq_len + 1)
    windows, so a graph compiled on them (static shapes guard on strides) is the one that
    training's batches use."""
    windows = (torch.arange(batch_size * (seq_len + 1), device=device) * 7919 % 50257).view(batch_size, -1)
    return windows[:, :-1], windows[:, 1:]


def cap_gpu_memory(args) -> None:
    """--gpu-memory-fraction: runs sharing one GPU each take their share of it. The caching
    allocator then raises OutOfMemoryError at this share, which the memory probe and the
    training step handle (halving their chunks), and memory_chunk_tokens sizes chunks to it."""
    if args.device == "cuda" and args.gpu_memory_fraction < 1:
        torch.cuda.set_per_process_memory_fraction(args.gpu_memory_fraction)


def memory_chunk_tokens(model: GPT, args, loss_fn=None, block_mask_for=None,
                        probe_tokens: int = 8192) -> int:
    """How many tokens one forward/backward chunk may hold. On CUDA: the memory this process
    may still take (free device memory, capped by torch.cuda's per-process memory fraction),
    less the model and optimizer state, over the peak bytes per token of a measured probe at
    the final sequence length. The probe runs the step's own loss function: compiled, it
    keeps far less per token (no fp32 logits), and the trainer probes at the step's own shape
    so that the graph compiled here is one that training uses; a probe that does not fit is
    halved. On CPU: half the available RAM over an estimate of the bytes per token (fp32
    logits, their gradient and the softmax dominate)."""
    if args.device == "cuda":
        loss_fn = loss_fn or chunk_loss
        seq_len = args.max_seq_len
        block_mask = block_mask_for(seq_len) if block_mask_for else None
        params = [p for p in model.parameters() if p.requires_grad]
        probe_seqs = max(1, probe_tokens // seq_len)
        while True:
            x, y = standin_batch(probe_seqs, seq_len, args.device)
            gc.collect()  # garbage freed during the probe would hide its peak
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            try:  # autograd.grad: the probe leaves no .grad behind
                torch.autograd.grad(loss_fn(model, x, y, block_mask), params)
                break
            except torch.cuda.OutOfMemoryError:
                if probe_seqs == 1:
                    raise
                probe_seqs //= 2
                torch.cuda.empty_cache()
        peak = torch.cuda.max_memory_allocated() - before
        free, total = torch.cuda.mem_get_info()
        allocated = torch.cuda.memory_allocated()
        available = free + torch.cuda.memory_reserved() - allocated
        fraction = getattr(torch.cuda, "get_per_process_memory_fraction", lambda: 1.0)()
        available = min(available, fraction * total - allocated)
        # Keep room for AdamW's two moments and the gradients (3 fp32 copies of the weights).
        state_bytes = 3 * 4 * sum(p.numel() for p in params)
        usable = 0.85 * available - state_bytes
        return max(args.max_seq_len, int(usable / (peak / x.numel())))
    # Keep every logits buffer under glibc's largest mmap threshold (32 MiB), which we raise
    # to that maximum: buffers are then reused from the heap instead of being mapped and
    # page-faulted afresh for every chunk, which cost more than the matmuls on 2 cores.
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 30)   # M_TRIM_THRESHOLD: keep freed memory for the next chunk
    except OSError:
        pass
    available = 8 << 30
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        available = int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        pass
    cfg = model.cfg
    bytes_per_token = 4 * (3 * cfg.vocab_size + 12 * cfg.expand_dim * cfg.depth)
    logits_cap = (32 << 20) // (4 * cfg.vocab_size)
    return max(args.max_seq_len, min(logits_cap, int(0.5 * available / bytes_per_token)))


# ----------------------------------------------------------------------------------------
# Run log and checkpoints
# ----------------------------------------------------------------------------------------

def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over the target:
    a kill at any moment leaves either the old file or the new one, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1).encode())


def git_commit() -> str:
    """The code's commit (grid.git_state's: $GIT_COMMIT when set), -dirty with uncommitted changes."""
    commit, dirty = git_state(REPO)
    return "unknown" if commit is None else commit + ("-dirty" if dirty else "")


def environment(args) -> dict:
    return {"torch": torch.__version__, "python": platform.python_version(),
            "device": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu",
            "git_commit": git_commit(), "hostname": platform.node(), "world_size": world()[1],
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def config_for_log(args) -> dict:
    return {k: (str(v) if isinstance(v, Path) else
                {n: str(p) for n, p in v.items()} if isinstance(v, dict) else v)
            for k, v in sorted(vars(args).items())}


# ----------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------

def autocast(args):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.device == "cuda")


def chunk_eval(model: GPT, inputs: torch.Tensor, targets: torch.Tensor, block_mask=None):
    """Summed cross-entropy and correct next-token count of one chunk (compiled on the fast
    path, where the fp32 logits are then never materialised)."""
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=inputs.is_cuda):
        logits = model(inputs, block_mask).float()
    return (F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum"),
            (logits.argmax(-1) == targets).sum())


@torch.no_grad()
def evaluate(model: GPT, eval_sets: dict, chunk_tokens: int, args, eval_fn=None,
             block_mask_for=None, stop_signal: list = ()) -> dict:
    """Loss (nats), perplexity and next-token accuracy on each fixed eval set. Windows go in
    equal chunks (sizes differ by at most one) of at most chunk_tokens, and of at most one
    training microbatch: a compiled eval then needs one or two graphs, and a forward without
    autograd never needs more memory than the training step it follows."""
    eval_fn = eval_fn or chunk_eval
    model.eval()
    results = {}
    for name, (inputs, targets) in eval_sets.items():
        loss_sum = correct = torch.zeros((), device=args.device, dtype=torch.float64)
        n_targets = targets.numel()
        # Under torchrun each rank evaluates its block of the windows; the sums are all-reduced.
        inputs, targets = shard(inputs), shard(targets)
        seq_len = inputs.shape[1]
        per_chunk = max(1, min(chunk_tokens, args.batch_tokens) // seq_len)
        chunks = -(-len(inputs) // per_chunk)
        block_mask = block_mask_for(seq_len) if block_mask_for else None
        for x, y in (zip(inputs.tensor_split(chunks), targets.tensor_split(chunks)) if chunks else ()):
            chunk_loss_sum, chunk_correct = eval_fn(model, x, y, block_mask)
            loss_sum = loss_sum + chunk_loss_sum
            correct = correct + chunk_correct
        if world()[1] > 1:
            loss_sum, correct = all_reduce_sum_([torch.stack([loss_sum, correct])])[0]
        loss_read, correct_read = DeviceScalar(loss_sum), DeviceScalar(correct)
        loss = loss_read.get(stop_signal) / n_targets
        results[name] = {"loss": loss, "perplexity": math.exp(min(loss, 700)),
                         "accuracy": correct_read.get(stop_signal) / n_targets}
    model.train()
    return results


# ----------------------------------------------------------------------------------------
# Data parallel (torchrun; docs/ddp.md)
# ----------------------------------------------------------------------------------------
# `torchrun --nproc_per_node=N main.py ...` trains one run on N processes (NCCL, one GPU
# each; gloo on CPU). Every rank draws the whole microbatch from the shared, identically
# seeded sampler and trains on its own contiguous block of its sequences (shard); each
# chunk's loss keeps its weight in the global batch, so the gradients summed over the ranks
# are the one-process gradient. The sum is one all-reduce per optimizer step, after the last
# backward (DDP with no_sync on every other backward), of the gradients and the loss sum
# together: every rank then holds the same gradients, the same global train loss (decay,
# divergence), the same gradient norm and dithering draw (the microbatch count), and takes
# the same AdamW step. DDP's wrapper itself is not used: Dynamo cannot trace it inside the
# fast path's fullgraph-compiled loss (an Unsupported error on DDP's logger), and without
# it parameter names, the µP groups, the compiled graphs and the one-process path stay
# exactly as they are. One process (no WORLD_SIZE > 1) never touches torch.distributed.

CONTROL_GROUP = None  # gloo, on the host: the stop flag and the data-loading turn


def world() -> tuple[int, int]:
    """(this process's rank, number of processes): (0, 1) unless torchrun started several."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(args) -> None:
    """Join torchrun's process group when it started several processes (WORLD_SIZE > 1):
    NCCL with each rank on cuda:LOCAL_RANK (set as the current device, so "cuda" means the
    rank's own GPU everywhere), or gloo on CPU. A single process does nothing here."""
    global CONTROL_GROUP
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or world()[1] > 1:
        return
    sequences = args.batch_tokens // args.max_seq_len
    if sequences < size:
        raise ConfigError(f"--batch-tokens {args.batch_tokens} holds {sequences} sequence(s) of "
                          f"--max-seq-len {args.max_seq_len}, fewer than the {size} processes: raise it")
    if not (dist.is_available() and (args.device == "cuda" or dist.is_gloo_available())):
        raise ConfigError(f"WORLD_SIZE={size} but this torch cannot run torch.distributed on "
                          f"{args.device}: run one process")
    if args.device == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank))
    else:
        dist.init_process_group("gloo")
    atexit.register(dist.destroy_process_group)
    # Long timeout: the data-loading barrier waits while local rank 0 tokenizes a corpus.
    CONTROL_GROUP = dist.new_group(backend="gloo", timeout=datetime.timedelta(hours=3))


def load_data_in_turn(args) -> dict[str, np.ndarray]:
    """load_data, local rank 0 first: it fills the token cache (or downloads) once, and the
    other ranks then read the cache."""
    if world()[1] == 1:
        return load_data(args)
    first = int(os.environ.get("LOCAL_RANK", "0")) == 0
    if not first:
        dist.barrier(group=CONTROL_GROUP)
    try:
        return load_data(args)
    finally:
        if first:
            dist.barrier(group=CONTROL_GROUP)


def shard(rows: torch.Tensor) -> torch.Tensor:
    """This rank's contiguous block of the rows (block sizes differ by at most one, the
    larger ones first); all of them in a single process."""
    rank, size = world()
    return rows.tensor_split(size)[rank] if size > 1 else rows


def shard_size(rows: int) -> int:
    """len(shard(tensor with this many rows))."""
    rank, size = world()
    return rows // size + (rank < rows % size)


def all_reduce_sum_(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Sum the tensors over the ranks, in place: one all-reduce per dtype, of a flat copy.
    Every rank receives the same bytes, so all hold identical sums."""
    by_dtype: dict = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for group in by_dtype.values():
        flat = torch.cat([t.reshape(-1) for t in group])
        dist.all_reduce(flat)
        for t, part in zip(group, flat.split([t.numel() for t in group])):
            t.copy_(part.view_as(t))
    return tensors


def agree_on_stop(stop_signal: list) -> None:
    """After every step: when any rank got SIGINT/SIGTERM, all stop at this step boundary
    with the same signal (the largest number). On the host through gloo, so no device sync."""
    if world()[1] == 1:
        return
    flag = torch.tensor([stop_signal[0] if stop_signal else 0])
    dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=CONTROL_GROUP)
    if flag.item():
        stop_signal[:] = [int(flag.item())]


# ----------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------

def chunk_loss(model: GPT, inputs: torch.Tensor, targets: torch.Tensor, block_mask=None) -> torch.Tensor:
    """Mean next-token cross-entropy of one chunk: the forward that train_step differentiates
    (on the fast path compiled with its backward, so the fp32 logits are never materialised)."""
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=inputs.is_cuda):
        logits = model(inputs, block_mask)
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def compile_static(fn):
    """torch.compile with one static graph per input shape (dynamic=False: no dynamic-shape
    graph after the second length), and room for them all: six sequence lengths, an eval
    shape or two, a remainder chunk where memory cuts microbatches."""
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), 64))
    return torch.compile(fn, dynamic=False, fullgraph=True)


class DeviceHung(RuntimeError):
    """The device did not produce a value within DEVICE_WAIT_LIMIT_S."""


def wait_for_event(event, stop_signal: list = ()) -> None:
    """Wait until a CUDA event has completed, polling it rather than waiting in C: signal
    handlers run meanwhile, and a hung device (a run on an H100 once stalled past SIGTERM,
    docs/performance.md) raises DeviceHung instead of blocking the process, and the grid
    behind it, for ever. Every wait of the training loop and the eval goes through here."""
    started, stop_seen = time.monotonic(), None
    while not event.query():
        now = time.monotonic()
        stop_seen = stop_seen or (now if stop_signal else None)
        if now - started > DEVICE_WAIT_LIMIT_S or (stop_seen and now - stop_seen > DEVICE_WAIT_AFTER_STOP_S):
            raise DeviceHung(f"no result from the device after {now - started:.0f} s")
        time.sleep(1e-4)


def sync(args, stop_signal: list = ()) -> None:
    """Wait for the device's queued work (timing spans end here), as wait_for_event does."""
    if args.device == "cuda":
        event = torch.cuda.Event()
        event.record()
        wait_for_event(event, stop_signal)


class DeviceScalar:
    """A 0-d tensor's value, read on the host without draining the device's queue: .item()
    waits for all queued work, this copies into pinned memory behind an event, so get()
    waits only until the value itself is computed (for the training loss, a step ago)."""

    def __init__(self, value: torch.Tensor):
        value, self.event = value.detach(), None
        if value.is_cuda:
            self.host = torch.empty((), dtype=value.dtype, pin_memory=True)
            self.host.copy_(value, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.host = value

    def get(self, stop_signal: list = ()) -> float:
        if self.event is not None:
            wait_for_event(self.event, stop_signal)
        return self.host.item()


class Trainer:
    """Owns everything a checkpoint must capture, so that state_dict() is the whole run."""

    def __init__(self, args, data: dict[str, np.ndarray]):
        self.args = args
        self.rank, self.world_size = world()
        torch.manual_seed(args.seed)
        self.parametrization = make_parametrization(args)
        self.model = build_model(args, self.parametrization)
        if self.world_size > 1:  # identical already (same seed); made sure of, as DDP does
            for p in self.model.parameters():
                dist.broadcast(p.data, 0)
        self.n_params = sum(p.numel() for p in self.model.parameters())
        args.n_params = self.n_params
        self.decay_law_params = decay_law_params(args)
        # Fused AdamW: one kernel per group on CUDA, and 5-8x faster than the loop on CPU.
        self.optimizer = torch.optim.AdamW(self.parametrization.param_groups(self.model), eps=ADAM_EPS,
                                           fused=True)
        fixed = None if args.microbatches == "dynamic" else args.microbatches
        self.microbatches = MicrobatchScheduler(self.n_params, args.seed, fixed)
        to_device = lambda t: torch.from_numpy(t.astype(np.int32)).to(args.device)
        self.sampler = TrainSampler(to_device(data["train"]), args.seed)
        self.eval_sets = {name: eval_windows(to_device(tokens), args.eval_tokens, args.max_seq_len)
                          for name, tokens in data.items() if name != "train"}
        # The step's loss and the eval, compiled on the fast path (--compile) with FlexAttention
        # on CUDA; every shape compiles before the training clock runs (compile_for).
        self.loss_fn, self.eval_fn = ((compile_static(chunk_loss), compile_static(chunk_eval))
                                      if args.compile else (chunk_loss, chunk_eval))
        flex = args.compile and args.device == "cuda" and flex_attention is not None
        self.block_mask_for = (functools.partial(causal_block_mask, device=args.device) if flex
                               else lambda seq_len: None)
        self.compiled_shapes: set = set()
        self.compile_seconds = 0.0
        started = time.perf_counter()
        self.chunk_tokens = memory_chunk_tokens(self.model, args, self.loss_fn, self.block_mask_for,
                                                probe_tokens=shard_size(args.batch_tokens // args.max_seq_len)
                                                * args.max_seq_len if args.compile else 8192)
        if args.compile:
            self.compile_seconds += time.perf_counter() - started
        self.tokens = self.step = 0
        self.train_seconds = 0.0
        self.clock = None  # perf_counter at the start of the running span of training steps
        self.next_eval = 0
        self.next_checkpoint = args.checkpoint_every_tokens or None
        self.log_path = args.out / f"{args.run_name}.json"
        self.checkpoint_path = args.out / f"{args.run_name}.ckpt"
        self.stop_signal: list = []  # run()'s: a device wait gives up sooner once it is set
        self.log = {"schema_version": SCHEMA_VERSION, "run_name": args.run_name, "status": "running",
                    "command": [sys.executable] + sys.argv, "config": config_for_log(args),
                    "env": environment(args), "eval_sets": list(self.eval_sets),
                    "curve": [], "events": [], "summary": {}}

    # -- checkpoints ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "microbatches": self.microbatches.state_dict(),
                "sampler": self.sampler.generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if self.args.device == "cuda" else None,
                "tokens": self.tokens, "step": self.step, "train_seconds": self.train_seconds,
                "next_eval": self.next_eval, "next_checkpoint": self.next_checkpoint,
                "chunk_tokens": self.chunk_tokens, "log": self.log}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.microbatches.load_state_dict(state["microbatches"])
        self.sampler.generator.set_state(state["sampler"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and self.args.device == "cuda":
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        for key in ("tokens", "step", "train_seconds", "next_eval", "next_checkpoint", "chunk_tokens"):
            setattr(self, key, state[key])
        self.log = state["log"]

    def save_checkpoint(self) -> None:
        """Under torchrun rank 0 writes (every rank holds the same state), and every rank
        returns once the checkpoint is on disk."""
        if self.rank == 0:
            tmp = self.checkpoint_path.with_name(f".{self.checkpoint_path.name}.tmp{os.getpid()}")
            self.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(self.state_dict(), tmp)
            os.replace(tmp, self.checkpoint_path)
        if self.world_size > 1:
            dist.barrier(group=CONTROL_GROUP)

    def write_log(self) -> None:
        if self.rank == 0:  # under torchrun every rank keeps the same log; rank 0 writes it
            write_json(self.log_path, self.log)

    # -- one optimizer step --------------------------------------------------------------
    def train_step(self) -> tuple[float, float | None]:
        """One optimizer step, waited for: (mean train loss, grad norm or None). The training
        loop uses launch_step, which does not wait."""
        loss, grad_norm = self.launch_step()
        return loss.get(), grad_norm

    def launch_step(self) -> tuple[DeviceScalar, float | None]:
        """Accumulate `count` microbatches of batch_tokens, each cut into memory-sized
        chunks, then one AdamW step, all queued on the device without waiting for it, except
        every sample_every steps for the gradient norm (the microbatch scheduler needs it
        before the next step, as in hlb-gpt). Returns (mean train loss, grad norm or None)."""
        args, model = self.args, self.model
        seq_len = seq_len_at(self.tokens, args)
        batch_size = args.batch_tokens // seq_len
        count = self.microbatches.count
        block_mask = self.block_mask_for(seq_len)
        replay = self.sampler.generator.get_state() if self.world_size > 1 else None
        while True:
            try:
                loss_sum = torch.zeros((), device=args.device)
                per_chunk = max(1, self.chunk_tokens // seq_len)
                for _ in range(count):
                    inputs, targets = self.sampler.batch(batch_size, seq_len)
                    inputs, targets = shard(inputs), shard(targets)  # this rank's block (torchrun)
                    for x, y in zip(inputs.split(per_chunk), targets.split(per_chunk)):
                        loss = self.loss_fn(model, x, y, block_mask)
                        (loss * (x.shape[0] / (batch_size * count))).backward()
                        loss_sum += loss.detach() * x.shape[0]
                break
            except torch.cuda.OutOfMemoryError:
                self.optimizer.zero_grad(set_to_none=True)
                if per_chunk == 1:
                    raise RuntimeError(f"out of GPU memory with one sequence of {seq_len} tokens "
                                       "per chunk: lower --max-seq-len or use a smaller model")
                self.chunk_tokens = per_chunk * seq_len // 2
                self.log["events"].append({"tokens": self.tokens, "step": self.step, "kind": "oom_shrink",
                                           "detail": f"chunk now {self.chunk_tokens} tokens"})
                torch.cuda.empty_cache()
                if replay is not None:  # the same batches again: the ranks' samplers stay in step
                    self.sampler.generator.set_state(replay)
        if self.world_size > 1:  # sum over the ranks, once per step, after the last backward
            all_reduce_sum_([loss_sum] + [p.grad for p in model.parameters() if p.grad is not None])
        train_loss = loss_sum / (batch_size * count)
        finite = torch.isfinite(train_loss)

        dynamic = args.weight_decay == "dynamic"
        weight_decay = dynamic_weight_decay(train_loss, self.decay_law_params) if dynamic else args.weight_decay
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * lr_multiplier(group["schedule"], self.tokens,
                                                              args.warmup_tokens, args.batch_tokens)
            if not dynamic:
                group["weight_decay"] = weight_decay * group["weight_decay_mult"]
                continue
            # The dynamic decay is a tensor (a float would need the loss on the host, a sync
            # every step), applied as AdamW applies it, p *= 1 - lr * wd, skipped with the
            # step; Adam's update does not depend on p, so doing it first changes nothing.
            group["weight_decay"] = 0.0
            if group["weight_decay_mult"]:
                factor = 1 - group["lr"] * group["weight_decay_mult"] * weight_decay
                with torch.no_grad():
                    torch._foreach_mul_(group["params"], torch.where(finite, factor, 1.0))
        grad_norm = None
        if self.step % MicrobatchScheduler.sample_every == 0:
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            grad_norm = DeviceScalar(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))
        if self.optimizer.defaults.get("fused"):
            # The fused kernel skips the update (and undoes its step count) where found_inf
            # is set, GradScaler's mechanism: a non-finite loss skips the step on the device.
            self.optimizer.found_inf = (~finite).float()
            self.optimizer.step()
        elif finite.item():
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if grad_norm is not None:  # read while the optimizer step, queued behind it, runs
            grad_norm = grad_norm.get(self.stop_signal)
            self.microbatches.update(self.step, grad_norm)
        self.tokens += count * batch_size * seq_len
        self.step += 1
        self.last = {"seq_len": seq_len, "batch_size": batch_size, "microbatches": count}
        return DeviceScalar(train_loss), grad_norm

    def compile_for(self, seq_len: int) -> None:
        """Compile, outside the training clock, the graphs that a step at this length runs
        (one per distinct chunk shape): each new shape goes once through forward and
        backward on stand-in tokens (autograd.grad: no .grad is touched), and the time is
        booked as compile_seconds. train_seconds then counts training alone, like hlb-gpt's
        timer (hlb-gpt compiles nothing)."""
        if not self.args.compile:
            return
        batch_size = shard_size(self.args.batch_tokens // seq_len)  # this rank's rows (torchrun)
        per_chunk = max(1, self.chunk_tokens // seq_len)
        sizes = {min(per_chunk, batch_size), batch_size % per_chunk} - {0}
        new = sorted(size for size in sizes if (size, seq_len) not in self.compiled_shapes)
        if not new:
            return
        self.clock_stop()
        started = time.perf_counter()
        params = [p for p in self.model.parameters() if p.requires_grad]
        for size in new:
            x, y = standin_batch(size, seq_len, self.args.device)
            loss = self.loss_fn(self.model, x, y, self.block_mask_for(seq_len))
            torch.autograd.grad(loss, params)
            self.compiled_shapes.add((size, seq_len))
        sync(self.args, self.stop_signal)
        self.compile_seconds += time.perf_counter() - started

    def clock_start(self) -> None:
        if self.clock is None:
            sync(self.args, self.stop_signal)
            self.clock = time.perf_counter()

    def clock_stop(self) -> None:
        """Add the span since clock_start to train_seconds. Steps are timed in spans between
        synchronisations (eval, checkpoint, compile, the end), not one by one: a sync per
        step would idle the GPU while the host queues the next step."""
        if self.clock is not None:
            sync(self.args, self.stop_signal)
            self.train_seconds += time.perf_counter() - self.clock
            self.clock = None

    # -- the loop ------------------------------------------------------------------------
    def record_eval(self, train_loss: float, grad_norm: float | None) -> None:
        results = evaluate(self.model, self.eval_sets, self.chunk_tokens, self.args, self.eval_fn,
                           self.block_mask_for, self.stop_signal)
        last = getattr(self, "last", {"seq_len": seq_len_at(0, self.args), "batch_size": 0, "microbatches": 0})
        self.log["curve"].append({
            "tokens": self.tokens, "step": self.step, "train_seconds": round(self.train_seconds, 3),
            "lr": {g["name"]: g["lr"] for g in self.optimizer.param_groups}, **last,
            "grad_norm": grad_norm, "eval": results,
            # null before the first step: strict JSON has no NaN
            "train_loss": train_loss if math.isfinite(train_loss) else None})
        self.write_log()

    def finished(self) -> bool:
        args = self.args
        return self.step >= args.max_steps or bool(args.total_tokens and self.tokens >= args.total_tokens)

    def run(self, stop_signal: list) -> int:
        args = self.args
        progress = None
        if not args.quiet and self.rank == 0:
            from tqdm import tqdm
            progress = tqdm(total=args.total_tokens, initial=self.tokens, unit="tok", unit_scale=True,
                            dynamic_ncols=True)
        self.stop_signal = stop_signal
        try:
            exit_code = self.train_until_done(progress)
        except DeviceHung as e:
            # No checkpoint (saving one needs the device) and no sync for the clock: the last
            # periodic checkpoint resumes the run, and its last timed span is lost.
            self.clock = None
            self.log["status"] = "interrupted"
            self.log["events"].append({"tokens": self.tokens, "step": self.step, "kind": "device_hung",
                                       "detail": str(e)})
            exit_code = EXIT_DEVICE_HUNG
        self.clock_stop()
        if progress is not None:
            progress.close()
        if exit_code == 0:
            self.log["status"] = "completed"
        self.log["summary"].update({"tokens": self.tokens, "steps": self.step,
                                    "train_seconds": round(self.train_seconds, 3),
                                    "compile_seconds": round(self.compile_seconds, 3),
                                    # None only if the device hung in the first eval
                                    "final_eval": self.log["curve"][-1]["eval"] if self.log["curve"] else None})
        self.log["summary"].setdefault("diverged_at", None)
        self.write_log()
        if exit_code == 0 and self.rank == 0 and self.checkpoint_path.exists():
            self.checkpoint_path.unlink()  # a finished run is never resumed; save the disk
        return exit_code

    def train_until_done(self, progress) -> int:
        """The training loop: steps, evals and checkpoints until the run ends, diverges or is
        stopped by a signal (self.stop_signal). Returns the exit code."""
        args = self.args
        if self.tokens == 0 and not self.log["curve"]:
            self.record_eval(float("nan"), None)  # the curve starts at initialisation
            self.next_eval = args.eval_every_tokens
        # grad_norm: the latest sample, which a resumed run takes from the checkpoint.
        train_loss, grad_norm, exit_code = float("nan"), self.microbatches.grad_norm, 0
        pending = None  # (step, tokens, loss) of the newest step, while its loss is unread
        while not self.finished():
            self.compile_for(seq_len_at(self.tokens, args))
            self.clock_start()
            loss, step_grad_norm = self.launch_step()
            agree_on_stop(self.stop_signal)  # torchrun: all ranks stop at the same step
            grad_norm = step_grad_norm if step_grad_norm is not None else grad_norm
            # On CUDA a step's loss is read once the next step is queued behind it, so the
            # host never waits for the device; at an eval, checkpoint or the end (the clock
            # stops there anyway), and on CPU, at once.
            to_check = [pending] if pending else []
            pending = (self.step, self.tokens, loss)
            boundary = (self.tokens >= self.next_eval or self.finished() or bool(self.stop_signal) or
                        bool(self.next_checkpoint and self.tokens >= self.next_checkpoint))
            if boundary or args.device != "cuda":
                to_check, pending = to_check + [pending], None
            diverged = None
            for step, tokens, value in to_check:
                train_loss = value.get(self.stop_signal)
                if not math.isfinite(train_loss) or (tokens > args.warmup_tokens and
                                                     train_loss > args.diverge_loss):
                    diverged = {"step": step, "tokens": tokens, "train_loss": train_loss}
                    break
            if progress is not None:  # a tqdm without a total has no truth value
                progress.update(self.tokens - progress.n)
                progress.set_postfix(loss=f"{train_loss:.3f}", step=self.step,
                                     val=f"{self.log['curve'][-1]['eval']['valid']['loss']:.3f}")
            if diverged:
                self.clock_stop()
                self.log["status"] = "diverged"
                self.log["summary"]["diverged_at"] = diverged
                exit_code = EXIT_DIVERGED
                break
            if self.tokens >= self.next_eval or self.finished():
                self.clock_stop()
                self.record_eval(train_loss, grad_norm)
                while self.next_eval <= self.tokens:
                    self.next_eval += args.eval_every_tokens
            if self.next_checkpoint and self.tokens >= self.next_checkpoint and not self.finished():
                self.clock_stop()
                self.save_checkpoint()
                while self.next_checkpoint <= self.tokens:
                    self.next_checkpoint += args.checkpoint_every_tokens
            if self.stop_signal:
                self.clock_stop()
                self.log["status"] = "interrupted"
                self.log["events"].append({"tokens": self.tokens, "step": self.step, "kind": "signal",
                                           "detail": signal.Signals(self.stop_signal[0]).name})
                self.save_checkpoint()
                exit_code = EXIT_SIGNAL[self.stop_signal[0]]
                break
        return exit_code


# ----------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------

@torch.no_grad()
def sample(model: GPT, args, prompt: str = "In 1856, Abraham Lincoln", new_tokens: int = 128) -> str:
    encoder = get_tokenizer()
    tokens = torch.tensor([encoder.encode_ordinary(prompt)], device=args.device)
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    model.eval()
    for _ in range(new_tokens):
        with autocast(args):
            logits = model(tokens[:, -args.max_seq_len:])[:, -1].float()
        probs = logits[:, :encoder.n_vocab].softmax(-1)
        tokens = torch.cat([tokens, torch.multinomial(probs, 1, generator=generator)], dim=1)
    return encoder.decode(tokens[0].tolist())


# ----------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------

def main(argv=None) -> int:
    try:
        args = resolve(parse_args(argv))
        if args.show_lr_table:
            print(make_parametrization(args).lr_table())
            return 0
        init_distributed(args)  # only under torchrun with several processes
        cap_gpu_memory(args)
        log_path = args.out / f"{args.run_name}.json"
        if args.resume and log_path.exists():
            try:
                status = json.loads(log_path.read_text()).get("status")
            except (OSError, ValueError):
                status = None
            if status == "completed":
                if world()[0] == 0:
                    print(f"{log_path}: already completed; nothing to do")
                return 0
        data = load_data_in_turn(args)
    except ConfigError as e:
        print(f"main.py: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT

    trainer = Trainer(args, data)
    if args.resume and trainer.checkpoint_path.exists():
        try:
            # Under torchrun every rank loads it, onto its own device.
            trainer.load_state_dict(torch.load(trainer.checkpoint_path, weights_only=False,
                                               map_location=args.device if trainer.world_size > 1 else None))
        except Exception as e:  # unreadable, or saved by a run with other shapes
            detail = " ".join(str(e).split())[:200]
            print(f"main.py: error: cannot resume from {trainer.checkpoint_path} ({type(e).__name__}: "
                  f"{detail}); delete it to start the run over", file=sys.stderr)
            return EXIT_BAD_INPUT
        trainer.log["status"] = "running"
        trainer.log["events"].append({"tokens": trainer.tokens, "step": trainer.step,
                                      "kind": "resumed", "detail": str(trainer.checkpoint_path)})
        # The log on disk may hold points a killed process wrote after its last checkpoint:
        # replace it with the checkpoint's own at once.
        trainer.write_log()
        if trainer.rank == 0:
            print(f"resumed {args.run_name} at step {trainer.step}, {trainer.tokens:,} tokens")
    if not args.quiet and trainer.rank == 0:
        print(f"{args.run_name}: {args.param} ({args.lr_recipe} lr recipe), width {args.width}, "
              f"depth {args.depth}, {trainer.n_params:,} parameters, lr {args.lr:.4g}, warmup "
              f"{args.warmup_tokens:,} tokens, device {args.device}, chunk {trainer.chunk_tokens:,} tokens"
              + (f", {trainer.world_size} processes" if trainer.world_size > 1 else ""))

    stop_signal: list = []
    handler = lambda signum, frame: stop_signal.append(signum)
    previous = {s: signal.signal(s, handler) for s in EXIT_SIGNAL}
    try:
        exit_code = trainer.run(stop_signal)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    summary = trainer.log["summary"]
    if trainer.rank != 0:  # under torchrun rank 0 reports
        return exit_code
    print(f"{args.run_name}: {trainer.log['status']} after {summary['steps']} steps, "
          f"{summary['tokens']:,} tokens, {summary['train_seconds']:.1f} s of training; "
          + ", ".join(f"{n} loss {r['loss']:.4f}" for n, r in (summary["final_eval"] or {}).items()))
    if exit_code == EXIT_DEVICE_HUNG:
        print("main.py: error: the device stopped responding (see the log's device_hung event); "
              "run the same command with --resume to continue from the last checkpoint", file=sys.stderr)
        sys.stderr.flush(), sys.stdout.flush()
        os._exit(exit_code)  # tearing down a hung CUDA context can block for ever
    if args.sample and exit_code == 0:
        print(sample(trainer.model, args))
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
