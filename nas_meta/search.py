"""Optuna search over φ = architecture + learning rates + initialization strategy.

This is the only module that calls ``trial.suggest_*``: :func:`suggest_config` turns a
:class:`SearchSpace` into a plain :class:`TrainConfig`, and :func:`make_objective` builds the
``objective(trial) -> float`` that meta-trains it and returns its mean dev query loss after adaptation.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import os
import shutil
import socket
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.trial import FrozenTrial, TrialState

from . import __version__
from .api import Workspace, load_workspace, train_iter
from .config import (
    SHIPPED_BASELINES,
    ParamSpec,
    SearchSpace,
    StudySpec,
    TrainConfig,
    apply_overrides,
    baseline_path,
    load_config,
    load_search_space,
    load_train_config,
    resolve_relative,
)
from .errors import ConfigError, NasMetaError
from .runtime import resolve_device
from .storage import HEARTBEAT_SECONDS, StorageHandle, default_storage_url, open_storage, study_names

logger = logging.getLogger(__name__)
# nas-meta relies on these Optuna features deliberately (heartbeat retry, grouped TPE, metric names); their
# "experimental" notices are for Optuna's users, not ours.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


class AtomicFileSystemArtifactStore(FileSystemArtifactStore):
    """Optuna's file-system artifact store, writing each artifact under a temporary name and renaming it,
    so a crash never leaves a half-written artifact behind an id."""

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        target = Path(self._get_filepath(artifact_id))
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                shutil.copyfileobj(content_body, f)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


class TrialDiverged(NasMetaError):
    """Meta-training produced NaN/inf: the trial ends as FAIL with the reason in its user attributes."""


# -- suggesting a candidate ----------------------------------------------------------------------------

def _active(param: ParamSpec, values: dict[str, Any]) -> bool:
    return all(values.get(name) in allowed for name, allowed in (param.when or {}).items())


def _suggest(trial: optuna.Trial, p: ParamSpec) -> Any:
    if p.type == "categorical":
        return trial.suggest_categorical(p.key, list(p.choices or ()))
    assert p.low is not None and p.high is not None
    if p.type == "int":
        return trial.suggest_int(p.key, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
    return trial.suggest_float(p.key, p.low, p.high, step=p.step, log=p.log)


def suggest_config(trial: optuna.Trial, space: SearchSpace, base: TrainConfig) -> TrainConfig:
    """Ask ``trial`` for every active parameter of ``space`` and apply the values to ``base``."""
    values: dict[str, Any] = {}
    overrides: dict[str, Any] = dict(space.fixed or {})
    for p in space.parameters:
        if _active(p, values):
            values[p.key] = _suggest(trial, p)
            overrides[p.name] = values[p.key]
    return apply_overrides(base, overrides)


def baseline_params(space: SearchSpace, config: TrainConfig) -> dict[str, Any]:
    """The Optuna parameters that make ``space`` reproduce ``config`` (for ``enqueue_trial``).

    Raises:
        ConfigError: a value of ``config`` lies outside the space.
    """
    flat = {f"{s}.{k}": v for s in ("architecture", "learner") for k, v in config.to_dict()[s].items()}
    params: dict[str, Any] = {}
    for p in space.parameters:
        if not _active(p, params):
            continue
        value = flat[p.name]
        inside = value in (p.choices or ()) if p.type == "categorical" else p.low <= value <= p.high  # type: ignore[operator,unused-ignore]
        if not inside:
            allowed = list(p.choices or ()) if p.type == "categorical" else f"[{p.low}, {p.high}]"
            raise ConfigError(f"baseline {config.name!r}: {p.name}={value!r} lies outside the search space's {allowed}.")
        params[p.key] = value
    for name, value in (space.fixed or {}).items():
        if flat.get(name) != value:
            raise ConfigError(f"baseline {config.name!r}: {name}={flat.get(name)!r} differs from the space's fixed {value!r}.")
    return params


def baseline_config(name: str, spec: StudySpec, study_path: str | Path) -> TrainConfig:
    """A baseline named in a study, with the study's data, task, budget and evaluation so it is scored exactly
    like every candidate: ``<study folder>/baselines/<name>-<W>w<S>s.yaml`` (else the shipped
    ``studies/baselines/`` file), or a YAML path.

    Raises:
        ConfigError: no such baseline file (the message lists those that exist).
    """
    if name.endswith((".yaml", ".yml")):
        path = resolve_relative(study_path, name)
    else:
        path = baseline_path(name, spec.task.ways, spec.task.shots,
                             [Path(study_path).parent / "baselines", SHIPPED_BASELINES])
    config = load_train_config(path)
    return dataclasses.replace(config, data=spec.data, task=spec.task, budget=spec.budget, evaluation=spec.evaluation,
                               seed=spec.seed)


# -- samplers, pruners ---------------------------------------------------------------------------------

def make_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    seed = spec.sampler.seed if spec.sampler.seed is not None else spec.seed
    n = spec.sampler.n_startup_trials
    name = spec.sampler.name
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n, multivariate=True, group=True,
                                          constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=n, warn_independent_sampling=False)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=n)
    return optuna.samplers.NSGAIISampler(seed=seed)


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    p = spec.pruner
    if p.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps)
    if p.name == "hyperband":
        every, budget = spec.evaluation.every_seconds, spec.budget.seconds
        if every is not None and budget is not None:  # resources in seconds of meta-training
            low, high = every, max(round(budget), every)
        else:  # resources in meta-iterations
            low, high = max(1, spec.evaluation.every), max(spec.budget.iterations, spec.evaluation.every)
        return optuna.pruners.HyperbandPruner(min_resource=low, max_resource=high,
                                              reduction_factor=p.reduction_factor)
    if p.name == "wilcoxon":
        return optuna.pruners.WilcoxonPruner(p_threshold=p.p_threshold, n_startup_steps=max(2, p.n_warmup_steps))
    return optuna.pruners.NopPruner()


# -- the objective -------------------------------------------------------------------------------------

def _adaptation_latency_ms(learner: Any, workspace: Workspace, config: TrainConfig) -> float:
    t = config.task
    episode = workspace.sampler("dev", t.ways, t.shots, t.query).fixed(1, config.evaluation.seed).batches(1)
    batch = next(iter(episode))
    learner.query_scores(batch)
    start = time.perf_counter()
    for _ in range(3):
        learner.query_scores(batch)
    return (time.perf_counter() - start) / 3 * 1000


def make_objective(
    spec: StudySpec,
    space: SearchSpace,
    workspace: Workspace,
    *,
    device: str,
    artifacts: FileSystemArtifactStore | None,
) -> Callable[[optuna.Trial], float | Sequence[float]]:
    """``objective(trial)``: suggest φ, meta-train it, report dev losses for pruning, return the objective(s)."""
    base = spec.base_config()
    wilcoxon = spec.pruner.name == "wilcoxon"
    prunes = spec.pruner.name != "none" and len(spec.objectives) == 1

    def objective(trial: optuna.Trial) -> float | Sequence[float]:
        config = suggest_config(trial, space, base)
        config = dataclasses.replace(config, name=f"{spec.name}-trial{trial.number}", seed=spec.seed + trial.number)
        trial.set_user_attr("strategy", config.learner.strategy)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        with tempfile.TemporaryDirectory(prefix="nas-meta-trial-") as tmp:
            out = Path(tmp) / "learner"
            result: dict[str, Any] = {}
            try:
                for record in train_iter(config, out, device=device, workspace=workspace):
                    if record["kind"] == "dev" and prunes and not wilcoxon:
                        trial.report(float(record["dev_loss"]), int(record["step"]))  # type: ignore[arg-type,call-overload]
                        if not record["final"] and trial.should_prune():  # a finished trial is kept: nothing to save
                            trial.set_user_attr("train_seconds", float(record["train_seconds"]))  # type: ignore[arg-type]
                            _finish_attrs(trial, record, "pruned", f"pruned at iteration {record['iteration']}, "
                                          f"after {float(record['train_seconds']):.1f} s of meta-training "  # type: ignore[arg-type]
                                          f"(dev loss {float(record['dev_loss']):.4f})")  # type: ignore[arg-type]
                            raise optuna.TrialPruned()
                    elif record["kind"] == "end" and record["status"] == "diverged":
                        trial.set_user_attr("status", "diverged")
                        trial.set_user_attr("reason", record["reason"])
                        raise TrialDiverged(str(record["reason"]))
                    elif record["kind"] == "result":
                        result = record
                        if wilcoxon and prunes:
                            _report_per_task(trial, workspace, config, result["learner"])
            except (torch.OutOfMemoryError, MemoryError) as err:
                trial.set_user_attr("status", "out_of_memory")
                trial.set_user_attr("reason", f"out of memory: {str(err).splitlines()[0][:200]}")
                raise
            metrics = result["metrics"]
            _finish_attrs(trial, metrics, str(metrics["status"]), str(metrics["reason"]))
            for key in ("parameters", "train_seconds", "iterations", "device"):
                trial.set_user_attr(key, metrics[key])
            values: list[float] = [float(metrics["dev_loss"])]
            if "parameters" in spec.objectives:
                values.append(float(metrics["parameters"]))
            if "latency" in spec.objectives:
                latency = _adaptation_latency_ms(result["learner"], workspace, config)
                trial.set_user_attr("adaptation_latency_ms", latency)
                values.append(latency)
            if artifacts is not None:
                archive = shutil.make_archive(str(Path(tmp) / f"trial-{trial.number}"), "zip", out)
                artifact_id = upload_artifact(artifact_store=artifacts, file_path=archive, study_or_trial=trial)
                trial.set_user_attr("artifact_id", artifact_id)
        if not math.isfinite(values[0]):
            raise TrialDiverged(f"the dev loss is {values[0]}")
        return values[0] if len(values) == 1 else values

    return objective


def _report_per_task(trial: optuna.Trial, workspace: Workspace, config: TrainConfig, learner: Any) -> None:
    """Wilcoxon pruning: report the final per-dev-task losses one batch at a time, stopping when pruned."""
    t = config.task
    fixed = workspace.sampler("dev", t.ways, t.shots, t.query).fixed(config.evaluation.dev_episodes, config.evaluation.seed)
    step = 0
    for episode in fixed.batches(10):
        losses, _ = learner.query_scores(episode)
        for loss in losses.tolist():
            trial.report(loss, step)
            step += 1
        if trial.should_prune():
            trial.set_user_attr("status", "pruned")
            trial.set_user_attr("reason", f"Wilcoxon test: worse than the best trial after {step} dev tasks")
            raise optuna.TrialPruned()


def _finish_attrs(trial: optuna.Trial, record: dict[str, Any], status: str, reason: str) -> None:
    trial.set_user_attr("status", status)
    trial.set_user_attr("reason", reason)
    for key in ("dev_loss", "dev_accuracy", "dev_accuracy_ci95"):
        if record.get(key) is not None:
            trial.set_user_attr(key, float(record[key]))
    if "iteration" in record:
        trial.set_user_attr("iterations", int(record["iteration"]))


# -- running a study -----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SearchSetup:
    """A study file resolved: its spec, space, storage and study name."""

    spec: StudySpec
    space: SearchSpace
    study_path: Path
    storage: StorageHandle
    study_name: str
    artifacts_dir: Path

    def artifact_store(self) -> FileSystemArtifactStore:
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        return AtomicFileSystemArtifactStore(str(self.artifacts_dir))


def prepare(study_path: str | Path, *, storage: str | None = None, study_name: str | None = None,
            artifacts: str | Path | None = None) -> SearchSetup:
    """Read and check the study file and its search space, and open the storage; runs no trial."""
    study_path = Path(study_path)
    spec = load_config(StudySpec, study_path)
    space = load_search_space(resolve_relative(study_path, spec.search_space))
    name = study_name or spec.name
    for baseline in spec.baselines:
        try:
            baseline_params(space, baseline_config(baseline, spec, study_path))
        except ConfigError as err:
            raise ConfigError(f"{study_path}: {err}") from None
    url = storage or spec.storage or default_storage_url(name)
    handle = open_storage(url)
    if artifacts is not None:
        artifacts_dir = Path(artifacts)
    elif handle.journal_path is not None:
        artifacts_dir = handle.journal_path.with_name(f"{handle.journal_path.stem}-artifacts")
    else:
        artifacts_dir = Path("runs") / f"{name}-artifacts"
    return SearchSetup(spec, space, study_path, handle, name, artifacts_dir)


def study_file_record(setup: SearchSetup) -> dict[str, str]:
    """What is recorded on the study: protocol, study file, search space and package version."""
    return {
        "protocol": setup.spec.data.protocol,
        "study_file": setup.study_path.read_text(),
        "study_file_name": str(setup.study_path),
        "search_space": resolve_relative(setup.study_path, setup.spec.search_space).read_text(),
        "nas_meta_version": __version__,
        "objectives": ",".join(setup.spec.objectives),
        "artifacts_dir": str(setup.artifacts_dir.resolve()),
    }


def open_study(setup: SearchSetup, *, force: bool = False) -> optuna.Study:
    """Create the study, or load it when it exists (refusing a different study file unless ``force``).

    New studies get the baselines enqueued as their first trials and the study file recorded.
    """
    with _slot_lock(setup):  # workers starting together create the study and enqueue the baselines once
        return _open_study_locked(setup, force)


def _open_study_locked(setup: SearchSetup, force: bool) -> optuna.Study:
    spec = setup.spec
    directions = [optuna.study.StudyDirection.MINIMIZE] * len(spec.objectives)
    study = optuna.create_study(study_name=setup.study_name, storage=setup.storage.storage, sampler=make_sampler(spec),
                                pruner=make_pruner(spec), directions=directions, load_if_exists=True)
    record = study_file_record(setup)
    stored = study.user_attrs.get("study_file")
    if stored is None:
        for key, value in record.items():
            study.set_user_attr(key, value)
        study.set_metric_names([o.replace("_", " ") for o in spec.objectives])  # names in the dashboard
        if not study.trials:
            for name in spec.baselines:
                config = baseline_config(name, spec, setup.study_path)
                study.enqueue_trial(baseline_params(setup.space, config), user_attrs={"baseline": name},
                                    skip_if_exists=True)
    elif stored != record["study_file"] or study.user_attrs.get("search_space") != record["search_space"]:
        diff = "".join(difflib.unified_diff(
            (stored + "\n").splitlines(True) + (study.user_attrs.get("search_space", "") + "\n").splitlines(True),
            (record["study_file"] + "\n").splitlines(True) + (record["search_space"] + "\n").splitlines(True),
            fromfile=f"study {setup.study_name!r} as created", tofile=str(setup.study_path)))
        if not force:
            raise ConfigError(
                f"study {setup.study_name!r} in {setup.storage.url} was created from a different study file or "
                f"search space; resuming it with {setup.study_path} would mix incomparable trials. Differences:\n"
                f"{diff}Use the original file, another --study-name, or --force to resume anyway."
            )
        logger.warning("resuming study %r with a different study file (--force)", setup.study_name)
    return study


def fail_stale_trials(study: optuna.Study, setup: SearchSetup) -> list[int]:
    """Journal storages have no heartbeat: mark RUNNING trials whose worker process on this host is gone
    as FAIL and re-enqueue their parameters. Returns the failed trial numbers."""
    if setup.storage.has_heartbeat:
        return []
    host = socket.gethostname()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = str(trial.user_attrs.get("worker", ""))
        worker_host, _, pid = worker.rpartition(":")
        if worker_host != host or not pid.isdigit() or _alive(int(pid)):
            continue
        study._storage.set_trial_user_attr(trial._trial_id, "reason", f"worker {worker} died (found at restart)")
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        _requeue(study, trial)
        failed.append(trial.number)
    if failed:
        logger.warning("marked trials %s of dead workers as failed and queued them again", failed)
    return failed


def _requeue(study: optuna.Study, trial: optuna.Trial | FrozenTrial) -> None:
    """Queue a failed trial's parameters again, remembering which trial it retries (and its baseline tag)."""
    keep = {k: v for k, v in trial.user_attrs.items() if k == "baseline"}
    study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number, **keep})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def counted_trials(study: optuna.Study) -> int:
    """Trials that count towards ``n_trials``: complete, pruned, running, or failed and not re-queued.

    A trial failed because its worker died is re-run (by heartbeat retry or :func:`fail_stale_trials`); it is
    its re-run that counts, so a study ends with exactly ``n_trials`` results however many workers died.
    """
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    for t in trials:
        retried.update(t.system_attrs.get("retry_history", ()))  # Optuna's heartbeat retries
    return sum(t.state in COUNTED or (t.state == TrialState.FAIL and t.number not in retried) for t in trials)


