"""Every number of docs/results_icl.md's "Third pass" subsection (the one-cycle runs trained a third
time and swept alone on one GPU, steps 4k-200k swept again at epsilon 3e-4, the warmup runs' dense but
incomplete sweeps), recomputed from the committed llc files, run logs and per-GPU device logs, and
found in that subsection."""
import json
import re

import numpy as np
import pytest
from test_icl_dense_results import (FIRST, PUBLISHED, RUNS, last_position_mse, matches, members, shape,
                                    steps_range, subsection)
from test_icl_dense_results import SP as SECOND

from icl import landscape

pytestmark = pytest.mark.results  # every test here reads committed results
THIRD = ["garg_onecycle_x4_a", "garg_onecycle_x4_b"]
EPS_FILE = "llc_eps3e-4.json"
SCHEDULES = {"one-cycle, 50 % warmup": THIRD, "10k-step warmup": ["garg_warmup10k_dense"],
             "no warmup": ["garg_warmup0_dense"]}
LOGS = RUNS / "device_logs" / "x4"
GROUP_LINE = re.compile(r"(\S+): \d+/\d+ done, ([\d.]+) s for (\d+) checkpoint")
HEADING = "### Third pass"


def records(entries: list[dict]) -> list[dict]:
    return [r for e in entries for r in e["llc"]]


def all_diverged(rs: list[dict]) -> int:
    return sum(r["llc_mean"] is None for r in rs)


def some_diverged(rs: list[dict]) -> int:
    return sum(r["llc_mean"] is not None and any(r["diverged"]) for r in rs)


def clean(r: dict | None) -> bool:
    """An estimate where no chain diverged."""
    return r is not None and r["llc_mean"] is not None and not any(r["diverged"])


def value_range(values, fmt: str) -> str:
    low, high = f"{min(values):{fmt}}", f"{max(values):{fmt}}"
    return f"{low}-{high}" if low != high else low


def sweep_groups() -> list[list[tuple[str, float, int]]]:
    """Per device call, GPU 0's sweep groups as its log prints them: (folder, seconds, checkpoints)."""
    return [[(m[1], float(m[2]), int(m[3])) for m in GROUP_LINE.finditer((LOGS / f"call{c}_gpu0.log").read_text())]
            for c in (1, 2, 3)]


def paired(a: list[dict], b: list[dict]):
    """(seed, step, record in a, record in b or None) over a's records, members matched by seed."""
    for ea, eb in zip(a, b):
        assert ea["config"]["seed"] == eb["config"]["seed"]
        other = {r["step"]: r for r in eb["llc"]}
        for r in ea["llc"]:
            yield ea["config"]["seed"], r["step"], r, other.get(r["step"])


def missing_steps(entry: dict) -> list[int]:
    """The checkpoints the sweep selected for this member (40 per seed, as icl_device_call.sh asks)
    but did not estimate; the essential dynamics list every checkpoint past step 0."""
    chosen = landscape.select_steps([0] + entry["essential_dynamics"]["checkpoints"], 40, 1)
    done = {r["step"] for r in entry["llc"]}
    return [s for s in chosen if s not in done]


def and_list(items) -> str:
    items = [str(i) for i in items]
    return ", ".join(items[:-1]) + f" and {items[-1]}" if len(items) > 1 else items[0]


def matching_seeds(entries: list[dict], published: int, kind: str) -> list[int]:
    """The seeds that have a boundary of `kind` within a factor 2 of `published` (as `matches`)."""
    return [e["config"]["seed"] for e in entries if matches([e], published, kind)]


def div_subset(a: list[dict], b: list[dict]) -> bool:
    """Every estimate of a where all chains diverged has all chains diverged in b too."""
    return all(o["llc_mean"] is None for _, _, r, o in paired(a, b) if r["llc_mean"] is None)


