"""nas-meta: search for few-shot learners (architecture + learning rates + initialization strategy) with Optuna."""

__version__ = "0.1.0"

from .api import AdaptedClassifier, TrainedLearner, bench, evaluate_learner, load_learner, train, train_iter
from .config import TrainConfig, load_train_config
from .errors import CheckpointError, ConfigError, DataError, NasMetaError

__all__ = [
    "AdaptedClassifier", "CheckpointError", "ConfigError", "DataError", "NasMetaError", "TrainConfig",
    "TrainedLearner", "__version__", "bench", "evaluate_learner", "load_learner", "load_train_config", "train",
    "train_iter",
]