def trial_line(trial: FrozenTrial) -> str:
    value = "-" if trial.values is None else ", ".join(f"{v:.4f}" for v in trial.values)
    acc = trial.user_attrs.get("dev_accuracy")
    acc_text = f" dev_acc={acc:.4f}" if isinstance(acc, float) else ""
    tag = f" [{trial.user_attrs['baseline']} baseline]" if "baseline" in trial.user_attrs else ""
    reason = trial.user_attrs.get("reason") or ""
    return (f"trial {trial.number} {trial.state.name} value={value}{acc_text} "
            f"strategy={trial.user_attrs.get('strategy', '?')}{tag}" + (f" ({reason})" if reason and
                                                                        trial.state != TrialState.COMPLETE else ""))


def run_worker(
    setup: SearchSetup,
    *,
    n_trials: int,
    timeout: float | None = None,
    device: str = "auto",
    data: str | Path | None = None,
    force: bool = False,
    on_trial: Callable[[FrozenTrial], None] | None = None,
    study: optuna.Study | None = None,
) -> optuna.Study:
    """One worker: run trials until the study holds ``n_trials`` counted trials or ``timeout`` passes.

    ``study``: the study as :func:`open_study` returned it, when the caller has opened it already.
    """
    study = study if study is not None else open_study(setup, force=force)
    fail_stale_trials(study, setup)
    spec = setup.spec
    workspace = load_workspace(spec.base_config(), data, resolve_device(device))
    objective = make_objective(spec, setup.space, workspace, device=device, artifacts=setup.artifact_store())
    deadline = None if timeout is None else time.monotonic() + timeout

    def report(study: optuna.Study, trial: FrozenTrial) -> None:
        logger.info(trial_line(trial))
        if on_trial is not None:
            on_trial(trial)

    callbacks = [report]
    while True:
        if deadline is not None and deadline - time.monotonic() <= 0:
            break
        optuna.storages.fail_stale_trials(study)  # RDB heartbeat: fail (and retry) trials of dead workers
        fail_stale_trials(study, setup)  # journal: the same for dead workers on this machine
        with _slot_lock(setup):
            full = counted_trials(study) >= n_trials
            trial = None if full else study.ask()
        if trial is None:
            # The study is full, but a running trial may belong to a worker that died: stay until every running
            # trial has finished or been failed (and re-queued) by its heartbeat, so none is lost.
            if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                break
            time.sleep(min(HEARTBEAT_SECONDS, 5))
            continue
        _run_one(study, trial, objective, callbacks)
    return study


