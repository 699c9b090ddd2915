"""Shared builders: tiny synthetic episodes and networks, and the location of the real Omniglot copy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from nas_meta.architectures import build_network
from nas_meta.config import ArchConfig

REPO = Path(__file__).resolve().parents[1]


def omniglot_dir() -> Path:
    """The real Omniglot copy used by end-to-end tests: $NAS_META_DATA or ../shared/data/omniglot."""
    return Path(os.environ.get("NAS_META_DATA") or REPO.parent / "shared" / "data" / "omniglot")


@pytest.fixture(scope="session")
def omniglot() -> Path:
    folder = omniglot_dir()
    if not (folder / "images_background.zip").is_file():
        pytest.fail(f"the real Omniglot copy is missing at {folder}; set NAS_META_DATA")
    return folder


def tiny_network(ways: int = 3, image_size: int = 8, norm: str = "batch") -> torch.nn.Module:
    arch = ArchConfig(blocks=2, channels=4, kernel=3, norm=norm)  # type: ignore[arg-type]
    return build_network(arch, ways, image_size).double()


def tiny_tasks(tasks: int = 3, ways: int = 3, shots: int = 2, query: int = 2, size: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    xs = torch.rand(tasks, ways * shots, 1, size, size, generator=g, dtype=torch.float64)
    xq = torch.rand(tasks, ways * query, 1, size, size, generator=g, dtype=torch.float64)
    ys = torch.arange(ways).repeat_interleave(shots).expand(tasks, -1).contiguous()
    yq = torch.arange(ways).repeat_interleave(query).expand(tasks, -1).contiguous()
    return xs, ys, xq, yq
