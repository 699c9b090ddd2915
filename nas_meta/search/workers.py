"""Workers: the ask/tell loop that runs a study's trials, and the processes that share one study.

This is the one place nas-meta departs from ``study.optimize``: a worker asks for a trial only while the
study holds fewer than ``n_trials`` counted trials (under the study lock, so concurrent workers end with the
exact total), stays until running trials of dead workers are failed and queued again, and closes an
interrupted trial before it leaves.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from ..config import StudySpec, check_arguments, finite, path_or_none, whole
from ..data import resolve_data_dir
from ..errors import NasMetaError, StudyFinished, Terminated
from ..runtime import check_interrupt, die_with_parent, pid_namespace, resolve_device, tune_allocator
from ..storage import grace_seconds, heartbeat_seconds, last_heartbeat, trial_heartbeat
from ..studies import TrialAttr, counted_trials, retried_numbers, trial_line
from ..training import Record, load_workspace
from .objective import make_objective
from .setup import SearchSetup, open_study, prepare

logger = logging.getLogger(__name__)
StudyLock = Callable[[], AbstractContextManager[Any]]  # the study lock's factory (SearchSetup.lock)

# A candidate that fails in one of these ways is recorded as a failed trial and the search goes on; any other
# exception is a bug in nas-meta: the trial is failed with the real error, then the exception propagates.
CANDIDATE_FAILURES: tuple[type[BaseException], ...] = (NasMetaError, torch.OutOfMemoryError, MemoryError, RuntimeError)
OWN_FAILURES = ("failed", "out_of_memory", "diverged")  # statuses of a trial that failed by itself: never re-run


def run_trial(study: optuna.Study, trial: optuna.Trial, objective: Callable[[optuna.Trial], Any],
              callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
              lock: StudyLock = nullcontext) -> FrozenTrial:
    """Run ``objective`` on an asked trial and tell the result, as ``Study.optimize`` does, with a heartbeat
    (Optuna's on RDB storages, nas-meta's on the journal file).

    A pruned trial ends PRUNED; a candidate failure (:data:`CANDIDATE_FAILURES`) ends FAIL with its reason.
    Any other exception fails the trial with the real error as its reason and propagates; Ctrl-C or SIGTERM
    closes the trial as FAIL, queues its parameters again (:func:`queue_retries`, under ``lock``, the study lock)
    and propagates.
    """
    state, values = TrialState.FAIL, None
    try:
        with trial_heartbeat(study._storage, trial._trial_id):
            result = objective(trial)
        values, state = result, TrialState.COMPLETE
    except optuna.TrialPruned:
        state = TrialState.PRUNED
    except UpdateFinishedTrialError:  # (a RuntimeError too) another worker closed the trial while it ran
        _dropped(trial)
        return study._storage.get_trial(trial._trial_id)
    except CANDIDATE_FAILURES as err:
        if trial.user_attrs.get(TrialAttr.STATUS) in (None, "running"):  # the objective recorded no status of its own
            _note(trial, TrialAttr.STATUS, "failed")
        if TrialAttr.REASON not in trial.user_attrs:
            _note(trial, TrialAttr.REASON, _error_text(err))
        logger.warning("trial %d failed: %s", trial.number, err)
    except Exception as err:  # a bug: record it where the study shows it, then let it surface
        _note(trial, TrialAttr.STATUS, "failed")
        _note(trial, TrialAttr.REASON, _error_text(err))
        _tell(study, trial, None, TrialState.FAIL)
        raise
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM: close the trial and queue it again, then leave
        signal_name = "SIGTERM" if isinstance(err, Terminated) else "Ctrl-C"
        _note(trial, TrialAttr.RETRY_WANTED, trial.number)
        _note(trial, TrialAttr.STATUS, "interrupted")
        _note(trial, TrialAttr.REASON, f"interrupted ({signal_name}); queued again")
        if _tell(study, trial, None, TrialState.FAIL) is not None:
            queue_retries(study, lock)
        raise
    frozen = _tell(study, trial, values if state == TrialState.COMPLETE else None, state)
    if frozen is None:
        return study._storage.get_trial(trial._trial_id)
    for callback in callbacks:
        callback(study, frozen)
    return frozen


def _tell(study: optuna.Study, trial: optuna.Trial, values: Any, state: TrialState) -> FrozenTrial | None:
    """``study.tell``; None when the trial was closed meanwhile by another worker (failed as stale)."""
    if not study._storage.get_trial(trial._trial_id).state.is_finished():
        try:
            return study.tell(trial, values=values, state=state)
        except UpdateFinishedTrialError:  # closed between the look and the tell
            pass
    _dropped(trial)
    return None


def _dropped(trial: optuna.Trial) -> None:
    logger.warning("trial %d was closed by another worker while it ran (its heartbeat was late); its result is "
                   "dropped and its re-run counts", trial.number)


def _note(trial: optuna.Trial, key: str, value: Any) -> None:
    """``trial.set_user_attr``; nothing once another worker closed the trial (the close says why)."""
    try:
        trial.set_user_attr(key, value)
    except UpdateFinishedTrialError:
        pass


def _error_text(err: BaseException) -> str:
    first = (str(err).splitlines() or [""])[0][:300]
    return f"{type(err).__name__}: {first}"


def requeue(study: optuna.Study, trial: optuna.Trial | FrozenTrial) -> None:
    """Queue a failed trial's parameters again, remembering which trial it retries (and its baseline tag)."""
    keep = {k: v for k, v in trial.user_attrs.items() if k == TrialAttr.BASELINE}
    study.enqueue_trial(trial.params, user_attrs={TrialAttr.RETRY_OF: trial.number, **keep})


