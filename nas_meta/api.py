"""The Python entry points: train, evaluate, load a trained learner and use it, benchmark.

The CLI is a thin layer over these functions.
"""

from __future__ import annotations

import dataclasses
import resource
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import __version__
from .architectures import count_parameters
from .checkpoint import load_checkpoint, save_learner
from .config import TrainConfig
from .data import Omniglot, class_splits, load_omniglot, preprocess
from .episodes import Episode, EpisodeSampler, check_task_shape
from .errors import CheckpointError, ConfigError
from .functional import batched_forward
from .learners import BaseLearner, get_learner
from .runtime import resolve_device, seed_everything, tune_allocator
from .training import evaluate, meta_train


@dataclass(frozen=True)
class Workspace:
    """Omniglot loaded for one config: images on the device and the protocol's class splits."""

    dataset: Omniglot
    images: Tensor
    splits: dict[str, Any]

    def sampler(self, split: str, ways: int, shots: int, query: int) -> EpisodeSampler:
        return EpisodeSampler(self.images, self.splits[split], ways, shots, query, f"{split} split")


def load_workspace(config: TrainConfig, data: str | Path | None, device: torch.device,
                   progress: Callable[[int, int], None] | None = None) -> Workspace:
    """Load Omniglot at the config's image size onto ``device`` with its protocol's splits."""
    dataset = load_omniglot(data, config.data.image_size, progress=progress)
    splits = class_splits(config.data.protocol, dataset)
    for split in ("train", "dev"):
        n = len(splits[split])
        if config.task.ways > n:
            raise ConfigError(
                f"task.ways={config.task.ways} is more than the {n} classes of the {config.data.protocol!r} "
                f"protocol's {split} split; use at most {n}."
            )
    return Workspace(dataset, torch.from_numpy(dataset.images).to(device), splits)


def build_learner(config: TrainConfig, label_space: int, device: torch.device, seed: int) -> BaseLearner:
    """A freshly initialised learner on ``device``; its initial weights depend only on ``seed``."""
    learner = get_learner(config, label_space)
    learner.init_params(torch.Generator().manual_seed(seed))
    return learner.to(device)


def train_iter(
    config: TrainConfig,
    out: str | Path | None,
    *,
    data: str | Path | None = None,
    device: str = "auto",
    seed: int | None = None,
    workspace: Workspace | None = None,
) -> Iterator[dict[str, object]]:
    """Meta-train ``config``, yielding :func:`nas_meta.training.meta_train` records, then save to ``out``.

    The final record (``kind == "result"``) holds the learner, its metrics and where it was saved.
    """
    if seed is not None:
        config = dataclasses.replace(config, seed=seed)
    torch_device = resolve_device(device)
    seed_everything(config.seed)
    ws = workspace or load_workspace(config, data, torch_device)
    task = config.task
    train_sampler = ws.sampler("train", task.ways, task.shots, task.query)
    dev = ws.sampler("dev", task.ways, task.shots, task.query).fixed(config.evaluation.dev_episodes, config.evaluation.seed)
    learner = build_learner(config, ws.splits["train"].label_space, torch_device, config.seed)
    generator = torch.Generator().manual_seed(config.seed + 1)
    history: list[dict[str, object]] = []
    end: dict[str, object] = {}
    dev_last: dict[str, object] = {}
    for record in meta_train(learner, train_sampler, config.budget, meta_batch=config.learner.meta_batch,
                             generator=generator, dev=dev, eval_every=config.evaluation.every,
                             eval_every_seconds=config.evaluation.every_seconds,
                             eval_batch=config.evaluation.batch):
        if record["kind"] == "dev":
            dev_last = record
            history.append({k: v for k, v in record.items() if k != "dev_losses"})
        elif record["kind"] == "end":
            end = record
        yield record
    metrics: dict[str, object] = {
        "status": end["status"],
        "reason": end["reason"],
        "iterations": end["iterations"],
        "train_seconds": end["train_seconds"],
        "wall_seconds": end["elapsed"],
        "dev_loss": dev_last.get("dev_loss"),
        "dev_accuracy": dev_last.get("dev_accuracy"),
        "dev_accuracy_ci95": dev_last.get("dev_accuracy_ci95"),
        "dev_history": history,
        "parameters": count_parameters(learner.network),
        "label_space": ws.splits["train"].label_space,
        "protocol": config.data.protocol,
        "device": str(torch_device),
        "nas_meta_version": __version__,
    }
    saved = None
    if out is not None:
        saved = save_learner(out, config, learner.state_dict(), metrics)
    yield {"kind": "result", "learner": learner, "metrics": metrics, "path": saved}