def _run_one(study: optuna.Study, trial: optuna.Trial, objective: Callable[[optuna.Trial], Any],
             callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]]) -> None:
    """Run ``objective`` on an asked trial and tell the result, as ``Study.optimize`` does (heartbeat included)."""
    from optuna.storages._heartbeat import get_heartbeat_thread

    state, values = TrialState.FAIL, None
    try:
        with get_heartbeat_thread(trial._trial_id, study._storage):
            result = objective(trial)
        values, state = result, TrialState.COMPLETE
    except optuna.TrialPruned:
        state = TrialState.PRUNED
    except (TrialDiverged, torch.OutOfMemoryError, MemoryError, NasMetaError, RuntimeError, ValueError) as err:
        if "reason" not in trial.user_attrs:
            trial.set_user_attr("reason", f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}")
        logger.warning("trial %d failed: %s", trial.number, err)
    except BaseException:  # Ctrl-C: close the trial and queue it again, so the storage stays consistent
        trial.set_user_attr("reason", "interrupted (Ctrl-C); queued again")
        study.tell(trial, state=TrialState.FAIL)
        _requeue(study, trial)
        raise
    frozen = study.tell(trial, values=values if state == TrialState.COMPLETE else None, state=state)
    for callback in callbacks:
        callback(study, frozen)


