"""Storages from a --storage value, redacted URLs, the study lock and the atomic artifact store (fast)."""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
import re
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest

from nas_meta.errors import ConfigError, StorageError
import nas_meta.storage as storage_module
from nas_meta.storage import artifact_store, default_storage_url, open_storage, redact, study_lock, study_names

FORMS = "use journal:PATH (embedded, the default), sqlite:///PATH, or postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE."
from tests.conftest import deadline, snapshot


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://alice:s3cret@db.example:5432/nas", "postgresql://alice:***@db.example:5432/nas"),
        ("mysql+pymysql://bob:p:w@host/db", "mysql+pymysql://bob:***@host/db"),
        ("postgresql://alice@db.example/nas", "postgresql://alice@db.example/nas"),  # no password: unchanged
        ("sqlite:///runs/s.db", "sqlite:///runs/s.db"),
        ("journal:runs/s.journal", "journal:runs/s.journal"),
        ("postgresql://u:p@ss@host/db", "postgresql://***@host/db"),  # an unencoded "@": the whole user part hidden
    ],
)
def test_redact_hides_only_the_password(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_redact_hides_secret_query_values() -> None:
    shown = redact("postgresql://host/db?user=alice&password=hunter2")
    assert "hunter2" not in shown and "password=" in shown and "user=alice" in shown


def test_journal_url_creates_the_folders_of_its_path(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "s.journal"
    handle = open_storage(f"journal:{path}")
    assert (handle.kind, handle.journal_path, handle.url) == ("journal", path, f"journal:{path}")
    assert path.parent.is_dir() and not handle.has_heartbeat
    optuna.create_study(study_name="one", storage=handle.storage)
    assert path.is_file()


def test_a_bare_path_ending_in_journal_is_a_journal_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "s.journal"
    handle = open_storage(str(path))
    assert handle.kind == "journal" and handle.journal_path == path and path.parent.is_dir()


def test_default_storage_is_a_journal_file_in_runs(tmp_path: Path) -> None:
    url = default_storage_url("omni", tmp_path / "runs")
    assert url == f"journal:{tmp_path / 'runs' / 'omni.journal'}"
    assert open_storage(url).journal_path == tmp_path / "runs" / "omni.journal"


def test_sqlite_url_is_an_rdb_storage_with_heartbeats(tmp_path: Path) -> None:
    path = tmp_path / "db" / "s.db"
    handle = open_storage(f"sqlite:///{path}")
    assert handle.kind == "rdb" and handle.has_heartbeat and handle.journal_path is None
    assert path.parent.is_dir()  # sqlite would not create the folder itself
    optuna.create_study(study_name="b", storage=handle.storage)
    optuna.create_study(study_name="a", storage=handle.storage)
    assert study_names(handle) == ["a", "b"]


@pytest.mark.parametrize("url", ["postgres//nohost", "runs/s.db"])
def test_a_value_that_is_no_url_says_which_forms_are_known(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_storage(url)
    assert str(info.value) == f"--storage {url!r} is not a storage URL nas-meta knows; {FORMS}"


@pytest.mark.parametrize(("url", "scheme"), [("redis://user:hunter2@127.0.0.1:6379/0", "redis"), ("mongodb://x", "mongodb")])
def test_unknown_scheme_is_named_with_the_known_forms(url: str, scheme: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_storage(url)
    message = str(info.value)
    assert message.startswith(f"--storage {redact(url)!r}: the scheme {scheme!r} is not one of [")
    assert message.endswith(FORMS) and "hunter2" not in message


def test_a_journal_needs_a_file_path(tmp_path: Path) -> None:
    for value in ["journal:", f"journal:{tmp_path}"]:  # no path, or an existing folder
        with pytest.raises(ConfigError) as info:
            open_storage(value)
        assert str(info.value) == (f"--storage {value!r}: a journal storage needs a file path, "
                                   "e.g. journal:runs/study.journal.")


def test_unreachable_database_is_a_storage_error_without_the_password() -> None:
    with pytest.raises(StorageError) as info:
        open_storage("postgresql+psycopg2://alice:hunter2@127.0.0.1:1/x")  # nothing listens on port 1
    message = str(info.value)
    assert message.startswith("cannot open storage postgresql+psycopg2://alice:***@127.0.0.1:1/x: ")
    assert "hunter2" not in message


class _BrokenStream(io.RawIOBase):
    """A stream that gives ``good`` bytes, then fails as a dropped connection would."""

    def __init__(self, good: int) -> None:
        self.left = good

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self.left <= 0:
            raise OSError("connection reset while uploading")
        n = min(len(buffer), self.left)
        buffer[:n] = b"x" * n
        self.left -= n
        return n


def test_artifact_write_that_fails_midway_leaves_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "artifacts"
    store = artifact_store(folder)
    assert folder.is_dir()
    with pytest.raises(OSError, match="connection reset"):
        store.write("learner-1", io.BufferedReader(_BrokenStream(3 << 20)))  # type: ignore[arg-type]
    assert not (folder / "learner-1").exists()
    assert list(folder.iterdir()) == []  # no .part file either


def test_failed_rewrite_keeps_the_previous_artifact_and_a_good_write_is_readable(tmp_path: Path) -> None:
    store = artifact_store(tmp_path)
    body = bytes(range(256)) * 1000
    store.write("a", io.BytesIO(body))
    with store.open_reader("a") as f:
        assert f.read() == body
    with pytest.raises(OSError):
        store.write("a", io.BufferedReader(_BrokenStream(10)))  # type: ignore[arg-type]
    with store.open_reader("a") as f:
        assert f.read() == body
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def _take_lock(url: str, acquired: Any) -> None:
    with study_lock(open_storage(url), "s"):
        acquired.set()


@pytest.mark.parametrize(("url", "lock_file"), [("journal:{}/s.journal", "s.journal.asklock"),
                                                 ("sqlite:///{}/s.db", "s.db.asklock"),
                                                 ("sqlite:///file:{}/s.db?uri=true", "s.db.asklock")])
def test_study_lock_is_reusable_and_excludes_a_second_process(tmp_path: Path, url: str, lock_file: str) -> None:
    url = url.format(tmp_path)
    lock = study_lock(open_storage(url), "s")
    for _ in range(2):  # one lock object entered again after each exit
        with lock:
            assert (tmp_path / lock_file).is_file()
    with study_lock(open_storage(url), "s"):  # a fresh one on the same file after release
        pass
    context = multiprocessing.get_context("fork")
    acquired = context.Event()
    with lock:
        other = context.Process(target=_take_lock, args=(url, acquired))
        other.start()
        assert not acquired.wait(0.5)  # the second holder waits while the lock is held
    assert acquired.wait(10)  # and gets it once released
    other.join(10)
    assert other.exitcode == 0




def test_a_sqlite_file_uri_makes_no_folder_named_after_its_scheme(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    handle = open_storage("sqlite:///file:runs/s.db?uri=true")
    with study_lock(handle, "s"):
        pass
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["runs", "runs/s.db",
                                                                                "runs/s.db.asklock"]


def test_a_study_lock_where_no_lock_file_can_be_made_goes_on_without_one(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A study folder shared read-only (the lock file cannot be made there, nor can the storage be written): the
    read-only commands that take the lock go on instead of failing with a PermissionError traceback."""
    handle = open_storage(f"journal:{tmp_path / 's.journal'}")
    real_open = os.open

    def read_only_folder(path: str, flags: int, mode: int = 0o777) -> int:
        if str(path).endswith(".asklock"):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, mode)

    monkeypatch.setattr(storage_module.os, "open", read_only_folder)
    with study_lock(handle, "s"):
        entered = True
    assert entered and not (tmp_path / "s.journal.asklock").exists()


# -- hostile --storage values: one line, the value shown without its secrets, nothing written --------------------

SCHEMES = "['sqlite', 'postgresql', 'postgresql+psycopg', 'postgresql+psycopg2', 'mysql', 'mysql+pymysql']"
SECRETS = ("hunter2", "hunt@er2", "hunt%40er2", "hunt:er2", "hunt/er2", "other3")




def refused_storage(url: str, error: type[Exception], folder: Path) -> str:
    """The one-line message ``open_storage(url)`` is refused with, run in ``folder``, which it leaves unchanged."""
    before = snapshot(folder)
    with pytest.raises(error) as info:
        open_storage(url)
    message = str(info.value)
    assert "\n" not in message and not any(secret in message for secret in SECRETS), message
    assert snapshot(folder) == before
    return message


@pytest.mark.parametrize("url", ["journal:~no-such-user-nas-meta/s.journal", "~no-such-user-nas-meta/s.journal",
                                 "sqlite:///~no-such-user-nas-meta/s.db"])
def test_a_home_of_no_user_is_refused_by_name(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """(``Path.expanduser`` raises a RuntimeError there, which used to escape as a traceback.)"""
    monkeypatch.chdir(tmp_path)
    assert refused_storage(url, ConfigError, tmp_path) == (
        f"--storage {url!r}: '~no-such-user-nas-meta' is the home of no user on this machine.")


def test_a_sqlite_file_whose_folder_cannot_be_made_is_refused_naming_it(tmp_path: Path) -> None:
    url = "sqlite:////proc/nas-meta-test/s.db"  # /proc takes no new folder, not even root's
    message = refused_storage(url, StorageError, tmp_path)
    assert message.startswith(f"cannot open storage {url}: the folder '/proc/nas-meta-test' cannot be made (")


@pytest.mark.parametrize("url", ["", "foo", "://", "sqlite:", "sqlite:/", "postgresql:/host/db", "sqlite:relative.db",
                                 "not a url at all"])
def test_a_malformed_value_says_which_forms_are_known(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert refused_storage(url, ConfigError, tmp_path) == f"--storage {url!r} is not a storage URL nas-meta knows; {FORMS}"


@pytest.mark.parametrize(
    ("url", "shown", "scheme"),
    [
        ("http://u:hunter2@x/db", "http://u:***@x/db", "http"),
        ("oracle://u:hunter2@h/db", "oracle://u:***@h/db", "oracle"),
        ("redis://:hunter2@h/0", "redis://:***@h/0", "redis"),
        ("sqlite+pysqlite:///runs/s.db", "sqlite+pysqlite:///runs/s.db", "sqlite+pysqlite"),
        ("SQLITE:///runs/s.db", "SQLITE:///runs/s.db", "SQLITE"),
        ("file:///tmp/x.journal", "file:///tmp/x.journal", "file"),
        ("postgres://u:hunter2@h/db", "postgres://u:***@h/db", "postgres"),
    ],
)
def test_an_unknown_scheme_is_named_without_the_password(url: str, shown: str, scheme: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert refused_storage(url, ConfigError, tmp_path) == (
        f"--storage {shown!r}: the scheme {scheme!r} is not one of {SCHEMES}; {FORMS}")


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite:///file::memory:?cache=shared",
                                 "sqlite:///runs/s.db?mode=memory", "sqlite:///file::memory:"])
def test_an_in_memory_database_is_refused_and_creates_nothing(url: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert refused_storage(url, ConfigError, tmp_path) == (
        f"--storage {redact(url)!r} is an in-memory database: a study there is lost when the command ends. Use a file "
        "(sqlite:///runs/study.db) or journal:runs/study.journal.")
    assert list(tmp_path.iterdir()) == []


def test_an_unencoded_at_in_the_password_is_refused_before_connecting(tmp_path: Path) -> None:
    assert refused_storage("postgresql://alice:hunt@er2@127.0.0.1:1/nas", ConfigError, tmp_path) == (
        "--storage 'postgresql://***@127.0.0.1:1/nas': the user or password holds an '@'; write it percent-encoded "
        "as %40.")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://alice:hunt%40er2@127.0.0.1:1/nas", "postgresql://alice:***@127.0.0.1:1/nas"),
        ("postgresql://alice:hunt:er2@127.0.0.1:1/nas", "postgresql://alice:***@127.0.0.1:1/nas"),
        ("postgresql://alice:hunt/er2@127.0.0.1:1/nas", "postgresql://alice:***@127.0.0.1:1/nas"),
        ("postgresql://alice@127.0.0.1:1/nas?password=hunter2", "postgresql://alice@127.0.0.1:1/nas?password=***"),
        ("postgresql://alice@127.0.0.1:1/nas?sslpassword=hunter2&sslmode=disable",
         "postgresql://alice@127.0.0.1:1/nas?sslmode=disable&sslpassword=***"),
        ("postgresql://alice:hunter2@127.0.0.1:1/nas?password=other3",
         "postgresql://alice:***@127.0.0.1:1/nas?password=***"),
        ("postgresql+psycopg://alice:hunter2@127.0.0.1:1/nas", "postgresql+psycopg://alice:***@127.0.0.1:1/nas"),
    ],
)
def test_an_unreachable_database_is_named_without_any_secret(url: str, shown: str, tmp_path: Path) -> None:
    assert redact(url) == shown
    message = refused_storage(url, StorageError, tmp_path)  # nothing listens on 127.0.0.1 port 1
    assert re.fullmatch(re.escape(f"cannot open storage {shown}: ") + r".*\bport 1\b.*Connection refused.*", message), \
        message
    assert len(message) < 400


def test_a_port_out_of_range_is_named(tmp_path: Path) -> None:
    message = refused_storage("postgresql://alice:hunter2@127.0.0.1:99999/nas", ConfigError, tmp_path)
    assert message == "--storage 'postgresql://***': port 99999 is not allowed: expected 1 to 65535."


@pytest.mark.parametrize("url", ["postgresql://alice:hunter2@127.0.0.1:abc/nas", "postgresql://alice:hunter2@[::1/nas"])
def test_a_port_that_is_no_number_is_a_config_error(url: str, tmp_path: Path) -> None:
    assert "hunter2" not in redact(url)
    refused_storage(url, ConfigError, tmp_path)


def test_a_missing_driver_is_named_without_the_password(tmp_path: Path) -> None:
    message = refused_storage("mysql://alice:hunter2@127.0.0.1:1/nas", StorageError, tmp_path)
    assert message.startswith("cannot open storage mysql://alice:***@127.0.0.1:1/nas: ")


@pytest.mark.parametrize("form", ["journal:{}", "{}"])
def test_a_journal_path_that_is_a_folder_is_refused(form: str, tmp_path: Path) -> None:
    folder = tmp_path / "s.journal"
    folder.mkdir()
    (folder / "inside").write_text("kept")
    value = form.format(folder)
    assert refused_storage(value, ConfigError, tmp_path) == (
        f"--storage {value!r}: a journal storage needs a file path, e.g. journal:runs/study.journal.")


def test_a_journal_below_a_file_is_refused_naming_the_path(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("kept")
    path = tmp_path / "notes.txt" / "s.journal"
    message = refused_storage(f"journal:{path}", ConfigError, tmp_path)
    assert message == f"--storage 'journal:{path}': '{tmp_path / 'notes.txt'}' is a file, not a folder."


# -- the journal file: a torn end is cut (backup kept, warning logged), damage in the middle is refused -------------

@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, list[tuple[int, str, Any]]]:
    """A journal holding study 's' with finished trials (complete, pruned, failed): its bytes and its trials."""
    path = tmp_path_factory.mktemp("journal") / "s.journal"
    study = optuna.create_study(study_name="s", storage=open_storage(f"journal:{path}").storage)

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        if trial.number == 3:
            raise optuna.TrialPruned()
        if trial.number == 4:
            raise ValueError("a failed trial")
        return x

    study.optimize(objective, n_trials=5, catch=(ValueError,))
    data = path.read_bytes()
    assert data.endswith(b"\n") and len(data.splitlines()) > 8
    return data, _trials(study)


def _trials(study: optuna.Study) -> list[tuple[int, str, Any]]:
    return [(t.number, t.state.name, t.values, t.params) for t in study.trials]


def _load(path: Path) -> list[tuple[int, str, Any]]:
    return _trials(optuna.load_study(study_name="s", storage=open_storage(f"journal:{path}").storage))


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param(b'{"op_code":6,"worker_id":"w","trial_id":2,"st', id="partial-json"),
        pytest.param(b'{"op_code":8,"worker_id":"w","trial_id":0,"user_attr":{"k":1}}', id="complete-record-no-newline"),
        pytest.param(b"\x00" * 512, id="nul-bytes"),
        pytest.param(b"\x00" * 64 + b"\n", id="nul-bytes-and-newline"),
        pytest.param(b'{"op_code":6,"wor\n', id="partial-json-and-newline"),
        pytest.param(b'{"op_code":6\n\x00\x00\x00', id="two-torn-lines"),
        pytest.param(b"\xff\xfe\xfa", id="not-utf8"),
        pytest.param(b"[1, 2]\n", id="json-that-is-no-record"),
    ],
)
def test_a_torn_end_is_cut_with_a_backup_and_a_warning(tail: bytes, journal: tuple[bytes, Any], tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    good, trials = journal
    path = tmp_path / "s.journal"
    path.write_bytes(good + tail)
    with caplog.at_level(logging.WARNING, logger="nas_meta.storage"):
        handle = open_storage(f"journal:{path}")
    assert path.read_bytes() == good
    backups = sorted(tmp_path.glob("s.journal.torn-*.bak"))
    assert len(backups) == 1 and backups[0].read_bytes() == good + tail
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [(f"journal {path} ended in a torn record ({len(tail)} bytes, a crash mid-write): removed it, "
                         f"a copy of the file is in {backups[0].name}")]
    assert _trials(optuna.load_study(study_name="s", storage=handle.storage)) == trials
    assert _load(path) == trials and len(list(tmp_path.glob("*.bak"))) == 1  # a sound file is not repaired again


@pytest.mark.parametrize("tail", [b'{"op_code":6,"worker_id":"w","trial_id":2,"st', b'{"op_code":8}', b"\x00" * 70_000],
                         ids=["partial-json", "record-without-newline", "nul-bytes-longer-than-a-read"])
def test_a_record_torn_while_the_journal_is_open_is_cut_before_the_next_write(
        tail: bytes, journal: tuple[bytes, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A worker SIGKILLed mid-write while others run: the next write of a live worker cuts the torn record off
    (backup kept) instead of gluing its own onto it, and every process can still read the journal."""
    good, trials = journal
    path = tmp_path / "s.journal"
    path.write_bytes(good)
    study = optuna.load_study(study_name="s", storage=open_storage(f"journal:{path}").storage)
    with open(path, "ab") as f:  # the dying writer's half record
        f.write(tail)
    with caplog.at_level(logging.WARNING, logger="nas_meta.storage"):
        study.set_user_attr("after", 1)
    data = path.read_bytes()
    assert data.startswith(good) and data.endswith(b"\n") and tail not in data[len(good):]
    backups = list(tmp_path.glob("s.journal.torn-*.bak"))
    assert len(backups) == 1 and backups[0].read_bytes() == tail
    assert any(f"cut it off before writing; the bytes are in {backups[0].name}" in r.getMessage()
               for r in caplog.records)
    reread = optuna.load_study(study_name="s", storage=open_storage(f"journal:{path}", read_only=True).storage)
    assert _trials(reread) == trials and reread.user_attrs == {"after": 1}


def test_a_journal_write_that_fails_midway_leaves_no_half_record(journal: tuple[bytes, Any], tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk: the write fails after part of the record reached the file; the part is cut back off, so the
    journal stays whole for every other worker, and the error reaches the writer."""
    good, trials = journal
    path = tmp_path / "s.journal"
    path.write_bytes(good)
    study = optuna.load_study(study_name="s", storage=open_storage(f"journal:{path}").storage)

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left on device"):
        study.set_user_attr("lost", 1)
    monkeypatch.undo()
    assert path.read_bytes() == good
    study.set_user_attr("kept", 2)  # the journal takes the next write as usual
    reread = optuna.load_study(study_name="s", storage=open_storage(f"journal:{path}", read_only=True).storage)
    assert _trials(reread) == trials and reread.user_attrs == {"kept": 2}


@pytest.mark.parametrize(
    ("line", "bad"),
    [
        pytest.param(3, b"garbage", id="text"),
        pytest.param(2, b"\x00" * 40, id="nul-bytes"),
        pytest.param(5, b'{"op_code":6,"wor', id="partial-json"),
        pytest.param(4, b"[1, 2]", id="json-list"),
        pytest.param(2, b"", id="empty-line"),
        pytest.param(1, b"#!/bin/sh", id="first-line"),
        pytest.param(6, b"\xff\xfe", id="not-utf8"),
    ],
)
def test_damage_in_the_middle_is_refused_naming_the_line_and_nothing_changes(
        line: int, bad: bytes, journal: tuple[bytes, Any], tmp_path: Path) -> None:
    good, _ = journal
    lines = good.split(b"\n")
    path = tmp_path / "s.journal"
    path.write_bytes(b"\n".join(lines[:line - 1] + [bad] + lines[line - 1:]))
    message = refused_storage(f"journal:{path}", StorageError, tmp_path)
    assert message == (f"journal {path}: line {line} is not a valid record, and valid records follow it; the file is "
                       "damaged in the middle and was left untouched (restore it from a backup).")


def test_a_file_that_is_no_journal_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "notes.journal"
    path.write_bytes(b"my notes\nnot a journal\n")
    refused_storage(f"journal:{path}", StorageError, tmp_path)


# -- a journal opened read-only (the dashboard) is never written, torn or not --------------------------------------

def test_a_missing_journal_opened_read_only_is_refused_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "typo" / "s.journal"
    before = snapshot(tmp_path)
    with pytest.raises(StorageError) as info:
        open_storage(f"journal:{path}", read_only=True)
    assert str(info.value) == f"cannot open storage journal:{path}: no such journal file."
    assert snapshot(tmp_path) == before == {}


def test_a_torn_journal_opened_read_only_is_read_as_it_is_and_never_written(journal: tuple[bytes, Any],
                                                                            tmp_path: Path) -> None:
    good, trials = journal
    path = tmp_path / "s.journal"
    path.write_bytes(good + b'{"op_code":6,"wor')
    before = snapshot(tmp_path)
    handle = open_storage(f"journal:{path}", read_only=True)
    study = optuna.load_study(study_name="s", storage=handle.storage)
    assert _trials(study) == trials
    with pytest.raises(StorageError) as info:
        study.set_user_attr("k", 1)
    assert str(info.value) == f"journal {path} is open read-only (nas-meta dashboard never writes)."
    assert snapshot(tmp_path) == before  # no repair, no backup, no write


def test_a_journal_damaged_in_the_middle_opened_read_only_is_refused_naming_the_line(journal: tuple[bytes, Any],
                                                                                     tmp_path: Path) -> None:
    good, _ = journal
    lines = good.split(b"\n")
    path = tmp_path / "s.journal"
    path.write_bytes(b"\n".join(lines[:2] + [b"garbage"] + lines[2:]))
    with pytest.raises(StorageError, match=re.escape(f"journal {path}: line 3 is not a valid record")):
        optuna.load_study(study_name="s", storage=open_storage(f"journal:{path}", read_only=True).storage)


# -- regression: a FIFO as the journal is refused at once; bad heartbeat settings are named ---------------------------



@pytest.mark.parametrize("form", ["journal:{}", "{}"])
@pytest.mark.parametrize("read_only", [False, True], ids=["read-write", "read-only"])
def test_a_journal_that_is_a_fifo_is_refused_at_once(tmp_path: Path, form: str, read_only: bool) -> None:
    fifo = tmp_path / "s.journal"
    os.mkfifo(fifo)
    url = form.format(fifo)
    start = time.perf_counter()
    with deadline(5.0), pytest.raises(ConfigError) as info:
        open_storage(url, read_only=read_only)
    assert time.perf_counter() - start < 1.0
    assert str(info.value) == f"--storage {url!r}: {str(fifo)!r} is not a regular file (a folder, FIFO or device)."
    assert sorted(os.listdir(tmp_path)) == ["s.journal"] and stat.S_ISFIFO(fifo.stat().st_mode)


def test_a_sqlite_database_that_is_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "s.db"
    os.mkfifo(fifo)
    with deadline(5.0), pytest.raises(ConfigError) as info:
        open_storage(f"sqlite:///{fifo}")
    assert str(info.value) == (f"--storage 'sqlite:///{fifo}': {str(fifo)!r} is not a regular file (a folder, FIFO "
                               "or device).")


def _heartbeat_run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The console script opening a database storage, which reads the heartbeat settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NAS_META_HEARTBEAT")}
    return subprocess.run([sys.executable, "-m", "nas_meta.cli", "studies", "--storage", f"sqlite:///{tmp_path}/s.db"],
                          capture_output=True, text=True, timeout=120, env={**clean, **env}, cwd=tmp_path)


@pytest.mark.slow  # fresh interpreters importing Optuna
@pytest.mark.parametrize(("env", "name", "shown"), [
    ({"NAS_META_HEARTBEAT_SECONDS": "abc"}, "NAS_META_HEARTBEAT_SECONDS", "'abc'"),
    ({"NAS_META_HEARTBEAT_GRACE_SECONDS": "-3"}, "NAS_META_HEARTBEAT_GRACE_SECONDS", "'-3'"),
    ({"NAS_META_HEARTBEAT_SECONDS": "\u00b2"}, "NAS_META_HEARTBEAT_SECONDS", "'\u00b2'"),
])
def test_a_bad_heartbeat_setting_is_one_line_naming_it(tmp_path: Path, env: dict[str, str], name: str,
                                                        shown: str) -> None:
    sqlite3.connect(tmp_path / "s.db").close()  # an empty database file: reading it needs the settings
    done = _heartbeat_run(tmp_path, **env)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip() == (f"nas-meta: error: {name}={shown} is not allowed: expected a whole number of "
                                   "seconds in [1, 86400].")
    good = _heartbeat_run(tmp_path, NAS_META_HEARTBEAT_SECONDS="5")
    assert good.returncode == 2 and "holds no Optuna studies" in good.stderr  # got past the settings


@pytest.mark.parametrize(("text", "expected"), [(None, 10), ("", 10), ("5", 5), (" 7 ", 7), ("86400", 86400)])
def test_a_heartbeat_setting_is_read_as_whole_seconds(monkeypatch: pytest.MonkeyPatch, text: str | None,
                                                      expected: int) -> None:
    from nas_meta.storage import _env_seconds

    if text is None:
        monkeypatch.delenv("NAS_META_HEARTBEAT_SECONDS", raising=False)
    else:
        monkeypatch.setenv("NAS_META_HEARTBEAT_SECONDS", text)
    assert _env_seconds("NAS_META_HEARTBEAT_SECONDS", 10) == expected


@pytest.mark.parametrize("text", ["abc", "0", "-3", "1.5", "1e3", "86401", "10s", "1 0"])
def test_a_bad_heartbeat_setting_is_named(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    from nas_meta.storage import _env_seconds

    monkeypatch.setenv("NAS_META_HEARTBEAT_SECONDS", text)
    with pytest.raises(ConfigError) as info:
        _env_seconds("NAS_META_HEARTBEAT_SECONDS", 10)
    assert str(info.value) == (f"NAS_META_HEARTBEAT_SECONDS={text!r} is not allowed: expected a whole number of "
                               "seconds in [1, 86400].")


def test_a_journal_heartbeat_outlives_a_passing_write_fault_and_stops_once_the_trial_is_closed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A full disk for one beat must not end the heartbeat for good (the live trial would then be failed as
    stale); a trial closed by another worker ends it."""
    from optuna.trial import TrialState

    from nas_meta.storage import HEARTBEAT_ATTR, JournalHeartbeat

    storage = open_storage(f"journal:{tmp_path / 's.journal'}").storage
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    real, beats = storage.set_trial_system_attr, [0]

    def flaky(trial_id: int, key: str, value: Any) -> None:
        beats[0] += key == HEARTBEAT_ATTR
        if key == HEARTBEAT_ATTR and beats[0] == 2:  # the thread's first beat
            raise OSError(28, "No space left on device")
        real(trial_id, key, value)

    storage.set_trial_system_attr = flaky  # type: ignore[method-assign]
    heartbeat = JournalHeartbeat(storage, trial._trial_id, interval=0.05)
    with caplog.at_level(logging.WARNING, logger="nas_meta.storage"), heartbeat:
        first = storage.get_trial(trial._trial_id).system_attrs[HEARTBEAT_ATTR]  # __enter__ beats at once
        deadline_at = time.monotonic() + 10
        while storage.get_trial(trial._trial_id).system_attrs[HEARTBEAT_ATTR] == first:
            assert time.monotonic() < deadline_at, "the heartbeat stopped after one failed write"
            time.sleep(0.02)
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)  # closed by another worker
        time.sleep(0.2)
        assert heartbeat._thread.is_alive() is False
    assert beats[0] >= 3 and "its heartbeat could not be written ([Errno 28] No space left on device)" in caplog.text
