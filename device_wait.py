"""Waiting for the device without trusting it: every host wait of the training loop and the
eval polls a CUDA event, so signal handlers run meanwhile and a hung device raises DeviceHung
(main exits 4, the run resumable) instead of blocking the process, and the grid behind it,
for ever. On CPU nothing is waited for."""
from __future__ import annotations

import time

import torch

# A value the host waits for is at most one optimizer step of device work away (well under a
# second at the default size, seconds at the largest): a wait this long means a hung device.
DEVICE_WAIT_LIMIT_S = 300
# After SIGINT/SIGTERM a wait gives up sooner, so that a stopped run exits while its caller waits.
DEVICE_WAIT_AFTER_STOP_S = 30


class DeviceHung(RuntimeError):
    """The device did not produce a value within DEVICE_WAIT_LIMIT_S."""


def wait_for_event(event, stop_signal: list = ()) -> None:
    """Wait until a CUDA event has completed, polling it rather than waiting in C: signal
    handlers run meanwhile, and a hung device (a run on an H100 once stalled past SIGTERM,
    docs/performance.md) raises DeviceHung instead of blocking the process, and the grid
    behind it, for ever. Every wait of the training loop and the eval goes through here."""
    started, stop_seen = time.monotonic(), None
    while not event.query():
        now = time.monotonic()
        stop_seen = stop_seen or (now if stop_signal else None)
        if now - started > DEVICE_WAIT_LIMIT_S or (stop_seen and now - stop_seen > DEVICE_WAIT_AFTER_STOP_S):
            raise DeviceHung(f"no result from the device after {now - started:.0f} s")
        time.sleep(1e-4)


def sync(device: str, stop_signal: list = ()) -> None:
    """Wait for the device's queued work (timing spans end here), as wait_for_event does."""
    if device == "cuda":
        event = torch.cuda.Event()
        event.record()
        wait_for_event(event, stop_signal)


class DeviceScalar:
    """A 0-d tensor's value, read on the host without draining the device's queue: .item()
    waits for all queued work, this copies into pinned memory behind an event, so get()
    waits only until the value itself is computed (for the training loss, a step ago)."""

    def __init__(self, value: torch.Tensor):
        value, self.event = value.detach(), None
        if value.is_cuda:
            self.host = torch.empty((), dtype=value.dtype, pin_memory=True)
            self.host.copy_(value, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.host = value

    def get(self, stop_signal: list = ()) -> float:
        if self.event is not None:
            wait_for_event(self.event, stop_signal)
        return self.host.item()

