"""Per-parameter rules: init std, Adam learning rate, betas, weight decay and schedule.

Two parametrizations, each with two learning-rate recipes:

| class   | SP init              | µP init                          | hlb recipe Adam lr | uniform Adam lr |
|---------|----------------------|----------------------------------|--------------------|-----------------|
| hidden  | hlb std at width     | hlb std at base x width_mult^-½  | lr (µP: / width_mult) | lr (µP: / width_mult) |
| vector  | hlb std at width     | hlb std at base (constant)       | 32 lr              | lr              |
| readout | hlb std at width     | hlb std at base, input / width_mult | 2 lr, β1 .6     | lr              |
| scalar  | 1.0                  | 1.0                              | 100 lr             | lr              |

The hlb recipe also gives the readout and the position-bias scalar their own schedules. Under
µP it is hlb-gpt's tuned recipe at the base width, carried to other widths by µP's rules: the
group multipliers, betas and schedules stay, and only µP's width factors act on them.
Attention logits: SP scales by 1/sqrt(qk_width); µP by attn_mult * sqrt(base_qk_width)/qk_width,
which equals SP's scale at the base width. So at width == base width, with either recipe, µP
computes exactly what SP computes with the same recipe (tests/test_mup.py checks outputs,
learning rates and training steps).

Weight decay (the run's value, dynamic or fixed) decays hidden matrices only, in every mode.
Under µP it is multiplied by width_mult so that AdamW's per-step shrink lr * wd does not
depend on width (microsoft/mup's MuAdamW convention for coupled decay); at the base width
this is SP's decay exactly, so an SP-vs-µP comparison changes only the parametrization.

u-µP (`umup`, unit-scaled µP after graphcore-research/unit-scaling) is a third
parametrization: every weight matrix and the embedding start at N(0, 1) and the scales move
into the ops (the forward multipliers below, which the model applies); Adam lrs follow
unit_scaling.optim's lr_scale_func_adam with no base shapes (absolute fan-in, depth_scale =
depth^-1/2); one schedule for every group; hidden matrices get u-µP's independent weight decay,
anchored to the per-step shrink µP applies at an anchor lr (main.py's --umup-decay-lr, by
default µP's default lr). docs/umup.md has the table.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from mup_patch.shapes import HIDDEN, READOUT, SCALAR, VECTOR, classify_parameters

PARAMETRIZATIONS = ("sp", "mup", "umup")
LR_RECIPES = ("hlb", "uniform")
DEFAULT_BETAS = (0.9, 0.95)

# hlb-gpt's empirical group multipliers, betas and schedules (--lr-recipe hlb: SP, and µP
# from its base width).
HLB_LR_MULT = {HIDDEN: 1.0, VECTOR: 32.0, READOUT: 2.0, SCALAR: 100.0}
HLB_BETAS = {READOUT: (0.6, 0.95)}
HLB_SCHEDULE = {READOUT: "output", SCALAR: "position_bias"}


@dataclass(frozen=True)
class ParamRule:
    name: str
    kind: str                 # hidden | vector | readout | scalar
    shape: tuple
    width_mult: float         # fan-in / base fan-in for hidden and readout, 1 otherwise
    init_std: float | None    # None: keep the module's own init (norm gains 1, position bias 1)
    lr: float                 # Adam learning rate before the schedule's multiplier
    betas: tuple
    weight_decay_mult: float  # multiplies the run's weight decay; 0 = not decayed
    schedule: str             # base | output | position_bias (see main.py, Schedules)
    group: str | None = None  # optimizer group name (None: the class); u-µP splits classes
    eps: float | None = None  # Adam eps (None: the trainer's); u-µP: eps / grad_scale
    grad_scale: float = 1.0   # u-µP: its scaled backward's gradient / the true gradient
    forward_mult: float = 1.0  # u-µP: multiplies the output of the op using this weight (1: SP, µP)


@dataclass(frozen=True)
class Parametrization:
    name: str
    lr_recipe: str
    width_mult: float
    input_mult: float         # multiplies the embedding output
    attention_scale: float | None  # multiplies q.k (None: the model has no attention)
    readout_mult: float       # multiplies the readout's input
    rules: dict               # parameter name -> ParamRule
    # u-µP's op scales (main.LatentAttentionBlock); 1.0 and () leave SP and µP untouched.
    expand_mult: float = 1.0         # expand matmul output (u-µP: fan_in^-1/2)
    project_mult: float = 1.0        # project matmul output (u-µP: fan_in^-1/2)
    act_mult: float = 1.0            # GELU input: gelu(act_mult * x)
    glu_mult: float = 1.0            # GeGLU output: unit RMS for unit inputs
    attention_out_mult: float = 1.0  # attention output: unit RMS at init
    residual_taus: tuple = ()        # per block: x + f -> (x + tau f) / sqrt(1 + tau^2)
    activation_grad_scale: float = 1.0  # u-µP: its backward's activation grads / the true ones
    branch_grad_scales: tuple = ()      # u-µP: per block, the further factor inside its branch

    @torch.no_grad()
    def init_(self, model: torch.nn.Module, generator: torch.Generator | None = None) -> None:
        """Draw every parameter with an init std from N(0, std^2), in a fixed name order.
        Parameters whose init_std is None keep what their module drew at construction."""
        self.check_names(model)
        for name, p in model.named_parameters():
            std = self.rules[name].init_std
            if std is None:
                continue
            if std == 0:
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float32) * std)

    def check_names(self, model: torch.nn.Module) -> None:
        names = [name for name, _ in model.named_parameters()]
        assert set(names) == self.rules.keys(), (
            "the model's parameters are not the ones the rules were built for: build it as the "
            f"parametrization's model at the same width (only in the model: {sorted(set(names) - self.rules.keys())}; "
            f"only in the rules: {sorted(self.rules.keys() - set(names))})")

    def param_groups(self, model: torch.nn.Module, weight_decay: float = 0.0) -> list[dict]:
        """One AdamW group per distinct (kind, lr, betas, decay, schedule); keys 'name',
        'schedule' and 'weight_decay_mult' ride along for the trainer's schedules. Each group's
        AdamW weight_decay is `weight_decay` x its multiplier (main.py's trainer passes 0 and
        sets it every step from its own schedule)."""
        self.check_names(model)
        groups: dict[tuple, dict] = {}
        for name, p in model.named_parameters():
            r = self.rules[name]
            name = r.group or r.kind
            key = (name, r.lr, r.betas, r.weight_decay_mult, r.schedule, r.eps)
            if key not in groups:
                groups[key] = {"params": [], "name": name, "lr": r.lr, "initial_lr": r.lr,
                               "betas": r.betas, "weight_decay": weight_decay * r.weight_decay_mult,
                               "weight_decay_mult": r.weight_decay_mult, "schedule": r.schedule}
                if r.eps is not None:  # a group's own eps overrides the optimizer's default
                    groups[key]["eps"] = r.eps
            groups[key]["params"].append(p)
        names = [g["name"] for g in groups.values()]
        assert len(names) == len(set(names)), f"two groups share a class name: {names}"
        return list(groups.values())

    def lr_table(self) -> str:
        """A fixed-width table: every parameter's class, shape, init std and Adam lr."""
        umup = self.name == "umup"
        lines = [f"parametrization: {self.name} (lr recipe {self.lr_recipe}), width_mult "
                 f"{self.width_mult:g}, input_mult {self.input_mult:g}, attention_scale "
                 f"{'none' if self.attention_scale is None else format(self.attention_scale, '.6g')}, "
                 f"readout_mult {self.readout_mult:.6g}"]
        if self.residual_taus:  # main.py's GPT under u-µP
            lines.append(f"u-µP op scales: expand {self.expand_mult:.6g}, project {self.project_mult:.6g}, "
                         f"gelu input {self.act_mult:g}, geglu output {self.glu_mult:.6g}, attention "
                         f"output {self.attention_out_mult:.6g}, residual taus "
                         f"{', '.join(f'{t:.4g}' for t in self.residual_taus)}")
        lines.append(f"{'parameter':34s} {'class':8s} {'shape':>14s} {'init std':>10s} "
                     f"{'adam lr':>10s} {'betas':>10s} {'wd mult':>8s} schedule"
                     + (f" {'group':14s} {'adam eps':>9s} {'fwd mult':>8s}" if umup else ""))
        for r in self.rules.values():
            std = "module" if r.init_std is None else f"{r.init_std:.4g}"
            line = (f"{r.name:34s} {r.kind:8s} {'x'.join(map(str, r.shape)) or 'scalar':>14s} "
                    f"{std:>10s} {r.lr:10.4g} {r.betas[0]:>4g},{r.betas[1]:<5g} "
                    f"{r.weight_decay_mult:8.3g} {r.schedule}")
            if umup:
                line += f"{'':4s} {r.group or r.kind:14s} {r.eps or 0:9.3g} {r.forward_mult:8.4g}"
            lines.append(line)
        return "\n".join(lines)


