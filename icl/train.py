"""The training loop: an Ensemble, its evals against the baselines, run logs and checkpoints.

One run log per member (`<out>/<run_name>.json`, runlog's schema; `tokens` counts
step x batch x T). Every curve point's eval holds, per eval set, the mean loss over positions,
the loss at each context position and the baselines' per-position losses on the same batch:

    "eval": {"valid": {"loss", "per_position": [K], "last_position",
                       "baselines": {"zero": [K], "least_squares": [K], "ridge": [K], "dmmse": [K]}},
             "true": {...}}      # garg with finite M: the same on Gaussian tasks

"valid" is a fixed batch from the training distribution (`--eval-seed`, shared by all members);
"true" exists for finite M only. Evals and checkpoints fall on log + linear step grids
(schedules.step_grid); between them the device runs with no host sync.
"""
from __future__ import annotations

import math
import platform
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

import runlog
from icl import baselines, checkpoints, schedules
from icl.ensemble import Ensemble, Member, Optim
from icl.model import ModelConfig
from icl.tasks import STREAM_EVAL, make_task, per_position_loss

REPO = Path(__file__).resolve().parent.parent
EVAL_ELEMENTS = 1 << 26  # members x sequences x T x width per eval chunk: bounds eval memory
SYNC_EVERY = 1000  # steps between checks for a stop signal when no eval or checkpoint falls sooner


def run_name(args, member: Member) -> str:
    return (f"icl-{args.task}-{args.param}-w{args.width}-d{args.depth}-s{args.steps}"
            f"-lr{member.lr:.3g}-wu{member.warmup}-seed{member.seed}")


def clean(value: float) -> float | None:
    """JSON has no NaN or infinity: those become null."""
    return value if math.isfinite(value) else None


