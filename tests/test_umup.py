"""Tests for u-µP (`--param umup`, mup_patch/rules.py build_umup): the unit-scale check, the
coord check, the rules and op scales, the command line, and a short CPU run that learns.
CPU, deterministic. The learning run starts first, in a process of its own on two threads,
and the other tests run beside it on one (the machine has two cores); the last test waits
for it, which by then has both cores."""

import dataclasses
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import coord_check_gpt as coord_check
import data
import main
import trainer_support as ts
import unit_scale_check_gpt as unit_scale_check
from mup_patch import HIDDEN, READOUT, SCALAR, VECTOR, rules

LR = 0.5


def resolved(*argv: str):
    return main.resolve(main.parse_args(["--device", "cpu", *argv]))


def parametrization(*argv: str):
    return main.make_parametrization(resolved(*argv))


# ----------------------------------------------------------------------------------------
# The learning run: started before the other tests, read by the last one
# ----------------------------------------------------------------------------------------

# The cpu-small preset (width 64, depth 2, 4096-token steps) cut to 20 steps: about 50 s on
# one busy core, 30 s on two. u-µP's default lr (1; the preset's lr 1e-2 is SP's and is not applied).
LEARN_ARGS = ["--preset", "cpu-small", "--param", "umup", "--lr", "1", "--total-tokens", "81920",
              "--warmup-tokens", "8192", "--eval-tokens", "4096", "--eval-every-tokens", "40960",
              "--device", "cpu", "--quiet", "--run-name", "umup_small"]


