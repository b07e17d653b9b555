"""The recipe: a GPT trainer for studying learning-rate warmup under SP, µP and u-µP.

Derived from hlb-gpt v0.4.1 (fused latent attention blocks, learnable linear position bias,
dynamic microbatching from the expected gradient norm, sequence-length warmup), extended
with token-based warmup schedules, a µP switch (rules in mup_patch/), JSON run logs,
checkpoints and resume.

Commands (offline data lives in ../shared/data; online users drop --data-dir):

    # the default 46M SP model, hlb-gpt's recipe, 1000 steps, books corpus + WikiText valid
    # (a GPU's job: on a CPU it would take days, and is refused without --allow-slow-cpu)
    TIKTOKEN_CACHE_DIR=../shared/data/tiktoken python main.py \\
        --data-dir ../shared/data/books --eval-data wikitext=../shared/data/wikitext-103/wiki.valid.raw

    # the same under µP with a token-based warmup of 5M tokens
    python main.py --param mup --warmup-tokens 5e6 --data-dir ../shared/data/books

    # a small CPU run (about a minute on 2 cores; its log goes to out/, which git ignores)
    python main.py --preset cpu-small --data-dir ../shared/data/books

    # the parametrization as resolved, then exit
    python main.py --param mup --width 768 --show-lr-table

Read top to bottom: hyperparameters, the model, the parametrization, schedules,
microbatching, the step and the eval, the loop (Trainer), main(). The plumbing sits below
it, one concern a module: config.py (every flag and its checks), data.py (tokens, sampler,
eval windows), fastpath.py (FlexAttention, torch.compile, memory fitting), distributed.py
(torchrun), device_wait.py (waits that survive a hung device), checkpoint.py, and runlog.py
(the run log's schema, atomic writes, exit codes).
"""
from __future__ import annotations

import functools
import math
import os
import signal
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from checkpoint import completed_before, config_for_log, environment, load_checkpoint, save_checkpoint
from config import (UMUP_DEFAULT_LR, VOCAB_SIZE, Config, ConfigError, parse_args, refuse_slow_cpu_run,
                    resolve_flags)
from data import TrainSampler, eval_windows, get_tokenizer, load_data
from device_wait import DeviceHung, DeviceScalar, sync
from distributed import (agree_on_stop, all_reduce_sum_, broadcast_from_rank_zero_, init_distributed,
                         local_rank_zero_first, shard, shard_size, world)
from fastpath import (block_masks, cap_gpu_memory, compile_fn, compile_module, flex_position_attention,
                      liger_head_loss, memory_chunk_tokens, standin_batch)
from mup_patch import Parametrization, build_parametrization
from runlog import (COMPLETED, DIVERGED, EXIT_BAD_INPUT, EXIT_COMPLETED, EXIT_DEVICE_HUNG, EXIT_DIVERGED,
                    EXIT_SIGNAL, INTERRUPTED, RUNNING, RunLogError, RunLogWriter, new_run_log)

# ----------------------------------------------------------------------------------------
# Hyperparameters
# ----------------------------------------------------------------------------------------
# hlb-gpt v0.4.1's recipe at --model-scale s (config.py holds it as flags and defaults): width
# 384*log2(1+s) rounded to 64, depth 8*log2(1+s), q/k width width/8, GeGLU expansion 2x;
# 57,236 tokens per microbatch at s = 1; the sequence length 32, doubling every 80
# step-equivalents up to 1024; AdamW with the lr law below, warmup 100 step-equivalents, the
# schedules and the dynamic weight decay further down; 1000 steps. --preset cpu-small is a
# one-minute CPU version.

ADAM_EPS = 1e-9  # hlb-gpt's; u-µP groups carry their own (mup_patch/rules.py, build_umup)


def hlb_base_lr(n_params: int) -> float:
    """hlb-gpt's pared-down GPT-3 learning-rate law times its base multiplier 2.62."""
    return 9e7 / math.log(n_params) ** 8.8 * 2.62


@dataclass(frozen=True)
class ModelConfig:
    width: int
    depth: int
    qk_dim: int
    expand_dim: int
    max_seq_len: int
    vocab_size: int = VOCAB_SIZE
    position_bias: str = "exact"  # see position_distances


