"""MAML and first-order MAML (a flag).

Reference: Finn, Abbeel & Levine (2017), "Model-Agnostic Meta-Learning for Fast Adaptation of Deep
Networks", ICML. First-order MAML drops the second-order term: inner gradients are constants.
"""

from __future__ import annotations

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
        optimizer = self.outer_optimizer()
        optimizer.zero_grad(set_to_none=True)
        losses, accuracies = batched_query_loss(
            self.network,
            dict(self.network.named_parameters()),
            {},
            episode.support_x,
            episode.support_y,
            episode.query_x,
            episode.query_y,
            adapt=self.inner_loop(self.config.learner.train_steps, first_order=self.first_order),
        )
        loss = losses.mean()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        return {"loss": float(loss.detach()), "accuracy": float(accuracies.mean())}
