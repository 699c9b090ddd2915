"""MAML and first-order MAML (a flag).

Reference: Finn, Abbeel & Levine (2017), "Model-Agnostic Meta-Learning for Fast Adaptation of Deep
Networks", ICML. First-order MAML drops the second-order term: inner gradients are constants.
"""

from __future__ import annotations

import torch

from ..config import TrainConfig
from ..episodes import Episode
from ..functional import batched_query_loss
from .base import BaseLearner


class MAML(BaseLearner):
    """Meta-learns the initialization by differentiating the query loss through the inner SGD steps.

    Arguments:
        config (TrainConfig): ``learner.inner_lr``, ``train_steps``, ``test_steps``, ``outer_lr`` (Adam).
        label_space (int): unused (the head is meta-learned for ``task.ways`` classes).
        first_order (bool, default False): first-order approximation (FOMAML).
    """

    def __init__(self, config: TrainConfig, label_space: int, first_order: bool = False) -> None:
        super().__init__(config, label_space)
        self.first_order = first_order

    def meta_step(self, episode: Episode, progress: float) -> dict[str, float]:
        """One Adam step on the mean query loss of the meta-batch, whose gradient is summed over chunks of tasks
        (:meth:`BaseLearner.task_chunk`): the same gradient, in less memory traffic on a CPU."""
        optimizer = self.outer_optimizer()
        optimizer.zero_grad(set_to_none=True)
        params = dict(self.network.named_parameters())
        adapt = self.inner_loop(self.config.learner.train_steps, first_order=self.first_order)
        loss_sum, accuracy_sum = torch.zeros(()), torch.zeros(())
        for chunk in episode.chunks(self.task_chunk(episode)):
            losses, accuracies = batched_query_loss(self.network, params, {}, chunk.support_x, chunk.support_y,
                                                    chunk.query_x, chunk.query_y, adapt=adapt)
            (losses.sum() / episode.tasks).backward()  # type: ignore[no-untyped-call]
            loss_sum = loss_sum + losses.detach().sum().cpu()
            accuracy_sum = accuracy_sum + accuracies.sum().cpu()
        optimizer.step()
        return {"loss": float(loss_sum) / episode.tasks, "accuracy": float(accuracy_sum) / episode.tasks}