class _slot_lock:
    """Serialises "count trials, then ask" between workers so the study ends with exactly ``n_trials``.

    A file lock next to a journal file; a PostgreSQL advisory lock for postgresql storages; nothing for
    other storages (where a few extra trials are possible when many workers finish at once).
    """

    def __init__(self, setup: SearchSetup) -> None:
        self.setup = setup
        self._file: Any = None
        self._conn: Any = None

    def __enter__(self) -> None:
        handle = self.setup.storage
        if handle.journal_path is not None:
            import fcntl

            self._file = open(f"{handle.journal_path}.asklock", "a")
            fcntl.flock(self._file, fcntl.LOCK_EX)
        elif handle.url.startswith("postgresql"):
            from sqlalchemy import text

            self._conn = handle.storage.engine.connect()
            self._conn.execute(text("SELECT pg_advisory_lock(hashtext(:name))"), {"name": self.setup.study_name})

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            import fcntl

            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
        if self._conn is not None:
            from sqlalchemy import text

            self._conn.execute(text("SELECT pg_advisory_unlock(hashtext(:name))"), {"name": self.setup.study_name})
            self._conn.close()


def summarize(study: optuna.Study) -> dict[str, Any]:
    """Best trial, its dev accuracy, the baselines' dev accuracy, and trial counts by state."""
    trials = study.get_trials(deepcopy=False)
    states = {s.name: sum(t.state == s for t in trials) for s in TrialState}
    out: dict[str, Any] = {"study": study.study_name, "trials": len(trials),
                           "states": {k: v for k, v in states.items() if v}}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete and len(study.directions) == 1:
        best = study.best_trial
        out["best"] = {"number": best.number, "dev_loss": best.value, "dev_accuracy": best.user_attrs.get("dev_accuracy"),
                       "strategy": best.user_attrs.get("strategy"), "params": best.params}
    elif complete:
        out["pareto_front"] = [{"number": t.number, "values": t.values, "strategy": t.user_attrs.get("strategy")}
                               for t in study.best_trials]
    out["baselines"] = {t.user_attrs["baseline"]: {"number": t.number, "state": t.state.name,
                                                    "dev_loss": t.values[0] if t.values else None,
                                                    "dev_accuracy": t.user_attrs.get("dev_accuracy")}
                        for t in trials if "baseline" in t.user_attrs and t.state in FINISHED}
    return out


