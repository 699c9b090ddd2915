"""Tiny configs and episodes for learner tests (a learner reaches a device with ``.to(device)`` after ``init_params``)."""

from __future__ import annotations

import dataclasses

import torch

from nas_meta.config import ArchConfig, DataConfig, LearnerConfig, TaskConfig, TrainConfig
from nas_meta.episodes import Episode


def tiny_config(strategy: str = "maml", **learner: object) -> TrainConfig:
    return TrainConfig(
        data=DataConfig(image_size=8),
        task=TaskConfig(ways=3, shots=2, query=2),
        architecture=ArchConfig(blocks=2, channels=4),
        learner=dataclasses.replace(LearnerConfig(strategy=strategy, inner_lr=0.3, meta_batch=4), **learner),  # type: ignore[arg-type]
    )


def tiny_episode(tasks: int = 4, ways: int = 3, shots: int = 2, query: int = 2, seed: int = 0,
                 device: torch.device | str = "cpu") -> Episode:
    """A float32 meta-batch of 8x8 tasks, drawn on the CPU (the same numbers on every device), then moved to ``device``."""
    g = torch.Generator().manual_seed(seed)
    tensors = (
        torch.rand(tasks, ways * shots, 1, 8, 8, generator=g),
        torch.arange(ways).repeat_interleave(shots).expand(tasks, -1).contiguous(),
        torch.rand(tasks, ways * query, 1, 8, 8, generator=g),
        torch.arange(ways).repeat_interleave(query).expand(tasks, -1).contiguous(),
        torch.stack([torch.randperm(10, generator=g)[:ways] for _ in range(tasks)]),
    )
    return Episode(*(t.to(device) for t in tensors))
