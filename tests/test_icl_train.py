"""icl.ensemble and icl.train: the stacked Adam against torch's AdamW, an ensemble member against
a single run, learning, checkpoints, resume and the run logs."""
import json
from dataclasses import replace

import pytest
import torch

import runlog
from icl import checkpoints
from icl.cli import main, parse_args, resolve
from icl.ensemble import Ensemble, Member, Optim
from icl.model import ModelConfig, build_member, make_parametrization
from icl.schedules import step_grid
from icl.tasks import STREAM_TRAIN, GargTask, per_position_loss
from icl.train import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


TASK = GargTask(dim=2, points=4)
CONFIG = ModelConfig(token_dim=3, seq_len=8, width=16, depth=1, heads=2)
TINY = ["--dim", "2", "--points", "4", "--width", "16", "--depth", "1", "--heads", "2", "--batch", "16",
        "--eval-batch", "64", "--quiet"]


def test_stacked_adam_equals_torch_adamw_on_the_module():
    """µP at twice the base width (per-parameter lrs and decay), weight decay, clipping off:
    the ensemble's update of one member equals torch.optim.AdamW on the nn.Module."""
    config = replace(CONFIG, width=32)
    optim = Optim(steps=6, batch=8, weight_decay=0.1, decay="constant")
    lr = 3e-3
    ens = Ensemble(TASK, config, [Member(seed=5, lr=lr, warmup=0)], optim, param="mup", base_width=16)
    p = make_parametrization(config, param="mup", base_width=16, lr=lr)
    model = build_member(config, p, 5)
    groups = p.param_groups(model, weight_decay=0.1)
    for group in groups:
        group["betas"] = optim.betas  # mup_patch's groups carry its default betas; the ensemble's are timaeus'
    adamw = torch.optim.AdamW(groups, eps=optim.eps)
    for step in range(optim.steps):
        batch = TASK.sample(torch.tensor([5]), step, optim.batch, STREAM_TRAIN)
        loss = per_position_loss(TASK.predictions(model(batch.tokens[0])), batch.y[0], "mse").mean()
        adamw.zero_grad()
        loss.backward()
        adamw.step()
        ens.step()
    for name, value in model.named_parameters():
        torch.testing.assert_close(ens.member_state(0)[name], value.detach(), atol=1e-6, rtol=1e-5, msg=name)
    assert (ens.member_state(0)["blocks.0.fc.weight"] - build_member(config, p, 5).blocks[0].fc.weight).abs().max() > 1e-3


def test_ensemble_member_equals_single_run():
    optim = Optim(steps=12, batch=8, grad_clip=1.0, decay="cosine")
    members = [Member(seed=0, lr=1e-3, warmup=3), Member(seed=1, lr=1e-2, warmup=0), Member(seed=2, lr=3e-3, warmup=6)]
    ens = Ensemble(TASK, CONFIG, members, optim, param="sp", base_width=16)
    ens.run(optim.steps)
    for e, member in enumerate(members):
        single = Ensemble(TASK, CONFIG, [member], optim, param="sp", base_width=16)
        single.run(optim.steps)
        torch.testing.assert_close(ens.flat[e], single.flat[0], atol=1e-6, rtol=1e-5)
    assert not torch.allclose(ens.flat[0], ens.flat[1])


@pytest.mark.slow
def test_a_diverged_member_is_recorded_and_leaves_the_others_alone():
    optim = Optim(steps=6, batch=8, decay="constant")
    members = [Member(seed=0, lr=1e-2, warmup=0), Member(seed=1, lr=1e-2, warmup=0)]
    ens = Ensemble(TASK, CONFIG, members, optim, param="sp", base_width=16)
    ens.run(3)
    with torch.no_grad():
        ens.weights[1, 0] = float("nan")  # member 1's embedding goes bad before step 3
    ens.run(3)
    assert ens.diverged_at.tolist() == [-1, 3]
    assert ens.loss_count.tolist() == [6, 3]  # the train loss averages finite steps only
    single = Ensemble(TASK, CONFIG, members[:1], optim, param="sp", base_width=16)
    single.run(6)
    torch.testing.assert_close(ens.flat[0], single.flat[0], atol=1e-6, rtol=1e-5)


@pytest.mark.slow
def test_short_cpu_run_beats_the_zero_predictor(tmp_path):
    """D = 1, K = 8: 300 steps learn to use the context; the zero predictor's MSE is 1 + 0.125."""
    code = main(["--dim", "1", "--points", "8", "--width", "32", "--depth", "1", "--heads", "2", "--batch", "64",
                 "--steps", "300", "--schedule", "cosine", "--warmup-frac", "0.1", "--lr", "1e-2",
                 "--eval-batch", "512", "--eval-log", "0", "--eval-lin", "2", "--ckpt-log", "0", "--ckpt-lin", "0",
                 "--quiet", "--out", str(tmp_path)])
    assert code == 0
    (log,) = runlog.load_run_logs([tmp_path]).values()
    final = log["curve"][-1]["eval"]["valid"]
    zero, ridge = final["baselines"]["zero"], final["baselines"]["ridge"]
    assert log["status"] == "completed" and abs(sum(zero) / len(zero) - 1.125) < 0.15
    # late positions: well below zero, still above the Bayes-optimal ridge
    for k in (5, 6, 7):
        assert ridge[k] < final["per_position"][k] < 0.8 * zero[k]


