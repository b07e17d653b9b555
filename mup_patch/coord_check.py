"""Coord check: does a parametrization keep every activation O(1) as width grows?

microsoft/mup's test, for any model. For each parametrization and width, `build(param, width,
seed)` gives a model and its Parametrization (the model initialised, e.g. by p.init_); the
check takes a few AdamW steps (the parametrization's param_groups, weight decay 0) on one
fixed batch, and records the mean absolute value `x.abs().mean()` of every module's output
with forward hooks at each step. t=1 is the forward pass at initialisation, before any
update; t=2 follows one update, and so on. Seeds change the model's init only: `batch_fn()`
is called once and every run sees its batch; `loss_fn(model, batch)` runs the forward pass
and returns the scalar loss.

What is recorded: every named submodule's output (the first element of a tuple output);
modules without a tensor output are skipped, and a module called twice in one forward keeps
its last value. Quantities no module returns (attention scores inside a fused kernel) can
come from `derived(model)`, a function (name, output) -> {extra layer: tensor} called on
every hooked output, or from an identity module the model calls on them (a "tap").

Criterion (microsoft/mup, mup/test/__main__.py CoordCheckCase): for t = 1..3 and every pair of
widths 4x apart, the ratio of seed-averaged mean |x| (wide / narrow) lies in [1/1.2, 1.2].
Exemptions, from mup's README ("the network output and the attention logits in a Transformer
can shrink to 0 at initialization in µP, at a 1/sqrt(width) rate; these are transient"):
- the readout layers (the modules owning the parametrization's readout parameters) and the
  layers whose last name component is in `init_shrink` (default: `attn_logits`) may shrink,
  at any of t = 1..3, no faster than 1/sqrt(width) (ratio down to 0.5/1.2 between widths 4x
  apart), and must not grow (ratio <= 1.2). Three steps do not wash the init part out: the
  readout's random init also acts on the updated hidden state (docs/mup.md measures it).
- a readout initialised to zero (microsoft/mup's recommendation) removes that term: it must
  read exactly 0 at t=1 (mup's test) and is then held to the full criterion.
An SP that passes means the check has no power at this lr: raise it.

main.py's GPT: coord_check_gpt.py (`python coord_check_gpt.py`) wires it to this check.
"""
from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Callable

import torch

from mup_patch.rules import Parametrization
from mup_patch.shapes import READOUT

TOLERANCE = 1.2                # mup's tol: ratios between widths 4x apart within [1/1.2, 1.2]
WIDTH_FACTOR = 4               # ... between widths that differ 4x
INIT_SHRINK = ("attn_logits",)  # besides the readout, may shrink as 1/sqrt(width) (mup README)
EXPECTED_PASS = {"sp": False, "mup": True, "umup": True}
ADAM_EPS = 1e-8                # torch's AdamW default

Build = Callable[[str, int, int], tuple[torch.nn.Module, Parametrization]]
Derived = Callable[[torch.nn.Module], Callable[[str, torch.Tensor], dict[str, torch.Tensor]]]


def readout_layers(parametrization: Parametrization) -> list[str]:
    """Names of the modules that own the readout parameters ("readout.weight" -> "readout")."""
    return sorted({name.rpartition(".")[0] for name, r in parametrization.rules.items() if r.kind == READOUT})


