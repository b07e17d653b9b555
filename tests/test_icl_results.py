"""docs/results_icl.md's in-context regression section says what the committed logs hold.

Every number the section quotes is recomputed here from runs/icl_transfer, runs/icl_landscape
and runs/icl_bench and looked up in the section's text, so an edit to either shows up here.
"""
import json
import math
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

import runlog
from icl import figures
from plots.lr_optimum import fit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))
import icl_transfer  # noqa: E402
RUNS = REPO / "runs"
pytestmark = pytest.mark.results  # every test here reads committed results
DOC = REPO / "docs" / "results_icl.md"
HEADING = "## In-context linear regression and µP transfer"
ONECYCLE = ("garg_onecycle_a", "garg_onecycle_b")  # timaeus' recipe, seeds 0-2 and 3-4


def sci(x: float, digits: int = 3) -> str:
    """1.96e-2 style, as the section writes learning rates."""
    mantissa, exponent = f"{x:.{digits - 1}e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def section() -> str:
    """The section's text with every run of whitespace as one space, so a quote may wrap a line."""
    text = DOC.read_text()
    assert HEADING in text, f"{DOC.name} has no '{HEADING}' section"
    body = text.split(HEADING, 1)[1]
    return " ".join(body.split("\n## ", 1)[0].split())


def landscape(folder: str) -> list[dict]:
    logs = runlog.load_run_logs([RUNS / "icl_landscape" / folder]).values()
    return sorted(logs, key=lambda log: log["config"]["seed"])


def final_eval(log: dict) -> dict:
    return log["curve"][-1]["eval"]["valid"]


TRANSFER = RUNS / "icl_transfer"
LRHIGH = "_lrhigh"  # a shape's cell that continues its lr grid upward (experiments/icl_transfer.py)
CONTINUATIONS = (LRHIGH, "_lrlow")  # ... and downward
LRS_HIGH = [6.4e-2, 1.28e-1]
BLOWUP = 2.0  # a final L1 above this: the run blew up (about half the loss at step 0)
# Each axis's shapes, the globs the section's figure commands pass; each shape's committed
# continuations (_lrhigh, _lrlow cells) join it.
AXES = {"width": ("*_d2_s4000",), "depth": ("*_w32_d*_s4000",), "depth_w128": ("*_w128_d*_s4000",),
        "steps": ("*_w32_d2_s4000", "*_w32_d2_s10000", "*_w32_d2_s20000"),
        "steps_w128": ("*_w128_d2_s4000", "*_w128_d2_s10000", "*_w128_d2_s20000"),
        "warmup": ("*_d2_s4000_warmup",)}
BY = {"width": "width", "depth": "depth", "depth_w128": "depth", "steps": "steps", "steps_w128": "steps",
      "warmup": "warmup"}
PANEL = {"warmup": "width"}  # an axis drawn as a row of panels per value of a second one
FIGURES = {"width": "transfer_width", "depth": "transfer_depth", "depth_w128": "transfer_depth_w128",
           "steps": "transfer_steps", "steps_w128": "transfer_steps_w128", "warmup": "transfer_warmup"}
SUMMARIES = {"warmup": "transfer_warmup_optima"}  # the axes whose command also draws --summary
# The cells of the 4x H200 call (commit 58495d2): the steps axis's 20,000-step cells and its cells at
# width 128, depth 8 at width 128, and the warmup axis
X4_CELLS = ("_w32_d2_s20000", "_w128_d2_s10000", "_w128_d2_s20000", "_w128_d8_s4000", "_warmup")


def continuations(pattern: str) -> list[str]:
    """The suffixes of pattern's committed continuation cells."""
    return [suffix for suffix in CONTINUATIONS if any(TRANSFER.glob(pattern + suffix))]


def axis_folders(axis: str) -> list[Path]:
    """The axis's cell folders: each shape's and, where committed, its continuations."""
    return sorted(p for pattern in AXES[axis] for suffix in ("", *continuations(pattern))
                  for p in TRANSFER.glob(pattern + suffix))


def figure_command(axis: str) -> str:
    """The section's command that draws the axis's figure, globs and bash braces as written there."""
    patterns = " ".join(f"runs/icl_transfer/{pattern}" + ("{," + ",".join(continuations(pattern)) + "}"
                                                          if continuations(pattern) else "")
                        for pattern in AXES[axis])
    panel = f" --panel {PANEL[axis]}" if axis in PANEL else ""
    summary = f" --summary plots/icl/{SUMMARIES[axis]}.png" if axis in SUMMARIES else ""
    return (f"python -m icl.figures transfer {patterns} --by {BY[axis]}{panel} "
            f"--out plots/icl/{FIGURES[axis]}.png{summary}")


def transfer_tables(axis: str) -> dict:
    """figures.transfer_tables of that axis's cells (the folders its figure command passes): {panel
    value: table}, {None: table} for an axis without panels."""
    logs = list(runlog.load_run_logs(axis_folders(axis)).values())
    return figures.transfer_tables(logs, BY[axis], PANEL.get(axis))


def transfer(axis: str = "width", panel=None) -> dict:
    """The axis's transfer table (of one panel's runs, for an axis drawn in panels)."""
    return transfer_tables(axis)[panel]


def finals(cell: str, warmup: float | None = None) -> dict:
    """{(lr, seed): final loss} of a shape's runs, its continuations' included; of a warmup cell,
    the runs of that warmup fraction."""
    folders = [TRANSFER / name for name in (cell, *(cell + suffix for suffix in CONTINUATIONS))
               if (TRANSFER / name).is_dir()]
    return {(log["config"]["lr"], log["config"]["seed"]): figures.final_loss(log)
            for log in runlog.load_run_logs(folders).values()
            if warmup is None or figures.axis_value(log["config"], "warmup") == warmup}


def seeds_above(cell: str, lr: float, level: float = BLOWUP, warmup: float | None = None) -> int:
    return sum(loss > level for (at, _), loss in finals(cell, warmup).items() if at == lr)


def overlap(a: list[float], b: list[float]) -> bool:
    """Two curves' per-seed optima overlap: neither range lies wholly above the other."""
    return min(a) <= max(b) and min(b) <= max(a)


def lowest_point_stands_in(row: dict) -> bool:
    """The rule took the lowest point: too few stable points, or a parabola that opens downward."""
    coefficients = fit(row["lrs"], row["mean"]).coefficients
    return coefficients is None or coefficients[0] <= 0


def optimum_text(row: dict) -> str:
    """The optimum as the table writes it: >= the grid's edge when not bracketed, "(lowest point)"
    when the rule took the lowest point."""
    if row["edge"]:
        return ("≥ " if row["edge"] == "high" else "≤ ") + sci(max(row["lrs"]) if row["edge"] == "high"
                                                               else min(row["lrs"]), 2)
    return sci(row["optimum"]) + (" (lowest point)" if lowest_point_stands_in(row) else "")


def best_lr(row: dict) -> float:
    return row["lrs"][min(range(len(row["lrs"])), key=lambda i: row["mean"][i])]