def existing_study(storage: str, study_name: str) -> optuna.Study:
    """Load a study that must exist; an unknown name lists the studies the storage holds."""
    handle = open_storage(storage)
    names = study_names(handle)
    if study_name not in names:
        raise ConfigError(f"--study-name {study_name!r}: no such study in {handle.url}; studies there: {names}.")
    return optuna.load_study(study_name=study_name, storage=handle.storage)


def worker_devices(device: str, workers: int) -> list[str]:
    """One device per worker: with ``auto`` and GPUs present, worker i gets ``cuda:(i mod GPUs)``."""
    if device == "auto" and torch.cuda.is_available():
        return [f"cuda:{i % torch.cuda.device_count()}" for i in range(workers)]
    return [device] * workers


def search(
    study_path: str | Path,
    *,
    storage: str | None = None,
    study_name: str | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    workers: int = 1,
    device: str = "auto",
    data: str | Path | None = None,
    force: bool = False,
    on_trial: Callable[[FrozenTrial], None] | None = None,
) -> dict[str, Any]:
    """Create or resume the study of ``study_path`` and run it until it holds ``n_trials`` trials.

    ``n_trials`` (default: the study file's) is the study's total over all workers and runs. With
    ``workers > 1``, that many worker processes share the storage (one per GPU when there are GPUs).

    Returns:
        :func:`summarize` of the study.
    """
    if workers < 1:
        raise ConfigError(f"--workers {workers} is not allowed: expected an integer >= 1.")
    setup = prepare(study_path, storage=storage, study_name=study_name)
    total = n_trials if n_trials is not None else setup.spec.n_trials
    study = open_study(setup, force=force)
    if counted_trials(study) >= total:
        raise AlreadyFinished(
            f"study {setup.study_name!r} in {setup.storage.url} already holds {counted_trials(study)} trials "
            f"(n_trials={total}); pass a larger --n-trials to run more."
        )
    if workers == 1:
        run_worker(setup, n_trials=total, timeout=timeout, device=device, data=data, on_trial=on_trial, study=study)
    else:
        _run_worker_processes(setup, total, timeout, workers, device, data, force)
    study = optuna.load_study(study_name=setup.study_name, storage=setup.storage.storage)
    from .export import trials_table
    from .report import attach_to_dashboard

    attach_to_dashboard(study, trials_table(study))  # the dashboard shows the report's figures
    return summarize(study)