def queue_retries(study: optuna.Study, lock: StudyLock = nullcontext) -> list[int]:
    """Under the study lock, :func:`queue_missing_retries`: two workers never queue one trial twice."""
    with lock():
        return queue_missing_retries(study)


def queue_missing_retries(study: optuna.Study) -> list[int]:
    """Queue again every failed trial that asked to be run again (:data:`TrialAttr.RETRY_WANTED`, written before
    the trial was failed) and has no retry yet; returns their numbers. The caller holds the study lock.

    Failing a trial and queueing its retry are separate writes: a worker killed between them (SIGKILL after a
    SIGTERM's grace, a node lost) leaves the retry to whichever worker calls this next. A trial that ended in a
    failure of its own meanwhile (its worker recorded a failed status) is not run again.
    """
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    missing = [t for t in trials if t.state == TrialState.FAIL and _marked(t) and t.number not in retried
               and t.user_attrs.get(TrialAttr.STATUS) not in OWN_FAILURES]
    for trial in missing:
        requeue(study, trial)
    return [t.number for t in missing]


def settled_count(study: optuna.Study) -> int:
    """The study's :func:`counted_trials` once every failed trial that is to run again has its retry queued. The
    caller holds the study lock: Optuna's heartbeat (RDB storages) fails a dead worker's trial, then queues its
    retry, and under the lock no other worker sees the trial in between."""
    optuna.storages.fail_stale_trials(study)
    queue_missing_retries(study)  # a worker killed between failing a trial and queueing it again
    return counted_trials(study)


def _marked(trial: FrozenTrial) -> bool:
    """Whether the trial itself asked to be run again (a copy of another trial's attributes does not count)."""
    mark = trial.user_attrs.get(TrialAttr.RETRY_WANTED)
    return type(mark) is int and mark == trial.number


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_reason(trial: FrozenTrial, now: float, host: str) -> str | None:
    """Why a RUNNING journal trial's worker is gone, or None while it may be alive.

    Gone: its process on this host (and in this PID namespace) has exited, or its heartbeat is older than the grace
    period whoever holds its process id now (PID reuse) or wherever it ran (a journal copied from another machine,
    a container with the same hostname but its own process ids).
    """
    worker = str(trial.user_attrs.get(TrialAttr.WORKER, ""))
    worker_host, _, pid = worker.rpartition(":")
    namespace = trial.user_attrs.get(TrialAttr.PID_NAMESPACE)
    same_pids = namespace is None or namespace == pid_namespace()  # (None: a trial from before it was recorded)
    if worker_host == host and same_pids and pid.isdigit() and not _alive(int(pid)):
        return f"worker {worker} died (found at restart)"
    beat = last_heartbeat(trial)
    grace = grace_seconds()
    if beat is not None and now - beat > grace:
        return f"worker {worker or '?'} sent no heartbeat for {now - beat:.0f} s (grace {grace} s)"
    return None


def fail_stale_trials(study: optuna.Study, setup: SearchSetup) -> list[int]:
    """Journal storages have no heartbeat of Optuna's: mark RUNNING trials whose worker is gone
    (:func:`stale_reason`) as FAIL and queue their parameters again (:func:`queue_retries`). Returns the failed
    trial numbers."""
    if setup.storage.has_heartbeat:
        return []
    host, now = socket.gethostname(), time.time()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = stale_reason(trial, now, host)
        if reason is None:
            continue
        try:
            study._storage.set_trial_user_attr(trial._trial_id, TrialAttr.RETRY_WANTED, trial.number)
            study._storage.set_trial_user_attr(trial._trial_id, TrialAttr.REASON, reason)
            study._storage.set_trial_user_attr(trial._trial_id, TrialAttr.STATUS, "worker_lost")
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:  # its worker finished it just now
            continue
        failed.append(trial.number)
    if failed:
        queue_retries(study, setup.lock)
        logger.warning("marked trials %s of gone workers as failed and queued them again", failed)
    return failed


