"""Every number docs/results_icl.md's developmental-stages section quotes, recomputed from the
committed llc.json files, run logs and the published CSV (runs/icl_landscape, ../shared/reference),
and found in that section."""
import json
from pathlib import Path

import numpy as np
import pytest

from icl import landscape

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "runs" / "icl_landscape"
pytestmark = pytest.mark.results  # every test here reads committed results
SCHEDULES = {"one-cycle, 50 % warmup": ["garg_onecycle_a", "garg_onecycle_b"],
             "10k-step warmup": ["garg_warmup10k"], "no warmup": ["garg_warmup0"]}
LEVELS = (100, 200)


def members(schedule: str) -> list[dict]:
    """That schedule's members' llc.json entries, by seed."""
    entries = [e for folder in SCHEDULES[schedule]
               for e in json.loads((RUNS / folder / "llc.json").read_text())["members"].values()]
    return sorted(entries, key=lambda e: e["config"]["seed"])


def section() -> str:
    """docs/results_icl.md's developmental-stages section (to the next `## ` heading)."""
    text = (REPO / "docs" / "results_icl.md").read_text()
    start = text.index("## Developmental stages of in-context regression")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def pc2_peak(entry: dict) -> int:
    """The last peak of the essential dynamics' PC2 (189 checkpoints per member, dense enough)."""
    return round([t["step"] for t in entry["essential_dynamics"]["turning_points"][1] if t["kind"] == "peak"][-1])


def cum_lr(entry: dict, step: float) -> float:
    return float(landscape.cumulative_lr(entry["config"], [round(step)])[0])


def timing_rows() -> list[tuple[str, str, str, str, str]]:
    """(schedule, seeds, LLC>100 step per seed, its cumulative lr per seed, PC2 peak step, its cumulative lr)
    formatted as the section's table shows them."""
    rows = []
    for schedule in SCHEDULES:
        entries = members(schedule)
        hundred = [landscape.first_crossing(e["llc"], 100)[0] for e in entries]
        peaks = [pc2_peak(e) for e in entries]
        rows.append((schedule,
                     ", ".join(f"{s:,.0f}" for s in hundred),
                     ", ".join(f"{cum_lr(e, s):.3f}" for e, s in zip(entries, hundred)),
                     ", ".join(f"{s:,}" for s in peaks),
                     ", ".join(f"{cum_lr(e, s):.1f}" for e, s in zip(entries, peaks))))
    return rows


def medians() -> dict[str, dict[str, float]]:
    """Per schedule, the median over seeds of the LLC>100 step and cumulative lr and of the PC2 peak's."""
    out = {}
    for schedule in SCHEDULES:
        entries = members(schedule)
        hundred = [landscape.first_crossing(e["llc"], 100)[0] for e in entries]
        peaks = [pc2_peak(e) for e in entries]
        out[schedule] = {"step100": np.median(hundred),
                         "lr100": np.median([cum_lr(e, s) for e, s in zip(entries, hundred)]),
                         "peak": np.median(peaks), "lrpeak": np.median([cum_lr(e, s) for e, s in zip(entries, peaks)])}
    return out


def test_llc_trajectory_numbers_are_in_the_readme():
    text = section()
    entries = members("one-cycle, 50 % warmup")
    init = [e["llc"][0] for e in entries]
    assert all(r["step"] == 0 for r in init)
    assert f"{min(r['llc_mean'] for r in init):.0f} to {max(r['llc_mean'] for r in init):.1f}" in text
    # the 5-seed mean at the checkpoints every seed has
    by_step = {}
    for e in entries:
        for r in e["llc"]:
            if r["llc_mean"] is not None:
                by_step.setdefault(r["step"], []).append(r["llc_mean"])
    for step in (863, 4233, 500000):
        assert len(by_step[step]) == 5
        assert f"{np.mean(by_step[step]):.0f} at step {step:,}" in text, step
    assert len(by_step[90909]) == 3 and f"{np.mean(by_step[90909]):.0f} at step 90,909 (3 seeds" in text
    assert len(by_step[18190]) == 2 and "step 18,190" in text
    # the published curve (mean over its 5 seeds)
    pub = landscape.load_published()
    steps = pub[0]["step"]
    mean = np.stack([pub[s]["llc_mean"] for s in sorted(pub)]).mean(0)
    after = np.where(steps > steps[mean.argmax()], mean, np.inf)
    for quoted in (f"{mean[0]:.1f} at init", f"{mean.max():.0f} at step {steps[mean.argmax()]:,}",
                   f"{after.min():.0f} at step {steps[after.argmin()]:,}", f"{mean[-1]:.0f} at the end"):
        assert quoted in text, quoted


def test_without_warmup_numbers_are_in_the_readme():
    text = section()
    for step in (135, 580, 3247):
        values = [r["llc_mean"] for e in members("no warmup") for r in e["llc"] if r["step"] == step]
        assert f"{np.mean(values):.0f} at step {step:,}" in text, step


def test_divergence_and_timing_are_in_the_readme():
    text = section()
    records = [r for s in SCHEDULES for e in members(s) for r in e["llc"]]
    seconds = [r["seconds"] for r in records]
    assert f"{len(records)} estimates" in text
    assert f"{np.median(seconds):.1f} s per checkpoint" in text
    all_diverged = [r for r in records if r["llc_mean"] is None]
    assert all(sum(r["diverged"]) == 8 for r in all_diverged)
    assert f"{len(all_diverged)} of them every chain diverged" in text
    some = [r for r in records if r["llc_mean"] is not None and sum(r["diverged"]) > 0]
    assert f"{len(some)} more some chains" in text
    # 950 checkpoints per seed at that rate
    assert f"{950 * np.median(seconds) / 3600:.1f} h" in text


