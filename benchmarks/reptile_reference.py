"""Reference Reptile step for the speed matrix: a plain per-task PyTorch loop written the way openai/supervised-reptile
does it (copy the weights, run the inner Adam on one task, move the initialization towards the result), on the
MAML paper's Omniglot network and synthetic episodes; prints meta-iterations per second as JSON.

    python benchmarks/reptile_reference.py --ways 5 --shots 1 --query 9 --meta-batch 5 --steps 5 [--device cuda]
"""

import argparse
import json

import torch
from timing import timed
from torch import nn


def omniglot_cnn(ways: int) -> nn.Module:
    layers: list[nn.Module] = []
    channels = 1
    for _ in range(4):
        layers += [nn.Conv2d(channels, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64, track_running_stats=False),
                   nn.ReLU()]
        channels = 64
    return nn.Sequential(*layers, nn.Flatten(), nn.LazyLinear(ways))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--query", type=int, default=9)
    p.add_argument("--meta-batch", type=int, default=5)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    device = torch.device(a.device)
    torch.manual_seed(0)
    model = omniglot_cnn(a.ways).to(device)
    per_task = a.ways * (a.shots + a.query)
    x = torch.randn(a.meta_batch, per_task, 1, 28, 28, device=device)
    y = torch.arange(a.ways, device=device).repeat_interleave(a.shots + a.query)
    model(x[0])  # materialise the lazy head
    loss_fn = nn.CrossEntropyLoss()

    def meta_iter(epsilon: float = 1.0) -> None:
        start = [w.detach().clone() for w in model.parameters()]
        new = [torch.zeros_like(w) for w in start]
        for t in range(a.meta_batch):  # one task at a time, as supervised-reptile does
            with torch.no_grad():
                for w, w0 in zip(model.parameters(), start):
                    w.copy_(w0)
            inner = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.0, 0.999))
            for _ in range(a.steps):
                inner.zero_grad()
                loss_fn(model(x[t]), y).backward()
                inner.step()
            for acc, w in zip(new, model.parameters()):
                acc += w.detach() / a.meta_batch
        with torch.no_grad():
            for w, w0, w1 in zip(model.parameters(), start, new):
                w.copy_(w0 + epsilon * (w1 - w0))

    dt = timed(meta_iter, a.iters, device, warmup=a.warmup)
    print(json.dumps({"impl": "reptile-per-task-loop", "ways": a.ways, "shots": a.shots, "query": a.query,
                      "meta_batch": a.meta_batch, "steps": a.steps, "device": str(device),
                      "meta_iters_per_s": a.iters / dt, "tasks_per_s": a.iters * a.meta_batch / dt}))


if __name__ == "__main__":
    main()