def resolve(flags) -> Config:
    """The run's settings, resolved once: the flags checked and completed (config.py), then
    the learning rate (hlb-gpt's law, evaluated where µP and SP coincide; u-µP's own default)
    and the parameter count, which need the model."""
    config = resolve_flags(flags)
    lr = config.lr
    if lr is None:
        lr = UMUP_DEFAULT_LR if config.param == "umup" else hlb_base_lr(decay_law_params(config))
    # u-µP's decay anchor: by default the lr µP takes by default (docs/umup.md, weight decay)
    decay_lr = config.umup_decay_lr
    if config.param == "umup" and decay_lr is None:
        decay_lr = hlb_base_lr(decay_law_params(config))
    n_params = sum(math.prod(shape) for shape in parameter_shapes(config, config.width).values())
    return config.replace(lr=lr, umup_decay_lr=decay_lr, n_params=n_params)


def model_config(args, width=None) -> ModelConfig:
    width = width or args.width
    return ModelConfig(width=width, depth=args.depth, qk_dim=width // args.qk_div,
                       expand_dim=2 * width, max_seq_len=args.max_seq_len,
                       position_bias=args.position_bias)


# ----------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------

# u-µP's scales on the block's ops (mup_patch.rules.Parametrization's fields of these names)
OP_SCALES = ("expand_mult", "project_mult", "act_mult", "glu_mult", "attention_out_mult")


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
        # u-µP's op scales (0-dim) and (skip, branch) residual multipliers, float32 tensors set by
        # GPT.configure(); None under SP and µP, where they are skipped. Tensors the compiled block
        # reads, not floats: floats would be constants of its graph, so the blocks (whose residual
        # multipliers differ) would each compile apart, and every α setting would compile afresh.
        for name in OP_SCALES + ("residual_scales",):
            self.register_buffer(name, None, persistent=False)

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor, attention_scale: float,
                block_mask=None) -> torch.Tensor:
        cfg, seq_len = self.cfg, x.shape[1]
        expanded = F.linear(self.norm(x), self.expand)
        if self.expand_mult is not None:
            expanded = expanded * self.expand_mult
        query, key, linear, pre_gelu = expanded.split(
            (cfg.qk_dim, cfg.qk_dim, cfg.expand_dim, cfg.expand_dim), dim=-1)
        if self.act_mult is not None:
            pre_gelu = pre_gelu * self.act_mult
        geglu = linear * F.gelu(pre_gelu)
        if self.glu_mult is not None:
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
        if self.attention_out_mult is not None:
            attention = attention * self.attention_out_mult
        branch = F.linear(torch.cat([local, self.attention_tap(attention)], dim=-1), self.project)
        if self.project_mult is not None:
            branch = branch * self.project_mult
        if self.residual_scales is None:
            return x + branch
        # u-µP: (x + tau * branch) / sqrt(1 + tau^2)
        return x * self.residual_scales[0] + branch * self.residual_scales[1]


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
        # u-µP sets them all, 1.0 included, so that every α setting runs the same graph
        scaled = any(getattr(parametrization, name) != 1.0 for name in OP_SCALES)
        for i, block in enumerate(self.blocks):
            # float32 on the block's device whatever the weights' dtype (build_model configures last)
            as_tensor = functools.partial(torch.tensor, dtype=torch.float32, device=block.expand.device)
            for name in OP_SCALES:
                setattr(block, name, as_tensor(getattr(parametrization, name)) if scaled else None)
            block.residual_scales = as_tensor(
                [(1 + taus[i] ** 2) ** -0.5, taus[i] * (1 + taus[i] ** 2) ** -0.5]) if taus else None

    def forward(self, tokens: torch.Tensor, block_mask=None) -> torch.Tensor:
        """Logits. With a block_mask (causal_block_mask(seq_len)), attention runs through
        FlexAttention; without one, through SDPA with a materialised mask (CPU, eager)."""
        return self.head(self.trunk(tokens, block_mask))

    def trunk(self, tokens: torch.Tensor, block_mask=None) -> torch.Tensor:
        """The residual stream after the last block (the readout's input, before its norm)."""
        x = self.embedding(tokens)
        if self.input_mult != 1.0:
            x = x * self.input_mult
        for block in self.blocks:
            x = block(x, self.position_bias, self.attention_scale, block_mask)
        return x

    def head(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        if self.readout_mult != 1.0:
            x = x * self.readout_mult
        return self.readout(x)


# ----------------------------------------------------------------------------------------
# Parametrization (SP, µP, u-µP: the rules are mup_patch's; this is the GPT's side)
# ----------------------------------------------------------------------------------------

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
    """The rules (init std, lr and weight decay per parameter, forward multipliers) of
    args.param for this GPT: mup_patch classifies the parameters by comparing their shapes
    at two widths; hlb-gpt's own init is the reference that µP scales from the base width."""
    cfg = model_config(args)
    umup = None
    if args.param == "umup":
        umup = dict(depth=cfg.depth, expand_dim=cfg.expand_dim, vocab_size=cfg.vocab_size,
                    batch_tokens=args.batch_tokens, max_seq_len=cfg.max_seq_len,
                    # softplus of the position-bias multiplier's init (LatentAttentionBlock: 1.0)
                    attention_slope=math.log1p(math.e),
                    block_of=lambda name: int(name.split(".")[1]) if name.startswith("blocks.") else None,
                    decay_lr=args.umup_decay_lr, adam_eps=ADAM_EPS,
                    attn_mult=args.umup_attn_mult, act_mult=args.umup_act_mult,
                    residual_mult=args.umup_residual_mult, loss_mult=args.umup_loss_mult,
                    block_branches=args.umup_block_branches)
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
    model = model.to(args.device, getattr(torch, getattr(args, "param_dtype", "float32")))
    model.configure(parametrization)
    return model


# ----------------------------------------------------------------------------------------
# One clock for every group: step-equivalents t = tokens / batch_tokens, so that hlb-gpt's
# step-tuned decay keeps its shape whatever the warmup or the batch (lesson 1 of the
# earlier study). With w = warmup_tokens / batch_tokens, a group that warms up rises as
#                  0.02 + 0.98 * t / w            while t < w
# and then decays on s = t - w, the step-equivalents since its warmup ended:
#   base:          (s + 1) ** -0.08
#   output:        (s + 1) ** -0.2                (hlb recipe's readout group)
#   position_bias: 0.995 ** s                     (hlb recipe's position-bias group)
# The base group always warms up. Under --warmup-groups hlb (hlb-gpt's choice) the output and
# position_bias groups do not: they start at full rate and decay on s = t; under "all" they
# warm up too. With no warmup the two settings are the same schedule.


def lr_multiplier(schedule: str, tokens: int, warmup_tokens: int, batch_tokens: int,
                  warmup_groups: str) -> float:
    if schedule not in ("base", "output", "position_bias"):
        raise ValueError(f"unknown schedule {schedule!r}")
    t, w = tokens / batch_tokens, warmup_tokens / batch_tokens
    warms_up = schedule == "base" or warmup_groups == "all"
    if warms_up and t < w:
        return 0.02 + 0.98 * t / w
    s = t - w if warms_up else t
    if schedule == "base":
        return (s + 1) ** -0.08
    if schedule == "output":
        return (s + 1) ** -0.2
    return 0.995 ** s


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
# Microbatching
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


# ----------------------------------------------------------------------------------------
# The step's loss and the eval
# ----------------------------------------------------------------------------------------

def head_loss(model: GPT, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy from the trunk's output: the readout and the loss, which
    compiled together never materialise the fp32 logits (50K per token)."""
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=hidden.is_cuda):
        logits = model.head(hidden)
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def head_eval(model: GPT, hidden: torch.Tensor, targets: torch.Tensor):
    """Summed cross-entropy and correct next-token count from the trunk's output."""
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=hidden.is_cuda):
        logits = model.head(hidden).float()
    return (F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum"),
            (logits.argmax(-1) == targets).sum())


def chunk_loss(model: GPT, inputs: torch.Tensor, targets: torch.Tensor, block_mask=None,
               head=head_loss) -> torch.Tensor:
    """Mean next-token cross-entropy of one chunk: the forward that train_step differentiates
    (the trunk, then `head` on its output)."""
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=inputs.is_cuda):
        hidden = model.trunk(inputs, block_mask)
    return head(model, hidden, targets)


