"""Meta-SGD: MAML with a learned learning rate for every parameter scalar.

Reference: Li, Zhou, Chen & Li (2017), "Meta-SGD: Learning to Learn Quickly for Few-Shot Learning", arXiv:1707.09835.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import TrainConfig
from ..functional import LearningRate
from .maml import MAML


def _key(name: str) -> str:
    return name.replace(".", "__")


class MetaSGD(MAML):
    """MAML whose inner learning rates (one per parameter scalar, initialised to ``inner_lr``) are meta-learned.

    Arguments:
        config (TrainConfig): as for :class:`MAML`.
        label_space (int): unused.
        first_order (bool, default False): treat inner gradients as constants (the lrs are still learned).
    """

    def __init__(self, config: TrainConfig, label_space: int, first_order: bool = False) -> None:
        super().__init__(config, label_space, first_order)
        self.inner_lrs = nn.ParameterDict(
            {_key(n): nn.Parameter(torch.full_like(p, config.learner.inner_lr)) for n, p in self.network.named_parameters()}
        )

    def init_params(self, generator: torch.Generator) -> None:
        super().init_params(generator)
        with torch.no_grad():
            for lr in self.inner_lrs.values():
                lr.fill_(self.config.learner.inner_lr)

    def inner_lr(self) -> LearningRate:
        return {n: self.inner_lrs[_key(n)] for n, _ in self.network.named_parameters()}