def row_text(label: str, value: int | str, row: dict) -> str:
    """One table row: param, the axis value, optimum of the mean curve, per-seed optima (min-max),
    the lowest mean loss and its lr."""
    best = row["lrs"].index(best_lr(row))
    return (f"| {label} | {value if isinstance(value, str) else f'{value:,}'} | {optimum_text(row)} | "
            f"{sci(min(row['seed_optima']))} - {sci(max(row['seed_optima']))} | "
            f"{row['mean'][best]:.3f} ± {row['std'][best]:.3f} at {sci(row['lrs'][best], 2)} |")


def param_rows(axis: str) -> list[str]:
    """The table's rows, SP then µP (axes away from µP's base width)."""
    table = transfer(axis)
    return [row_text(figures.PARAM_NAMES[param], value, row)
            for param in ("sp", "mup") for (p, value), row in table.items() if p == param]


def test_axes_merge_each_shape_with_its_lrhigh_cell_and_no_other():
    """Each axis's folders are whole shapes, each with its continuations where committed; one curve
    never mixes two shapes; every committed cell belongs to an axis; and the section's figure
    commands expand (bash braces and globs) to exactly these folders."""
    lrhigh = sorted(TRANSFER.glob("*" + LRHIGH))
    assert len(lrhigh) == 11 and "the 11 `_lrhigh` cells" in section()
    assert "the 11 `*_lrhigh` cells" in (RUNS / "README.md").read_text()
    covered = set()
    for axis in AXES:
        folders = axis_folders(axis)
        names = {p.name for p in folders}
        assert all(name.removesuffix(suffix) in names for name in names for suffix in CONTINUATIONS
                   if name.endswith(suffix)), f"{axis}: a continuation without its shape"
        covered |= names
        shapes = defaultdict(set)  # (panel value, param, value of the axis) -> shapes behind that curve
        for log in runlog.load_run_logs(folders).values():
            c = log["config"]
            panel = figures.axis_value(c, PANEL[axis]) if axis in PANEL else None
            shapes[panel, c["param"], figures.axis_value(c, BY[axis])].add(
                (c["width"], c["depth"], c["steps"], c["warmup_steps"]))
        assert all(len(s) == 1 for s in shapes.values()), f"{axis}: a curve mixes shapes {dict(shapes)}"
        command = figure_command(axis)
        assert command in section(), f"results_icl.md lacks the figure command {command!r}"
        globs = command.split(" transfer ", 1)[1].split(" --by", 1)[0]
        expanded = subprocess.run(["bash", "-c", f"printf '%s\\n' {globs}"], cwd=REPO, capture_output=True,
                                  text=True, check=True).stdout.split()
        assert sorted(expanded) == [str(p.relative_to(REPO)) for p in folders]
        for figure in (FIGURES[axis], SUMMARIES.get(axis)):
            assert figure is None or (REPO / "plots" / "icl" / f"{figure}.png").exists()
    assert {p.name for p in TRANSFER.iterdir()} == covered, "a committed cell that no axis reads"


def test_transfer_cells_name_their_machine_and_commit():
    """The section names each cell's GPU and commit: the width axis's first call (H200), the H100
    calls, the 2-GPU H200 call of the _lrhigh cells and depth 4 at width 128, and the 4x H200 call of
    the 20,000-step cells, the steps axis at width 128, depth 8 at width 128 and the warmup axis."""
    text = section()
    for folder in sorted(TRANSFER.iterdir()):
        machines = {(log["env"]["git_commit"][:7], log["env"]["device"])
                    for log in runlog.load_run_logs([folder]).values()}
        assert len(machines) == 1, f"{folder.name}: runs from several machines {machines}"
        commit, gpu = machines.pop()
        assert commit in text and gpu in text, f"{folder.name}: {commit} on {gpu} not named"
        if folder.name.endswith(LRHIGH) or "_w128_d4_" in folder.name:
            assert (commit, gpu) == ("f006b7e", "NVIDIA H200")
        assert ((commit, gpu) == ("58495d2", "NVIDIA H200")) == any(cell in folder.name for cell in X4_CELLS)
    assert "of one NVIDIA H200 of a 2-GPU machine (commit f006b7e" in text
    assert ("of one machine with 4× NVIDIA H200 (commit 58495d2, one lane per GPU, all four busy at once; "
            "`PLAN=x4 GIT_COMMIT=58495d2 LIMIT=530 bash experiments/icl_device_call.sh` three times") in text


def edge_curves() -> dict:
    """{(axis, panel value, param, value): "high" or "low"} for every curve of every axis whose
    lowest mean loss sits at its grid's top or bottom lr."""
    return {(axis, panel, param, value): row["edge"] for axis in AXES
            for panel, table in transfer_tables(axis).items() for (param, value), row in table.items() if row["edge"]}


def continuation_cell(axis: str, panel, param: str, value, edge: str) -> str:
    """The name of the cell that continues that curve's lr grid past its edge."""
    assert axis == "warmup", "only the warmup axis has curves at the grid's edge"
    return f"{param}_w{panel}_d2_s4000_warmup" + {"high": LRHIGH, "low": "_lrlow"}[edge]


def test_optima_at_the_grids_edge_are_named_and_their_continuations_queued():
    """Every optimum of the width, depth and steps axes is bracketed; the warmup axis's three that
    are not (SP's and µP's are the same runs at width 32) read as bounds in its table, and each has
    its continuation cell in experiments/icl_transfer.py, not run yet."""
    edges = edge_curves()
    assert edges == {("warmup", 32, "sp", 0.1): "high", ("warmup", 32, "mup", 0.1): "high",
                     ("warmup", 256, "mup", 0.025): "high", ("warmup", 256, "sp", 0.0): "low"}
    text = section()
    assert "Every optimum of the width, depth and steps axes is bracketed" in text
    cells = icl_transfer.cells()
    for key, edge in edges.items():
        name = continuation_cell(*key, edge)
        assert name in cells and not (TRANSFER / name).exists(), f"{name}: not queued, or run"
        assert f"`{name}`" in text or f"`*_{name.split('_', 1)[1]}`" in text


def near_top(row: dict) -> bool:
    """The curve's mean loss at the grid's top lr lies within one seed sd (there) of its lowest."""
    best = row["mean"].index(min(row["mean"]))
    return row["lrs"][-1] == 3.2e-2 and row["mean"][-1] - row["mean"][best] < row["std"][-1]


def test_optima_bracketed_within_a_seed_sd_of_the_top_are_queued_too():
    """µP at width 128 over 10,000 and 20,000 steps: bracketed, but the mean at 3.2e-2 is within one
    seed sd of the lowest and one seed's lowest point is 3.2e-2; their _lrhigh cells are queued."""
    table = transfer("steps_w128")
    close = sorted(value for (param, value), row in table.items() if near_top(row))
    assert close == [10000, 20000] and all(table["mup", s]["mean"][-1] > min(table["mup", s]["mean"]) for s in close)
    cells = icl_transfer.cells()
    text = section()
    for steps in close:
        seeds_at_top = sum(min(((loss, lr) for (lr, seed), loss in finals(f"mup_w128_d2_s{steps}").items()
                                if seed == s))[1] == 3.2e-2 for s in (0, 1, 2))
        assert seeds_at_top == 1
        assert f"mup_w128_d2_s{steps}{LRHIGH}" in cells and f"`mup_w128_d2_s{steps}{LRHIGH}`" in text
    gaps = [f"{table['mup', s]['mean'][-1] - min(table['mup', s]['mean']):.4f}" for s in close]
    sds = [f"{table['mup', s]['std'][-1]:.4f}" for s in close]
    assert f"{gaps[0]} and {gaps[1]} above the lowest, within the sd there ({sds[0]} and {sds[1]})" in text


