"""mup_patch on models that are not main.py's GPT: an MLP and a small pre-LN transformer,
both defined here. The rules are checked against µP's hand-derived values and against
microsoft/mup (when installed) as an oracle; µP at the base width is SP bit for bit; the
generic coord check passes µP and fails SP on the transformer. CPU only, deterministic."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from matplotlib import image

from mup_patch import HIDDEN, READOUT, VECTOR, coord_check, fan_in_init_std, parametrize, shapes_at_width

LR = 1e-3
D_IN, D_OUT = 12, 5      # the MLP's fixed input and output sizes
VOCAB, HEADS = 61, 4     # the transformer's: a vocabulary no width equals, heads fixed (head dim grows)


class ScaledLinear(nn.Linear):
    """nn.Linear whose output is multiplied by `mult` (u-µP's forward_mult; 1.0 otherwise)."""
    mult = 1.0

    def forward(self, x):
        return super().forward(x) * self.mult


def configure(model: nn.Module, p) -> nn.Module:
    """Hand the parametrization's forward multipliers to the model."""
    model.attention_scale, model.readout_mult = p.attention_scale, p.readout_mult
    for name, module in model.named_modules():
        if isinstance(module, ScaledLinear):
            module.mult = p.rules[f"{name}.weight"].forward_mult
    return model


class MLP(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.inp = ScaledLinear(D_IN, width)
        self.hidden = ScaledLinear(width, width)
        self.readout = ScaledLinear(width, D_OUT, bias=False)
        self.readout_mult = 1.0

    def forward(self, x):
        x = F.relu(self.hidden(F.relu(self.inp(x))))
        return self.readout(x * self.readout_mult)


class Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = ScaledLinear(width, 3 * width, bias=False)
        self.attn_logits = nn.Identity()  # a tap: the coord check records the scaled scores
        self.proj = ScaledLinear(width, width, bias=False)
        self.fc = ScaledLinear(width, 4 * width, bias=False)
        self.fc2 = ScaledLinear(4 * width, width, bias=False)

    def forward(self, x, attention_scale):
        batch, seq, width = x.shape
        q, k, v = (t.view(batch, seq, HEADS, width // HEADS).transpose(1, 2)
                   for t in self.qkv(self.norm1(x)).split(width, dim=-1))
        scores = self.attn_logits(q @ k.transpose(-1, -2) * attention_scale)
        causal = torch.ones(seq, seq, dtype=torch.bool).tril()
        attention = scores.masked_fill(~causal, float("-inf")).softmax(-1) @ v
        x = x + self.proj(attention.transpose(1, 2).reshape(batch, seq, width))
        return x + self.fc2(F.gelu(self.fc(self.norm2(x))))


class Transformer(nn.Module):
    def __init__(self, width: int, depth: int = 2):
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, width)
        self.blocks = nn.ModuleList(Block(width) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.readout = ScaledLinear(width, VOCAB, bias=False)
        self.attention_scale, self.readout_mult = (width // HEADS) ** -0.5, 1.0

    def forward(self, tokens):
        x = self.embedding(tokens)
        for block in self.blocks:
            x = block(x, self.attention_scale)
        return self.readout(self.norm(x) * self.readout_mult)


def embedding_std_one(name: str, shape: tuple) -> float | None:
    """SP init: nn.Embedding's N(0, 1) table, the default 1/sqrt(fan_in) for the other matrices."""
    return 1.0 if name == "embedding.weight" else fan_in_init_std(shape)


def transformer_rules(param: str, width: int, base_width: int, lr: float = LR, **kw):
    return parametrize(Transformer, param=param, width=width, base_width=base_width, lr=lr,
                       readout_names={"readout.weight"}, head_dim_at=lambda w: w // HEADS,
                       sp_init_std=embedding_std_one, **kw)


def mlp_rules(param: str, width: int, base_width: int, **kw):
    return parametrize(MLP, param=param, width=width, base_width=base_width, lr=LR,
                       readout_names={"readout.weight"}, **kw)


# ----------------------------------------------------------------------------------------
# The rules, against hand-derived µP
# ----------------------------------------------------------------------------------------

def test_mlp_rules_are_mup_by_hand():
    width, base = 256, 64
    m = width / base
    mup, sp = mlp_rules("mup", width, base), mlp_rules("sp", width, base)
    assert {n: r.kind for n, r in mup.rules.items()} == {
        "inp.weight": VECTOR, "inp.bias": VECTOR, "hidden.weight": HIDDEN, "hidden.bias": VECTOR,
        "readout.weight": READOUT}
    r = mup.rules
    # hidden: init 1/sqrt(fan_in) at this width, Adam lr / m, weight decay x m
    assert r["hidden.weight"].init_std == pytest.approx(1 / math.sqrt(width), rel=1e-15)
    assert r["hidden.weight"].lr == pytest.approx(LR * base / width, rel=1e-15)
    assert r["hidden.weight"].weight_decay_mult == m
    # input layer: fan-in fixed, so init and lr do not change with width
    assert r["inp.weight"].init_std == pytest.approx(1 / math.sqrt(D_IN)) and r["inp.weight"].lr == LR
    # readout: init at the base width's SP std, lr constant, input divided by m
    assert r["readout.weight"].init_std == pytest.approx(1 / math.sqrt(base), rel=1e-15)
    assert r["readout.weight"].lr == LR and mup.readout_mult == 1 / m
    # biases: vector-like, constant lr, module init, not decayed
    assert r["hidden.bias"].lr == LR and r["hidden.bias"].init_std is None
    assert all(rule.weight_decay_mult == 0 for n, rule in r.items() if n != "hidden.weight")
    assert all(rule.forward_mult == 1.0 for rule in r.values()) and mup.attention_scale is None
    # SP: every lr is lr, every matrix 1/sqrt(fan_in) at this width, no readout multiplier
    assert all(rule.lr == LR for rule in sp.rules.values()) and sp.readout_mult == 1.0
    assert sp.rules["readout.weight"].init_std == pytest.approx(1 / math.sqrt(width), rel=1e-15)
    assert sp.rules["hidden.weight"].weight_decay_mult == 1.0


@pytest.mark.parametrize("width", [32, 96, 512])
def test_transformer_rules_are_mup_by_hand(width):
    base = 64
    m = width / base
    mup, sp = transformer_rules("mup", width, base, attn_mult=2.0), transformer_rules("sp", width, base)
    kinds = {n: r.kind for n, r in mup.rules.items()}
    assert {n for n, k in kinds.items() if k == HIDDEN} == {
        f"blocks.{i}.{layer}.weight" for i in range(2) for layer in ("qkv", "proj", "fc", "fc2")}
    assert kinds["embedding.weight"] == VECTOR and kinds["readout.weight"] == READOUT
    assert kinds["norm.weight"] == kinds["blocks.1.norm2.bias"] == VECTOR
    for name, rule in mup.rules.items():
        fan_in = mup.rules[name].shape[-1]
        if rule.kind == HIDDEN:
            assert rule.init_std == pytest.approx(fan_in ** -0.5, rel=1e-14), name
            assert rule.lr == pytest.approx(LR / m, rel=1e-15), name
        else:
            assert rule.lr == LR, name
    assert mup.rules["blocks.0.fc2.weight"].shape == (width, 4 * width)
    assert mup.rules["embedding.weight"].init_std == 1.0 == sp.rules["embedding.weight"].init_std
    assert mup.rules["readout.weight"].init_std == pytest.approx(base ** -0.5)
    d, d_base = width // HEADS, base // HEADS
    assert mup.attention_scale == pytest.approx(2.0 * math.sqrt(d_base) / d, rel=1e-14)
    assert sp.attention_scale == pytest.approx(1 / math.sqrt(d), rel=1e-15)
    assert mup.readout_mult == pytest.approx(1 / m, rel=1e-15)


def test_umup_rules_by_hand():
    """u-µP: unit init, op scales 1/sqrt(fan_in) (1 for the embedding lookup), readout 1/fan_in,
    Adam lrs of unit_scaling's lr_scale_func_adam (weights lr/sqrt(fan_in), others lr)."""
    width, lr = 128, 0.5
    p = transformer_rules("umup", width, 32, lr=lr, attn_mult=1.5, output_mult=2.0)
    for name, rule in p.rules.items():
        if rule.kind == HIDDEN:
            n = rule.shape[1]
            assert (rule.init_std, rule.forward_mult) == (1.0, pytest.approx(n ** -0.5)), name
            assert rule.lr == pytest.approx(lr / math.sqrt(n)) and rule.weight_decay_mult == pytest.approx(math.sqrt(n))
        elif name.endswith(("norm.weight", "bias", "norm1.weight", "norm2.weight")):
            assert (rule.init_std, rule.lr, rule.forward_mult) == (None, lr, 1.0), name
    emb, readout = p.rules["embedding.weight"], p.rules["readout.weight"]
    assert (emb.init_std, emb.forward_mult, emb.lr) == (1.0, 1.0, pytest.approx(lr / math.sqrt(width)))
    assert (readout.init_std, readout.forward_mult, readout.lr) == (1.0, 1.0, lr)
    assert p.readout_mult == pytest.approx(2.0 / width) and p.attention_scale == pytest.approx(1.5 / (width // HEADS))
    inp = mlp_rules("umup", width, 32).rules["inp.weight"]  # an input layer sums D_IN inputs
    assert inp.forward_mult == pytest.approx(D_IN ** -0.5) and inp.lr == pytest.approx(LR / math.sqrt(D_IN))


def test_rules_match_microsoft_mup():
    """microsoft/mup as an oracle: its infshapes (set_base_shapes on the same base and delta)
    and MuAdamW's per-parameter lr and weight decay."""
    mup = pytest.importorskip("mup")
    for make, rules in ((MLP, mlp_rules), (Transformer, transformer_rules)):
        base, width = 32, 256
        ours, at_base = rules("mup", width, base), rules("mup", base, base)
        model = make(width)
        mup.set_base_shapes(model, shapes_at_width(make, base), delta=shapes_at_width(make, 2 * base),
                            rescale_params=False, do_assert=False)
        optimizer = mup.MuAdamW(model.parameters(), lr=LR, weight_decay=0.1)
        for name, p in model.named_parameters():
            group = next(g for g in optimizer.param_groups if any(q is p for q in g["params"]))
            rule = ours.rules[name]
            assert rule.lr == pytest.approx(group["lr"], rel=1e-12), name
            assert (rule.kind == HIDDEN) == (p.infshape.ninf() == 2), name
            if rule.kind == HIDDEN:
                assert rule.weight_decay_mult == pytest.approx(group["weight_decay"] / 0.1), name
                assert rule.init_std == pytest.approx(
                    at_base.rules[name].init_std * p.infshape.width_mult() ** -0.5, rel=1e-12), name
            elif rule.init_std is not None:  # vector-like: the base width's init
                assert rule.init_std == at_base.rules[name].init_std, name
        assert ours.readout_mult == pytest.approx(1 / model.readout.weight.infshape.width_mult())


def test_classification_needs_the_readout_named():
    """Shapes cannot tell a readout from an embedding table; an unnamed readout is vector-like
    (so a model must name it), and a name that is not a parameter is rejected."""
    p = parametrize(MLP, param="mup", width=128, base_width=32, lr=LR, readout_names=set())
    assert p.rules["readout.weight"].kind == VECTOR
    with pytest.raises(AssertionError, match="not parameters of make_model"):
        parametrize(MLP, param="mup", width=128, base_width=32, lr=LR, readout_names={"head.weight"})


# ----------------------------------------------------------------------------------------
# µP at the base width computes what SP computes
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("make, rules, batch", [
    (MLP, mlp_rules, lambda g: (torch.randn(8, D_IN, generator=g), torch.randint(0, D_OUT, (8,), generator=g))),
    (Transformer, transformer_rules,
     lambda g: (torch.randint(0, VOCAB, (2, 12), generator=g), torch.randint(0, VOCAB, (2, 12), generator=g))),
])
def test_mup_at_base_width_is_sp_bit_for_bit(make, rules, batch):
    width = 64
    inputs, targets = batch(torch.Generator().manual_seed(1))
    out = {}
    for param in ("sp", "mup"):
        p = rules(param, width, width)
        torch.manual_seed(0)  # the biases keep their module init, drawn from the global generator
        model = configure(make(width), p)
        p.init_(model, torch.Generator().manual_seed(0))
        optimizer = torch.optim.AdamW(p.param_groups(model, weight_decay=0.1))
        outputs = []
        for _ in range(3):
            logits = model(inputs)
            outputs.append(logits.detach())
            optimizer.zero_grad()
            F.cross_entropy(logits.flatten(0, -2), targets.flatten()).backward()
            optimizer.step()
        out[param] = (p, outputs, [q.detach().clone() for q in model.parameters()])
    (sp, sp_out, sp_params), (mup, mup_out, mup_params) = out["sp"], out["mup"]
    assert sp.rules == mup.rules
    assert (sp.attention_scale, sp.readout_mult) == (mup.attention_scale, mup.readout_mult)
    assert all(torch.equal(a, b) for a, b in zip(sp_out, mup_out))
    assert all(torch.equal(a, b) for a, b in zip(sp_params, mup_params))
    # and one width up, µP differs (the comparison has power)
    assert mlp_rules("mup", 128, 64).rules != mlp_rules("sp", 128, 64).rules


# ----------------------------------------------------------------------------------------
# The generic coord check on the transformer
# ----------------------------------------------------------------------------------------

COORD_LR = {"sp": 1e-2, "mup": 1e-2, "umup": 0.05}  # large enough that SP fails by t=2
# µP's attention logits shrink as 1/sqrt(width) at init (mup's README), so the attention output
# averages v more evenly as width grows; at the base width's O(1) logits it is peaked enough
# that proj's output shrinks 0.80x from width 64 to 256. A small attn_mult (like mup's
# zero-initialised queries) makes attention near-uniform at every width.
ATTN_MULT = 0.25


def build(param: str, width: int, seed: int):
    p = transformer_rules(param, width, 64, lr=COORD_LR[param], **({} if param == "sp" else {"attn_mult": ATTN_MULT}))
    torch.manual_seed(seed)
    model = configure(Transformer(width), p)
    p.init_(model, torch.Generator().manual_seed(seed))
    return model, p


def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, VOCAB, (4, 16), generator=g), torch.randint(0, VOCAB, (4, 16), generator=g)


def loss(model, batch):
    inputs, targets = batch
    return F.cross_entropy(model(inputs).flatten(0, 1), targets.flatten())


@pytest.fixture(scope="module")
def coord():
    """Widths 64 and 256, two seeds, three steps, SP, µP and u-µP: about 12 s on 2 cores."""
    torch.manual_seed(0)
    return coord_check.run_coord_check(build, batch, loss, widths=(64, 256), params=("sp", "mup", "umup"),
                                       seeds=(0, 1), steps=3)


def ratios(result, param, layer, pair=(64, 256)):
    return {c["t"]: c["ratio"] for c in result["params"][param]["checks"]
            if c["layer"] == layer and (c["narrow"], c["wide"]) == pair}


@pytest.mark.slow
def test_coord_check_passes_mup_on_a_transformer(coord):
    mup = coord["params"]["mup"]
    assert mup["pass"], coord_check.format_table(coord)
    assert {"embedding", "blocks.0", "blocks.1.attn_logits", "blocks.1.fc2", "norm", "readout"} <= set(mup["layers"])
    exempt = {c["layer"] for c in mup["checks"] if c["rule"] != "flat"}
    assert exempt == {"readout", "blocks.0.attn_logits", "blocks.1.attn_logits"}
    # the readout and attention logits shrink at init at µP's 1/sqrt(width) rate
    assert ratios(coord, "mup", "readout")[1] == pytest.approx(0.5, rel=0.1)
    assert ratios(coord, "mup", "blocks.0.attn_logits")[1] == pytest.approx(0.5, rel=0.2)


@pytest.mark.slow
def test_coord_check_fails_sp_on_a_transformer_because_updates_grow_with_width(coord):
    sp = coord["params"]["sp"]
    assert not sp["pass"]
    # At init SP is O(1) everywhere (its inits are 1/sqrt(fan_in)); it fails after updates.
    assert all(c["ok"] for c in sp["checks"] if c["t"] == 1)
    assert ratios(coord, "sp", "blocks.1")[3] > 1.5
    assert ratios(coord, "sp", "readout")[3] > 1.5


@pytest.mark.slow
def test_coord_check_passes_umup_on_a_transformer(coord):
    """u-µP through per-op forward_mults (ScaledLinear): unit-scale rows stay flat."""
    umup = coord["params"]["umup"]
    assert umup["pass"], coord_check.format_table(coord)
    assert ratios(coord, "umup", "readout")[1] == pytest.approx(0.5, rel=0.1)  # 1/fan_in readout
    assert coord["params"]["umup"]["per_seed"]["embedding"]["256"]["0"][0] == pytest.approx(
        math.sqrt(2 / math.pi), rel=0.05)  # N(0, 1) table, looked up unscaled: E|x| = sqrt(2/pi)


@pytest.mark.slow
def test_coord_check_table_and_plot(coord, tmp_path):
    table = coord_check.format_table(coord)
    assert "== sp: FAIL (as expected)" in table and "== mup: PASS (as expected)" in table
    coord_check.plot(coord, tmp_path / "coord.png")
    pixels = image.imread(tmp_path / "coord.png")  # a PNG of a grid of panels, not blank
    assert pixels.shape[0] > 400 and pixels.shape[1] > 900 and pixels[..., :3].std() > 0.05, pixels.shape


@pytest.mark.slow
def test_mup_patch_imports_nothing_from_the_repository():
    """No cycle with main.py: importing mup_patch and its coord check loads no other module
    of this repository (a fresh interpreter, so earlier imports in this session don't count)."""
    repo = Path(__file__).resolve().parent.parent
    code = ("import sys; import mup_patch, mup_patch.coord_check; "
            f"repo = {str(repo)!r}; "
            "loaded = sorted(n for n, m in sys.modules.items() if (getattr(m, '__file__', None) or '').startswith(repo) "
            "and not n.startswith('mup_patch')); print(loaded); assert not loaded, loaded")
    done = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_init_rejects_a_model_the_rules_were_not_built_for():
    p = mlp_rules("mup", 64, 32)
    with pytest.raises(AssertionError, match="only in the model: .*blocks"):
        p.init_(Transformer(64))