@pytest.fixture(scope="module", autouse=True)
def learning_run(tmp_path_factory, request):
    # Started only when its test runs: not under -m "not slow", nor for a -k that leaves it out.
    wanted = any(item.name == "test_a_short_cpu_run_learns" for item in request.session.items)
    if not (wanted and ts.BOOKS_VALID.is_file() and ts.TIKTOKEN_DIR.is_dir()):
        yield None
        return
    root = tmp_path_factory.mktemp("umup_learn")
    data = ts.write_small_data(root / "data")
    process = ts.fork_main("--data-dir", data, "--cache-dir", data / "cache", "--out", root / "runs",
                           *LEARN_ARGS, threads=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tests' one thread beside the run's two
    try:
        yield {"data": data, "out": root / "runs", "process": process}
    finally:
        torch.set_num_threads(threads)
        if process.poll() is None:
            process.kill()
            process.communicate()


# ----------------------------------------------------------------------------------------
# Unit scale at initialisation
# ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def unit():
    return unit_scale_check.run_unit_scale_check(width=128, depth=3, seq_len=64, batch=4)


def rows(result, key):
    return {r["name"]: r for r in result[key]}


@pytest.mark.slow
def test_unit_scale_check_passes(unit):
    assert unit["passed"], unit["failing"]
    acts, params = rows(unit, "activations"), rows(unit, "params")
    # Every hooked module output and the recomputed block internals, near 1 (the logits: µP's
    # 1/sqrt(width) by design); tighter than the check's own 1.25 where it holds here.
    for name, r in acts.items():
        if name == "readout":
            assert r["rms"] == pytest.approx(1 / math.sqrt(128), rel=0.05)
        else:
            assert 0.85 < r["rms"] < 1.15, (name, r["rms"])
    for block in range(3):
        for part in ("expand.linear", "expand.gate", "geglu", "branch", "attention_tap", "norm", ""):
            assert f"blocks.{block}.{part}".rstrip(".") in acts
    assert acts["blocks.0.geglu"]["recomputed"] and not acts["blocks.0.attention_tap"]["recomputed"]
    # Weights: N(0,1) draws, gains and scalars exactly 1.
    for name, r in params.items():
        assert r["rms"] == pytest.approx(1.0, abs=0.03), name
    # Gradients as u-µP's backward holds them: within the check's factor 2.5 (the position-
    # bias scalar aside), and the logits' and readout's at 1 almost exactly.
    assert acts["readout"]["grad_rms"] == pytest.approx(1.0, rel=0.01)
    assert params["readout.weight"]["grad_rms"] == pytest.approx(1.0, rel=0.05)
    for r in list(acts.values()) + list(params.values()):
        if r["grad_rms"] is not None and r.get("grad_judged", True):
            expected = r.get("grad_expected") or 1.0
            assert expected / 2.5 <= r["grad_rms"] <= expected * 2.5, (r["name"], r["grad_rms"])
    # q/k gradients come through the softmax's 1/qk scale: about attn_mult / sqrt(qk).
    assert acts["blocks.0.query_tap"]["grad_rms"] == pytest.approx(16 ** -0.5, rel=0.3)


def test_unit_scale_check_cli(capsys):
    assert unit_scale_check.cli(["--width", "64", "--depth", "1", "--seq-len", "32", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "unit-scale check: PASS" in out and "blocks.0.geglu" in out and "readout.weight" in out
    assert unit_scale_check.cli(["--width", "60"]) == main.EXIT_BAD_INPUT
    assert unit_scale_check.cli(["--", "--param", "sp"]) == main.EXIT_BAD_INPUT


def test_unit_scale_check_catches_a_missing_op_scale(monkeypatch):
    """Without the GeGLU's constant (output 1/1.53) or the attention's output scale (1/1.31)
    the check fails on exactly those rows and what they feed."""
    make = main.make_parametrization
    monkeypatch.setattr(main, "make_parametrization", lambda args: dataclasses.replace(
        make(args), glu_mult=1.0, attention_out_mult=1.0))
    result = unit_scale_check.run_unit_scale_check(width=64, depth=1, seq_len=32, batch=2)
    assert not result["passed"]
    acts = rows(result, "activations")
    assert acts["blocks.0.geglu"]["rms"] == pytest.approx(1 / 1.5335, rel=0.05)
    assert {"blocks.0.geglu", "blocks.0.attention_tap"} <= set(result["failing"])


def test_gelu_constant_is_exact():
    """E[gelu(a z)^2], z ~ N(0,1): the Simpson quadrature against 200-point Gauss-Hermite
    (which converges slowly once a grows: at a = 4 it is off by 4e-8, so there the reference
    is mpmath.quad at 30 digits, 7.95664468568736216...)."""
    x, w = np.polynomial.hermite_e.hermegauss(200)
    w = w / math.sqrt(2 * math.pi)
    for a in (0.5, 1.0, 2.0):
        gelu = F.gelu(torch.tensor(a * x, dtype=torch.float64)).numpy()
        assert rules.gelu_second_moment(a) == pytest.approx(float((w * gelu ** 2).sum()), rel=1e-10), a
    assert rules.gelu_second_moment(1.0) == pytest.approx(0.4252214826, rel=1e-9)
    assert rules.gelu_second_moment(4.0) == pytest.approx(7.956644685687362, rel=1e-13)
    z = torch.randn(1_000_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert rules.gelu_second_moment(2.0) == pytest.approx(F.gelu(2 * z).pow(2).mean().item(), rel=0.01)


def test_attention_constant_is_exact():
    """The closed form of the position-bias attention's mean sum of squared weights against
    the softmax itself, and its long-sequence limit (1 + 2/e)^-1 for the init slope."""
    slope = math.log1p(math.e)  # softplus(1.0)
    for seq_len in (1, 7, 32):
        i = torch.arange(seq_len, dtype=torch.float64)
        bias = torch.where(i[None, :] <= i[:, None], slope * (i[None, :] - i[:, None]), -math.inf)
        weights = bias.softmax(-1)
        brute = weights.pow(2).sum(-1).mean().item()
        assert rules.position_attention_mean_square(slope, seq_len) == pytest.approx(brute, rel=1e-12)
    assert rules.position_attention_mean_square(slope, 100_000) == pytest.approx(1 / (1 + 2 / math.e), rel=1e-4)


def variance_shares(taus) -> tuple[float, list[float]]:
    """x_{l+1} = (x_l + tau_l f_l) / sqrt(1 + tau_l^2) with unit, independent f_l: the
    embedding's share of the stream's variance after the last tau, and each branch's."""
    embedding_share, shares = 1.0, []
    for tau in taus:  # variances: x_{l+1} = a x_l + b f_l, a^2 + b^2 = 1
        a2, b2 = 1 / (1 + tau ** 2), tau ** 2 / (1 + tau ** 2)
        embedding_share *= a2
        shares = [s * a2 for s in shares] + [b2]
    return embedding_share, shares


def umup_layer_taus(layers: int, residual_mult: float) -> list[float]:
    """u-µP's transformer_residual_scaling_rule at residual_attn_ratio 1 (paper App. G), for
    its `layers` alternating attention and MLP layers: tau_i = a / sqrt(layers/2 + i a^2)."""
    return [residual_mult / math.sqrt(layers / 2 + i * residual_mult ** 2) for i in range(layers)]


def test_residual_rule_keeps_unit_variance_and_equal_contributions():
    """The stream stays at variance 1, each block's share of it is the same, and all blocks
    together add block_branches * residual_mult^2 times the embedding's."""
    for depth, mult in ((1, 1.0), (4, 1.0), (8, 0.5), (8, 2.0)):
        for branches in (1, 2):
            embedding_share, shares = variance_shares(rules.umup_residual_taus(depth, mult, branches))
            assert embedding_share + sum(shares) == pytest.approx(1.0)
            assert max(shares) == pytest.approx(min(shares))
            assert sum(shares) / embedding_share == pytest.approx(branches * mult ** 2)


def test_residual_rule_with_two_branches_is_u_mups_attention_plus_mlp():
    """With the default 2 branches, after every block l the embedding's share of the stream is
    what u-µP's own rule leaves after its attention layer 2l and MLP layer 2l+1 (a model of
    `depth` blocks being u-µP's of 2 depth layers): 1 / (1 + 2 a^2 (l+1)/depth). With 1 (the
    first u-µP runs) the blocks add half that: at depth 8 and a = 1 the embedding keeps 1/2 of
    the final stream where u-µP keeps 1/3."""
    for depth, mult in ((2, 1.0), (8, 1.0), (8, 0.5), (4, 3.0)):
        ours = rules.umup_residual_taus(depth, mult, 2)
        theirs = umup_layer_taus(2 * depth, mult)
        for block in range(depth):
            assert variance_shares(ours[:block + 1])[0] == pytest.approx(
                variance_shares(theirs[:2 * block + 2])[0], rel=1e-12)
    assert variance_shares(rules.umup_residual_taus(8, 1.0, 2))[0] == pytest.approx(1 / 3)
    assert variance_shares(rules.umup_residual_taus(8, 1.0, 1))[0] == pytest.approx(1 / 2)
    # The default is 2, and the flag reaches the model's taus.
    assert parametrization("--param", "umup", "--width", "64", "--depth", "4").residual_taus == \
        rules.umup_residual_taus(4, 1.0, 2)
    assert parametrization("--param", "umup", "--width", "64", "--depth", "4",
                           "--umup-block-branches", "1").residual_taus == rules.umup_residual_taus(4, 1.0, 1)


# ----------------------------------------------------------------------------------------
# Coord check
# ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def coord():
    """Widths 64 and 256, two seeds, three steps, at the check's u-µP lr (0.25): about 5 s."""
    return coord_check.run_coord_check(params=("umup",), widths=(64, 256), seeds=(0, 1), steps=3)


@pytest.mark.slow
def test_coord_check_umup_passes(coord):
    umup = coord["params"]["umup"]
    assert coord["config"]["umup_lr"] == 0.25
    assert umup["pass"] and umup["expected_pass"], umup["failing_layers"]
    flat = [c for c in umup["checks"] if c["rule"] == "flat"]
    assert {c["t"] for c in flat} == {1, 2, 3}
    assert all(1 / 1.2 <= c["ratio"] <= 1.2 for c in flat)
    exempt = {c["layer"] for c in umup["checks"] if c["rule"] != "flat"}
    assert exempt == {"readout", "blocks.0.attn_logits", "blocks.1.attn_logits"}
    readout = {c["t"]: c["ratio"] for c in umup["checks"] if c["layer"] == "readout"}
    assert readout[1] == pytest.approx(0.5, rel=0.02)  # µP's 1/fan_in readout at init
    assert coord["params"]["umup"]["runs"]["64"]["lr"]["readout"] == 0.25
    assert "== umup: PASS (as expected)" in coord_check.format_table(coord)


@pytest.mark.slow
def test_coord_check_umup_catches_a_unit_scaled_readout(monkeypatch):
    """Power: a readout scaled by 1/sqrt(fan_in) (unit logits at init) instead of u-µP's
    1/fan_in makes the logits grow with width after an update."""
    make = main.make_parametrization
    monkeypatch.setattr(main, "make_parametrization", lambda args: dataclasses.replace(
        make(args), readout_mult=1 / math.sqrt(args.width)))
    result = coord_check.run_coord_check(params=("umup",), widths=(64, 256), seeds=(0, 1), steps=3)
    assert not result["params"]["umup"]["pass"]
    assert "readout" in result["params"]["umup"]["failing_layers"]


@pytest.mark.slow
def test_coord_check_cli_accepts_umup(capsys, tmp_path):
    assert coord_check.cli(["--param", "umup", "--widths", "64,256", "--seeds", "1", "--steps", "2",
                            "--quiet", "--no-plot", "--out", str(tmp_path)]) == 0
    assert "umup PASS" in capsys.readouterr().out
    assert coord_check.cli(["--param", "umup", "--quiet", "--", "--attn-mult", "2"]) == main.EXIT_BAD_INPUT


# ----------------------------------------------------------------------------------------
# Rules and op scales
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("width,depth", [(64, 2), (768, 4)])
def test_umup_rules_follow_u_mup_adam_scaling(width, depth):
    """unit_scaling.optim.lr_scale_func_adam with no base shapes: weights lr depth^-1/2
    fan_in^-1/2 (the embedding's fan-in is the width, and it sits outside the blocks), norms
    and the position-bias scalar lr depth^-1/2 inside the blocks, the final norm and the
    readout lr; N(0,1) init; one schedule; the default betas."""
    p = parametrization("--param", "umup", "--width", str(width), "--depth", str(depth), "--lr", str(LR))
    d = depth ** -0.5
    expected_lr = {"embedding.weight": LR / math.sqrt(width), "norm.weight": LR, "readout.weight": LR}
    for block in range(depth):
        expected_lr |= {f"blocks.{block}.expand": LR * d / math.sqrt(width),
                        f"blocks.{block}.project": LR * d / math.sqrt(2 * width),
                        f"blocks.{block}.norm.weight": LR * d, f"blocks.{block}.position_bias_mult": LR * d}
    assert p.rules.keys() == expected_lr.keys()
    for name, rule in p.rules.items():
        assert rule.lr == pytest.approx(expected_lr[name], rel=1e-12), name
        assert (rule.betas, rule.schedule) == ((0.9, 0.95), "base"), name
        assert rule.init_std == (1.0 if rule.kind in (HIDDEN, READOUT) or name == "embedding.weight" else None)
        assert rule.eps is not None and 0 < rule.eps < 1e-12, name
    assert {r.kind for r in p.rules.values()} == {HIDDEN, VECTOR, READOUT, SCALAR}
    # Op scales: linear outputs x fan_in^-1/2; readout input x loss_mult / width (1/fan_in);
    # attention softmax attn_mult / qk; GeGLU and attention output constants; residual taus.
    assert (p.expand_mult, p.project_mult) == (width ** -0.5, (2 * width) ** -0.5)
    assert p.readout_mult == pytest.approx(1 / width) and p.input_mult == 1.0
    assert p.attention_scale == pytest.approx(1 / (width // 8))
    assert p.glu_mult == pytest.approx(rules.gelu_second_moment(1.0) ** -0.5)
    assert p.attention_out_mult == pytest.approx(
        rules.position_attention_mean_square(math.log1p(math.e), 1024) ** -0.5)
    assert p.residual_taus == rules.umup_residual_taus(depth, 1.0, 2)


def test_umup_weight_decay_is_independent_and_anchored_to_mup():
    """Hidden matrices only; AdamW's per-step shrink lr_group * wd * mult equals what µP's
    hidden matrices get at µP's default lr (hlb-gpt's law at the base width), whatever
    u-µP's --lr, width or depth; the dynamic law is evaluated at the base width, as µP's."""
    mup = parametrization("--param", "mup", "--width", "384")
    mup_shrink = mup.rules["blocks.0.expand"].lr * mup.rules["blocks.0.expand"].weight_decay_mult
    for argv in (("--width", "128"), ("--width", "768", "--lr", "3"), ("--width", "384", "--depth", "8")):
        p = parametrization("--param", "umup", *argv)
        for rule in p.rules.values():
            if rule.kind == HIDDEN:
                assert rule.lr * rule.weight_decay_mult == pytest.approx(mup_shrink, rel=1e-12)
            else:
                assert rule.weight_decay_mult == 0.0
    base = resolved("--param", "mup", "--width", "384")
    assert main.decay_law_params(resolved("--param", "umup", "--width", "1536")) == main.decay_law_params(base)
    # The anchor is a resolved setting (the run log's config has it): µP's default lr by
    # default; --umup-decay-lr moves it, e.g. to a µP arm's own lr.
    assert resolved("--param", "umup").umup_decay_lr == base.lr == pytest.approx(2.53e-3, rel=2e-3)
    assert resolved("--param", "mup").umup_decay_lr is None
    anchored = parametrization("--param", "umup", "--width", "768", "--umup-decay-lr", "1.25e-3")
    mup_at = parametrization("--param", "mup", "--width", "384", "--lr", "1.25e-3").rules["blocks.0.expand"]
    for rule in anchored.rules.values():
        if rule.kind == HIDDEN:
            assert rule.lr * rule.weight_decay_mult == pytest.approx(mup_at.lr * mup_at.weight_decay_mult, rel=1e-12)


def test_adam_with_scaled_eps_takes_u_mups_steps():
    """AdamW on g with eps / k steps exactly as AdamW on k g with eps: the reason u-µP's
    backward scales need not be run (mup_patch/rules.py, build_umup)."""
    torch.manual_seed(0)
    k = 3.7e5
    start = torch.randn(50, 20)
    grads = [torch.randn(50, 20) * 1e-6 for _ in range(5)]
    grads[0][:5] = 0.0  # rows that get no gradient (unseen tokens) stay finite
    results = []
    for scale, eps in ((1.0, 1e-9 / k), (k, 1e-9)):
        p = torch.nn.Parameter(start.clone())
        opt = torch.optim.AdamW([p], lr=0.1, eps=eps, weight_decay=0.0)
        for g in grads:
            p.grad = g * scale
            opt.step()
        results.append(p.detach())
    assert torch.allclose(results[0], results[1], rtol=1e-5, atol=1e-6)


def test_param_groups_carry_names_lrs_and_eps():
    args = resolved("--param", "umup", "--width", "128", "--depth", "2")
    p = main.make_parametrization(args)
    with torch.device("meta"):
        groups = p.param_groups(main.GPT(main.model_config(args)))
    names = [g["name"] for g in groups]
    assert sorted(names) == sorted(["embedding", "expand", "project", "position_bias", "block_norm",
                                    "norm", "readout"])
    assert all("eps" in g and g["schedule"] == "base" for g in groups)


def test_the_model_gets_the_op_scales_and_sp_mup_do_not():
    args = resolved("--param", "umup", "--width", "64", "--depth", "2")
    p = main.make_parametrization(args)
    model = main.build_model(args, p)
    for block, tau in zip(model.blocks, p.residual_taus):
        for name in main.OP_SCALES:  # float32 tensors, act_mult's 1.0 included
            assert getattr(block, name).dtype == torch.float32
            assert getattr(block, name).item() == pytest.approx(getattr(p, name), rel=1e-7), name
        skip, scale = block.residual_scales.tolist()
        assert skip ** 2 + scale ** 2 == pytest.approx(1.0) and scale / skip == pytest.approx(tau)
    assert model.readout_mult == p.readout_mult and model.attention_scale == p.attention_scale
    for param in ("sp", "mup"):
        args = resolved("--param", param, "--width", "64", "--depth", "2")
        model = main.build_model(args, main.make_parametrization(args))
        for block in model.blocks:
            assert all(getattr(block, name) is None for name in main.OP_SCALES + ("residual_scales",))


def test_umup_multiplier_flags_change_the_model():
    p = parametrization("--param", "umup", "--width", "256", "--umup-attn-mult", "2", "--umup-act-mult", "3",
                        "--umup-residual-mult", "0.5", "--umup-loss-mult", "4")
    assert p.attention_scale == pytest.approx(2 / 32)
    assert p.act_mult == 3.0 and p.glu_mult == pytest.approx(rules.gelu_second_moment(3.0) ** -0.5)
    assert p.residual_taus == rules.umup_residual_taus(8, 0.5, 2)
    assert p.readout_mult == pytest.approx(4 / 256)


# ----------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv,needle", [
    (("--param", "umup", "--lr-recipe", "hlb"), "--lr-recipe hlb"),
    (("--param", "sp", "--umup-act-mult", "2"), "--umup-act-mult"),
    (("--param", "mup", "--umup-loss-mult", "2"), "--umup-loss-mult"),
    (("--param", "umup", "--attn-mult", "2"), "--attn-mult"),
    (("--param", "umup", "--umup-residual-mult", "0"), "--umup-residual-mult"),
    (("--param", "mup", "--umup-block-branches", "1"), "--umup-block-branches"),
    (("--param", "sp", "--umup-decay-lr", "1e-3"), "--umup-decay-lr"),
    (("--param", "umup", "--umup-block-branches", "3"), "--umup-block-branches"),
])
def test_main_rejects_bad_umup_input_with_one_line(argv, needle, capsys):
    ts.assert_one_line_bad_input(main, argv, needle, capsys)


def test_umup_defaults_and_presets():
    args = resolved("--param", "umup", "--width", "128")
    main.make_parametrization(args)
    assert args.lr == main.UMUP_DEFAULT_LR and args.lr_recipe == "uniform"
    # The preset's lr (1e-2) is SP's: u-µP keeps its own default; an explicit --lr wins.
    preset = resolved("--preset", "cpu-small", "--param", "umup")
    main.make_parametrization(preset)
    assert preset.lr == main.UMUP_DEFAULT_LR and preset.width == 64
    assert resolved("--preset", "cpu-small", "--param", "umup", "--lr", "0.3").lr == 0.3
    assert resolved("--preset", "cpu-small").lr == 1e-2


def test_main_show_lr_table_for_umup(capsys):
    assert main.main(["--device", "cpu", "--param", "umup", "--width", "768", "--depth", "2",
                      "--show-lr-table"]) == 0
    out = capsys.readouterr().out
    assert "parametrization: umup (lr recipe uniform)" in out and "u-µP op scales: expand" in out
    assert "geglu output 1.53353" in out and "blocks.1.project" in out


# ----------------------------------------------------------------------------------------
# It learns (last: waits for the run started at the top)
# ----------------------------------------------------------------------------------------

@ts.needs_data
@pytest.mark.slow
def test_a_short_cpu_run_learns(learning_run):
    """20 steps of the cpu-small preset on ~73K tokens of books text: the validation loss ends
    well below the validation text's own unigram entropy (what the best model blind to context
    could reach, fitted on the validation text itself), and the log records u-µP's flags."""
    out, err = learning_run["process"].communicate(timeout=400)
    assert learning_run["process"].returncode == 0, err
    log = ts.read_log(learning_run["out"] / "umup_small.json")
    valid = data.file_tokens(learning_run["data"] / "valid.txt", learning_run["data"] / "cache")
    counts = np.bincount(valid.astype(np.int64)).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    unigram_entropy = float(-(p * np.log(p)).sum())  # 6.08 nats here
    final = log["summary"]["final_eval"]["valid"]["loss"]
    print(f"u-µP small run: final valid loss {final:.4f}, valid unigram entropy {unigram_entropy:.4f}")
    assert log["status"] == "completed"
    assert log["curve"][0]["eval"]["valid"]["loss"] == pytest.approx(math.log(main.VOCAB_SIZE), abs=0.05)
    assert final < unigram_entropy - 0.15
    doc = " ".join((Path(__file__).resolve().parents[1] / "docs" / "umup.md").read_text().split())
    assert f"It ends at {final:.3f} nats" in doc and f"unigram entropy ({unigram_entropy:.2f} nats" in doc, \
        "docs/umup.md quotes this run's final loss and the valid text's unigram entropy"
    config = log["config"]
    assert config["param"] == "umup" and config["lr"] == 1.0 and config["lr_recipe"] == "uniform"
    assert all(config[f"umup_{m}_mult"] == 1.0 for m in ("attn", "act", "residual", "loss"))
    assert set(log["curve"][-1]["lr"]) == {"embedding", "expand", "project", "position_bias", "block_norm",
                                           "norm", "readout"}


def test_umup_blocks_share_one_compiled_graph_whatever_their_residual_multipliers():
    """Regional compilation compiles one block for all: u-µP's per-block residual multipliers are a
    tensor the graph reads, not constants baked into it (as floats they cost one compile per block,
    which made u-µP's cold compile twice SP's). Another α setting (residual and act multipliers)
    reuses the graph too: the op scales are tensors as well."""
    import torch._dynamo
    from torch._dynamo.utils import counters
    graphs = {}
    for extra in ((), ("--umup-residual-mult", "2", "--umup-act-mult", "3")):
        args = resolved("--param", "umup", "--width", "64", "--depth", "4", "--max-seq-len", "32",
                        "--seq-len-start", "32", *extra)
        model = main.build_model(args, main.make_parametrization(args))
        assert model.blocks[0].residual_scales.dtype == torch.float32
        assert not torch.equal(model.blocks[0].residual_scales, model.blocks[-1].residual_scales)
        if not graphs:
            torch._dynamo.reset()
            counters.clear()
        for block in model.blocks:
            block.compile(backend="eager", dynamic=False, fullgraph=True)
        model(torch.randint(0, 100, (2, 32))).sum().backward()
        graphs[extra] = counters["stats"]["unique_graphs"]
    torch._dynamo.reset()
    assert list(graphs.values()) == [1, 1], graphs


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None, reason="inductor on the CPU needs a C++ compiler")
def test_umup_blocks_compiled_by_inductor_match_eager():
    """The blocks compiled as training compiles them (inductor; here its CPU backend, the SDPA
    path) give eager's loss and gradients, with the multipliers as tensors the graph reads."""
    args = resolved("--param", "umup", "--width", "64", "--depth", "2", "--max-seq-len", "32",
                    "--seq-len-start", "32")
    p = main.make_parametrization(args)
    eager, compiled = main.build_model(args, p), main.build_model(args, p)
    for block in compiled.blocks:
        main.compile_module(block)
    tokens = torch.randint(0, 100, (2, 32), generator=torch.Generator().manual_seed(0))
    results = []
    for model in (eager, compiled):
        loss = F.cross_entropy(model(tokens).flatten(0, 1), tokens.flatten())
        results.append((loss.detach(), torch.autograd.grad(loss, list(model.parameters()))))
    torch._dynamo.reset()
    (loss_e, grads_e), (loss_c, grads_c) = results
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-6, atol=1e-6)
    for g_c, g_e in zip(grads_c, grads_e):
        torch.testing.assert_close(g_c, g_e, rtol=1e-4, atol=1e-5 * g_e.abs().max().item())