def last_of_kind(points: list[dict], kind: str, after: float = 0) -> float | None:
    steps = [p["step"] for p in points if p["kind"] == kind and p["step"] > after]
    return steps[-1] if steps else None


def stage_rows() -> dict[str, dict[str, list[tuple[dict, float]]]]:
    """Per stage and schedule, (member, step) for the members that have it. The one-cycle LLC peak is
    the epsilon 3e-4 sweep's: at 1e-3 every chain diverges around it in most seeds."""
    found: dict[str, dict[str, list]] = {}
    for schedule, folders in SCHEDULES.items():
        entries = members(folders)
        peaks = members(folders, EPS_FILE) if schedule.startswith("one-cycle") else entries
        by_stage = {
            "LLC > 100 (first crossing)": [(e, landscape.first_crossing(e["llc"], 100)[0]) for e in entries],
            "LLC peak (the rule's last peak)": [(e, last_of_kind(e["llc_stages"], "peak")) for e in peaks],
            "PC2's last peak (essential dynamics)":
                [(e, last_of_kind(e["essential_dynamics"]["turning_points"][1], "peak")) for e in entries],
            "LLC trough past step 100,000": [(e, last_of_kind(e["llc_stages"], "trough", 100_000)) for e in entries],
        }
        for stage, pairs in by_stage.items():
            found.setdefault(stage, {})[schedule] = [(e, s) for e, s in pairs if s is not None]
    return found


LR_FORMAT = {"LLC > 100 (first crossing)": ".3f", "LLC peak (the rule's last peak)": ".1f",
             "PC2's last peak (essential dynamics)": ".1f", "LLC trough past step 100,000": ".0f"}


def cumulative(pairs) -> list[float]:
    return [float(landscape.cumulative_lr(e["config"], [round(s)])[0]) for e, s in pairs]