class Trainer:
    def __init__(self, args, members: list[Member], optim: Optim):
        self.args = args
        self.device = torch.device(args.device)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = args.tf32
        self.task = make_task(args.task, dim=args.dim, points=args.points, noise_var=args.noise_var,
                              num_tasks=args.num_tasks, task_seed=args.task_seed, device=self.device)
        self.config = ModelConfig(token_dim=self.task.token_dim, seq_len=self.task.seq_len, width=args.width,
                                  depth=args.depth, heads=args.heads, mlp_ratio=args.mlp_ratio,
                                  activation=args.activation)
        self.ensemble = Ensemble(self.task, self.config, members, optim, param=args.param,
                                 base_width=args.base_width, attn_mult=args.attn_mult,
                                 readout_zero_init=args.readout_zero_init,
                                 query_zero_init=args.query_zero_init, compile=args.compile, device=self.device)
        self.members, self.optim = members, optim
        self.names = [run_name(args, m) for m in members]
        assert len(set(self.names)) == len(self.names), (
            f"two members share a run name (repeated --lr, --seeds or warmups?): {self.names}")
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.eval_sets = self.make_eval_sets()
        self.eval_steps = set(schedules.step_grid(optim.steps, args.eval_log, args.eval_lin)) | {optim.steps}
        self.ckpt_steps = set(schedules.step_grid(optim.steps, args.ckpt_log, args.ckpt_lin)) \
            if args.ckpt_log or args.ckpt_lin else set()
        self.tokens_per_step = optim.batch * self.task.seq_len
        self.train_seconds = 0.0
        self.stop_requested: int | None = None  # the signal that asked the run to stop
        self.writers = [runlog.RunLogWriter(self.out / f"{name}.json", self.new_log(name, m),
                                            wandb_project=args.wandb) for name, m in zip(self.names, members)]

    # -- setup ---------------------------------------------------------------------------
    def make_eval_sets(self) -> dict[str, dict]:
        """{set name: {"batch", "baselines": {name: [K] per-position loss}}}, fixed for the run."""
        seed = torch.tensor([self.args.eval_seed], device=self.device)
        batches = {"valid": self.task.sample(seed, 0, self.args.eval_batch, STREAM_EVAL)}
        if self.task.num_tasks is not None:
            batches["true"] = self.task.sample(seed, 1, self.args.eval_batch, STREAM_EVAL, gaussian_tasks=True)
        sets = {}
        for name, batch in batches.items():
            preds = baselines.baseline_predictions(self.task, batch.x[0].cpu(), batch.y[0].cpu())
            y = batch.y[0].cpu().double()
            sets[name] = {"batch": batch, "baselines": {
                k: [clean(v) for v in per_position_loss(p, y, self.task.loss).tolist()] for k, p in preds.items()}}
        return sets

    def member_config(self, member: Member) -> dict:
        config = {k: v for k, v in vars(self.args).items() if k not in ("lr", "seeds", "warmup_steps", "warmup_frac")}
        config.update(lr=member.lr, seed=member.seed, warmup_steps=member.warmup,
                      warmup_tokens=member.warmup * self.tokens_per_step, out=str(config["out"]),
                      ensemble_size=self.ensemble.size, model=asdict(self.config),
                      parameters=sum(self.ensemble.sizes), optim=asdict(self.optim))
        return config

    def new_log(self, name: str, member: Member) -> dict:
        env = {"torch": torch.__version__, "python": platform.python_version(), "host": platform.node(),
               "device": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu",
               "git_commit": runlog.git_commit(REPO), "start_time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "cuda_graph": self.use_graph, "ensemble": self.names}
        return runlog.new_run_log(run_name=name, command=[sys.executable] + sys.argv,
                                  config=self.member_config(member), env=env, eval_sets=list(self.eval_sets))

    @property
    def use_graph(self) -> bool:
        return self.device.type == "cuda" and self.args.cuda_graph

    # -- evals, checkpoints, resume --------------------------------------------------------
    def record_eval(self, step: int) -> None:
        ens = self.ensemble
        train_loss = ens.read_train_loss()
        lrs = ens.lr_now().tolist()
        evals = [{} for _ in self.members]
        for set_name, eval_set in self.eval_sets.items():
            chunk = max(1, EVAL_ELEMENTS // (ens.size * self.task.seq_len * self.config.width))
            per_position = ens.evaluate(eval_set["batch"], chunk).tolist()
            for e, losses in enumerate(per_position):
                losses = [clean(v) for v in losses]
                finite = all(v is not None for v in losses)
                evals[e][set_name] = {"loss": sum(losses) / len(losses) if finite else None,
                                      "per_position": losses, "last_position": losses[-1],
                                      "baselines": eval_set["baselines"]}
        for e, writer in enumerate(self.writers):
            writer.add_point({"tokens": step * self.tokens_per_step, "step": step,
                              "train_seconds": round(self.train_seconds, 3), "lr": {"base": lrs[e]},
                              "batch_size": self.optim.batch, "grad_norm": None,
                              "eval": evals[e], "train_loss": train_loss[e]})
            writer.save()

    def save_checkpoints(self, step: int) -> None:
        ens = self.ensemble
        diverged, loss_sum, loss_count = ens.diverged_at.tolist(), ens.loss_sum.tolist(), ens.loss_count.tolist()
        m, v = ens.params(ens.m), ens.params(ens.v)
        for e, (name, member) in enumerate(zip(self.names, self.members)):
            state = checkpoints.member_state(
                model=ens.member_state(e), adam_m={k: t[e].cpu().clone() for k, t in m.items()},
                adam_v={k: t[e].cpu().clone() for k, t in v.items()}, step=step, diverged_at=diverged[e],
                train_loss_sum=(loss_sum[e], loss_count[e]), train_seconds=self.train_seconds, config=self.config, param=self.args.param,
                base_width=self.args.base_width, attn_mult=self.args.attn_mult, member=asdict(member),
                run_name=name)
            checkpoints.save(checkpoints.checkpoint_path(self.out, name, step), state)

    def resume(self) -> int:
        """Load every member's latest common checkpoint and its run log; returns the step (0: fresh start)."""
        common = set.intersection(*(set(checkpoints.checkpoint_steps(self.out, n)) for n in self.names))
        if not common:
            print(f"icl: --resume found no checkpoint common to all {len(self.names)} members in {self.out}; "
                  f"starting from step 0", file=sys.stderr)
            return 0
        step = max(common)
        states = [checkpoints.load(checkpoints.checkpoint_path(self.out, n, step)) for n in self.names]
        ens = self.ensemble

        def stacked(get):
            return torch.stack([torch.cat([get(s)[k].reshape(-1) for k in ens.names]) for s in states]).to(self.device)

        with torch.no_grad():
            ens.flat.copy_(stacked(lambda s: s["model"]))
            ens.m.copy_(stacked(lambda s: s["adam"]["m"]))
            ens.v.copy_(stacked(lambda s: s["adam"]["v"]))
            ens.step_count.fill_(step)
            ens.diverged_at.copy_(torch.tensor([s["diverged_at"] for s in states], device=self.device))
            ens.loss_sum.copy_(torch.tensor([s["train_loss_sum"][0] for s in states], device=self.device))
            ens.loss_count.copy_(torch.tensor([s["train_loss_sum"][1] for s in states], device=self.device))
        self.train_seconds = states[0]["train_seconds"]
        for writer in self.writers:
            old = runlog.read_json(writer.path)
            if old is not None:
                old["curve"] = [p for p in old["curve"] if p["step"] <= step]
                old["status"] = runlog.RUNNING
                writer.log = old
            writer.add_event(tokens=step * self.tokens_per_step, step=step, kind="resumed",
                             detail=f"from {checkpoints.checkpoint_path(self.out, writer.log['run_name'], step).name}")
        return step

    # -- the loop --------------------------------------------------------------------------
    def train(self, stop_at: int | None = None) -> int:
        """Train to the end (or to stop_at, as if a signal came then); returns the exit code."""
        ens, total = self.ensemble, self.optim.steps
        step = self.resume() if self.args.resume else 0
        if self.use_graph:
            ens.capture()
        if not self.writers[0].log["curve"]:  # a fresh start (a resumed log has its points)
            self.record_eval(step)
        events = sorted(s for s in self.eval_steps | self.ckpt_steps if s > step)
        if step == 0 and 0 in self.ckpt_steps:
            self.save_checkpoints(0)
        previous = {signal.SIGINT: signal.getsignal(signal.SIGINT), signal.SIGTERM: signal.getsignal(signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, lambda number, frame: setattr(self, "stop_requested", number))
        try:
            while step < total and self.stop_requested is None:
                target = min([s for s in events if s > step][:1] + [step + SYNC_EVERY, total])
                if stop_at is not None and step < stop_at <= target:
                    target, self.stop_requested = stop_at, signal.SIGINT
                start = time.perf_counter()
                ens.run(target - step)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                self.train_seconds += time.perf_counter() - start
                step = target
                if step in self.eval_steps:
                    self.record_eval(step)
                if step in self.ckpt_steps or (self.stop_requested is not None and step < total):
                    self.save_checkpoints(step)
                if not self.args.quiet:
                    print(f"step {step}/{total}  {step / max(self.train_seconds, 1e-9):.0f} steps/s", flush=True)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.finish(step)

    def finish(self, step: int) -> int:
        diverged = self.ensemble.diverged_at.tolist()
        interrupted = step < self.optim.steps
        for e, writer in enumerate(self.writers):
            log = writer.log
            if interrupted:
                log["status"] = runlog.INTERRUPTED
                writer.add_event(tokens=step * self.tokens_per_step, step=step, kind="signal",
                                 detail=signal.Signals(self.stop_requested).name)
            else:
                log["status"] = runlog.DIVERGED if diverged[e] >= 0 else runlog.COMPLETED
            final = log["curve"][-1]["eval"] if log["curve"] else None
            log["summary"] = {"tokens": step * self.tokens_per_step, "steps": step,
                              "train_seconds": round(self.train_seconds, 3), "compile_seconds": 0.0,
                              "final_eval": final, "diverged_at": diverged[e] if diverged[e] >= 0 else None}
            writer.save()
            writer.close()
        if interrupted:
            return runlog.EXIT_SIGNAL[self.stop_requested]
        # members are independent: the run completed unless every one of them diverged
        return runlog.EXIT_DIVERGED if all(d >= 0 for d in diverged) else runlog.EXIT_COMPLETED
