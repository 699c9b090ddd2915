"""Does capturing a MAML meta-step in a CUDA graph pay? Eager against graph replay, side by side, on one GPU.

On an H200 the 5w1s second-order step is bound by the host: 612 kernel launches, 5.3 ms of GPU work under
29 ms of Python and autograd (``benchmarks/results/gpu-NVIDIA-H200.md``). A CUDA graph replays the whole step,
Adam update included (``capturable=True``), from one launch. This captures nas-meta's step (the task-batched
engine's forward, inner step, query loss and backward, as the MAML learner runs it) with static episode tensors,
checks that replays move the meta-parameters exactly as eager steps do from the same start, and times both.

    python benchmarks/gpu_graphs.py [--setting 5w1s|20w5s] [--first-order] [--iters 50] [--out FILE.json]

Without CUDA it says so and exits 0 (CI runs it that way, so it cannot rot unnoticed).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import torch

from nas_meta import functional as fn
from nas_meta.architectures import build_network
from nas_meta.config import ArchConfig

SETTINGS = {"5w1s": (5, 1, 1, 32, 1), "20w5s": (20, 5, 5, 16, 5)}  # ways, shots, query, meta-batch, steps


def make(setting: str, first_order: bool, device: torch.device) -> tuple[Callable[[], torch.Tensor], list[Any], Any]:
    """A meta-step closure over static episode tensors, the meta-parameters, and the (capturable) optimizer."""
    ways, shots, query, batch, steps = SETTINGS[setting]
    torch.manual_seed(0)
    net = build_network(ArchConfig(), ways, 28).to(device)
    params = dict(net.named_parameters())
    optimizer = torch.optim.Adam(params.values(), lr=1e-3, capturable=device.type == "cuda")
    g = torch.Generator().manual_seed(1)
    support_x = torch.rand(batch, ways * shots, 1, 28, 28, generator=g).to(device)
    query_x = torch.rand(batch, ways * query, 1, 28, 28, generator=g).to(device)
    support_y = torch.arange(ways).repeat_interleave(shots).expand(batch, -1).contiguous().to(device)
    query_y = torch.arange(ways).repeat_interleave(query).expand(batch, -1).contiguous().to(device)
    adapt = fn.InnerLoop(steps, 0.4, first_order)

    def step() -> torch.Tensor:
        losses, _ = fn.batched_query_loss(net, params, {}, support_x, support_y, query_x, query_y, adapt=adapt)
        loss = losses.mean()
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step, list(params.values()), optimizer


def drop_grads(params: list[Any]) -> None:
    for p in params:
        p.grad = None  # the next backward assigns its gradients instead of adding (and a captured one keeps doing so)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", default="5w1s", choices=sorted(SETTINGS))
    parser.add_argument("--first-order", action="store_true")
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--out")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to capture (skipped)")
        return
    device = torch.device("cuda")
    result: dict[str, Any] = {"card": torch.cuda.get_device_name(device), "setting": args.setting,
                              "first_order": args.first_order}

    # eager: the reference trajectory and its rate
    step, params, _ = make(args.setting, args.first_order, device)
    eager_losses = []
    for _ in range(5):
        drop_grads(params)
        eager_losses.append(float(step()))
    eager_params = [p.detach().clone() for p in params]
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.iters):
        drop_grads(params)
        step()
    torch.cuda.synchronize()
    result["eager_meta_iters_per_s"] = args.iters / (time.perf_counter() - start)

    # graphed: warm up on a side stream (3 steps), capture one step, replay
    step, params, optimizer = make(args.setting, args.first_order, device)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    losses = []
    with torch.cuda.stream(side):
        for _ in range(3):
            drop_grads(params)
            losses.append(float(step()))
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    drop_grads(params)
    try:
        with torch.cuda.graph(graph):
            static_loss = step()
    except Exception as error:  # noqa: BLE001  what stops a capture is the finding
        result["capture_error"] = f"{type(error).__name__}: {error}"[:500]
        print(json.dumps(result, indent=2))
        if args.out:
            with open(args.out, "w") as f:
                json.dump(result, f, indent=2)
        return
    for _ in range(2):  # a capture records the step without running it: steps 4 and 5 are replays
        graph.replay()
        losses.append(float(static_loss))
    result["max_loss_difference"] = max(abs(a - b) for a, b in zip(losses, eager_losses))
    result["max_parameter_difference"] = max(float((p - q).abs().max()) for p, q in zip(params, eager_params))
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.iters):
        graph.replay()
    torch.cuda.synchronize()
    result["graphed_meta_iters_per_s"] = args.iters / (time.perf_counter() - start)
    result["speed_up"] = result["graphed_meta_iters_per_s"] / result["eager_meta_iters_per_s"]
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
