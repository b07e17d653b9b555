"""Tests for the µP switch (mup_patch/): the coord check, µP == SP at the base width, the
width rules of the lr table, and the trainer's input checks. CPU only, deterministic."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import coord_check_gpt as coord_check
import main
from mup_patch import HIDDEN, READOUT, SCALAR, VECTOR
from trainer_support import assert_one_line_bad_input, uniform_tokens

LR = 1e-3
BASE = 384


def resolved(*argv: str):
    return main.resolve(main.parse_args(["--device", "cpu", *argv]))


def parametrization(*argv: str):
    return main.make_parametrization(resolved(*argv))


# ----------------------------------------------------------------------------------------
# Coord check
# ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def coord():
    """Widths 64 and 256 (4x apart), two seeds, three steps: about 10 s on 2 cores."""
    torch.manual_seed(0)
    return coord_check.run_coord_check(params=("sp", "mup"), widths=(64, 256), seeds=(0, 1), steps=3)


def ratios(result, param, layer):
    """{t: wide/narrow ratio of the seed-mean mean |x|} for one layer."""
    return {c["t"]: c["ratio"] for c in result["params"][param]["checks"] if c["layer"] == layer}


@pytest.mark.slow
def test_coord_check_mup_passes(coord):
    mup = coord["params"]["mup"]
    assert mup["pass"], mup["failing_layers"]
    assert all(c["ok"] for c in mup["checks"])
    # Every layer that µP must keep flat is within mup's 1.2 tolerance at t = 1, 2, 3.
    flat = [c for c in mup["checks"] if c["rule"] == "flat"]
    assert {c["t"] for c in flat} == {1, 2, 3}
    assert all(1 / 1.2 <= c["ratio"] <= 1.2 for c in flat)
    layers = set(mup["layers"])
    for block in range(2):
        assert {f"blocks.{block}", f"blocks.{block}.query_tap", f"blocks.{block}.key_tap",
                f"blocks.{block}.attention_tap", f"blocks.{block}.attn_logits"} <= layers
    assert {"embedding", "norm", "readout"} <= layers


@pytest.mark.slow
def test_coord_check_mup_exemptions_are_the_readme_ones(coord):
    """Only the logits and the attention logits may shrink, and at init they do so at
    exactly µP's 1/sqrt(width) rate (a 4x wider model: 0.5)."""
    exempt = {c["layer"] for c in coord["params"]["mup"]["checks"] if c["rule"] != "flat"}
    assert exempt == {"readout", "blocks.0.attn_logits", "blocks.1.attn_logits"}
    assert ratios(coord, "mup", "readout")[1] == pytest.approx(0.5, rel=0.02)
    for block in range(2):
        assert ratios(coord, "mup", f"blocks.{block}.attn_logits")[1] == pytest.approx(0.5, rel=0.2)
    for t, r in ratios(coord, "mup", "readout").items():  # never grows
        assert r <= 1.2, t


@pytest.mark.slow
def test_coord_check_sp_fails_because_it_grows_with_width(coord):
    sp = coord["params"]["sp"]
    assert not sp["pass"]
    readout = ratios(coord, "sp", "readout")
    assert readout[3] > 1.5, readout  # the logits grow with width after two updates
    assert readout[3] > readout[2] > readout[1] * 0.99
    for block in range(2):
        assert ratios(coord, "sp", f"blocks.{block}")[3] > 2.0  # the residual stream grows
        assert ratios(coord, "sp", f"blocks.{block}.attn_logits")[3] > 1.2
    # hlb-gpt's SP embedding init std 0.25/sqrt(width): it shrinks at init already.
    assert ratios(coord, "sp", "embedding")[1] == pytest.approx(0.5, rel=0.02)


@pytest.mark.slow
def test_coord_check_base_width_is_the_narrowest(coord):
    """The check puts µP's base at the narrowest width, where µP is SP: the two record the
    same numbers there at every step, and the wider µP model gets hidden lr / 4."""
    assert coord["config"]["base_width"] == 64
    sp, mup = coord["params"]["sp"]["per_seed"], coord["params"]["mup"]["per_seed"]
    for layer in sp:
        assert sp[layer]["64"] == mup[layer]["64"], layer
    assert coord["params"]["mup"]["runs"]["256"]["lr"]["hidden"] == pytest.approx(1e-2 / 4)


