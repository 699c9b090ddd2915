"""The chaos procedure shared by ``tests/search/test_chaos.py`` and ``benchmarks/chaos.py``.

A tiny study (``tests.helpers_study.make_study``) runs as ``nas-meta search STUDY --storage URL --workers 3``,
each command in its own session. A seeded ``random.Random`` injects kill events at random moments while trials
run: each event sends SIGKILL or SIGTERM to one worker or to the pool's parent. After an event the command is
run again once its parent is gone (as a user would re-run it); a pool that lost a worker goes on with the others.
After the last event the pool left is let finish, the same command is run once more to complete the study, and
the study is checked: exactly ``n_trials`` counted trials, every trial complete before a kill still complete with
its value, nothing RUNNING or WAITING, every failed trial retried (unless its candidate diverged or ran out of
memory), unique trial numbers, each baseline finished once, and no process of any command started here left; along
the way, a parent exits 143 after SIGTERM, no process goes on for ``term_bound`` s after SIGTERM, and no command
prints a traceback. Broken checks are collected in ``problems``. Every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas_meta.storage import open_storage
from nas_meta.studies import counted_trials
from tests.helpers_study import search_command, worker_env

PG_SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432"
WORKERS = 3
# A candidate that diverges or runs out of memory ends FAIL for good: a result, not a lost trial. Any other FAIL
# (an interrupted run, or status 'failed': an exception, which this tiny study's candidates never raise) must have
# a retry.
CANDIDATE_FAILURE_STATUSES = ("diverged", "out_of_memory")
KINDS = ("SIGKILL worker", "SIGKILL parent", "SIGTERM worker", "SIGTERM parent")
CHAOS_ENV = {"NAS_META_HEARTBEAT_SECONDS": "1", "NAS_META_HEARTBEAT_GRACE_SECONDS": "4"}


class ChaosError(AssertionError):
    """A bounded wait ran out, or a command did something it must not."""


# -- PostgreSQL: a database per run ------------------------------------------------------------------------

def pg_admin(sql: str) -> None:
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


@contextlib.contextmanager
def fresh_database(prefix: str = "nas_meta_chaos") -> Iterator[str]:
    """A new, empty PostgreSQL database for the block; dropped afterwards (its connections ended first)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    pg_admin(f"CREATE DATABASE {name}")
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        pg_admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        pg_admin(f"DROP DATABASE IF EXISTS {name}")


# -- the process table -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    sid: int
    state: str  # R, S, D, Z, ...
    args: tuple[str, ...]

    @property
    def alive(self) -> bool:
        return self.state not in ("Z", "X")


def _read_proc(pid: int) -> Proc | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = tuple(a.decode(errors="replace") for a in f.read().split(b"\0") if a)
    except OSError:  # gone meanwhile
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp session ...
    return Proc(pid, int(fields[1]), int(fields[3]), fields[0], args)


def process_table() -> list[Proc]:
    """Every process now, read from /proc (session id, state, command line)."""
    procs = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            proc = _read_proc(int(entry))
            if proc is not None:
                procs.append(proc)
    return procs


def session_processes(sids: set[int] | int) -> list[Proc]:
    """The processes (zombies included) whose session is one of ``sids``."""
    wanted = {sids} if isinstance(sids, int) else sids
    return [p for p in process_table() if p.sid in wanted]


def pid_alive(pid: int) -> bool:
    proc = _read_proc(pid)
    return proc is not None and proc.alive


def kill_sessions(sids: set[int]) -> None:
    """SIGKILL every process of the sessions started here (their process groups, then any stragglers)."""
    for sid in sids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(sid, signal.SIGKILL)
    for proc in session_processes(sids):
        if proc.alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(proc.pid, signal.SIGKILL)