def record_run(model: torch.nn.Module, parametrization: Parametrization, batch: tuple,
               loss_fn: Callable[[torch.nn.Module, tuple], torch.Tensor], *, steps: int,
               adam_eps: float = ADAM_EPS, derived: Derived | None = None,
               label: str = "") -> tuple[dict[str, list[float]], dict]:
    """({layer: [mean |x| at t=1, ..., t=steps]}, facts about the run) for one model.
    The AdamW is fused: 5-8x faster on CPU than the per-tensor loop (equal up to rounding)."""
    optimizer = torch.optim.AdamW(parametrization.param_groups(model), eps=adam_eps, fused=True)
    model.train()
    records: dict[str, list[float]] = {}
    current: dict[str, float] = {}
    derive = derived(model) if derived else None

    def hook(name):
        def record(module, inputs_, output):
            if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
                output = output[0]
            if not isinstance(output, torch.Tensor):
                return
            with torch.no_grad():
                output = output.detach()
                current[name] = output.abs().mean().item()
                for extra, value in (derive(name, output) if derive else {}).items():
                    current[extra] = value.abs().mean().item()
        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in model.named_modules()
               if name and not isinstance(module, (torch.nn.ModuleList, torch.nn.ModuleDict))]
    losses = []
    try:
        for t in range(1, steps + 1):
            current.clear()
            loss = loss_fn(model, batch)
            for name, value in current.items():
                records.setdefault(name, []).append(value)
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):
                raise FloatingPointError(f"{label}: loss {losses[-1]} at t={t}; lower the lr")
            if t == steps:
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    finally:
        for handle in handles:
            handle.remove()
    zero_init = any(r.kind == READOUT and r.init_std == 0 for r in parametrization.rules.values())
    info = {"readout_zero_init": zero_init, "width_mult": parametrization.width_mult,
            "attention_scale": parametrization.attention_scale,
            "readout_mult": parametrization.readout_mult,
            "lr": {g["name"]: g["lr"] for g in optimizer.param_groups}, "loss": losses}
    return records, info


def rule_for(layer: str, t: int, *, readouts=("readout",), readout_zero_init: bool = False,
             init_shrink=INIT_SHRINK, tolerance: float = TOLERANCE) -> tuple[str, float, float]:
    """(rule, low, high) for one layer at one step; see the module docstring."""
    flat = ("flat", 1 / tolerance, tolerance)
    if layer in readouts and readout_zero_init:
        return ("zero", 0.0, 0.0) if t == 1 else flat
    if layer in readouts or layer.split(".")[-1] in init_shrink:
        return "may shrink as 1/sqrt(width)", WIDTH_FACTOR ** -0.5 / tolerance, tolerance
    return flat


def judge(means: dict[str, dict[int, list[float]]], widths: list[int], steps: int,
          tolerance: float = TOLERANCE, readout_zero_init: bool = False, *, readouts=("readout",),
          init_shrink=INIT_SHRINK) -> tuple[list[dict], bool, list[str]]:
    """Checks of one parametrization: (checks, passed, failing layers), layers in the order of
    `means`. Steps 1..3 are judged, as in mup's test."""
    pairs = [(a, b) for a in widths for b in widths if b == WIDTH_FACTOR * a]
    checks = []
    for layer in means:
        for t in range(1, min(steps, 3) + 1):
            rule, low, high = rule_for(layer, t, readouts=readouts, readout_zero_init=readout_zero_init,
                                       init_shrink=init_shrink, tolerance=tolerance)
            for narrow, wide in pairs:
                lo_value, hi_value = means[layer][narrow][t - 1], means[layer][wide][t - 1]
                if rule == "zero":
                    ratio, ok = None, lo_value == hi_value == 0.0
                else:
                    ratio = hi_value / lo_value if lo_value > 0 else (math.inf if hi_value > 0 else math.nan)
                    ok = low <= ratio <= high
                checks.append({"layer": layer, "t": t, "narrow": narrow, "wide": wide,
                               "mean_narrow": lo_value, "mean_wide": hi_value, "ratio": ratio,
                               "low": low, "high": high, "rule": rule, "ok": bool(ok)})
    failing = [layer for layer in means if any(not c["ok"] for c in checks if c["layer"] == layer)]
    return checks, not failing, failing


