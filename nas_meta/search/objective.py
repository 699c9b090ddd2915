"""The Optuna objective: suggest φ, record it on the trial, meta-train it, report dev losses for pruning,
keep the learner in the study's artifact store, and return the objective value(s)."""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore, upload_artifact

from ..checkpoint import save_result
from ..config import SearchSpace, StudySpec, TrainConfig, dump_yaml
from ..errors import TrialDiverged
from ..learners import BaseLearner
from ..runtime import pid_namespace
from ..studies import TrialAttr
from ..training import DevScore, End, Record, Result, TaskSource, train_iter
from .space import suggest_config


def trial_config_for(trial: optuna.Trial, spec: StudySpec, space: SearchSpace, study_name: str) -> TrainConfig:
    """The candidate φ of ``trial``: the space's suggestion, named after the trial and seeded by its number."""
    config = suggest_config(trial, space, spec.base_config())
    return dataclasses.replace(config, name=f"{study_name}-trial{trial.number}", seed=spec.seed + trial.number)


def make_objective(
    spec: StudySpec,
    space: SearchSpace,
    workspace: TaskSource,
    *,
    study_name: str,
    device: str,
    artifacts: FileSystemArtifactStore | None,
    on_record: Callable[[int, Record], None] | None = None,
) -> Callable[[optuna.Trial], float | Sequence[float]]:
    """``objective(trial)``: suggest φ, meta-train it, report dev losses for pruning, return the objective(s).
    ``on_record(trial number, record)`` sees every training record (progress bars).

    Raises (from the objective):
        optuna.TrialPruned: the pruner stopped the trial.
        TrialDiverged: meta-training produced NaN/inf.
        torch.OutOfMemoryError, MemoryError: the candidate does not fit (``status`` = ``out_of_memory``).
    """
    wilcoxon = spec.pruner.name == "wilcoxon"
    prunes = spec.pruner.name != "none" and len(spec.objectives) == 1

    def objective(trial: optuna.Trial) -> float | Sequence[float]:
        config = trial_config_for(trial, spec, space, study_name)
        trial.set_user_attr(TrialAttr.STATUS, "running")  # (over a status copied by Optuna's heartbeat retry)
        trial.set_user_attr(TrialAttr.CONFIG, dump_yaml(config.to_dict()))
        trial.set_user_attr(TrialAttr.STRATEGY, config.learner.strategy)
        trial.set_user_attr(TrialAttr.PID_NAMESPACE, pid_namespace())  # first: the worker is judged with it
        trial.set_user_attr(TrialAttr.WORKER, f"{socket.gethostname()}:{os.getpid()}")
        result: Result | None = None
        try:
            for record in train_iter(config, device=device, workspace=workspace):
                if on_record is not None:
                    on_record(trial.number, record)
                if isinstance(record, DevScore) and prunes and not wilcoxon:
                    trial.report(record.dev_loss, record.step)
                    if not record.final and trial.should_prune():  # a finished trial is kept: nothing to save
                        _record_pruned(trial, record)
                        raise optuna.TrialPruned()
                elif isinstance(record, End) and record.interrupt is not None:
                    raise record.interrupt  # the trial is closed and queued again, not kept half-trained
                elif isinstance(record, End) and record.status == "diverged":
                    trial.set_user_attr(TrialAttr.STATUS, "diverged")
                    trial.set_user_attr(TrialAttr.REASON, record.reason)
                    raise TrialDiverged(record.reason)
                elif isinstance(record, Result):
                    result = record
                    if wilcoxon and prunes:
                        _report_per_task(trial, workspace, config, result.learner)
        except (torch.OutOfMemoryError, MemoryError) as err:
            trial.set_user_attr(TrialAttr.STATUS, "out_of_memory")
            trial.set_user_attr(TrialAttr.REASON, f"out of memory: {(str(err).splitlines() or [''])[0][:200]}")
            raise
        assert result is not None
        metrics = result.metrics
        dev_loss = float("nan") if metrics.dev_loss is None else metrics.dev_loss
        if not math.isfinite(dev_loss):  # nothing worth keeping: fail the trial with this reason
            trial.set_user_attr(TrialAttr.STATUS, "diverged")
            trial.set_user_attr(TrialAttr.REASON, f"the final dev loss is {dev_loss}")
            trial.set_user_attr(TrialAttr.DEV_LOSS, dev_loss)
            raise TrialDiverged(f"the final dev loss is {dev_loss}")
        for key, value in ((TrialAttr.STATUS, metrics.status), (TrialAttr.REASON, metrics.reason),
                           (TrialAttr.DEV_LOSS, metrics.dev_loss), (TrialAttr.DEV_ACCURACY, metrics.dev_accuracy),
                           (TrialAttr.DEV_ACCURACY_CI95, metrics.dev_accuracy_ci95),
                           (TrialAttr.ITERATIONS, metrics.iterations), (TrialAttr.PARAMETERS, metrics.parameters),
                           (TrialAttr.TRAIN_SECONDS, metrics.train_seconds), (TrialAttr.DEVICE, metrics.device)):
            if value is not None:
                trial.set_user_attr(key, value)
        values: list[float] = [dev_loss]
        if "parameters" in spec.objectives:
            values.append(float(metrics.parameters))
        if "latency" in spec.objectives:
            latency = adaptation_latency_ms(result.learner, workspace, config)
            trial.set_user_attr(TrialAttr.LATENCY_MS, latency)
            values.append(latency)
        if artifacts is not None:
            _keep_learner(trial, result, artifacts)
        return values[0] if len(values) == 1 else values

    return objective