def test_coord_check_cli_rejects_bad_input(capsys):
    assert coord_check.cli(["--widths", "64,128", "--quiet"]) == main.EXIT_BAD_INPUT
    assert "4x apart" in capsys.readouterr().err
    assert coord_check.cli(["--widths", "60,240", "--quiet"]) == main.EXIT_BAD_INPUT
    assert "multiple of 8" in capsys.readouterr().err
    assert coord_check.cli(["--quiet", "--", "--base-width", "64"]) == main.EXIT_BAD_INPUT


# ----------------------------------------------------------------------------------------
# µP at the base width is SP with the uniform recipe
# ----------------------------------------------------------------------------------------

def build_pair(width: int, lr: str | None):
    """(sp args, sp parametrization, sp model), the same for µP, at width == base width."""
    common = ["--width", str(width), "--base-width", str(width), "--depth", "2",
              "--max-seq-len", "32", "--seq-len-start", "32", "--seed", "7"]
    if lr is not None:
        common += ["--lr", lr]
    out = {}
    for param in ("sp", "mup"):
        args = resolved("--param", param, "--lr-recipe", "uniform", *common)
        p = main.make_parametrization(args)
        out[param] = (args, p, main.build_model(args, p))
    return out


def per_parameter_groups(optimizer, model):
    """parameter name -> its optimizer group's settings (params excluded)."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    table = {}
    for group in optimizer.param_groups:
        settings = {k: v for k, v in group.items() if k != "params"}
        for p in group["params"]:
            table[name_of[id(p)]] = settings
    return table


@pytest.mark.parametrize("width,lr", [(64, None), (96, "3e-3")])
@pytest.mark.slow
def test_mup_at_base_width_computes_what_sp_computes(width, lr):
    pair = build_pair(width, lr)
    (sp_args, _, sp_model), (mup_args, _, mup_model) = pair["sp"], pair["mup"]
    assert sp_args.lr == mup_args.lr  # the default lr law is evaluated at the base width
    # Same init: identical parameters, bit for bit.
    sp_params, mup_params = dict(sp_model.named_parameters()), dict(mup_model.named_parameters())
    assert sp_params.keys() == mup_params.keys()
    for name in sp_params:
        assert torch.equal(sp_params[name], mup_params[name]), name
    # Same forward multipliers, bit for bit (the attention scale once differed in the last place).
    assert (sp_model.input_mult, sp_model.attention_scale, sp_model.readout_mult) == \
        (mup_model.input_mult, mup_model.attention_scale, mup_model.readout_mult)
    # Same logits on the same input.
    tokens = torch.randint(0, 50257, (2, 33), generator=torch.Generator().manual_seed(1))
    x, y = tokens[:, :-1], tokens[:, 1:]
    assert torch.equal(sp_model(x), mup_model(x))
    # Same optimizer groups, compared parameter by parameter.
    optimizers = {}
    for param, (args, p, model) in pair.items():
        optimizers[param] = torch.optim.AdamW(p.param_groups(model), eps=1e-9)
    sp_groups = per_parameter_groups(optimizers["sp"], sp_model)
    mup_groups = per_parameter_groups(optimizers["mup"], mup_model)
    assert sp_groups == mup_groups
    # Identical parameters after a few AdamW steps, weight decay applied the trainer's way.
    readout_at_init = sp_params["readout.weight"].detach().clone()
    for step in range(3):
        for param, (args, p, model) in pair.items():
            optimizer = optimizers[param]
            loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for group in optimizer.param_groups:
                group["weight_decay"] = 0.1 * group["weight_decay_mult"]
            optimizer.step()
        for name in sp_params:
            assert torch.equal(sp_params[name], mup_params[name]), (step, name)
    assert not torch.equal(sp_params["readout.weight"], readout_at_init)  # it did train


def test_mup_rules_equal_sp_rules_at_the_default_base_width():
    """At 384 (hlb-gpt's model, q/k width 48) without building the model."""
    sp = parametrization("--param", "sp", "--lr-recipe", "uniform", "--width", "384")
    mup = parametrization("--param", "mup", "--width", "384")
    assert sp.rules == {name: rule for name, rule in mup.rules.items()}
    assert (sp.input_mult, sp.attention_scale, sp.readout_mult) == \
        (mup.input_mult, mup.attention_scale, mup.readout_mult)


# ----------------------------------------------------------------------------------------
# µP with hlb-gpt's recipe: SP-hlb at the base width, µP's width rules away from it
# ----------------------------------------------------------------------------------------

def hlb_trainer(param: str, out: Path) -> "main.Trainer":
    """A tiny Trainer at width == base width with hlb-gpt's recipe, its dynamic decay, a
    warmup of 2 of its 3 steps and a fixed batch, on random tokens."""
    args = resolved("--param", param, "--lr-recipe", "hlb", "--width", "64", "--base-width", "64",
                    "--depth", "2", "--max-seq-len", "32", "--seq-len-start", "32", "--batch-tokens", "128",
                    "--warmup-tokens", "256", "--microbatches", "1", "--eval-tokens", "128",
                    "--checkpoint-every-tokens", "0", "--quiet", "--out", str(out), "--run-name", param)
    return main.Trainer(args, uniform_tokens(20_000, 1_000))


def test_mup_hlb_at_base_width_trains_as_sp_hlb_bit_for_bit(tmp_path):
    """Same default lr (hlb-gpt's law at the base width), same groups, and three trainer steps
    (schedules, dynamic decay) giving identical losses and identical weights."""
    sp, mup = hlb_trainer("sp", tmp_path), hlb_trainer("mup", tmp_path)
    assert sp.args.lr == mup.args.lr
    assert sp.log["config"]["param_groups"] == mup.log["config"]["param_groups"]
    assert {g["schedule"] for g in mup.optimizer.param_groups} == {"base", "output", "position_bias"}
    for step in range(3):
        assert sp.train_step()[0] == mup.train_step()[0], step
    mup_params = dict(mup.model.named_parameters())
    for name, p in sp.model.named_parameters():
        assert torch.equal(p, mup_params[name]), name


@pytest.mark.parametrize("width", [192, 768, 1536])
def test_mup_hlb_rules_are_mup_width_rules_on_hlb_values_at_the_base_width(width):
    """Hand-derived from hlb-gpt's recipe at 384 (lr multipliers 1/32/2/100, readout betas
    (0.6, 0.95), the readout's and the position bias's own schedules, hlb-gpt's init at 384)
    and µP's width factors with m = width/384: hidden lr / m, init x m^-1/2, decay x m;
    everything else as at 384; readout input / m, attention 1/qk."""
    p = parametrization("--param", "mup", "--lr-recipe", "hlb", "--width", str(width), "--lr", str(LR))
    m, depth = width / BASE, 8
    expected = {  # name: (lr, init std, betas, schedule, wd mult)
        "embedding.weight": (32 * LR, 0.25 / math.sqrt(BASE), (0.9, 0.95), "base", 0.0),
        "blocks.0.expand": (LR / m, 0.5 / math.sqrt(BASE) / 2 * m ** -0.5, (0.9, 0.95), "base", m),
        "blocks.0.project": (LR / m, 1 / math.sqrt(BASE) / 2 / depth * m ** -0.5, (0.9, 0.95), "base", m),
        "blocks.0.norm.weight": (32 * LR, None, (0.9, 0.95), "base", 0.0),
        "blocks.0.position_bias_mult": (100 * LR, None, (0.9, 0.95), "position_bias", 0.0),
        "norm.weight": (32 * LR, None, (0.9, 0.95), "base", 0.0),
        "readout.weight": (2 * LR, 0.5 / math.sqrt(BASE), (0.6, 0.95), "output", 0.0)}
    for name, (lr, std, betas, schedule, wd) in expected.items():
        rule = p.rules[name]
        assert rule.lr == pytest.approx(lr, rel=1e-12), name
        assert (rule.init_std is None) == (std is None), name
        assert std is None or rule.init_std == pytest.approx(std, rel=1e-12), name
        assert (rule.betas, rule.schedule) == (betas, schedule), name
        assert rule.weight_decay_mult == pytest.approx(wd, rel=1e-12), name
    assert p.readout_mult == pytest.approx(1 / m, rel=1e-12)
    assert p.attention_scale == pytest.approx(math.sqrt(BASE // 8) / (width // 8), rel=1e-12)
    # The default lr is hlb-gpt's law at the base width: SP-hlb's default at 384, at any width.
    assert resolved("--param", "mup", "--lr-recipe", "hlb", "--width", str(width)).lr == \
        resolved("--param", "sp", "--width", str(BASE)).lr


def test_main_show_lr_table_of_mup_with_hlb_recipe(capsys):
    assert main.main(["--device", "cpu", "--param", "mup", "--lr-recipe", "hlb", "--width", "768",
                      "--depth", "1", "--lr", "1e-3", "--show-lr-table"]) == 0
    out = capsys.readouterr().out
    assert "parametrization: mup (lr recipe hlb), width_mult 2" in out
    readout = next(line for line in out.splitlines() if line.startswith("readout.weight"))
    assert readout.split()[4:] == ["0.002", "0.6,0.95", "0", "output"]


# ----------------------------------------------------------------------------------------
# The lr table's width rules
# ----------------------------------------------------------------------------------------

EXPECTED_CLASSES = {"embedding.weight": VECTOR, "readout.weight": READOUT, "norm.weight": VECTOR,
                    "blocks.0.norm.weight": VECTOR, "blocks.0.expand": HIDDEN,
                    "blocks.0.project": HIDDEN, "blocks.0.position_bias_mult": SCALAR}


@pytest.mark.parametrize("width", [64, 128, 768, 1536])
def test_mup_rules_scale_with_width_as_documented(width):
    base = parametrization("--param", "mup", "--width", str(BASE), "--lr", str(LR))
    wide = parametrization("--param", "mup", "--width", str(width), "--lr", str(LR))
    m = width / BASE
    assert wide.width_mult == pytest.approx(m)
    for name, kind in EXPECTED_CLASSES.items():
        assert wide.rules[name].kind == kind, name
    for name, rule in wide.rules.items():
        ref = base.rules[name]
        if rule.kind == HIDDEN:
            assert rule.lr == pytest.approx(LR / m, rel=1e-12), name
            assert rule.init_std == pytest.approx(ref.init_std * m ** -0.5, rel=1e-12), name
            assert rule.weight_decay_mult == pytest.approx(m), name
        else:
            assert rule.lr == LR, name
            assert rule.init_std == ref.init_std, name
            assert rule.weight_decay_mult == 0.0, name
        assert (rule.betas, rule.schedule) == ((0.9, 0.95), "base"), name
    assert wide.readout_mult == pytest.approx(1 / m, rel=1e-12)
    assert wide.input_mult == 1.0
    qk, base_qk = width // 8, BASE // 8
    assert wide.attention_scale == pytest.approx(math.sqrt(base_qk) / qk, rel=1e-12)


def test_mup_multipliers_and_zero_init_flags():
    p = parametrization("--param", "mup", "--width", "768", "--input-mult", "2", "--output-mult", "3",
                        "--attn-mult", "4", "--readout-zero-init")
    assert p.input_mult == 2.0
    assert p.readout_mult == pytest.approx(3 / 2)
    assert p.attention_scale == pytest.approx(4 * math.sqrt(48) / 96)
    assert p.rules["readout.weight"].init_std == 0.0
    # The default lr law is evaluated at the base width, so it does not change with width.
    defaults = [resolved("--param", "mup", "--width", str(w)) for w in (128, 384, 1536)]
    for args in defaults:
        main.make_parametrization(args)
    assert len({args.lr for args in defaults}) == 1


@pytest.mark.parametrize("width", [128, 768])
def test_sp_has_nothing_mup_specific(width):
    args = ["--param", "sp", "--lr-recipe", "uniform", "--width", str(width), "--lr", str(LR)]
    sp = parametrization(*args)
    cfg = main.model_config(resolved(*args))
    assert (sp.width_mult, sp.input_mult, sp.readout_mult) == (width / BASE, 1.0, 1.0)
    assert sp.attention_scale == 1 / math.sqrt(width // 8)
    for name, rule in sp.rules.items():
        assert rule.lr == LR, name
        assert rule.init_std == main.reference_init_std(name, width, cfg), name
        assert rule.weight_decay_mult == (1.0 if rule.kind == HIDDEN else 0.0), name
    # The µP flags do not touch SP.
    with_mup_flags = parametrization(*args, "--base-width", "128", "--input-mult", "2",
                                     "--output-mult", "3", "--attn-mult", "4", "--readout-zero-init")
    effective = lambda rules: {n: (r.kind, r.init_std, r.lr, r.betas, r.weight_decay_mult, r.schedule)
                               for n, r in rules.items()}  # width_mult is informational
    assert effective(with_mup_flags.rules) == effective(sp.rules)
    assert (with_mup_flags.input_mult, with_mup_flags.attention_scale, with_mup_flags.readout_mult) == \
        (sp.input_mult, sp.attention_scale, sp.readout_mult)


def test_sp_hlb_recipe_keeps_hlb_multipliers():
    sp = parametrization("--param", "sp", "--width", "384", "--lr", str(LR))
    mult = {HIDDEN: 1, VECTOR: 32, READOUT: 2, SCALAR: 100}
    for name, rule in sp.rules.items():
        assert rule.lr == pytest.approx(LR * mult[rule.kind]), name
    assert sp.rules["readout.weight"].betas == (0.6, 0.95)
    assert sp.rules["readout.weight"].schedule == "output"
    assert sp.rules["blocks.0.position_bias_mult"].schedule == "position_bias"


def test_dynamic_decay_law_is_evaluated_at_the_base_width_under_mup():
    """hlb-gpt's dynamic decay depends on the parameter count P; under µP it is evaluated at
    the base width (like the lr law), so µP's wd x width_mult rule keeps lr * wd constant."""
    def own_params(args):
        with torch.device("meta"):
            return sum(p.numel() for p in main.GPT(main.model_config(args)).parameters())
    base = resolved("--param", "mup", "--width", "384")
    assert main.decay_law_params(base) == own_params(base)
    for width in ("128", "1536"):
        sp = resolved("--param", "sp", "--width", width)
        assert main.decay_law_params(sp) == own_params(sp)
        assert main.decay_law_params(resolved("--param", "mup", "--width", width)) == own_params(base)
    # What it prevents: at loss 4 the law at 1536's own P is 4.6x the law at the base's P.
    wide = resolved("--param", "sp", "--width", "1536")
    ratio = main.dynamic_weight_decay(4.0, own_params(wide)) / main.dynamic_weight_decay(4.0, own_params(base))
    assert ratio > 4


def test_lr_table_lists_every_parameter():
    p = parametrization("--param", "mup", "--width", "768")
    table = p.lr_table()
    for name in p.rules:
        assert name in table
    assert "readout_mult 0.5" in table


# ----------------------------------------------------------------------------------------
# Trainer input checks
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv,needle", [
    (("--param", "mup", "--base-width", "100"), "--base-width 100"),
    (("--param", "mup", "--base-width", "0"), "--base-width"),
    (("--param", "mup", "--base-width", "-64"), "--base-width"),
    (("--param", "mup", "--base-width", "wide"), "--base-width"),
])
def test_main_rejects_bad_base_width_with_one_line(argv, needle, capsys):
    assert_one_line_bad_input(main, argv, needle, capsys)


def test_main_show_lr_table(capsys):
    assert main.main(["--device", "cpu", "--param", "mup", "--width", "768", "--show-lr-table"]) == 0
    out = capsys.readouterr().out
    assert "parametrization: mup (lr recipe uniform), width_mult 2" in out
    assert "blocks.0.expand" in out


# ----------------------------------------------------------------------------------------
# microsoft/mup as an independent oracle (skipped unless `mup` is importable;
# `pip install --no-deps mup` is enough: its core needs only torch and pyyaml)
# ----------------------------------------------------------------------------------------

def test_rules_match_microsoft_mup():
    mup = pytest.importorskip("mup")
    base_width, width = 64, 256
    args = resolved("--param", "mup", "--width", str(width), "--base-width", str(base_width),
                    "--lr", str(LR), "--depth", "2")
    ours = main.make_parametrization(args)
    with torch.device("meta"):
        model = main.GPT(main.model_config(args))
    base, delta = main.parameter_shapes(args, base_width), main.parameter_shapes(args, 2 * base_width)
    # Our readout is an nn.Linear with a forward multiplier, not a MuReadout: skip the assert.
    mup.set_base_shapes(model, base, delta=delta, rescale_params=False, do_assert=False)
    optimizer = mup.MuAdamW(model.parameters(), lr=LR, weight_decay=0.1)
    for name, p in model.named_parameters():
        group = next(g for g in optimizer.param_groups if any(q is p for q in g["params"]))
        rule, infshape = ours.rules[name], p.infshape
        assert rule.lr == pytest.approx(group["lr"], rel=1e-12), name
        if infshape.ninf() == 2:  # hidden: init std ∝ width_mult^-1/2, wd ∝ width_mult
            assert rule.kind == HIDDEN
            assert rule.weight_decay_mult == pytest.approx(group["weight_decay"] / 0.1)
            assert rule.init_std / ours_at_base(args, base_width).rules[name].init_std == \
                pytest.approx(infshape.width_mult() ** -0.5)
        else:  # vector-like and scalar: constant init
            assert rule.kind != HIDDEN
            if rule.init_std is not None:
                assert rule.init_std == ours_at_base(args, base_width).rules[name].init_std
    # MuReadout divides its input by the readout weight's width_mult.
    assert ours.readout_mult == pytest.approx(1 / model.readout.weight.infshape.width_mult())


def ours_at_base(args, base_width):
    at_base = resolved("--param", "mup", "--width", str(base_width), "--base-width", str(base_width),
                       "--lr", str(LR), "--depth", str(args.depth))
    return main.make_parametrization(at_base)
