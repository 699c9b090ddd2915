"""Time the parts of nas-meta's MAML step (default network, 5-way 1-shot, 1 query per class, meta-batch 32).

    python benchmarks/step_parts.py [PART ...]      (default: full_fo full_so adapt query query_fwd)

Parts: full_fo / full_so (first- / second-order step without the Adam update), adapt (support pass: per-task
inner gradients), query / query_fwd (query pass with per-task weights: forward + backward / forward only),
support_fwd / support_grad (support loss / its per-task gradients under vmap, images example-major) and
support_fwd_task_major / support_grad_task_major (the same with task-major images).
ENGINE=tasks|vmap picks the engine (default auto: tasks for this network). Environment switches for the
ablations quoted in the README: NOBIAS=1 (convolutions without bias),
FTZ=1 (flush denormals), NOMKLDNN=1 (oneDNN off), THREADS=N (intra-op threads).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.func import grad, vmap

from nas_meta import functional as fn
from nas_meta.config import TrainConfig
from nas_meta.runtime import tune_allocator
from nas_meta.training import build_learner

TASKS, WAYS = 32, 5


def timed(label: str, step: Callable[[], object], runs: int = 30) -> None:
    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(runs):
        step()
    print(f"{label:40s} {(time.perf_counter() - start) / runs * 1000:7.1f} ms")


def main() -> None:
    tune_allocator()
    base = TrainConfig()
    config = dataclasses.replace(
        base, task=dataclasses.replace(base.task, ways=WAYS, shots=1, query=1),
        learner=dataclasses.replace(base.learner, strategy="fomaml", meta_batch=TASKS, train_steps=1))
    net = build_learner(config, label_space=100, device=torch.device("cpu"), seed=0).network
    if os.environ.get("NOBIAS"):
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.register_parameter("bias", None)
    if os.environ.get("FTZ"):
        torch.set_flush_denormal(True)
    if os.environ.get("THREADS"):
        torch.set_num_threads(int(os.environ["THREADS"]))
    if os.environ.get("NOMKLDNN"):
        torch.backends.mkldnn.enabled = False  # type: ignore[assignment]
    g = torch.Generator().manual_seed(0)
    support_x, query_x = (torch.rand(TASKS, WAYS, 1, 28, 28, generator=g) for _ in range(2))
    labels = torch.arange(WAYS).expand(TASKS, -1).contiguous()
    params = dict(net.named_parameters())
    first, second = (fn.InnerLoop(1, 0.4, first_order=fo) for fo in (True, False))
    engine: fn.Engine = os.environ.get("ENGINE", "auto")  # type: ignore[assignment]

    def full(adapt: fn.InnerLoop) -> Callable[[], None]:
        def step() -> None:
            for p in params.values():
                p.grad = None
            losses, _ = fn.batched_query_loss(net, params, {}, support_x, labels, query_x, labels, adapt=adapt,
                                              engine=engine)
            losses.mean().backward()  # type: ignore[no-untyped-call]
        return step

    def adapt() -> fn.Params:
        with torch.no_grad():
            return fn.batched_adapt(net, params, {}, support_x, labels, adapt=first, engine=engine)

    adapted = {k: v.detach().requires_grad_() for k, v in adapt().items()}

    def query() -> None:
        logits = fn.batched_forward(net, adapted, {}, query_x, engine=engine)
        F.cross_entropy(logits.reshape(-1, WAYS), labels.reshape(-1)).backward()  # type: ignore[no-untyped-call]

    def query_fwd() -> None:
        with torch.no_grad():
            fn.batched_forward(net, adapted, {}, query_x, engine=engine)

    def support(gradient: bool, example_major: bool) -> Callable[[], object]:
        loss = grad(fn.support_loss) if gradient else fn.support_loss
        images = fn.example_major(support_x) if example_major else support_x

        def step() -> object:
            with torch.no_grad():
                return vmap(lambda x, y: loss(params, net, {}, x, y), in_dims=(1 if example_major else 0, 0))(
                    images, labels)
        return step

    parts: dict[str, tuple[str, Callable[[], object], int]] = {
        "full_fo": ("first-order step (no optimizer)", full(first), 30),
        "full_so": ("second-order step (no optimizer)", full(second), 15),
        "adapt": ("support fwd+grad (no_grad)", adapt, 30),
        "query": ("query fwd+bwd per-task weights", query, 30),
        "query_fwd": ("query fwd only per-task weights", query_fwd, 30),
        "support_fwd": ("support fwd (vmap)", support(False, True), 30),
        "support_grad": ("support grad (vmap)", support(True, True), 30),
        "support_fwd_task_major": ("support fwd (vmap, task-major)", support(False, False), 30),
        "support_grad_task_major": ("support grad (vmap, task-major)", support(True, False), 30),
    }
    for name in sys.argv[1:] or ["full_fo", "full_so", "adapt", "query", "query_fwd"]:
        if name not in parts:
            raise SystemExit(f"step_parts.py: unknown part {name!r}; expected one of {sorted(parts)}")
        timed(*parts[name])


if __name__ == "__main__":
    main()