def run_coord_check(build: Build, batch_fn: Callable[[], tuple],
                    loss_fn: Callable[[torch.nn.Module, tuple], torch.Tensor], widths,
                    params=("sp", "mup"), *, steps: int = 3, seeds=(0, 1, 2),
                    tolerance: float = TOLERANCE, init_shrink=INIT_SHRINK, adam_eps: float = ADAM_EPS,
                    derived: Derived | None = None, sort_key: Callable[[str], object] | None = None,
                    config: dict | None = None, progress: Callable[[str], None] | None = None) -> dict:
    """The whole check; returns a JSON-serialisable dict:
    config (this call's settings, updated with `config`); params[P] = {pass, expected_pass,
    failing_layers, layers, mean_abs[layer][width] = [t=1..steps] (seed mean),
    per_seed[layer][width][seed], checks (one per layer, t and width pair), runs[width]
    (base width, attention scale, readout mult, group lrs, losses)}.
    Layers come in the order of the first forward pass, or sorted by `sort_key`."""
    widths = sorted(set(widths))
    if not any(WIDTH_FACTOR * w in widths for w in widths):
        raise ValueError(f"widths {widths} contain no pair {WIDTH_FACTOR}x apart")
    if steps < 1:
        raise ValueError("steps must be at least 1")
    batch = batch_fn()
    result = {"config": {"params": list(params), "widths": widths, "steps": steps, "seeds": list(seeds),
                         "tolerance": tolerance, "width_factor": WIDTH_FACTOR,
                         "init_shrink": list(init_shrink), "torch": torch.__version__, **(config or {})},
              "params": {}}
    for param in params:
        runs, infos = {}, {}  # width -> seed -> layer -> [t]
        for width in widths:
            for seed in seeds:
                started = time.perf_counter()
                model, parametrization = build(param, width, seed)
                runs.setdefault(width, {})[seed], info = record_run(
                    model, parametrization, batch, loss_fn, steps=steps, adam_eps=adam_eps, derived=derived,
                    label=f"{param} width {width} seed {seed}")
                info = {"base_width": round(width / parametrization.width_mult), **info}
                infos.setdefault(width, (info, readout_layers(parametrization)))
                if progress:
                    progress(f"{param} width {width} seed {seed}: {time.perf_counter() - started:.1f} s")
        layers = list(runs[widths[0]][seeds[0]])
        if sort_key:
            layers.sort(key=sort_key)
        means = {layer: {w: [sum(runs[w][s][layer][t] for s in seeds) / len(seeds) for t in range(steps)]
                         for w in widths} for layer in layers}
        info, readouts = infos[widths[0]]
        checks, passed, failing = judge(means, widths, steps, tolerance, info["readout_zero_init"],
                                        readouts=readouts, init_shrink=init_shrink)
        result["params"][param] = {
            "pass": passed, "expected_pass": EXPECTED_PASS.get(param), "failing_layers": failing,
            "layers": layers,
            "mean_abs": {layer: {str(w): means[layer][w] for w in widths} for layer in layers},
            "per_seed": {layer: {str(w): {str(s): runs[w][s][layer] for s in seeds} for w in widths}
                         for layer in layers},
            "checks": checks,
            "runs": {str(w): infos[w][0] for w in widths}}
    return result


# ----------------------------------------------------------------------------------------
# Report and picture
# ----------------------------------------------------------------------------------------

def format_table(result: dict) -> str:
    """Per parametrization: each layer's wide/narrow ratios per step, and its verdict."""
    lines = []
    cfg = result["config"]
    steps = min(cfg["steps"], 3)
    for param, data in result["params"].items():
        by_layer: dict[str, list[dict]] = {}
        for check in data["checks"]:
            by_layer.setdefault(check["layer"], []).append(check)
        pairs = sorted({(c["narrow"], c["wide"]) for c in data["checks"]})
        cell = 8 * len(pairs) + 2
        head = f"{'layer':26s}" + "".join(f"{'t=' + str(t):>{cell}s}" for t in range(1, steps + 1)) + "  verdict"
        verdict = "PASS" if data["pass"] else "FAIL"
        expected = data["expected_pass"]
        note = "" if expected is None else (" (as expected)" if expected == data["pass"]
                                              else f" (UNEXPECTED: {param} should "
                                                   f"{'pass' if expected else 'fail'})")
        lines.append(f"== {param}: {verdict}{note}")
        lines.append(f"   mean |x| ratio wide/narrow for width pairs {', '.join(f'{a}->{b}' for a, b in pairs)}; "
                     f"allowed [{1 / cfg['tolerance']:.3f}, {cfg['tolerance']:.3f}], "
                     f"~ rows [{WIDTH_FACTOR ** -0.5 / cfg['tolerance']:.3f}, {cfg['tolerance']:.3f}] "
                     f"(may shrink as 1/sqrt(width)), * = outside")
        lines.append(head)
        for layer in data["layers"]:
            cells = []
            for t in range(1, steps + 1):
                parts = []
                for check in (c for c in by_layer.get(layer, []) if c["t"] == t):
                    text = "0" if check["rule"] == "zero" else f"{check['ratio']:.3g}"
                    mark = "*" if not check["ok"] else ("~" if check["rule"].startswith("may") else " ")
                    parts.append(f"{text:>7s}{mark}")
                cells.append(f"{''.join(parts) or '-':>{cell}s}")
            ok = all(c["ok"] for c in by_layer.get(layer, []))
            lines.append(f"{layer:26s}" + "".join(cells) + f"  {'pass' if ok else 'FAIL'}")
        lines.append("")
    return "\n".join(lines)


