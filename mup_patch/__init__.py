"""Parametrizations (SP, µP, u-µP) for any model, and for the trainer in main.py.

A model asks this package how to initialise every parameter, which forward multipliers to
use (input, attention, readout, u-µP's per-op scales), and which optimizer groups to build.
All width-dependent rules live here, so a model never branches on the parametrization.
This package imports nothing from the rest of the repository.

Modules:
- `generic.py`: `parametrize(make_model, param=..., width=..., ...)`, the rules for any
  model given as a function width -> model.
- `shapes.py`: classify parameters as hidden / vector-like / readout / scalar by comparing
  the model's shapes at the base width and at a wider "delta" width (microsoft/mup's rule).
- `rules.py`: the per-parameter init std, Adam learning rate, betas, weight decay and
  schedule for each parametrization, plus the forward multipliers; main.py's GPT
  (hlb-gpt's lr recipe, its u-µP) through `build_parametrization`.
- `coord_check.py`: the test that decides whether a parametrization is µP (activations stay
  O(1) as width grows), for any model factory and batch.
"""
from mup_patch.generic import fan_in_init_std, parametrize
from mup_patch.rules import PARAMETRIZATIONS, ParamRule, Parametrization, build_parametrization
from mup_patch.shapes import HIDDEN, READOUT, SCALAR, VECTOR, classify_parameters, shapes_at_width

__all__ = [
    "parametrize", "fan_in_init_std", "PARAMETRIZATIONS", "ParamRule", "Parametrization", "build_parametrization",
    "HIDDEN", "READOUT", "SCALAR", "VECTOR", "classify_parameters", "shapes_at_width",
]
