"""nas-meta: search for few-shot learners (architecture + learning rates + initialization strategy) with Optuna."""

from ._version import __version__
from .api import (
    AdaptedClassifier,
    AdaptedRegressor,
    TrainedLearner,
    bench,
    evaluate_learner,
    load_learner,
    run_search,
    summarize,
    train,
    train_iter,
)
from .config import TrainConfig, load_train_config
from .errors import CheckpointError, ConfigError, DataError, NasMetaError, StorageError

__all__ = [
    "AdaptedClassifier", "AdaptedRegressor", "CheckpointError", "ConfigError", "DataError", "NasMetaError", "StorageError", "TrainConfig",
    "TrainedLearner", "__version__", "bench", "evaluate_learner", "load_learner", "load_train_config", "run_search",
    "summarize", "train", "train_iter",
]
