"""nas_meta.search.workers: ending/counting trials, stale trials, devices, the loop (fast; worker processes: slow)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.trial import TrialState, create_trial

import nas_meta.search.workers as workers_module
from nas_meta.errors import ConfigError, StorageError, Terminated, TrialDiverged
from nas_meta.search import fail_stale_trials, open_study, prepare, run_trial, run_worker, search, worker_devices
from nas_meta.storage import HEARTBEAT_ATTR, grace_seconds, open_storage
from nas_meta.studies import counted_trials
from tests.helpers_study import make_study, run, search_command, worker_env
from tests.search.chaos import pg_admin
from tests.search.helpers import journal_setup, raising, synthetic_workspace, write_tiny_study

slow = pytest.mark.slow
PG = "postgresql+psycopg2://postgres@127.0.0.1:5432"  # the PostgreSQL tests create and drop their own database there
# Workers on a database keep their learners in runs/<study>-artifacts under their working directory: the tests
# start them in tmp_path, not in the repository.


# -- how run_trial ends a trial ------------------------------------------------------------------------

def test_a_finished_trial_is_told_complete_and_a_pruned_one_pruned() -> None:
    study = optuna.create_study()
    seen: list[tuple[int, TrialState]] = []

    def prune_the_second(trial: optuna.Trial) -> float:
        if trial.number == 1:
            raise optuna.TrialPruned()
        return trial.suggest_float("x", 0.0, 1.0)

    for _ in range(2):
        run_trial(study, study.ask(), prune_the_second, [lambda s, t: seen.append((t.number, t.state))])
    assert seen == [(0, TrialState.COMPLETE), (1, TrialState.PRUNED)]
    assert study.trials[0].value == study.trials[0].params["x"] and study.trials[1].value is None


LONG = "y" * 400


@pytest.mark.parametrize(("error", "reason"), [
    (RuntimeError("boom\nsecond line"), "RuntimeError: boom"),
    (TrialDiverged("the loss became nan"), "TrialDiverged: the loss became nan"),
    (ConfigError("ways=9 is more than the 5 classes"), "ConfigError: ways=9 is more than the 5 classes"),
    (torch.OutOfMemoryError("CUDA out of memory\ndetails"), "OutOfMemoryError: CUDA out of memory"),
    (RuntimeError(LONG), f"RuntimeError: {LONG[:300]}"),
], ids=["runtime", "nas-meta", "config", "oom", "long"])
def test_a_candidate_failure_fails_the_trial_with_its_reason_and_the_search_goes_on(error: BaseException,
                                                                                   reason: str) -> None:
    study = optuna.create_study()
    seen: list[int] = []
    frozen = run_trial(study, study.ask(), raising(error), [lambda s, t: seen.append(t.number)])
    assert frozen.state == TrialState.FAIL and frozen.user_attrs["reason"] == reason
    assert seen == [0]  # the callbacks saw it, as for any finished trial
    assert len(study.trials) == 1  # nothing queued again: the candidate itself failed


def test_a_reason_the_objective_recorded_is_kept() -> None:
    def diverges(trial: optuna.Trial) -> float:
        trial.set_user_attr("reason", "the meta-training loss became nan at iteration 3")
        raise TrialDiverged("the meta-training loss became nan at iteration 3 (summary)")

    study = optuna.create_study()
    frozen = run_trial(study, study.ask(), diverges)
    assert frozen.user_attrs["reason"] == "the meta-training loss became nan at iteration 3"


@pytest.mark.parametrize(("error", "reason"), [
    (TypeError("unsupported operand type(s)"), "TypeError: unsupported operand type(s)"),
    (KeyError("missing"), "KeyError: 'missing'"),
])
def test_a_bug_fails_the_trial_with_the_real_error_and_propagates(error: BaseException, reason: str) -> None:
    study = optuna.create_study()
    with pytest.raises(type(error)) as info:
        run_trial(study, study.ask(), raising(error))
    assert info.value is error
    (trial,) = study.trials  # no retry queued: running a bug again gives the same bug
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["reason"] == reason and trial.user_attrs["status"] == "failed"


@pytest.mark.parametrize(("error", "signal_name"), [(KeyboardInterrupt(), "Ctrl-C"), (Terminated(), "SIGTERM")])
def test_an_interrupted_trial_is_closed_queued_again_and_the_interrupt_propagates(error: BaseException,
                                                                                  signal_name: str) -> None:
    study = optuna.create_study()
    study.enqueue_trial({"x": 0.25}, user_attrs={"baseline": "maml"})
    with pytest.raises(type(error)):
        run_trial(study, study.ask(), raising(error))
    first, retry = study.trials
    assert first.state == TrialState.FAIL and first.params == {"x": 0.25}
    assert signal_name in first.user_attrs["reason"] and "queued again" in first.user_attrs["reason"]
    assert retry.state == TrialState.WAITING and retry.user_attrs == {"retry_of": 0, "baseline": "maml"}
    assert counted_trials(study) == 0  # the interrupted trial is not a result; its re-run will be
    rerun = run_trial(study, study.ask(), lambda t: t.suggest_float("x", 0.0, 1.0))
    assert rerun.number == 1 and rerun.params == {"x": 0.25} and rerun.value == 0.25  # the same parameters
    assert counted_trials(study) == 1


def closed_by_another_worker(study: optuna.Study, trial: optuna.Trial) -> None:
    """What ``fail_stale_trials`` of another worker does to a trial whose heartbeat looked late."""
    study._storage.set_trial_user_attr(trial._trial_id, "reason", "stale (another worker)")
    study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)


@pytest.mark.parametrize("when", ["before-return", "on-report", "then-fails", "then-bug", "then-interrupted"])
def test_a_trial_closed_by_another_worker_while_it_ran_is_dropped_quietly(
        when: str, caplog: pytest.LogCaptureFixture) -> None:
    """Its owner neither crashes on its next write nor overwrites the close: the result is dropped with a warning
    (an interrupt or a bug still propagates, with no retry queued twice)."""
    study = optuna.create_study()
    errors = {"then-fails": RuntimeError("candidate failed"), "then-bug": KeyError("bug"),
              "then-interrupted": Terminated()}

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        closed_by_another_worker(study, trial)
        if when == "on-report":
            trial.set_user_attr("status", "completed")  # the objective's next write
        if when in errors:
            raise errors[when]
        return x

    expected = type(errors[when]) if when in ("then-bug", "then-interrupted") else None
    with caplog.at_level(logging.WARNING, logger="nas_meta.search.workers"):
        if expected is None:
            frozen = run_trial(study, study.ask(), objective)
            assert frozen.state == TrialState.FAIL
        else:
            with pytest.raises(expected):
                run_trial(study, study.ask(), objective)
    (trial,) = study.trials  # no second close, no re-run queued by the owner: the closer queues it
    assert trial.state == TrialState.FAIL and trial.user_attrs["reason"] == "stale (another worker)"
    assert "trial 0 was closed by another worker while it ran" in caplog.text


# -- which trials count towards n_trials ---------------------------------------------------------------

def add(study: optuna.Study, state: TrialState, **attrs: Any) -> None:
    if state == TrialState.RUNNING:
        study.ask()
    elif state == TrialState.WAITING:
        study.enqueue_trial({}, **attrs)
    else:
        study.add_trial(create_trial(state=state, value=1.0 if state == TrialState.COMPLETE else None, **attrs))


@pytest.mark.parametrize(("state", "counted"), [(TrialState.COMPLETE, 1), (TrialState.PRUNED, 1),
                                                 (TrialState.RUNNING, 1), (TrialState.FAIL, 1),
                                                 (TrialState.WAITING, 0)])
def test_a_trial_counts_by_its_state(state: TrialState, counted: int) -> None:
    study = optuna.create_study()
    add(study, TrialState.COMPLETE)
    add(study, state)
    assert counted_trials(study) == 1 + counted


def test_a_failed_trial_queued_again_counts_through_its_rerun_only() -> None:
    study = optuna.create_study()
    add(study, TrialState.FAIL)
    add(study, TrialState.WAITING, user_attrs={"retry_of": 0})
    assert counted_trials(study) == 0  # failed and re-queued; the re-run has not started
    rerun = study.ask()
    assert rerun.user_attrs == {"retry_of": 0} and counted_trials(study) == 1
    study.tell(rerun, state=TrialState.FAIL)  # the re-run fails too, and nobody queues it again: it counts
    assert counted_trials(study) == 1


def test_a_failed_trial_retried_by_optunas_heartbeat_counts_through_its_retry_only() -> None:
    study = optuna.create_study()
    add(study, TrialState.FAIL)
    add(study, TrialState.FAIL, system_attrs={"failed_trial": 0, "retry_history": [0]})
    add(study, TrialState.COMPLETE, system_attrs={"failed_trial": 0, "retry_history": [0, 1]})
    assert counted_trials(study) == 1


# -- stale trials of dead workers on a journal file ----------------------------------------------------

def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


def test_the_trial_of_a_dead_worker_on_this_host_is_failed_and_queued_again(tmp_path: Path) -> None:
    setup = journal_setup(tmp_path)
    study = optuna.create_study(study_name="tiny", storage=setup.storage.storage)
    host, dead = socket.gethostname(), _dead_pid()
    workers = {"dead": f"{host}:{dead}", "alive": f"{host}:{os.getpid()}", "elsewhere": f"another-{host}:{dead}",
               "unknown": None}
    numbers = {}
    for kind, worker in workers.items():
        trial = study.ask()
        trial.suggest_float("learner.inner_lr", 0.1, 0.5)
        if worker is not None:
            trial.set_user_attr("worker", worker)
        if kind == "dead":
            trial.set_user_attr("baseline", "maml")
        numbers[kind] = trial.number
    assert counted_trials(study) == 4

    assert fail_stale_trials(study, setup) == [numbers["dead"]]
    trials = study.get_trials()
    states = {kind: trials[number].state for kind, number in numbers.items()}
    assert states == {"dead": TrialState.FAIL, "alive": TrialState.RUNNING, "elsewhere": TrialState.RUNNING,
                      "unknown": TrialState.RUNNING}
    assert trials[numbers["dead"]].user_attrs["reason"] == f"worker {host}:{dead} died (found at restart)"
    (retry,) = study.get_trials(states=(TrialState.WAITING,))
    assert retry.user_attrs == {"retry_of": numbers["dead"], "baseline": "maml"}
    assert retry.system_attrs["fixed_params"] == trials[numbers["dead"]].params
    assert counted_trials(study) == 3  # the dead worker's trial counts through its re-run only
    assert fail_stale_trials(study, setup) == []  # nothing left to fail


def test_a_process_id_counts_only_in_the_pid_namespace_it_was_recorded_in(tmp_path: Path) -> None:
    """Containers sharing a hostname and a journal file each have their own process ids: a worker alive in another
    container is not called dead because its id is free in this one (its heartbeat decides)."""
    setup = journal_setup(tmp_path)
    study = optuna.create_study(study_name="tiny", storage=setup.storage.storage)
    worker = f"{socket.gethostname()}:{_dead_pid()}"
    numbers = {}
    for kind, namespace in {"this namespace": workers_module.pid_namespace(), "another": "pid:[1]"}.items():
        trial = study.ask()
        trial.set_user_attr("worker", worker)
        trial.set_user_attr("pid_namespace", namespace)
        study._storage.set_trial_system_attr(trial._trial_id, HEARTBEAT_ATTR, time.time())
        numbers[kind] = trial.number
    assert workers_module.pid_namespace().startswith("pid:[")  # Linux: the test means something here
    assert fail_stale_trials(study, setup) == [numbers["this namespace"]]
    assert study.trials[numbers["another"]].state == TrialState.RUNNING


def test_the_trial_of_a_worker_whose_heartbeat_stopped_is_failed_wherever_it_ran(tmp_path: Path) -> None:
    setup = journal_setup(tmp_path)
    study = optuna.create_study(study_name="tiny", storage=setup.storage.storage)
    stopped, beating = study.ask(), study.ask()
    for trial in (stopped, beating):
        trial.set_user_attr("worker", f"another-{socket.gethostname()}:1")
    study._storage.set_trial_system_attr(stopped._trial_id, HEARTBEAT_ATTR, time.time() - grace_seconds() - 5)
    study._storage.set_trial_system_attr(beating._trial_id, HEARTBEAT_ATTR, time.time())
    assert fail_stale_trials(study, setup) == [stopped.number]
    assert "sent no heartbeat" in study.trials[stopped.number].user_attrs["reason"]
    assert study.trials[beating.number].state == TrialState.RUNNING


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_stale_trials_are_left_to_optunas_heartbeat_on_a_database(tmp_path: Path) -> None:
    setup = journal_setup(tmp_path, url=f"sqlite:///{tmp_path / 'tiny.db'}")
    study = optuna.create_study(study_name="tiny", storage=setup.storage.storage)
    trial = study.ask()
    trial.set_user_attr("worker", f"{socket.gethostname()}:{_dead_pid()}")
    assert fail_stale_trials(study, setup) == []
    assert study.trials[0].state == TrialState.RUNNING


# -- devices -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("gpus", "device", "expected"), [
    (2, "auto", ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]),
    (3, "auto", ["cuda:0", "cuda:1", "cuda:2", "cuda:0", "cuda:1"]),
    (2, "cuda:1", ["cuda:1"] * 5),
    (2, "cpu", ["cpu"] * 5),
    (0, "auto", ["auto"] * 5),  # no GPU: every worker resolves auto to the CPU itself
    (0, "cpu", ["cpu"] * 5),
])
def test_worker_devices(monkeypatch: pytest.MonkeyPatch, gpus: int, device: str, expected: list[str]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    assert worker_devices(device, 5) == expected


# -- the worker loop on synthetic data -----------------------------------------------------------------

@pytest.fixture
def synthetic_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers load a synthetic workspace instead of Omniglot."""
    monkeypatch.setattr(workers_module, "load_workspace",
                        lambda config, data, device: synthetic_workspace(config.data.image_size))


