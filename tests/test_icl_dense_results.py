"""Every number of docs/results_icl.md's "Second pass" subsection (the dense LLC sweep of the rerun
one-cycle runs, µP from base width 32, devinterp beside our estimator), recomputed from the committed
llc.json files, run logs, bench JSONs and the published CSV, and found in that subsection."""
import json
from pathlib import Path

import numpy as np
import pytest

from icl import landscape

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "runs" / "icl_landscape"
pytestmark = pytest.mark.results  # every test here reads committed results
SP, MUP = ["garg_onecycle_dense_a", "garg_onecycle_dense_b"], ["garg_mup_b32"]
FIRST = ["garg_onecycle_a", "garg_onecycle_b"]
# the published boundaries and the turning-point kind that matches each (icl/stages.py)
PUBLISHED = {"1K": (1_000, "plateau"), "40K": (40_000, "peak"), "126K": (126_000, "plateau"), "320K": (320_000, "trough")}


def subsection(heading: str = "### Second pass: a dense sweep") -> str:
    """docs/results_icl.md from `heading` to the next heading of its level or above."""
    text = (REPO / "docs" / "results_icl.md").read_text()
    start = text.index(heading)
    ends = [i for i in (text.find("\n### ", start + 1), text.find("\n## ", start + 1)) if i > 0]
    return text[start:min(ends, default=len(text))]


def members(folders: list[str], llc_file: str = landscape.LLC_FILE) -> list[dict]:
    """The members' llc.json (or llc_file) entries by seed, with stages recomputed by the current rule."""
    state = landscape.pool_states([RUNS / f for f in folders], llc_file)
    return sorted(state["members"].values(), key=lambda e: e["config"]["seed"])


def last_position_mse(folders: list[str]) -> list[float]:
    logs = sorted((p for f in folders for p in (RUNS / f).glob("icl-*.json")), key=lambda p: p.name)
    return [json.loads(p.read_text())["summary"]["final_eval"]["valid"]["last_position"] for p in logs]


def mean_at_common_steps(entries: list[dict]) -> tuple[list[int], np.ndarray]:
    """The mean LLC over members at the checkpoints where every member has an estimate."""
    by_step: dict[int, list[float]] = {}
    for e in entries:
        for r in e["llc"]:
            if r["llc_mean"] is not None:
                by_step.setdefault(r["step"], []).append(r["llc_mean"])
    steps = sorted(s for s, v in by_step.items() if len(v) == len(entries))
    return steps, np.array([np.mean(by_step[s]) for s in steps])


def shape(entries: list[dict]) -> dict[str, tuple[int, float]]:
    """(step, mean LLC) at init, at the peak, at the lowest point after it, and at the end."""
    steps, mean = mean_at_common_steps(entries)
    peak = int(mean.argmax())
    trough = peak + int(mean[peak:].argmin())
    return {"init": (steps[0], mean[0]), "peak": (steps[peak], mean[peak]),
            "trough": (steps[trough], mean[trough]), "end": (steps[-1], mean[-1])}


def matches(entries: list[dict], published: int, kind: str) -> list[float]:
    """Per seed that has one, its first boundary of `kind` within a factor 2 of `published`."""
    found = []
    for e in entries:
        steps = [p["step"] for p in e["llc_stages"] if p["kind"] == kind and published / 2 <= p["step"] <= 2 * published]
        found += steps[:1]
    return found


def steps_range(values) -> str:
    return f"{min(values):,.0f}-{max(values):,.0f}" if min(values) != max(values) else f"{values[0]:,.0f}"


def boundary(sp: list[dict], mup: list[dict], published: int, kind: str) -> str:
    parts = []
    for name, entries in (("SP", sp), ("µP", mup)):
        found = matches(entries, published, kind)
        where = steps_range(found) if found else "none"
        parts.append(f"{name} {where} ({len(found)} of {len(entries)} seeds)")
    return "; ".join(parts)


def published_curve() -> tuple[np.ndarray, np.ndarray]:
    pub = landscape.load_published()
    return pub[0]["step"], np.stack([pub[s]["llc_mean"] for s in sorted(pub)]).mean(0)


def stage_table(sp: list[dict], mup: list[dict]) -> str:
    lines = ["| param | seed | stage boundaries: step (kind) |", "|---|---:|---|"]
    for name, entries in (("SP", sp), ("µP", mup)):
        for e in entries:
            points = ", ".join(f"{p['step']:,.0f} ({p['kind']})" for p in e["llc_stages"])
            lines.append(f"| {name} | {e['config']['seed']} | {points} |")
    return "\n".join(lines)


