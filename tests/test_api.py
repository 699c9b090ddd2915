"""The Python API facade: load_learner's two sources, train_iter saving (or not) the learner it trained."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import nas_meta
from nas_meta.api import load_learner, train_iter
from nas_meta.config import ArchConfig, BudgetConfig, EvalConfig, TaskConfig, TrainConfig
from nas_meta.data import ClassSet, Omniglot
from nas_meta.errors import ConfigError, Terminated
from nas_meta.training import DevScore, End, Result, Step, Workspace
from tests.learners.helpers import tiny_config
from tests.test_studies import study_with_saved_learner
from tests.test_training import interrupt_at

CONFIG = dataclasses.replace(tiny_config("fomaml"), budget=BudgetConfig(iterations=2),
                             evaluation=EvalConfig(dev_episodes=3, every=100, batch=3))


def synthetic_workspace() -> Workspace:
    """Twelve random 8x8 'characters' of 20 drawings: eight to train on, four to score."""
    images = np.random.default_rng(0).integers(0, 256, (12, 20, 8, 8), dtype=np.uint8)
    dataset = Omniglot(images, np.zeros(12, dtype=np.int64), ("a",), tuple(f"a/c{i}" for i in range(12)), 12)
    splits = {"train": ClassSet(np.arange(8), np.zeros(8, dtype=np.int64), True),
              "dev": ClassSet(np.arange(8, 12), np.zeros(4, dtype=np.int64), False)}
    return Workspace(dataset, torch.from_numpy(images), splits)


@pytest.mark.parametrize("kwargs", [{}, {"path": "runs/x", "study_name": "s"}])
def test_load_learner_needs_exactly_one_source(kwargs: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_learner(**kwargs)  # type: ignore[arg-type]
    assert str(info.value) == "load_learner needs a folder path or study_name= (with storage=): exactly one of them."


@pytest.mark.parametrize("kwargs", [{"trial": 3}, {"storage": "journal:x.journal"}, {"artifacts": "a"}])
def test_study_arguments_do_not_go_with_a_folder(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as info:
        load_learner("runs/x", **kwargs)  # type: ignore[arg-type]
    assert str(info.value) == ("load_learner: trial=, storage= and artifacts= go with study_name=, not with a folder "
                               "path.")


def test_load_learner_of_a_study_trial(tmp_path: Path) -> None:
    url, study, artifacts, state = study_with_saved_learner(tmp_path)
    study.set_user_attr("artifacts_dir", str(artifacts))
    trained = load_learner(study_name="s", storage=url)  # the best trial
    loaded = trained.learner.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    with pytest.raises(ConfigError, match="trial 0 of 's' \\(PRUNED\\) has no saved learner"):
        load_learner(study_name="s", storage=url, trial=0)


def test_train_iter_without_a_folder_saves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    records = list(train_iter(CONFIG, None, device="cpu", workspace=synthetic_workspace()))
    assert [type(r) for r in records] == [Step, Step, DevScore, End, Result]
    assert records[-1].path is None
    assert os.listdir(tmp_path) == []


def test_train_iter_with_a_folder_saves_a_loadable_learner(tmp_path: Path) -> None:
    *_, result = train_iter(CONFIG, tmp_path / "learner", device="cpu", workspace=synthetic_workspace())
    assert isinstance(result, Result) and result.path == tmp_path / "learner"
    trained = load_learner(result.path)
    assert trained.config == CONFIG and trained.metrics["iterations"] == 2 and trained.metrics["label_space"] == 32
    trained_state, loaded = result.learner.state_dict(), trained.learner.state_dict()
    assert all(torch.equal(loaded[k], trained_state[k]) for k in trained_state)


@pytest.mark.slow
def test_train_iter_on_omniglot_saves_only_when_given_a_folder(tmp_path: Path, omniglot: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    config = dataclasses.replace(
        CONFIG, data=dataclasses.replace(CONFIG.data, image_size=28), task=TaskConfig(ways=5, shots=1, query=2),
        architecture=ArchConfig(blocks=2, channels=4))
    monkeypatch.chdir(tmp_path)
    *_, unsaved = nas_meta.train_iter(config, None, data=omniglot, device="cpu")
    assert isinstance(unsaved, Result) and unsaved.path is None and os.listdir(tmp_path) == []
    saved = nas_meta.train(config, tmp_path / "learner", data=omniglot, device="cpu")
    assert saved.path == tmp_path / "learner" and os.listdir(tmp_path) == ["learner"]
    trained = load_learner(saved.path)
    assert trained.metrics["protocol"] == "maml" and trained.metrics["iterations"] == 2
    assert all(torch.equal(trained.learner.state_dict()[k], v) for k, v in saved.learner.state_dict().items())
    # the same config and seed: the unsaved run trained the same weights
    assert all(torch.equal(unsaved.learner.state_dict()[k], v) for k, v in saved.learner.state_dict().items())


# -- regression: an interrupted run keeps the learner trained so far in `out` --------------------------------------

@pytest.mark.parametrize(("error", "signal_name"), [(Terminated(), "SIGTERM"), (KeyboardInterrupt(), "Ctrl-C")],
                         ids=["sigterm", "ctrl-c"])
def test_train_iter_interrupted_saves_the_learner_trained_so_far_then_raises(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, error: BaseException,
        signal_name: str) -> None:
    config = dataclasses.replace(CONFIG, budget=BudgetConfig(iterations=5))
    interrupt_at(monkeypatch, error)  # the 3rd meta-iteration is interrupted
    out = tmp_path / "learner"
    records: list[object] = []
    with caplog.at_level(logging.WARNING, logger="nas_meta.api"), pytest.raises(type(error)) as info:
        for record in train_iter(config, out, device="cpu", workspace=synthetic_workspace()):
            records.append(record)
    assert info.value is error
    assert [type(r) for r in records] == [Step, Step, End, Result]
    result = records[-1]
    assert isinstance(result, Result) and result.path == out
    reason = f"interrupted by {signal_name} after 2 iterations"
    assert [r.getMessage() for r in caplog.records] == [
        f"{reason}: the learner trained so far (2 meta-iterations) is saved in {out}"]
    trained = load_learner(out)
    assert trained.config == config
    assert (trained.metrics["status"], trained.metrics["reason"], trained.metrics["iterations"]) == (
        "interrupted", reason, 2)
    state, loaded = result.learner.state_dict(), trained.learner.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    assert sorted(os.listdir(tmp_path)) == ["learner"]  # no staging folder left beside it


@pytest.mark.parametrize(("call", "message"), [
    (lambda: nas_meta.train({"name": "x"}, None), "config={'name': 'x'} is not allowed: expected a TrainConfig or a "
                                                  "training config file."),
    (lambda: nas_meta.train(TrainConfig(), None, seed="abc"), "seed='abc' is not allowed: expected an integer in "
                                                             "[0, 4294967295], or None."),
    (lambda: nas_meta.train(TrainConfig(), None, data=42), "data=42 is not allowed: expected a folder path (str or "
                                                          "pathlib.Path), or None."),
    (lambda: nas_meta.evaluate_learner("x", episodes=0), "episodes=0 is not allowed: expected an integer in [1, 10^6]."),
    (lambda: nas_meta.evaluate_learner("x", episodes="5"), "episodes='5' is not allowed: expected an integer in "
                                                           "[1, 10^6]."),
    (lambda: nas_meta.evaluate_learner("x", ways=2.5), "ways=2.5 is not allowed: expected an integer in [2, 10000], "
                                                       "or None."),
    (lambda: nas_meta.bench(iterations=0), "iterations=0 is not allowed: expected an integer in [1, 1000000]."),
    (lambda: nas_meta.bench(warmup=-1), "warmup=-1 is not allowed: expected an integer in [0, 10000]."),
    (lambda: nas_meta.bench(ways=2.5), "ways=2.5 is not allowed: expected an integer in [2, 1000]."),
])
def test_the_python_api_names_a_bad_argument(call: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        call()
    assert str(info.value) == message


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"baselines": "maml"}, "baselines='maml' is not allowed: expected a list of baseline names such as ['maml', "
                            "'reptile']."),
    ({"seeds": 2.5}, "seeds=2.5 is not allowed: expected an integer in [1, 1000]."),
    ({"episodes": -1}, "episodes=-1 is not allowed: expected an integer in [1, 10^6]."),
])
def test_compare_names_a_bad_argument(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    from nas_meta.compare import compare

    with pytest.raises(ConfigError) as info:
        compare(TrainConfig(), tmp_path / "out", **kwargs)
    assert str(info.value) == message and not (tmp_path / "out").exists()


def test_an_interrupted_run_never_replaces_a_learner_whose_run_ended(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A SLURM job that finished once, requeued and preempted again: the finished learner stays; the interrupted
    one is saved beside it. An earlier interrupted learner is replaced as before."""
    out = tmp_path / "learner"
    finished = nas_meta.train(dataclasses.replace(CONFIG, budget=BudgetConfig(iterations=2)), out, device="cpu",
                              workspace=synthetic_workspace())
    before = {name: (out / name).read_bytes() for name in os.listdir(out)}
    config = dataclasses.replace(CONFIG, budget=BudgetConfig(iterations=5))
    for attempt in range(2):
        interrupt_at(monkeypatch, Terminated())
        with caplog.at_level(logging.WARNING), pytest.raises(Terminated):
            *_, result = train_iter(config, out, device="cpu", workspace=synthetic_workspace())
        assert {name: (out / name).read_bytes() for name in os.listdir(out)} == before  # untouched
        beside = tmp_path / "learner.interrupted"
        assert load_learner(beside).metrics["status"] == "interrupted"
        assert sorted(os.listdir(tmp_path)) == ["learner", "learner.interrupted"]
        assert any(r.getMessage() == f"{out} holds a learner whose run ended (completed): the interrupted run is "
                   "saved beside it instead" for r in caplog.records)
        assert f"is saved in {beside}" in caplog.text
    assert finished.metrics.status == "completed"


@pytest.mark.parametrize("out", [".", "./", "..", "sub/.."])
def test_train_refuses_the_current_folder_or_one_holding_it_before_training(
        out: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A learner is saved by renaming its whole folder: the current folder cannot be one (it used to train to the
    end, then fail with a traceback and lose the learner)."""
    here = tmp_path / "work"
    (here / "sub").mkdir(parents=True)
    monkeypatch.chdir(here)
    with pytest.raises(ConfigError) as info:
        nas_meta.train(CONFIG, out, device="cpu", workspace=synthetic_workspace())
    which = "" if out in (".", "./", "sub/..") else " or holds it"
    assert str(info.value) == (f"--out {out!r} is the current folder{which}; a learner is saved as a folder of its "
                               "own: give one below it, such as --out learner.")
    assert sorted(os.listdir(here)) == ["sub"]

