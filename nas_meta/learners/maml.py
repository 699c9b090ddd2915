"""MAML and first-order MAML (a flag).

Reference: Finn, Abbeel & Levine (2017), "Model-Agnostic Meta-Learning for Fast Adaptation of Deep
Networks", ICML. First-order MAML drops the second-order term: inner gradients are constants.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..config import TrainConfig
from ..cuda_graphs import GraphedStep
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

    captures_meta_step = True
    uses_outer_optimizer = True

    def __init__(self, config: TrainConfig, label_space: int, first_order: bool = False) -> None:
        super().__init__(config, label_space)
        self.first_order = first_order
        self._step: Callable[[Episode], tuple[Tensor, ...]] | None = None  # step_sums, or its CUDA-graph replay
        head = self.network.get_submodule("head")
        assert isinstance(head, nn.Linear)
        if self.head_mode != "fixed":  # the network's own head is never used: every task starts from starting_head
            head.requires_grad_(False)
        if self.head_mode == "shared":
            self.shared_head_weight = nn.Parameter(torch.zeros(1, head.in_features))
            self.shared_head_bias = nn.Parameter(torch.zeros(1))

    def init_params(self, generator: torch.Generator) -> None:
        super().init_params(generator)
        if self.head_mode == "shared":  # the default linear initialization of one row
            bound = 1.0 / math.sqrt(self.shared_head_weight.shape[1])
            with torch.no_grad():
                self.shared_head_weight.copy_(torch.rand(self.shared_head_weight.shape, generator=generator) * 2 * bound
                                              - bound)
                self.shared_head_bias.copy_(torch.rand(1, generator=generator) * 2 * bound - bound)

    def starting_head(self, ways: int) -> Params:
        if self.head_mode == "shared":  # one meta-learned row for every class (its gradient: the rows' sum)
            return {"head.weight": self.shared_head_weight.expand(ways, -1),
                    "head.bias": self.shared_head_bias.expand(ways)}
        return super().starting_head(ways)

    def meta_step(self, episode: Episode, progress: float) -> dict[str, float]:
        """One Adam step on the mean query loss of the meta-batch, whose gradient is summed over chunks of tasks
        (:meth:`BaseLearner.task_chunk`): the same gradient, in less memory traffic on a CPU. On a GPU the step
        is replayed from a CUDA graph after three eager ones (:mod:`nas_meta.cuda_graphs`)."""
        return {name: float(value) for name, value in self.launch_meta_step(episode, progress).items()}

    def launch_meta_step(self, episode: Episode, progress: float) -> dict[str, float | Tensor]:
        if self._step is None:
            self._step = GraphedStep(self.step_sums) if self.uses_cuda_graphs() else self.step_sums
        loss_sum, accuracy_sum = self._step(episode)
        return {"loss": loss_sum / episode.tasks, "accuracy": accuracy_sum / episode.tasks}  # new tensors: kept

    def step_sums(self, episode: Episode) -> tuple[Tensor, Tensor]:
        """The meta-step itself, with no host synchronisation: the query loss and accuracy summed over the
        meta-batch's tasks, as tensors on the device."""
        optimizer = self.outer_optimizer()
        optimizer.zero_grad(set_to_none=True)
        ways = int(episode.class_ids.shape[1])
        model, params = self.template(ways), self.starting_params(ways)
        adapt = self.inner_loop(self.config.learner.train_steps, first_order=self.first_order)
        sums: list[tuple[Tensor, Tensor]] = []
        for chunk in episode.chunks(self.task_chunk(episode)):
            losses, accuracies = batched_query_loss(model, params, {}, chunk.support_x, chunk.support_y,
                                                    chunk.query_x, chunk.query_y, adapt=adapt)
            (losses.sum() / episode.tasks).backward()  # type: ignore[no-untyped-call]
            sums.append((losses.detach().sum(), accuracies.sum()))
        optimizer.step()
        return torch.stack([s[0] for s in sums]).sum(), torch.stack([s[1] for s in sums]).sum()
