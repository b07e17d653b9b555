"""main.py's command line: every flag with its default, the presets, and `resolve_flags`,
which checks the flags and derives what they leave open, once, into a read-only `Config`.

The defaults that are hlb-gpt's size laws (width, depth and microbatch tokens from
--model-scale) live here because they are flag defaults; the learning-rate law needs the
model's parameter count and is applied by main.resolve, which finishes the Config.
Errors are ConfigError: main() prints them as one line and exits with status 2.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from runlog import EXIT_BAD_INPUT

REPO = Path(__file__).resolve().parent
DESCRIPTION = "A GPT trainer for studying learning-rate warmup under SP, µP and u-µP."
VOCAB_SIZE = 50304  # GPT-2's 50257 tokens rounded up to a multiple of 64, for fast matmuls


class ConfigError(Exception):
    """Bad input: main() prints it as one line and exits with status 2."""


class Config(argparse.Namespace):
    """The resolved settings, read-only: every flag of build_parser plus the derived values
    (qk_dim, lr, n_params, ...). A changed copy comes from replace(); nothing assigns to one
    after resolve, so the settings a run logs are the ones it used."""

    def __init__(self, **settings):
        for name, value in settings.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError(f"Config is read-only: use config.replace({name}=...) for a changed copy")

    def __delattr__(self, name):
        raise AttributeError(f"Config is read-only: cannot delete {name!r}")

    def replace(self, **changes) -> "Config":
        unknown = sorted(set(changes) - set(vars(self)))
        if unknown:
            raise TypeError(f"Config has no settings {unknown}: check the spelling")
        return Config(**{**vars(self), **changes})


def hlb_batch_tokens(model_scale: float) -> int:
    """hlb-gpt's tokens per microbatch: the capacity of a 40 GB A100 at this model scale.
    Here it is part of the recipe (it sets the optimization batch and the step-equivalent
    clock), not a memory limit: memory only decides how many chunks a microbatch is cut into."""
    return math.floor(114688 / (1.52174 + 0.482 * model_scale ** 0.87))


def hlb_width(model_scale: float) -> int:
    return round(384 * math.log2(1 + model_scale) / 64) * 64


def hlb_depth(model_scale: float) -> int:
    return round(8 * math.log2(1 + model_scale))


# A CPU run whose estimated time (parameters x tokens / CPU_PARAM_TOKENS_PER_S) is longer than
# this is refused without --allow-slow-cpu: hlb-gpt's default model would silently train for
# days. Measured on 2 cores: the 46M default model at 224 tokens/s (1.0e10 parameter-tokens/s),
# the 6.5M cpu-small preset 250K tokens in 84 s (1.9e10); the slower rate estimates.
CPU_RUN_LIMIT_S = 3600
CPU_PARAM_TOKENS_PER_S = 1.0e10

# Which optimizer groups warm up (--warmup-groups): "all", or "hlb", hlb-gpt's own choice in
# which its readout and position-bias groups ignore the warmup (main.lr_multiplier).
WARMUP_GROUPS = ("all", "hlb")

# How many of u-µP's residual branches one fused block stands for (--umup-block-branches,
# mup_patch.rules.umup_residual_taus). u-µP's transformer alternates an attention and an MLP
# branch; main.py's block adds attention and GeGLU through one matmul, so it stands for both:
# 2. 1 is the rule the first u-µP runs used (the blocks adding half u-µP's variance).
UMUP_BLOCK_BRANCHES = 2

# u-µP's default base lr (--param umup): its lrs are on their own scale (N(0,1) weights, the
# width rules absolute, so --lr is u-µP's global η), where hlb-gpt's law means nothing. Chosen
# by a CPU sweep of the cpu-small preset (docs/umup.md).
UMUP_DEFAULT_LR = 1.0

PRESETS = {
    # Under two minutes on 2 CPU cores, the first run's tokenizing included (its 20M characters of
    # text hold about 5M tokens, 30x what it trains on); the 50K-vocabulary readout dominates the cost.
    "cpu-small": dict(width=64, depth=2, max_seq_len=128, batch_tokens=4096,
                      total_tokens=150_000, warmup_tokens=40_960, eval_tokens=16_384,
                      eval_every_tokens=50_000, lr=1e-2, train_chars=20_000_000),
}


def refuse_slow_cpu_run(config: Config) -> None:
    """ConfigError for a CPU run estimated to take over CPU_RUN_LIMIT_S, unless
    --allow-slow-cpu: without it hlb-gpt's default model would start silently and train for
    days. The estimate counts the fewest tokens the run can take (dynamic microbatching may
    take more steps' worth), at CPU_PARAM_TOKENS_PER_S."""
    if config.device != "cpu" or config.allow_slow_cpu:
        return
    tokens = min(config.total_tokens or math.inf, config.max_steps * config.batch_tokens)
    seconds = config.n_params * tokens / CPU_PARAM_TOKENS_PER_S
    if seconds > CPU_RUN_LIMIT_S:
        hours = seconds / 3600
        duration = f"about {hours / 24:.0f} days" if hours >= 48 else f"about {hours:.0f} hours"
        raise ConfigError(f"this run ({config.n_params / 1e6:.1f}M parameters, at least {tokens:,} "
                          f"tokens) would take {duration} on a CPU: use --preset cpu-small for a "
                          "one-minute CPU run, or a GPU; --allow-slow-cpu runs it anyway")


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


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows every flag's default once: argparse's "(default: X)", or the help text's
    own "(default: ...)" in words where the default is derived (argparse would print None)."""

    def _get_help_string(self, action):
        return action.help if "(default" in (action.help or "") else super()._get_help_string(action)


def preset_help() -> str:
    """What each preset sets, from PRESETS itself, so that the help cannot drift from it."""
    def flag(name: str, value) -> str:
        return f"--{name.replace('_', '-')} {value if isinstance(value, int) else format(value, 'g')}"
    return "; ".join(f"{name} sets " + " ".join(flag(*item) for item in settings.items())
                     for name, settings in sorted(PRESETS.items()))


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="main.py", description=DESCRIPTION, formatter_class=DefaultsHelpFormatter)
    add = p.add_argument
    g = p.add_argument_group("data")
    add = g.add_argument
    add("--data", choices=["wikitext-103", "wikitext-2"],
        help="dataset to download (through `datasets`, else the official raw zip) "
        "(default: wikitext-103, unless --data-dir)")
    add("--data-dir", type=Path, help="read local train/valid text files (plain or .xz) "
        "from this folder instead of downloading, e.g. ../shared/data/books (default: download)")
    add("--eval-data", action="append", default=[], metavar="NAME=PATH",
        help="an extra validation set, logged as its own curve (repeatable) (default: none)")
    add("--train-chars", type=int, default=0,
        help="tokenize only the training text's first N characters (0: all of it); a short run "
        "samples from far fewer tokens than a corpus holds, and tokenizing 200M characters takes "
        "a minute on 2 cores")
    add("--cache-dir", type=Path, default=REPO / "data_cache",
        help="where tokenized data is cached, keyed by the content")
    add("--preset", choices=sorted(PRESETS), help="a named set of defaults; explicit flags win. "
        f"{preset_help()} (default: none)")

    g = p.add_argument_group("model")
    add = g.add_argument
    add("--model-scale", type=positive(float), default=1.0,
        help="hlb-gpt's size knob: width 384*log2(1+s) (to 64), depth 8*log2(1+s)")
    add("--width", type=positive(int), help="override the width (default: from --model-scale)")
    add("--depth", type=positive(int), help="override the depth (default: from --model-scale)")
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
        help="hlb: hlb-gpt's group multipliers, output betas and per-group schedules (under mup: "
        "those of the base width, carried to --width by µP's rules); uniform: one lr, one "
        "schedule for every group (default: hlb for sp, uniform otherwise; umup: uniform only)")
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
    add("--umup-block-branches", type=int, choices=[1, 2], default=UMUP_BLOCK_BRANCHES,
        help="u-µP: how many of u-µP's residual branches one fused block stands for: 2 (its "
        "attention and its MLP, u-µP's rule: the blocks add 2 umup-residual-mult^2 times the "
        "embedding's variance) or 1 (half that, the rule of the first u-µP runs)")
    add("--umup-decay-lr", type=positive(float), help="u-µP: the lr its independent weight "
        "decay is anchored to (per-step shrink umup-decay-lr x wd, whatever --lr); to match a "
        "µP arm run at another lr, pass that lr (default: the lr µP takes by default, hlb-gpt's "
        "law at --base-width, 2.53e-3 at 384)")
    add("--weight-decay", default="dynamic", help="'dynamic' (hlb-gpt: 16/(0.007*(0.01 "
        "lnP)^-4)^loss) or a fixed value; hidden matrices only, in every parametrization")
    add("--show-lr-table", action="store_true",
        help="print every parameter's class, shape, init std and lr, then exit")
    add("--prepare-data", action="store_true",
        help="tokenize the data into the token cache, then exit (before runs that start "
        "together, so that they do not each tokenize)")

    g = p.add_argument_group("schedule and length")
    add = g.add_argument
    add("--warmup-tokens", type=parse_count,
        help="linear warmup length in tokens (default: 100 step-equivalents, hlb-gpt's 100 steps)")
    add("--warmup-groups", choices=WARMUP_GROUPS, default="all",
        help="which optimizer groups warm up: all (every group; the hlb recipe's readout and "
        "position-bias groups start their own decay at the warmup's end), or hlb (as hlb-gpt: "
        "those two groups start at full rate and ignore --warmup-tokens); the same for all arms "
        "of a comparison, as uniform recipes warm up every group either way")
    add("--batch-tokens", type=positive(parse_count), help="tokens per microbatch and per "
        "step-equivalent (default: hlb-gpt's 57,236 at model scale 1)")
    add("--microbatches", default="dynamic", help="microbatches per optimizer step: 'dynamic' "
        "(hlb-gpt's rule from the gradient norm) or a fixed count, which keeps the batch, and so "
        "the step count, the same in every run of a grid")
    add("--total-tokens", type=positive(parse_count),
        help="stop after this many tokens (default: no limit; --max-steps ends the run)")
    add("--max-steps", type=positive(int), default=1000, help="stop after this many optimizer steps")
    add("--seq-len-start", type=positive(int), default=32, help="initial sequence length")
    add("--seq-len-double-every", type=positive(float), default=80,
        help="double the sequence length every this many step-equivalents")

    g = p.add_argument_group("evaluation, logging and checkpoints")
    add = g.add_argument
    add("--eval-every-tokens", type=positive(parse_count), default=2_000_000,
        help="evaluate every this many training tokens (and at the start and the end)")
    add("--eval-tokens", type=positive(parse_count), default=153_600,
        help="tokens per eval set, as fixed windows of --max-seq-len")
    add("--out", type=Path, default=REPO / "out", help="folder for the run log and checkpoint "
        "(git-ignored; the committed study logs are in runs/)")
    add("--run-name", help="run log name (default: built from the key settings)")
    add("--checkpoint-every-tokens", type=parse_count, default=25_000_000,
        help="checkpoint interval in tokens (0: only on SIGINT/SIGTERM)")
    add("--resume", action="store_true", help="continue from the run's checkpoint; "
        "a completed run exits at once")
    add("--diverge-loss", type=positive(float), help="after warmup, a train loss above this "
        "means diverged (default: ln(vocab)+1 = 11.83)")
    add("--quiet", action="store_true", help="no progress bar (for grids)")
    add("--wandb", metavar="PROJECT", help="also mirror the run log to this Weights & Biases "
        "project (needs the wandb package; WANDB_MODE=offline keeps it local); the JSON log "
        "is the same with or without it (default: off)")
    add("--sample", action="store_true", help="print a continuation of hlb-gpt's demo prompt")
    add("--seed", type=int, default=0, help="seed of the initialisation, the training batches "
        "and the microbatch dithering")
    add("--device", choices=["cuda", "cpu"], help="where to train (default: cuda when available, else cpu)")
    add("--allow-slow-cpu", action="store_true", help="run on the CPU even a run estimated to "
        f"take over {CPU_RUN_LIMIT_S // 60} minutes there (refused without it: see --preset cpu-small)")

    g = p.add_argument_group("performance (docs/performance.md)")
    add = g.add_argument
    add("--compile", action=argparse.BooleanOptionalAction, default=None,
        help="the fast path: torch.compile of the forward/backward and the eval, one graph per "
        "shape, compiled before the timer starts; on CUDA also FlexAttention with the position "
        "bias computed in-kernel (default: on for cuda, off for cpu)")
    add("--compile-scope", choices=["blocks", "whole"], default="blocks",
        help="with --compile: 'blocks' compiles one transformer block (shared by all blocks) and "
        "the readout with its loss, so each new sequence length costs one block's compile; "
        "'whole' compiles the whole step as one graph (the compile time grows with the depth)")
    add("--compile-shapes", choices=["static", "dynamic"], default="static",
        help="with --compile: 'static' compiles a graph per shape (six sequence lengths, chunk "
        "sizes), each specialised to it; 'dynamic' compiles one graph with symbolic sizes for all "
        "of them (fewer compiles at start-up; whether its kernels train as fast is measured by "
        "experiments/wallclock_bench.py)")
    add("--fused-loss", choices=["compiled", "liger"], default="compiled",
        help="the training loss's readout + cross-entropy with --compile-scope blocks: "
        "'compiled' by torch.compile (the logits never leave the fused kernels in fp32); "
        "'liger' by liger-kernel's chunked fused linear cross-entropy (needs the "
        "liger-kernel package and CUDA)")
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


def resolve_flags(flags: argparse.Namespace) -> Config:
    """The flags checked, with every quantity they leave open derived once (input checks
    name the fix); the lr and the parameter count are main.resolve's. The flags themselves
    are left as they are: the derivation works on a copy."""
    args = argparse.Namespace(**vars(flags))
    if args.data and args.data_dir:
        raise ConfigError(f"--data {args.data} and --data-dir {args.data_dir} both name the "
                          "training data: drop one")
    # What the run trains on, as its log's config.data records it: a downloaded set or a folder.
    args.data = str(args.data_dir) if args.data_dir else args.data or "wikitext-103"
    args.width = args.width or hlb_width(args.model_scale)
    args.depth = args.depth or hlb_depth(args.model_scale)
    for name in ("width", "base_width"):
        w = getattr(args, name)
        if w % args.qk_div:
            raise ConfigError(f"--{name.replace('_', '-')} {w} does not split into whole q/k "
                              f"(width/{args.qk_div}) and value widths: use a multiple of {args.qk_div}")
    args.qk_dim = args.width // args.qk_div
    args.lr_recipe = args.lr_recipe or ("hlb" if args.param == "sp" else "uniform")
    if args.param == "umup" and args.lr_recipe == "hlb":
        raise ConfigError("--param umup replaces hlb-gpt's lr recipe: drop --lr-recipe hlb")
    # u-µP's multipliers mean nothing elsewhere, and µP's nothing under u-µP (SP has always
    # ignored µP's): a flag that would change nothing is an error.
    umup_defaults = {"umup_attn_mult": 1.0, "umup_act_mult": 1.0, "umup_residual_mult": 1.0,
                     "umup_loss_mult": 1.0, "umup_block_branches": UMUP_BLOCK_BRANCHES, "umup_decay_lr": None}
    foreign = (("umup", umup_defaults) if args.param != "umup" else
               ("mup", {"input_mult": 1.0, "output_mult": 1.0, "attn_mult": 1.0}))
    unused = ["--" + n.replace("_", "-") for n, default in foreign[1].items() if getattr(args, n) != default]
    if unused:
        raise ConfigError(f"{', '.join(unused)}: only for --param {foreign[0]}; drop under --param {args.param}")
    args.batch_tokens = args.batch_tokens or hlb_batch_tokens(args.model_scale)
    if args.warmup_tokens is None:
        args.warmup_tokens = 100 * args.batch_tokens
    if args.train_chars < 0:
        raise ConfigError("--train-chars must be 0 (all the text) or more")
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
    import torch  # here, not at the top: --help and bad flags answer without loading torch
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.compile is None:
        args.compile = args.device == "cuda"
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda but no CUDA GPU is visible: use --device cpu")
    if args.position_bias != "exact" and args.compile and args.device == "cuda":
        raise ConfigError(f"--position-bias {args.position_bias} is not in the fast path's attention "
                          "kernel: add --no-compile")
    if args.fused_loss == "liger" and not (args.compile and args.compile_scope == "blocks"
                                           and args.device == "cuda"):
        raise ConfigError("--fused-loss liger needs the CUDA fast path with --compile-scope blocks: "
                          "drop --fused-loss or add --compile --compile-scope blocks on a GPU")
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
    args.n_params = None  # the model's parameter count: main.resolve's, with the lr
    return Config(**vars(args))