@pytest.mark.usefixtures("synthetic_data")
def test_a_worker_runs_the_study_up_to_n_trials(tmp_path: Path) -> None:
    setup = prepare(write_tiny_study(tmp_path), storage=f"journal:{tmp_path / 'tiny.journal'}")
    study = run_worker(setup, n_trials=2, device="cpu")
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE] * 2
    assert all("artifact_id" in t.user_attrs for t in study.get_trials())  # learners kept beside the journal
    run_worker(setup, n_trials=2, device="cpu")  # full: runs nothing
    assert len(study.get_trials()) == 2
    run_worker(setup, n_trials=3, device="cpu")  # a larger total: runs the one missing
    assert [t.number for t in study.get_trials()] == [0, 1, 2] and counted_trials(study) == 3


@pytest.mark.usefixtures("synthetic_data")
def test_a_worker_reruns_the_trial_of_a_dead_one_and_ends_with_n_results(tmp_path: Path) -> None:
    setup = prepare(write_tiny_study(tmp_path), storage=f"journal:{tmp_path / 'tiny.journal'}")
    study = optuna.create_study(study_name="tiny", storage=setup.storage.storage)
    orphan = study.ask()
    lr = orphan.suggest_float("learner.inner_lr", 0.1, 0.5)
    orphan.set_user_attr("worker", f"{socket.gethostname()}:{_dead_pid()}")
    run_worker(setup, n_trials=2, device="cpu")
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert "died" in trials[0].user_attrs["reason"]
    assert trials[1].user_attrs["retry_of"] == 0 and trials[1].params == {"learner.inner_lr": lr}
    assert counted_trials(study) == 2


