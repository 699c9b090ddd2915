"""How many tasks one pass of a meta-step should hold on this CPU: the meta-batch in chunks, side by side.

A meta-step's gradient is a sum over tasks, so the meta-batch can run in chunks whose gradients add up (the
same gradient: tests/learners/test_maml.py). On a CPU a whole 20-way 5-shot meta-batch streams activations of
hundreds of MB through memory for every elementwise pass; chunks that stay near ``CHUNK_BYTES`` of first-layer
activations avoid that. For each matrix cell (``benchmarks/matrix.py``) this times nas-meta's meta-step at several
chunk sizes and at the automatic choice (``nas_meta.functional.tasks_per_chunk``), in alternating rounds in one
process, and prints tasks per second.

    python benchmarks/task_chunks.py [--cells 5w1s-so,20w5s-fo] [--rounds 3] [--iters 3] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch

from matrix import CELLS, bench_config, cell_config
from nas_meta.bench import synthetic_episode
from nas_meta.runtime import tune_allocator
from nas_meta.training import build_learner


def rate(cell: Any, chunk: int | None, iters: int) -> tuple[float, int]:
    """Tasks per second of ``cell``'s meta-step with ``chunk`` tasks a pass (None: automatic), and the chunk used."""
    config = bench_config(cell, cell_config(cell))
    learner = build_learner(config, 100, torch.device("cpu"), seed=0)
    learner.chunk_tasks = chunk
    episode = synthetic_episode(config, cell.meta_batch, torch.device("cpu"))
    used = learner.task_chunk(episode)
    learner.meta_step(episode, 0.0)
    start = time.perf_counter()
    for _ in range(iters):
        learner.meta_step(episode, 0.0)
    return iters * cell.meta_batch / (time.perf_counter() - start), used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="5w1s-so,5w5s-so,5w5s-fo,20w1s-so,20w1s-fo,20w5s-so,20w5s-fo")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--out")
    args = parser.parse_args()
    tune_allocator()
    by_name = {c.name: c for c in CELLS}
    rows = []
    print("| cell | tasks per pass | tasks/s (median) | speed-up over the whole meta-batch |\n|---|---|---|---|")
    for name in args.cells.split(","):
        cell = by_name[name]
        sizes: list[int | None] = sorted({c for c in (1, 2, 4, 8, 16, cell.meta_batch) if c <= cell.meta_batch})
        sizes.append(None)
        rates: dict[str, list[float]] = {}
        for r in range(args.rounds):
            for chunk in (sizes if r % 2 == 0 else sizes[::-1]):
                value, used = rate(cell, chunk, args.iters)
                rates.setdefault("auto" if chunk is None else str(chunk), []).append(value)
                if chunk is None:
                    auto_used = used
        whole = statistics.median(rates[str(cell.meta_batch)])
        for key, values in rates.items():
            shown = f"auto ({auto_used})" if key == "auto" else key
            print(f"| {name} | {shown} | {statistics.median(values):.1f} | {statistics.median(values) / whole:.2f}x |",
                  flush=True)
        rows.append({"cell": name, "auto": auto_used, "tasks_per_s": rates})
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