def devinterp_table(bench: dict) -> str:
    lines = ["| mode | data | s per checkpoint | LLC (mean ± std over chains) | L(w*) |", "|---|---|---:|---:|---:|"]
    for row in bench["comparison"]:
        lines.append(f"| {row['mode']} | {row['data']} | {row['s_per_checkpoint']:.2f} "
                     f"| {row['llc_mean']:.1f} ± {row['llc_std']:.1f} | {row['init_loss']:.4f} |")
    return "\n".join(lines)


def quoted() -> dict[str, str]:
    """Placeholder name -> the text the subsection quotes for it."""
    sp, mup = members(SP), members(MUP)
    q: dict[str, str] = {}
    median_100 = {}  # the median step where the LLC first exceeds 100
    rerun, first = last_position_mse(SP), last_position_mse(FIRST)
    q["RERUN_MSE"] = ", ".join(f"{v:.4f}" for v in rerun) + " for seeds 0-4"
    q["FIRST_MSE"] = ", ".join(f"{v:.4f}" for v in first)
    q["RERUN_MEAN"], q["FIRST_MEAN"] = f"{np.mean(rerun):.4f}", f"{np.mean(first):.4f}"
    for name, entries in (("SP", sp), ("MUP", mup)):
        records = [r for e in entries for r in e["llc"]]
        q[f"{name}_ESTIMATES"] = str(len(records))
        q[f"{name}_ALL"] = str(sum(r["llc_mean"] is None for r in records))
        q[f"{name}_SOME"] = str(sum(r["llc_mean"] is not None and any(r["diverged"]) for r in records))
        s = shape(entries)
        q[f"{name}_INIT"] = f"{s['init'][1]:.1f}"
        for key in ("peak", "trough"):
            q[f"{name}_{key.upper()}"] = f"{s[key][1]:.1f} at step {s[key][0]:,}"
        q[f"{name}_END"] = f"{s['end'][1]:.1f} at step {s['end'][0]:,}"
        hundred = [landscape.first_crossing(e["llc"], 100)[0] for e in entries]
        q[f"{name}_100_STEPS"] = ", ".join(f"{v:,.0f}" for v in hundred)
        median_100[name] = np.median(hundred)
        q[f"{name}_100_MED"] = f"{median_100[name]:,.0f}"
        q[f"{name}_SECONDS"] = f"{np.median([r['seconds'] for r in records]):.2f}"
    # the essential dynamics (every checkpoint): PC3's first peak, PC2's last
    for name, entries in (("SP", sp), ("MUP", mup)):
        pcs = [e["essential_dynamics"]["turning_points"] for e in entries]
        q[f"{name}_PC3"] = steps_range([[p["step"] for p in tp[2] if p["kind"] == "peak"][0] for tp in pcs])
        q[f"{name}_PC2"] = steps_range([[p["step"] for p in tp[1] if p["kind"] == "peak"][-1] for tp in pcs])
    # µP's sweep ran alone on its GPU: the sum of its groups' times is a measured whole sweep
    q["MUP_TOTAL"] = f"{sum(r['seconds'] for e in mup for r in e['llc']):.1f}"
    per_member = {len(e["llc"]) for e in sp}
    assert len(per_member) == 1
    q["SP_PER_MEMBER"] = str(per_member.pop())
    diverged = [r["step"] for e in sp for r in e["llc"] if r["llc_mean"] is None]
    q["SP_DIV_RANGE"] = steps_range(diverged)
    s_sp = shape(sp)
    steps, mean = published_curve()
    after = np.where(steps > steps[mean.argmax()], mean, np.inf)
    q["PEAK_PCT"] = f"{100 * (s_sp['peak'][1] / mean.max() - 1):.0f}"
    q["FALL_OURS"] = f"{100 * (1 - s_sp['trough'][1] / s_sp['peak'][1]):.0f}"
    q["FALL_PUB"] = f"{100 * (1 - after.min() / mean.max()):.0f}"
    q["PUB_INIT"], q["PUB_END"] = f"{mean[0]:.1f}", f"{mean[-1]:.0f}"
    pub = landscape.load_published()
    pub_100 = [landscape.first_crossing([{"step": int(t), "llc_mean": float(v)}
                                         for t, v in zip(pub[s]["step"], pub[s]["llc_mean"])], 100)[0]
               for s in sorted(pub)]
    q["PUB_100"] = f"{steps_range(pub_100)} (median {np.median(pub_100):,.0f})"
    q["PUB_PEAK"] = f"{mean.max():.0f} at step {steps[mean.argmax()]:,}"
    q["PUB_TROUGH"] = f"{after.min():.0f} at step {steps[after.argmin()]:,}"
    for key, (step, kind) in PUBLISHED.items():
        q[f"B_{key}"] = boundary(sp, mup, step, kind)
    early = [[p["step"] for p in e["llc_stages"] if p["kind"] == "plateau" and p["step"] < 300][0] for e in sp]
    q["SP_100"] = steps_range(early)
    q["MUP_LAG"] = f"{median_100['MUP'] / median_100['SP']:.1f}"
    q["STAGE_TABLE"] = stage_table(sp, mup)
    # sweep time: µP's sweep ran alone on its GPU; the SP sweeps shared one
    h100 = json.loads((RUNS / "llc_backend_bench_g8_h100.json").read_text())
    h100_rate = {r["mode"]: r["s_per_checkpoint_1000_steps"] for r in h100["rows"]}["ensemble-graph-compile"]
    rate = float(q["MUP_SECONDS"])
    q["DENSE_MIN"] = f"{int(q['SP_ESTIMATES']) * rate / 60:.1f}"
    q["DENSE_H100_MIN"] = f"{int(q['SP_ESTIMATES']) * h100_rate / 60:.1f}"
    q["SEED_MIN"] = f"{950 * rate / 60:.0f}"
    q["SP_SECONDS"] = f"{float(q['SP_SECONDS']):.1f}"
    bench = json.loads((RUNS / "llc_devinterp_bench_h200.json").read_text())
    q["DEVINTERP_TABLE"] = devinterp_table(bench)
    q["DI_BURNIN"] = f"{bench['devinterp']['llc_mean_with_burnin']:.1f}"
    seconds = {r["mode"]: r["s_per_checkpoint"] for r in bench["comparison"]}
    q["DI_RATIO"] = f"{seconds['devinterp'] / seconds['ensemble-graph-compile']:.0f}"
    q["DI_VMAP_RATIO"] = f"{seconds['devinterp'] / seconds['vmap']:.1f}"
    return q


