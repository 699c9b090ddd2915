"""Process-wide runtime set-up: seeding, device resolution and logging handlers.

This is the only module that seeds random number generators or names a device string.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import random
import signal
import sys
from pathlib import Path
from types import FrameType

import numpy as np
import torch

from .errors import ConfigError, Terminated

_PACKAGE_LOGGER = "nas_meta"


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's generators (all CUDA devices included).

    Args:
        seed: a non-negative integer.

    Raises:
        ValueError: if ``seed`` is negative.
    """
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, but got {seed=}.")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(spec: str = "auto") -> torch.device:
    """Turn a ``--device`` value into a :class:`torch.device`.

    Args:
        spec: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Returns:
        The device.

    Raises:
        ConfigError: if the value is not one of the allowed forms, or names a CUDA device that is absent.
    """
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or (spec.startswith("cuda:") and spec[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {spec!r} was asked for, but PyTorch sees no CUDA device; use 'auto' or 'cpu'.")
        index = int(spec[5:]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"--device {spec!r} names GPU {index}, but only {torch.cuda.device_count()} are visible "
                f"(cuda:0..cuda:{torch.cuda.device_count() - 1})."
            )
        return torch.device(spec)
    raise ConfigError(f"--device must be 'auto', 'cpu', 'cuda' or 'cuda:N', but got {spec!r}.")


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def env_flag(name: str, default: bool = True) -> bool:
    """The on/off setting in environment variable ``name`` (unset or empty: ``default``).

    Raises:
        ConfigError: the value is not 1/0, true/false, yes/no or on/off (any case).
    """
    setting = os.environ.get(name, "").strip().lower()
    if setting == "":
        return default
    if setting not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
        raise ConfigError(f"{name}={setting!r} is not allowed: expected 1/0 (or true/false, yes/no, on/off).")
    return setting in ("1", "true", "yes", "on")


def cuda_graphs_enabled() -> bool:
    """Whether meta-steps on a CUDA device may be captured in CUDA graphs (:mod:`nas_meta.cuda_graphs`):
    ``NAS_META_CUDA_GRAPHS``, on unless set to 0/false/no/off."""
    return env_flag("NAS_META_CUDA_GRAPHS")


@functools.cache
def tune_allocator() -> bool:
    """Keep freed tensor memory in the process instead of handing it back to the kernel (glibc only).

    On the CPU every meta-step allocates and frees activations of a few MB. glibc serves blocks that
    large with ``mmap`` and returns them on ``free``, so each step pays for hundreds of thousands of page
    faults on fresh zero pages. Raising the mmap threshold to its maximum (32 MiB) and the trim threshold to
    1 GiB lets the heap reuse those blocks; ``benchmarks/speed_vs_learn2learn.py`` measures the effect
    (``--no-tune-allocator`` turns it off). Peak memory is unchanged; memory freed after the peak stays
    reserved by the process. Set ``NAS_META_TUNE_ALLOCATOR=0`` to opt out.

    Returns:
        True if the allocator was tuned, False where it was not (other C libraries, opt-out). The first call
        decides; later calls return its answer.
    """
    if not env_flag("NAS_META_TUNE_ALLOCATOR") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 * 2**20)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**30))


def configure_logging(verbosity: int = 0) -> None:
    """Attach one stderr handler to the package logger (called by the CLI only).

    Args:
        verbosity: 0 for INFO, 1 or more for DEBUG, negative for WARNING.
    """
    level = logging.DEBUG if verbosity > 0 else logging.INFO if verbosity == 0 else logging.WARNING
    logger = logging.getLogger(_PACKAGE_LOGGER)
    logger.setLevel(level)
    if not any(getattr(h, "_nas_meta", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[%(levelname)s %(asctime)s] %(message)s", "%H:%M:%S"))
        handler._nas_meta = True  # type: ignore[attr-defined]
        logger.addHandler(handler)


def public_mode(directory: bool = False) -> int:
    """The permissions a new file (or folder) gets under the process umask; ``tempfile`` makes them private
    (0600/0700), so files written through a temporary name are given these before they are renamed."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def home_expanded(path: str | Path) -> Path | None:
    """``path`` with a leading ``~`` or ``~user`` replaced by that home folder; None where there is no such user."""
    try:
        return Path(path).expanduser()
    except RuntimeError:  # "Could not determine home directory"
        return None


def exchange_paths(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux ``renameat2`` with ``RENAME_EXCHANGE``): a process killed
    at any moment leaves both names in place. False where the system or the file system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # not glibc >= 2.28 / not Linux
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    return bool(renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0)


def pid_namespace() -> str:
    """This process's PID namespace (``pid:[4026531836]`` on Linux, ``""`` where it cannot be read): a process id
    names the same process only within one (containers that share a hostname and a journal file each have their
    own)."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def default_cache_dir() -> str:
    """Where nas-meta keeps downloads and decoded caches: ``$NAS_META_CACHE`` or ``~/.cache/nas-meta``."""
    return os.environ.get("NAS_META_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "nas-meta")


class _Interrupts:
    """The first Ctrl-C or SIGTERM a process received while its signals are deferred (see :func:`defer_signals`)."""

    deferred = False
    received: KeyboardInterrupt | None = None


def _on_signal(signum: int, frame: FrameType | None) -> None:
    interrupt = Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
    if not _Interrupts.deferred:
        raise interrupt
    if _Interrupts.received is None:  # later signals (a second Ctrl-C, PR_SET_PDEATHSIG firing again) change nothing
        _Interrupts.received = interrupt


def defer_signals() -> None:
    """Make Ctrl-C and SIGTERM requests (CLI only): the handler only records the first one, and the work stops at
    its next safe point (:func:`check_interrupt`: between meta-iterations, dev batches, trials). A signal is never
    raised inside Optuna, a finalizer or the closing of an interrupted trial, and a second one cannot cut that short.
    """
    _Interrupts.deferred = True
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)


def raise_signals() -> None:
    """Ctrl-C and SIGTERM raise where they land (KeyboardInterrupt, :class:`~nas_meta.errors.Terminated`): for
    commands that block outside nas-meta's loops, such as the dashboard's server (CLI only)."""
    _Interrupts.deferred = False
    signal.signal(signal.SIGTERM, _on_signal)


def check_interrupt() -> None:
    """A safe point: raise the Ctrl-C (KeyboardInterrupt) or SIGTERM (:class:`~nas_meta.errors.Terminated`) this
    process received while its signals were deferred; nothing otherwise (and nothing outside the CLI)."""
    if _Interrupts.received is not None:
        raise _Interrupts.received


def interrupt_received() -> bool:
    """Whether a deferred Ctrl-C or SIGTERM is waiting for the next safe point."""
    return _Interrupts.received is not None


def die_with_parent() -> None:
    """In a child process (``preexec_fn``): receive SIGTERM when the parent dies, even by SIGKILL (Linux)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
