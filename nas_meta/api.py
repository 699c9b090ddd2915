"""The Python API: one import for what a researcher does with nas-meta. Each function delegates to the
module that does the work (``training``, ``checkpoint``, ``inference``, ``studies``, ``search``, ``report``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial

from .bench import bench
from .checkpoint import check_learner_target, save_result
from .config import MAX_SEED, PATH_OR_NONE, TrainConfig, check_arguments, load_train_config, path_or_none, whole
from .errors import ConfigError
from .export import trials_table
from .inference import AdaptedClassifier, AdaptedRegressor, TrainedLearner, evaluate_learner, load_learner_folder
from .report import attach_to_dashboard
from .search import SearchListener, search
from .storage import default_storage_url
from .studies import fetch_trial_learner, summarize
from .training import DevScore, End, Record, Result, Step, TaskSource
from .training import train_iter as _train_iter

logger = logging.getLogger(__name__)

__all__ = [
    "AdaptedClassifier", "AdaptedRegressor", "SearchListener", "TrainedLearner", "bench", "evaluate_learner", "load_learner", "run_search", "summarize",
    "train", "train_iter",
]


def train_iter(
    config: TrainConfig | str | Path,
    out: str | Path | None,
    *,
    data: str | Path | None = None,
    device: str = "auto",
    seed: int | None = None,
    workspace: TaskSource | None = None,
) -> Iterator[Step | DevScore | End | Result]:
    """Meta-train ``config`` (a TrainConfig or a training config file; records of
    :func:`nas_meta.training.train_iter`) and save the learner to ``out``.

    The last record, a :class:`~nas_meta.training.Result`, holds the learner, its metrics and the folder.

    Raises:
        ConfigError: a bad argument (named), config or output folder; DataError: the data.
    """
    check_arguments(
        (isinstance(config, (TrainConfig, str, Path)), "config", config, "a TrainConfig or a training config file"),
        (out is None or isinstance(out, (str, Path)), "out", out, "a folder path, or None"),
        (path_or_none(data), "data", data, PATH_OR_NONE),
        (isinstance(device, str), "device", device, "'auto', 'cpu', 'cuda' or 'cuda:N' (a string)"),
        (seed is None or whole(seed, 0, MAX_SEED), "seed", seed, f"an integer in [0, {MAX_SEED}], or None"),
    )
    if not isinstance(config, TrainConfig):
        config = load_train_config(config)
    if out is not None:
        check_learner_target(out)  # before training, not after it
    for record in _train_iter(config, data=data, device=device, seed=seed, workspace=workspace):
        if isinstance(record, Result) and out is not None:
            record = save_result(out, record)
            if record.metrics.status == "interrupted":
                logger.warning("%s: the learner trained so far (%d meta-iterations) is saved in %s",
                               record.metrics.reason, record.metrics.iterations, record.path)
        yield record


def train(config: TrainConfig | str | Path, out: str | Path | None, **kwargs: object) -> Result:
    """Meta-train and save (see :func:`train_iter`); returns the final record."""
    *_, result = train_iter(config, out, **kwargs)  # type: ignore[arg-type]
    assert isinstance(result, Result)
    return result


def load_learner(path: str | Path | None = None, device: str = "cpu", *, study_name: str | None = None,
                 storage: str | BaseStorage | None = None, trial: int | None = None,
                 artifacts: str | Path | None = None) -> TrainedLearner:
    """Load a learner saved by ``nas-meta train``, or a search trial's learner (weights verified, never unpickled).

    Args:
        path: a folder written by ``nas-meta train``.
        device: where to put it.
        study_name, storage: instead of ``path``: load from a search study's artifact store; ``storage`` is a URL
            or an Optuna storage object (default: ``journal:runs/<study_name>.journal``).
        trial: with ``study_name``: which trial (default: the best).
        artifacts: with ``study_name``: the study's artifact folder (default: the one it recorded, found relative to
            its journal file, else the default beside the storage).

    Raises:
        CheckpointError: the folder is missing files, or its weights are not the ones it recorded.
        ConfigError: neither or both of ``path`` and ``study_name`` given; unknown study or trial.
    """
    if (path is None) == (study_name is None):
        raise ConfigError("load_learner needs a folder path or study_name= (with storage=): exactly one of them.")
    if path is not None and (trial, storage, artifacts) != (None, None, None):
        raise ConfigError("load_learner: trial=, storage= and artifacts= go with study_name=, not with a folder path.")
    if study_name is not None:
        path = fetch_trial_learner(storage or default_storage_url(study_name), study_name, trial, artifacts=artifacts)
    assert path is not None
    return load_learner_folder(path, device)


class _DashboardFigures(SearchListener):
    """Passes events on to ``inner`` and keeps the report's figures on the study current for optuna-dashboard:
    re-drawn when a trial ends, at most every ``every`` seconds (each drawing is stored in the study)."""

    def __init__(self, inner: SearchListener | None, every: float = 60.0) -> None:
        self.inner = inner or SearchListener()
        self.every = every
        self.drawn_at = time.monotonic()

    def started(self, existing: int, total: int) -> None:
        self.inner.started(existing, total)

    def record(self, trial: int, record: Record) -> None:
        self.inner.record(trial, record)

    def counted(self, count: int) -> None:
        self.inner.counted(count)

    def finished(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.inner.finished(study, trial)
        if time.monotonic() - self.drawn_at >= self.every:
            attach_to_dashboard(study, trials_table(study))
            self.drawn_at = time.monotonic()


def run_search(study: str | Path, *, listener: SearchListener | None = None, **options: Any) -> optuna.Study:
    """Create or resume a search study and run it; for notebooks and scripts.

    Args:
        study: a study file, or the name of a shipped study (``smoke``, ``omniglot-5w1s``; ``nas-meta studies``).
        listener: sees the search's progress (:class:`nas_meta.search.SearchListener`).
        **options: as for :func:`nas_meta.search.search`: ``storage``, ``study_name``, ``n_trials``, ``timeout``,
            ``workers``, ``device``, ``data``, ``force``, ``overrides`` (``["budget.seconds=60"]``).

    Returns:
        The ``optuna.Study``, with the report's figures attached for optuna-dashboard (kept current while it ran).
    """
    result = search(study, listener=_DashboardFigures(listener), **options)
    attach_to_dashboard(result, trials_table(result))
    return result
