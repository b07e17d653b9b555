"""icl.model: parameter count, the stacked-ensemble forward against the module, causality,
µP at the base width against SP, and the coord check on this model."""
from dataclasses import replace

import pytest
import torch

from icl.model import ModelConfig, build_member, ensemble_forward, make_parametrization, multipliers
from icl.tasks import GargTask
from mup_patch.shapes import HIDDEN

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


L2H4 = ModelConfig(token_dim=5, seq_len=32)  # timaeus' paper model for D=4, K=16
SMALL = ModelConfig(token_dim=3, seq_len=8, width=16, depth=2, heads=2)


def stack(models) -> dict:
    return {n: torch.stack([dict(m.named_parameters())[n].detach() for m in models])
            for n, _ in models[0].named_parameters()}


@pytest.mark.slow
def test_paper_model_has_timaeus_parameter_count():
    p = make_parametrization(L2H4, param="sp", base_width=64)
    model = build_member(L2H4, p, 0)
    assert sum(t.numel() for t in model.parameters()) == 52_741  # the count in the reference report


@pytest.mark.parametrize("param", ["sp", "mup", "umup"])
def test_ensemble_forward_equals_each_module(param):
    config = replace(SMALL, width=32)  # twice the base width: µP's multipliers are not 1
    p = make_parametrization(config, param=param, base_width=16)
    models = [build_member(config, p, seed) for seed in (0, 1, 2)]
    tokens = torch.randn(3, 5, config.seq_len, config.token_dim)
    out = ensemble_forward(stack(models), tokens, config, multipliers(p))
    expected = torch.stack([m(tokens[e]) for e, m in enumerate(models)])
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
    assert expected.std() > 0.05  # a real output, not zeros


def test_prediction_at_x_k_ignores_y_k_and_later():
    task = GargTask(dim=2, points=4)
    config = ModelConfig(token_dim=3, seq_len=8, width=16, depth=2, heads=2)
    model = build_member(config, make_parametrization(config, param="sp", base_width=16), 0)
    batch = task.sample(torch.tensor([0]), 0, 3)
    x, y = batch.x[0], batch.y[0]
    base = task.predictions(model(task.to_tokens(x, y)))
    for k in range(4):
        x2, y2 = x.clone(), y.clone()
        y2[:, k:] += 10.0
        x2[:, k + 1:] -= 5.0
        changed = task.predictions(model(task.to_tokens(x2, y2)))
        torch.testing.assert_close(changed[:, :k + 1], base[:, :k + 1], atol=1e-5, rtol=1e-5)
        if k + 1 < 4:
            assert (changed[:, k + 1:] - base[:, k + 1:]).abs().max() > 1e-3  # the later ones do see them


def test_mup_at_base_width_computes_what_sp_computes():
    sp = make_parametrization(SMALL, param="sp", base_width=16)
    mup = make_parametrization(SMALL, param="mup", base_width=16)
    assert mup.attention_scale == sp.attention_scale and mup.readout_mult == sp.readout_mult == 1.0
    assert {n: r.lr for n, r in mup.rules.items()} == {n: r.lr for n, r in sp.rules.items()}
    a, b = build_member(SMALL, sp, 3), build_member(SMALL, mup, 3)
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa, pb), name
    tokens = torch.randn(4, SMALL.seq_len, SMALL.token_dim)
    assert torch.equal(a(tokens), b(tokens))


def test_mup_rules_at_four_times_the_base_width():
    config = replace(SMALL, width=64)
    sp = make_parametrization(config, param="sp", base_width=16)
    mup = make_parametrization(config, param="mup", base_width=16)
    hidden = [n for n, r in mup.rules.items() if r.kind == HIDDEN]
    assert sorted(hidden) == sorted(f"blocks.{i}.{w}.weight" for i in range(2) for w in ("qkv", "out", "fc", "proj"))
    assert all(mup.rules[n].lr == 0.25 for n in hidden) and all(sp.rules[n].lr == 1.0 for n in hidden)
    assert mup.readout_mult == 0.25 and mup.rules["readout.weight"].lr == 1.0
    head_dim, base_head_dim = 32, 8
    assert sp.attention_scale == pytest.approx(head_dim ** -0.5)
    assert mup.attention_scale == pytest.approx(base_head_dim ** 0.5 / head_dim)  # 1/d, equal to SP at the base


@pytest.mark.slow
def test_coord_check_passes_mup_and_fails_sp():
    """Widths 64 -> 256 (base 64, the paper's width), lr 0.01, 3 seeds, queries zero-initialised.
    With random queries µP's attention output at init shrinks to 0.80x from 64 to 256 (the
    attention logits shrink as 1/sqrt(head dim), so attention averages more; mup's README
    calls this transient) and fails the 1/1.2 bound at t=1; a zero query removes it."""
    coord_check = pytest.importorskip("mup_patch.coord_check")
    run = getattr(coord_check, "run_coord_check", None)
    if run is None:
        pytest.skip("mup_patch.coord_check has no generic run_coord_check")
    task = GargTask(dim=4, points=8)
    base = ModelConfig(token_dim=5, seq_len=16, width=64, depth=2, heads=4)

    def build(param, width, seed):
        config = replace(base, width=width)
        p = make_parametrization(config, param=param, base_width=64, lr=0.01)
        return build_member(config, p, seed, query_zero_init=True), p

    def batch_fn():
        batch = task.sample(torch.tensor([0]), 0, 128)
        return batch.tokens[0], batch.y[0]

    def loss_fn(model, batch):
        tokens, y = batch
        return (task.predictions(model(tokens)) - y).square().mean()

    result = run(build, batch_fn, loss_fn, widths=[64, 256], params=("sp", "mup"), steps=3, seeds=(0, 1, 2))
    assert result["params"]["mup"]["pass"], result["params"]["mup"]["failing_layers"]
    assert not result["params"]["sp"]["pass"]
