"""Optuna storages from a ``--storage`` value, the artifact store beside them, and a lock per study.

* no value: a journal file ``runs/<study>.journal`` (Optuna's ``JournalFileBackend``), safe for several
  worker processes on one machine, no server needed. It has no heartbeat: nas-meta marks the trials of a
  worker process that died on this machine as failed when it next starts on that file.
* ``sqlite:///PATH``, ``postgresql://…``, ``mysql://…``: Optuna's ``RDBStorage`` with worker heartbeats, so the
  trial of a dead worker is marked failed and retried (``RetryFailedTrialCallback``).
* ``journal:PATH`` or a path ending in ``.journal``: a journal file at that path.

Messages never show a password: URLs are parsed and shown with SQLAlchemy's URL object (password hidden,
secret query values such as ``?password=`` hidden too). A journal whose last line was cut off by a crash is
repaired on open (a backup is kept); one with a bad line in the middle is refused and never modified.
"""

from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import random
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Self
from urllib.parse import unquote

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages._heartbeat import get_heartbeat_thread, is_heartbeat_enabled
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from optuna.storages.journal._file import get_lock_file
from sqlalchemy import create_engine, text
from sqlalchemy import inspect as sqlalchemy_inspect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from .config import check_study_name, clip, short
from .errors import ConfigError, StorageError
from .runtime import home_expanded, public_mode

logger = logging.getLogger(__name__)

def _env_seconds(name: str, default: int) -> int:
    """A whole number of seconds from the environment variable ``name``.

    Raises:
        ConfigError: the variable holds anything else.
    """
    text = os.environ.get(name)
    if text is None or text.strip() == "":
        return default
    if re.fullmatch(r"[0-9]{1,6}", text.strip()) is None or not 1 <= int(text) <= 86_400:
        raise ConfigError(f"{name}={short(text)} is not allowed: expected a whole number of seconds in [1, 86400].")
    return int(text)


def heartbeat_seconds() -> int:
    """How often a running trial's heartbeat is refreshed: ``$NAS_META_HEARTBEAT_SECONDS``, default 10.

    Raises:
        ConfigError: the variable is not a whole number of seconds (read when used, so the CLI reports it).
    """
    return _env_seconds("NAS_META_HEARTBEAT_SECONDS", 10)


def grace_seconds() -> int:
    """How late a heartbeat may be before its trial counts as stale: ``$NAS_META_HEARTBEAT_GRACE_SECONDS``, default
    three heartbeats."""
    return _env_seconds("NAS_META_HEARTBEAT_GRACE_SECONDS", 3 * heartbeat_seconds())
RDB_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg", "postgresql+psycopg2", "mysql", "mysql+pymysql")
HEARTBEAT_ATTR = "nas_meta:heartbeat"  # a journal trial's last heartbeat (system attribute, Unix time)
_SECRET_QUERY_KEY = re.compile(r"pass|secret|token|key|credential", re.IGNORECASE)


def _authority(url: str) -> str:
    """The ``user:password@host:port`` part of a URL (empty for ``journal:`` values)."""
    _, sep, rest = url.partition("://")
    return rest.split("/", 1)[0].split("?", 1)[0] if sep else ""


def redact(url: str) -> str:
    """``url`` as it may be shown: the password and secret query values (``?password=…``) replaced by ``***``.

    Parsed with SQLAlchemy's ``make_url``; a URL it cannot parse, or whose user part holds an unencoded ``@``,
    shows nothing before its host.
    """
    if "://" not in url:
        return url
    scheme, _, rest = url.partition("://")
    authority = _authority(url)
    if authority.count("@") > 1:  # a password with an unencoded "@": anything before the last "@" may be secret
        return f"{scheme}://***@{rest[rest.index(authority) + authority.rindex('@') + 1:]}"
    try:
        parsed = make_url(url)
        if parsed.port is not None and not 0 < parsed.port < 65536:
            raise ValueError("port out of range")
    except (ArgumentError, ValueError):
        return f"{scheme}://***" if "@" in authority or "?" in rest else url
    if parsed.password is None and not any(_SECRET_QUERY_KEY.search(k) for k in parsed.query):
        return url  # nothing to hide: shown as given
    secret = {k: "***" for k in parsed.query if _SECRET_QUERY_KEY.search(k)}
    shown = (parsed.update_query_dict(secret) if secret else parsed).render_as_string(hide_password=True)
    return shown.replace("%2A%2A%2A", "***")