def wait_until(ready: Callable[[], Any], seconds: float, what: str, poll: float = 0.25) -> Any:
    """Poll ``ready`` until it returns something true, and return that; ChaosError after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        value = ready()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ChaosError(f"gave up after {seconds:.0f} s waiting for {what}")
        time.sleep(poll)


# -- reading the study -------------------------------------------------------------------------------------

class StudyReader:
    """Reads the study's trials through one storage object (the study may not exist yet: no trials)."""

    def __init__(self, url: str, name: str = "tiny") -> None:
        self.url, self.name = url, name
        self._storage: Any = None

    def study(self) -> optuna.Study | None:
        if self._storage is None:
            self._storage = open_storage(self.url).storage
        try:
            return optuna.load_study(study_name=self.name, storage=self._storage)
        except KeyError:
            return None

    def trials(self) -> list[FrozenTrial]:
        study = self.study()
        return [] if study is None else study.get_trials()


def worker_pid(trial: FrozenTrial) -> int | None:
    worker = str(trial.user_attrs.get("worker", ""))
    pid = worker.rpartition(":")[2]
    return int(pid) if pid.isdigit() else None


def retried_numbers(trials: list[FrozenTrial]) -> set[int]:
    """Numbers of trials that have a retry: nas-meta's (``retry_of``) or Optuna's heartbeat retry."""
    retried: set[int] = set()
    for t in trials:
        if isinstance(t.user_attrs.get("retry_of"), int):
            retried.add(t.user_attrs["retry_of"])
        retried.update(t.system_attrs.get("retry_history", ()))
    return retried


def is_candidate_failure(trial: FrozenTrial) -> bool:
    """A FAIL the candidate caused itself (diverged, out of memory), as opposed to an interrupted or errored run."""
    reason = str(trial.user_attrs.get("reason", ""))
    interrupted = reason.startswith("interrupted") or " died " in reason or "no heartbeat" in reason
    return trial.user_attrs.get("status") in CANDIDATE_FAILURE_STATUSES and not interrupted


# -- the procedure -----------------------------------------------------------------------------------------

@dataclass
class Command:
    """One ``nas-meta search`` command started here, in its own session (its parent's pid is the session id)."""

    index: int
    proc: subprocess.Popen[bytes]
    log: Path
    started: float

    @property
    def sid(self) -> int:
        return self.proc.pid

    def workers(self) -> list[Proc]:
        """Its worker processes still alive (``--worker-of-pool`` in their command line)."""
        return [p for p in session_processes(self.sid)
                if p.pid != self.sid and p.alive and "--worker-of-pool" in p.args]


@dataclass
class Event:
    number: int
    signal: str
    target: str
    pid: int
    command: int
    at_seconds: float
    running: list[int]  # trials RUNNING when the signal was sent
    running_on_victim: list[int]
    exit_code: int | None = None  # the parent's, for parent events
    gone_after_seconds: float | None = None  # until the victim (for a parent: its whole session) had gone


