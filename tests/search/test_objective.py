"""nas_meta.search.objective: trial records, pruning, extra objectives, failed candidates (fast; real search: slow)."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import socket
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.artifacts import download_artifact
from optuna.trial import TrialState

import nas_meta
import nas_meta.search.objective as objective_module
from nas_meta.architectures import build_network, count_parameters
from nas_meta.checkpoint import load_checkpoint
from nas_meta.config import BudgetConfig, ParamSpec, PrunerSpec, SamplerSpec, SearchSpace
from nas_meta.errors import Terminated
from nas_meta.search import prepare, search
from nas_meta.storage import artifact_store
from nas_meta.studies import StudyText, study_texts, summarize, trial_config
from nas_meta.training import Step
from tests.helpers_study import make_study
from tests.search.helpers import (
    finished_trial,
    run_tiny_trial,
    searched_study,
    synthetic_workspace,
    tiny_spec,
    tiny_study,
)
from tests.test_training import interrupt_at

slow = pytest.mark.slow


@pytest.fixture(scope="module")
def workspace() -> Any:
    import torch._dynamo  # noqa: F401  torch.optim imports it on first use (~1.5 s once per process): pay it here
    return synthetic_workspace()


# -- what a trial records ------------------------------------------------------------------------------

def test_a_trial_records_its_config_worker_and_scores(workspace: Any) -> None:
    spec = tiny_spec(seed=5)
    study = tiny_study(spec)
    frozen = [run_tiny_trial(study, spec, workspace) for _ in range(2)]
    for number, trial in enumerate(frozen):
        assert trial.state == TrialState.COMPLETE and trial.number == number
        config = trial_config(study, trial)  # the φ written when the trial started, as `nas-meta train` takes it
        assert config.name == f"tiny-trial{number}" and config.seed == 5 + number
        assert config.learner.inner_lr == trial.params["learner.inner_lr"]
        base = spec.base_config()
        assert (config.data, config.task, config.architecture, config.budget, config.evaluation) == (
            base.data, base.task, base.architecture, base.budget, base.evaluation)
        assert dataclasses.replace(config.learner, inner_lr=base.learner.inner_lr) == base.learner
        attrs = trial.user_attrs
        assert attrs["strategy"] == "maml" and attrs["worker"] == f"{socket.gethostname()}:{os.getpid()}"
        assert attrs["status"] == "completed" and attrs["iterations"] == 2 and attrs["device"] == "cpu"
        assert attrs["parameters"] == count_parameters(build_network(base.architecture, 2, 8))
        assert attrs["train_seconds"] > 0 and 0 <= attrs["dev_accuracy"] <= 1 and attrs["dev_accuracy_ci95"] >= 0
        assert sorted(trial.intermediate_values) == [1, 2]  # scored after each of the 2 iterations
        assert trial.value == attrs["dev_loss"] == trial.intermediate_values[2]  # the value is the final dev loss
        assert "artifact_id" not in attrs  # no artifact store given: nothing kept
    assert frozen[0].params != frozen[1].params


def test_a_completed_trial_keeps_its_learner_in_the_artifact_store(workspace: Any, tmp_path: Path) -> None:
    spec = tiny_spec()
    study = tiny_study(spec)
    store = artifact_store(tmp_path / "artifacts")
    trial = run_tiny_trial(study, spec, workspace, artifacts=store)
    archive = tmp_path / "learner.zip"
    download_artifact(artifact_store=store, file_path=str(archive), artifact_id=trial.user_attrs["artifact_id"])
    with zipfile.ZipFile(archive) as z:
        z.extractall(tmp_path / "learner")
    config, state, metrics = load_checkpoint(tmp_path / "learner")
    assert config == trial_config(study, trial)
    assert metrics["dev_loss"] == pytest.approx(trial.value) and metrics["iterations"] == 2
    assert state and all(torch.isfinite(t).all() for t in state.values())


def test_same_spec_and_seed_give_the_same_trials(workspace: Any) -> None:
    def values(seed: int) -> tuple[dict[str, Any], float | None]:
        spec = tiny_spec(seed=seed, sampler=SamplerSpec(name="random"))
        trial = run_tiny_trial(tiny_study(spec), spec, workspace)
        return trial.params, trial.value

    first = values(0)
    assert values(0) == first
    assert values(1) != first


# -- pruning -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rival_loss", [0.0, 99.0])
def test_median_pruning_stops_a_trial_worse_than_a_finished_one(workspace: Any, rival_loss: float) -> None:
    spec = tiny_spec(pruner=PrunerSpec(name="median", n_startup_trials=1))
    study = tiny_study(spec)
    study.add_trial(finished_trial(rival_loss, steps=[1, 2]))
    trial = run_tiny_trial(study, spec, workspace)
    attrs = trial.user_attrs
    if rival_loss == 0.0:  # any real dev loss is worse: pruned at the first scoring, after iteration 1
        assert trial.state == TrialState.PRUNED and list(trial.intermediate_values) == [1]
        assert attrs["status"] == "pruned" and attrs["iterations"] == 1
        assert re.fullmatch(r"pruned at iteration 1, after \d+\.\d s of meta-training \(dev loss \d+\.\d{4}\)",
                            attrs["reason"])
        assert attrs["dev_loss"] == trial.intermediate_values[1]
        assert f"(dev loss {attrs['dev_loss']:.4f})" in attrs["reason"]
        assert "artifact_id" not in attrs
    else:  # better than the rival at every step: trained to the end
        assert trial.state == TrialState.COMPLETE and list(trial.intermediate_values) == [1, 2]
        assert attrs["status"] == "completed" and attrs["iterations"] == 2


def test_the_final_scoring_is_never_pruned(workspace: Any) -> None:
    """A trial that is better than the rival at step 1 but worse at the last scoring has finished its budget:
    it is kept (nothing would be saved by pruning it)."""
    spec = tiny_spec(pruner=PrunerSpec(name="median", n_startup_trials=1))
    study = tiny_study(spec)
    study.add_trial(finished_trial(0.0, steps=[1, 2], values=[99.0, 0.0]))
    trial = run_tiny_trial(study, spec, workspace)
    assert trial.state == TrialState.COMPLETE and list(trial.intermediate_values) == [1, 2]
    assert trial.intermediate_values[2] > 0.0  # worse than the rival's final 0.0, yet complete


@pytest.mark.parametrize("rival_loss", [0.0, 99.0])
def test_wilcoxon_pruning_reports_per_dev_task_losses(workspace: Any, rival_loss: float) -> None:
    tasks = 20  # reported 10 at a time, the pruner asked after each batch
    spec = tiny_spec(pruner=PrunerSpec(name="wilcoxon", p_threshold=0.1),  # scored once, at the end of training
                     evaluation=dataclasses.replace(tiny_spec().evaluation, dev_episodes=tasks, every=10))
    study = tiny_study(spec)
    study.add_trial(finished_trial(rival_loss, steps=range(tasks)))
    trial = run_tiny_trial(study, spec, workspace)
    attrs = trial.user_attrs
    if rival_loss == 0.0:  # worse on every one of the first 10 tasks: p = 2**-10 < 0.1, pruned there
        assert trial.state == TrialState.PRUNED and sorted(trial.intermediate_values) == list(range(10))
        assert attrs["status"] == "pruned"
        assert attrs["reason"] == "Wilcoxon test: worse than the best trial after 10 dev tasks"
        assert all(v > 0.0 for v in trial.intermediate_values.values())
    else:  # better: every dev task reported at steps 0..n-1, and their mean is the trial's dev loss
        assert trial.state == TrialState.COMPLETE and sorted(trial.intermediate_values) == list(range(tasks))
        mean = sum(trial.intermediate_values.values()) / tasks
        assert mean == pytest.approx(trial.value, rel=1e-5) and trial.value == attrs["dev_loss"]


# -- extra objectives ----------------------------------------------------------------------------------

@pytest.mark.parametrize("second", ["latency", "parameters"])
def test_a_second_objective_is_returned_and_recorded(workspace: Any, second: str) -> None:
    spec = tiny_spec(objectives=("dev_loss", second), pruner=PrunerSpec(name="none"))
    study = tiny_study(spec)
    trial = run_tiny_trial(study, spec, workspace)
    assert trial.state == TrialState.COMPLETE and len(trial.values) == 2
    attrs = trial.user_attrs
    assert trial.values[0] == attrs["dev_loss"]
    assert trial.values[1] > 0
    if second == "latency":
        assert trial.values[1] == attrs["adaptation_latency_ms"]
    else:
        assert trial.values[1] == float(attrs["parameters"]) and "adaptation_latency_ms" not in attrs
    assert trial.intermediate_values == {}  # a multi-objective study is not pruned, so nothing is reported


# -- candidates that fail ------------------------------------------------------------------------------

LONG_LINE = "CUDA out of memory. Tried to allocate 2.00 GiB " + "x" * 300


@pytest.mark.parametrize("error", [torch.OutOfMemoryError(f"{LONG_LINE}\nmore details"),
                                   MemoryError(f"{LONG_LINE}\nmore details")], ids=["cuda", "host"])
def test_out_of_memory_fails_the_trial_and_the_search_goes_on(workspace: Any, monkeypatch: pytest.MonkeyPatch,
                                                              error: BaseException) -> None:
    real = objective_module.train_iter

    def runs_out_of_memory(*args: Any, **kwargs: Any) -> Iterator[Any]:
        for record in real(*args, **kwargs):
            yield record
            if isinstance(record, Step):  # one meta-iteration, then the allocation that does not fit
                raise error

    monkeypatch.setattr(objective_module, "train_iter", runs_out_of_memory)
    spec = tiny_spec()
    study = tiny_study(spec)
    trial = run_tiny_trial(study, spec, workspace)  # returns: the search goes on
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["status"] == "out_of_memory"
    assert trial.user_attrs["reason"] == f"out of memory: {LONG_LINE[:200]}"  # the first line, cut to 200 characters
    monkeypatch.setattr(objective_module, "train_iter", real)
    assert run_tiny_trial(study, spec, workspace).state == TrialState.COMPLETE
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]  # no retry queued


def test_a_diverging_candidate_fails_with_its_reason(workspace: Any) -> None:
    space = SearchSpace(name="boom", parameters=(ParamSpec("learner.inner_lr", "float", low=1e30, high=1e31, log=True),))
    spec = tiny_spec()
    study = tiny_study(spec)
    trial = run_tiny_trial(study, spec, workspace, space)
    assert trial.state == TrialState.FAIL and trial.user_attrs["status"] == "diverged"
    assert re.fullmatch(r"the meta-training loss became (nan|inf) at iteration 1", trial.user_attrs["reason"])
    assert len(study.trials) == 1  # a diverged candidate is not queued again


def test_a_non_finite_final_dev_loss_fails_the_trial_with_that_reason(workspace: Any) -> None:
    # random init trains nothing: the only scoring is the final one, and a huge fine-tuning lr makes it NaN
    space = SearchSpace(name="boom", parameters=(ParamSpec("learner.inner_lr", "float", low=1e30, high=1e31, log=True),))
    spec = tiny_spec(learner=dataclasses.replace(tiny_spec().learner, strategy="random", test_steps=3))
    study = tiny_study(spec)
    trial = run_tiny_trial(study, spec, workspace, space)
    assert trial.state == TrialState.FAIL and not math.isfinite(trial.user_attrs["dev_loss"])
    assert trial.user_attrs["status"] == "diverged"
    assert re.fullmatch(r"the final dev loss is (nan|inf)", trial.user_attrs["reason"])
    assert "artifact_id" not in trial.user_attrs  # nothing worth keeping


# -- slow: a real search on the real Omniglot copy with a tiny budget ----------------------------------

@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory, omniglot: Path) -> tuple[Path, str]:
    return searched_study(tmp_path_factory, omniglot)


@slow
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
    texts = study_texts(study)
    assert texts[StudyText.STUDY_FILE] == study_path.read_text() and "tiny-space" in texts[StudyText.SEARCH_SPACE]


@slow
def test_best_learner_loads_without_retraining(searched: tuple[Path, str], omniglot: Path) -> None:
    from nas_meta.studies import fetch_trial_learner

    study_path, storage = searched
    learner = nas_meta.load_learner(study_name="tiny", storage=storage)
    summary = summarize(optuna.load_study(study_name="tiny", storage=prepare(study_path, storage=storage).storage.storage))
    assert learner.metrics["dev_loss"] == pytest.approx(summary["best"]["dev_loss"])
    result = nas_meta.evaluate_learner(fetch_trial_learner(storage, "tiny", summary["best"]["number"]), episodes=12,
                                       data=omniglot, split="dev", device="cpu")
    assert result["loss"] == pytest.approx(summary["best"]["dev_loss"], rel=1e-4)  # same fixed dev episodes


@slow
def test_same_study_file_and_seed_gives_the_same_values(tmp_path: Path, omniglot: Path) -> None:
    values = []
    for run in ("a", "b"):
        study = make_study(tmp_path / run, iterations=4, n_trials=3)
        search(study, storage=f"journal:{tmp_path / run / 'runs.journal'}", device="cpu", data=omniglot)
        loaded = optuna.load_study(study_name="tiny", storage=prepare(study, storage=f"journal:{tmp_path / run / 'runs.journal'}").storage.storage)
        values.append([(t.params, t.value) for t in loaded.trials])
    assert values[0] == values[1]


@slow
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


@slow
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


# -- regression: an interrupted trial is closed and queued again, never completed half-trained -------------------

@pytest.mark.parametrize(("error", "signal_name"), [(Terminated(), "SIGTERM"), (KeyboardInterrupt(), "Ctrl-C")],
                         ids=["sigterm", "ctrl-c"])
def test_an_interrupt_inside_a_trial_fails_it_and_queues_it_again(workspace: Any, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  error: BaseException, signal_name: str) -> None:
    # Wilcoxon pruning scores every dev task once training ends: an interrupted run must not get that far
    spec = tiny_spec(budget=BudgetConfig(iterations=4), pruner=PrunerSpec(name="wilcoxon", p_threshold=0.1))
    study = tiny_study(spec)
    calls = interrupt_at(monkeypatch, error)  # the 3rd meta-iteration is interrupted
    store = artifact_store(tmp_path / "artifacts")
    with pytest.raises(type(error)) as info:
        run_tiny_trial(study, spec, workspace, artifacts=store)
    assert info.value is error and calls[0] == 3
    interrupted, retry = study.trials
    assert interrupted.state == TrialState.FAIL and interrupted.values is None
    assert interrupted.user_attrs["reason"] == f"interrupted ({signal_name}); queued again"
    assert "artifact_id" not in interrupted.user_attrs and interrupted.user_attrs["status"] == "interrupted"
    assert interrupted.intermediate_values == {}  # the half-trained learner was never scored
    assert [p for p in (tmp_path / "artifacts").rglob("*") if p.is_file()] == []  # no learner kept
    assert retry.state == TrialState.WAITING and retry.user_attrs == {"retry_of": 0}
    assert retry.system_attrs["fixed_params"] == interrupted.params