class AlreadyFinished(NasMetaError):
    """The study already holds the requested number of trials."""


def _run_worker_processes(setup: SearchSetup, total: int, timeout: float | None, workers: int, device: str,
                          data: str | Path | None, force: bool) -> None:
    import subprocess
    import sys

    url = setup.storage.storage.url if setup.storage.kind == "rdb" else f"journal:{setup.storage.journal_path}"
    threads = max(1, (os.cpu_count() or 1) // workers)
    procs = []
    for i, dev in enumerate(worker_devices(device, workers)):
        cmd = [sys.executable, "-m", "nas_meta.cli", "-q", "search", str(setup.study_path), "--storage", url,
               "--study-name", setup.study_name, "--n-trials", str(total), "--device", dev, "--workers", "1",
               "--worker-of-pool"]
        if timeout is not None:
            cmd += ["--timeout", str(timeout)]
        if data is not None:
            cmd += ["--data", str(data)]
        if force:
            cmd.append("--force")
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "NAS_META_WORKER": str(i)}
        procs.append(subprocess.Popen(cmd, env=env))
    failed = [p.args for p in procs if p.wait() != 0]
    if failed:
        raise NasMetaError(f"{len(failed)} of {workers} worker processes exited with an error (see their messages above).")


def fetch_trial_learner(storage: str, study_name: str, trial: int | None = None, *,
                        artifacts: str | Path | None = None) -> Path:
    """Download a trial's saved learner from the study's artifact store into a folder and return it.

    Args:
        storage: the study's storage URL.
        study_name: the study.
        trial: a trial number (default: the best trial; for multi-objective studies a number is required).
        artifacts: the artifact folder (default: the one recorded on the study).

    Raises:
        ConfigError: unknown study, no finished trial, or a trial without saved weights.
    """
    import zipfile

    from optuna.artifacts import download_artifact

    study = existing_study(storage, study_name)
    if trial is None:
        if len(study.directions) > 1:
            raise ConfigError(f"study {study_name!r} is multi-objective: name a trial of its Pareto front "
                              f"{[t.number for t in study.best_trials]}.")
        try:
            frozen = study.best_trial
        except ValueError:
            raise ConfigError(f"study {study_name!r} has no completed trial yet.") from None
    else:
        numbers = {t.number: t for t in study.get_trials(deepcopy=False)}
        if trial not in numbers:
            raise ConfigError(f"trial {trial} is not in study {study_name!r} (trials 0..{len(numbers) - 1}).")
        frozen = numbers[trial]
    artifact_id = frozen.user_attrs.get("artifact_id")
    if artifact_id is None:
        raise ConfigError(f"trial {frozen.number} of {study_name!r} ({frozen.state.name}) has no saved learner; "
                          "only completed trials keep their weights.")
    base = Path(artifacts or study.user_attrs.get("artifacts_dir") or Path("runs") / f"{study_name}-artifacts")
    target = base / "learners" / f"trial-{frozen.number}"
    if not (target / "weights.safetensors").exists():
        with tempfile.TemporaryDirectory(dir=base) as tmp:
            archive = Path(tmp) / "learner.zip"
            download_artifact(artifact_store=FileSystemArtifactStore(str(base)), file_path=str(archive),
                              artifact_id=str(artifact_id))
            unpacked = Path(tmp) / "learner"
            with zipfile.ZipFile(archive) as z:
                z.extractall(unpacked)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(unpacked, target)
    return target


def trial_config(study: optuna.Study, trial: FrozenTrial) -> TrainConfig:
    """Rebuild a trial's training config from the study file and search space recorded on the study."""
    import yaml

    from .config import from_dict

    try:
        spec = from_dict(StudySpec, yaml.safe_load(study.user_attrs["study_file"]))
        space = from_dict(SearchSpace, yaml.safe_load(study.user_attrs["search_space"]))
    except KeyError:
        raise ConfigError(f"study {study.study_name!r} was not created by nas-meta search (no study file recorded).") from None
    overrides: dict[str, Any] = dict(space.fixed or {})
    values: dict[str, Any] = {}
    for p in space.parameters:
        if _active(p, values) and p.key in trial.params:
            values[p.key] = trial.params[p.key]
            overrides[p.name] = values[p.key]
    config = apply_overrides(spec.base_config(), overrides)
    return dataclasses.replace(config, name=f"{study.study_name}-trial{trial.number}", seed=spec.seed + trial.number)