@dataclass
class ChaosRun:
    study_file: Path
    url: str
    data: Path
    workdir: Path
    seed: int
    events: int = 10
    n_trials: int = 12
    max_delay: float = 2.0
    kinds: tuple[str, ...] = KINDS  # the events drawn from (all four unless told)
    env: dict[str, str] = field(default_factory=lambda: worker_env(**CHAOS_ENV))
    # bounds (seconds)
    start_bound: float = 180.0  # a (re)started command has a trial running
    exit_bound: float = 120.0  # a signalled process (with its workers) has gone
    term_bound: float = 30.0  # a process still there this long after SIGTERM ignored it
    finish_bound: float = 400.0  # the last command, then the resume, run the study to its end
    inject_bound: float = 900.0  # all the events

    commands: list[Command] = field(default_factory=list)
    done: list[Event] = field(default_factory=list)
    complete_before_kill: dict[int, list[float] | None] = field(default_factory=dict)
    finished_at_events: list[int] = field(default_factory=list)  # trials complete or pruned at each event
    problems: list[str] = field(default_factory=list)
    finished_early: bool = False
    resume_code: int | None = None

    def __post_init__(self) -> None:
        self.study_file, self.data, self.workdir = (Path(p).resolve() for p in (self.study_file, self.data, self.workdir))
        self.rng = random.Random(self.seed)
        self.reader = StudyReader(self.url)
        self.t0 = time.monotonic()

    # -- commands ------------------------------------------------------------------------------------------

    def start(self) -> Command:
        """``nas-meta search STUDY --storage URL --workers 3`` in its own session, logging to a file."""
        index = len(self.commands)
        log = self.workdir / f"command-{index}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(search_command(self.study_file, self.url, self.data, "--workers", str(WORKERS)),
                                    cwd=self.workdir, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        command = Command(index, proc, log, time.monotonic())
        self.commands.append(command)
        return command

    @property
    def sids(self) -> set[int]:
        return {c.sid for c in self.commands}

    def logs(self, tail: int = 4000) -> str:
        parts = []
        for c in self.commands:
            text = c.log.read_text(errors="replace") if c.log.exists() else ""
            parts.append(f"--- command {c.index} (pid {c.sid}, exit {c.proc.returncode}) ---\n{text[-tail:]}")
        return "\n".join(parts)

    def tracebacks(self) -> list[str]:
        """The last line of every traceback the commands printed (uncaught errors, exceptions in finalizers)."""
        found = []
        for c in self.commands:
            lines = c.log.read_text(errors="replace").splitlines() if c.log.exists() else []
            for i, line in enumerate(lines):
                if line.startswith("Traceback (most recent call last)"):
                    end = next((j for j in range(i + 1, len(lines)) if lines[j] and not lines[j].startswith(" ")), i)
                    where = f" ({lines[i - 1][:80]})" if i and lines[i - 1].startswith("Exception ignored") else ""
                    found.append(f"command {c.index}: {lines[end][:200]}{where}")
        return found

    def kill_everything(self) -> None:
        kill_sessions(self.sids)
        for c in self.commands:
            with contextlib.suppress(subprocess.TimeoutExpired):
                c.proc.wait(timeout=30)

    def elapsed(self) -> float:
        return round(time.monotonic() - self.t0, 1)

    # -- the events ----------------------------------------------------------------------------------------

    def _snapshot(self) -> list[FrozenTrial]:
        trials = self.reader.trials()
        for t in trials:
            if t.state == TrialState.COMPLETE:
                self.complete_before_kill.setdefault(t.number, t.values)
        return trials

    def _wait_for_a_running_trial(self, command: Command) -> bool:
        """Until one of the command's live workers runs a trial (True), or the command has ended (False)."""
        def ready() -> str | None:
            if command.proc.poll() is not None:
                return "ended"
            live = {p.pid for p in command.workers()}
            if any(t.state == TrialState.RUNNING and worker_pid(t) in live for t in self.reader.trials()):
                return "running"
            return None

        return bool(wait_until(ready, self.start_bound, f"command {command.index} to run a trial") == "running")

    def _study_full(self) -> bool:
        study = self.reader.study()
        return study is not None and counted_trials(study) >= self.n_trials and not study.get_trials(
            states=(TrialState.RUNNING, TrialState.WAITING))

    def inject(self) -> None:
        """The events, each at a random moment while a trial runs; re-runs the command whenever its parent is gone."""
        command: Command | None = None
        deadline = time.monotonic() + self.inject_bound
        idle = 0  # commands in a row that ended before running a trial
        while len(self.done) < self.events:
            if time.monotonic() > deadline:
                raise ChaosError(f"only {len(self.done)} of {self.events} events within {self.inject_bound:.0f} s")
            if command is None or command.proc.poll() is not None:
                if command is not None and self._study_full():
                    self.finished_early = True
                    return
                command = self.start()
            if not self._wait_for_a_running_trial(command):  # it ended (all its workers killed, or the study full)
                idle += 1
                if idle >= 3:
                    raise ChaosError(f"{idle} commands in a row ended without running a trial; the last one said:\n"
                                     + command.log.read_text(errors="replace")[-3000:])
                continue  # run it again, or stop if the study is full
            idle = 0
            time.sleep(self.rng.uniform(0.0, self.max_delay))
            kind, target = self.rng.choice(self.kinds).split()
            workers = sorted(p.pid for p in command.workers())
            if command.proc.poll() is not None or (target == "worker" and not workers):
                continue  # nothing left to hit this time: draw again
            pid = command.sid if target == "parent" else self.rng.choice(workers)
            trials = self._snapshot()
            self.finished_at_events.append(sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials))
            running = [t.number for t in trials if t.state == TrialState.RUNNING]
            on_victim = [t.number for t in trials if t.state == TrialState.RUNNING and worker_pid(t) == pid]
            try:
                os.kill(pid, getattr(signal, kind))
            except ProcessLookupError:  # it ended meanwhile: draw again
                self.finished_at_events.pop()
                continue
            event = Event(len(self.done), kind, target, pid, command.index, self.elapsed(), running, on_victim)
            self.done.append(event)
            self._after(event, command)

    def _after(self, event: Event, command: Command) -> None:
        """Wait (bounded) for the victim to go; for the parent, for its whole session (its workers stop with it).

        A process still there ``term_bound`` s after SIGTERM is a problem: a worker is SIGKILLed then, as an operator
        would (a parent kills its own workers after its grace and exits)."""
        start = time.monotonic()
        if event.target == "parent":
            try:
                event.exit_code = command.proc.wait(timeout=self.exit_bound)
            except subprocess.TimeoutExpired:
                raise ChaosError(f"event {event.number}: the parent {event.pid} did not exit within "
                                 f"{self.exit_bound:.0f} s of {event.signal}") from None
            if event.signal == "SIGTERM" and event.exit_code != 143:
                self.problems.append(f"event {event.number}: the parent exited with {event.exit_code} after SIGTERM, "
                                     "not 143")
            wait_until(lambda: not [p for p in session_processes(command.sid) if p.alive], self.exit_bound,
                       f"the workers of command {command.index} to stop after their parent's {event.signal}")
        else:
            bound = self.term_bound if event.signal == "SIGTERM" else self.exit_bound
            try:
                wait_until(lambda: not pid_alive(event.pid), bound, f"worker {event.pid} to exit after {event.signal}")
            except ChaosError:
                if event.signal != "SIGTERM":
                    raise
                os.kill(event.pid, signal.SIGKILL)
                wait_until(lambda: not pid_alive(event.pid), self.exit_bound, f"worker {event.pid} to die")
        event.gone_after_seconds = round(time.monotonic() - start, 2)
        if event.signal == "SIGTERM" and event.gone_after_seconds > self.term_bound:
            what = "the pool" if event.target == "parent" else f"worker {event.pid}"
            self.problems.append(f"event {event.number}: {what} went on for {event.gone_after_seconds:.0f} s after "
                                 "SIGTERM (a process ignored it)")

    def finish(self) -> None:
        """Let the command still running end, then run the same command once more: it completes the study."""
        for c in self.commands:
            try:
                c.proc.wait(timeout=self.finish_bound)
            except subprocess.TimeoutExpired:
                raise ChaosError(f"command {c.index} did not finish the study within {self.finish_bound:.0f} s") from None
        resume = self.start()
        try:
            self.resume_code = resume.proc.wait(timeout=self.finish_bound)
        except subprocess.TimeoutExpired:
            raise ChaosError(f"the resumed search did not finish within {self.finish_bound:.0f} s") from None
        if self.resume_code != 0:
            self.problems.append(f"the resumed search exited with {self.resume_code}")

    # -- the verdict ---------------------------------------------------------------------------------------

    def check(self) -> dict[str, Any]:
        """The figures of the run; every broken invariant is also listed in ``problems``."""
        study = self.reader.study()
        assert study is not None, "no study was created"
        trials = study.get_trials()
        by_number = {t.number: t for t in trials}
        numbers = [t.number for t in trials]
        states = Counter(t.state.name for t in trials)
        retried = retried_numbers(trials)
        fails = [t for t in trials if t.state == TrialState.FAIL]
        candidate_failures = [t.number for t in fails if is_candidate_failure(t)]
        interrupted = [t for t in fails if not is_candidate_failure(t)]
        without_retry = [t.number for t in interrupted if t.number not in retried]
        finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        counted = counted_trials(study)
        kept = [n for n, values in self.complete_before_kill.items()
                if n in by_number and by_number[n].state == TrialState.COMPLETE and by_number[n].values == values]
        changed = sorted(set(self.complete_before_kill) - set(kept))
        left = [p for p in session_processes(self.sids)]
        baselines = Counter(t.user_attrs.get("baseline") for t in finished if "baseline" in t.user_attrs)

        if len(self.done) < self.events:
            self.problems.append(f"only {len(self.done)} of {self.events} events were injected: the study was full "
                                 "before the last one")
        if counted != self.n_trials:
            self.problems.append(f"the study holds {counted} counted trials, not n_trials={self.n_trials}")
        if changed:
            self.problems.append(f"trials complete before a kill and changed since: {changed}")
        if states.get("RUNNING"):
            self.problems.append(f"trials left RUNNING: {[t.number for t in trials if t.state == TrialState.RUNNING]}")
        if states.get("WAITING"):
            self.problems.append(f"trials left WAITING: {[t.number for t in trials if t.state == TrialState.WAITING]}")
        if without_retry:
            reasons = {n: by_number[n].user_attrs.get("reason") for n in without_retry}
            self.problems.append(f"failed trials (interrupted or errored) without a retry: {reasons}")
        crashes = self.tracebacks()
        if crashes:
            self.problems.append(f"commands printed tracebacks: {crashes}")
        if len(set(numbers)) != len(numbers) or sorted(numbers) != list(range(len(numbers))):
            self.problems.append(f"trial numbers are not unique and consecutive: {sorted(numbers)}")
        if left:
            self.problems.append(f"processes left: {[(p.pid, p.state, ' '.join(p.args)[:120]) for p in left]}")
        if any(n != 1 for n in baselines.values()) or set(baselines) != {"maml", "reptile"}:
            self.problems.append(f"baselines finished {dict(baselines)} times, not once each")

        kinds = Counter(f"{e.signal} {e.target}" for e in self.done)
        return {
            "seed": self.seed,
            "workers": WORKERS,
            "events_requested": self.events,
            "events_injected": len(self.done),
            "events_by_kind": {k: kinds.get(k, 0) for k in KINDS},
            "events_on_a_running_trial": sum(bool(e.running_on_victim) or e.target == "parent" and bool(e.running)
                                             for e in self.done),
            "commands_started": len(self.commands),
            "command_exit_codes": [c.proc.returncode for c in self.commands],
            "trials_requested": self.n_trials,
            "trials_finished": len(finished),
            "trials_finished_at_each_event": self.finished_at_events,
            "trials_counted": counted,
            "trials_in_storage": len(trials),
            "states": dict(sorted(states.items())),
            "candidate_failures": candidate_failures,
            "interrupted_trials": len(interrupted),
            "failed_without_retry": without_retry,
            "tracebacks": crashes,
            "trials_lost": self.n_trials - len(finished) - len(candidate_failures),
            "completed_before_kill": len(self.complete_before_kill),
            "completed_before_kill_kept": len(kept),
            "running_left": states.get("RUNNING", 0),
            "waiting_left": states.get("WAITING", 0),
            "unique_numbers": len(set(numbers)) == len(numbers),
            "orphan_processes": len(left),
            "slowest_exit_after_signal_s": max((e.gone_after_seconds or 0.0 for e in self.done), default=None),
            "events": [e.__dict__ for e in self.done],
            "fail_reasons": {t.number: t.user_attrs.get("reason", "(none: failed by Optuna's heartbeat check)")
                             for t in fails},
            "problems": self.problems,
            "wall_seconds": self.elapsed(),
        }

    def run(self) -> dict[str, Any]:
        """The whole procedure; whatever happens, every process started here is killed before it returns."""
        try:
            self.inject()
            self.finish()
            return self.check()
        finally:
            self.kill_everything()