def test_search_refuses_fewer_than_one_worker(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^workers=0 is not allowed: expected an integer in \[1, 1024\]\.$"):
        search(write_tiny_study(tmp_path), storage=f"journal:{tmp_path / 'tiny.journal'}", workers=0)
    assert not (tmp_path / "tiny.journal").exists()  # refused before any storage was opened


# -- slow: many workers on one study, crash recovery, storage errors -----------------------------------



@pytest.fixture
def pg_url() -> Iterator[str]:
    name = f"nas_meta_test_{uuid.uuid4().hex[:10]}"
    pg_admin(f"CREATE DATABASE {name}")
    try:
        yield f"{PG}/{name}"
    finally:
        pg_admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        pg_admin(f"DROP DATABASE IF EXISTS {name}")


def load(url: str, name: str = "tiny") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(url).storage)


def assert_exact(study: optuna.Study, n: int) -> None:
    trials = study.get_trials()
    assert len(trials) == n
    assert sorted(t.number for t in trials) == list(range(n))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials), [t.state for t in trials]
    baselines = [t.user_attrs["baseline"] for t in trials if "baseline" in t.user_attrs]
    assert sorted(baselines) == ["maml", "reptile"]  # each enqueued baseline ran once


@slow
def test_three_postgres_workers_run_exactly_n_trials(tmp_path: Path, omniglot: Path, pg_url: str) -> None:
    study = make_study(tmp_path, n_trials=7)
    procs = [subprocess.Popen(search_command(study, pg_url, omniglot, "--n-trials", "7"), cwd=tmp_path,
                              env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outputs = [p.communicate(timeout=900) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outputs]
    assert_exact(load(pg_url), 7)
    workers = {t.user_attrs["worker"] for t in load(pg_url).trials}
    assert len(workers) >= 2  # the work was shared


@slow
def test_workers_flag_on_the_journal_file(tmp_path: Path, omniglot: Path) -> None:
    study = make_study(tmp_path, n_trials=5)
    url = f"journal:{tmp_path / 'runs' / 'tiny.journal'}"
    done = run(search_command(study, url, omniglot, "--workers", "2"), env=worker_env())
    assert done.returncode == 0, done.stderr[-3000:]
    assert_exact(load(url), 5)


def _wait_for(url: str, predicate: Any, timeout: float = 300.0) -> optuna.Study:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            study = load(url)
            if predicate(study.get_trials()):
                return study
        except KeyError:
            pass
        time.sleep(0.5)
    raise AssertionError("timed out waiting for the study")


def _kill_mid_trial(study_file: Path, url: str, omniglot: Path, env: dict[str, str]) -> dict[int, tuple[Any, ...]]:
    proc = subprocess.Popen(search_command(study_file, url, omniglot), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=study_file.parent)
    _wait_for(url, lambda ts: sum(t.state == TrialState.COMPLETE for t in ts) >= 1
              and any(t.state == TrialState.RUNNING for t in ts))
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    study = load(url)
    return {t.number: (t.state, t.values, dict(t.user_attrs)) for t in study.get_trials()}


@slow
def test_sigkilled_postgres_worker_trial_is_failed_and_rerun(tmp_path: Path, omniglot: Path, pg_url: str) -> None:
    study_file = make_study(tmp_path, iterations=60, every=20, n_trials=4)
    env = worker_env(NAS_META_HEARTBEAT_SECONDS="1", NAS_META_HEARTBEAT_GRACE_SECONDS="3")
    before = _kill_mid_trial(study_file, pg_url, omniglot, env)
    killed = [n for n, (state, _, _) in before.items() if state == TrialState.RUNNING]
    assert len(killed) == 1
    time.sleep(4)  # let the heartbeat go stale
    done = run(search_command(study_file, pg_url, omniglot), env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = {t.number: t for t in load(pg_url).get_trials()}
    assert trials[killed[0]].state == TrialState.FAIL
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == killed[0]]
    assert len(retries) == 1 and retries[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retries[0].params == trials[killed[0]].params
    for number, (state, values, attrs) in before.items():
        if state == TrialState.COMPLETE:
            assert trials[number].values == values and trials[number].user_attrs == attrs
    finished = [t for t in trials.values() if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 4


@slow
def test_sigkilled_single_worker_on_the_default_storage_resumes(tmp_path: Path, omniglot: Path) -> None:
    study_file = make_study(tmp_path, iterations=60, every=20, n_trials=4)
    url = f"journal:{tmp_path / 'runs' / 'tiny.journal'}"
    before = _kill_mid_trial(study_file, url, omniglot, worker_env())
    killed = [n for n, (state, _, _) in before.items() if state == TrialState.RUNNING]
    start = time.monotonic()
    done = run(search_command(study_file, url, omniglot), env=worker_env())
    assert done.returncode == 0, done.stderr[-3000:]
    assert "marked trials" in done.stderr and "failed and queued them again" in done.stderr
    trials = {t.number: t for t in load(url).get_trials()}
    assert trials[killed[0]].state == TrialState.FAIL  # not left RUNNING forever
    assert "died" in trials[killed[0]].user_attrs["reason"]
    for number, (state, values, attrs) in before.items():
        if state == TrialState.COMPLETE:
            assert trials[number].values == values and trials[number].user_attrs == attrs
    finished = [t for t in trials.values() if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 4
    assert time.monotonic() - start < 600


@slow
@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgres//nohost", "is not a storage URL nas-meta knows; use journal:PATH"),
        ("redis://127.0.0.1:6379/0", "--storage 'redis://127.0.0.1:6379/0': the scheme 'redis' is not one of ["),
        ("postgresql+psycopg2://postgres:hunter2@127.0.0.1:1/x", "cannot open storage postgresql+psycopg2://postgres:***@127.0.0.1:1/x"),
        ("postgresql+psycopg2://nobody_nas_meta:hunter2@127.0.0.1:5432/postgres", "role \"nobody_nas_meta\" does not exist"),
    ],
)
def test_bad_storage_urls_are_reported_without_the_password(tmp_path: Path, omniglot: Path, url: str, message: str) -> None:
    study = make_study(tmp_path)
    done = run(search_command(study, url, omniglot))
    assert done.returncode == 2
    assert message in done.stderr and "hunter2" not in done.stderr and "Traceback" not in done.stderr
    with pytest.raises((ConfigError, StorageError)) as info:
        open_storage(url)
    assert "hunter2" not in str(info.value)


@slow
def test_a_surviving_worker_reruns_the_trial_of_a_killed_one(tmp_path: Path, omniglot: Path, pg_url: str) -> None:
    study_file = make_study(tmp_path, iterations=40, every=20, n_trials=5)
    env = worker_env(NAS_META_HEARTBEAT_SECONDS="1", NAS_META_HEARTBEAT_GRACE_SECONDS="3")
    procs = [subprocess.Popen(search_command(study_file, pg_url, omniglot), env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, cwd=tmp_path) for _ in range(2)]
    victim = procs[0]
    _wait_for(pg_url, lambda ts: any(t.state == TrialState.RUNNING and
                                     t.user_attrs.get("worker", "").endswith(f":{victim.pid}") for t in ts))
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert procs[1].wait(timeout=600) == 0
    trials = load(pg_url).get_trials()
    killed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(killed) == 1
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 5  # none lost: the survivor re-ran the killed trial
    assert any(t.system_attrs.get("failed_trial") == killed[0].number for t in finished)


def _tiny_study_with_one_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str, optuna.Study]:
    """A tiny study on a journal file holding one completed trial (no Omniglot needed): its file, storage, study."""
    monkeypatch.setattr(workers_module, "resolve_data_dir", lambda data: tmp_path)
    study_path = write_tiny_study(tmp_path)
    storage = f"journal:{tmp_path / 'tiny.journal'}"
    study = open_study(prepare(study_path, storage=storage))
    distribution = optuna.distributions.FloatDistribution(0.1, 0.5)
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=1.0, params={"learner.inner_lr": 0.2},
                                 distributions={"learner.inner_lr": distribution}))
    return study_path, storage, study


