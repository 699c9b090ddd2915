"""A tiny search study on real Omniglot for worker, crash and storage tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

SPACE = """
name: tiny-space
fixed: {architecture.channels: 16, architecture.blocks: 3}
parameters:
  - {name: learner.strategy, type: categorical, choices: [maml, fomaml, reptile]}
  - {name: learner.inner_lr, type: float, low: 0.05, high: 0.8, log: true, when: {learner.strategy: [maml, fomaml]}}
  - {name: learner.inner_lr, label: learner.inner_lr.reptile, type: float, low: 1.0e-4, high: 0.01, log: true,
     when: {learner.strategy: [reptile]}}
  - {name: learner.inner_optimizer, type: categorical, choices: [adam], when: {learner.strategy: [reptile]}}
  - {name: learner.inner_state, type: categorical, choices: [fresh, carried], when: {learner.inner_optimizer: [adam]}}
  - {name: learner.inner_batch, type: categorical, choices: [null, 10], when: {learner.strategy: [reptile]}}
  - {name: learner.train_steps, type: int, low: 1, high: 5}
  - {name: learner.test_steps, type: int, low: 1, high: 50}
  - {name: learner.meta_step, type: float, low: 0.1, high: 1.0, when: {learner.strategy: [reptile]}}
  - {name: learner.meta_batch, type: categorical, choices: [4, 5]}
"""

STUDY = """
name: {name}
search_space: space.yaml
task: {{ways: 5, shots: 1, query: 2}}
budget: {{iterations: {iterations}}}
evaluation: {{dev_episodes: 12, every: {every}, batch: 12, seed: 0}}
sampler: {{name: tpe, n_startup_trials: 2}}
pruner: {{name: {pruner}, n_startup_trials: 1}}
n_trials: {n_trials}
baselines: [maml, reptile]
seed: 1
"""


def make_study(folder: Path, *, name: str = "tiny", iterations: int = 8, n_trials: int = 4, every: int = 4,
               pruner: str = "median") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "space.yaml").write_text(SPACE)
    baselines = folder / "baselines"
    baselines.mkdir(exist_ok=True)
    for strategy in ("maml", "reptile"):
        text = (REPO / "studies" / "baselines" / f"{strategy}-5w1s.yaml").read_text()
        text = text.replace("meta_batch: 32", "meta_batch: 4").replace("channels: 64", "channels: 16")
        (baselines / f"{strategy}-5w1s.yaml").write_text(text.replace("blocks: 4", "blocks: 3"))
    path = folder / "study.yaml"
    path.write_text(STUDY.format(name=name, iterations=iterations, n_trials=n_trials, every=every, pruner=pruner))
    return path


def search_command(study: Path, storage: str, data: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "nas_meta.cli", "search", str(study), "--storage", storage, "--device", "cpu",
            "--data", str(data), *extra]


def worker_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kwargs)  # type: ignore[call-overload]