def _waiting_line(study: optuna.Study, n_trials: int) -> str:
    """What a worker waits for once the study is full: the running trials, their workers and heartbeats."""
    now = time.time()
    parts = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        beat = last_heartbeat(t)
        age = "no heartbeat" if beat is None else f"last heartbeat {now - beat:.0f} s ago"
        parts.append(f"trial {t.number} on {t.user_attrs.get(TrialAttr.WORKER, '?')} ({age})")
    return (f"the study holds its {n_trials} trials; waiting for the running ones to finish, or to be failed and "
            f"re-run once their heartbeat is {grace_seconds()} s late: " + "; ".join(parts))


class SearchListener:
    """What a search tells whoever watches it (the CLI's progress bars, a notebook); override what you need."""

    def started(self, existing: int, total: int) -> None:
        """The study holds ``existing`` counted trials of ``total``."""

    def record(self, trial: int, record: Record) -> None:
        """A training record of trial number ``trial`` run by this process."""

    def finished(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """A trial run by this process ended (complete, pruned or failed)."""

    def counted(self, count: int) -> None:
        """With worker processes: the study now holds ``count`` counted trials."""


def run_worker(
    setup: SearchSetup,
    *,
    n_trials: int,
    timeout: float | None = None,
    device: str = "auto",
    data: str | Path | None = None,
    force: bool = False,
    listener: SearchListener | None = None,
    study: optuna.Study | None = None,
) -> optuna.Study:
    """One worker: run trials until the study holds ``n_trials`` counted trials or ``timeout`` passes.

    ``study``: the study as :func:`open_study` returned it, when the caller has opened it already.
    """
    study = study if study is not None else open_study(setup, force=force)
    fail_stale_trials(study, setup)
    spec = setup.spec
    workspace = load_workspace(spec.base_config(), data, resolve_device(device))
    listener = listener or SearchListener()
    objective = make_objective(spec, setup.space, workspace, study_name=setup.study_name, device=device,
                               artifacts=setup.artifact_store(), on_record=listener.record)
    deadline = None if timeout is None else time.monotonic() + timeout
    said_at = -math.inf

    def report(study: optuna.Study, trial: FrozenTrial) -> None:
        logger.info(trial_line(trial))
        listener.finished(study, trial)

    while deadline is None or deadline - time.monotonic() > 0:
        check_interrupt()  # a deferred Ctrl-C or SIGTERM ends the worker here, between trials
        fail_stale_trials(study, setup)  # journal: fail and queue again the trials of dead workers
        with setup.lock():
            trial = None if settled_count(study) >= n_trials else study.ask()
        if trial is None:
            # The study is full, but a running trial may belong to a worker that died: stay until every running
            # trial has finished or been failed (and re-queued) by its heartbeat, so none is lost.
            if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                break
            if time.monotonic() - said_at >= 30:
                logger.info(_waiting_line(study, n_trials))
                said_at = time.monotonic()
            time.sleep(min(heartbeat_seconds(), 5))
            continue
        run_trial(study, trial, objective, [report], setup.lock)
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
    listener: SearchListener | None = None,
    overrides: Sequence[str] = (),
) -> optuna.Study:
    """Create or resume the study of ``study_path`` (a path or a shipped study's name, with ``--set``
    ``overrides``) and run it until it holds ``n_trials`` trials.

    ``n_trials`` (default: the study file's) is the study's total over all workers and runs. With
    ``workers > 1``, that many worker processes share the storage (one per GPU when there are GPUs).

    Returns:
        The study, reloaded after its workers finished.

    Raises:
        ConfigError: the study file, its space, a baseline or an argument is invalid.
        StudyFinished: the study already holds ``n_trials`` trials, none of them running.
    """
    _check_search_arguments(study_path, n_trials, timeout, workers, device, data, listener, overrides)


    def check(spec: StudySpec) -> None:  # everything that can be checked is checked before the storage is opened
        for dev in worker_devices(device, workers):
            resolve_device(dev)
        if spec.task.family_info.needs_data:  # (the sinusoid family generates its tasks)
            resolve_data_dir(data)
        heartbeat_seconds(), grace_seconds()  # a bad NAS_META_HEARTBEAT_* fails here, not inside every trial
        tune_allocator()  # likewise a bad NAS_META_TUNE_ALLOCATOR

    setup = prepare(study_path, storage=storage, study_name=study_name, overrides=overrides, check=check)
    total = n_trials if n_trials is not None else setup.spec.n_trials
    timeout = timeout if timeout is not None else setup.spec.timeout
    study = open_study(setup, force=force)
    fail_stale_trials(study, setup)  # a trial of a dead worker counts only once it has been re-queued
    with setup.lock():
        existing = settled_count(study)
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if existing >= total and not running:  # (a running trial may be a dead worker's, not yet past its grace)
        raise StudyFinished(
            f"study {setup.study_name!r} in {setup.storage.url} already holds {existing} trials "
            f"(n_trials={total}); pass a larger --n-trials to run more."
        )
    listener = listener or SearchListener()
    listener.started(existing, total)
    if workers == 1 or existing >= total:  # full: one worker waits for the running trials (and runs their re-runs)
        run_worker(setup, n_trials=total, timeout=timeout, device=device, data=data, listener=listener, study=study)
    else:
        _run_worker_processes(setup, study, total, timeout, workers, device, data, force, listener)
    return optuna.load_study(study_name=setup.study_name, storage=setup.storage.storage)


