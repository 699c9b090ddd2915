"""Initialization strategies, one module each, behind the :class:`BaseLearner` interface."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from ..config import STRATEGIES, TrainConfig
from ..errors import ConfigError
from .base import BaseLearner
from .maml import MAML
from .metasgd import MetaSGD
from .pretrain import Pretrain
from .random_init import RandomInit
from .reptile import Reptile

LEARNERS: dict[str, Callable[[TrainConfig, int], BaseLearner]] = {
    "maml": partial(MAML, first_order=False),
    "fomaml": partial(MAML, first_order=True),
    "metasgd": MetaSGD,
    "reptile": Reptile,
    "pretrain": Pretrain,
    "random": RandomInit,
}
assert set(LEARNERS) == set(STRATEGIES)


def get_learner(config: TrainConfig, label_space: int) -> BaseLearner:
    """Build the learner named by ``config.learner.strategy``.

    Raises:
        ConfigError: unknown strategy (the message lists the known ones).
    """
    name = config.learner.strategy
    if name not in LEARNERS:
        raise ConfigError(f"learner.strategy={name!r} is not one of {sorted(LEARNERS)}.")
    return LEARNERS[name](config, label_space)


__all__ = ["LEARNERS", "MAML", "BaseLearner", "MetaSGD", "Pretrain", "RandomInit", "Reptile", "get_learner"]