def build_parametrization(*, param: str, lr_recipe: str, lr: float, width: int, base_width: int,
                          qk_dim: int | None, base_qk_dim: int | None,
                          shapes_at: Callable[[int], dict[str, tuple]],
                          readout_names: set[str],
                          reference_init_std: Callable[[str, int], float | None],
                          input_mult: float = 1.0, output_mult: float = 1.0,
                          attn_mult: float = 1.0, readout_zero_init: bool = False,
                          umup: dict | None = None) -> Parametrization:
    """Resolve every parameter's rule.

    shapes_at(width) gives {name: shape} of the model at that width (same depth);
    reference_init_std(name, width) gives hlb-gpt's init std of a parameter at a width
    (None for parameters that keep their module's init). qk_dim / base_qk_dim: the attention
    head's q.k width at `width` / `base_width` (None: a model without attention, whose
    attention_scale is then None). `umup` holds what u-µP needs beyond
    that (the keyword arguments of build_umup after `classes`), and only u-µP reads it.
    """
    assert param in PARAMETRIZATIONS, f"unknown parametrization {param!r}; choose from {PARAMETRIZATIONS}"
    assert lr_recipe in LR_RECIPES, f"unknown lr recipe {lr_recipe!r}; choose from {LR_RECIPES}"
    assert not (param == "umup" and lr_recipe == "hlb"), (
        "u-µP replaces hlb-gpt's empirical lr law and group multipliers; use --lr-recipe uniform")
    shapes = shapes_at(width)
    # The delta model only has to differ in every width-dependent dimension.
    base_shapes, delta_shapes = shapes_at(base_width), shapes_at(2 * base_width)
    classes = classify_parameters(base_shapes, delta_shapes, readout_names)
    width_mult = width / base_width
    if param == "umup":
        assert umup is not None, "u-µP needs its settings (build_parametrization's `umup`)"
        return build_umup(shapes=shapes, classes=classes, lr=lr, width=width, width_mult=width_mult,
                          qk_dim=qk_dim, readout_zero_init=readout_zero_init, **umup)
    mup = param == "mup"
    hlb = lr_recipe == "hlb"

    rules = {}
    for name, shape in shapes.items():
        kind = classes[name]
        fan_in_mult = shape[-1] / base_shapes[name][-1] if kind in (HIDDEN, READOUT) else 1.0
        if kind in (HIDDEN, READOUT):
            assert math.isclose(fan_in_mult, width_mult), (
                f"{name}: fan-in multiplier {fan_in_mult} differs from width/base_width {width_mult}")
        if not mup:
            init_std = reference_init_std(name, width)
        elif kind == HIDDEN:
            init_std = reference_init_std(name, base_width) * width_mult ** -0.5
        elif kind == READOUT and readout_zero_init:
            init_std = 0.0
        else:  # vector-like, readout and scalar keep the base width's init
            init_std = reference_init_std(name, base_width)
        group_lr = lr * (HLB_LR_MULT[kind] if hlb else 1.0)
        if mup and kind == HIDDEN:
            group_lr /= width_mult
        rules[name] = ParamRule(
            name=name, kind=kind, shape=tuple(shape), width_mult=fan_in_mult, init_std=init_std,
            lr=group_lr, betas=HLB_BETAS.get(kind, DEFAULT_BETAS) if hlb else DEFAULT_BETAS,
            weight_decay_mult=(width_mult if mup else 1.0) if kind == HIDDEN else 0.0,
            schedule=HLB_SCHEDULE.get(kind, "base") if hlb else "base")

    if mup:
        # attn_mult * sqrt(base_qk)/qk, written so that at the base width it evaluates to SP's
        # 1/sqrt(qk) bit for bit (sqrt(48)/48 and 1/sqrt(48) differ in the last place).
        return Parametrization(name=param, lr_recipe=lr_recipe, width_mult=width_mult,
                               input_mult=input_mult,
                               attention_scale=None if qk_dim is None else
                               attn_mult * math.sqrt(base_qk_dim / qk_dim) / math.sqrt(qk_dim),
                               readout_mult=output_mult / width_mult, rules=rules)
    return Parametrization(name=param, lr_recipe=lr_recipe, width_mult=width_mult, input_mult=1.0,
                           attention_scale=None if qk_dim is None else 1 / math.sqrt(qk_dim),
                           readout_mult=1.0, rules=rules)


