"""``nas-meta bench``: time meta-training steps on synthetic episodes (compute only, no data)."""

from __future__ import annotations

import dataclasses
import resource
import time

import torch

from ._version import __version__
from .config import TrainConfig, check_arguments, whole
from .cuda_graphs import WARMUP_CALLS
from .episodes import Episode
from .runtime import resolve_device, seed_everything, tune_allocator
from .training import build_learner


def synthetic_episode(config: TrainConfig, meta_batch: int, device: torch.device) -> Episode:
    """A meta-batch of random images with ``config``'s episode shape (compute only: no data is read)."""
    g = torch.Generator().manual_seed(0)
    size, t = config.data.image_size, config.task
    labels = torch.arange(t.ways).repeat_interleave
    return Episode(
        torch.rand(meta_batch, t.ways * t.shots, 1, size, size, generator=g).to(device),
        labels(t.shots).expand(meta_batch, -1).contiguous().to(device),
        torch.rand(meta_batch, t.ways * t.query, 1, size, size, generator=g).to(device),
        labels(t.query).expand(meta_batch, -1).contiguous().to(device),
        torch.randint(0, 100, (meta_batch, t.ways), generator=g).to(device),
    )


def _synchronize(device: torch.device) -> None:
    """Wait for queued device work, so wall-clock timings cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(
    *,
    strategy: str = "maml",
    ways: int = 5,
    shots: int = 1,
    query: int = 1,
    meta_batch: int = 32,
    steps: int = 1,
    iterations: int = 20,
    warmup: int = 3,
    device: str = "auto",
    config: TrainConfig | None = None,
    tune_memory: bool = True,
) -> dict[str, object]:
    """Time meta-training steps on synthetic 1x28x28 episodes of the default network (compute only).

    Where the learner replays its meta-step from a CUDA graph (:mod:`nas_meta.cuda_graphs`), the untimed steps
    run at least until the graph is captured, so the timing is that of training's steady state, as for eager
    steps (``cuda_graphs`` in the result says which was timed). ``tune_memory=False`` leaves the C allocator as it is (see :func:`nas_meta.runtime.tune_allocator`).

    Raises:
        ConfigError: a bad argument (named).
    """
    check_arguments(
        *[(whole(value, low, high), name, value, f"an integer in [{low}, {high}]")
          for name, value, low, high in (("ways", ways, 2, 1000), ("shots", shots, 1, 19), ("query", query, 1, 10**6),
                                         ("meta_batch", meta_batch, 1, 10_000), ("steps", steps, 1, 1000),
                                         ("iterations", iterations, 1, 10**6), ("warmup", warmup, 0, 10**4))],
        (isinstance(device, str), "device", device, "'auto', 'cpu', 'cuda' or 'cuda:N' (a string)"),
        (config is None or isinstance(config, TrainConfig), "config", config, "a TrainConfig, or None"),
    )
    base = config or TrainConfig()
    cfg = dataclasses.replace(
        base,
        task=dataclasses.replace(base.task, ways=ways, shots=shots, query=query),
        learner=dataclasses.replace(base.learner, strategy=strategy, meta_batch=meta_batch, train_steps=steps),  # type: ignore[arg-type]
    )
    torch_device = resolve_device(device)
    seed_everything(0)
    allocator_tuned = tune_allocator() if tune_memory else False
    learner = build_learner(cfg, label_space=100, device=torch_device, seed=0)
    episode = synthetic_episode(cfg, meta_batch, torch_device)
    graphed = learner.uses_cuda_graphs()
    if graphed:  # eager warm-up calls, then the capturing call: none of them is a replay
        warmup = max(warmup, WARMUP_CALLS + 1)
    for _ in range(warmup):
        learner.meta_step(episode, 0.0)
    _synchronize(torch_device)
    if torch_device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for i in range(iterations):
        learner.meta_step(episode, i / max(iterations, 1))
    _synchronize(torch_device)
    seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() if torch_device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {
        "impl": f"nas-meta-{__version__}", "strategy": strategy, "first_order": strategy == "fomaml", "ways": ways,
        "shots": shots, "query": query, "meta_batch": meta_batch, "steps": steps, "iterations": iterations,
        "device": str(torch_device), "threads": torch.get_num_threads(), "meta_iters_per_s": iterations / seconds,
        "tasks_per_s": iterations * meta_batch / seconds, "peak_memory_mb": peak / 2**20,
        "allocator_tuned": allocator_tuned, "cuda_graphs": graphed, "warmup": warmup,
    }