def test_transfer_grid_width_axis_and_the_table_matches():
    table = transfer()
    assert sorted(table) == [("mup", 32), ("mup", 64), ("mup", 128), ("mup", 256),
                             ("sp", 32), ("sp", 64), ("sp", 128), ("sp", 256)]
    assert all(row["n"] == [3] * len(row["lrs"]) for row in table.values()), "every run finished"
    # µP at every width and SP at width 32 continue the grid; SP wider blows up at 3.2e-2 already
    continued = {key for key, row in table.items() if len(row["lrs"]) == 10}
    assert continued == {("mup", 32), ("mup", 64), ("mup", 128), ("mup", 256), ("sp", 32)}
    assert all(seeds_above(f"sp_w{w}_d2_s4000", 3.2e-2) == 3 for w in (64, 128, 256))
    assert "SP at widths 64-256 already blows up at 3.2e-2 in every seed" in section()
    # µP at the base width computes what SP computes: the two w32 shapes are the same runs
    assert table["mup", 32]["mean"] == table["sp", 32]["mean"]
    text = section()
    for row in param_rows("width"):
        assert row in text, f"results_icl.md lacks the transfer row {row!r}"


def test_transfer_shifts_quoted():
    table = transfer()
    text = section()
    widths = (32, 64, 128, 256)
    sp = {w: table["sp", w]["optimum"] for w in widths}
    mup = {w: table["mup", w]["optimum"] for w in widths}
    # µP: bracketed at every width, within one x2 grid step over width x8
    assert f"{', '.join(sci(mup[w]) for w in widths[:3])} and {sci(mup[256])} at widths 32-256" in text
    spread = max(mup.values()) / min(mup.values())
    assert spread < 2 and f"all within ×{spread:.1f} of each other" in text
    assert f"while SP's move ×{sp[32] / sp[256]:.0f} over the same widths" in text
    assert f"×{mup[64] / mup[128]:.1f} from width 64 to 128 (×{mup[256] / mup[128]:.2f} from 128 to 256)" in text
    seeds32, seeds256 = table["mup", 32]["seed_optima"], table["mup", 256]["seed_optima"]
    assert max(seeds256) < min(seeds32), "the two widths' per-seed optima do not overlap"
    assert (f"width 32's per-seed optima, {sci(min(seeds32))} - {sci(max(seeds32))}, and width 256's, "
            f"{sci(min(seeds256))} - {sci(max(seeds256))}, do not overlap") in text
    # by the lowest grid point, as the seed reads its grid
    mup_best = [best_lr(table["mup", w]) for w in widths]
    assert mup_best == [3.2e-2, 3.2e-2, 1.6e-2, 1.6e-2] and "(3.2e-2 at widths 32 and 64, 1.6e-2 at 128 and 256)" in text
    sp_lo, sp_hi = best_lr(table["sp", 256]), best_lr(table["sp", 32])
    assert f"SP's moves {math.log2(sp_hi / sp_lo):.0f} points ({sci(sp_hi, 2)} to {sci(sp_lo, 2)})" in text
    assert f"the loss falls up to 3.2e-2 and {seeds_above('mup_w32_d2_s4000', 6.4e-2)} of 3 seeds blow up at 6.4e-2" in text
    # µP's cliff lies between 3.2e-2 and 6.4e-2 at every width
    assert all(seeds_above(f"mup_w{w}_d2_s4000", 3.2e-2) == 0 for w in widths)
    assert all(seeds_above(f"mup_w{w}_d2_s4000", 1.28e-1) == 3 for w in widths)
    at64 = [seeds_above(f"mup_w{w}_d2_s4000", 6.4e-2) for w in widths]
    assert f"at 6.4e-2 {', '.join(map(str, at64[:3]))} and {at64[3]} of 3 seeds do (widths 32-256)" in text
    # SP: at every step of width
    assert f"×{sp[32] / sp[64]:.1f} from 32 to 64, ×{sp[64] / sp[128]:.1f} from 64 to 128" in text
    assert f"×{sp[128] / sp[256]:.1f} from 128 to 256, so ×{sp[64] / sp[256]:.1f} from 64 to 256" in text
    assert f"µP's optimum is ×{mup[256] / sp[256]:.0f} SP's" in text  # the two at width 256
    # SP at 3.2e-2 blows up more with width; the section quotes those mean losses
    top = [f"{table['sp', w]['mean'][table['sp', w]['lrs'].index(3.2e-2)]:.2f}" for w in widths]
    assert f"{', '.join(top[:3])} and {top[3]} at widths 32-256" in text
    # our µP optimum (widths 128 and 256) against the seed's 2.43e-3
    assert f"about {statistics.fmean([mup[128], mup[256]]) / 2.43e-3:.0f}× larger" in text
    # best losses: SP worse with width, µP better up to 128
    sp_best = [f"{min(table['sp', w]['mean']):.3f}" for w in widths]
    assert f"({', '.join(sp_best)})" in text
    assert f"{min(table['mup', 128]['mean']):.3f}" in text and f"{min(table['mup', 256]['mean']):.3f}" in text
    # the seed's optimum 2.43e-3 lies between our grid's 2e-3 and 4e-3: µP's mean losses there
    for w in (32, 256):
        assert f"{table['mup', w]['mean'][3]:.2f}" in text


def test_lrhigh_blowups():
    """The continued lrs: runs above L1 2 at 6.4e-2 and 1.28e-1 per shape (SP = µP where the two
    cells are the same runs), and the loss at step 0 that the threshold is half of."""
    text = section()
    logs = runlog.load_run_logs(sorted(TRANSFER.iterdir())).values()
    start = [log["curve"][0]["eval"]["valid"]["loss"] for log in logs]
    assert all(log["curve"][0]["step"] == 0 for log in logs)
    assert min(start) > 2 * BLOWUP - 0.1 and f"({min(start):.2f}-{max(start):.2f} over every run of the grid)" in text
    cells = sorted(p.name.removesuffix(LRHIGH) for p in TRANSFER.glob("*" + LRHIGH))
    assert all(seeds_above(cell, 1.28e-1) == 3 for cell in cells)
    for cell in cells:
        param, rest = cell.split("_", 1)
        twin = {"sp": "mup", "mup": "sp"}[param] + "_" + rest
        same = twin in cells and finals(twin) == finals(cell)
        if same and param == "mup":
            continue  # one row for both
        width, depth, steps = (int(part[1:]) for part in rest.split("_"))
        at = [loss for (lr, _), loss in finals(cell).items() if lr == 6.4e-2]
        row = (f"| {'SP = µP' if same else figures.PARAM_NAMES[param]} | {width} | {depth} | {steps:,} | "
               f"{sum(loss > BLOWUP for loss in at)} of 3 | {statistics.fmean(at):.2f} | "
               f"{seeds_above(cell, 1.28e-1)} of 3 |")
        assert row in text, f"results_icl.md lacks the blow-up row {row!r}"