def chunk_eval(model: GPT, inputs: torch.Tensor, targets: torch.Tensor, block_mask=None, head=head_eval):
    """Summed cross-entropy and correct next-token count of one chunk: chunk_loss's forward
    with the eval's head."""
    return chunk_loss(model, inputs, targets, block_mask, head)


def autocast(args):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.device == "cuda")


def step_functions(model: GPT, args):
    """(loss_fn, eval_fn), each (model, inputs, targets, block_mask), on the path --compile and
    --compile-scope choose. 'blocks' (regional compilation) compiles one block's forward and
    backward, which all blocks share (they run the same code on the same shapes), and the
    head with its loss: a new sequence length then costs one block's compile, not the whole
    model's. 'whole' compiles each step function as one graph (fusion across blocks, the
    compile time times the depth). --compile-shapes: a graph per shape, or one for all (compile_fn)."""
    if not args.compile:
        return chunk_loss, chunk_eval
    dynamic = args.compile_shapes == "dynamic"
    compile_ = functools.partial(compile_fn, dynamic=dynamic)
    if args.compile_scope == "whole":
        return compile_(chunk_loss), compile_(chunk_eval)
    for block in model.blocks:
        compile_module(block, dynamic=dynamic)
    loss_head = liger_head_loss if args.fused_loss == "liger" else compile_(head_loss)
    return (functools.partial(chunk_loss, head=loss_head),
            functools.partial(chunk_eval, head=compile_(head_eval)))


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
# Training
# ----------------------------------------------------------------------------------------

