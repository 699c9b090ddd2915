"""Workers: the ask/tell loop that runs a study's trials, and the processes that share one study.

This is the one place nas-meta departs from ``study.optimize``: a worker asks for a trial only while the
study holds fewer than ``n_trials`` counted trials (under the study lock, so concurrent workers end with the
exact total), stays until running trials of dead workers are failed and queued again, and closes an
interrupted trial before it leaves.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.storages._heartbeat import get_heartbeat_thread
from optuna.trial import FrozenTrial, TrialState

from ..errors import ConfigError, NasMetaError, StudyFinished
from ..runtime import resolve_device
from ..storage import HEARTBEAT_SECONDS
from ..studies import TrialAttr, counted_trials, trial_line
from ..training import load_workspace
from .objective import make_objective
from .setup import SearchSetup, open_study, prepare

logger = logging.getLogger(__name__)

# A candidate that fails in one of these ways is recorded as a failed trial and the search goes on; any other
# exception is a bug in nas-meta: the trial is failed with the real error, then the exception propagates.
CANDIDATE_FAILURES: tuple[type[BaseException], ...] = (NasMetaError, torch.OutOfMemoryError, MemoryError, RuntimeError)


def run_trial(study: optuna.Study, trial: optuna.Trial, objective: Callable[[optuna.Trial], Any],
              callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = ()) -> FrozenTrial:
    """Run ``objective`` on an asked trial and tell the result, as ``Study.optimize`` does (heartbeat included).

    A pruned trial ends PRUNED; a candidate failure (:data:`CANDIDATE_FAILURES`) ends FAIL with its reason.
    Any other exception fails the trial with the real error as its reason and propagates; Ctrl-C closes the
    trial as FAIL, queues its parameters again and propagates.
    """
    state, values = TrialState.FAIL, None
    try:
        with get_heartbeat_thread(trial._trial_id, study._storage):
            result = objective(trial)
        values, state = result, TrialState.COMPLETE
    except optuna.TrialPruned:
        state = TrialState.PRUNED
    except CANDIDATE_FAILURES as err:
        if TrialAttr.REASON not in trial.user_attrs:
            trial.set_user_attr(TrialAttr.REASON, _error_text(err))
        logger.warning("trial %d failed: %s", trial.number, err)
    except Exception as err:  # a bug: record it where the study shows it, then let it surface
        trial.set_user_attr(TrialAttr.STATUS, "failed")
        trial.set_user_attr(TrialAttr.REASON, _error_text(err))
        study.tell(trial, state=TrialState.FAIL)
        raise
    except BaseException:  # Ctrl-C: close the trial and queue it again, so the storage stays consistent
        trial.set_user_attr(TrialAttr.REASON, "interrupted (Ctrl-C); queued again")
        study.tell(trial, state=TrialState.FAIL)
        requeue(study, trial)
        raise
    frozen = study.tell(trial, values=values if state == TrialState.COMPLETE else None, state=state)
    for callback in callbacks:
        callback(study, frozen)
    return frozen


def _error_text(err: BaseException) -> str:
    first = (str(err).splitlines() or [""])[0][:300]
    return f"{type(err).__name__}: {first}"


def requeue(study: optuna.Study, trial: optuna.Trial | FrozenTrial) -> None:
    """Queue a failed trial's parameters again, remembering which trial it retries (and its baseline tag)."""
    keep = {k: v for k, v in trial.user_attrs.items() if k == TrialAttr.BASELINE}
    study.enqueue_trial(trial.params, user_attrs={TrialAttr.RETRY_OF: trial.number, **keep})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_stale_trials(study: optuna.Study, setup: SearchSetup) -> list[int]:
    """Journal storages have no heartbeat: mark RUNNING trials whose worker process on this host is gone
    as FAIL and re-enqueue their parameters. Returns the failed trial numbers."""
    if setup.storage.has_heartbeat:
        return []
    host = socket.gethostname()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = str(trial.user_attrs.get(TrialAttr.WORKER, ""))
        worker_host, _, pid = worker.rpartition(":")
        if worker_host != host or not pid.isdigit() or _alive(int(pid)):
            continue
        study._storage.set_trial_user_attr(trial._trial_id, TrialAttr.REASON, f"worker {worker} died (found at restart)")
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        requeue(study, trial)
        failed.append(trial.number)
    if failed:
        logger.warning("marked trials %s of dead workers as failed and queued them again", failed)
    return failed


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
    objective = make_objective(spec, setup.space, workspace, study_name=setup.study_name, device=device,
                               artifacts=setup.artifact_store())
    deadline = None if timeout is None else time.monotonic() + timeout

    def report(study: optuna.Study, trial: FrozenTrial) -> None:
        logger.info(trial_line(trial))
        if on_trial is not None:
            on_trial(trial)

    while deadline is None or deadline - time.monotonic() > 0:
        optuna.storages.fail_stale_trials(study)  # RDB heartbeat: fail (and retry) trials of dead workers
        fail_stale_trials(study, setup)  # journal: the same for dead workers on this machine
        with setup.lock():
            trial = None if counted_trials(study) >= n_trials else study.ask()
        if trial is None:
            # The study is full, but a running trial may belong to a worker that died: stay until every running
            # trial has finished or been failed (and re-queued) by its heartbeat, so none is lost.
            if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                break
            time.sleep(min(HEARTBEAT_SECONDS, 5))
            continue
        run_trial(study, trial, objective, [report])
    return study


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
) -> optuna.Study:
    """Create or resume the study of ``study_path`` and run it until it holds ``n_trials`` trials.

    ``n_trials`` (default: the study file's) is the study's total over all workers and runs. With
    ``workers > 1``, that many worker processes share the storage (one per GPU when there are GPUs).

    Returns:
        The study, reloaded after its workers finished.

    Raises:
        ConfigError: the study file, its space, a baseline or an argument is invalid.
        StudyFinished: the study already holds ``n_trials`` trials.
    """
    if workers < 1:
        raise ConfigError(f"--workers {workers} is not allowed: expected an integer >= 1.")
    setup = prepare(study_path, storage=storage, study_name=study_name)
    total = n_trials if n_trials is not None else setup.spec.n_trials
    study = open_study(setup, force=force)
    if counted_trials(study) >= total:
        raise StudyFinished(
            f"study {setup.study_name!r} in {setup.storage.url} already holds {counted_trials(study)} trials "
            f"(n_trials={total}); pass a larger --n-trials to run more."
        )
    if workers == 1:
        run_worker(setup, n_trials=total, timeout=timeout, device=device, data=data, on_trial=on_trial, study=study)
    else:
        _run_worker_processes(setup, total, timeout, workers, device, data, force)
    return optuna.load_study(study_name=setup.study_name, storage=setup.storage.storage)


def _run_worker_processes(setup: SearchSetup, total: int, timeout: float | None, workers: int, device: str,
                          data: str | Path | None, force: bool) -> None:
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
