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
from typing import Any

import torch
from gpu_profile import SETTINGS, make_step
from timing import timed


def report(result: dict[str, Any], out: str | None) -> None:
    print(json.dumps(result, indent=2))
    if out:
        with open(out, "w") as f:
            json.dump(result, f, indent=2)


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

    # eager: the reference trajectory (5 steps), run twice: how far two eager runs drift apart (cuDNN's
    # nondeterministic kernels, amplified by Adam where a gradient is near zero) is the yardstick for the graph
    eager_runs = []
    for _ in range(2):
        step, params = make_step(args.setting, "auto", args.first_order, device, capturable=True)
        eager_runs.append(([float(step()) for _ in range(5)], [p.detach().clone() for p in params]))
    (eager_losses, eager_params), (again_losses, again_params) = eager_runs
    result["eager_vs_eager_max_loss_difference"] = max(abs(a - b) for a, b in zip(again_losses, eager_losses))
    result["eager_vs_eager_max_parameter_difference"] = max(float((p - q).abs().max())
                                                            for p, q in zip(again_params, eager_params))
    result["eager_meta_iters_per_s"] = args.iters / timed(step, args.iters, device)

    # graphed, from the same start: 3 warm-up steps on a side stream, capture one step, replay
    step, params = make_step(args.setting, "auto", args.first_order, device, capturable=True)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        losses = [float(step()) for _ in range(3)]
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            static_loss = step()
    except Exception as error:  # noqa: BLE001  what stops a capture is the finding
        result["capture_error"] = f"{type(error).__name__}: {error}"[:500]
        report(result, args.out)
        return
    for _ in range(2):  # a capture records the step without running it: steps 4 and 5 are replays
        graph.replay()
        losses.append(float(static_loss))
    result["max_loss_difference"] = max(abs(a - b) for a, b in zip(losses, eager_losses))
    result["max_parameter_difference"] = max(float((p.detach() - q).abs().max()) for p, q in zip(params, eager_params))
    result["graphed_meta_iters_per_s"] = args.iters / timed(graph.replay, args.iters, device)
    result["speed_up"] = result["graphed_meta_iters_per_s"] / result["eager_meta_iters_per_s"]
    report(result, args.out)


if __name__ == "__main__":
    main()
