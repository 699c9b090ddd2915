"""MAML and first-order MAML (a flag).

Reference: Finn, Abbeel & Levine (2017), "Model-Agnostic Meta-Learning for Fast Adaptation of Deep
Networks", ICML. First-order MAML drops the second-order term: inner gradients are constants.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import TrainConfig
from ..episodes import Episode
from ..functional import Params, batched_query_loss
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
        self._head_mode = config.learner.head
        head = self.network.get_submodule("head")
        assert isinstance(head, nn.Linear)
        if self._head_mode != "fixed":  # the network's own head is never used: every task starts from starting_head
            head.requires_grad_(False)
        if self._head_mode == "shared":
            self.shared_head_weight = nn.Parameter(torch.zeros(1, head.in_features))
            self.shared_head_bias = nn.Parameter(torch.zeros(1))

    @property
    def head_mode(self) -> str:
        return self._head_mode

    def init_params(self, generator: torch.Generator) -> None:
        super().init_params(generator)
        if self._head_mode == "shared":  # the default linear initialization of one row
            bound = 1.0 / math.sqrt(self.shared_head_weight.shape[1])
            with torch.no_grad():
                self.shared_head_weight.copy_(torch.rand(self.shared_head_weight.shape, generator=generator) * 2 * bound
                                              - bound)
                self.shared_head_bias.copy_(torch.rand(1, generator=generator) * 2 * bound - bound)

    def starting_head(self, ways: int) -> Params:
        if self._head_mode == "shared":  # one meta-learned row for every class (its gradient: the rows' sum)
            return {"head.weight": self.shared_head_weight.expand(ways, -1),
                    "head.bias": self.shared_head_bias.expand(ways)}
        return super().starting_head(ways)

    def meta_step(self, episode: Episode, progress: float) -> dict[str, float]:
        """One Adam step on the mean query loss of the meta-batch, whose gradient is summed over chunks of tasks
        (:meth:`BaseLearner.task_chunk`): the same gradient, in less memory traffic on a CPU."""
        optimizer = self.outer_optimizer()
        optimizer.zero_grad(set_to_none=True)
        ways = int(episode.class_ids.shape[1])
        model, params = self.template(ways), self.starting_params(ways)
        adapt = self.inner_loop(self.config.learner.train_steps, first_order=self.first_order)
        loss_sum, accuracy_sum = torch.zeros(()), torch.zeros(())
        for chunk in episode.chunks(self.task_chunk(episode)):
            losses, accuracies = batched_query_loss(model, params, {}, chunk.support_x, chunk.support_y,
                                                    chunk.query_x, chunk.query_y, adapt=adapt)
            (losses.sum() / episode.tasks).backward()  # type: ignore[no-untyped-call]
            loss_sum = loss_sum + losses.detach().sum().cpu()
            accuracy_sum = accuracy_sum + accuracies.sum().cpu()
        optimizer.step()
        return {"loss": float(loss_sum) / episode.tasks, "accuracy": float(accuracy_sum) / episode.tasks}