SHRINK_NOTE = "dashed: allowed to shrink as 1/sqrt(width)"


def panel_verdict(data: dict, t: int) -> str:
    """A panel's verdict at step t (1-based): "pass", "FAIL (n layers)", or "not judged"
    past the steps the criterion covers."""
    checks = [check for check in data["checks"] if check["t"] == t]
    if not checks:
        return "not judged"
    failing = {check["layer"] for check in checks if not check["ok"]}
    return f"FAIL ({len(failing)} layer{'s' * (len(failing) != 1)})" if failing else "pass"


def plot(result: dict, path: Path) -> None:
    """Log-log width against mean |x|, one row per step, one column per parametrization, one
    colour and marker per layer; a layer the criterion allows to shrink (as 1/sqrt(width), at
    that step) is dashed, so a falling dashed line inside its band is a pass. Each panel's
    title gives its verdict. Title of the figure: config["title"] if set."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = result["config"]
    params = list(result["params"])
    steps, widths = cfg["steps"], cfg["widths"]
    titles = {"sp": "SP", "mup": "µP", "umup": "u-µP"}
    layers = list(dict.fromkeys(layer for data in result["params"].values() for layer in data["layers"]))
    # tab20's pairs are a dark and a light shade of one hue; its even entries first, then the
    # odd ones, keep neighbouring layers in different hues. Past 20 layers the marker changes.
    palette = plt.get_cmap("tab20").colors
    palette = palette[0::2] + palette[1::2]
    markers = ["o", "s", "^", "D", "v"]
    style = {layer: dict(color=palette[i % len(palette)], marker=markers[i // len(palette) % len(markers)],
                         markersize=3.5, linewidth=1.5) for i, layer in enumerate(layers)}

    def may_shrink(data: dict, layer: str, t: int) -> bool:
        return any(check["rule"].startswith("may shrink") for check in data["checks"]
                   if check["layer"] == layer and check["t"] == t)

    fig, axes = plt.subplots(steps, len(params), figsize=(4.4 * len(params) + 3.2, 3.0 * steps),
                             squeeze=False, sharex=True, sharey=True)
    shrinking = set()
    for column, param in enumerate(params):
        data = result["params"][param]
        for t in range(steps):
            ax = axes[t][column]
            for layer in data["layers"]:
                ys = [data["mean_abs"][layer][str(w)][t] for w in widths]
                if min(ys) <= 0:  # a zero-initialised readout at t=1: no log
                    continue
                dashed = may_shrink(data, layer, t + 1)
                if dashed:
                    shrinking.add(layer)
                ax.plot(widths, ys, linestyle="--" if dashed else "-", **style[layer])
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(widths, [str(w) for w in widths])
            ax.minorticks_off()
            ax.grid(True, which="major", alpha=0.3)
            ax.set_title(f"{titles.get(param, param)}, t={t + 1}"
                         + (" (init)" if t == 0 else f" (after {t} step{'s' * (t > 1)})")
                         + f": {panel_verdict(data, t + 1)}", fontsize=10)
            if t == steps - 1:
                ax.set_xlabel("width (model dimension, log scale)")
            if column == 0:
                ax.set_ylabel("mean |activation| (log scale)")
    handles = [plt.Line2D([], [], linestyle="--" if layer in shrinking else "-",
                          label=layer + (" (may shrink)" if layer in shrinking else ""), **style[layer])
               for layer in layers]
    if shrinking:
        handles.append(plt.Line2D([], [], color="grey", linestyle="--", label=SHRINK_NOTE))
    fig.legend(handles=handles, loc="center right", fontsize=7, frameon=False)
    fig.suptitle(cfg.get("title") or f"Coord check: {len(cfg['seeds'])} seeds; flat = width-independent",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 1 - 3.0 / fig.get_figwidth(), 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
