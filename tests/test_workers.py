"""Many workers on one study (PostgreSQL and the journal file), crash recovery, storage errors (slow).

PostgreSQL tests create and drop their own database on the server at 127.0.0.1:5432.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas_meta.errors import ConfigError
from nas_meta.storage import StorageError, open_storage
from tests.helpers_study import make_study, run, search_command, worker_env

pytestmark = pytest.mark.slow
PG = "postgresql+psycopg2://postgres@127.0.0.1:5432"


def _admin(sql: str) -> None:
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    name = f"nas_meta_test_{uuid.uuid4().hex[:10]}"
    _admin(f"CREATE DATABASE {name}")
    try:
        yield f"{PG}/{name}"
    finally:
        _admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        _admin(f"DROP DATABASE IF EXISTS {name}")


def load(url: str, name: str = "tiny") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(url).storage)


def assert_exact(study: optuna.Study, n: int) -> None:
    trials = study.get_trials()
    assert len(trials) == n
    assert sorted(t.number for t in trials) == list(range(n))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials), [t.state for t in trials]
    baselines = [t.user_attrs["baseline"] for t in trials if "baseline" in t.user_attrs]
    assert sorted(baselines) == ["maml", "reptile"]  # each enqueued baseline ran once


def test_three_postgres_workers_run_exactly_n_trials(tmp_path: Path, omniglot: Path, pg_url: str) -> None:
    study = make_study(tmp_path, n_trials=7)
    procs = [subprocess.Popen(search_command(study, pg_url, omniglot, "-q" if False else "--n-trials", "7"),
                              env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outputs = [p.communicate(timeout=900) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outputs]
    assert_exact(load(pg_url), 7)
    workers = {t.user_attrs["worker"] for t in load(pg_url).trials}
    assert len(workers) >= 2  # the work was shared


def test_workers_flag_on_the_journal_file(tmp_path: Path, omniglot: Path) -> None:
    study = make_study(tmp_path, n_trials=5)
    url = f"journal:{tmp_path / 'runs' / 'tiny.journal'}"
    done = run(search_command(study, url, omniglot, "--workers", "2"), env=worker_env())
    assert done.returncode == 0, done.stderr[-3000:]
    assert_exact(load(url), 5)


def _wait_for(url: str, predicate, timeout: float = 300.0) -> optuna.Study:
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


def _kill_mid_trial(study_file: Path, url: str, omniglot: Path, env: dict[str, str]) -> dict[int, tuple]:
    proc = subprocess.Popen(search_command(study_file, url, omniglot), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    study = _wait_for(url, lambda ts: sum(t.state == TrialState.COMPLETE for t in ts) >= 1
                      and any(t.state == TrialState.RUNNING for t in ts))
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    study = load(url)
    return {t.number: (t.state, t.values, dict(t.user_attrs)) for t in study.get_trials()}


def test_sigkilled_postgres_worker_trial_is_failed_and_rerun(tmp_path: Path, omniglot: Path, pg_url: str) -> None:
    study_file = make_study(tmp_path, iterations=60, every=20, n_trials=4)
    env = worker_env(NAS_META_HEARTBEAT_SECONDS="1", NAS_META_HEARTBEAT_GRACE_SECONDS="3")
    before = _kill_mid_trial(study_file, pg_url, omniglot, env)
    killed = [n for n, (state, _, _) in before.items() if state == TrialState.RUNNING]
    assert len(killed) == 1
    time.sleep(4)  # let the heartbeat go stale
    done = run(search_command(study_file, pg_url, omniglot), env=env)
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


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgres//nohost", "is not a storage URL nas-meta knows; use journal:PATH"),
        ("redis://127.0.0.1:6379/0", "is not a storage URL nas-meta knows"),
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


def test_a_surviving_worker_reruns_the_trial_of_a_killed_one(tmp_path: Path, omniglot: Path, pg_url: str) -> None:
    study_file = make_study(tmp_path, iterations=40, every=20, n_trials=5)
    env = worker_env(NAS_META_HEARTBEAT_SECONDS="1", NAS_META_HEARTBEAT_GRACE_SECONDS="3")
    procs = [subprocess.Popen(search_command(study_file, pg_url, omniglot), env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for _ in range(2)]
    victim = procs[0]
    study = _wait_for(pg_url, lambda ts: any(t.state == TrialState.RUNNING and
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
    del study