def test_width_32_mu_p_runs_are_sp_runs():
    """At µP's base width µP computes what SP computes: every pair of runs is the same bit for bit,
    but for the compiled 10,000-step _lrhigh cells, which part by rounding early on and then differ
    in which seeds blow up."""
    text = section()
    def runs(folder: Path) -> dict:
        return {(log["config"]["lr"], log["config"]["seed"], log["config"]["warmup_steps"]): log
                for log in runlog.load_run_logs([folder]).values()}

    def curve(log: dict) -> list:
        return [(point["step"], point["eval"]["valid"]["loss"]) for point in log["curve"]]

    for sp_folder in sorted(TRANSFER.glob("sp_w32_*")):
        sp, mup = runs(sp_folder), runs(TRANSFER / ("mup" + sp_folder.name.removeprefix("sp")))
        assert sp.keys() == mup.keys()
        curves = {key: curve(log) for key, log in sp.items()}
        other = {key: curve(log) for key, log in mup.items()}
        if sp_folder.name != "sp_w32_d2_s10000" + LRHIGH:
            assert curves == other, f"{sp_folder.name}: µP's runs are not SP's"
            continue
        parts = []
        for key in sp:
            step, a, b = next((s, a, b) for (s, a), (_, b) in zip(curves[key], other[key]) if a != b)
            parts.append(step)
            assert abs(a / b - 1) < 1e-6
        assert sorted(set(parts)) == [3, 8] and "part at step 3 or 8 by less than 1e-6 (relative)" in text
        blown = {name: {seed for (lr, seed, _), log in runs.items() if lr == 6.4e-2 and figures.final_loss(log) > BLOWUP}
                 for name, runs in (("sp", sp), ("mup", mup))}
        assert blown["sp"] - blown["mup"] == {2} and blown["mup"] < blown["sp"]
        assert "(seed 2 at 6.4e-2 under SP, not under µP)" in text


def same_runs_rows(axis: str, panel=None) -> list[str]:
    """The table's rows at width 32, the base width: one row for SP and µP, whose curves are the
    same but at the continued lrs of the 10,000-step cells (rounding, above)."""
    table = transfer(axis, panel)
    values = sorted({v for _, v in table})
    assert sorted(table) == sorted((p, v) for p in ("sp", "mup") for v in values)
    rows = []
    for v in values:
        sp, mup = table["sp", v], table["mup", v]
        assert sp["lrs"] == mup["lrs"] and len(sp["lrs"]) in (8, 10), "8 lrs and, where committed, the 2 continued ones"
        assert sp["n"] == mup["n"] == [3] * len(sp["lrs"]), "every run finished"
        differ = [lr for lr, a, b in zip(sp["lrs"], sp["mean"], mup["mean"]) if a != b]
        assert differ == ([] if (axis, v) != ("steps", 10000) else LRS_HIGH), f"µP and SP differ at {axis} {v}"
        assert row_text("", v, sp) == row_text("", v, mup), "the two rows read the same"
        rows.append(row_text("SP = µP" if not differ else "SP and µP", v, sp))
    return rows


def test_transfer_depth_axis():
    table = transfer("depth")
    assert sorted({v for _, v in table}) == [2, 4, 8]
    text = section()
    for row in same_runs_rows("depth"):
        assert row in text, f"results_icl.md lacks the depth row {row!r}"
    d2, d4, d8 = (table["sp", d]["optimum"] for d in (2, 4, 8))
    assert lowest_point_stands_in(table["sp", 2]) and best_lr(table["sp", 2]) == 3.2e-2
    assert f"×{d8 / d4:.2f} from depth 4 to 8" in text and f"depth 2's optimum, now bracketed, is ×{d2 / d4:.1f} above depth 4's" in text
    moves = [max(a["optimum"], b["optimum"]) / min(a["optimum"], b["optimum"]) for a, b in rerun_pairs().values()]
    seeds = [table["sp", d]["seed_optima"] for d in (2, 4)]
    assert d2 / d4 > max(moves) and overlap(*seeds)
    assert (f"just above what a rerun moves the fit (×{max(moves):.1f}, above), but the per-seed optima overlap "
            f"({sci(min(seeds[0]))} - {sci(max(seeds[0]))} and {sci(min(seeds[1]))} - {sci(max(seeds[1]))})") in text
    # the cliff moves in with depth: seeds above L1 2 at 3.2e-2 and 6.4e-2
    blown = {lr: [seeds_above(f"sp_w32_d{d}_s4000", lr) for d in (2, 4, 8)] for lr in (3.2e-2, 6.4e-2)}
    assert blown[3.2e-2][0] == 0 and blown[6.4e-2][1:] == [3, 3]
    assert f"{blown[3.2e-2][1]} of 3 seeds at depth 4 and {blown[3.2e-2][2]} of 3 at depth 8" in text
    assert f"at 6.4e-2 {blown[6.4e-2][0]} of 3 at depth 2 and all at depths 4 and 8" in text
    # deeper is better at every lr up to 1.6e-2
    means = {d: table["sp", d]["mean"] for d in (2, 4, 8)}
    assert all(means[2][i] > means[4][i] > means[8][i] for i in range(table["sp", 2]["lrs"].index(1.6e-2) + 1))
    assert f"best mean L1 {', '.join(f'{min(means[d]):.3f}' for d in (2, 4, 8))}" in text