# -- regression: a killed last trial is re-run, not counted as done ------------------------------------

@pytest.mark.usefixtures("synthetic_data")
def test_search_reruns_the_last_trial_of_a_killed_worker_instead_of_saying_the_study_is_full(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The study holds n_trials trials, the last one RUNNING for a SIGKILLed worker on this host: ``search`` fails
    it, queues it again and runs the retry (it used to say "already holds 2 trials" and leave it RUNNING)."""
    study_path, storage, study = _tiny_study_with_one_result(tmp_path, monkeypatch)
    killed = study.ask()
    lr = killed.suggest_float("learner.inner_lr", 0.1, 0.5)
    worker = f"{socket.gethostname()}:{_dead_pid()}"
    killed.set_user_attr("worker", worker)
    assert counted_trials(study) == 2

    searched = search(study_path, storage=storage, n_trials=2, device="cpu")  # no StudyFinished
    trials = searched.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].user_attrs["reason"] == f"worker {worker} died (found at restart)"
    assert trials[2].user_attrs["retry_of"] == 1 and trials[2].params == {"learner.inner_lr": lr}
    assert counted_trials(searched) == 2
    assert not searched.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))


@pytest.mark.usefixtures("synthetic_data")
@pytest.mark.parametrize("failed_by", ["stale check", "interrupt"])
def test_search_queues_the_retry_a_worker_killed_after_failing_the_trial_never_queued(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failed_by: str) -> None:
    """Failing a trial and queueing its retry are two writes: a SIGKILL between them (a stale check's worker, or
    the trial's own worker after a SIGTERM) left a FAIL trial that counted as a result and was never run again."""
    study_path, storage, study = _tiny_study_with_one_result(tmp_path, monkeypatch)
    cut = study.ask()
    lr = cut.suggest_float("learner.inner_lr", 0.1, 0.5)
    cut.set_user_attr("baseline", "maml")
    if failed_by == "interrupt":  # run_trial's interrupt path, killed right after its tell
        queue_retries = workers_module.queue_retries
        workers_module.queue_retries = lambda study, lock: []  # type: ignore[assignment]
        try:
            with pytest.raises(Terminated):
                run_trial(study, cut, raising(Terminated()))
        finally:
            workers_module.queue_retries = queue_retries
    else:  # fail_stale_trials' writes, without its queueing
        study._storage.set_trial_user_attr(cut._trial_id, "retry_wanted", cut.number)
        study._storage.set_trial_state_values(cut._trial_id, TrialState.FAIL)
    assert study.trials[1].state == TrialState.FAIL
    assert not study.get_trials(states=(TrialState.WAITING,))
    assert counted_trials(study) == 2  # a result with no value: the study looked full

    searched = search(study_path, storage=storage, n_trials=2, device="cpu")  # no StudyFinished
    trials = searched.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert trials[2].user_attrs == {**trials[2].user_attrs, "retry_of": 1, "baseline": "maml"}
    assert trials[2].params == {"learner.inner_lr": lr}
    assert counted_trials(searched) == 2


def test_queue_retries_queues_each_wanted_retry_once(tmp_path: Path) -> None:
    setup = journal_setup(tmp_path)
    study = optuna.create_study(study_name="tiny", storage=setup.storage.storage)
    marks: list[dict[str, Any]] = [
        {"retry_wanted": 0},  # 0: cut off before its retry was queued
        {},  # 1: an ordinary failure
        {"retry_wanted": 2},  # 2: cut off too
        {"retry_wanted": 2},  # 3: a copy of trial 2's marks (Optuna's heartbeat retry copies user attributes)
        {"retry_wanted": 4, "status": "out_of_memory"},  # 4: failed by itself while another worker marked it
        {"retry_wanted": 5},  # 5: retried by Optuna's heartbeat (trial 6)
    ]
    for attrs in marks:
        trial = study.ask()
        trial.suggest_float("x", 0.0, 1.0)
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        study.tell(trial, state=TrialState.FAIL)
    study.add_trial(create_trial(state=TrialState.WAITING, system_attrs={"retry_history": [5]}))
    assert workers_module.queue_retries(study, setup.lock) == [0, 2]
    assert workers_module.queue_retries(study, setup.lock) == []  # queued already
    retries = study.get_trials(states=(TrialState.WAITING,))[1:]
    assert [t.user_attrs for t in retries] == [{"retry_of": 0}, {"retry_of": 2}]
    assert [t.system_attrs["fixed_params"] for t in retries] == [study.trials[0].params, study.trials[2].params]


@pytest.mark.usefixtures("synthetic_data")
def test_search_waits_out_the_grace_of_a_last_trial_whose_worker_may_still_live(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The last trial RUNNING for a worker elsewhere (a SLURM job killed a moment ago, on another node), its heartbeat
    still fresh: ``search`` neither says "the study is full" nor leaves it RUNNING, but waits, and once the
    heartbeat is past its grace fails the trial, queues it again and runs the retry."""
    monkeypatch.setattr(workers_module, "resolve_data_dir", lambda data: tmp_path)
    monkeypatch.setenv("NAS_META_HEARTBEAT_SECONDS", "1")
    monkeypatch.setenv("NAS_META_HEARTBEAT_GRACE_SECONDS", "2")
    study_path = write_tiny_study(tmp_path)
    storage = f"journal:{tmp_path / 'tiny.journal'}"
    study = open_study(prepare(study_path, storage=storage))
    killed = study.ask()
    lr = killed.suggest_float("learner.inner_lr", 0.1, 0.5)
    killed.set_user_attr("worker", "another-node:4242")
    study._storage.set_trial_system_attr(killed._trial_id, HEARTBEAT_ATTR, time.time())
    assert counted_trials(study) == 1

    searched = search(study_path, storage=storage, n_trials=1, device="cpu")  # no StudyFinished
    trials = searched.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[0].user_attrs["reason"].startswith("worker another-node:4242 sent no heartbeat for ")
    assert trials[1].user_attrs["retry_of"] == 0 and trials[1].params == {"learner.inner_lr": lr}
    assert counted_trials(searched) == 1


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n_trials": True}, "n_trials=True is not allowed: expected an integer in [1, 10^6], or None for the study file's."),
    ({"n_trials": 2.5}, "n_trials=2.5 is not allowed: expected an integer in [1, 10^6], or None for the study file's."),
    ({"n_trials": 0}, "n_trials=0 is not allowed: expected an integer in [1, 10^6], or None for the study file's."),
    ({"n_trials": "3"}, "n_trials='3' is not allowed: expected an integer in [1, 10^6], or None for the study file's."),
    ({"workers": "2"}, "workers='2' is not allowed: expected an integer in [1, 1024]."),
    ({"timeout": float("nan")}, "timeout=nan is not allowed: expected a number of seconds in (0, 10^9], or None."),
    ({"overrides": "budget.iterations=1"}, "overrides='budget.iterations=1' is not allowed: expected a list of "
                                           "'KEY=VALUE' strings."),
    ({"overrides": [1]}, "overrides=[1] is not allowed: expected a list of 'KEY=VALUE' strings."),
    ({"data": 5}, "data=5 is not allowed: expected a folder path, or None."),
    ({"listener": object()}, "listener=<object object at"),
    ({"device": torch.device("cpu")}, "device=device(type='cpu') is not allowed: expected 'auto', 'cpu', 'cuda' or "
                                      "'cuda:N' (a string)."),
])
def test_search_checks_its_python_arguments_before_opening_anything(tmp_path: Path, kwargs: dict[str, object],
                                                                    message: str) -> None:
    with pytest.raises(ConfigError) as info:
        search(write_tiny_study(tmp_path), storage=f"journal:{tmp_path / 'tiny.journal'}", **kwargs)  # type: ignore[arg-type]
    assert str(info.value).startswith(message), str(info.value)
    assert not (tmp_path / "tiny.journal").exists()


def test_search_refuses_a_study_that_is_not_a_path(tmp_path: Path) -> None:
    for study in (None, {"name": "x"}):
        with pytest.raises(ConfigError, match="is not allowed: expected a study file path or a shipped study's name"):
            search(study, storage=f"journal:{tmp_path / 'tiny.journal'}")  # type: ignore[arg-type]
