"""Ablation: the task-batched engine against vmap, in nas-meta's MAML step, measured side by side.

Both engines compute the same meta-gradient (tests/test_functional.py holds each equal to a per-task loop).
This times one MAML meta-step (default network, 5-way 1-shot, 1 query per class, meta-batch 32, 1 inner
step, Adam update included) with each engine, alternately, in separate processes.
    python benchmarks/ablation_engine.py [--rounds 3] [--iters 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = """
import json, sys, time, torch
from nas_meta import functional as fn
from nas_meta.architectures import build_network
from nas_meta.config import ArchConfig
from nas_meta.runtime import tune_allocator
engine, first_order, iters = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3])
tune_allocator()
torch.manual_seed(0)
net = build_network(ArchConfig(), 5, 28)
params = dict(net.named_parameters())
optimizer = torch.optim.Adam(params.values(), lr=1e-3)
support_x, query_x = torch.rand(32, 5, 1, 28, 28), torch.rand(32, 5, 1, 28, 28)
labels = torch.arange(5).expand(32, -1).contiguous()
def step():
    optimizer.zero_grad(set_to_none=True)
    losses, _ = fn.batched_query_loss(net, params, {}, support_x, labels, query_x, labels,
                                      adapt=fn.InnerLoop(1, 0.4, first_order), engine=engine)
    losses.mean().backward()
    optimizer.step()
for _ in range(3):
    step()
start = time.perf_counter()
for _ in range(iters):
    step()
print(json.dumps({"meta_iters_per_s": iters / (time.perf_counter() - start)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args()
    print("| MAML | engine | meta-it/s per round | median | speed-up over vmap |\n|---|---|---|---|---|")
    for first_order in (False, True):
        rates: dict[str, list[float]] = {"tasks": [], "vmap": []}
        for _ in range(args.rounds):
            for engine in rates:
                out = subprocess.run([sys.executable, "-c", CHILD, engine, str(int(first_order)), str(args.iters)],
                                     check=True, capture_output=True, text=True).stdout
                rates[engine].append(json.loads(out)["meta_iters_per_s"])
        kind = "first order" if first_order else "second order"
        base = statistics.median(rates["vmap"])
        for engine, values in rates.items():
            median = statistics.median(values)
            print(f"| {kind} | {engine} | {', '.join(f'{v:.2f}' for v in values)} | {median:.2f} | {median / base:.2f}x |")


if __name__ == "__main__":
    main()