def _secrets(url: str) -> list[str]:
    """The secret strings of ``url`` (password, secret query values), raw and percent-decoded, longest first."""
    found: set[str] = set()
    authority = _authority(url)
    if "@" in authority and ":" in authority.rsplit("@", 1)[0]:
        found.add(authority.rsplit("@", 1)[0].split(":", 1)[1])
    try:
        parsed = make_url(url)
        found.update(str(v) for k, v in parsed.query.items() if _SECRET_QUERY_KEY.search(k))
        if parsed.password:
            found.add(str(parsed.password))
    except (ArgumentError, ValueError):
        pass
    found |= {unquote(s) for s in found}
    return sorted((s for s in found if s), key=len, reverse=True)


def scrub(message: str, url: str) -> str:
    """``message`` with every secret of ``url`` replaced by ``***``."""
    for secret in _secrets(url):
        message = message.replace(secret, "***")
    return message


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


def as_handle(storage: str | StorageHandle | BaseStorage, *, read_only: bool = False) -> StorageHandle:
    """A storage given as a URL (opened, ``read_only`` as :func:`open_storage`), a handle, or an Optuna storage
    object (a journal file or a database).

    Raises:
        ConfigError: an Optuna storage nas-meta cannot place (e.g. in-memory), or a bad URL.
        StorageError: the URL's storage cannot be opened.
    """
    if isinstance(storage, StorageHandle):
        return storage
    if isinstance(storage, str):
        return open_storage(storage, read_only=read_only)
    inner = getattr(storage, "_backend", storage)  # optuna wraps an RDBStorage in a _CachedStorage
    if isinstance(storage, JournalStorage) and isinstance(inner, JournalFileBackend):
        path = Path(inner._file_path)
        return StorageHandle(storage, f"journal:{path}", "journal", path)
    if isinstance(inner, RDBStorage):
        return StorageHandle(storage, redact(str(inner.url)), "rdb")
    raise ConfigError(f"storage {type(storage).__name__} is not one nas-meta can read studies from; give a journal "
                      "file or a database (a URL or an Optuna JournalStorage/RDBStorage).")


def default_storage_url(study_name: str, runs_dir: str | Path = "runs") -> str:
    """``journal:runs/<study>.journal``.

    Raises:
        ConfigError: the study name is not a valid file-name part.
    """
    return f"journal:{Path(runs_dir) / f'{check_study_name(study_name)}.journal'}"


class AppendingJournalBackend(JournalFileBackend):
    """Optuna's journal file, whose writes never glue a record onto a torn one, nor leave one torn themselves.

    A writer killed mid-record (SIGKILL, power loss) or cut short by a full disk leaves a line without its newline;
    Optuna's own append would continue that line, and the merged line would be unreadable to every worker for
    good. Here each append, under Optuna's lock, first cuts such a tail off (saved in a ``.torn-*.bak`` file beside
    the journal), and a write that fails is cut back off before the error propagates.
    """

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        payload = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n").encode("utf-8")
        with get_lock_file(self._lock), open(self._file_path, "a+b", buffering=0) as f:
            end = _cut_torn_tail(f, Path(self._file_path))
            try:
                view = memoryview(payload)
                while view:
                    view = view[f.write(view) or 0:]
                os.fsync(f.fileno())
            except OSError:
                f.truncate(end)  # no half record left behind (a full disk): the journal stays whole
                raise


def torn_backup_path(path: Path) -> Path:
    """Where the bytes of a torn journal (the whole file on open, the torn tail on a write) are kept."""
    return path.with_name(f"{path.name}.torn-{datetime.now():%Y%m%d-%H%M%S-%f}.bak")


