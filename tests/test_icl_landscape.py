"""icl.landscape on a tiny CPU run: one LLC estimate per checkpoint and member (equal to
estimate_llc called by hand), resume without recomputing, --limit, the cumulative lr against
torch's OneCycleLR, figures whose lines are the JSON's numbers, and the published CSV."""
import json
import shutil

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

from icl import checkpoints, landscape  # noqa: E402
from icl.cli import main as train  # noqa: E402
from icl.llc import estimate_llc  # noqa: E402
from icl.tasks import per_position_loss  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

STEPS = 200
# small sampler settings: the wiring is under test here, the estimator in tests/test_llc.py
SAMPLER = ["--chains", "2", "--burnin", "2", "--draws", "3", "--grad-batch", "16", "--init-batch", "64",
           "--ed-batch", "16", "--epsilon", "1e-4", "--nbeta", "10", "--gamma", "100", "--device", "cpu"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-member tiny run of 200 steps with 8 checkpoints each."""
    out = tmp_path_factory.mktemp("icl-tiny")
    torch.set_num_threads(1)
    assert train(["--dim", "2", "--points", "4", "--width", "16", "--depth", "1", "--heads", "2", "--batch", "16",
                  "--eval-batch", "64", "--quiet", "--steps", str(STEPS), "--lr", "1e-2", "--seeds", "0", "1",
                  "--ckpt-log", "6", "--ckpt-lin", "3", "--eval-log", "6", "--eval-lin", "3",
                  "--out", str(out)]) == 0
    return out


@pytest.fixture
def run(trained, tmp_path):
    """A fresh copy of the trained run (each test writes its own llc.json)."""
    folder = tmp_path / "run"
    shutil.copytree(trained, folder)
    return folder


@pytest.fixture
def counted(monkeypatch):
    """Counts the checkpoints handed to estimate_llcs."""
    calls = []
    real = landscape.estimate_llcs

    def counting(model, states, *args, **kwargs):
        calls.append(len(states))
        return real(model, states, *args, **kwargs)
    monkeypatch.setattr(landscape, "estimate_llcs", counting)
    return calls


def member_steps(folder):
    return {m.run_name: m.steps for m in landscape.find_members(folder)}


def test_sweep_estimates_every_checkpoint_of_every_member_as_estimate_llc_does(run, counted):
    assert landscape.main(["sweep", str(run), "--group", "1"] + SAMPLER) == 0
    state = json.loads((run / "llc.json").read_text())
    expected = member_steps(run)
    assert len(expected) == 2 and all(len(s) == 8 for s in expected.values())
    assert {name: [r["step"] for r in e["llc"]] for name, e in state["members"].items()} == expected
    assert sum(counted) == 16 and state["complete"]

    # one estimate rebuilt by hand: the run's task, fresh batches per SGLD step, L(w*) on a fixed batch
    name, step = sorted(expected)[1], 24
    model, _ = checkpoints.load_model(checkpoints.checkpoint_path(run, name, step))
    task = landscape.task_of(json.loads((run / f"{name}.json").read_text())["config"], "cpu")

    def batch(stream, step_, size):
        b = task.sample(torch.tensor([42]), step_, size, stream)
        return b.tokens[0], b.y[0]

    def loss(m, b):
        return per_position_loss(task.predictions(m(b[0])), b[1], "mse").mean()
    with torch.no_grad():
        init = float(loss(model, batch(landscape.STREAM_INIT_LOSS, 0, 64)))
    direct = estimate_llc(model, loss, lambda t: batch(landscape.STREAM_SGLD, t, 16), epsilon=1e-4, nbeta=10,
                          gamma=100, num_chains=2, num_draws=3, num_burnin=2, seed=42, init_loss=init)
    record = next(r for r in state["members"][name]["llc"] if r["step"] == step)
    assert record["init_loss"] == pytest.approx(init, rel=1e-6)
    assert record["llc_per_chain"] == pytest.approx(direct.llc_per_chain.tolist(), rel=1e-4, abs=1e-5)
    assert record["llc_mean"] == pytest.approx(direct.llc_mean, rel=1e-4, abs=1e-5)
    assert record["diverged"] == [False, False]

    # essential dynamics: one PC row per checkpoint at step > 0
    ed = state["members"][name]["essential_dynamics"]
    assert ed["steps"] == [s for s in expected[name] if s > 0] and len(ed["pcs"]) == 7


def test_a_rerun_recomputes_nothing_and_fills_only_gaps(run, counted):
    assert landscape.main(["sweep", str(run)] + SAMPLER) == 0
    first = json.loads((run / "llc.json").read_text())
    assert sum(counted) == 16
    assert landscape.main(["sweep", str(run)] + SAMPLER) == 0
    assert sum(counted) == 16, "a complete sweep was recomputed"
    assert json.loads((run / "llc.json").read_text())["members"] == first["members"]
    # drop one estimate: only that one is redone
    name = sorted(first["members"])[0]
    first["members"][name]["llc"] = [r for r in first["members"][name]["llc"] if r["step"] != 69]
    (run / "llc.json").write_text(json.dumps(first))
    assert landscape.main(["sweep", str(run)] + SAMPLER) == 0
    assert counted[8:] == [1]
    # other sampler settings are refused, not mixed in
    with pytest.raises(SystemExit, match="sampler"):
        landscape.main(["sweep", str(run)] + SAMPLER + ["--draws", "4"])


def test_limit_stops_between_groups_and_the_rerun_finishes(run, counted, monkeypatch):
    now = [0.0]
    monkeypatch.setattr(landscape, "clock", lambda: now[0])
    real = landscape.estimate_llcs

    def slow(*args, **kwargs):  # every group takes 6 simulated seconds
        now[0] += 6.0
        return real(*args, **kwargs)
    monkeypatch.setattr(landscape, "estimate_llcs", slow)
    # group 1 ends at 6 s; group 2 would end at 12 s > 10 s: stop after one group of 4
    assert landscape.main(["sweep", str(run), "--group", "4", "--limit", "10"] + SAMPLER) == 0
    state = json.loads((run / "llc.json").read_text())
    done = {name: [r["step"] for r in e["llc"]] for name, e in state["members"].items()}
    assert sum(map(len, done.values())) == 4 and not state["complete"]
    # coarse to fine: both members' first and last checkpoints come first
    assert all(steps == [0, STEPS] for steps in done.values())
    assert counted == [4]
    # the figures draw the partial sweep and say that it is one
    out = run / "figures"
    assert landscape.main(["figures", str(run), "--labels", "a", "--out", str(out)]) == 0
    assert "\n| a (sweep incomplete: marked checkpoints only) |" in (out / "stages.md").read_text()
    assert landscape.main(["sweep", str(run), "--group", "4"] + SAMPLER) == 0
    state = json.loads((run / "llc.json").read_text())
    assert counted == [4, 4, 4, 4] and state["complete"]
    assert {n: [r["step"] for r in e["llc"]] for n, e in state["members"].items()} == member_steps(run)


def test_max_checkpoints_spreads_in_log_step_and_the_order_visits_each_once():
    steps = [0, 1, 3, 8, 24, 69, 100, 200]
    # log1p: 0, .69, 1.39, 2.20, 3.22, 4.25, 4.62, 5.30; targets 0, 1.77, 3.53, 5.30
    assert landscape.select_steps(steps, 4, 1) == [0, 3, 24, 200]
    assert landscape.select_steps(steps, None, 2) == [0, 3, 24, 100]
    for n in (1, 2, 5, 8, 13):
        order = landscape.coarse_to_fine(n)
        assert sorted(order) == list(range(n)) and order[:2] == [0, n - 1][:n]


def test_cumulative_lr_is_the_sum_of_torchs_onecycle_lrs(trained):
    config = json.loads(next(trained.glob("*seed0.json")).read_text())["config"]
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=config["lr"])
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=config["lr"], total_steps=STEPS, pct_start=0.5, anneal_strategy="linear",
        cycle_momentum=False, div_factor=STEPS / 2 - 1, final_div_factor=STEPS / 2 - 1)
    lrs = []
    for _ in range(STEPS):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    steps = [0, 1, 3, 50, 99, 100, 150, 200]
    expected = [sum(lrs[:s]) for s in steps]
    np.testing.assert_allclose(landscape.cumulative_lr(config, steps), expected, rtol=1e-9, atol=1e-15)


def test_figures_plot_the_json(run, tmp_path):
    assert landscape.main(["sweep", str(run)] + SAMPLER) == 0
    other = tmp_path / "other"
    shutil.copytree(run, other)
    out = tmp_path / "figures"
    assert landscape.main(["figures", str(run), str(other), "--labels", "a", "b", "--out", str(out)]) == 0
    for name in ("a_llc", "a_stage_losses", "a_essential_dynamics", "b_llc", "compare_llc"):
        image = matplotlib.image.imread(out / f"{name}.png")
        assert image.ndim == 3 and image[..., :3].std() > 0.01, f"{name}.png is blank"
    assert (out / "stages.md").read_text().count("\n| a |") == 1

    state = json.loads((run / "llc.json").read_text())
    fig = landscape.figure_llc(state, None, "a")
    lines = {line.get_label(): line for line in fig.axes[0].lines}
    per_member = {}
    for name, entry in state["members"].items():
        kept = [(r["step"], r["llc_mean"]) for r in entry["llc"]]  # step 0 too: the x axis is symlog
        per_member[entry["config"]["seed"]] = kept
        line = lines[f"seed {entry['config']['seed']}"]
        np.testing.assert_array_equal(line.get_xdata(), [s for s, _ in kept])
        np.testing.assert_array_equal(line.get_ydata(), [v for _, v in kept])
    np.testing.assert_allclose(lines["mean over members"].get_ydata(),
                               [(a[1] + b[1]) / 2 for a, b in zip(per_member[0], per_member[1])])

    fig = landscape.figure_compare({"a": state})
    by_lr = fig.axes[1].lines[0]
    steps = [s for s, _ in per_member[0] if s > 0]
    np.testing.assert_allclose(by_lr.get_xdata(), landscape.cumulative_lr(
        next(iter(state["members"].values()))["config"], steps))


def test_a_stretch_resampled_with_another_step_size_goes_to_a_file_of_its_own(run, tmp_path):
    """--steps FIRST LAST keeps that range of checkpoints; --llc-file writes (and the figures read) a
    file of another name, so estimates with another epsilon never mix with llc.json's."""
    assert landscape.main(["sweep", str(run)] + SAMPLER) == 0
    before = (run / "llc.json").read_text()
    steps = member_steps(run)
    first, last = sorted({s for v in steps.values() for s in v})[1:3]
    args = ["sweep", str(run), "--steps", str(first), str(last), "--llc-file", "llc_eps3e-4.json"] + SAMPLER + [
        "--epsilon", "3e-4"]  # after SAMPLER's own epsilon: the last one counts
    assert landscape.main(args) == 0
    assert (run / "llc.json").read_text() == before
    state = json.loads((run / "llc_eps3e-4.json").read_text())
    assert state["sampler"]["epsilon"] == 3e-4
    for name, entry in state["members"].items():
        assert sorted(r["step"] for r in entry["llc"]) == [s for s in steps[name] if first <= s <= last]
    out = tmp_path / "figures"
    assert landscape.main(["figures", str(run), "--llc-file", "llc_eps3e-4.json", "--out", str(out)]) == 0
    assert (out / "stages.md").exists()
    with pytest.raises(SystemExit, match="llc_other.json is missing"):
        landscape.main(["figures", str(run), "--llc-file", "llc_other.json", "--out", str(out)])


def test_pooling_recomputes_the_stages_rather_than_reading_them(run):
    """The stages stored in llc.json are those of the rule at sweep time; pool_states (behind the
    figures) recomputes them from the estimates, for one folder as for several."""
    assert landscape.main(["sweep", str(run)] + SAMPLER) == 0
    state = json.loads((run / "llc.json").read_text())
    for entry in state["members"].values():
        entry["llc_stages"] = [{"step": 1.0, "kind": "stale"}]
    (run / "llc.json").write_text(json.dumps(state))
    pooled = landscape.pool_states([run])
    for entry in pooled["members"].values():
        assert entry["llc_stages"] == landscape.llc_turning_points(entry["llc"])
        assert all(p["kind"] != "stale" for p in entry["llc_stages"])


def test_cluster_boundaries_pools_members_within_a_factor_of_two():
    members = [[{"step": 1000, "kind": "plateau"}, {"step": 40000, "kind": "peak"}],
               [{"step": 1500, "kind": "plateau"}, {"step": 30000, "kind": "peak"}, {"step": 300000, "kind": "trough"}],
               [{"step": 44000, "kind": "peak"}]]
    clusters = landscape.cluster_boundaries(members)
    assert [(c["median_step"], c["min_step"], c["max_step"], c["members"]) for c in clusters] == [
        (1250, 1000, 1500, 2), (40000, 30000, 44000, 3), (300000, 300000, 300000, 1)]


@pytest.mark.skipif(not landscape.PUBLISHED_CSV.exists(), reason="the shared reference CSV is not here")
def test_published_trajectory_loads_five_seeds():
    published = landscape.load_published()
    assert sorted(published) == [0, 1, 2, 3, 4]
    for seed in published.values():
        assert len(seed["step"]) == 190 and seed["step"][0] == 0 and seed["step"][-1] >= 499_000
        # the report's numbers: a peak of about 170 at 35-46k steps
        assert 165 < seed["llc_mean"].max() < 176 and 30_000 < seed["step"][seed["llc_mean"].argmax()] < 50_000


def test_backend_bench_takes_each_members_checkpoint_nearest_a_step(run):
    """experiments/llc_backend_bench.py --folder F --step S: each member's checkpoint nearest S (a trained
    one), where the default spread in log step starts at the initialisation."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "experiments" / "llc_backend_bench.py"
    spec = importlib.util.spec_from_file_location("llc_backend_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    members = landscape.find_members(run)
    _, states, _, items = bench.folder_checkpoints(run, len(members), torch.device("cpu"), step=10 ** 9)
    assert items == [(m.run_name, max(m.steps)) for m in members]
    for (name, step), state in zip(items, states):
        expected = checkpoints.load(checkpoints.checkpoint_path(run, name, step))["model"]
        assert all(torch.equal(state[k], expected[k]) for k in expected)
    _, _, _, spread = bench.folder_checkpoints(run, 1, torch.device("cpu"))
    assert spread == [(members[0].run_name, min(members[0].steps))]


def test_first_crossing_interpolates_in_log_step_and_skips_init_and_diverged():
    records = [{"step": 0, "llc_mean": 500.0}, {"step": 10, "llc_mean": 50.0}, {"step": 50, "llc_mean": None},
               {"step": 1000, "llc_mean": 150.0}]
    step, lower, upper = landscape.first_crossing(records, 100)
    assert (lower, upper) == (10, 1000) and step == pytest.approx(100.0)  # halfway in ln(step)
    assert landscape.first_crossing(records, 200) is None
    assert landscape.first_crossing(records[1:], 40) is None  # above the level from the first estimate
