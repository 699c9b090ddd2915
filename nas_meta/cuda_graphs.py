"""A meta-step replayed from a CUDA graph: the host launches one graph instead of hundreds of kernels.

On a GPU a small meta-step is bound by the host, not by the arithmetic: a 5-way 1-shot second-order MAML step
launches about 600 kernels, 5 ms of GPU work under some 25 ms of Python, autograd and launches (H200,
``benchmarks/results/gpu-NVIDIA-H200.md``). :class:`GraphedStep` runs a step function eagerly for a few
warm-up calls, captures it once in a CUDA graph, then copies each new meta-batch into the captured (static)
input tensors and replays the graph: the same kernels on the same memory, from one launch
(``benchmarks/gpu_graphs.py`` measures the gain and checks the trajectory against eager steps).

What a captured step must be, and :class:`~nas_meta.learners.maml.MAML` makes it: the same shapes every call
(a meta-batch of fixed size), no host synchronisation inside (its results stay on the device), and an outer
optimizer created with ``capturable=True``. A meta-batch of another shape runs eagerly; a capture that fails
is logged once and the step runs eagerly from then on. ``NAS_META_CUDA_GRAPHS=0`` turns capture off.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import torch
from torch import Tensor

from .episodes import Episode

log = logging.getLogger(__name__)

StepFunction = Callable[[Episode], tuple[Tensor, ...]]
WARMUP_CALLS = 3  # eager calls before the capture


def _tensors(episode: Episode) -> tuple[Tensor, ...]:
    """An episode's tensors in the order of :class:`Episode`'s fields."""
    return tuple(getattr(episode, field.name) for field in dataclasses.fields(episode))


def _shape(episode: Episode) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(t.shape) for t in _tensors(episode))


def _copy_into(static: Episode, episode: Episode) -> None:
    for target, source in zip(_tensors(static), _tensors(episode), strict=True):
        target.copy_(source, non_blocking=True)


class GraphedStep:
    """``step(episode)`` run eagerly ``warmup`` times, then captured in a CUDA graph and replayed.

    Every call performs one real step (warm-up calls and the capturing call included: a capture records the
    kernels without running them, so the capturing call replays the graph once it is recorded). The returned
    tensors are the graph's static outputs: read (or clone) them before the next call overwrites them.

    Args:
        step: the step function; its results must be device tensors, and it must not synchronise with the host.
        warmup: eager calls before the capture, on a side stream as CUDA graphs require (lazy initialisation of
            libraries and autograd's buffers happens there, not inside the capture).
    """

    def __init__(self, step: StepFunction, warmup: int = WARMUP_CALLS) -> None:
        self.step = step
        self.warmup = warmup
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_episode: Episode | None = None
        self.static_outputs: tuple[Tensor, ...] = ()
        self.failed = False

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def __call__(self, episode: Episode) -> tuple[Tensor, ...]:
        self.calls += 1
        if self.failed or episode.support_x.device.type != "cuda":
            return self.step(episode)
        if self.graph is not None:
            assert self.static_episode is not None
            if _shape(episode) != _shape(self.static_episode):  # another meta-batch size: eager, graph kept
                return self.step(episode)
            _copy_into(self.static_episode, episode)
            self.graph.replay()
            return self.static_outputs
        if self.calls > self.warmup:
            return self._capture(episode)
        device = episode.support_x.device
        side = torch.cuda.Stream(device=device)  # type: ignore[no-untyped-call]
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            outputs = self.step(episode)
        torch.cuda.current_stream(device).wait_stream(side)
        return outputs

    def _capture(self, episode: Episode) -> tuple[Tensor, ...]:
        static = Episode(*(t.clone() for t in _tensors(episode)))
        graph = torch.cuda.CUDAGraph()
        try:  # thread_local: CUDA calls of the process's other threads do not invalidate this capture
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                outputs = self.step(static)
        except Exception as error:  # noqa: BLE001  any failure to capture falls back to eager steps
            self.failed = True
            first_line = str(error).splitlines()[0][:200] if str(error) else ""
            log.warning("this meta-step cannot be captured in a CUDA graph (%s: %s); it runs eagerly (slower on the "
                        "host, same results)", type(error).__name__, first_line)
            try:
                torch.cuda.synchronize(episode.support_x.device)
            except Exception as broken:
                raise RuntimeError(
                    f"a failed CUDA-graph capture of the meta-step ({type(error).__name__}: {first_line}) left the "
                    "CUDA device unusable in this process; run again with NAS_META_CUDA_GRAPHS=0 (eager steps)"
                ) from broken
            return self.step(episode)
        self.graph, self.static_episode, self.static_outputs = graph, static, outputs
        graph.replay()  # the capture recorded this call's step without running it
        return outputs