def test_transfer_depth_axis_at_width_128():
    table = transfer("depth_w128")
    assert sorted(table) == [("mup", 2), ("mup", 4), ("mup", 8), ("sp", 2), ("sp", 4), ("sp", 8)]
    assert all(row["n"] == [3] * len(row["lrs"]) for row in table.values()), "every run finished"
    assert [len(table[key]["lrs"]) for key in sorted(table)] == [10, 8, 8, 8, 8, 8]  # µP depth 2: the width axis's lrhigh
    text = section()
    for row in param_rows("depth_w128"):
        assert row in text, f"results_icl.md lacks the depth-at-width-128 row {row!r}"
    for key in set(table) - {("mup", 2)}:  # their grids end where the curve bends up
        row = table[key]
        assert row["mean"][-1] > row["mean"][-2] and row["lrs"][-1] == 3.2e-2
    (mup2, mup4, mup8), (sp2, sp4, sp8) = ([table[param, d] for d in (2, 4, 8)] for param in ("mup", "sp"))
    # µP, depth 2 to 4: the lowest point stays; the mean-curve fit moves, pulled by one seed's blow-up at 3.2e-2
    assert best_lr(mup2) == best_lr(mup4) == 1.6e-2 and overlap(mup2["seed_optima"], mup4["seed_optima"])
    assert f"The mean-curve fit says ÷{mup2['optimum'] / mup4['optimum']:.1f}" in text
    top = finals("mup_w128_d4_s4000")
    high = sorted(seed for (lr, seed), loss in top.items() if lr == 3.2e-2 and loss > 1)
    assert len(high) == 1
    rest = {f"{loss:.2f}" for (lr, seed), loss in top.items() if lr == 3.2e-2 and seed not in high}
    assert len(rest) == 1
    assert f"seed {high[0]} ends at L1 {top[3.2e-2, high[0]]:.2f} while the other two end at {rest.pop()}" in text
    at32 = mup4["mean"][mup4["lrs"].index(3.2e-2)]
    assert at32 < 3 * min(mup4["mean"]) and f"the mean there, {at32:.3f}, stays under 3× the lowest" in text
    assert 3.2e-2 in fit(mup4["lrs"], mup4["mean"]).window and mup4["optimum"] < min(mup4["seed_optima"])
    flat = [f"{mup4['mean'][mup4['lrs'].index(lr)]:.3f}" for lr in (8e-3, 1.6e-2)]
    assert f"flat from 8e-3 to 1.6e-2 ({flat[0]} and {flat[1]})" in text
    # µP, depth 2 to 8: down one grid point, the seeds part by less than a rerun moves them
    assert best_lr(mup8) == 8e-3 and not overlap(mup2["seed_optima"], mup8["seed_optima"])
    assert overlap(mup4["seed_optima"], mup8["seed_optima"])
    gap = min(mup2["seed_optima"]) / max(mup8["seed_optima"])
    assert gap < rerun_seed_move()
    assert (f"The fit goes from {sci(mup2['optimum'])} to {sci(mup8['optimum'])} "
            f"(÷{mup2['optimum'] / mup8['optimum']:.1f}), the lowest mean from 1.6e-2 to 8e-3") in text
    assert (f"the per-seed optima part: {sci(min(mup2['seed_optima']))} - {sci(max(mup2['seed_optima']))} at depth 2, "
            f"{sci(min(mup8['seed_optima']))} - {sci(max(mup8['seed_optima']))} at depth 8") in text
    assert f"by a gap of ×{gap:.1f}" in text
    near8 = [f"{mup8['mean'][mup8['lrs'].index(lr)]:.3f}" for lr in (8e-3, 1.6e-2)]
    assert f"{near8[0]} at 8e-3 and {near8[1]} at 1.6e-2" in text
    # SP: fits inside the seed spread, same lowest point, same first blow-up
    assert best_lr(sp2) == best_lr(sp4) == best_lr(sp8) == 2e-3
    assert overlap(sp2["seed_optima"], sp8["seed_optima"]) and overlap(sp4["seed_optima"], sp8["seed_optima"])
    assert f"{sci(sp2['optimum'])} and {sci(sp4['optimum'])} (÷{sp2['optimum'] / sp4['optimum']:.1f})" in text
    assert f"and {sci(sp8['optimum'])} at depth 8 (÷{sp2['optimum'] / sp8['optimum']:.1f} from depth 2)" in text
    first = [min(lr for (lr, _), loss in finals(f"sp_w128_d{d}_s4000").items() if loss > BLOWUP) for d in (2, 4, 8)]
    assert first == [8e-3] * 3 and "SP's first blow-up (a seed above L1 2) is at 8e-3 at all three depths" in text
    # SP beside µP
    assert (f"µP's optimum is ×{mup2['optimum'] / sp2['optimum']:.0f} SP's at depth 2, "
            f"×{mup4['optimum'] / sp4['optimum']:.1f} at depth 4 and ×{mup8['optimum'] / sp8['optimum']:.1f} at depth 8") in text
    assert best_lr(mup2) / best_lr(sp2) == best_lr(mup4) / best_lr(sp4) == 8 == 2 * best_lr(mup8) / best_lr(sp8)
    assert "(×8 by the lowest points at depths 2 and 4, ×4 at depth 8)" in text
    lows = [f"{min(row['mean']):.3f}" for row in (mup2, sp2, mup4, sp4, mup8, sp8)]
    assert (f"({lows[0]} against {lows[1]} at depth 2, {lows[2]} against {lows[3]} at depth 4, "
            f"{lows[4]} against {lows[5]} at depth 8)") in text
    # the cliff moves in with depth at width 128 too
    near = [seeds_above(f"mup_w128_d{d}_s4000", 3.2e-2, level=1) for d in (2, 4, 8)]
    assert near[0] == 0 and f"no µP seed ends above L1 1 at depth 2, {near[1]} of 3 at depth 4 and {near[2]} of 3 at depth 8" in text
    d32 = transfer("depth")
    assert f"it moved ×{d32['mup', 2]['optimum'] / d32['mup', 4]['optimum']:.1f} from depth 2 to 4" in text


def test_transfer_steps_axis():
    table = transfer("steps")
    assert sorted({v for _, v in table}) == [4000, 10000, 20000]
    text = section()
    for row in same_runs_rows("steps"):
        assert row in text, f"results_icl.md lacks the steps row {row!r}"
    for param in ("sp", "mup"):
        assert all(lowest_point_stands_in(table[param, s]) and best_lr(table[param, s]) == 3.2e-2 for s in (4000, 10000))
    blown = [seeds_above(cell, 6.4e-2) for cell in ("sp_w32_d2_s4000", "sp_w32_d2_s10000", "mup_w32_d2_s10000")]
    assert (f"({blown[0]} of 3 seeds at 4,000 steps; {blown[1]} of 3 under SP and {blown[2]} of 3 under µP "
            f"at 10,000)") in text
    row = table["sp", 10000]
    near = [row["lrs"].index(lr) for lr in (8e-3, 1.6e-2, 3.2e-2)]
    means = [row["mean"][i] for i in near]
    assert max(means) - min(means) < min(row["std"][i] for i in near), "within one seed sd"
    assert f"mean L1 {means[0]:.3f}, {means[1]:.3f} and {means[2]:.3f} at 8e-3, 1.6e-2 and 3.2e-2" in text
    lowest = min(row["seed_optima"] + table["mup", 10000]["seed_optima"])
    assert f"per-seed optima reach down to {sci(lowest)}" in text and round(3.2e-2 / lowest) == 2
    # 20,000 steps: the curve bends up inside the grid; against 4,000 steps and against its rerun
    s4, s20 = table["sp", 4000], table["sp", 20000]
    bend = [s20["mean"][s20["lrs"].index(lr)] for lr in (1.6e-2, 3.2e-2)]
    assert not s20["edge"] and bend[1] > bend[0] and seeds_above("sp_w32_d2_s20000", 3.2e-2, level=1) == 0
    assert f"(mean L1 {bend[0]:.3f} at 1.6e-2, {bend[1]:.3f} at 3.2e-2, no seed above L1 1 there)" in text
    assert (f"the fit puts the optimum at {sci(s20['optimum'])}, ×{s4['optimum'] / s20['optimum']:.1f} below "
            f"4,000 steps'") in text and not overlap(s4["seed_optima"], s20["seed_optima"])
    rerun = transfer("warmup", 32)["sp", 0.025]
    assert overlap(rerun["seed_optima"], s20["seed_optima"])
    assert (f"against the rerun of the 4,000-step cell ({sci(rerun['optimum'])}, per-seed "
            f"{sci(min(rerun['seed_optima']))} - {sci(max(rerun['seed_optima']))}) the move is "
            f"×{rerun['optimum'] / s20['optimum']:.1f} and the per-seed optima overlap") in text


