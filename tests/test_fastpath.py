"""fastpath.py's compilation on the CPU: --compile-shapes dynamic traces fewer graphs than static
over the sequence-length warmup's shapes, and computes what the plain path computes. (The
FlexAttention path needs CUDA: tests/test_gpu.py.)"""
import functools

import pytest
import torch
import torch._dynamo
import torch.nn.functional as F
from torch._dynamo.utils import counters

import main

SHAPES = [(3, 32), (5, 32), (3, 64), (5, 64), (3, 128), (5, 128)]  # (chunk rows, sequence length)


def resolved(*argv: str):
    return main.resolve(main.parse_args(["--device", "cpu", "--width", "64", "--depth", "2",
                                         "--max-seq-len", "128", "--seq-len-start", "32", *argv]))


def traced_graphs(shapes: str, monkeypatch) -> tuple[int, list]:
    """Graphs dynamo traced for the step's loss over SHAPES (eager backend: tracing, not
    code generation, decides the count), and each shape's loss and gradients, compiled and plain."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    args = resolved("--compile", "--compile-shapes", shapes)
    torch.manual_seed(0)
    model = main.build_model(args, main.make_parametrization(args))
    loss_fn, _ = main.step_functions(model, args)
    torch._dynamo.reset()
    counters.clear()
    results = []
    generator = torch.Generator().manual_seed(0)
    for rows, seq_len in SHAPES:
        x, y = torch.randint(0, 50257, (2, rows, seq_len), generator=generator)
        for step_loss in (loss_fn, main.chunk_loss):  # compiled, then the plain path
            loss = step_loss(model, x, y, None)
            results.append([loss.detach(), *torch.autograd.grad(loss, list(model.parameters()))])
    graphs = counters["stats"]["unique_graphs"]
    torch._dynamo.reset()
    return graphs, results


def test_dynamic_shapes_trace_fewer_graphs_and_compute_the_same(monkeypatch):
    static, static_results = traced_graphs("static", monkeypatch)
    dynamic, dynamic_results = traced_graphs("dynamic", monkeypatch)
    # static: the block and the readout loss, each a graph per shape
    assert static == 2 * len(SHAPES)
    assert dynamic == 3, dynamic  # the block twice (dynamo specialises its first shape), the loss once
    for results in (static_results, dynamic_results):
        for compiled, plain in zip(results[::2], results[1::2]):
            for t_c, t_p in zip(compiled, plain):
                torch.testing.assert_close(t_c, t_p, rtol=1e-5, atol=1e-6)

