"""Random initialization, fine-tuning only: the control that shows what meta-learning adds."""

from __future__ import annotations

from ..episodes import Episode
from .base import BaseLearner


class RandomInit(BaseLearner):
    """No meta-training: a body initialised with ``learner.init`` (Kaiming/Xavier/orthogonal) and a zero head,
    fine-tuned on the support set with ``inner_lr`` for ``test_steps`` steps.

    Arguments:
        config (TrainConfig): ``learner.init``, ``inner_lr``, ``test_steps``.
        label_space (int): unused.
    """

    trains = False

    def meta_step(self, episode: Episode, progress: float) -> dict[str, float]:
        return {}