# ----------------------------------------------------------------------------------------
# u-µP
# ----------------------------------------------------------------------------------------

def gelu_second_moment(act_mult: float) -> float:
    """E[gelu(act_mult * z)^2] for z ~ N(0, 1), by composite Simpson quadrature in float64
    over |z| <= 12 (the Gaussian tail beyond adds < 1e-30). torch's exact (erf) GELU, the one
    the model runs. At act_mult 1 it is 0.4252214826 (tests/test_umup.py: Gauss-Hermite, and
    Monte Carlo)."""
    n = 240_000  # even: intervals of 1e-4, fine for act_mult up to ~100
    z = torch.linspace(-12.0, 12.0, n + 1, dtype=torch.float64)
    f = torch.nn.functional.gelu(act_mult * z) ** 2 * torch.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    weights = torch.ones(n + 1, dtype=torch.float64)
    weights[1:-1:2], weights[2:-1:2] = 4.0, 2.0
    return float((f * weights).sum() * (24.0 / n) / 3)


def position_attention_mean_square(slope: float, seq_len: int) -> float:
    """Mean over query positions i < seq_len of sum_j w_ij^2, the attention weights of
    softmax(slope * (j - i)) over j <= i: this model's attention at initialisation without the
    q.k term (its logits have std attn_mult / sqrt(qk_dim), which vanishes as width grows).
    For unit-RMS values independent across positions, the attention output's mean square is
    this. With r = exp(-slope), w_ij = r^(i-j) (1-r) / (1-r^(i+1)), so that
    sum_j w_ij^2 = (1-r)/(1+r) * (1+r^(i+1)) / (1-r^(i+1)), exactly."""
    r = math.exp(-slope)
    base = (1 - r) / (1 + r)
    return sum(base * (1 + r ** (i + 1)) / (1 - r ** (i + 1)) for i in range(seq_len)) / seq_len


