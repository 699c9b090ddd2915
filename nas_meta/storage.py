"""Optuna storages from a ``--storage`` value, the artifact store beside them, and a lock per study.

* no value: a journal file ``runs/<study>.journal`` (Optuna's ``JournalFileBackend``), safe for several
  worker processes on one machine, no server needed. It has no heartbeat: nas-meta marks the trials of a
  worker process that died on this machine as failed when it next starts on that file.
* ``sqlite:///PATH``, ``postgresql://…``, ``mysql://…``: Optuna's ``RDBStorage`` with worker heartbeats, so the
  trial of a dead worker is marked failed and retried (``RetryFailedTrialCallback``).
* ``journal:PATH`` or a path ending in ``.journal``: a journal file at that path.

Messages never show a password.
"""

from __future__ import annotations

import fcntl
import os
import random
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from sqlalchemy import text

from .errors import ConfigError, StorageError

HEARTBEAT_SECONDS = int(os.environ.get("NAS_META_HEARTBEAT_SECONDS", "10"))
GRACE_SECONDS = int(os.environ.get("NAS_META_HEARTBEAT_GRACE_SECONDS", str(3 * HEARTBEAT_SECONDS)))
RDB_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg2", "mysql", "mysql+pymysql")


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


@dataclass(frozen=True)
class StorageHandle:
    """An Optuna storage plus what nas-meta needs to know about it."""

    storage: Any
    url: str  # redacted, for messages and logs
    kind: str  # "journal" or "rdb"
    journal_path: Path | None = None

    @property
    def has_heartbeat(self) -> bool:
        return self.kind == "rdb"


def default_storage_url(study_name: str, runs_dir: str | Path = "runs") -> str:
    return f"journal:{Path(runs_dir) / f'{study_name}.journal'}"


def open_storage(url: str) -> StorageHandle:
    """Open the storage named by ``url`` (see the module docstring for the forms).

    Raises:
        ConfigError: the value is malformed or names an unknown scheme.
        StorageError: the database cannot be reached or refuses the credentials.
    """
    shown = redact(url)
    if url.startswith("journal:") or (url.endswith(".journal") and "://" not in url):
        path = Path(url.removeprefix("journal:")).expanduser()
        if not str(path):
            raise ConfigError(f"--storage {shown!r}: a journal storage needs a file path, e.g. journal:runs/study.journal.")
        path.parent.mkdir(parents=True, exist_ok=True)
        return StorageHandle(JournalStorage(JournalFileBackend(str(path))), f"journal:{path}", "journal", path)
    match = re.match(r"^([a-z0-9+]+)://", url)
    if match is None or match.group(1) not in RDB_SCHEMES:
        raise ConfigError(
            f"--storage {shown!r} is not a storage URL nas-meta knows; use journal:PATH (embedded, the default), "
            "sqlite:///PATH, or postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE."
        )
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(5):
        try:
            storage = RDBStorage(
                url,
                heartbeat_interval=HEARTBEAT_SECONDS,
                grace_period=GRACE_SECONDS,
                **_retry_callback(),
                engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else None,
            )
            return StorageHandle(storage, shown, "rdb")
        except Exception as err:  # SQLAlchemy/driver errors vary by backend; all mean "cannot use this URL"
            # Workers that start together on a fresh database race to create Optuna's tables: retry that.
            if "duplicate key" in str(err) or "already exists" in str(err):
                time.sleep(0.2 + random.random() * (attempt + 1))
                continue
            raise StorageError(f"cannot open storage {shown}: {_reason(err, url)}") from None
    raise StorageError(f"cannot open storage {shown}: its tables could not be created (concurrent creation)")


def _retry_callback() -> dict[str, Any]:
    """Optuna's retry of heartbeat-stale trials, under the argument name of the installed Optuna."""
    if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):
        return {"heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)}
    return {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=3)}


def _reason(err: BaseException, url: str) -> str:
    text = str(getattr(err, "orig", None) or err).strip().splitlines()
    first = text[0] if text else type(err).__name__
    password = re.search(r"://[^:/@]+:([^@]*)@", url)
    if password and password.group(1):
        first = first.replace(password.group(1), "***")
    return redact(first)


def study_names(handle: StorageHandle) -> list[str]:
    """Names of the studies in a storage."""
    return sorted(s.study_name for s in optuna.get_all_study_summaries(handle.storage, include_best_trial=False))


class study_lock:
    """Serialises work on one study between processes (creating it, "count trials, then ask").

    A file lock next to a journal file; a PostgreSQL advisory lock for postgresql storages; nothing for
    other storages (where a few extra trials are possible when many workers finish at once).
    """

    def __init__(self, handle: StorageHandle, study_name: str) -> None:
        self.handle = handle
        self.study_name = study_name
        self._file: Any = None
        self._conn: Any = None

    def __enter__(self) -> None:
        if self.handle.journal_path is not None:
            self._file = open(f"{self.handle.journal_path}.asklock", "a")
            fcntl.flock(self._file, fcntl.LOCK_EX)
        elif self.handle.url.startswith("postgresql"):
            self._conn = self.handle.storage.engine.connect()
            self._conn.execute(text("SELECT pg_advisory_lock(hashtext(:name))"), {"name": self.study_name})

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        if self._conn is not None:
            self._conn.execute(text("SELECT pg_advisory_unlock(hashtext(:name))"), {"name": self.study_name})
            self._conn.close()
            self._conn = None


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


def artifact_store(folder: str | Path) -> AtomicFileSystemArtifactStore:
    """The artifact store in ``folder`` (created if needed) where a study keeps its trials' learners."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    return AtomicFileSystemArtifactStore(str(folder))