def _cut_torn_tail(f: io.FileIO, path: Path) -> int:
    """Cut the bytes after the last newline of the open journal ``f`` (a record a crashed writer left
    unfinished), keeping them in a backup file; the journal's size after it."""
    size = f.seek(0, os.SEEK_END)
    if size == 0:
        return 0
    f.seek(size - 1)
    if f.read(1) == b"\n":  # the usual case: whole records only
        return size
    end, chunk = size, 1 << 16
    while end > 0:  # back to the last newline
        start = max(0, end - chunk)
        f.seek(start)
        block = f.read(end - start)
        newline = block.rfind(b"\n")
        if newline >= 0:
            end = start + newline + 1
            break
        end = start
    if end == size:
        return size
    f.seek(end)
    torn = f.read(size - end)
    backup = torn_backup_path(path)
    backup.write_bytes(torn)
    f.truncate(end)
    logger.warning("journal %s ended in a torn record (%d bytes, a writer that died mid-write): cut it off before "
                   "writing; the bytes are in %s", path, size - end, backup.name)
    return end


class ReadOnlyJournalBackend(JournalFileBackend):
    """A journal file read and never written: every write is refused with a clear error."""

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        raise StorageError(f"journal {self._file_path} is open read-only (nas-meta dashboard never writes).")


def open_storage(url: str, *, read_only: bool = False) -> StorageHandle:
    """Open the storage named by ``url`` (see the module docstring for the forms).

    ``read_only`` (export, dashboard, loading a learner): nothing is created or changed. A journal file must exist;
    it is checked but a torn end is left as it is (Optuna ignores it) and every write is refused. A SQLite file must
    exist; a database without Optuna's tables is reported, not given them.

    Raises:
        ConfigError: the value is malformed, names an unknown scheme, keeps nothing (an in-memory database), or a
            path that cannot be a file.
        StorageError: the database cannot be reached or refuses the credentials; the journal is damaged, or is
            missing when ``read_only``.
    """
    shown = redact(url)
    if url.startswith("journal:") or (url.endswith(".journal") and "://" not in url):
        path = _journal_path(url, shown)
        try:
            if read_only:
                if not path.is_file():
                    raise StorageError(f"cannot open storage journal:{path}: no such journal file.")
                check_journal(path)
                backend: JournalFileBackend = ReadOnlyJournalBackend(str(path))
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                repair_journal(path)
                backend = AppendingJournalBackend(str(path))
            return StorageHandle(JournalStorage(backend), f"journal:{path}", "journal", path)
        except OSError as err:
            raise StorageError(f"cannot open storage journal:{path}: {err.strerror or err}.") from None
    parsed = _parse_rdb_url(url, shown)
    if parsed.drivername.startswith("sqlite") and parsed.database:
        database = _home_expanded(sqlite_file(parsed.database), shown)
        _check_file_path(database, shown)
        if read_only and not database.is_file():
            raise StorageError(f"cannot open storage {shown}: no such database file.")
        try:
            database.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StorageError(f"cannot open storage {shown}: the folder {str(database.parent)!r} cannot be made "
                               f"({err.strerror or err}).") from None
    interval, grace = heartbeat_seconds(), grace_seconds()
    if read_only:
        _check_has_studies(url, shown)
    for attempt in range(5):
        try:
            storage = RDBStorage(
                url,
                heartbeat_interval=interval,
                grace_period=grace,
                **_retry_callback(),
                engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else None,
                skip_table_creation=read_only,
            )
            return StorageHandle(storage, shown, "rdb")
        except Exception as err:  # noqa: BLE001  SQLAlchemy/driver errors vary by backend; all mean "cannot use this URL"
            # Workers that start together on a fresh database race to create Optuna's tables: retry that.
            if "duplicate key" in str(err) or "already exists" in str(err):
                time.sleep(0.2 + random.random() * (attempt + 1))
                continue
            raise StorageError(f"cannot open storage {shown}: {_reason(err, url)}") from None
    raise StorageError(f"cannot open storage {shown}: its tables could not be created (concurrent creation)")