def umup_residual_taus(depth: int, residual_mult: float, block_branches: int) -> tuple:
    """u-µP's residual rule (unit_scaling.core.functional.transformer_residual_scaling_rule,
    paper App. G) for blocks that each fuse `block_branches` of its branches: block l (0-based)
    of `depth` computes x_{l+1} = (x_l + tau_l f_l) / sqrt(1 + tau_l^2),
    tau_l = a / sqrt(depth + l a^2) with a = sqrt(block_branches) * residual_mult.
    Equivalently y_{l+1} = y_l + (a / sqrt(depth)) f_l on an unnormalised stream y_0 =
    embedding, x_l = y_l / sqrt(1 + l a^2 / depth): every block adds the same variance, and all
    blocks together add a^2 = block_branches * residual_mult^2 times the embedding's. With 2,
    block l adds what u-µP's attention layer 2l and MLP layer 2l+1 add together (its
    residual_attn_ratio 1), so after every block the stream is u-µP's after the same layers.
    Each of u-µP's branches adds residual_mult^2 / (layers/2) of the embedding's variance."""
    a = math.sqrt(block_branches) * residual_mult
    return tuple(a / math.sqrt(depth + l * a ** 2) for l in range(depth))


def umup_grad_scales(*, tokens: int, width: int, vocab_size: int, loss_mult: float,
                     residual_taus: tuple = ()) -> dict:
    """How much larger u-µP's scaled backward makes each gradient than the true gradient of
    the mean cross-entropy (what main.py's autograd computes), at `tokens` tokens per backward.

    u-µP with its default constraints ("to_output_scale" everywhere but the readout) scales
    each hidden op's input gradient by the op's forward scale, so on the residual stream every
    activation gradient is one global multiple G of the true one:
      cross_entropy: sum (not mean) over tokens, input grad x V/sqrt(V-1), loss mult forward only;
      linear_readout: output x 1/fan_in forward, input grad x fan_out^-1/2 = V^-1/2 backward;
      so G = sqrt(V/(V-1)) * tokens * width / loss_mult (and at the logits: tokens * V/sqrt(V-1)).
    Inside block l's residual branch it is G / b_l, b_l = tau_l / sqrt(1 + tau_l^2): u-µP's
    residual_add scales the branch forward only and residual_split scales its gradient on the
    way out, so the branch's ops see their gradient before that factor.
    Weight gradients get a per-tensor constant (grad_weight x tokens^-1/2 for linear and
    layer_norm; x (V/tokens)^1/2 for the embedding) where autograd applies the forward scale:
      hidden matrix (fan_in n, forward scale n^-1/2): G_here * sqrt(n / tokens)
      embedding:                                     G * sqrt(V / tokens)
      norm gain, scalar:                             G_here / sqrt(tokens)
      readout (forward 1/width, loss mult):          sqrt(tokens) * V / sqrt(V-1) * width / loss_mult
    with G_here = G / b_l inside block l. Returns those constants: "activation" (G), "logits",
    "branch" (1/b_l per block), "embedding", "readout", and functions "hidden"(fan_in, block)
    and "vector"(block), block None outside the blocks."""
    v = vocab_size
    g = math.sqrt(v / (v - 1)) * tokens * width / loss_mult
    branch = tuple(math.sqrt(1 + t * t) / t for t in residual_taus)
    here = lambda block: g * (1.0 if block is None else branch[block])
    return {"activation": g, "logits": tokens * v / math.sqrt(v - 1), "branch": branch,
            "hidden": lambda fan_in, block=None: here(block) * math.sqrt(fan_in / tokens),
            "embedding": g * math.sqrt(v / tokens),
            "vector": lambda block=None: here(block) / math.sqrt(tokens),
            "readout": math.sqrt(tokens) * v / math.sqrt(v - 1) * width / loss_mult}


