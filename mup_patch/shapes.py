"""Which dimensions of each parameter grow with width.

microsoft/mup decides a parameter's µP class from two models that differ only in width
(the "base" and the "delta"): a dimension that differs between them is infinite. We do the
same, on shapes alone, so no weights are ever allocated for the comparison:

- hidden:   both dimensions grow (the fused `expand` and the `project` matrices);
- readout:  the input dimension grows, the output (vocabulary) does not;
- vector:   exactly one dimension grows and it is not a readout (embedding, norm gains);
- scalar:   nothing grows (the learnable position-bias multiplier).
"""
from __future__ import annotations

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
        elif sum(grows) == 2 and len(grows) == 2:
            classes[name] = HIDDEN
        elif sum(grows) == 1 and name in readout_names:
            assert len(grows) == 2 and grows[1], f"{name}: a readout's fan-in (dim 1) must grow"
            classes[name] = READOUT
        elif sum(grows) == 1:
            classes[name] = VECTOR
        else:
            raise NotImplementedError(f"{name}: {sum(grows)} growing dimensions of {len(grows)}")
    return classes