def _check_has_studies(url: str, shown: str) -> None:
    """A database opened read-only must already hold Optuna's tables (nothing is created in it).

    Raises:
        StorageError: it cannot be reached, or holds no Optuna studies.
    """
    try:
        engine = create_engine(url)
    except Exception as err:  # noqa: BLE001  e.g. the database's driver is not installed
        raise StorageError(f"cannot open storage {shown}: {_reason(err, url)}") from None
    try:
        has_studies = sqlalchemy_inspect(engine).has_table("studies")
    except Exception as err:  # noqa: BLE001  driver errors vary by backend
        raise StorageError(f"cannot open storage {shown}: {_reason(err, url)}") from None
    finally:
        engine.dispose()
    if not has_studies:
        raise StorageError(f"cannot open storage {shown}: it holds no Optuna studies.")


def _check_file_path(path: Path, shown: str) -> None:
    """A storage file's path must be able to hold a regular file: no NUL byte, no file where a folder is needed,
    no folder, FIFO or device where the file goes."""
    if "\x00" in str(path):
        raise ConfigError(f"--storage {shown!r}: the path holds a NUL byte.")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise ConfigError(f"--storage {shown!r}: {str(parent)!r} is a file, not a folder.")
    if path.exists() and not path.is_file():
        raise ConfigError(f"--storage {shown!r}: {str(path)!r} is not a regular file (a folder, FIFO or device).")


def _home_expanded(path: str, shown: str) -> Path:
    expanded = home_expanded(path)
    if expanded is None:
        raise ConfigError(f"--storage {shown!r}: {path.split('/')[0]!r} is the home of no user on this machine.")
    return expanded


def _journal_path(url: str, shown: str) -> Path:
    path = _home_expanded(url.removeprefix("journal:"), shown)
    if not str(path) or str(path) == "." or path.is_dir():
        raise ConfigError(f"--storage {shown!r}: a journal storage needs a file path, e.g. journal:runs/study.journal.")
    _check_file_path(path, shown)
    return path


def _parse_rdb_url(url: str, shown: str) -> URL:
    """Check an RDB URL before connecting: its form, its scheme, and that it keeps what it is given."""
    allowed = ("use journal:PATH (embedded, the default), sqlite:///PATH, or "
               "postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE")
    if _authority(url).count("@") > 1:
        raise ConfigError(f"--storage {shown!r}: the user or password holds an '@'; write it percent-encoded as %40.")
    try:
        parsed = make_url(url)
        port = parsed.port
    except (ArgumentError, ValueError):
        raise ConfigError(f"--storage {shown!r} is not a storage URL nas-meta knows; {allowed}.") from None
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"--storage {shown!r}: port {port} is not allowed: expected 1 to 65535.")
    if parsed.drivername not in RDB_SCHEMES:
        raise ConfigError(f"--storage {shown!r}: the scheme {parsed.drivername!r} is not one of {list(RDB_SCHEMES)}; "
                          f"{allowed}.")
    database = parsed.database or ""
    in_memory = (database in ("", ":memory:") or database.startswith("file::memory:")
                 or parsed.query.get("mode") == "memory")
    if parsed.drivername.startswith("sqlite") and in_memory:
        raise ConfigError(f"--storage {shown!r} is an in-memory database: a study there is lost when the command "
                          "ends. Use a file (sqlite:///runs/study.db) or journal:runs/study.journal.")
    return parsed


def sqlite_file(database: str) -> str:
    """The file of a SQLite URL's database part: a ``file:`` URI (``sqlite:///file:runs/s.db?uri=true``) names it
    after its scheme, before its query."""
    if database.startswith("file:"):
        return unquote(database.removeprefix("file:").split("?", 1)[0])
    return database


def _retry_callback() -> dict[str, Any]:
    """Optuna's retry of heartbeat-stale trials, under the argument name of the installed Optuna: a dead worker's
    trial is run again however often its workers die (as on the journal file), so a study ends with its trials."""
    if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):
        return {"heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=None)}
    return {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=None)}


def _reason(err: BaseException, url: str) -> str:
    lines = str(getattr(err, "orig", None) or err).strip().splitlines()
    first = lines[0] if lines else type(err).__name__
    return scrub(first, url)[:300]


