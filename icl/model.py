"""The in-context regression transformer, twice: an nn.Module for one model, and a functional
forward on stacked weights for an ensemble of E models of one shape.

The architecture is timaeus-research/icl's DTransformer: a linear token encoder (no bias),
learned positions (a [T, width] table whose rows are added: timaeus' Linear(T, width)
without bias, stored transposed so that mup_patch sees an embedding table), pre-LN blocks (causal multi-head attention with a fused qkv matrix and an output
projection, no biases; an MLP width -> mlp -> width with biases), a final LayerNorm, and a
linear readout to token_dim outputs whose coordinate 0 at the x tokens is the prediction (the
other outputs are never read, as in timaeus' unembedding; they keep its parameter count,
52,741 for the paper's L2H4 width-64 model).

Both forwards take the parametrization's multipliers (`Multipliers`): the attention logits'
scale, the readout's input multiplier, the token encoder's output multiplier and a per-weight
forward multiplier (u-µP moves scales into the ops). The module is what mup_patch, the coord
check, and the LLC estimator see; the ensemble trainer runs `ensemble_forward`, which computes
the same function for every member at once with batched matmuls (tests check they agree).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from icl import fast_ops
from mup_patch import Parametrization, parametrize

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}  # timaeus: relu; luis-mueller: gelu


@dataclass(frozen=True)
class ModelConfig:
    token_dim: int             # D+1 (garg) or 1 (affine)
    seq_len: int               # T: 2K (garg) or 2K-1 (affine)
    width: int = 64            # timaeus L2H4: embed_size 64
    depth: int = 2             # timaeus L2H4: 2 layers
    heads: int = 4             # timaeus L2H4: 4 heads (head dim = width / heads)
    mlp_ratio: float = 1.0     # timaeus: mlp_size 64 at width 64; luis-mueller: 4
    activation: str = "relu"

    def __post_init__(self):
        assert self.width % self.heads == 0, (
            f"width {self.width} is not a multiple of heads {self.heads}; pick --heads dividing --width")
        assert self.activation in ACTIVATIONS, f"unknown activation {self.activation!r}; choose from {tuple(ACTIVATIONS)}"
        assert self.mlp >= 1, f"mlp width {self.mlp} < 1: raise --mlp-ratio"

    @property
    def mlp(self) -> int:
        return round(self.mlp_ratio * self.width)

    @property
    def head_dim(self) -> int:
        return self.width // self.heads


@dataclass(frozen=True)
class Multipliers:
    """Forward multipliers from the parametrization; the defaults are plain SP."""
    attention_scale: float
    readout_mult: float = 1.0
    input_mult: float = 1.0
    weight_mults: dict = field(default_factory=dict)  # parameter name -> multiplier (absent: 1)

    @classmethod
    def standard(cls, config: ModelConfig) -> "Multipliers":
        return cls(attention_scale=config.head_dim ** -0.5)


class Linear(nn.Linear):
    """nn.Linear whose weight is multiplied by `mult` (u-µP's forward multiplier; 1 otherwise)."""
    mult = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight if self.mult == 1.0 else self.weight * self.mult, self.bias)


class Block(nn.Module):
    """Pre-LN: h + attn(ln1(h)), then h + mlp(ln2(h)); causal multi-head attention."""

    def __init__(self, c: ModelConfig):
        super().__init__()
        self.config = c
        self.attention_scale = c.head_dim ** -0.5
        self.ln1 = nn.LayerNorm(c.width)
        self.qkv = Linear(c.width, 3 * c.width, bias=False)
        self.out = Linear(c.width, c.width, bias=False)
        self.ln2 = nn.LayerNorm(c.width)
        self.fc = Linear(c.width, c.mlp)
        self.proj = Linear(c.mlp, c.width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        c = self.config
        B, T, _ = h.shape
        q, k, v = self.qkv(self.ln1(h)).view(B, T, 3, c.heads, c.head_dim).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.attention_scale)
        h = h + self.out(o.transpose(1, 2).reshape(B, T, c.width))
        return h + self.proj(ACTIVATIONS[c.activation](self.fc(self.ln2(h))))


class ICLTransformer(nn.Module):
    """One model. forward(tokens [B, T, token_dim]) -> outputs [B, T, token_dim]. Every layer is
    a submodule call, so forward hooks (the coord check) see each one's output."""

    def __init__(self, config: ModelConfig, mults: Multipliers | None = None):
        super().__init__()
        self.config = config
        c = config
        self.embed = Linear(c.token_dim, c.width, bias=False)
        self.pos = nn.Embedding(c.seq_len, c.width)  # weight [T, width]: row t is added at position t
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.depth))
        self.ln_f = nn.LayerNorm(c.width)
        self.readout = Linear(c.width, c.token_dim)
        self.set_multipliers(mults or Multipliers.standard(config))

    def set_multipliers(self, mults: Multipliers) -> None:
        self.mults = mults
        for block in self.blocks:
            block.attention_scale = mults.attention_scale
        modules = dict(self.named_modules())
        for name, mult in mults.weight_mults.items():
            module = modules[name.rpartition(".")[0]]
            assert isinstance(module, Linear) and name.endswith(".weight"), (
                f"a forward multiplier for {name}: only Linear weights take one")
            module.mult = mult

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        T = tokens.shape[1]
        h = self.embed(tokens) * self.mults.input_mult + self.pos(torch.arange(T, device=tokens.device))
        for block in self.blocks:
            h = block(h)
        return self.readout(self.ln_f(h) * self.mults.readout_mult)