def test_every_quoted_number_is_in_the_subsection():
    text = subsection()
    for name, value in quoted().items():
        assert value in text, f"{name}: {value!r} is not in the subsection"


def test_the_claims_the_text_makes_without_numbers():
    sp, mup = members(SP), members(MUP)
    s_sp, s_mup = shape(sp), shape(mup)
    # "The peak is at the same checkpoint and the trough within the same range"
    assert s_sp["peak"][0] == s_mup["peak"][0] and s_sp["trough"][0] == s_mup["trough"][0]
    # "µP's peak is lower, and µP does not diverge"
    assert s_mup["peak"][1] < s_sp["peak"][1]
    assert all(r["llc_mean"] is not None for e in mup for r in e["llc"])
    # "Every SP seed also has a plateau" below step 300, and no boundary of any seed sits in a gap
    assert all(any(p["kind"] == "plateau" and p["step"] < 300 for p in e["llc_stages"]) for e in sp)
    # the devinterp checkpoint, settings, and agreement
    bench = json.loads((RUNS / "llc_devinterp_bench_h200.json").read_text())
    args = bench["args"]
    assert (args["step"], args["group"], args["burnin"], args["draws"], args["chains"], args["grad_batch"]) == \
        (500000, 1, 500, 500, 8, 1024)
    assert "seed0" in bench["devinterp"]["checkpoint"] and bench["device"] in subsection()
    assert all(row["agrees_with_devinterp"] for row in bench["comparison"])
    assert f"{quoted()['DI_RATIO']}× faster with the ensemble backend" in (REPO / "docs" / "llc.md").read_text()
    # the rerun used the first runs' command: same config, seeds, steps
    for new, old in zip(sorted((RUNS / SP[0]).glob("icl-*.json")), sorted((RUNS / FIRST[0]).glob("icl-*.json"))):
        assert new.name == old.name
        assert json.loads(new.read_text())["config"] == json.loads(old.read_text())["config"]


def test_readme_summary():
    """README.md's one-line summary: the seeds that place each published stage, µP's lag, devinterp."""
    text = (REPO / "README.md").read_text()
    q, sp = quoted(), members(SP)
    counts = [len(matches(sp, *PUBLISHED[key])) for key in ("1K", "40K", "320K")]
    assert f"(1k, 40k, 320k) within a factor of 2 in {min(counts)}-{max(counts)} of 5 seeds" in text
    assert f"starts the rise {q['MUP_LAG']}× later" in text and f"devinterp's estimate, {q['DI_RATIO']}× faster" in text
