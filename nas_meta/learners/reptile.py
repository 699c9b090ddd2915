"""Reptile: move the initialization towards the weights each task's inner loop reaches.

Reference: Nichol, Achiam & Schulman (2018), "On First-Order Meta-Learning Algorithms", arXiv:1803.02999.
"""

from __future__ import annotations

from typing import Literal

import torch

from ..episodes import Episode
from ..functional import InnerLoop, batched_adapt, interpolate
from .base import BaseLearner


class Reptile(BaseLearner):
    """Batched Reptile: θ ← θ + ε_t (mean_i φ_i − θ), ε_t annealed linearly from ``meta_step`` to 0.

    Each task's inner loop runs ``train_steps`` steps of SGD or Adam (β1 = 0, as in the paper:
    ``learner.inner_optimizer``) on all of the task's examples. Adaptation at test time uses SGD with
    ``inner_lr`` for ``test_steps`` steps on the support set, or Adam when that is the inner optimizer.

    Arguments:
        config (TrainConfig): ``learner.inner_lr``, ``train_steps``, ``test_steps``, ``meta_step``, ``inner_optimizer``.
        label_space (int): unused.
    """

    def inner_loop(self, steps: int, *, first_order: bool) -> InnerLoop:
        optimizer: Literal["sgd", "adam"] = "adam" if self.config.learner.inner_optimizer == "adam" else "sgd"
        return InnerLoop(steps, self.config.learner.inner_lr, first_order=True, optimizer=optimizer)

    def meta_step(self, episode: Episode, progress: float) -> dict[str, float]:
        x = torch.cat([episode.support_x, episode.query_x], dim=1)
        y = torch.cat([episode.support_y, episode.query_y], dim=1)
        params = dict(self.network.named_parameters())
        with torch.no_grad():  # Reptile is first-order throughout: no graph to the meta-parameters is needed
            adapted = batched_adapt(
                self.network, params, {}, x, y, adapt=self.inner_loop(self.config.learner.train_steps, first_order=True)
            )
            epsilon = self.config.learner.meta_step * (1.0 - min(max(progress, 0.0), 1.0))
            task_mean = {name: value.mean(dim=0) for name, value in adapted.items()}
            for name, value in interpolate(params, task_mean, epsilon).items():
                params[name].copy_(value)
        return {"meta_step": epsilon}