def train(config: TrainConfig, out: str | Path | None, **kwargs: Any) -> dict[str, object]:
    """Meta-train and save; returns the metrics (see :func:`train_iter`)."""
    result: dict[str, object] = {}
    for record in train_iter(config, out, **kwargs):
        result = record
    return result["metrics"]  # type: ignore[return-value]


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


def load_learner(path: str | Path | None = None, device: str = "cpu", *, study_name: str | None = None,
                 storage: str | None = None, trial: int | None = None) -> TrainedLearner:
    """Load a learner saved by ``nas-meta train``, or a search trial's learner (weights verified, never unpickled).

    Args:
        path: a folder written by ``nas-meta train`` (or ``export``'s ``best/``).
        device: where to put it.
        study_name, storage: instead of ``path``: load from a search study's artifact store.
        trial: with ``study_name``: which trial (default: the best).

    Raises:
        CheckpointError: the folder is missing files, or its weights are not the ones it recorded.
        ConfigError: neither or both of ``path`` and ``study_name`` given; unknown study or trial.
    """
    if (path is None) == (study_name is None):
        raise ConfigError("load_learner needs either a folder path or study_name= (with storage=), not both.")
    if study_name is not None:
        from .search import fetch_trial_learner
        from .storage import default_storage_url

        path = fetch_trial_learner(storage or default_storage_url(study_name), study_name, trial)
    assert path is not None
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
    trained = load_learner(path, device)
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


def _synchronize(device: torch.device) -> None:
    """Wait for queued device work, so wall-clock timings cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(
    *,
    strategy: str = "maml",
    ways: int = 5,
    shots: int = 1,
    query: int = 1,
    meta_batch: int = 32,
    steps: int = 1,
    iterations: int = 20,
    warmup: int = 3,
    device: str = "auto",
    config: TrainConfig | None = None,
    tune_memory: bool = True,
) -> dict[str, object]:
    """Time meta-training steps on synthetic 1x28x28 episodes of the default network (compute only).

    ``tune_memory=False`` leaves the C allocator as it is (see :func:`nas_meta.runtime.tune_allocator`).
    """
    base = config or TrainConfig()
    cfg = dataclasses.replace(
        base,
        task=dataclasses.replace(base.task, ways=ways, shots=shots, query=query),
        learner=dataclasses.replace(base.learner, strategy=strategy, meta_batch=meta_batch, train_steps=steps),  # type: ignore[arg-type]
    )
    torch_device = resolve_device(device)
    seed_everything(0)
    allocator_tuned = tune_allocator() if tune_memory else False
    learner = build_learner(cfg, label_space=100, device=torch_device, seed=0)
    g = torch.Generator().manual_seed(0)
    size = cfg.data.image_size
    labels = torch.arange(ways).repeat_interleave
    episode = Episode(
        torch.rand(meta_batch, ways * shots, 1, size, size, generator=g).to(torch_device),
        labels(shots).expand(meta_batch, -1).contiguous().to(torch_device),
        torch.rand(meta_batch, ways * query, 1, size, size, generator=g).to(torch_device),
        labels(query).expand(meta_batch, -1).contiguous().to(torch_device),
        torch.randint(0, 100, (meta_batch, ways), generator=g).to(torch_device),
    )
    for _ in range(warmup):
        learner.meta_step(episode, 0.0)
    _synchronize(torch_device)
    if torch_device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for i in range(iterations):
        learner.meta_step(episode, i / max(iterations, 1))
    _synchronize(torch_device)
    seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() if torch_device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {
        "impl": f"nas-meta-{__version__}", "strategy": strategy, "first_order": strategy == "fomaml", "ways": ways,
        "shots": shots, "query": query, "meta_batch": meta_batch, "steps": steps, "iterations": iterations,
        "device": str(torch_device), "threads": torch.get_num_threads(), "meta_iters_per_s": iterations / seconds,
        "tasks_per_s": iterations * meta_batch / seconds, "peak_memory_mb": peak / 2**20,
        "allocator_tuned": allocator_tuned,
    }