def stage_table() -> str:
    lines = ["| stage | " + " | ".join(SCHEDULES) + " |", "|---" * (len(SCHEDULES) + 1) + "|"]
    for stage, per_schedule in stage_rows().items():
        cells = []
        for schedule, folders in SCHEDULES.items():
            pairs, seeds = per_schedule[schedule], len(members(folders))
            cells.append(f"{steps_range([s for _, s in pairs])} / {value_range(cumulative(pairs), LR_FORMAT[stage])} "
                         f"({len(pairs)} of {seeds})")
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seed_table(third: list[dict], eps: list[dict]) -> str:
    spans = [steps_range([r["step"] for r in records(x)]) for x in (third, eps)]
    lines = [f"| seed | ε = 1e-3, steps {spans[0]} | ε = 3e-4, steps {spans[1]} |", "|---:|---|---|"]
    for e, f in zip(third, eps):
        cells = [", ".join(f"{p['step']:,.0f} ({p['kind']})" for p in x["llc_stages"]) or "none" for x in (e, f)]
        lines.append(f"| {e['config']['seed']} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def quoted() -> dict[str, str]:
    """Placeholder name -> the text the subsection quotes for it."""
    third, second, eps = members(THIRD), members(SECOND), members(THIRD, EPS_FILE)
    q: dict[str, str] = {}

    # sweep time: GPU 0 swept both one-cycle folders alone on its GPU, over three calls
    rs = records(third)
    total = sum(r["seconds"] for r in rs)
    groups = sweep_groups()
    first = [call[0][1] for call in groups]
    others = [g[1] for call in groups for g in call[1:] if g[2] == 8]
    rate = np.median([r["seconds"] for r in rs])
    h100 = json.loads((RUNS / "llc_backend_bench_g8_h100.json").read_text())
    h100_rate = {r["mode"]: r["s_per_checkpoint_1000_steps"] for r in h100["rows"]}["ensemble-graph-compile"]
    q["SWEEP_N"] = f"{len(rs)} checkpoints"
    q["SWEEP_S"] = f"{total:.1f} s"
    q["SWEEP_MIN"] = f"{total / 60:.1f} min"
    q["SWEEP_PER"] = f"{total / len(rs):.2f} s per checkpoint"
    q["GROUPS"] = f"{sum(map(len, groups))} groups"
    q["FIRST"] = ", ".join(f"{s:.1f}" for s in first[:-1]) + f" and {first[-1]:.1f} s"
    q["OTHERS"] = f"{len(others)} other groups of 8 took {value_range(others, '.1f')} s"
    q["RATE"] = f"{rate:.2f} s per checkpoint"
    q["STEADY_MIN"] = f"{len(rs) * rate / 60:.1f} min"
    q["MUP_RATE"] = f"{np.median([r['seconds'] for r in records(members(['garg_mup_b32']))]):.2f} s"
    q["H100_MIN"] = f"{len(rs) * h100_rate / 60:.1f} min"
    q["H100_RATE"] = f"{h100_rate:.2f} s"
    shared_gpu = [r["seconds"] for f in ("garg_warmup10k_dense", "garg_warmup0_dense") for r in records(members([f]))]
    q["SHARED_RATE"] = f"{np.median(shared_gpu):.1f} s per checkpoint"
    assert np.median(shared_gpu) > 2 * rate  # "more than twice the rate of one sweep alone"

    # epsilon 3e-4 against 1e-3 on the same checkpoints (this training's llc.json)
    eps_rs = records(eps)
    q["EPS_N"] = f"{len(eps_rs)} estimates"
    q["EPS_DIV"] = f"{all_diverged(eps_rs)} with every chain diverged and {some_diverged(eps_rs)} with some"
    q["EPS_RANGE"] = steps_range([r["step"] for r in eps_rs])
    per_seed = {len(e["llc"]) for e in eps}
    assert len(per_seed) == 1
    q["EPS_PER_SEED"] = f"{per_seed.pop()} per seed"
    pairs = list(paired(eps, third))
    shared = [(r, o) for _, _, r, o in pairs if o is not None]
    shared_steps = sorted({r["step"] for r, _ in shared})
    assert len(shared_steps) == 6  # "Six steps are in both selections"
    q["SHARED_STEPS"] = ", ".join(f"{s:,}" for s in shared_steps[:-1]) + f" and {shared_steps[-1]:,}"
    q["SHARED_N"] = f"{len(shared)} estimates"
    q["SHARED_DIV"] = (f"{all_diverged([o for _, o in shared])} with every chain diverged and "
                       f"{some_diverged([o for _, o in shared])} with some")
    lo, hi = min(r["step"] for r in eps_rs), max(r["step"] for r in eps_rs)
    in_range = [r for r in rs if lo <= r["step"] <= hi]
    q["RANGE_1E3"] = f"{len(in_range)} estimates, {all_diverged(in_range)} with every chain diverged"
    q["ALL_DIV_TOTAL"] = f"({all_diverged(rs)} of {len(rs)})"
    peak_1e3, peak_eps = matches(third, *PUBLISHED["40K"]), matches(eps, *PUBLISHED["40K"])
    q["PEAK_1E3"] = f"{steps_range(peak_1e3)} ({len(peak_1e3)} of {len(third)} seeds)"
    q["PEAK_EPS"] = f"{steps_range(peak_eps)} ({len(peak_eps)} of {len(eps)} seeds)"
    s_eps = shape(eps)
    q["EPS_MEAN_PEAK"] = f"{s_eps['peak'][1]:.1f} at step {s_eps['peak'][0]:,}"
    ratios = [r["llc_mean"] / o["llc_mean"] for r, o in shared if clean(r) and clean(o)]
    q["RATIO_N"] = f"{len(ratios)} estimates"
    clean_steps = sorted({r["step"] for r, o in shared if clean(r) and clean(o)})
    q["RATIO_STEPS"] = f"steps {' and '.join(f'{s:,}' for s in clean_steps)}, every seed"
    assert len(ratios) == len(clean_steps) * len(eps)
    q["LAST_SHARED"] = f"Past step {shared_steps[-1]:,} no checkpoint has both"
    samplers = [json.loads((RUNS / THIRD[0] / f).read_text())["sampler"] for f in ("llc.json", EPS_FILE)]
    assert samplers[0]["nbeta"] == samplers[1]["nbeta"] and samplers[1]["epsilon"] == 3e-4
    q["NBETA"] = f"nβ = {samplers[0]['nbeta']:.0f} at both"
    q["RATIO"] = f"{value_range(ratios, '.3f')} (mean {np.mean(ratios):.3f})"
    survivors = [r["llc_mean"] / o["llc_mean"] for r, o in shared if clean(r) and o["llc_mean"] is not None
                 and any(o["diverged"])]
    q["RATIO_SURVIVORS"] = f"{value_range(survivors, '.3f')} on the {len(survivors)}"
    stds_last = [r["llc_std"] for r in eps_rs if r["step"] == hi]
    stds_rest = [r["llc_std"] for r in eps_rs if r["step"] < hi]
    q["STD_LAST"] = f"{value_range(stds_last, '.1f')} at step {hi:,}"
    q["STD_REST"] = f"{value_range(stds_rest, '.1f')} at the others"

    # reproducibility: this third training against the second (and the first)
    mse = {name: last_position_mse(f) for name, f in (("third", THIRD), ("second", SECOND), ("first", FIRST))}
    for name, values in mse.items():
        q[f"MSE_{name.upper()}"] = ", ".join(f"{v:.4f}" for v in values)
        q[f"MEAN_{name.upper()}"] = f"{np.mean(values):.4f}"
    spread = np.ptp(np.array(list(mse.values())), axis=0)
    q["MSE_SPREAD"] = f"{spread.max():.4f} (seed {int(spread.argmax())})"
    both_clean = [(seed, step, r["llc_mean"] - o["llc_mean"], r["llc_std"], o["llc_std"])
                  for seed, step, r, o in paired(third, second) if clean(r) and clean(o)]
    diffs = np.abs([d for _, _, d, _, _ in both_clean])
    worst = both_clean[int(diffs.argmax())]
    q["CLEAN_N"] = f"{len(both_clean)} checkpoints"
    q["DIFF_MEDIAN"] = f"{np.median(diffs):.2f}"
    q["DIFF_MAX"] = (f"{diffs.max():.1f} (seed {worst[0]} at step {worst[1]:,}, where the chains' std is "
                     f"{worst[3]:.1f} and {worst[4]:.1f})")
    rs_second = records(second)
    q["DIV_THIRD"] = f"{all_diverged(rs)} of {len(rs)} estimates, and at {some_diverged(rs)} some"
    q["DIV_SECOND"] = f"{all_diverged(rs_second)} and {some_diverged(rs_second)}"
    q["DIV_RANGE"] = steps_range([r["step"] for r in rs if r["llc_mean"] is None])
    s3, s2 = shape(third), shape(second)
    for key in ("peak", "trough", "end"):
        q[f"THIRD_{key.upper()}"] = f"{s3[key][1]:.1f} at step {s3[key][0]:,}"
        q[f"SECOND_{key.upper()}"] = f"{s2[key][1]:.1f} at step {s2[key][0]:,}"
    q["SEED_TABLE"] = seed_table(third, eps)
    q["PER_SEED"] = f"{len(third[0]['llc'])} checkpoints per seed"
    assert len(rs) == len(third) * len(third[0]["llc"])
    assert div_subset(second, third)
    q["SUBSET"] = f"The second training's {all_diverged(rs_second)} are among these {all_diverged(rs)}"
    assert s2["peak"][0] in [r["step"] for r in rs if r["llc_mean"] is None]
    q["MEAN_GAP"] = f"a seed diverged at {s2['peak'][0]:,} this time"
    for key, (step, kind) in PUBLISHED.items():
        for name, entries in (("THIRD", third), ("SECOND", second)):
            found = matches(entries, step, kind)
            q[f"B_{key}_{name}"] = f"{steps_range(found) if found else 'none'} ({len(found)} of {len(entries)} seeds)"
    for key in ("1K", "320K"):  # these come back in the same seeds
        seeds = [matching_seeds(entries, *PUBLISHED[key]) for entries in (third, second)]
        assert seeds[0] == seeds[1]
        q[f"SEEDS_{key}"] = f"The same seeds, {and_list(seeds[0])}"
    for name, entries in (("THIRD", third), ("SECOND", second)):
        q[f"PC2_{name}"] = steps_range([last_of_kind(e["essential_dynamics"]["turning_points"][1], "peak")
                                        for e in entries])

    # the warmup runs' incomplete dense sweeps
    warm = {s: members(f) for s, f in SCHEDULES.items() if not s.startswith("one-cycle")}
    missing = {tuple(missing_steps(e)) for entries in warm.values() for e in entries}
    assert len(missing) == 1, "every warmup member misses the same checkpoints"
    steps = missing.pop()
    q["MISSING"] = ", ".join(f"{s:,}" for s in steps[:-1]) + f" and {steps[-1]:,}"
    chosen = {len(landscape.select_steps([0] + e["essential_dynamics"]["checkpoints"], 40, 1))
              for entries in warm.values() for e in entries}
    assert len(chosen) == 1
    n_chosen = chosen.pop()
    # "the last level of the coarse-to-fine order": the sweep visits checkpoints in that order
    chosen_steps = landscape.select_steps([0] + warm["no warmup"][0]["essential_dynamics"]["checkpoints"], 40, 1)
    assert sorted(chosen_steps[i] for i in landscape.coarse_to_fine(n_chosen)[-len(steps):]) == list(steps)
    q["MISSING_N"] = f"{len(steps)} of the {n_chosen} checkpoints per seed"
    q["WARM_DONE"] = f"{n_chosen - len(steps)} per seed, {3 * (n_chosen - len(steps))} of {3 * n_chosen} per folder"
    for schedule, key in (("10k-step warmup", "W10K"), ("no warmup", "W0")):
        wr = records(warm[schedule])
        q[f"{key}_DIV"] = f"{all_diverged(wr)} with every chain diverged, {some_diverged(wr)} with some"
        q[f"{key}_SOME_RANGE"] = steps_range([r["step"] for r in wr if some_diverged([r])])
    late = sorted({r["step"] for entries in warm.values() for e in entries for r in e["llc"] if r["step"] > 100_000})
    q["LATE_STEPS"] = and_list([f"{s:,}" for s in late])
    q["LATE_MISSING"] = f"the missing {and_list([f'{s:,}' for s in steps if s > 100_000])} would decide it"
    q["STAGE_TABLE"] = stage_table()
    rows = stage_rows()
    pooled = {}  # stage -> (cumulative lr range, step range) over every schedule's seeds
    for stage in ("LLC peak (the rule's last peak)", "PC2's last peak (essential dynamics)"):
        pairs = [p for schedule in SCHEDULES for p in rows[stage][schedule]]
        pooled[stage] = value_range(cumulative(pairs), LR_FORMAT[stage]), steps_range([s for _, s in pairs])
    lrs, steps_all = pooled["LLC peak (the rule's last peak)"]
    q["PEAK_ALL"] = f"peak at a cumulative lr of {lrs} across seeds, while their steps span {steps_all}"
    lrs, steps_all = pooled["PC2's last peak (essential dynamics)"]
    q["PC2_ALL"] = f"cumulative lr ({lrs}) and spreads over {steps_all} in steps"
    trough = rows["LLC trough past step 100,000"]
    warm_troughs = [p for schedule in warm for p in trough[schedule]]
    one_troughs = trough["one-cycle, 50 % warmup"]
    q["TROUGH"] = (f"closer in cumulative lr ({value_range(cumulative(warm_troughs), '.0f')} against "
                   f"{value_range(cumulative(one_troughs), '.0f')}) than in steps "
                   f"({steps_range([s for _, s in warm_troughs])} against {steps_range([s for _, s in one_troughs])})")
    nearest = {min(late, key=lambda c: abs(np.log(c / s))) for _, s in warm_troughs}
    assert len(nearest) == 1
    q["TROUGH_POINT"] = f"single estimate at {nearest.pop():,} between {late[0]:,} and {late[-1]:,}"
    q["TROUGH_SEEDS"] = "the trough in " + and_list([f"{len(trough[s])} of {len(members(f))}"
                                                     for s, f in SCHEDULES.items()])
    for stage, key in (("LLC > 100 (first crossing)", "RISE"), ("LLC peak (the rule's last peak)", "PEAK")):
        one, none = rows[stage]["one-cycle, 50 % warmup"], rows[stage]["no warmup"]
        step_ratio = np.median([s for _, s in one]) / np.median([s for _, s in none])
        lr_ratio = np.median(cumulative(one)) / np.median(cumulative(none))
        q[f"{key}_RATIO"] = f"{step_ratio:.0f}× in steps and {lr_ratio:.2f}× in cumulative lr"
        if key == "RISE":
            q["RISE_LR_INV"] = f"{1 / lr_ratio:.1f} times the cumulative lr"
    one_1e3 = [(e, s) for e in third if (s := last_of_kind(e["llc_stages"], "peak", 20_000)) is not None]
    q["PEAK_1E3_LR"] = ", ".join(f"{s:,.0f} (Σlr {lr:.1f})" for (_, s), lr in zip(one_1e3, cumulative(one_1e3)))
    q["PEAK_SECOND"] = f"inside the second pass's {steps_range(matches(second, *PUBLISHED['40K']))}"
    return q


def test_every_quoted_number_is_in_the_subsection():
    def words(text: str) -> str:  # the prose is wrapped: a quote may span a line break
        return " ".join(text.split())
    text = words(subsection(HEADING))
    for name, value in quoted().items():
        assert words(value) in text, f"{name}: {value!r} is not in the subsection"


def test_the_claims_the_text_makes_without_numbers():
    third, second = members(THIRD), members(SECOND)
    # the sum of the groups' seconds in the two llc.json is the sum the GPU 0 logs print (to 0.05 s a group)
    groups = [g for call in sweep_groups() for g in call]
    assert sum(g[2] for g in groups) == len(records(third))
    assert abs(sum(g[1] for g in groups) - sum(r["seconds"] for r in records(third))) <= 0.05 * len(groups)
    # each call's first group is its slowest (the process compiles the sampler); within a call the
    # second folder's first group does not compile again (call 1: garg_onecycle_b after _a)
    for call in sweep_groups():
        assert call[0][1] == max(g[1] for g in call)
    assert sum(g[2] < 8 for g in groups) == 2  # "two part-filled groups"
    # per seed the three trainings' final losses differ less than the seeds of any one training do
    mse = np.array([last_position_mse(f) for f in (THIRD, SECOND, FIRST)])
    assert np.ptp(mse, axis=0).max() < np.ptp(mse, axis=1).min()
    assert sweep_groups()[0][1][0].endswith("garg_onecycle_b") and sweep_groups()[0][1][1] < 35
    # the three trainings ran the same command: same config, seeds and steps; this one on 4 H200s at 58495d2
    for new, old in zip(sorted((RUNS / THIRD[0]).glob("icl-*.json")), sorted((RUNS / SECOND[0]).glob("icl-*.json"))):
        assert new.name == old.name
        assert json.loads(new.read_text())["config"] == json.loads(old.read_text())["config"]
    for folder in THIRD + SCHEDULES["10k-step warmup"] + SCHEDULES["no warmup"]:
        for log in (RUNS / folder).glob("icl-*.json"):
            env = json.loads(log.read_text())["env"]
            assert env["git_commit"] == "58495d2" and env["device"] == "NVIDIA H200"
    # the init estimates are bit-identical to the second training's (same init, same sampler seed)
    assert all(o["step"] == r["step"] == 0 and o["llc_mean"] == r["llc_mean"]
               for r, o in ((e["llc"][0], f["llc"][0]) for e, f in zip(third, second)))
    # epsilon 3e-4 is lower than 1e-3 on every checkpoint both estimated
    assert all(r["llc_mean"] < o["llc_mean"] for _, _, r, o in paired(members(THIRD, EPS_FILE), third)
               if o is not None and o["llc_mean"] is not None)
    # the warmup runs were cut by the first call's limit and resumed from their checkpoints
    for folder in SCHEDULES["10k-step warmup"] + SCHEDULES["no warmup"]:
        for log in (RUNS / folder).glob("icl-*.json"):
            assert [e["kind"] for e in json.loads(log.read_text())["events"]] == ["signal", "resumed"]
    # the warmup sweeps are incomplete and say so; the one-cycle ones are complete
    for schedule, folders in SCHEDULES.items():
        state = json.loads((RUNS / folders[0] / "llc.json").read_text())
        assert state["complete"] == schedule.startswith("one-cycle")
    stages = (RUNS.parents[1] / "plots" / "icl_landscape_x4" / "stages.md").read_text()
    assert "| warmup0 (sweep incomplete: marked checkpoints only) |" in stages



def test_open_gpu_work_item_4():
    """docs/open_gpu_work.md's item 4: what this pass left open, with the numbers it plans by."""
    text = (RUNS.parents[1] / "docs" / "open_gpu_work.md").read_text()
    item = " ".join(text[text.index("4. **The LLC sweeps' open ends.**"):text.index("5. **")].split())
    q = quoted()
    train = {f: json.loads(next((RUNS / f).glob("icl-*.json")).read_text())["summary"]["train_seconds"]
             for f in (THIRD[0], "garg_warmup0_dense")}
    third, eps = members(THIRD), members(THIRD, EPS_FILE)
    per_seed, seeds = len(third[0]["llc"]), len(members(SCHEDULES["no warmup"]))
    missing = len(missing_steps(members(SCHEDULES["no warmup"])[0]))
    rate = np.median([r["seconds"] for r in records(third)])
    one_warmup_run = (train[THIRD[0]] + seeds * per_seed * rate) / 60
    peaks = len(matches(eps, *PUBLISHED["40K"]))
    for value in (f"{per_seed} checkpoints per seed", f"peak in {peaks} of {len(eps)} seeds",
                  f"{q['SWEEP_MIN']} for {q['SWEEP_N']}", f"takes {q['H100_MIN']}",
                  f"{missing} of the {per_seed} checkpoints per seed ({seeds * missing} per folder) "
                  f"at steps {q['MISSING']}",
                  f"train in {train[THIRD[0]]:.0f} s alone", f"took {train['garg_warmup0_dense']:.0f} s",
                  f"{q['SHARED_RATE'].split()[0]} s per checkpoint each against {rate:.2f} s alone",
                  f"sweeping {seeds * per_seed} checkpoints at {rate:.2f} s, would take {one_warmup_run:.1f} min"):
        assert value in item, value


def test_readme_summary_quotes_the_smaller_step():
    """README.md's summary: the seeds in which epsilon 3e-4 places the 40k peak."""
    eps = members(THIRD, EPS_FILE)
    text = " ".join((RUNS.parents[1] / "README.md").read_text().split())
    found = len(matches(eps, *PUBLISHED["40K"]))
    assert f"ε = 3e-4, finds the 40k peak in {found} of {len(eps)} seeds" in text