# -- the journal file ------------------------------------------------------------------------------------

def _is_log(line: bytes) -> bool:
    """A complete journal record: a JSON object with Optuna's ``op_code``."""
    try:
        record = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(record, dict) and "op_code" in record


def _torn_end(path: Path, data: bytes) -> int:
    """How many bytes at the end of a journal's ``data`` are a torn record (0 if none).

    A crash mid-write leaves at most the last write incomplete: one partial record (``{"op_code"…`` without
    its newline, or with NUL bytes a file system left). Anything else that is not a record is damage.

    Raises:
        StorageError: a bad line with good ones after it, several bad lines at the end, or a file that holds no
            Optuna record at all; the message names the file and the line.
    """
    lines = data.split(b"\n")
    tail = lines.pop()  # what follows the last newline: empty unless the file ends mid-line
    good = len(lines)
    while good > 0 and not _is_log(lines[good - 1]):
        good -= 1
    bad = next((i for i, line in enumerate(lines[:good]) if not _is_log(line)), None)
    if bad is not None:
        raise StorageError(f"journal {path}: line {bad + 1} is not a valid record, and valid records follow it; "
                           "the file is damaged in the middle and was left untouched (restore it from a backup).")
    torn = [line for line in lines[good:] + [tail] if line.strip(b"\x00")]  # lines of NULs: a file system's filler
    if not any(line for line in lines[good:] + [tail]):
        return 0
    if len(torn) > 1 or (good == 0 and not (torn and torn[0].startswith(b'{"op_code"'))):
        what = "holds no Optuna journal record" if good == 0 else f"ends in {len(torn)} lines that are not records"
        raise StorageError(f"journal {path}: {what} (line {good + 1} on); it is not an Optuna journal or it is "
                           "damaged, and was left untouched.")
    return len(data) - sum(len(line) + 1 for line in lines[:good])


def check_journal(path: Path) -> int:
    """Check a journal file without changing it; the size of its torn end in bytes (0 if none).

    Raises:
        StorageError: see :func:`_torn_end`.
    """
    return _torn_end(path, path.read_bytes()) if path.stat().st_size else 0


def repair_journal(path: Path) -> bool:
    """Cut a torn end off a journal file, keeping a backup of the whole file first; returns True if it did.

    A crash (power loss, full disk, SIGKILL mid-write) can leave the last record incomplete; Optuna would append
    after it and every later read would fail. Any other damage is refused (:func:`_torn_end`), the file untouched.

    Raises:
        StorageError: the journal is damaged otherwise, or is not a journal.
    """
    if not path.is_file() or path.stat().st_size == 0:
        return False
    with get_lock_file(JournalFileSymlinkLock(str(path))):  # Optuna's own lock: no writer is mid-line now
        data = path.read_bytes()
        torn = _torn_end(path, data)
        if not torn:
            return False
        backup = torn_backup_path(path)
        shutil.copy2(path, backup)
        with open(path, "r+b") as f:
            f.truncate(len(data) - torn)
            f.flush()
            os.fsync(f.fileno())
    logger.warning("journal %s ended in a torn record (%d bytes, a crash mid-write): removed it, a copy of the file "
                   "is in %s", path, torn, backup.name)
    return True


# -- trial heartbeats ------------------------------------------------------------------------------------