def test_transfer_steps_axis_at_width_128():
    table = transfer("steps_w128")
    assert sorted(table) == [(p, s) for p in ("mup", "sp") for s in (4000, 10000, 20000)]
    assert all(row["n"] == [3] * len(row["lrs"]) for row in table.values()), "every run finished"
    text = section()
    for row in param_rows("steps_w128"):
        assert row in text, f"results_icl.md lacks the steps-at-width-128 row {row!r}"
    steps = (4000, 10000, 20000)
    mup, sp = ([table[param, s] for s in steps] for param in ("mup", "sp"))
    # µP: no move
    assert all(best_lr(row) == 1.6e-2 for row in mup)
    assert all(overlap(a["seed_optima"], b["seed_optima"]) for a in mup for b in mup)
    assert (f"Fits {', '.join(sci(row['optimum']) for row in mup)} (÷{mup[0]['optimum'] / mup[2]['optimum']:.2f} "
            f"over ×5 steps)") in text
    # SP: up with length; the fits pulled down by the blow-up beside the lowest point
    assert [best_lr(row) for row in sp] == [2e-3, 4e-3, 4e-3]
    assert not overlap(sp[0]["seed_optima"], sp[2]["seed_optima"])
    gap = min(sp[2]["seed_optima"]) / max(sp[0]["seed_optima"])
    assert gap < rerun_seed_move()
    assert (f"The fit moves {', '.join(sci(row['optimum']) for row in sp)} "
            f"(×{sp[2]['optimum'] / sp[0]['optimum']:.1f} from 4,000 to 20,000 steps)") in text
    assert (f"part ({sci(min(sp[0]['seed_optima']))} - {sci(max(sp[0]['seed_optima']))} against "
            f"{sci(min(sp[2]['seed_optima']))} - {sci(max(sp[2]['seed_optima']))}), by a gap of ×{gap:.1f}") in text
    for row, pulled in zip(sp[1:], (8e-3, 1.6e-2)):
        assert pulled in fit(row["lrs"], row["mean"]).window and row["optimum"] < min(row["seed_optima"])
        assert row["mean"][row["lrs"].index(pulled)] < 3 * min(row["mean"])
    cliff = {lr: [seeds_above(f"sp_w128_d2_s{s}", lr, level=1) for s in steps] for lr in (8e-3, 1.6e-2)}
    assert cliff[8e-3] == [2, 0, 0] and cliff[1.6e-2] == [3, 3, 1]
    assert ("at 8e-3, 2, 0 and 0 of 3 seeds end above L1 1 at 4,000, 10,000 and 20,000 steps, "
            "at 1.6e-2 3, 3 and 1 of 3") in text
    # SP beside µP
    ratios = [f"×{m['optimum'] / s['optimum']:.{0 if m['optimum'] / s['optimum'] >= 10 else 1}f}" for m, s in zip(mup, sp)]
    assert f"µP's optimum is {ratios[0]}, {ratios[1]} and {ratios[2]} SP's at 4,000, 10,000 and 20,000 steps" in text
    lows = [(f"{min(m['mean']):.3f}", f"{min(s['mean']):.3f}") for m, s in zip(mup, sp)]
    assert all(float(m) < float(s) for m, s in lows)
    assert ", ".join(f"{m} against {s}" for m, s in lows) in text


# The warmup axis's 2.5 % curves rerun these cells of the width axis: the same recipe, seeds and lrs
# (µP's width-32 cells are SP's runs)
RERUNS = {("sp", 32): "sp_w32_d2_s4000", ("mup", 256): "mup_w256_d2_s4000", ("sp", 256): "sp_w256_d2_s4000"}
WARMUPS = {0.0: "0 %", 0.025: "2.5 %", 0.1: "10 %", 0.3: "30 %"}


def rerun_pairs() -> dict:
    """{(param, width): (the width axis's row on the 8 lrs both share, the rerun's row)}."""
    return {(param, width): (figures.transfer_table(list(runlog.load_run_logs([TRANSFER / cell]).values()),
                                                    "width")[param, width],
                             transfer("warmup", width)[param, 0.025])
            for (param, width), cell in RERUNS.items()}


def rerun_seed_move() -> float:
    """The largest factor by which a rerun moved either end of a curve's per-seed optima."""
    return max(max(a, b) / min(a, b) for original, rerun in rerun_pairs().values()
               for a, b in ((min(original["seed_optima"]), min(rerun["seed_optima"])),
                            (max(original["seed_optima"]), max(rerun["seed_optima"]))))


def short_optimum(row: dict) -> str:
    """The optimum as the prose writes it: the bound at the grid's edge, else the fit."""
    return optimum_text(row) if row["edge"] else sci(row["optimum"])


def test_a_rerun_of_three_width_axis_cells():
    """The same runs but for rounding (an ensemble of 96, a later commit): they start from the same
    loss, part in training, and move the optimum by up to ×1.9."""
    text = section()
    start, final = defaultdict(list), defaultdict(list)
    for (param, width), cell in RERUNS.items():
        original = {(log["config"]["lr"], log["config"]["seed"]): log for log in runlog.load_run_logs([TRANSFER / cell]).values()}
        rerun = {(log["config"]["lr"], log["config"]["seed"]): log
                 for log in runlog.load_run_logs([TRANSFER / f"{param}_w{width}_d2_s4000_warmup"]).values()
                 if figures.axis_value(log["config"], "warmup") == 0.025}
        assert original.keys() == rerun.keys() and len(rerun) == 24
        devices = {(log["env"]["device"], original[key]["env"]["device"]) for key, log in rerun.items()}
        assert devices == {("NVIDIA H200", "NVIDIA H100 80GB HBM3" if (param, width) == ("sp", 256) else "NVIDIA H200")}
        for key, log in rerun.items():
            # --resume: the call passed it where a stopped cell had left checkpoints; this one found
            # none common to all members and started from step 0
            assert {k: v for k, v in log["config"].items() if k not in ("out", "ensemble_size", "resume")} == \
                {k: v for k, v in original[key]["config"].items() if k not in ("out", "ensemble_size", "resume")}
            assert (log["config"]["ensemble_size"], original[key]["config"]["ensemble_size"]) == (96, 24)
            start[param, width].append(abs(log["curve"][0]["eval"]["valid"]["loss"] /
                                           original[key]["curve"][0]["eval"]["valid"]["loss"] - 1))
            final[param, width].append(abs(figures.final_loss(log) / figures.final_loss(original[key]) - 1))
        # the largest difference: one run of the pair blows up, the other does not
        worst = max(rerun, key=lambda key: abs(figures.final_loss(rerun[key]) / figures.final_loss(original[key]) - 1))
        assert ((figures.final_loss(rerun[worst]) > BLOWUP) != (figures.final_loss(original[worst]) > BLOWUP)) == \
            ((param, width) == ("sp", 256))
    assert max(max(v) for v in start.values()) < 4e-8 and "(step 0 agrees to within 4e-8, relative)" in text
    medians = ", ".join(f"{100 * statistics.median(final[key]):.1f} %" for key in RERUNS)
    most = ", ".join(f"{100 * max(final[key]):.0f} %" for key in RERUNS)
    assert f"differ by a median of {medians} and at most {most}" in text
    moves = []
    for (param, width), (original, rerun) in rerun_pairs().items():
        label = "SP = µP" if width == 32 else figures.PARAM_NAMES[param]
        row = (f"| {label} | {width} | {short_optimum(original)} ({sci(min(original['seed_optima']))} - "
               f"{sci(max(original['seed_optima']))}) | {short_optimum(rerun)} ({sci(min(rerun['seed_optima']))} - "
               f"{sci(max(rerun['seed_optima']))}) |")
        assert row in text, f"results_icl.md lacks the rerun row {row!r}"
        assert overlap(original["seed_optima"], rerun["seed_optima"])
        moves.append(max(original["optimum"], rerun["optimum"]) / min(original["optimum"], rerun["optimum"]))
    assert (f"by ×{moves[0]:.1f}, ×{moves[1]:.1f} (both at least: one of each pair is at the grid's top) and "
            f"×{moves[2]:.1f}") in text
    assert f"the ends of the per-seed optima by up to ×{rerun_seed_move():.1f}" in text
    # the width axis's µP drift is not reproduced
    width = transfer()
    (_, mup256), (_, sp32) = rerun_pairs()["mup", 256], rerun_pairs()["sp", 32]
    assert width["mup", 32]["optimum"] > width["mup", 256]["optimum"] and sp32["optimum"] < mup256["optimum"]
    assert overlap(sp32["seed_optima"], mup256["seed_optima"])
    assert (f"there the optimum is {short_optimum(sp32)} at width 32 and {short_optimum(mup256)} at 256, and the "
            f"per-seed optima overlap") in text


