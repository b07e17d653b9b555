"""icl.schedules against torch's own schedulers, and the checkpoint step grid."""
import math

import torch

from icl.cli import parse_args, resolve
from icl.schedules import lr_multipliers, step_grid


def torch_lrs(scheduler_factory, steps: int) -> list[float]:
    """The lr torch's scheduler gives each of `steps` updates (base lr 1)."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = scheduler_factory(optimizer)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def ours(argv: list[str]) -> list[float]:
    members, optim = resolve(parse_args(argv))
    member = members[0]
    return [lr_multipliers(torch.tensor(t), total=optim.steps, warmup=torch.tensor([float(member.warmup)], dtype=torch.float64),
                           start=torch.tensor([optim.warmup_start], dtype=torch.float64), floor=optim.floor,
                           decay=optim.decay).item() for t in range(optim.steps)]


def test_onecycle_is_timaeus_onecycle_lr():
    N = 1000  # timaeus: OneCycleLR(max_lr=lr, total_steps=N, pct_start=0.5, linear, div = final_div = N/2 - 1)
    expected = torch_lrs(lambda opt: torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=1.0, total_steps=N, pct_start=0.5, anneal_strategy="linear", cycle_momentum=False,
        div_factor=N / 2 - 1, final_div_factor=N / 2 - 1), N)
    got = ours(["--steps", str(N), "--schedule", "onecycle"])
    assert max(abs(a - b) for a, b in zip(got, expected)) < 1e-12
    assert got[0] == 1 / 499 and got[499] == 1.0


def test_cosine_is_luis_mueller_warmup_then_cosine():
    N, W = 1000, 25  # luis-mueller: LambdaLR(min(1, t/W)) for W steps, then CosineAnnealingLR(T_max=N-W)
    expected = torch_lrs(lambda opt: torch.optim.lr_scheduler.SequentialLR(opt, [
        torch.optim.lr_scheduler.LambdaLR(opt, lambda t: min(1.0, t / W)),
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=N - W)], milestones=[W]), N)
    got = ours(["--steps", str(N), "--schedule", "cosine"])  # default warmup 2.5 % = 25 steps
    assert got[:W + 1] == expected[:W + 1]
    # ours reaches 0 at the last step, torch's one step later: the cosines differ by < pi/(N-W)
    assert max(abs(a - b) for a, b in zip(got, expected)) < math.pi / (N - W)
    assert got[-1] == 0.0


def test_per_member_warmups_and_floor():
    steps = torch.tensor(50)
    mult = lr_multipliers(steps, total=101, warmup=torch.tensor([0.0, 100.0, 50.0]),
                          start=torch.zeros(3), floor=0.1, decay="linear")
    # no warmup: halfway down from 1 to the floor; warmup 100: halfway up; warmup 50: at the peak
    torch.testing.assert_close(mult, torch.tensor([0.1 + 0.9 * 0.5, 0.5, 1.0]))


def test_step_grid_is_log_union_linear():
    grid = step_grid(500_000, 100, 11)
    linear = {50_000 * i for i in range(11)}
    assert linear <= set(grid) and {0, 1, 500_000} <= set(grid)
    log_part = set(grid) - linear
    assert len(log_part) <= 100 and grid == sorted(set(grid))
    # log spacing: consecutive log steps (above the integer crowding near 1) have a ratio ~ N^(1/99)
    ratio = 500_000 ** (1 / 99)
    big = sorted(s for s in log_part if s > 1000)
    assert all(abs(b / a - ratio) < 0.01 for a, b in zip(big, big[1:]))
    assert step_grid(10, 0, 0) == [] and step_grid(10, 0, 3) == [0, 5, 10]
