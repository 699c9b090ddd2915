"""Where a MAML step's time goes on a device: the two engines side by side, and the profiler's top operations.

For each setting (5w1s: meta-batch 32, 1 inner step; 20w5s: meta-batch 16, 5 steps) and order (first, second),
times nas-meta's batched query loss + backward + Adam with the task-batched engine and with ``vmap``, alternately in
one process, and reports meta-iterations per second; then profiles the 5w1s second-order step with the default
engine and prints the operations that take the most device time, with host-side time beside it (a step whose
host time exceeds its device time is bound by kernel launches and Python, not by the GPU's arithmetic).

    python benchmarks/gpu_profile.py [--device cuda] [--iters 30] [--out FILE.json] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

import torch
from timing import synchronize, timed

from nas_meta import functional as fn
from nas_meta.architectures import build_network
from nas_meta.config import ArchConfig
from nas_meta.runtime import resolve_device, tune_allocator

SETTINGS = {"5w1s": (5, 1, 1, 32, 1), "20w5s": (20, 5, 5, 16, 5)}  # ways, shots, query, meta-batch, steps


def make_step(setting: str, engine: str, first_order: bool, device: torch.device, meta_batch: int | None = None, *,
              capturable: bool = False) -> tuple[Callable[[], torch.Tensor], list[torch.Tensor]]:
    """A meta-step closure (batched query loss, backward, Adam) over fixed random episodes, and the meta-parameters.

    Its gradients are set to None before each backward, so the step can also be captured in a CUDA graph
    (``capturable``: Adam keeps its step count on the device).
    """
    ways, shots, query, batch, steps = SETTINGS[setting]
    batch = meta_batch or batch
    torch.manual_seed(0)
    net = build_network(ArchConfig(), ways, 28).to(device)
    params = dict(net.named_parameters())
    optimizer = torch.optim.Adam(params.values(), lr=1e-3, capturable=capturable)
    support_x = torch.rand(batch, ways * shots, 1, 28, 28, device=device)
    query_x = torch.rand(batch, ways * query, 1, 28, 28, device=device)
    support_y = torch.arange(ways, device=device).repeat_interleave(shots).expand(batch, -1).contiguous()
    query_y = torch.arange(ways, device=device).repeat_interleave(query).expand(batch, -1).contiguous()
    adapt = fn.InnerLoop(steps, 0.4, first_order)

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        losses, _ = fn.batched_query_loss(net, params, {}, support_x, support_y, query_x, query_y, adapt=adapt,
                                          engine=engine)  # type: ignore[arg-type]
        loss = losses.mean()
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step, list(params.values())


def rate(step: Callable[[], object], iters: int, device: torch.device) -> float:
    return iters / timed(step, iters, device, warmup=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--out", help="write the measurements as JSON here")
    parser.add_argument("--dry-run", action="store_true", help="tiny meta-batches and 1 iteration (CI)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    tune_allocator()
    iters, meta_batch = (1, 2) if args.dry_run else (args.iters, None)
    results: dict[str, Any] = {"device": str(device), "card": torch.cuda.get_device_name(device)
                               if device.type == "cuda" else "cpu", "torch": torch.__version__, "engines": []}
    print("| setting | order | tasks engine (meta-it/s) | vmap (meta-it/s) | tasks / vmap |\n|---|---|---|---|---|")
    for setting in SETTINGS:
        for first_order in (False, True):
            rates: dict[str, float] = {}
            for engine in ("tasks", "vmap"):
                try:
                    rates[engine] = rate(make_step(setting, engine, first_order, device, meta_batch)[0], iters, device)
                except Exception as error:  # noqa: BLE001  a failing engine is a result to report, not a stop
                    print(f"{setting} {engine}: {type(error).__name__}: {error}"[:300], flush=True)
            order = "first" if first_order else "second"
            row = {"setting": setting, "order": order, **rates}
            results["engines"].append(row)
            ratio = f"{rates['tasks'] / rates['vmap']:.2f}x" if len(rates) == 2 else "-"
            print(f"| {setting} | {order} | {rates.get('tasks', float('nan')):.1f} | "
                  f"{rates.get('vmap', float('nan')):.1f} | {ratio} |", flush=True)
    step, _ = make_step("5w1s", "auto", False, device, meta_batch)
    for _ in range(2):  # warm-up, not profiled
        step()
    synchronize(device)
    activities = [torch.profiler.ProfilerActivity.CPU] + (
        [torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else [])
    profiled = 1 if args.dry_run else 5
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(profiled):
            step()
        synchronize(device)
    averages = prof.key_averages()
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = averages.table(sort_by=sort, row_limit=15, max_name_column_width=50)
    print(table)
    host_us = sum(e.self_cpu_time_total for e in averages) / profiled
    device_us = sum(getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0.0))
                    for e in averages) / profiled
    kernels = sum(e.count for e in averages if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA)
    results["profile_5w1s_second_order"] = {"host_ms_per_step": host_us / 1e3, "device_ms_per_step": device_us / 1e3,
                                            "device_events_per_step": kernels / profiled, "table": table}
    print(f"5w1s second order, per step: host {host_us / 1e3:.2f} ms, device {device_us / 1e3:.2f} ms, "
          f"{kernels / profiled:.0f} device events")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