def warmup_rows() -> list[str]:
    """The warmup table: width 32 once (SP's and µP's runs are the same), then SP and µP at 256."""
    rows = []
    for width, params in ((32, ("sp",)), (256, ("sp", "mup"))):
        table = transfer("warmup", width)
        for param in params:
            label = "SP = µP" if width == 32 else figures.PARAM_NAMES[param]
            rows += [row_text(f"{label} | {width}", text, table[param, frac]) for frac, text in WARMUPS.items()]
    return rows


def lowest(row: dict) -> tuple[float, float]:
    """The curve's lowest mean loss and the seed sd there."""
    best = row["lrs"].index(best_lr(row))
    return row["mean"][best], row["std"][best]


def resolved(a: dict, b: dict) -> bool:
    """Two curves' lowest means differ by more than their two sds together."""
    (ma, sa), (mb, sb) = lowest(a), lowest(b)
    return abs(ma - mb) > sa + sb


def test_transfer_warmup_axis():
    tables = transfer_tables("warmup")
    assert sorted(tables) == [32, 256]
    for table in tables.values():
        assert sorted(table) == [(p, f) for p in ("mup", "sp") for f in WARMUPS]
        assert all(row["n"] == [3] * 8 for row in table.values()), "every run finished"
    assert all(tables[32]["sp", f]["mean"] == tables[32]["mup", f]["mean"] for f in WARMUPS)
    text = section()
    for row in warmup_rows():
        assert row in text, f"results_icl.md lacks the warmup row {row!r}"
    mup = {w: [tables[w]["mup", f] for f in WARMUPS] for w in (32, 256)}
    # µP's lr across width at each warmup: no move the seeds resolve
    assert all(overlap(a["seed_optima"], b["seed_optima"]) for a, b in zip(mup[32], mup[256]))
    pairs = [f"{short_optimum(a)} to {short_optimum(b)}" for a, b in zip(mup[32], mup[256])]
    assert (f"the fits go {pairs[0]} without warmup, {pairs[1]} at 2.5 %, {pairs[2]} at 10 % and {pairs[3]} at "
            f"30 %, and at every warmup the two widths' per-seed optima overlap") in text
    # the best warmup: 30 % at both widths by the means; resolved only at 256
    for w in (32, 256):
        means = [lowest(row)[0] for row in mup[w]]
        assert means.index(min(means)) == 3
        assert f"{', '.join(f'{m:.3f}' for m in means)} at {'width 32' if w == 32 else '256'}" in text
    assert not any(resolved(a, b) for i, a in enumerate(mup[32]) for b in mup[32][i + 1:])
    assert [resolved(mup[256][3], row) for row in mup[256][:3]] == [False, True, True]
    (m30, s30), (m10, s10), (m25, s25) = (lowest(mup[256][i]) for i in (3, 2, 1))
    spread = finals("mup_w256_d2_s4000_warmup", 0.0)
    at = sorted(loss for (lr, _), loss in spread.items() if lr == best_lr(mup[256][0]))
    assert at[-1] - at[1] > at[1] - at[0] and f"the zero-warmup curve's sd there is wide (one seed at {at[-1]:.2f})" in text
    assert (f"({m30:.3f} ± {s30:.3f} against {m10:.3f} ± {s10:.3f} at 10 % and {m25:.3f} ± {s25:.3f} at "
            f"2.5 %)") in text
    # without warmup the cliff comes in, at both widths alike
    assert all(seeds_above(f"{p}_w{w}_d2_s4000_warmup", 3.2e-2, warmup=0.0) == 3 for p, w in (("sp", 32), ("mup", 256)))
    assert all(seeds_above(f"{p}_w{w}_d2_s4000_warmup", 3.2e-2, warmup=f) == 0
               for p, w in (("sp", 32), ("mup", 256)) for f in list(WARMUPS)[1:])
    assert "at 3.2e-2 every run without warmup blows up (3 of 3 at width 32 and 3 of 3 under µP at 256)" in text
    none32, none256 = mup[32][0], mup[256][0]
    assert f"÷{mup[32][1]['optimum'] / none32['optimum']:.1f} below 2.5 %'s at width 32" in text
    assert not any(overlap(none32["seed_optima"], row["seed_optima"]) for row in mup[32][1:])
    assert [overlap(none256["seed_optima"], row["seed_optima"]) for row in mup[256][1:]] == [False, True, False]
    # SP at width 256 leans on warmup far more
    sp256 = [tables[256]["sp", f] for f in WARMUPS]
    assert sp256[0]["edge"] == "low" and all(not row["edge"] for row in sp256[1:])
    assert f"≥ ×{sp256[1]['optimum'] / 2.5e-4:.1f} below its 2.5 % optimum {sci(sp256[1]['optimum'])}" in text
    cost = [lowest(rows[0])[0] / min(lowest(row)[0] for row in rows[1:]) for rows in (sp256, mup[256], mup[32])]
    assert all(lowest(rows[3])[0] == min(lowest(row)[0] for row in rows) for rows in (sp256, mup[256], mup[32]))
    assert (f"without warmup SP's best mean L1 at width 256 is {lowest(sp256[0])[0]:.3f}, {cost[0]:.1f}× its best "
            f"with warmup ({lowest(sp256[3])[0]:.3f} at 30 %); µP's is {lowest(mup[256][0])[0]:.3f}, {cost[1]:.1f}× "
            f"its best ({lowest(mup[256][3])[0]:.3f}), and width 32's {cost[2]:.1f}×") in text


