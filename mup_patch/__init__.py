"""Parametrizations for the trainer in main.py: SP (hlb-gpt's recipe) and µP.

The trainer builds its model, then asks this package how to initialise every parameter,
which forward multipliers to use (input, attention, readout), and which optimizer groups
to build. All width-dependent rules live here, so `main.py` never branches on `--param`.

Modules:
- `shapes.py`: classify parameters as hidden / vector-like / readout / scalar by comparing
  the model's shapes at the base width and at a wider "delta" width (microsoft/mup's rule).
- `rules.py`: the per-parameter init std, Adam learning rate, betas, weight decay and
  schedule for each parametrization, plus the forward multipliers.
- `coord_check.py`: `python -m mup_patch.coord_check`, the test that decides whether a
  parametrization is µP (activations stay O(1) as width grows).
"""
from mup_patch.rules import PARAMETRIZATIONS, Parametrization, build_parametrization
from mup_patch.shapes import HIDDEN, READOUT, SCALAR, VECTOR, classify_parameters

__all__ = [
    "PARAMETRIZATIONS", "Parametrization", "build_parametrization",
    "HIDDEN", "READOUT", "SCALAR", "VECTOR", "classify_parameters",
]