def _record_pruned(trial: optuna.Trial, score: DevScore) -> None:
    trial.set_user_attr(TrialAttr.STATUS, "pruned")
    trial.set_user_attr(TrialAttr.REASON, f"pruned at iteration {score.iteration}, after {score.train_seconds:.1f} s "
                                          f"of meta-training (dev loss {score.dev_loss:.4f})")
    trial.set_user_attr(TrialAttr.TRAIN_SECONDS, score.train_seconds)
    trial.set_user_attr(TrialAttr.ITERATIONS, score.iteration)
    trial.set_user_attr(TrialAttr.DEV_LOSS, score.dev_loss)
    trial.set_user_attr(TrialAttr.DEV_ACCURACY, score.dev_accuracy)
    trial.set_user_attr(TrialAttr.DEV_ACCURACY_CI95, score.dev_accuracy_ci95)


def _keep_learner(trial: optuna.Trial, result: Result, artifacts: FileSystemArtifactStore) -> None:
    """Save the trained learner as a zip in the artifact store; its id goes on the trial."""
    with tempfile.TemporaryDirectory(prefix="nas-meta-trial-") as tmp:
        saved = save_result(Path(tmp) / "learner", result)
        assert saved.path is not None
        archive = shutil.make_archive(str(Path(tmp) / f"trial-{trial.number}"), "zip", saved.path)
        artifact_id = upload_artifact(artifact_store=artifacts, file_path=archive, study_or_trial=trial)
    trial.set_user_attr(TrialAttr.ARTIFACT_ID, artifact_id)


def adaptation_latency_ms(learner: BaseLearner, workspace: TaskSource, config: TrainConfig) -> float:
    """Milliseconds to adapt to one dev episode and score its query set (mean of 3, after a warm-up)."""
    t = config.task
    episode = next(iter(workspace.task_sampler("dev", t).fixed(1, config.evaluation.seed).batches(1)))
    learner.query_scores(episode)
    start = time.perf_counter()
    for _ in range(3):
        learner.query_scores(episode)
    return (time.perf_counter() - start) / 3 * 1000


def _report_per_task(trial: optuna.Trial, workspace: TaskSource, config: TrainConfig, learner: BaseLearner) -> None:
    """Wilcoxon pruning: report the final per-dev-task losses one batch at a time, stopping when pruned."""
    t = config.task
    fixed = workspace.task_sampler("dev", t).fixed(config.evaluation.dev_episodes, config.evaluation.seed)
    step = 0
    for episode in fixed.batches(10):
        losses, _ = learner.query_scores(episode)
        for loss in losses.tolist():
            trial.report(loss, step)
            step += 1
        if trial.should_prune():
            trial.set_user_attr(TrialAttr.STATUS, "pruned")
            trial.set_user_attr(TrialAttr.REASON, f"Wilcoxon test: worse than the best trial after {step} dev tasks")
            raise optuna.TrialPruned()
