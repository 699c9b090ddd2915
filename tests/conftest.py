"""Shared builders: tiny synthetic episodes and networks, the device the tests run on, and the real Omniglot copy.

The engine and learner correctness tests take the ``device`` fixture: ``$NAS_META_TEST_DEVICE`` (``cpu``, the
default, ``cuda`` or ``cuda:N``). The builders draw their values on the CPU from seeded generators and then move
them, so every device sees the same numbers.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from nas_meta.architectures import build_network
from nas_meta.config import ArchConfig

REPO = Path(__file__).resolve().parents[1]
DEVICE_VARIABLE = "NAS_META_TEST_DEVICE"


def nas_meta_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``python -m nas_meta.cli ARGS`` as a user would, capturing its output (never raising on its exit status)."""
    return subprocess.run([sys.executable, "-m", "nas_meta.cli", *args], check=False, capture_output=True, text=True,
                          timeout=timeout)


def omniglot_dir() -> Path:
    """The real Omniglot copy used by end-to-end tests: $NAS_META_DATA or ../shared/data/omniglot."""
    return Path(os.environ.get("NAS_META_DATA") or REPO.parent / "shared" / "data" / "omniglot")


@pytest.fixture(scope="session")
def omniglot() -> Path:
    folder = omniglot_dir()
    if not (folder / "images_background.zip").is_file():
        pytest.fail(f"the real Omniglot copy is missing at {folder}; set NAS_META_DATA")
    return folder


def requested_device() -> torch.device:
    """The device named by ``$NAS_META_TEST_DEVICE`` (default ``cpu``).

    Raises:
        pytest.UsageError: the value is not ``cpu``, ``cuda`` or ``cuda:N``, or names a GPU PyTorch cannot see.
    """
    spec = os.environ.get(DEVICE_VARIABLE, "").strip() or "cpu"
    try:
        device = torch.device(spec)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda") or (device.type == "cpu" and device.index is not None):
        raise pytest.UsageError(f"{DEVICE_VARIABLE}={spec!r} is not one of 'cpu', 'cuda' or 'cuda:N'.")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise pytest.UsageError(
                f"{DEVICE_VARIABLE}={spec!r} asks for the tests to run on CUDA, but PyTorch {torch.__version__} sees no "
                "CUDA device (torch.cuda.is_available() is False); unset it or set it to 'cpu' on this machine."
            )
        if (device.index or 0) >= torch.cuda.device_count():
            raise pytest.UsageError(
                f"{DEVICE_VARIABLE}={spec!r} names GPU {device.index}, but only {torch.cuda.device_count()} are visible."
            )
    return device


def pytest_configure(config: pytest.Config) -> None:
    requested_device()  # a device that is not there stops the run at once, before any test is collected


@pytest.fixture(scope="session")
def device() -> Iterator[torch.device]:
    """The device the engine and learner tests run on: ``$NAS_META_TEST_DEVICE``, default ``cpu``.

    On CUDA, TF32 is turned off for the session: cuDNN convolutions would otherwise round float32 inputs to
    10-bit mantissas, and the float32 tests compare engines to 1e-5 (float64 is never affected).
    """
    chosen = requested_device()
    if chosen.type != "cuda":
        yield chosen
        return
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield chosen
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def tiny_network(ways: int = 3, image_size: int = 8, norm: str = "batch",
                 device: torch.device | str = "cpu") -> torch.nn.Module:
    """A 2-block, 4-channel float64 network, built (and so initialised) on the CPU, then moved to ``device``."""
    arch = ArchConfig(blocks=2, channels=4, kernel=3, norm=norm)  # type: ignore[arg-type]
    return build_network(arch, ways, image_size).double().to(device)


def tiny_tasks(tasks: int = 3, ways: int = 3, shots: int = 2, query: int = 2, size: int = 8, seed: int = 0,
               device: torch.device | str = "cpu"):
    """Float64 support and query images with labels, ``(xs, ys, xq, yq)``, drawn on the CPU and moved to ``device``."""
    g = torch.Generator().manual_seed(seed)
    xs = torch.rand(tasks, ways * shots, 1, size, size, generator=g, dtype=torch.float64)
    xq = torch.rand(tasks, ways * query, 1, size, size, generator=g, dtype=torch.float64)
    ys = torch.arange(ways).repeat_interleave(shots).expand(tasks, -1).contiguous()
    yq = torch.arange(ways).repeat_interleave(query).expand(tasks, -1).contiguous()
    return tuple(t.to(device) for t in (xs, ys, xq, yq))


def snapshot(folder: Path) -> dict[str, str]:
    """The SHA-256 of every file under ``folder`` (a link: its target; a folder: 'dir'), by relative path: equal
    before and after means nothing on disk changed."""
    seen: dict[str, str] = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            seen[key] = "link:" + os.readlink(path)
        elif path.is_file():
            seen[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            seen[key] = "dir"
    return seen


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise TimeoutError in the block after ``seconds`` (SIGALRM interrupts a blocking ``open`` of a FIFO)."""
    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"still blocked after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