class JournalHeartbeat:
    """Refreshes a RUNNING trial's heartbeat (:data:`HEARTBEAT_ATTR`, Unix time) from a thread every
    :func:`heartbeat_seconds`, for storages without Optuna's own heartbeat (the journal file).

    A trial whose heartbeat is older than :func:`grace_seconds` belongs to a worker that is gone, whoever holds its
    process id now (see ``search.workers.fail_stale_trials``).
    """

    def __init__(self, storage: BaseStorage, trial_id: int, interval: float | None = None) -> None:
        self.storage = storage
        self.trial_id = trial_id
        self.interval = interval if interval is not None else heartbeat_seconds()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nas-meta-heartbeat", daemon=True)

    def beat(self) -> None:
        self.storage.set_trial_system_attr(self.trial_id, HEARTBEAT_ATTR, time.time())

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except UpdateFinishedTrialError:  # the trial was closed (failed as stale): nothing left to keep alive
                return
            except Exception as err:  # noqa: BLE001  a passing fault (a full disk, NFS): beat again next time
                logger.warning("trial %d: its heartbeat could not be written (%s); trying again in %g s",
                               self.trial_id, clip(str(err), 200), self.interval)

    def __enter__(self) -> Self:
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def trial_heartbeat(storage: BaseStorage, trial_id: int) -> Iterator[None]:
    """Optuna's heartbeat thread on RDB storages, :class:`JournalHeartbeat` elsewhere."""
    if is_heartbeat_enabled(storage):
        with get_heartbeat_thread(trial_id, storage):
            yield
    else:
        with JournalHeartbeat(storage, trial_id):
            yield


def last_heartbeat(trial: optuna.trial.FrozenTrial) -> float | None:
    """A journal trial's last heartbeat (Unix time), else its start time; None if it has neither."""
    beat = trial.system_attrs.get(HEARTBEAT_ATTR)
    if isinstance(beat, (int, float)):
        return float(beat)
    return trial.datetime_start.timestamp() if trial.datetime_start is not None else None


def study_names(handle: StorageHandle) -> list[str]:
    """Names of the studies in a storage."""
    return sorted(s.study_name for s in optuna.get_all_study_summaries(handle.storage, include_best_trial=False))


class study_lock:
    """Serialises work on one study between processes (creating it, "count trials, then ask").

    A file lock next to a journal file or a SQLite database; a PostgreSQL advisory lock for postgresql storages;
    nothing for other storages (MySQL: a few extra trials, or a retry queued twice, are possible when many
    workers finish at once).
    """

    def __init__(self, handle: StorageHandle, study_name: str) -> None:
        self.handle = handle
        self.study_name = study_name
        self._file: Any = None
        self._conn: Any = None

    def __enter__(self) -> None:
        beside = self.handle.journal_path or self._sqlite_path()
        if beside is not None:
            path = f"{beside}.asklock"
            try:  # read-only is enough for flock: a lock file another user made, a study folder shared read-only
                self._file = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
            except OSError as err:  # a folder nobody here can write: nor can the storage be written, so no race
                logger.debug("the study lock %s cannot be opened (%s); going on without it", path, err)
                return
            fcntl.flock(self._file, fcntl.LOCK_EX)
        elif self.handle.url.startswith("postgresql"):
            self._conn = self.handle.storage.engine.connect()
            self._conn.execute(text("SELECT pg_advisory_lock(hashtext(:name))"), {"name": self.study_name})

    def _sqlite_path(self) -> str | None:
        """The SQLite database's file (a ``file:`` URI's path without its query), or None."""
        if not self.handle.url.startswith("sqlite"):
            return None
        database = sqlite_file(self.handle.storage.engine.url.database or "")
        return database if database and database != ":memory:" else None

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            os.close(self._file)
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
        os.chmod(tmp, public_mode())
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


def default_artifacts_dir(handle: StorageHandle, study_name: str) -> Path:
    """Where a study keeps its artifacts unless told: ``<journal stem>-artifacts`` beside a journal file,
    else ``runs/<study>-artifacts``."""
    if handle.journal_path is not None:
        return handle.journal_path.with_name(f"{handle.journal_path.stem}-artifacts")
    return Path("runs") / f"{study_name}-artifacts"


def record_artifacts_dir(handle: StorageHandle, folder: Path) -> str:
    """How a study records its artifact folder: relative to the journal file's folder (so a study moved or
    copied with its artifacts still finds them), absolute for a database."""
    if handle.journal_path is not None:
        return os.path.relpath(folder.resolve(), handle.journal_path.resolve().parent)
    return str(folder.resolve())


def recorded_artifacts_dir(handle: StorageHandle, recorded: str) -> Path:
    """The folder :func:`record_artifacts_dir` recorded, as a path from here."""
    path = Path(recorded)
    if not path.is_absolute() and handle.journal_path is not None:
        return handle.journal_path.parent / path
    return path
