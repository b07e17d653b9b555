"""`parametrize`: SP, µP or u-µP rules for any model given as a function width -> model.

ezmup's promise (any model, no per-model rule table) with microsoft/mup's classification:
build the model on the meta device at the base width and at twice it (nothing is allocated),
classify every parameter by which of its dimensions grew (shapes.py), and give each one an
init std, an Adam lr, a weight-decay multiplier and a forward multiplier.

    from mup_patch import parametrize
    p = parametrize(lambda w: MyTransformer(width=w, depth=4), param="mup",
                    width=1024, base_width=128, lr=3e-3, readout_names={"readout.weight"},
                    head_dim_at=lambda w: w // 4)
    model = MyTransformer(width=1024, depth=4)     # it multiplies q.k by p.attention_scale
    p.init_(model, torch.Generator().manual_seed(0))  # and the readout's input by p.readout_mult
    optimizer = torch.optim.AdamW(p.param_groups(model, weight_decay=0.1))

Rules (n = a parameter's fan-in, everything but dimension 0; m = width / base_width; lr the
run's lr, which µP applies at the base width):

| class   | SP init / lr         | µP init / lr                  | u-µP init / lr / forward mult        |
|---------|----------------------|-------------------------------|--------------------------------------|
| hidden  | s(width) / lr        | s(base) m^-1/2 / lr/m         | 1 / lr n^-1/2 / n^-1/2               |
| vector  | s(width) / lr        | s(base) / lr                  | matrices: 1 / lr n^-1/2 / n^-1/2     |
|         |                      |                               | (embedding tables: forward 1);       |
|         |                      |                               | 1-D: module / lr / 1                 |
| readout | s(width) / lr        | s(base) (or 0) / lr           | 1 (or 0) / lr / 1                    |
| scalar  | s(width) / lr        | s(base) / lr                  | module / lr / 1                      |

s(w) is the SP init std at width w: `sp_init_std(name, shape)` of the parameter's shape at w
if given, else `fan_in_init_std(shape)`: 1/sqrt(n) for matrices and None (keep the module's
own init: norm gains, biases) for 1-D parameters. With the default, µP's hidden std
s(base) m^-1/2 is 1/sqrt(n) at every width.
Multipliers the model applies: `attention_scale` on q.k (SP 1/sqrt(d), µP attn_mult
sqrt(d_base)/d, u-µP attn_mult/d, d = head_dim_at(width)); `readout_mult` on the readout's
input (SP 1, µP output_mult/m, u-µP output_mult/n_readout, u-µP's linear_readout scale);
`input_mult` on the embedding's output (µP only); under u-µP, `rules[name].forward_mult` on
the output of the op that uses each weight (unit_scaling's linear: 1/sqrt(fan_in); a table
lookup sums nothing, so 1). Residual, nonlinearity and loss scales of u-µP depend on the
model's structure and stay the model's business (main.py's GPT: rules.build_umup).
Weight decay decays hidden matrices only, with multiplier lr / (the parameter's lr): AdamW's
per-step shrink lr_p x wd x mult is then lr x wd whatever the width (SP: 1; µP: m, mup's
MuAdamW convention; u-µP: sqrt(n), its independent decay anchored at the run's lr).
u-µP's Adam lrs are unit_scaling.optim.lr_scale_func_adam's without depth scaling (a depth
fixed across widths makes depth^-1/2 a constant the lr sweep absorbs).
At width == base_width, µP computes what SP computes: same inits, lrs and attention scale
(bit for bit), readout_mult = output_mult (1 by default).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from mup_patch.rules import DEFAULT_BETAS, ParamRule, Parametrization, build_parametrization
from mup_patch.shapes import HIDDEN, READOUT, VECTOR, classify_parameters, fan_in, shapes_at_width


def parametrize(make_model: Callable[[int], torch.nn.Module], *, param: str, width: int,
                base_width: int, lr: float, readout_names: set[str],
                head_dim_at: Callable[[int], int] | None = None,
                sp_init_std: Callable[[str, tuple], float | None] | None = None,
                readout_zero_init: bool = False, input_mult: float = 1.0,
                output_mult: float = 1.0, attn_mult: float = 1.0) -> Parametrization:
    """Every parameter's rule for make_model(width) under `param` ("sp", "mup" or "umup").

    make_model(w) must build the same architecture (same depth, same parameter names) at any
    width w; it is called on the meta device at width, base_width and 2 * base_width.
    readout_names: the output layer(s) (shapes cannot tell a readout from an embedding table).
    head_dim_at(w): the q.k width of an attention head at width w (None: no attention).
    sp_init_std(name, shape): SP's init std of a parameter of that shape (its shape at some
    width; None: the module's own init). Default: fan_in_init_std.
    readout_zero_init: µP and u-µP start the readout at 0 (microsoft/mup's recommendation).
    input_mult, output_mult, attn_mult: µP's tunable multipliers (u-µP: output_mult and
    attn_mult are its loss and attention mults), width-independent; 1 makes µP equal SP at
    the base width.
    """
    assert param in ("sp", "mup", "umup"), f"unknown parametrization {param!r}; choose sp, mup or umup"
    assert width > 0 and base_width > 0, f"widths must be positive (width {width}, base_width {base_width})"
    shapes_cache: dict[int, dict[str, tuple]] = {}

    def shapes_at(w: int) -> dict[str, tuple]:
        if w not in shapes_cache:
            shapes_cache[w] = shapes_at_width(make_model, w)
        return shapes_cache[w]

    missing = set(readout_names) - set(shapes_at(base_width))
    assert not missing, (f"readout_names {sorted(missing)} are not parameters of make_model; "
                         f"its parameters: {sorted(shapes_at(base_width))}")

    qk_dim = head_dim_at(width) if head_dim_at else None
    base_qk_dim = head_dim_at(base_width) if head_dim_at else None
    if param == "umup":
        return build_umup_generic(
            shapes=shapes_at(width), base_shapes=shapes_at(base_width),
            delta_shapes=shapes_at(2 * base_width), readout_names=set(readout_names), lr=lr,
            width=width, base_width=base_width, qk_dim=qk_dim, readout_zero_init=readout_zero_init,
            attn_mult=attn_mult, output_mult=output_mult)
    return build_parametrization(
        param=param, lr_recipe="uniform", lr=lr, width=width, base_width=base_width,
        qk_dim=qk_dim, base_qk_dim=base_qk_dim, shapes_at=shapes_at, readout_names=set(readout_names),
        reference_init_std=lambda name, w: (sp_init_std or fan_in_init_std_of)(name, shapes_at(w)[name]),
        input_mult=input_mult,
        output_mult=output_mult, attn_mult=attn_mult, readout_zero_init=readout_zero_init)


def fan_in_init_std(shape: tuple) -> float | None:
    """SP's default init std: 1/sqrt(fan_in) for a matrix or kernel (torch's default Linear
    init has this std up to a constant); None (the module's own init) for 1-D parameters."""
    return fan_in(shape) ** -0.5 if len(shape) >= 2 else None


def fan_in_init_std_of(name: str, shape: tuple) -> float | None:
    return fan_in_init_std(shape)


def build_umup_generic(*, shapes: dict, base_shapes: dict, delta_shapes: dict, readout_names: set[str],
                       lr: float, width: int, base_width: int, qk_dim: int | None,
                       readout_zero_init: bool, attn_mult: float, output_mult: float) -> Parametrization:
    """u-µP's per-weight rules for any model (the table in the module docstring)."""
    classes = classify_parameters(base_shapes, delta_shapes, readout_names)
    readout_fan_ins = {shapes[name][-1] for name in readout_names}
    assert len(readout_fan_ins) <= 1, f"readouts with different fan-ins {readout_fan_ins}: one readout_mult cannot serve them"
    readout_fan_in = readout_fan_ins.pop() if readout_fan_ins else width
    rules = {}
    for name, shape in shapes.items():
        kind = classes[name]
        n = fan_in(shape)
        if kind == READOUT:
            init_std, group_lr, forward = (0.0 if readout_zero_init else 1.0), lr, 1.0
        elif len(shape) >= 2:  # hidden matrices, input layers and embedding tables
            # An embedding table (vocab, width) grows in its last dimension; it is looked up, not summed.
            lookup = kind == VECTOR and base_shapes[name][-1] != delta_shapes[name][-1]
            init_std, group_lr, forward = 1.0, lr * n ** -0.5, 1.0 if lookup else n ** -0.5
        else:  # norm gains, biases, scalars: u-µP "norm" / "bias", module init
            init_std, group_lr, forward = None, lr, 1.0
        rules[name] = ParamRule(
            name=name, kind=kind, shape=tuple(shape),
            width_mult=n / fan_in(base_shapes[name]) if kind in (HIDDEN, READOUT) else 1.0,
            init_std=init_std, lr=group_lr, betas=DEFAULT_BETAS,
            weight_decay_mult=lr / group_lr if kind == HIDDEN else 0.0, schedule="base",
            # matrices of one class but different fan-ins have different lrs: one group each
            group=f"{kind}_fan_in_{n}" if len(shape) >= 2 and kind != READOUT else kind,
            forward_mult=forward)
    return Parametrization(name="umup", lr_recipe="uniform", width_mult=width / base_width, input_mult=1.0,
                           attention_scale=None if qk_dim is None else attn_mult / qk_dim,
                           readout_mult=output_mult / readout_fan_in, rules=rules)
