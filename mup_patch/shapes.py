"""Which dimensions of each parameter grow with width.

microsoft/mup decides a parameter's µP class from two models that differ only in width
(the "base" and the "delta"): a dimension that differs between them is infinite. We do the
same, on shapes alone, so no weights are ever allocated for the comparison:

- hidden:   fan-out and fan-in (dimensions 0 and 1) grow: width x width matrices, and conv
            kernels (out, in, *kernel) whose channels grow;
- readout:  the input dimension grows, the output (vocabulary) does not;
- vector:   exactly one dimension grows and it is not a readout (an embedding, an input layer,
            norm gains and biases);
- scalar:   nothing grows (the learnable position-bias multiplier).

The models are built on the meta device (`shapes_at_width`): shapes only, nothing allocated.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

HIDDEN, VECTOR, READOUT, SCALAR = "hidden", "vector", "readout", "scalar"


def classify_parameters(base_shapes: dict[str, tuple], delta_shapes: dict[str, tuple],
                        readout_names: set[str]) -> dict[str, str]:
    """Map parameter name -> class, from shapes at the base width and at a wider width.

    `readout_names` names the output layer(s). Shapes alone cannot tell a readout from an
    embedding (both are vocabulary x width), so the model must name it.
    """
    assert base_shapes.keys() == delta_shapes.keys(), (
        "base and delta models have different parameter names; build both with the same "
        f"depth (differences: {sorted(set(base_shapes) ^ set(delta_shapes))})")
    classes = {}
    for name, base_shape in base_shapes.items():
        delta_shape = delta_shapes[name]
        assert len(base_shape) == len(delta_shape), f"{name}: rank changes with width"
        grows = [b != d for b, d in zip(base_shape, delta_shape)]
        if sum(grows) == 0:
            classes[name] = SCALAR
        elif sum(grows) == 2 and grows[0] and grows[1]:
            classes[name] = HIDDEN
        elif sum(grows) == 1 and name in readout_names:
            assert len(grows) == 2 and grows[1], f"{name}: a readout's fan-in (dim 1) must grow"
            classes[name] = READOUT
        elif sum(grows) == 1:
            classes[name] = VECTOR
        else:
            raise NotImplementedError(f"{name}: {sum(grows)} growing dimensions of {len(grows)}")
    return classes


def shapes_at_width(make_model: Callable[[int], torch.nn.Module], width: int) -> dict[str, tuple]:
    """{name: shape} of make_model(width), built on the meta device (no memory, no init)."""
    with torch.device("meta"):
        model = make_model(width)
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


def fan_in(shape: tuple) -> int:
    """Inputs summed per output: everything but dimension 0 (torch's convention for Linear
    weights (out, in) and conv kernels (out, in, *kernel))."""
    return math.prod(shape[1:])
