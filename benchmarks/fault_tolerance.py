"""Fault-tolerance figures (issue: scale-out): workers x trials, trials lost, crash-recovery time.

Runs a tiny study (tests/helpers_study.py) with 3 worker processes on a fresh PostgreSQL database, SIGKILLs one
worker in the middle of a trial, and measures how long until its trial is marked failed and re-queued (heartbeat
every 2 s, grace 6 s). Then a single worker on the embedded journal file is SIGKILLed and restarted. Prints JSON.
    python -m benchmarks.fault_tolerance [--data DIR] [--trials 12]      (from the repository root)

Every wait is bounded: a stage that does not happen within its limit stops the script with a message.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import optuna
import psycopg2
from optuna.trial import TrialState

from nas_meta.storage import open_storage
from tests.helpers_study import make_study, search_command, worker_env


def admin(sql: str) -> None:
    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


def trials(url: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name="tiny", storage=open_storage(url).storage).get_trials()
    except KeyError:
        return []


def wait_until(ready: Callable[[], bool], seconds: float, what: str) -> float:
    """Poll ``ready`` until it is true; the time it became true. Exits with a message after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            sys.exit(f"fault_tolerance: gave up after {seconds:.0f} s waiting for {what}")
        time.sleep(0.2)
    return time.monotonic()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=os.environ.get("NAS_META_DATA", "../shared/data/omniglot"))
    parser.add_argument("--trials", type=int, default=12)
    args = parser.parse_args()
    env = worker_env(NAS_META_HEARTBEAT_SECONDS="2", NAS_META_HEARTBEAT_GRACE_SECONDS="6")
    db = f"nas_meta_bench_{uuid.uuid4().hex[:8]}"
    admin(f"CREATE DATABASE {db}")
    url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{db}"
    result: dict[str, object] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            study = make_study(Path(tmp), iterations=40, every=20, n_trials=args.trials)
            start = time.monotonic()
            procs = [subprocess.Popen(search_command(study, url, Path(args.data)), env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL) for _ in range(3)]
            wait_until(lambda: any(t.state == TrialState.COMPLETE for t in trials(url)), 600, "a completed trial")
            victim = procs[0]
            running = {t.number for t in trials(url) if t.state == TrialState.RUNNING}
            os.kill(victim.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            victim.wait(timeout=60)
            mine = [t.number for t in trials(url) if t.state == TrialState.RUNNING and
                    t.user_attrs.get("worker", "").endswith(f":{victim.pid}")]
            recovered_at = wait_until(lambda: bool(mine) and any(
                t.system_attrs.get("failed_trial") == mine[0] for t in trials(url)), 300, "the killed trial's retry")
            for p in procs[1:]:
                p.wait(timeout=1800)
            final = trials(url)
            finished = [t for t in final if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
            result["postgres"] = {
                "workers": 3, "requested_trials": args.trials, "finished_trials": len(finished),
                "unique_numbers": len({t.number for t in final}) == len(final),
                "killed_trial": mine[0] if mine else None, "running_at_kill": sorted(running),
                "failed_trials": [t.number for t in final if t.state == TrialState.FAIL],
                "trials_lost": args.trials - len(finished),
                "recovery_seconds": round(recovered_at - killed_at, 1),
                "wall_seconds": round(time.monotonic() - start, 1),
            }
            journal = Path(tmp) / "runs" / "tiny.journal"
            jurl = f"journal:{journal}"
            study2 = make_study(Path(tmp) / "single", iterations=40, every=20, n_trials=6)
            proc = subprocess.Popen(search_command(study2, jurl, Path(args.data)), env=worker_env(),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_until(lambda: any(t.state == TrialState.COMPLETE for t in trials(jurl)) and any(
                t.state == TrialState.RUNNING for t in trials(jurl)), 600, "a completed and a running trial")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
            before = {t.number: t.values for t in trials(jurl) if t.state == TrialState.COMPLETE}
            restart = time.monotonic()
            done = subprocess.run(search_command(study2, jurl, Path(args.data)), env=worker_env(), capture_output=True,
                                  text=True, timeout=1800)
            final = trials(jurl)
            result["journal_single_worker"] = {
                "requested_trials": 6, "exit_code": done.returncode,
                "finished_trials": sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in final),
                "completed_before_kill_kept": all(
                    {t.number: t.values for t in final}.get(n) == v for n, v in before.items()),
                "interrupted_marked_failed": [t.number for t in final if t.state == TrialState.FAIL],
                "left_running": sum(t.state == TrialState.RUNNING for t in final),
                "resume_seconds": round(time.monotonic() - restart, 1),
            }
    finally:
        admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'")
        admin(f"DROP DATABASE IF EXISTS {db}")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
