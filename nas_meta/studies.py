"""Reading search studies: the attributes nas-meta records on them, a trial's config and learner, summaries.

A trial's φ is written once, when the trial starts, as the training config YAML that ``nas-meta train``
would take (:attr:`TrialAttr.CONFIG`); everything after the search (export, compare, ``load_learner``) reads
it back from here instead of re-deriving it from the search space.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import optuna
import yaml
from optuna.artifacts import download_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from .checkpoint import WEIGHTS_FILE
from .config import TrainConfig, clip, short, train_config_from_dict
from .errors import CheckpointError, ConfigError
from .runtime import default_cache_dir
from .storage import (
    StorageHandle,
    artifact_store,
    as_handle,
    default_artifacts_dir,
    recorded_artifacts_dir,
    study_names,
)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


class TrialAttr:
    """The user-attribute keys nas-meta writes on a trial."""

    CONFIG: Final = "config"  # the resolved training config (YAML), written when the trial starts
    STRATEGY: Final = "strategy"
    WORKER: Final = "worker"  # host:pid of the worker process running it
    PID_NAMESPACE: Final = "pid_namespace"  # the worker process's PID namespace (runtime.pid_namespace)
    BASELINE: Final = "baseline"  # the baseline's name, on trials enqueued as baselines
    RETRY_OF: Final = "retry_of"  # the number of the failed trial this one runs again
    RETRY_WANTED: Final = "retry_wanted"  # the trial's own number, written before it is failed to be run again
    STATUS: Final = "status"  # completed, time_budget, diverged, pruned, out_of_memory, failed; running,
    # interrupted (Ctrl-C, SIGTERM), worker_lost (failed by the stale-trial check)
    REASON: Final = "reason"
    DEV_LOSS: Final = "dev_loss"
    DEV_ACCURACY: Final = "dev_accuracy"
    DEV_ACCURACY_CI95: Final = "dev_accuracy_ci95"
    PARAMETERS: Final = "parameters"
    ITERATIONS: Final = "iterations"
    TRAIN_SECONDS: Final = "train_seconds"
    DEVICE: Final = "device"
    LATENCY_MS: Final = "adaptation_latency_ms"
    ARTIFACT_ID: Final = "artifact_id"  # the trial's learner folder (zip) in the study's artifact store


class StudyAttr:
    """The user-attribute keys nas-meta writes on a study when it creates it (short values only)."""

    PROTOCOL: Final = "protocol"
    STUDY_FILE_NAME: Final = "study_file_name"
    VERSION: Final = "nas_meta_version"
    OBJECTIVES: Final = "objectives"  # comma-separated objective names
    ARTIFACTS_DIR: Final = "artifacts_dir"


class StudyText:
    """The study's files as it was created, kept once each as system attributes (out of ``optuna studies``'
    table): the study file (its storage URL without secrets, ``--set`` overrides appended) and the search space."""

    STUDY_FILE: Final = "nas_meta:study_file"
    SEARCH_SPACE: Final = "nas_meta:search_space"
    LEGACY: Final = {STUDY_FILE: "study_file", SEARCH_SPACE: "search_space"}  # user attributes, nas-meta 0.1


def study_texts(study: optuna.Study) -> dict[str, str]:
    """The recorded study file and search space texts (:class:`StudyText` keys); empty for a study nas-meta did
    not create."""
    system = study._storage.get_study_system_attrs(study._study_id)
    texts = {}
    for key, legacy in StudyText.LEGACY.items():
        value = system.get(key, study.user_attrs.get(legacy))
        if isinstance(value, str):
            texts[key] = value
    return texts


def record_study_texts(study: optuna.Study, texts: dict[str, str]) -> None:
    for key, text in texts.items():
        study._storage.set_study_system_attr(study._study_id, key, text)


def existing_study(storage: str | StorageHandle | BaseStorage, study_name: str) -> optuna.Study:
    """Load a study that must exist; an unknown name lists the studies the storage holds.

    Raises:
        ConfigError: no such study (the message lists the studies there).
        StorageError: the storage cannot be opened.
    """
    handle = as_handle(storage, read_only=True)
    names = study_names(handle)
    if study_name not in names:
        raise ConfigError(f"--study-name {study_name!r}: no such study in {handle.url}; studies there: {names}.")
    return optuna.load_study(study_name=study_name, storage=handle.storage)


def artifacts_dir(handle: StorageHandle, study: optuna.Study, given: str | Path | None = None) -> Path:
    """The study's artifact folder: ``given``, else the one it recorded (relative to its journal file, so a study
    moved with its artifacts still finds them), else the default beside the storage.

    Raises:
        ConfigError: none of these exists (the message names what was tried).
    """
    if given is not None:
        candidates = [Path(given)]
    else:
        recorded = study.user_attrs.get(StudyAttr.ARTIFACTS_DIR)
        candidates = [recorded_artifacts_dir(handle, str(recorded))] if recorded else []
        candidates.append(default_artifacts_dir(handle, study.study_name))
    for folder in candidates:
        if folder.is_dir():
            return folder
    raise ConfigError(f"study {study.study_name!r}: its artifact folder is not at {[str(c) for c in candidates]}; "
                      "pass artifacts=FOLDER (the folder that holds the study's learners).")


def trial_config(study: optuna.Study, trial: FrozenTrial) -> TrainConfig:
    """The training config a trial ran, as it recorded when it started.

    Raises:
        ConfigError: the trial recorded none (it was not run by ``nas-meta search``, or by an older version).
    """
    text = trial.user_attrs.get(TrialAttr.CONFIG)
    if not isinstance(text, str):
        raise ConfigError(f"trial {trial.number} of study {study.study_name!r} has no recorded training config; "
                          "it was not run by this version of nas-meta search.")
    return train_config_from_dict(yaml.safe_load(text))


def pick_trial(study: optuna.Study, trial: int | None) -> FrozenTrial:
    """Trial number ``trial`` of ``study``, or its best trial when ``trial`` is None.

    Raises:
        ConfigError: no such trial; no completed trial; a multi-objective study without a trial number.
    """
    if trial is not None:
        if isinstance(trial, bool) or not isinstance(trial, int):
            raise ConfigError(f"trial={short(trial)} is not allowed: expected a trial number (an integer).")
        numbers = {t.number: t for t in study.get_trials(deepcopy=False)}
        if trial not in numbers:
            raise ConfigError(f"trial {trial} is not in study {study.study_name!r} (trials 0..{len(numbers) - 1}).")
        return numbers[trial]
    if len(study.directions) > 1:
        raise ConfigError(f"study {study.study_name!r} is multi-objective: name a trial of its Pareto front "
                          f"{[t.number for t in study.best_trials]}.")
    try:
        return study.best_trial
    except ValueError:
        raise ConfigError(f"study {study.study_name!r} has no completed trial yet.") from None


def fetch_trial_learner(storage: str | StorageHandle | BaseStorage, study_name: str, trial: int | None = None, *,
                        artifacts: str | Path | None = None) -> Path:
    """Download a trial's saved learner from the study's artifact store into a folder and return it.

    Args:
        storage: the study's storage: a URL, or an Optuna storage object.
        study_name: the study.
        trial: a trial number (default: the best trial; for multi-objective studies a number is required).
        artifacts: the artifact folder (default: the one recorded on the study).

    Raises:
        ConfigError: unknown study, no finished trial, or a trial without saved weights.
        CheckpointError: the saved learner is missing from the artifact folder or damaged.
    """
    handle = as_handle(storage, read_only=True)
    study = existing_study(handle, study_name)
    frozen = pick_trial(study, trial)
    artifact_id = frozen.user_attrs.get(TrialAttr.ARTIFACT_ID)
    if artifact_id is None:
        raise ConfigError(f"trial {frozen.number} of {study_name!r} ({frozen.state.name}) has no saved learner; "
                          "only completed trials keep their weights.")
    base = artifacts_dir(handle, study, artifacts)
    target = base / "learners" / f"trial-{frozen.number}"
    if (target / WEIGHTS_FILE).exists():
        return target
    nearest = next((p for p in (target.parent, *target.parent.parents) if p.exists()), base)
    writable = os.access(nearest, os.W_OK)
    if writable:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            writable = False
    where = f"trial {frozen.number} of {study_name!r}"
    if not writable:  # a study shared read-only: its learners are unpacked into this user's cache instead
        target = Path(default_cache_dir()) / "learners" / str(artifact_id)
        if (target / WEIGHTS_FILE).exists():
            return target
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CheckpointError(f"{where}: its learner cannot be unpacked: the artifact folder {base} is read-only "
                                  f"and the cache folder {target.parent} cannot be made ({err.strerror or err}); set "
                                  "NAS_META_CACHE to a folder you can write.") from None
    try:
        unpacking = tempfile.TemporaryDirectory(dir=target.parent)
    except OSError as err:  # (an existing cache folder this user cannot write)
        raise CheckpointError(f"{where}: its learner cannot be unpacked into {target.parent} ({err.strerror or err}); "
                              "set NAS_META_CACHE to a folder you can write.") from None
    with unpacking as tmp:
        archive = Path(tmp) / "learner.zip"
        try:
            download_artifact(artifact_store=artifact_store(base), file_path=str(archive),
                              artifact_id=str(artifact_id))
            unpacked = Path(tmp) / "learner"
            with zipfile.ZipFile(archive) as z:
                z.extractall(unpacked)
        except ArtifactNotFound:
            raise CheckpointError(f"{where}: its learner {artifact_id} is missing from the artifact folder "
                                  f"{base}.") from None
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            raise CheckpointError(f"{where}: its saved learner in {base} is damaged ({clip(str(err), 100)}).") from None
        try:
            os.replace(unpacked, target)
        except OSError as err:  # another process unpacked it first (ENOTEMPTY): its copy serves
            if not (target / WEIGHTS_FILE).exists():
                raise CheckpointError(f"{where}: its learner cannot be unpacked into {target} "
                                      f"({err.strerror or err}).") from None
    return target


def counted_trials(study: optuna.Study) -> int:
    """Trials that count towards ``n_trials``: complete, pruned, running, or failed and not re-queued.

    A trial failed because its worker died is re-run (by heartbeat retry or the journal's stale-trial check);
    it is its re-run that counts, so a study ends with exactly ``n_trials`` results however many workers died.
    """
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    return sum(t.state in COUNTED or (t.state == TrialState.FAIL and t.number not in retried) for t in trials)


def retried_numbers(trials: Sequence[FrozenTrial]) -> set[int]:
    """The numbers of the trials that a trial among ``trials`` runs again (nas-meta's re-queue or Optuna's
    heartbeat retry)."""
    retried = {t.user_attrs[TrialAttr.RETRY_OF] for t in trials if isinstance(t.user_attrs.get(TrialAttr.RETRY_OF), int)}
    for t in trials:
        retried.update(t.system_attrs.get("retry_history", ()))  # Optuna's heartbeat retries
    return retried


def trial_line(trial: FrozenTrial) -> str:
    """One log line for a finished trial."""
    value = "-" if trial.values is None else ", ".join(f"{v:.4f}" for v in trial.values)
    acc = trial.user_attrs.get(TrialAttr.DEV_ACCURACY)
    acc_text = f" dev_acc={acc:.4f}" if isinstance(acc, float) else ""
    tag = f" [{trial.user_attrs[TrialAttr.BASELINE]} baseline]" if TrialAttr.BASELINE in trial.user_attrs else ""
    reason = trial.user_attrs.get(TrialAttr.REASON) or ""
    return (f"trial {trial.number} {trial.state.name} value={value}{acc_text} "
            f"strategy={trial.user_attrs.get(TrialAttr.STRATEGY, '?')}{tag}"
            + (f" ({reason})" if reason and trial.state != TrialState.COMPLETE else ""))


def summarize(study: optuna.Study) -> dict[str, Any]:
    """Best trial, its dev accuracy, the baselines' dev accuracy, and trial counts by state."""
    trials = study.get_trials(deepcopy=False)
    states = {s.name: sum(t.state == s for t in trials) for s in TrialState}
    out: dict[str, Any] = {"study": study.study_name, "trials": len(trials),
                           "states": {k: v for k, v in states.items() if v}}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete and len(study.directions) == 1:
        best = study.best_trial
        out["best"] = {"number": best.number, "dev_loss": best.value,
                       "dev_accuracy": best.user_attrs.get(TrialAttr.DEV_ACCURACY),
                       "strategy": best.user_attrs.get(TrialAttr.STRATEGY), "params": best.params}
    elif complete:
        out["pareto_front"] = [{"number": t.number, "values": t.values, "strategy": t.user_attrs.get(TrialAttr.STRATEGY)}
                               for t in study.best_trials]
    out["baselines"] = {t.user_attrs[TrialAttr.BASELINE]: {"number": t.number, "state": t.state.name,
                                                           "dev_loss": t.values[0] if t.values else None,
                                                           "dev_accuracy": t.user_attrs.get(TrialAttr.DEV_ACCURACY)}
                        for t in trials if TrialAttr.BASELINE in t.user_attrs and t.state in FINISHED}
    return out


def study_overview(handle: StorageHandle) -> list[dict[str, Any]]:
    """One row per study in a storage: name, trials, best dev loss (single objective), when it started."""
    rows = []
    for summary in sorted(optuna.get_all_study_summaries(handle.storage, include_best_trial=True),
                          key=lambda s: s.study_name):
        best = summary.best_trial.values[0] if summary.best_trial is not None and summary.best_trial.values else None
        rows.append({"study": summary.study_name, "trials": summary.n_trials, "best_dev_loss": best,
                     "started": summary.datetime_start.isoformat(timespec="seconds") if summary.datetime_start else None})
    return rows
