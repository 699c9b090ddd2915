"""Reptile: move the initialization towards the weights each task's inner loop reaches.

Reference: Nichol, Achiam & Schulman (2018), "On First-Order Meta-Learning Algorithms", arXiv:1803.02999.
"""

from __future__ import annotations

from typing import Literal

import torch

from ..config import TrainConfig
from ..episodes import Episode
from ..functional import InnerLoop, Params, batched_adam_adapt, batched_adapt, carry_moments, interpolate
from .base import BaseLearner


class Reptile(BaseLearner):
    """Batched Reptile: θ ← θ + ε_t (mean_i φ_i − θ), ε_t annealed linearly from ``meta_step`` to 0.

    Each task's inner loop runs ``train_steps`` steps of SGD or Adam (β1 = 0, as in the paper:
    ``learner.inner_optimizer``) on all of the task's examples. Adaptation at test time uses SGD with
    ``inner_lr`` for ``test_steps`` steps on the support set, or Adam when that is the inner optimizer.

    With ``learner.inner_state: carried`` the inner Adam's second moments and step count are buffers of the learner
    (``adam_moments.*``, ``adam_step``; saved with its weights): every task starts from them, and after each
    meta-iteration they become the state the meta-batch's tasks would have left had they run one after another
    (:func:`~nas_meta.functional.carry_moments`), as openai/supervised-reptile's never-reset Adam does. With
    ``learner.inner_batch`` each inner step takes the next slice of the task's examples, shuffled once per task.

    Arguments:
        config (TrainConfig): ``learner.inner_lr``, ``train_steps``, ``test_steps``, ``meta_step``,
            ``inner_optimizer``, ``inner_state``, ``inner_batch``.
        label_space (int): unused.
    """

    def __init__(self, config: TrainConfig, label_space: int) -> None:
        super().__init__(config, label_space)
        self.carried = config.learner.inner_state == "carried"
        self.shuffles = torch.Generator().manual_seed(config.seed)  # the order of each task's inner mini-batches
        if self.carried:
            for name, p in self.network.named_parameters():
                self.register_buffer(_moment_key(name), torch.zeros_like(p))
            self.register_buffer("adam_step", torch.zeros(()))  # float32 as every saved tensor: exact to 2^24 steps

    def carried_moments(self) -> Params:
        return {name: self.get_buffer(_moment_key(name)) for name, _ in self.network.named_parameters()}

    def inner_loop(self, steps: int, *, first_order: bool) -> InnerLoop:
        optimizer: Literal["sgd", "adam"] = "adam" if self.config.learner.inner_optimizer == "adam" else "sgd"
        if self.carried:
            return InnerLoop(steps, self.config.learner.inner_lr, first_order=True, optimizer="adam",
                             moments=self.carried_moments(), step=int(self.get_buffer("adam_step")))
        return InnerLoop(steps, self.config.learner.inner_lr, first_order=True, optimizer=optimizer)

    def meta_step(self, episode: Episode, progress: float) -> dict[str, float]:
        x = torch.cat([episode.support_x, episode.query_x], dim=1)
        y = torch.cat([episode.support_y, episode.query_y], dim=1)
        batch = self.config.learner.inner_batch
        if batch is not None:  # each task's examples in a random order: its inner steps take consecutive slices
            order = torch.rand(x.shape[:2], generator=self.shuffles).argsort(dim=1).to(x.device)
            tasks = torch.arange(x.shape[0], device=x.device)[:, None]
            x, y = x[tasks, order], y[tasks, order]
        params = dict(self.network.named_parameters())
        steps = self.config.learner.train_steps
        with torch.no_grad():  # Reptile is first-order throughout: no graph to the meta-parameters is needed
            adapt = self.inner_loop(steps, first_order=True)
            if self.carried:
                adapted, moments = batched_adam_adapt(self.network, params, {}, x, y, adapt=adapt, batch=batch)
                for name, value in carry_moments(self.carried_moments(), moments, steps).items():
                    self.get_buffer(_moment_key(name)).copy_(value)
                self.get_buffer("adam_step").add_(steps * episode.tasks)
            else:
                adapted = batched_adapt(self.network, params, {}, x, y, adapt=adapt, batch=batch)
            epsilon = self.config.learner.meta_step * (1.0 - min(max(progress, 0.0), 1.0))
            task_mean = {name: value.mean(dim=0) for name, value in adapted.items()}
            for name, value in interpolate(params, task_mean, epsilon).items():
                params[name].copy_(value)
        return {"meta_step": epsilon}


def _moment_key(name: str) -> str:
    return "adam_moments__" + name.replace(".", "__")
