"""The benchmark scripts' one timing loop: untimed warm-up calls, then timed calls with the device's queued work
waited for, so a GPU's asynchronous kernels are inside the measurement. Needs only torch (the learn2learn peer's
environment imports it too)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step: Callable[[], object], iters: int, device: torch.device, warmup: int = 0) -> float:
    """Seconds that ``iters`` calls of ``step`` take after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        step()
    synchronize(device)
    return time.perf_counter() - start