def _check_search_arguments(study: object, n_trials: object, timeout: object, workers: object, device: object,
                            data: object, listener: object, overrides: object) -> None:
    """The Python API's arguments, checked as the CLI checks its own (one message naming the argument).

    Raises:
        ConfigError: an argument of the wrong type or out of its range.
    """
    seconds = isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and finite(timeout)
    check_arguments(
        (isinstance(study, (str, Path)), "study", study, "a study file path or a shipped study's name"),
        (n_trials is None or whole(n_trials, 1, 10**6), "n_trials", n_trials,
         "an integer in [1, 10^6], or None for the study file's"),
        (timeout is None or (seconds and 0 < timeout <= 10**9), "timeout", timeout,  # type: ignore[operator]
         "a number of seconds in (0, 10^9], or None"),
        (whole(workers, 1, 1024), "workers", workers, "an integer in [1, 1024]"),
        (isinstance(device, str), "device", device, "'auto', 'cpu', 'cuda' or 'cuda:N' (a string)"),
        (path_or_none(data), "data", data, "a folder path, or None"),
        (listener is None or isinstance(listener, SearchListener), "listener", listener,
         "a nas_meta.search.SearchListener, or None"),
        (not isinstance(overrides, (str, bytes)) and all(isinstance(o, str) for o in overrides),  # type: ignore[attr-defined]
         "overrides", overrides, "a list of 'KEY=VALUE' strings"),
    )


def _run_worker_processes(setup: SearchSetup, study: optuna.Study, total: int, timeout: float | None, workers: int,
                          device: str, data: str | Path | None, force: bool, listener: SearchListener) -> None:
    """Start ``workers`` worker processes on the study and wait for them.

    The storage URL reaches them through their environment (``NAS_META_STORAGE``), never their command line,
    which any local user can read. Ctrl-C or SIGTERM here stops every worker the same way (each closes and
    re-queues its running trial); a worker whose parent dies, even by SIGKILL, receives SIGTERM.
    """
    url = setup.storage.storage.url if setup.storage.kind == "rdb" else f"journal:{setup.storage.journal_path}"
    threads = max(1, (os.cpu_count() or 1) // workers)
    procs = []
    for i, dev in enumerate(worker_devices(device, workers)):
        cmd = [sys.executable, "-m", "nas_meta.cli", "-q", "search", str(setup.study_path),
               "--study-name", setup.study_name, "--n-trials", str(total), "--device", dev, "--workers", "1",
               "--worker-of-pool"]
        if timeout is not None:
            cmd += ["--timeout", str(timeout)]
        if data is not None:
            cmd += ["--data", str(data)]
        if force:
            cmd.append("--force")
        for setting in setup.overrides:
            cmd += ["--set", setting]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "NAS_META_WORKER": str(i), "NAS_META_STORAGE": url}
        procs.append(subprocess.Popen(cmd, env=env, preexec_fn=die_with_parent))  # noqa: PLW1509
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(1)
            check_interrupt()
            listener.counted(counted_trials(study))
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt as err:
        stop_workers(procs, signal.SIGTERM if isinstance(err, Terminated) else signal.SIGINT)
        raise
    for i, code in enumerate(codes):
        if code < 0:  # killed: its trial is failed and run again by the others, or by the next search
            logger.warning("worker %d was killed by %s; its running trial is re-run", i, signal.Signals(-code).name)
    failed = [code for code in codes if code > 0]
    if failed:
        raise NasMetaError(f"{len(failed)} of {workers} worker processes exited with an error (see their messages above).")


def stop_workers(procs: Sequence[subprocess.Popen[bytes]], signum: int, grace: float = 60.0) -> None:
    """Send ``signum`` to the workers still running and wait for them to close their trials; after ``grace``
    seconds, kill those left (their trials are then failed and re-run as stale)."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signum)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
