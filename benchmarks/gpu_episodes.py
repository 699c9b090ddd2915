"""How fast the host builds training meta-batches on a device: the part of a meta-step a CUDA graph cannot replay.

Loads Omniglot (``maml`` protocol, 28 px) onto the device and times building the paper's 5w1s meta-batch (32 tasks,
1 shot, 3 query) and 20w5s (16 tasks, 5 shots, 5 query): index drawing on the host, the gather on the device, waited
for; classes drawn with ``topk`` (training) and with a full sort (the fixed dev/test sets), side by side.

    python benchmarks/gpu_episodes.py [--device cuda] [--iters 200] [--data FOLDER] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json

import torch
from timing import timed

from nas_meta.config import TrainConfig
from nas_meta.episodes import EpisodeSampler
from nas_meta.runtime import resolve_device
from nas_meta.training import load_workspace

SETTINGS = {"5w1s": (5, 1, 3, 32), "20w5s": (20, 5, 5, 16)}  # ways, shots, query, meta-batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--data")
    parser.add_argument("--out")
    args = parser.parse_args()
    device = resolve_device(args.device)
    workspace = load_workspace(TrainConfig(), args.data, device)
    generator = torch.Generator().manual_seed(0)
    result: dict[str, object] = {"device": str(device)}
    for name, (ways, shots, query, tasks) in SETTINGS.items():
        sampler = workspace.sampler("train", ways, shots, query)
        row: dict[str, float] = {}
        for draw, full_sort in (("topk", False), ("full_sort", True)):  # training's draw; the fixed sets' draw
            def build(sampler: EpisodeSampler = sampler, tasks: int = tasks, full_sort: bool = full_sort) -> object:
                return sampler.build(sampler.sample_index(generator, tasks, full_sort=full_sort))

            def draw_index(sampler: EpisodeSampler = sampler, tasks: int = tasks, full_sort: bool = full_sort) -> object:
                return sampler.sample_index(generator, tasks, full_sort=full_sort)

            seconds = timed(build, args.iters, device, warmup=5)
            row[f"{draw}_ms_per_meta_batch"] = 1e3 * seconds / args.iters
            index_seconds = timed(draw_index, args.iters, device, warmup=5)
            row[f"{draw}_host_index_ms"] = 1e3 * index_seconds / args.iters
        result[name] = row
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