def build_umup(*, shapes: dict, classes: dict, lr: float, width: int, width_mult: float, qk_dim: int,
               readout_zero_init: bool, depth: int, expand_dim: int, vocab_size: int,
               batch_tokens: int, max_seq_len: int, attention_slope: float,
               block_of: Callable[[str], int | None], decay_lr: float, adam_eps: float,
               attn_mult: float = 1.0, act_mult: float = 1.0, residual_mult: float = 1.0,
               loss_mult: float = 1.0, block_branches: int) -> Parametrization:
    """u-µP's rules for main.py's model.

    Init: N(0, 1) for every matrix and the embedding (0 for a zero-initialised readout); norm
    gains and the position-bias multiplier keep their module init (1.0).
    Adam lr (unit_scaling.optim.lr_scale_func_adam; no base shapes, so fan-in is absolute and
    depth_scale = depth^-1/2 for the parameters inside the blocks, 1 outside them):
      matrix (fan_in n) and embedding (n = width): lr * depth_scale * n^-1/2
      norm gain, position-bias scalar (u-µP "bias"): lr * depth_scale
      readout (u-µP "output"):                      lr
    Weight decay: hidden matrices only (the project's rule), as u-µP's independent decay: the
    wd multiplier decay_lr / group lr makes AdamW's per-step shrink decay_lr * wd * schedule,
    whatever --lr, width and depth; decay_lr is the anchor (main.py's --umup-decay-lr, by
    default the lr µP uses by default, hlb-gpt's law at the base width), so u-µP shrinks its
    hidden matrices as µP does at that lr.
    Adam eps: adam_eps / grad_scale, which makes AdamW on main.py's true gradients take the
    steps AdamW with adam_eps takes on u-µP's scaled gradients (umup_grad_scales). One group
    holds a kind across blocks, so its eps leaves out the per-block branch factor 1/b_l (1.4 to
    ~sqrt(2 depth)); at ~1e-14 it is far below any gradient anyway."""
    depth_scale = depth ** -0.5
    taus = umup_residual_taus(depth, residual_mult, block_branches)
    grad_scales = umup_grad_scales(tokens=batch_tokens, width=width, vocab_size=vocab_size,
                                   loss_mult=loss_mult, residual_taus=taus)
    rules = {}
    for name, shape in shapes.items():
        kind = classes[name]
        block = block_of(name)  # None outside the residual blocks
        scale = 1.0 if block is None else depth_scale
        if kind == HIDDEN:
            group = name.rsplit(".", 1)[-1]  # expand, project: one group each across blocks
            init_std, group_lr = 1.0, lr * scale * shape[-1] ** -0.5
            grad_scale, group_scale = grad_scales["hidden"](shape[-1], block), grad_scales["hidden"](shape[-1])
        elif kind == READOUT:
            group = "readout"
            init_std, group_lr = (0.0 if readout_zero_init else 1.0), lr
            grad_scale = group_scale = grad_scales["readout"]
        elif kind == VECTOR and len(shape) == 2:  # the embedding: a u-µP "weight", fan_in = width
            assert shape[-1] == width, f"{name}: expected an embedding of width {width}, got {shape}"
            group = "embedding"
            init_std, group_lr = 1.0, lr * scale * width ** -0.5
            grad_scale = group_scale = grad_scales["embedding"]
        else:  # norm gains and the position-bias scalar: u-µP "norm" / "bias", module init
            group = ("norm" if kind == VECTOR else "scalar") if block is None else \
                ("block_norm" if kind == VECTOR else "position_bias")
            init_std, group_lr = None, lr * scale
            grad_scale, group_scale = grad_scales["vector"](block), grad_scales["vector"]()
        rules[name] = ParamRule(
            name=name, kind=kind, shape=tuple(shape), width_mult=width_mult, init_std=init_std,
            lr=group_lr, betas=DEFAULT_BETAS,
            weight_decay_mult=decay_lr / group_lr if kind == HIDDEN else 0.0,
            schedule="base", group=group, eps=adam_eps / group_scale, grad_scale=grad_scale,
            # the model's expand_mult / project_mult (below), per weight
            forward_mult=shape[-1] ** -0.5 if kind == HIDDEN else 1.0)
    return Parametrization(
        name="umup", lr_recipe="uniform", width_mult=width_mult, input_mult=1.0,
        attention_scale=attn_mult / qk_dim,
        # u-µP's linear_readout (output x 1/fan_in) and its cross-entropy's softmax multiplier,
        # applied to the readout's input (the same product, and the logits come out scaled).
        readout_mult=loss_mult / width, rules=rules,
        expand_mult=width ** -0.5, project_mult=expand_dim ** -0.5, act_mult=act_mult,
        glu_mult=gelu_second_moment(act_mult) ** -0.5,
        attention_out_mult=position_attention_mean_square(attention_slope, max_seq_len) ** -0.5,
        residual_taus=taus, activation_grad_scale=grad_scales["activation"],
        branch_grad_scales=grad_scales["branch"])
