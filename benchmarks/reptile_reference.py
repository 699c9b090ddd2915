"""Reference Reptile for the speed matrix and the learning curves: a plain per-task PyTorch loop written the way
openai/supervised-reptile trains (copy the weights, run the inner Adam on one task, move the initialization towards
the mean result). As there, by default one Adam (β1 = 0) is never reset: its second moments and step count carry
from task to task and from meta-iteration to meta-iteration, and each inner step takes the next ``--inner-batch``
of the task's shuffled examples. ``--fresh`` gives every task a new Adam; ``--inner-batch 0`` steps on all examples
(nas-meta's older Reptile). Timed on the MAML paper's Omniglot network and synthetic episodes; prints
meta-iterations per second as JSON.

    python benchmarks/reptile_reference.py --ways 5 --shots 1 --query 9 --meta-batch 5 --steps 5 [--inner-batch 10]
        [--fresh] [--device cuda]
"""

import argparse
import json

import torch
import torch.nn.functional as F
from timing import timed
from torch import nn

LR, BETAS = 1e-3, (0.0, 0.999)


def omniglot_cnn(ways: int) -> nn.Module:
    layers: list[nn.Module] = []
    channels = 1
    for _ in range(4):
        layers += [nn.Conv2d(channels, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64, track_running_stats=False),
                   nn.ReLU()]
        channels = 64
    return nn.Sequential(*layers, nn.Flatten(), nn.LazyLinear(ways))


def inner_loop(net: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer, *, steps: int,
               mini_batch: int | None, generator: torch.Generator) -> None:
    """``steps`` Adam steps on one task: all examples each step, or the next ``mini_batch`` of them, shuffled once
    per task (supervised-reptile)."""
    order = torch.randperm(len(x), generator=generator) if mini_batch else None
    for step in range(steps):
        if order is None:
            batch = slice(None)
        else:
            batch = order[(step * mini_batch) % len(x):][:mini_batch]
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(net(x[batch]), y[batch]).backward()
        optimizer.step()


def loop_meta_step(net: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float,
                   optimizer: torch.optim.Optimizer | None, *, steps: int, mini_batch: int | None,
                   generator: torch.Generator) -> None:
    """One Reptile meta-iteration on tasks ``x (tasks, n, ...)``, ``y (tasks, n)``, one task at a time:
    θ ← θ + ε (mean φ_i − θ). ``optimizer``: the carried inner Adam, or None for a fresh one per task."""
    start = [p.detach().clone() for p in net.parameters()]
    mean = [torch.zeros_like(p) for p in start]
    for t in range(len(x)):
        with torch.no_grad():
            for p, p0 in zip(net.parameters(), start):
                p.copy_(p0)
        task_optimizer = optimizer or torch.optim.Adam(net.parameters(), lr=LR, betas=BETAS)
        inner_loop(net, x[t], y[t], task_optimizer, steps=steps, mini_batch=mini_batch, generator=generator)
        for acc, p in zip(mean, net.parameters()):
            acc += p.detach() / len(x)
    with torch.no_grad():
        for p, p0, m in zip(net.parameters(), start, mean):
            p.copy_(p0 + epsilon * (m - p0))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--query", type=int, default=9)
    p.add_argument("--meta-batch", type=int, default=5)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--inner-batch", type=int, default=10, help="examples per inner step; 0: all of the task's")
    p.add_argument("--fresh", action="store_true", help="a new Adam for every task (default: one, never reset)")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    device = torch.device(a.device)
    torch.manual_seed(0)
    model = omniglot_cnn(a.ways).to(device)
    per_task = a.ways * (a.shots + a.query)
    x = torch.randn(a.meta_batch, per_task, 1, 28, 28, device=device)
    y = torch.arange(a.ways, device=device).repeat_interleave(a.shots + a.query).expand(a.meta_batch, -1)
    model(x[0])  # materialise the lazy head
    carried = None if a.fresh else torch.optim.Adam(model.parameters(), lr=LR, betas=BETAS)
    shuffles = torch.Generator().manual_seed(0)

    def meta_iter() -> None:
        loop_meta_step(model, x, y, 1.0, carried, steps=a.steps, mini_batch=a.inner_batch or None, generator=shuffles)

    dt = timed(meta_iter, a.iters, device, warmup=a.warmup)
    print(json.dumps({"impl": "reptile-per-task-loop", "ways": a.ways, "shots": a.shots, "query": a.query,
                      "meta_batch": a.meta_batch, "steps": a.steps, "inner_batch": a.inner_batch,
                      "inner_state": "fresh" if a.fresh else "carried", "device": str(device),
                      "meta_iters_per_s": a.iters / dt, "tasks_per_s": a.iters * a.meta_batch / dt}))


if __name__ == "__main__":
    main()