def test_checkpoint_grid_and_load_model(tmp_path):
    args = parse_args(TINY + ["--steps", "40", "--lr", "1e-2", "--seeds", "0", "1", "--ckpt-log", "4",
                              "--ckpt-lin", "3", "--eval-log", "3", "--eval-lin", "2", "--out", str(tmp_path)])
    trainer = Trainer(args, *resolve(args))
    assert trainer.train() == 0
    expected = step_grid(40, 4, 3)
    assert expected == [0, 1, 3, 12, 20, 40]
    for e, name in enumerate(trainer.names):
        assert checkpoints.checkpoint_steps(tmp_path, name) == expected
        model, ckpt = checkpoints.load_model(checkpoints.checkpoint_path(tmp_path, name, 40))
        assert ckpt["step"] == 40 and ckpt["member"]["seed"] == e and ckpt["diverged_at"] == -1
        batch = trainer.eval_sets["valid"]["batch"]
        with torch.no_grad():
            err = trainer.task.predictions(model(batch.tokens[0])) - batch.y[0]
        logged = json.loads((tmp_path / f"{name}.json").read_text())["curve"][-1]["eval"]["valid"]["per_position"]
        torch.testing.assert_close(err.square().mean(0), torch.tensor(logged), atol=1e-5, rtol=1e-5)
        first, _ = checkpoints.load_model(checkpoints.checkpoint_path(tmp_path, name, 0))
        assert not torch.equal(first.readout.weight, model.readout.weight)


def test_resume_gives_the_uninterrupted_result(tmp_path):
    argv = TINY + ["--steps", "30", "--lr", "3e-3", "1e-2", "--seeds", "0", "--ckpt-log", "0", "--ckpt-lin", "4",
                   "--eval-log", "0", "--eval-lin", "4"]
    whole = parse_args(argv + ["--out", str(tmp_path / "whole")])
    uninterrupted = Trainer(whole, *resolve(whole))
    assert uninterrupted.train() == 0

    split = parse_args(argv + ["--out", str(tmp_path / "split")])
    first = Trainer(split, *resolve(split))
    assert first.train(stop_at=17) == runlog.EXIT_SIGINT  # as if interrupted at step 17
    assert json.loads((tmp_path / "split" / f"{first.names[0]}.json").read_text())["status"] == "interrupted"
    resumed_args = parse_args(argv + ["--out", str(tmp_path / "split"), "--resume"])
    resumed = Trainer(resumed_args, *resolve(resumed_args))
    assert resumed.train() == 0
    assert torch.equal(resumed.ensemble.flat, uninterrupted.ensemble.flat)
    for name in uninterrupted.names:
        a = runlog.load_run_log(tmp_path / "whole" / f"{name}.json")
        b = runlog.load_run_log(tmp_path / "split" / f"{name}.json")
        assert b["status"] == "completed" and [e["kind"] for e in b["events"]] == ["signal", "resumed"]
        assert [p["step"] for p in a["curve"]] == [p["step"] for p in b["curve"]] == [0, 10, 20, 30]
        for key in ("eval", "train_loss", "lr"):
            assert [p[key] for p in a["curve"]] == [p[key] for p in b["curve"]], key


def test_run_logs_are_readable_by_plots(tmp_path):
    plots = pytest.importorskip("plots.analysis")
    assert main(TINY + ["--steps", "5", "--lr", "1e-3", "--seeds", "3", "--param", "mup", "--base-width", "8",
                        "--ckpt-log", "0", "--ckpt-lin", "0", "--out", str(tmp_path)]) == 0
    (run,) = plots.load_run_logs([tmp_path])
    assert (run.param, run.width, run.lr, run.seed, run.status) == ("mup", 16, 1e-3, 3, "completed")
    assert run.name == "icl-garg-mup-w16-d1-s5-lr0.001-wu1-seed3"
    assert run.final_loss("valid") == run.curve[-1]["eval"]["valid"]["loss"]


def test_bad_flags_exit_2(tmp_path, capsys):
    assert main(TINY + ["--steps", "10", "--width", "15", "--out", str(tmp_path)]) == runlog.EXIT_BAD_INPUT
    assert "not a multiple of heads" in capsys.readouterr().err
    assert main(["--task", "affine", "--noise-var", "0.5", "--out", str(tmp_path)]) == runlog.EXIT_BAD_INPUT


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_equals_eager_on_gpu():
    optim = Optim(steps=20, batch=32, decay="cosine")
    members = [Member(seed=s, lr=lr, warmup=5) for s in (0, 1) for lr in (1e-3, 1e-2)]
    eager = Ensemble(TASK, CONFIG, members, optim, param="mup", base_width=8, device="cuda")
    graphed = Ensemble(TASK, CONFIG, members, optim, param="mup", base_width=8, device="cuda")
    graphed.capture()
    assert torch.equal(graphed.flat, eager.flat) and graphed.step_count.item() == 0  # capture undid its warmup
    eager.run(20)
    graphed.run(20)
    torch.testing.assert_close(graphed.flat, eager.flat, atol=1e-6, rtol=1e-5)
    assert graphed.step_count.item() == 20
    cpu = Ensemble(TASK, CONFIG, members, optim, param="mup", base_width=8)
    cpu.run(20)
    torch.testing.assert_close(graphed.flat.cpu(), cpu.flat, atol=1e-4, rtol=1e-3)  # same data on both devices
    compiled = Ensemble(TASK, CONFIG, members, optim, param="mup", base_width=8, compile=True, device="cuda")
    compiled.capture()
    compiled.run(20)
    torch.testing.assert_close(compiled.flat, eager.flat, atol=1e-5, rtol=1e-4)
