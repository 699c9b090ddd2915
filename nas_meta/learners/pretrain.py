"""Multi-task pre-training: one classifier over all training classes pooled, then fine-tuning.

The standard transfer baseline (e.g. Chen et al. (2019), "A Closer Look at Few-shot Classification",
ICLR): the body is trained by plain supervised learning on every (character, rotation) class of the
training split; to adapt, a zero-initialised ``ways``-way head and the body are fine-tuned on the
support set with ``inner_lr`` for ``test_steps`` steps.
"""

from __future__ import annotations

import torch

from .. import objectives
from ..episodes import Episode
from .base import BaseLearner


class Pretrain(BaseLearner):
    """Supervised pre-training on the pooled training classes (label space of the split); for a regression family,
    one network fitted to the pooled tasks' points (the MAML paper's "pretrained" sinusoid baseline).

    Arguments:
        config (TrainConfig): ``learner.outer_lr`` (Adam), ``inner_lr`` and ``test_steps`` for fine-tuning.
        label_space (int): number of distinct training labels (the pre-training head's width).
    """

    trains_label_space_head = True
    uses_outer_optimizer = True

    def meta_step(self, episode: Episode, progress: float) -> dict[str, float]:
        optimizer = self.outer_optimizer()
        optimizer.zero_grad(set_to_none=True)
        x = torch.cat([episode.support_x, episode.query_x], dim=1).flatten(0, 1)
        y = torch.cat([episode.support_y, episode.query_y], dim=1)
        # class labels become the split's labels; real targets (regression) are pooled as they are
        targets = y.flatten(0, 1) if objectives.is_regression(y) else episode.class_ids.gather(1, y).flatten()
        outputs = self.network(x)
        loss = objectives.mean_loss(outputs, targets)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        accuracy = objectives.example_correct(outputs, targets).mean()
        return {"loss": float(loss.detach()), "accuracy": float(accuracy)}
