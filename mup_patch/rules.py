"""Per-parameter rules: init std, Adam learning rate, betas, weight decay and schedule.

Two parametrizations, and for SP two learning-rate recipes:

| class   | SP init              | µP init                          | SP-hlb Adam lr | uniform / µP Adam lr |
|---------|----------------------|----------------------------------|----------------|----------------------|
| hidden  | hlb std at width     | hlb std at base x width_mult^-½  | lr             | lr (µP: lr / width_mult) |
| vector  | hlb std at width     | hlb std at base (constant)       | 32 lr          | lr                   |
| readout | hlb std at width     | hlb std at base, input / width_mult | 2 lr, β1 .6 | lr                   |
| scalar  | 1.0                  | 1.0                              | 100 lr         | lr                   |

Attention logits: SP scales by 1/sqrt(qk_width); µP by attn_mult * sqrt(base_qk_width)/qk_width,
which equals SP's scale at the base width. So at width == base width with the uniform recipe,
µP computes exactly what SP computes (tests/test_mup.py checks outputs and learning rates).

Weight decay (the run's value, dynamic or fixed) decays hidden matrices only, in every mode.
Under µP it is multiplied by width_mult so that AdamW's per-step shrink lr * wd does not
depend on width (microsoft/mup's MuAdamW convention for coupled decay); at the base width
this is SP's decay exactly, so an SP-vs-µP comparison changes only the parametrization.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from mup_patch.shapes import HIDDEN, READOUT, SCALAR, VECTOR, classify_parameters

PARAMETRIZATIONS = ("sp", "mup")
LR_RECIPES = ("hlb", "uniform")
DEFAULT_BETAS = (0.9, 0.95)

# hlb-gpt's empirical group multipliers, betas and schedules (SP with --lr-recipe hlb only).
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


@dataclass(frozen=True)
class Parametrization:
    name: str
    lr_recipe: str
    width_mult: float
    input_mult: float         # multiplies the embedding output
    attention_scale: float    # multiplies q.k
    readout_mult: float       # multiplies the readout's input
    rules: dict               # parameter name -> ParamRule

    @torch.no_grad()
    def init_(self, model: torch.nn.Module, generator: torch.Generator | None = None) -> None:
        """Draw every parameter with an init std from N(0, std^2), in a fixed name order."""
        for name, p in model.named_parameters():
            std = self.rules[name].init_std
            if std is None:
                continue
            if std == 0:
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float32) * std)

    def param_groups(self, model: torch.nn.Module) -> list[dict]:
        """One AdamW group per distinct (kind, lr, betas, decay, schedule); keys 'name',
        'schedule' and 'weight_decay_mult' ride along for the trainer's schedules."""
        groups: dict[tuple, dict] = {}
        for name, p in model.named_parameters():
            r = self.rules[name]
            key = (r.kind, r.lr, r.betas, r.weight_decay_mult, r.schedule)
            if key not in groups:
                groups[key] = {"params": [], "name": r.kind, "lr": r.lr, "initial_lr": r.lr,
                               "betas": r.betas, "weight_decay": 0.0,
                               "weight_decay_mult": r.weight_decay_mult, "schedule": r.schedule}
            groups[key]["params"].append(p)
        names = [g["name"] for g in groups.values()]
        assert len(names) == len(set(names)), f"two groups share a class name: {names}"
        return list(groups.values())

    def lr_table(self) -> str:
        """A fixed-width table: every parameter's class, shape, init std and Adam lr."""
        lines = [f"parametrization: {self.name} (lr recipe {self.lr_recipe}), width_mult "
                 f"{self.width_mult:g}, input_mult {self.input_mult:g}, attention_scale "
                 f"{self.attention_scale:.6g}, readout_mult {self.readout_mult:.6g}",
                 f"{'parameter':34s} {'class':8s} {'shape':>14s} {'init std':>10s} "
                 f"{'adam lr':>10s} {'betas':>10s} {'wd mult':>8s} schedule"]
        for r in self.rules.values():
            std = "module" if r.init_std is None else f"{r.init_std:.4g}"
            lines.append(f"{r.name:34s} {r.kind:8s} {'x'.join(map(str, r.shape)) or 'scalar':>14s} "
                         f"{std:>10s} {r.lr:10.4g} {r.betas[0]:>4g},{r.betas[1]:<5g} "
                         f"{r.weight_decay_mult:8.3g} {r.schedule}")
        return "\n".join(lines)


def build_parametrization(*, param: str, lr_recipe: str, lr: float, width: int, base_width: int,
                          qk_dim: int, base_qk_dim: int,
                          shapes_at: Callable[[int], dict[str, tuple]],
                          readout_names: set[str],
                          reference_init_std: Callable[[str, int], float | None],
                          input_mult: float = 1.0, output_mult: float = 1.0,
                          attn_mult: float = 1.0, readout_zero_init: bool = False) -> Parametrization:
    """Resolve every parameter's rule.

    shapes_at(width) gives {name: shape} of the model at that width (same depth);
    reference_init_std(name, width) gives hlb-gpt's init std of a parameter at a width
    (None for parameters that keep their module's init).
    """
    assert param in PARAMETRIZATIONS, f"unknown parametrization {param!r}; choose from {PARAMETRIZATIONS}"
    assert lr_recipe in LR_RECIPES, f"unknown lr recipe {lr_recipe!r}; choose from {LR_RECIPES}"
    assert not (param == "mup" and lr_recipe == "hlb"), (
        "µP replaces hlb-gpt's empirical lr law and group multipliers; use --lr-recipe uniform")
    shapes = shapes_at(width)
    # The delta model only has to differ in every width-dependent dimension.
    base_shapes, delta_shapes = shapes_at(base_width), shapes_at(2 * base_width)
    classes = classify_parameters(base_shapes, delta_shapes, readout_names)
    width_mult = width / base_width
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
                               attention_scale=attn_mult * math.sqrt(base_qk_dim / qk_dim) / math.sqrt(qk_dim),
                               readout_mult=output_mult / width_mult, rules=rules)
    return Parametrization(name=param, lr_recipe=lr_recipe, width_mult=width_mult, input_mult=1.0,
                           attention_scale=1 / math.sqrt(qk_dim), readout_mult=1.0, rules=rules)