def test_negative_init_llc_matches_the_init_loss():
    """At init, chains end below L(w*): E[L] - L(w*) = llc/nbeta < 0, and the seeds with the higher
    init loss have the more negative LLC (w* is far above the zero predictor, not at a minimum)."""
    text = section()
    init = [e["llc"][0] for e in members("one-cycle, 50 % warmup")]
    loss = np.array([r["init_loss"] for r in init])
    llc = np.array([r["llc_mean"] for r in init])
    drop = llc / 60.0
    assert (drop < 0).all()
    assert list(np.argsort(loss)) == list(np.argsort(-llc)), \
        "the init loss and init LLC should be in exactly reverse order over the 5 seeds"
    assert f"{loss.min():.2f}-{loss.max():.2f}" in text
    assert f"is {drop.max():.2f} to {drop.min():.2f}" in text
    zero = json.loads(next((RUNS / "garg_onecycle_a").glob("*seed0.json")).read_text())
    zero_loss = np.mean(zero["curve"][-1]["eval"]["valid"]["baselines"]["zero"])
    assert f"{zero_loss:.2f}" in text


def test_warmup_timing_table_is_in_the_readme():
    text = section()
    for row in timing_rows():
        assert "| " + " | ".join(row) + " |" in text, row
    m = medians()
    base, none = m["one-cycle, 50 % warmup"], m["no warmup"]
    for quoted in (f"{base['step100'] / none['step100']:.0f}×", f"{base['lr100'] / none['lr100']:.2f}×",
                   f"{base['peak'] / none['peak']:.0f}×", f"{base['lrpeak'] / none['lrpeak']:.2f}×"):
        assert quoted in text, quoted


def test_shape_against_published_is_in_the_readme():
    text = section()
    entries = members("one-cycle, 50 % warmup")
    at = {s: [r["llc_mean"] for e in entries for r in e["llc"] if r["step"] == s and r["llc_mean"] is not None]
          for s in (154, 18190, 90909, 500000)}
    assert f"between steps 154 and 863 (LLC {np.mean(at[154]):.0f} → " in text
    assert f"{min(at[18190]):.0f}-{max(at[18190]):.0f}" in text
    pub = landscape.load_published()
    steps = pub[0]["step"]
    mean = np.stack([pub[s]["llc_mean"] for s in sorted(pub)]).mean(0)
    assert f"published {np.interp(1000, steps, mean):.1f} at 1k, {np.interp(5000, steps, mean):.0f} at 5k" in text
    assert f"Our peak is {100 * (np.mean(at[90909]) / mean.max() - 1):.0f} % higher" in text
    first3 = [r["llc_mean"] for e in entries[:3] for r in e["llc"] if r["step"] == 500000]
    assert f"a fall of {100 * (1 - np.mean(first3) / np.mean(at[90909])):.0f} % is measured (seeds 0-2)" in text


def test_essential_dynamics_turning_points_are_in_the_readme():
    """Each one-cycle seed has a PC3 peak, a PC2 peak and a PC1 turning point; the section quotes their ranges."""
    text = section()
    entries = members("one-cycle, 50 % warmup")
    assert all(len(e["essential_dynamics"]["steps"]) == 189 for e in entries)
    pc3 = [[t["step"] for t in e["essential_dynamics"]["turning_points"][2] if t["kind"] == "peak"][0] for e in entries]
    pc2 = [pc2_peak(e) for e in entries]
    pc1 = [[t["step"] for t in e["essential_dynamics"]["turning_points"][0] if 1e4 < t["step"] < 1e5][0]
           for e in entries]
    for name, values in (("PC3 peak", pc3), ("PC2 peak", pc2), ("PC1\nturning point", pc1)):
        assert f"{name} at {'steps ' if name == 'PC3 peak' else ''}{min(values):,.0f}-{max(values):,.0f}" in text, name


def test_llc_backend_bench_is_in_the_readme():
    """The H100 timing of the LLC backends, the sweep it implies, and the agreement of their estimates."""
    text = section()
    bench = json.loads((RUNS / "llc_backend_bench_g8_h100.json").read_text())
    assert bench["device"] in text and bench["args"]["group"] == 8 and bench["args"]["chains"] == 8
    per_ckpt = {r["mode"]: r["s_per_checkpoint_1000_steps"] for r in bench["rows"]}
    best = per_ckpt["ensemble-graph-compile"]
    assert min(per_ckpt.values()) == best
    for quoted in (f"{per_ckpt['vmap']:.1f} s per checkpoint for vmap", f"{per_ckpt['ensemble-eager']:.1f} s for the",
                   f"{per_ckpt['ensemble-graph']:.1f} s graphed and {best:.2f} s graphed + compiled",
                   f"{per_ckpt['vmap'] / best:.1f}× faster than vmap"):
        assert quoted in text, quoted
    # the seed's 950 checkpoints (5 seeds x 190) at that rate, and what 15 minutes cover
    assert f"950 checkpoints take {950 * best / 60:.0f} min" in text and 950 * best > 15 * 60
    assert f"15 minutes cover {15 * 60 / best:.0f} checkpoints" in text
    llc = {mode: np.array(v) for mode, v in bench["llc"].items()}
    assert np.array_equal(llc["ensemble-eager"], llc["ensemble-graph"])
    assert f"at most {np.abs(llc['ensemble-graph-compile'] - llc['ensemble-graph']).max():.2f}" in text
    assert f"up to {np.abs(llc['vmap'] - llc['ensemble-graph']).max():.1f}" in text
    assert f"{llc['vmap'].mean():.1f} against the ensemble's {llc['ensemble-graph'].mean():.1f}" in text
