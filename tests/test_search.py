"""A real search on the real Omniglot copy with a tiny budget (slow)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import nas_meta
from nas_meta.errors import ConfigError
from nas_meta.search import prepare, search
from nas_meta.studies import summarize
from tests.helpers_study import SPACE, make_study

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory, omniglot: Path) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("search")
    study = make_study(folder)
    storage = f"journal:{folder / 'runs' / 'tiny.journal'}"
    summary = summarize(search(study, storage=storage, device="cpu", data=omniglot))
    assert summary["trials"] == 4
    return study, storage


def test_trials_states_attributes_and_baselines(searched: tuple[Path, str]) -> None:
    study_path, storage = searched
    study = optuna.load_study(study_name="tiny", storage=prepare(study_path, storage=storage).storage.storage)
    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert trials[0].user_attrs["baseline"] == "maml" and trials[0].params["learner.strategy"] == "maml"
    assert trials[0].params["learner.inner_lr"] == 0.4 and trials[0].params["learner.meta_batch"] == 4
    assert trials[1].user_attrs["baseline"] == "reptile" and trials[1].params["learner.inner_lr.reptile"] == 0.001
    for t in trials:
        if t.state == TrialState.COMPLETE:
            attrs = t.user_attrs
            assert t.value == pytest.approx(attrs["dev_loss"])
            assert 0 <= attrs["dev_accuracy"] <= 1 and attrs["dev_accuracy_ci95"] > 0
            assert attrs["parameters"] > 0 and attrs["iterations"] == 8 and attrs["device"] == "cpu"
            assert attrs["strategy"] == t.params["learner.strategy"] and attrs["train_seconds"] > 0
            assert "artifact_id" in attrs
            assert sorted(t.intermediate_values) == [4, 8]
    attrs = study.user_attrs
    assert attrs["protocol"] == "maml" and attrs["nas_meta_version"] == nas_meta.__version__
    assert attrs["study_file"] == study_path.read_text() and "tiny-space" in attrs["search_space"]


def test_best_learner_loads_without_retraining(searched: tuple[Path, str], omniglot: Path) -> None:
    study_path, storage = searched
    learner = nas_meta.load_learner(study_name="tiny", storage=storage)
    summary = summarize(optuna.load_study(study_name="tiny", storage=prepare(study_path, storage=storage).storage.storage))
    assert learner.metrics["dev_loss"] == pytest.approx(summary["best"]["dev_loss"])
    result = nas_meta.evaluate_learner(learner_path(storage, summary["best"]["number"]), episodes=12, data=omniglot,
                                       split="dev", device="cpu")
    assert result["loss"] == pytest.approx(summary["best"]["dev_loss"], rel=1e-4)  # same fixed dev episodes


def learner_path(storage: str, number: int) -> Path:
    from nas_meta.studies import fetch_trial_learner

    return fetch_trial_learner(storage, "tiny", number)


def test_resume_adds_trials_and_a_finished_study_says_so(searched: tuple[Path, str], omniglot: Path) -> None:
    study_path, storage = searched
    done = subprocess.run([sys.executable, "-m", "nas_meta.cli", "search", str(study_path), "--storage", storage,
                           "--device", "cpu", "--data", str(omniglot)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0
    assert "already holds 4 trials (n_trials=4); pass a larger --n-trials to run more." in done.stderr
    done = subprocess.run([sys.executable, "-m", "nas_meta.cli", "search", str(study_path), "--storage", storage,
                           "--n-trials", "5", "--device", "cpu", "--data", str(omniglot)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["trials"] == 5 and set(summary["baselines"]) == {"maml", "reptile"}


def test_changed_study_file_is_refused_with_the_difference(tmp_path: Path, searched: tuple[Path, str],
                                                           omniglot: Path) -> None:
    study_path, storage = searched
    changed = tmp_path / "study.yaml"
    shutil.copytree(study_path.parent / "baselines", tmp_path / "baselines")
    (tmp_path / "space.yaml").write_text(SPACE)
    changed.write_text(study_path.read_text().replace("seed: 1", "seed: 2"))
    before = len(optuna.load_study(study_name="tiny", storage=prepare(study_path, storage=storage).storage.storage).trials)
    with pytest.raises(ConfigError) as info:
        search(changed, storage=storage, n_trials=10, device="cpu", data=omniglot)
    message = str(info.value)
    assert "was created from a different study file or search space" in message
    assert "-seed: 1" in message and "+seed: 2" in message and "--force" in message
    after = optuna.load_study(study_name="tiny", storage=prepare(study_path, storage=storage).storage.storage).trials
    assert len(after) == before


def test_same_study_file_and_seed_gives_the_same_values(tmp_path: Path, omniglot: Path) -> None:
    values = []
    for run in ("a", "b"):
        study = make_study(tmp_path / run, iterations=4, n_trials=3)
        search(study, storage=f"journal:{tmp_path / run / 'runs.journal'}", device="cpu", data=omniglot)
        loaded = optuna.load_study(study_name="tiny", storage=prepare(study, storage=f"journal:{tmp_path / run / 'runs.journal'}").storage.storage)
        values.append([(t.params, t.value) for t in loaded.trials])
    assert values[0] == values[1]


def test_diverging_trial_fails_with_reason_and_the_study_carries_on(tmp_path: Path, omniglot: Path) -> None:
    study = make_study(tmp_path, iterations=4, n_trials=2)
    study.write_text(study.read_text().replace("baselines: [maml, reptile]", "baselines: []"))
    (tmp_path / "space.yaml").write_text(
        "name: boom\nfixed: {architecture.channels: 16, learner.meta_batch: 4}\nparameters:\n"
        "  - {name: learner.strategy, type: categorical, choices: [maml]}\n"
        "  - {name: learner.inner_lr, type: float, low: 1.0e+30, high: 1.0e+31, log: true}\n")
    summary = summarize(search(study, storage=f"journal:{tmp_path / 'boom.journal'}", device="cpu", data=omniglot))
    assert summary["trials"] == 2 and summary["states"] == {"FAIL": 2}
    trials = optuna.load_study(study_name="tiny", storage=prepare(study, storage=f"journal:{tmp_path / 'boom.journal'}").storage.storage).trials
    assert all("became nan" in t.user_attrs["reason"] or "became inf" in t.user_attrs["reason"] for t in trials)


@pytest.mark.parametrize("rival_loss", [0.0, 99.0])
def test_dev_scored_by_seconds_of_training_and_pruned_at_equal_compute(tmp_path: Path, omniglot: Path,
                                                                        rival_loss: float) -> None:
    """With ``evaluation.every_seconds`` trials report at seconds marks, so the median pruner compares them at
    equal meta-training compute: a trial worse than a rival at the first mark stops there."""
    study = make_study(tmp_path, n_trials=2)
    text = study.read_text().replace("baselines: [maml, reptile]", "baselines: []")
    text = text.replace("budget: {iterations: 8}", "budget: {iterations: 1000000, seconds: 3}")
    text = text.replace("every: 4,", "every_seconds: 1,").replace("n_startup_trials: 1}", "n_startup_trials: 1, n_warmup_steps: 0}")
    study.write_text(text)
    storage = f"journal:{tmp_path / 'seconds.journal'}"
    rival = optuna.trial.create_trial(state=TrialState.COMPLETE, value=rival_loss,
                                      intermediate_values={1: rival_loss, 2: rival_loss, 3: rival_loss})
    optuna.create_study(study_name="tiny", storage=prepare(study, storage=storage).storage.storage).add_trial(rival)
    search(study, storage=storage, device="cpu", data=omniglot)
    trial = optuna.load_study(study_name="tiny", storage=prepare(study, storage=storage).storage.storage).trials[1]
    attrs = trial.user_attrs
    if rival_loss == 0.0:  # any real dev loss is worse: pruned at the 1 s mark, after about 1 s of training
        assert trial.state == TrialState.PRUNED and list(trial.intermediate_values) == [1]
        assert 1.0 <= attrs["train_seconds"] < 2.0 and attrs["status"] == "pruned"
        assert "s of meta-training" in attrs["reason"] and attrs["iterations"] > 0
    else:  # better than the rival throughout: trained for the whole 3 s, scored at 1, 2 and 3 s
        assert trial.state == TrialState.COMPLETE and list(trial.intermediate_values) == [1, 2, 3]
        assert 3.0 <= attrs["train_seconds"] < 4.0 and attrs["status"] == "time_budget"
        assert trial.value == pytest.approx(trial.intermediate_values[3])