class Trainer:
    """Owns everything a checkpoint must capture, so that state_dict() is the whole run."""

    def __init__(self, args, data: dict[str, np.ndarray]):
        self.args = args
        self.rank, self.world_size = world()
        torch.manual_seed(args.seed)
        self.parametrization = make_parametrization(args)
        self.model = build_model(args, self.parametrization)
        if self.world_size > 1:  # identical already (same seed); made sure of, as DDP does
            broadcast_from_rank_zero_([p.data for p in self.model.parameters()])
        self.n_params = sum(p.numel() for p in self.model.parameters())
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
        self.loss_fn, self.eval_fn = step_functions(self.model, args)
        self.block_mask_for = block_masks(args)
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
        # Under torchrun every rank keeps the same log; rank 0 writes (and mirrors) it.
        # The config logs each optimizer group's settings before its schedule, as resolved.
        groups = {g["name"]: {"lr": g["initial_lr"], "betas": list(g["betas"]), "schedule": g["schedule"],
                              "weight_decay_mult": g["weight_decay_mult"]} for g in self.optimizer.param_groups}
        self.run_log = RunLogWriter(self.log_path, new_run_log(
            run_name=args.run_name, command=[sys.executable] + sys.argv,
            config={**config_for_log(args), "param_groups": groups},
            env=environment(args), eval_sets=list(self.eval_sets)),
            wandb_project=args.wandb if self.rank == 0 else None)

    @property
    def log(self) -> dict:
        """The run log (runlog.py's schema), saved by write_log."""
        return self.run_log.log

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
        self.run_log.log = state["log"]

    def save_checkpoint(self) -> None:
        save_checkpoint(self.checkpoint_path, self.state_dict)

    def write_log(self) -> None:
        if self.rank == 0:
            self.run_log.save()

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
        replay = self.sampler.generator.get_state()  # the step's batches, to draw them again
        while True:
            try:
                loss_sum = torch.zeros((), device=args.device)
                per_chunk = max(1, self.chunk_tokens // seq_len)
                for _ in range(count):
                    inputs, targets = self.sampler.batch(batch_size, seq_len)
                    inputs, targets = shard(inputs), shard(targets)  # this rank's block (torchrun)
                    for x, y in zip(inputs.split(per_chunk), targets.split(per_chunk)):
                        if self.stop_signal and self.world_size == 1:
                            return self.drop_step(replay)
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
                self.run_log.add_event(tokens=self.tokens, step=self.step, kind="oom_shrink",
                                       detail=f"chunk now {self.chunk_tokens} tokens")
                torch.cuda.empty_cache()
                if self.world_size > 1:  # the same batches again: the ranks' samplers stay in step
                    self.sampler.generator.set_state(replay)
        if self.world_size > 1:  # sum over the ranks, once per step, after the last backward
            all_reduce_sum_([loss_sum] + [p.grad for p in model.parameters() if p.grad is not None])
        train_loss = loss_sum / (batch_size * count)
        finite = torch.isfinite(train_loss)

        dynamic = args.weight_decay == "dynamic"
        weight_decay = dynamic_weight_decay(train_loss, self.decay_law_params) if dynamic else args.weight_decay
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * lr_multiplier(group["schedule"], self.tokens, args.warmup_tokens,
                                                              args.batch_tokens, args.warmup_groups)
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

    def drop_step(self, replay) -> tuple[None, None]:
        """A stop signal arrived mid-step: drop the step (a step of the default model on a
        CPU takes minutes), so that the run stops at once. Nothing was applied; the sampler
        goes back to the step's start, so the checkpoint saved next resumes exactly where an
        uninterrupted run would be. Under torchrun the ranks stop together, between steps
        (agree_on_stop), and never get here."""
        self.optimizer.zero_grad(set_to_none=True)
        self.sampler.generator.set_state(replay)
        return None, None

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
        sync(self.args.device, self.stop_signal)
        self.compile_seconds += time.perf_counter() - started

    def clock_start(self) -> None:
        if self.clock is None:
            sync(self.args.device, self.stop_signal)
            self.clock = time.perf_counter()

    def clock_stop(self) -> None:
        """Add the span since clock_start to train_seconds. Steps are timed in spans between
        synchronisations (eval, checkpoint, compile, the end), not one by one: a sync per
        step would idle the GPU while the host queues the next step."""
        if self.clock is not None:
            sync(self.args.device, self.stop_signal)
            self.train_seconds += time.perf_counter() - self.clock
            self.clock = None

    # -- the loop ------------------------------------------------------------------------
    def record_eval(self, train_loss: float, grad_norm: float | None) -> None:
        results = evaluate(self.model, self.eval_sets, self.chunk_tokens, self.args, self.eval_fn,
                           self.block_mask_for, self.stop_signal)
        last = getattr(self, "last", {"seq_len": seq_len_at(0, self.args), "batch_size": 0, "microbatches": 0})
        self.run_log.add_point({
            "tokens": self.tokens, "step": self.step, "train_seconds": round(self.train_seconds, 3),
            "lr": {g["name"]: g["lr"] for g in self.optimizer.param_groups}, **last,
            "chunk_tokens": self.chunk_tokens,  # tokens per forward/backward chunk, as now
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
            # The bar counts towards the run's end, so that it shows an ETA: the token budget,
            # else the step budget.
            progress = tqdm(total=args.total_tokens or args.max_steps, initial=self.progress_position(),
                            unit="tok" if args.total_tokens else "step", unit_scale=bool(args.total_tokens),
                            dynamic_ncols=True)
        self.stop_signal = stop_signal
        try:
            exit_code = self.train_until_done(progress)
        except DeviceHung as e:
            # No checkpoint (saving one needs the device) and no sync for the clock: the last
            # periodic checkpoint resumes the run, and its last timed span is lost.
            self.clock = None
            self.log["status"] = INTERRUPTED
            self.run_log.add_event(tokens=self.tokens, step=self.step, kind="device_hung", detail=str(e))
            exit_code = EXIT_DEVICE_HUNG
        self.clock_stop()
        if progress is not None:
            progress.close()
        if exit_code == EXIT_COMPLETED:
            self.log["status"] = COMPLETED
        last = self.log["curve"][-1] if self.log["curve"] else None  # None if the device hung in the first eval
        self.log["summary"].update({"tokens": self.tokens, "steps": self.step,
                                    "train_seconds": round(self.train_seconds, 3),
                                    "compile_seconds": round(self.compile_seconds, 3),
                                    # the eval at the end of the run: a run that stopped early has none
                                    "final_eval": last["eval"] if exit_code == EXIT_COMPLETED else None,
                                    "last_eval": last and {key: last[key] for key in ("tokens", "step", "eval")}})
        self.log["summary"].setdefault("diverged_at", None)
        self.write_log()
        self.run_log.close()
        if exit_code == EXIT_COMPLETED and self.rank == 0 and self.checkpoint_path.exists():
            self.checkpoint_path.unlink()  # a finished run is never resumed; save the disk
        return exit_code

    def progress_position(self) -> int:
        """Where the run is on its progress bar's scale: tokens under --total-tokens, else steps."""
        return self.tokens if self.args.total_tokens else self.step

    def train_until_done(self, progress) -> int:
        """The training loop: steps, evals and checkpoints until the run ends, diverges or is
        stopped by a signal (self.stop_signal). Returns the exit code."""
        args = self.args
        if self.tokens == 0 and not self.log["curve"]:
            self.record_eval(float("nan"), None)  # the curve starts at initialisation
            self.next_eval = args.eval_every_tokens
        # grad_norm: the latest sample, which a resumed run takes from the checkpoint.
        train_loss, grad_norm, exit_code = float("nan"), self.microbatches.grad_norm, EXIT_COMPLETED
        pending = None  # (step, tokens, loss) of the newest step, while its loss is unread
        while not self.finished():
            self.compile_for(seq_len_at(self.tokens, args))
            self.clock_start()
            loss, step_grad_norm = self.launch_step()  # loss None: a stop signal dropped the step
            agree_on_stop(self.stop_signal)  # torchrun: all ranks stop at the same step
            grad_norm = step_grad_norm if step_grad_norm is not None else grad_norm
            # On CUDA a step's loss is read once the next step is queued behind it, so the
            # host never waits for the device; at an eval, checkpoint or the end (the clock
            # stops there anyway), and on CPU, at once.
            to_check = [pending] if pending else []
            pending = (self.step, self.tokens, loss) if loss is not None else None
            boundary = (self.tokens >= self.next_eval or self.finished() or bool(self.stop_signal) or
                        bool(self.next_checkpoint and self.tokens >= self.next_checkpoint))
            if pending and (boundary or args.device != "cuda"):
                to_check, pending = to_check + [pending], None
            diverged = None
            for step, tokens, value in to_check:
                train_loss = value.get(self.stop_signal)
                if not math.isfinite(train_loss) or (tokens > args.warmup_tokens and
                                                     train_loss > args.diverge_loss):
                    diverged = {"step": step, "tokens": tokens, "train_loss": train_loss}
                    break
            if progress is not None:  # (a tqdm of length 0 is false)
                progress.update(self.progress_position() - progress.n)
                progress.set_postfix(loss=f"{train_loss:.3f}", step=self.step,
                                     val=f"{self.log['curve'][-1]['eval']['valid']['loss']:.3f}")
            if diverged:
                self.clock_stop()
                self.log["status"] = DIVERGED
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
                self.log["status"] = INTERRUPTED
                self.run_log.add_event(tokens=self.tokens, step=self.step, kind="signal",
                                       detail=signal.Signals(self.stop_signal[0]).name)
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
            return EXIT_COMPLETED
        if args.prepare_data:
            load_data(args)
            return EXIT_COMPLETED
        refuse_slow_cpu_run(args)
        init_distributed(args)  # only under torchrun with several processes
        cap_gpu_memory(args)
        log_path = args.out / f"{args.run_name}.json"
        if args.resume and completed_before(log_path):
            if world()[0] == 0:
                print(f"{log_path}: already completed; nothing to do")
            return EXIT_COMPLETED
        data = local_rank_zero_first(load_data, args)  # rank 0 fills the token cache once
        trainer = Trainer(args, data)
        if args.resume and trainer.checkpoint_path.exists():
            load_checkpoint(trainer.checkpoint_path, trainer.load_state_dict, args.device)
    except (ConfigError, RunLogError) as e:  # RunLogError: --wandb without the wandb package
        print(f"main.py: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT

    if args.resume and trainer.checkpoint_path.exists():
        trainer.log["status"] = RUNNING
        trainer.run_log.add_event(tokens=trainer.tokens, step=trainer.step, kind="resumed",
                                  detail=str(trainer.checkpoint_path))
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
    losses = lambda results: ", ".join(f"{n} loss {r['loss']:.4f}" for n, r in results.items())
    last = summary["last_eval"]
    evals = (f"final {losses(summary['final_eval'])}" if summary["final_eval"] else
             f"no final eval; the last, at step {last['step']} ({last['tokens']:,} tokens): "
             f"{losses(last['eval'])}" if last else "no eval")
    print(f"{args.run_name}: {trainer.log['status']} after {summary['steps']} steps, "
          f"{summary['tokens']:,} tokens, {summary['train_seconds']:.1f} s of training; {evals}")
    if exit_code == EXIT_DEVICE_HUNG:
        print("main.py: error: the device stopped responding (see the log's device_hung event); "
              "run the same command with --resume to continue from the last checkpoint", file=sys.stderr)
        sys.stderr.flush(), sys.stdout.flush()
        os._exit(exit_code)  # tearing down a hung CUDA context can block for ever
    if args.sample and exit_code == EXIT_COMPLETED:
        print(sample(trainer.model, args))
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
