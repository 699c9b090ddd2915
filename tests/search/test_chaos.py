"""Chaos on worker pools (slow): SIGTERM to a pool's parent, and seeded series of SIGKILL/SIGTERM events on workers
and parents, on PostgreSQL and on the journal file. The procedure lives in ``tests/search/chaos.py`` (shared with
``benchmarks/chaos.py``); every wait is bounded and every process started here is killed in a ``finally``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from optuna.trial import TrialState

from tests.helpers_study import make_study, search_command, worker_env
from tests.search.chaos import (
    CHAOS_ENV,
    ChaosRun,
    StudyReader,
    fresh_database,
    kill_sessions,
    pid_alive,
    session_processes,
    wait_until,
    worker_pid,
)

slow = pytest.mark.slow


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_database("nas_meta_test_chaos") as url:
        yield url


def _log(path: Path) -> str:
    return path.read_text(errors="replace")[-6000:] if path.exists() else ""


# -- SIGTERM to the parent of a worker pool ----------------------------------------------------------------

@slow
def test_sigterm_to_a_worker_pool_leaves_no_process_and_no_running_trial(tmp_path: Path, omniglot: Path) -> None:
    study_file = make_study(tmp_path, iterations=400, every=200, n_trials=12, pruner="none")  # trials of tens of s
    journal = tmp_path / "runs" / "tiny.journal"
    url = f"journal:{journal}"
    log = tmp_path / "pool.log"
    reader = StudyReader(url)
    cmdlines: dict[int, tuple[str, ...]] = {}  # every worker seen, with its command line read while it ran
    with open(log, "wb") as out:
        parent = subprocess.Popen(search_command(study_file, url, omniglot, "--workers", "3"), cwd=tmp_path,
                                  env=worker_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def read_cmdlines() -> None:
            for proc in session_processes(parent.pid):
                if proc.pid != parent.pid and proc.alive and "--worker-of-pool" in proc.args:
                    cmdlines.setdefault(proc.pid, proc.args)

        def two_running() -> list[int] | None:
            read_cmdlines()
            assert parent.poll() is None, f"the pool ended early ({parent.returncode}):\n{_log(log)}"
            running = [t.number for t in reader.trials()
                       if t.state == TrialState.RUNNING and worker_pid(t) in cmdlines]
            return running if len(running) >= 2 else None

        wait_until(two_running, 240, "2 trials running in the pool")
        running = {t.number: worker_pid(t) for t in reader.trials() if t.state == TrialState.RUNNING}
        read_cmdlines()
        os.kill(parent.pid, signal.SIGTERM)
        signalled = time.monotonic()
        try:
            code = parent.wait(timeout=90)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the pool's parent did not exit within 90 s of SIGTERM:\n{_log(log)}")
        took = time.monotonic() - signalled
        assert code == 143, f"exit {code} after SIGTERM, not 143:\n{_log(log)}"
        assert took < 60, (f"the pool took {took:.0f} s to stop: a worker ignored SIGTERM until its parent killed it "
                           f"after its 60 s grace\n{_log(log)}")

        # no process of the pool's session is left (a short grace for any process still being reaped)
        left = _left_after(parent.pid, grace=5.0)
        assert not left, f"processes left in the pool's session after its parent exited: {left}\n{_log(log)}"
        assert not [pid for pid in cmdlines if pid_alive(pid)]
        assert len(cmdlines) >= 2 and {pid for pid in running.values() if pid is not None} <= set(cmdlines)

        # the storage URL reached the workers through their environment, never their command line
        for pid, args in cmdlines.items():
            line = " ".join(args)
            assert url not in line and str(journal) not in line, f"worker {pid}'s command line shows the storage: {line}"

        trials = StudyReader(url).trials()
        by_number = {t.number: t for t in trials}
        states = {t.number: t.state for t in trials}
        assert TrialState.RUNNING not in states.values(), (states, _log(log))
        assert set(states.values()) <= {TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.WAITING}
        waiting_retries = [t.user_attrs.get("retry_of") for t in trials if t.state == TrialState.WAITING]
        for number in running:
            trial = by_number[number]
            assert trial.state == TrialState.FAIL, (number, trial.state, _log(log))
            assert "SIGTERM" in str(trial.user_attrs.get("reason")), (number, trial.user_attrs)
            assert waiting_retries.count(number) == 1, f"trial {number}: retries waiting {waiting_retries}"
        assert "terminated (SIGTERM)" in _log(log) and "Traceback" not in _log(log), _log(log)
    finally:
        kill_sessions({parent.pid})
        parent.wait(timeout=30)


def _left_after(sid: int, grace: float) -> list[tuple[int, str, str]]:
    deadline = time.monotonic() + grace
    while True:
        left = [(p.pid, p.state, " ".join(p.args)[:150]) for p in session_processes(sid)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


# -- seeded chaos: SIGKILL/SIGTERM on workers and parents, the command re-run after each ---------------------

def _chaos(tmp_path: Path, omniglot: Path, url: str, seed: int) -> None:
    study_file = make_study(tmp_path, iterations=40, every=20, n_trials=12, pruner="none")  # trials of equal length
    run = ChaosRun(study_file, url, omniglot, tmp_path, seed=seed, events=10, n_trials=12,
                   env=worker_env(**CHAOS_ENV), start_bound=150, exit_bound=90, finish_bound=240, inject_bound=420)
    try:
        figures = run.run()  # kills every process it started, whatever happens
    except BaseException:
        print(run.logs())
        raise
    summary = {k: v for k, v in figures.items() if k != "events"}
    print(json.dumps(summary, indent=1, default=str))
    for event in figures["events"]:
        print(event)
    problems = figures["problems"]
    if problems:
        print(run.logs())
    assert not problems, problems
    assert figures["events_injected"] == 10
    assert figures["trials_counted"] == 12 and figures["trials_lost"] == 0
    assert figures["completed_before_kill_kept"] == figures["completed_before_kill"]
    assert figures["running_left"] == 0 and figures["orphan_processes"] == 0 and figures["unique_numbers"]


@slow
def test_chaos_on_postgres(tmp_path: Path, omniglot: Path, pg_url: str) -> None:
    _chaos(tmp_path, omniglot, pg_url, seed=20240611)


@slow
def test_chaos_on_the_journal_file(tmp_path: Path, omniglot: Path) -> None:
    _chaos(tmp_path, omniglot, f"journal:{tmp_path / 'runs' / 'tiny.journal'}", seed=7)