READOUT_NAMES = {"readout.weight"}  # the output layer mup_patch treats as µP's readout


PARAMS = ("sp", "mup", "umup")


def make_parametrization(config: ModelConfig, *, param: str, base_width: int, lr: float = 1.0,
                         attn_mult: float = 1.0, readout_zero_init: bool = False) -> Parametrization:
    """mup_patch's rules for this model at config.width (heads fixed, so the head dim grows with
    width, as in luis-mueller's sweep). The default lr = 1 makes each rule's lr the multiplier
    of a member's lr (the trainer runs members with different lrs on one set of rules).

    SP init (timaeus' model is PyTorch's default init, std 1/sqrt(3 fan_in) for Linear weights;
    we use mup_patch's Gaussian 1/sqrt(fan_in) for matrices): the position table keeps timaeus'
    fan-in T (it is Linear(T, width) there); 1-D parameters keep the module's init (LayerNorm
    ones and zeros, Linear biases U(+-1/sqrt(fan_in)))."""
    def sp_init_std(name: str, shape: tuple) -> float | None:
        if name == "pos.weight":
            return config.seq_len ** -0.5
        return shape[1] ** -0.5 if len(shape) == 2 else None

    return parametrize(lambda w: ICLTransformer(replace(config, width=w)), param=param, width=config.width,
                       base_width=base_width, lr=lr, readout_names=READOUT_NAMES,
                       head_dim_at=lambda w: w // config.heads, sp_init_std=sp_init_std,
                       attn_mult=attn_mult, readout_zero_init=readout_zero_init)


def multipliers(p: Parametrization) -> Multipliers:
    """The forward multipliers the model applies under parametrization p."""
    return Multipliers(attention_scale=p.attention_scale, readout_mult=p.readout_mult, input_mult=p.input_mult,
                       weight_mults={n: r.forward_mult for n, r in p.rules.items() if r.forward_mult != 1.0})


def build_member(config: ModelConfig, p: Parametrization, seed: int, query_zero_init: bool = False) -> ICLTransformer:
    """One model on the CPU, initialised from `seed` alone: the module's own init (for the
    parameters p leaves alone) from torch's global RNG, then p's init from a generator.
    query_zero_init zeroes the query rows of every qkv matrix (microsoft/mup's recommendation:
    attention starts uniform at every width, removing µP's init transient in the attention)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ICLTransformer(config, multipliers(p))
    p.init_(model, torch.Generator().manual_seed(seed))
    if query_zero_init:
        with torch.no_grad():
            for block in model.blocks:
                block.qkv.weight[:config.width].zero_()
    return model


def ensemble_forward(params: dict[str, torch.Tensor], tokens: torch.Tensor, config: ModelConfig,
                     mults: Multipliers) -> torch.Tensor:
    """E models at once: params[name] is [E, *shape], tokens [E, B, T, token_dim] -> [E, B, T, token_dim].

    The same computation as ICLTransformer.forward, with every matmul batched over members
    (bmm on [E, B*T, ...]) and attention over E*B*heads sequences (`icl.fast_ops`: a weight
    gradient that splits the tokens, explicit attention for short sequences)."""
    c = config
    E, B, T, _ = tokens.shape

    def W(name):
        mult = mults.weight_mults.get(name, 1.0)
        return params[name] if mult == 1.0 else params[name] * mult

    def linear(x, name, bias=None):  # x [E, N, fan_in] @ W[e].T (+ b[e])
        return fast_ops.linear(x, W(name), None if bias is None else W(bias))

    def layer_norm(x, name):
        return torch.addcmul(W(name + ".bias")[:, None, :], F.layer_norm(x, (c.width,)), W(name + ".weight")[:, None, :])

    x = tokens.reshape(E, B * T, c.token_dim)
    h = (linear(x, "embed.weight") * mults.input_mult).view(E, B, T, c.width) \
        + W("pos.weight")[:, None, :T]
    h = h.view(E, B * T, c.width)
    act = ACTIVATIONS[c.activation]
    for i in range(c.depth):
        p = f"blocks.{i}."
        qkv = linear(layer_norm(h, p + "ln1"), p + "qkv.weight")
        o = fast_ops.causal_attention(qkv.view(E * B, T, 3 * c.width), c.heads, mults.attention_scale)
        h = h + linear(o.view(E, B * T, c.width), p + "out.weight")
        hidden = act(linear(layer_norm(h, p + "ln2"), p + "fc.weight", p + "fc.bias"))
        h = h + linear(hidden, p + "proj.weight", p + "proj.bias")
    out = linear(layer_norm(h, "ln_f") * mults.readout_mult, "readout.weight", "readout.bias")
    return out.view(E, B, T, c.token_dim)
