"""The sinusoid task family (Finn et al., 2017, section 5.1): K-shot regression of ``y = A sin(x - b)``.

Each task draws an amplitude ``A`` uniform in [0.1, 5.0] and a phase ``b`` uniform in [0, pi]; its ``shots``
support and ``query`` query points have ``x`` uniform in [-5, 5]. The loss is the mean squared error
(:mod:`nas_meta.objectives` reads it from the real-valued targets); the default network is the paper's MLP, two
hidden layers of 40 ReLU units (:data:`nas_meta.config.FAMILIES`). It needs no data: training draws fresh
tasks from the run's generator, and the dev and test sets are fixed by their split's name and the seed, as
Omniglot's are, so every learner is scored on the same tasks.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .config import TaskConfig
from .episodes import Episode, FixedEpisodes

AMPLITUDE = (0.1, 5.0)
PHASE = (0.0, math.pi)
X_RANGE = (-5.0, 5.0)


@dataclass(frozen=True)
class SinusoidIndex:
    """What identifies a meta-batch of sinusoid tasks, independent of device: CPU float32 tensors."""

    amplitude: Tensor  # (tasks,)
    phase: Tensor  # (tasks,)
    x: Tensor  # (tasks, shots + query)

    def __len__(self) -> int:
        return int(self.amplitude.shape[0])

    def slice(self, start: int, stop: int) -> SinusoidIndex:
        return SinusoidIndex(self.amplitude[start:stop], self.phase[start:stop], self.x[start:stop])


def _uniform(generator: torch.Generator, shape: tuple[int, ...], bounds: tuple[float, float]) -> Tensor:
    low, high = bounds
    return torch.rand(shape, generator=generator) * (high - low) + low


class SinusoidSampler:
    """Draws sinusoid tasks of ``shots`` support and ``query`` query points, as :class:`Episode` s on ``device``:
    inputs and targets ``(tasks, points, 1)`` float32, one output (``class_ids`` zeros ``(tasks, 1)``)."""

    def __init__(self, shots: int, query: int, split: str, device: torch.device) -> None:
        self.shots, self.query, self.split, self._device = shots, query, split, device

    @property
    def device(self) -> torch.device:
        return self._device

    def sample_index(self, generator: torch.Generator, tasks: int, *, full_sort: bool = False) -> SinusoidIndex:
        """Draw ``tasks`` tasks and their points (``full_sort`` is Omniglot's; accepted for the same interface)."""
        return SinusoidIndex(_uniform(generator, (tasks,), AMPLITUDE), _uniform(generator, (tasks,), PHASE),
                             _uniform(generator, (tasks, self.shots + self.query), X_RANGE))

    def build(self, index: SinusoidIndex) -> Episode:
        """The episodes of ``index`` on the sampler's device."""
        device = self.device
        x = index.x.to(device)
        y = index.amplitude.to(device)[:, None] * torch.sin(x - index.phase.to(device)[:, None])
        k = self.shots
        x, y = x.unsqueeze(-1), y.unsqueeze(-1)
        class_ids = torch.zeros(len(index), 1, dtype=torch.long, device=device)
        return Episode(x[:, :k], y[:, :k], x[:, k:], y[:, k:], class_ids)

    def sample(self, generator: torch.Generator, tasks: int) -> Episode:
        """Draw and build a meta-batch of ``tasks`` tasks."""
        return self.build(self.sample_index(generator, tasks))

    def fixed(self, episodes: int, seed: int) -> FixedEpisodes:
        """The fixed task set of this split, shape and ``seed``: identical for every learner."""
        key = f"sinusoid|{self.split}|{self.shots}|{self.query}|{seed}".encode()
        generator = torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))
        return FixedEpisodes(self, self.sample_index(generator, episodes))


@dataclass(frozen=True)
class SinusoidTasks:
    """The sinusoid family loaded for one run: nothing to load, samplers for any split on ``device``."""

    device: torch.device
    label_space: int = 1  # one output: a pre-training head regresses the pooled tasks

    def sampler(self, split: str, shots: int, query: int) -> SinusoidSampler:
        return SinusoidSampler(shots, query, f"{split} split", self.device)

    def task_sampler(self, split: str, task: TaskConfig) -> SinusoidSampler:
        """The sampler of ``task``'s episodes (its shots and query points) for ``split``."""
        return self.sampler(split, task.shots, task.query)
