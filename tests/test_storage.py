"""Storages from a --storage value, redacted URLs, the study lock and the atomic artifact store (fast)."""

from __future__ import annotations

import io
import multiprocessing
from pathlib import Path
from typing import Any

import optuna
import pytest

from nas_meta.errors import ConfigError, StorageError
from nas_meta.storage import artifact_store, default_storage_url, open_storage, redact, study_lock, study_names

FORMS = "use journal:PATH (embedded, the default), sqlite:///PATH, or postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE."


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


def test_study_lock_is_reusable_and_excludes_a_second_process(tmp_path: Path) -> None:
    url = f"journal:{tmp_path / 's.journal'}"
    lock = study_lock(open_storage(url), "s")
    for _ in range(2):  # one lock object entered again after each exit
        with lock:
            assert (tmp_path / "s.journal.asklock").is_file()
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


def test_study_lock_is_a_no_op_for_sqlite(tmp_path: Path) -> None:
    handle = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    with study_lock(handle, "s"), study_lock(handle, "s"):  # nested: nothing is locked
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.db"]