def test_readme_quotes_the_width_axis():
    table = transfer()
    mup = [table["mup", w]["optimum"] for w in (32, 64, 128, 256)]
    text = " ".join((REPO / "README.md").read_text().split())
    assert f"within ×{max(mup) / min(mup):.1f} over width 32 to 256" in text
    assert f"falls ×{table['sp', 32]['optimum'] / table['sp', 256]['optimum']:.0f}" in text
    moves = [max(a["optimum"], b["optimum"]) / min(a["optimum"], b["optimum"]) for a, b in rerun_pairs().values()]
    assert f"moves the optimum by up to ×{max(moves):.1f}" in text


def test_open_gpu_work_quotes_the_transfer_logs():
    """docs/open_gpu_work.md's item on the transfer grid: the logs' size against what a device call
    carries, and the training time of depth 8 at width 128."""
    text = " ".join((REPO / "docs" / "open_gpu_work.md").read_text().split())
    def mib(paths):
        return sum(p.stat().st_size for p in paths if p.is_file()) / 2 ** 20
    assert mib(TRANSFER.rglob("*")) > 64 and "(`runs/icl_transfer/` alone is over 64 MiB)" in text
    assert round(mib(TRANSFER.glob("*" + LRHIGH + "/*")) * 2 ** 20 / 1e6) == 4 and "(about 4 MB:" in text
    seconds = {round(log["summary"]["train_seconds"]) for cell in ("sp_w128_d8_s4000", "mup_w128_d8_s4000")
               for log in runlog.load_run_logs([TRANSFER / cell]).values()}
    assert seconds == {172, 173} and "Depth 8 at width 128 took 172-173 s of training for 4,000 steps" in text


def test_garg_last_position_against_ridge():
    logs = [log for folder in ONECYCLE for log in landscape(folder)]
    assert [log["config"]["seed"] for log in logs] == [0, 1, 2, 3, 4]
    assert all(log["status"] == runlog.COMPLETED and log["curve"][-1]["step"] == 500_000 for log in logs)
    ridge = final_eval(logs[0])["baselines"]["ridge"]
    assert all(final_eval(log)["baselines"]["ridge"] == ridge for log in logs), "one eval batch for all seeds"
    last = [final_eval(log)["last_position"] for log in logs]
    above = [100 * (v / ridge[-1] - 1) for v in last]
    text = section()
    assert f"{ridge[-1]:.4f}" in text
    for v, pct in zip(last, above):
        assert f"{v:.4f} (+{pct:.1f} %)" in text
    assert sum(pct <= 10 for pct in above) == 1 and "1 of 5" in text
    others = [pct for pct in above if pct > 10]
    assert f"{min(others):.0f}-{max(others):.0f} % above" in text
    assert len(logs[0]["curve"]) == 190 and "190 evals" in text
    # the per-position curve: equal to ridge before k = 4, well above it after
    mean = np.mean([final_eval(log)["per_position"] for log in logs], axis=0)
    ratio = 100 * (mean / np.array(ridge) - 1)
    assert max(ratio[:4]) < 3 and f"{max(ratio[:4]):.1f} %" in text
    assert f"{max(ratio[4:]):.0f} %" in text and f"k = {int(np.argmax(ratio[4:])) + 4}" in text
    assert f"{ratio[-1]:.0f} %" in text


def test_garg_loss_still_falling_at_the_end():
    """The seed-mean last-position MSE over the last 50k steps against the 50k before."""
    logs = [log for folder in ONECYCLE for log in landscape(folder)]

    def window(log, lo, hi):
        return statistics.fmean(p["eval"]["valid"]["last_position"] for p in log["curve"] if lo < p["step"] <= hi)

    before = statistics.fmean(window(log, 400_000, 450_000) for log in logs)
    after = statistics.fmean(window(log, 450_000, 500_000) for log in logs)
    text = section()
    assert f"{before:.4f}" in text and f"{after:.4f}" in text
    assert f"{100 * (1 - after / before):.1f} %" in text


def test_garg_warmup_variants():
    text = section()
    for folder in (*ONECYCLE, "garg_warmup10k", "garg_warmup0"):
        assert all(log["status"] == runlog.COMPLETED for log in landscape(folder))
    groups = {"one-cycle (50 %)": [log for folder in ONECYCLE for log in landscape(folder)],
              "10k steps": landscape("garg_warmup10k"), "none": landscape("garg_warmup0")}
    assert [len(v) for v in groups.values()] == [5, 3, 3]
    for name, logs in groups.items():
        last = [final_eval(log)["last_position"] for log in logs]
        row = (f"| {name} | {len(last)} | {statistics.fmean(last):.4f} ± {statistics.stdev(last):.4f} | "
               f"{min(last):.4f} - {max(last):.4f} |")
        assert row in text, f"results_icl.md lacks the warmup row {row!r}"


def test_training_seconds_and_benchmark():
    text = section()
    for folder in ONECYCLE:
        seconds = {log["summary"]["train_seconds"] for log in landscape(folder)}
        assert len(seconds) == 1, "one ensemble per folder"
        assert f"{seconds.pop():.0f} s" in text
    gpu = json.loads((RUNS / "icl_bench" / "bench_icl.json").read_text())
    h100 = json.loads((RUNS / "icl_bench" / "bench_icl_h100.json").read_text())
    cpu = json.loads((RUNS / "icl_bench" / "bench_icl_cpu.json").read_text())
    for bench in (gpu, h100, cpu):
        assert bench["commit"][:7] in text
        for row in bench["rows"]:
            line = (f"| {row['device']} | {row['mode']} | {row['ensemble']} | {row['steps_per_s']:.1f} | "
                    f"{row['minutes_500k']:.1f} |")
            assert line in text, f"results_icl.md lacks the benchmark row {line!r}"
    # the goal: 8 seeds x 500k steps in at most 10 minutes on one H100 (missed), and the H200 at the edge
    e8 = {b["rows"][0]["device"]: next(r for r in b["rows"] if r["ensemble"] == 8 and r["mode"] == "cuda graph + compile")
          for b in (gpu, h100)}
    on_h100 = e8["NVIDIA H100 80GB HBM3"]
    assert math.isclose(on_h100["minutes_500k"], 500_000 / on_h100["steps_per_s"] / 60) and on_h100["minutes_500k"] > 10
    assert (f"{on_h100['steps_per_s']:.1f} steps/s, {on_h100['minutes_500k']:.1f} min for 500k steps "
            f"({100 * (on_h100['minutes_500k'] / 10 - 1):.0f} % over)") in text
    on_h200 = e8["NVIDIA H200"]
    assert f"({on_h200['steps_per_s']:.1f} steps/s, {on_h200['minutes_500k']:.1f} min)" in text
