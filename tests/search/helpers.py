"""Search-test builders: a synthetic workspace, a tiny study, and the real tiny search (slow) they share."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch

from nas_meta.config import (
    ArchConfig,
    BudgetConfig,
    DataConfig,
    EvalConfig,
    LearnerConfig,
    ParamSpec,
    PrunerSpec,
    SamplerSpec,
    SearchSpace,
    StudySpec,
    TaskConfig,
)
from nas_meta.data import DRAWINGS, ClassSet, Omniglot
from nas_meta.search import SearchSetup, make_objective, make_pruner, make_sampler, run_trial
from nas_meta.storage import open_storage
from nas_meta.training import Workspace

# -- fast: synthetic data, tiny networks ---------------------------------------------------------------

def synthetic_workspace(image_size: int = 8, classes: Sequence[int] = (6, 5, 4), seed: int = 0) -> Workspace:
    """A Workspace over random "characters": each one a random prototype plus a little noise per drawing.

    ``classes`` are the train/dev/test class counts; splits never share a character and have no rotations.
    """
    g = torch.Generator().manual_seed(seed)
    n = sum(classes)
    prototypes = torch.rand(n, 1, image_size, image_size, generator=g)
    noise = 0.2 * torch.rand(n, DRAWINGS, image_size, image_size, generator=g)
    images = ((prototypes * 0.8 + noise).clamp(0, 1) * 255).to(torch.uint8)  # (characters, 20, S, S)
    dataset = Omniglot(images.numpy(), np.zeros(n, dtype=np.int64), ("synthetic",),
                       tuple(f"synthetic/character{i:02d}" for i in range(n)), n)
    bounds = np.cumsum([0, *classes])
    splits = {
        split: ClassSet(np.arange(bounds[i], bounds[i + 1]), np.zeros(classes[i], dtype=np.int64), False)
        for i, split in enumerate(("train", "dev", "test"))
    }
    return Workspace(dataset, images, splits)


TINY_SPACE = SearchSpace(name="tiny", parameters=(ParamSpec("learner.inner_lr", "float", low=0.1, high=0.5),))


def tiny_spec(**changes: Any) -> StudySpec:
    """A single-objective study of a 1-block, 4-channel MAML on 8-pixel 2-way 1-shot tasks, 2 iterations,
    4 dev episodes scored after every iteration; ``changes`` replace its fields."""
    spec = StudySpec(
        name="tiny", search_space="unused.yaml", data=DataConfig(image_size=8),
        task=TaskConfig(ways=2, shots=1, query=2), architecture=ArchConfig(blocks=1, channels=4),
        learner=LearnerConfig(strategy="maml", meta_batch=2, test_steps=1), budget=BudgetConfig(iterations=2),
        evaluation=EvalConfig(dev_episodes=4, every=1, batch=4), sampler=SamplerSpec(name="random"),
        pruner=PrunerSpec(name="median"), baselines=(), seed=0,
    )
    return dataclasses.replace(spec, **changes)


def journal_setup(folder: Path, url: str | None = None, name: str = "tiny") -> SearchSetup:
    """A SearchSetup of :func:`tiny_spec` on a journal file in ``folder`` (or the storage ``url``); no study file
    is written, so it cannot open a study (:func:`write_tiny_study` makes one that can)."""
    return SearchSetup(tiny_spec(), TINY_SPACE, folder / "study.yaml",
                       open_storage(url or f"journal:{folder / f'{name}.journal'}"), name, folder / "artifacts")


TINY_STUDY_FILE = """
name: tiny
search_space: space.yaml
data: {image_size: 8}
task: {ways: 2, shots: 1, query: 2}
architecture: {blocks: 1, channels: 4}
learner: {strategy: maml, meta_batch: 2, test_steps: 1}
budget: {iterations: 2}
evaluation: {dev_episodes: 4, every: 1, batch: 4}
sampler: {name: random}
pruner: {name: none}
n_trials: 3
baselines: []
seed: 0
"""
TINY_SPACE_FILE = """
name: tiny
parameters:
  - {name: learner.inner_lr, type: float, low: 0.1, high: 0.5}
"""


def write_tiny_study(folder: Path) -> Path:
    """The files of a study like :func:`tiny_spec` (3 trials, no baselines, no pruning); returns the study file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "space.yaml").write_text(TINY_SPACE_FILE)
    (folder / "study.yaml").write_text(TINY_STUDY_FILE)
    return folder / "study.yaml"


def tiny_study(spec: StudySpec) -> optuna.Study:
    """An in-memory study with the spec's sampler, pruner and directions."""
    return optuna.create_study(sampler=make_sampler(spec), pruner=make_pruner(spec),
                               directions=["minimize"] * len(spec.objectives))


def run_tiny_trial(study: optuna.Study, spec: StudySpec, workspace: Workspace, space: SearchSpace = TINY_SPACE,
                   artifacts: optuna.artifacts.FileSystemArtifactStore | None = None) -> optuna.trial.FrozenTrial:
    """Ask ``study`` for a trial and run the objective of ``spec`` on it as a worker does."""
    objective = make_objective(spec, space, workspace, study_name=spec.name, device="cpu", artifacts=artifacts)
    return run_trial(study, study.ask(), objective)


def finished_trial(value: float, steps: Sequence[int], values: Sequence[float] | None = None,
                   **attrs: Any) -> optuna.trial.FrozenTrial:
    """A COMPLETE trial whose intermediate value at each of ``steps`` is ``value`` (or ``values``)."""
    per_step = dict(zip(steps, values if values is not None else [value] * len(steps)))
    return optuna.trial.create_trial(value=value, intermediate_values=per_step, **attrs)


def raising(error: BaseException) -> Callable[[optuna.Trial], float]:
    """An objective that suggests one parameter, then raises ``error``."""
    def objective(trial: optuna.Trial) -> float:
        trial.suggest_float("x", 0.0, 1.0)
        raise error
    return objective


# -- slow: one tiny search on the real Omniglot, shared by test_objective and test_setup ---------------

_SEARCHED: dict[str, tuple[Path, str]] = {}


def searched_study(tmp_path_factory: pytest.TempPathFactory, omniglot: Path) -> tuple[Path, str]:
    """The tiny 4-trial study of ``tests.helpers_study`` searched once per session: (study file, storage URL).

    Tests that add trials must work on a copy (:func:`copy_searched`).
    """
    if "tiny" not in _SEARCHED:
        from nas_meta.search import search
        from nas_meta.studies import summarize
        from tests.helpers_study import make_study

        folder = tmp_path_factory.mktemp("search")
        study = make_study(folder)
        storage = f"journal:{folder / 'runs' / 'tiny.journal'}"
        summary = summarize(search(study, storage=storage, device="cpu", data=omniglot))
        assert summary["trials"] == 4
        _SEARCHED["tiny"] = (study, storage)
    return _SEARCHED["tiny"]


def copy_searched(searched: tuple[Path, str], target: Path) -> tuple[Path, str]:
    """A copy of the searched study's folder (study file, space, baselines, journal, artifacts) under ``target``."""
    import shutil

    study, _ = searched
    shutil.copytree(study.parent, target, dirs_exist_ok=True)
    return target / study.name, f"journal:{target / 'runs' / 'tiny.journal'}"
