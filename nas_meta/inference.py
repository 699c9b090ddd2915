"""Using a trained learner: load its folder, adapt it to a support set, classify images, score it on episodes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .checkpoint import load_checkpoint
from .config import TrainConfig
from .data import preprocess
from .episodes import check_task_shape
from .errors import CheckpointError, ConfigError
from .functional import batched_forward
from .learners import BaseLearner, get_learner
from .runtime import resolve_device
from .training import evaluate, load_workspace


class AdaptedClassifier:
    """A learner adapted to one support set; classifies query images of the same task.

    BatchNorm layers normalise with the statistics of the images given, as in MAML (transductive):
    pass a task's query images together.
    """

    def __init__(self, owner: TrainedLearner, params: dict[str, Tensor], classes: np.ndarray) -> None:
        self._owner = owner
        self._params = params
        self.classes = classes

    def predict_proba(self, images: Any) -> np.ndarray:
        """Class probabilities, shape ``(n, ways)``, columns in the order of :attr:`classes`."""
        x = self._owner.prepare(images)
        model = self._owner.learner.template(len(self.classes))
        with torch.no_grad():
            logits = batched_forward(model, self._params, {}, x[None])[0]
        return logits.softmax(dim=-1).cpu().numpy()

    def predict(self, images: Any) -> np.ndarray:
        """Predicted labels (values from the support labels)."""
        labels: np.ndarray = self.classes[self.predict_proba(images).argmax(axis=1)]
        return labels


class TrainedLearner:
    """A trained learner loaded from a folder by :func:`load_learner`."""

    def __init__(self, config: TrainConfig, learner: BaseLearner, metrics: dict[str, Any], device: torch.device) -> None:
        self.config = config
        self.learner = learner
        self.metrics = metrics
        self.device = device

    @property
    def image_size(self) -> int:
        return self.config.data.image_size

    def prepare(self, images: Any) -> Tensor:
        """Images as the network wants them: ``(n, 1, S, S)`` float ink in [0, 1] on the device.

        Accepts raw Omniglot drawings as decoded from the PNG files (``numpy.asarray(PIL.Image.open(f))``:
        105x105 bool, True = background), one array or a sequence of them, or already preprocessed
        images ``(n, S, S)`` / ``(n, 1, S, S)`` with ink in [0, 1] (numpy or torch).
        """
        if isinstance(images, Tensor):
            arrays: Any = images.detach().cpu().numpy()
        elif isinstance(images, np.ndarray):
            arrays = images
        else:
            arrays = [np.asarray(i) for i in images]
            arrays = np.stack(arrays) if arrays else np.empty((0, 0, 0))
        if arrays.ndim == 2:
            arrays = arrays[None]
        if arrays.ndim == 4 and arrays.shape[1] == 1:
            arrays = arrays[:, 0]
        if arrays.ndim != 3:
            raise ValueError(f"images must be (n, H, W) or (n, 1, H, W), but got shape {arrays.shape}.")
        size = self.image_size
        if arrays.dtype == bool or arrays.shape[1:] != (size, size):
            x = np.stack([preprocess(a, size) for a in arrays]).astype(np.float32) / 255.0
        else:
            x = arrays.astype(np.float32)
        return torch.from_numpy(x).unsqueeze(1).to(self.device)

    def adapt(self, images: Any, labels: Sequence[Any], *, steps: int | None = None) -> AdaptedClassifier:
        """Adapt to a support set (any number of classes for pretrain/random, the trained ways otherwise)."""
        x = self.prepare(images)
        classes, y = np.unique(np.asarray(labels), return_inverse=True)
        if len(y) != len(x):
            raise ValueError(f"got {len(x)} support images but {len(y)} labels; give one label per image.")
        y_t = torch.as_tensor(y, dtype=torch.long, device=self.device)
        params = self.learner.adapt(x[None], y_t[None], ways=len(classes), steps=steps)
        return AdaptedClassifier(self, {k: v.detach() for k, v in params.items()}, classes)


def load_learner_folder(path: str | Path, device: str = "cpu") -> TrainedLearner:
    """Load a learner folder written by ``nas-meta train`` (weights verified, never unpickled).

    Raises:
        CheckpointError: the folder is missing files, or its weights are not the ones it recorded or do not fit
            the network of its ``config.yaml``.
    """
    config, state, metrics = load_checkpoint(path)
    torch_device = resolve_device(device)
    learner = get_learner(config, int(metrics.get("label_space", config.task.ways)))
    try:
        learner.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: the weights do not fit the network in config.yaml ({err}).") from None
    learner.to(torch_device).eval()
    return TrainedLearner(config, learner, metrics, torch_device)


def evaluate_learner(
    path: str | Path,
    *,
    split: str = "test",
    episodes: int = 600,
    ways: int | None = None,
    shots: int | None = None,
    query: int | None = None,
    steps: int | None = None,
    data: str | Path | None = None,
    device: str = "auto",
    seed: int | None = None,
) -> dict[str, object]:
    """Score a saved learner on a fixed episode set of ``split`` (mean accuracy and loss, 95% CIs)."""
    if split not in ("dev", "test"):
        raise ConfigError(f"--split {split!r} is not one of ['dev', 'test'].")
    trained = load_learner_folder(path, device)
    config = trained.config
    ways = ways or config.task.ways
    shots = shots or config.task.shots
    query = query or config.task.query
    ws = load_workspace(config, data, trained.device)
    check_task_shape(len(ws.splits[split]), ways, shots, query, f"{config.data.protocol!r} protocol's {split} split")
    episode_seed = config.evaluation.seed if seed is None else seed
    fixed = ws.sampler(split, ways, shots, query).fixed(episodes, episode_seed)
    trained.learner.template(ways)  # fails early, with a clear message, for a fixed-ways learner
    result = evaluate(trained.learner, fixed, steps=steps, batch=config.evaluation.batch)
    return {
        "learner": str(path), "strategy": config.learner.strategy, "protocol": config.data.protocol, "split": split,
        "ways": ways, "shots": shots, "query": query, "steps": steps if steps is not None else config.learner.test_steps,
        "episode_seed": episode_seed, **result.summary(),
    }
