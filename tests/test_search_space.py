"""Suggesting candidates from a search space with every sampler, without training (fast)."""

from __future__ import annotations

import dataclasses

import optuna
import pytest

from nas_meta.config import PrunerSpec, SamplerSpec, StudySpec, load_search_space
from nas_meta.search import baseline_params, make_pruner, make_sampler, suggest_config
from tests.conftest import REPO

SPACE = load_search_space(REPO / "search_spaces" / "conv.yaml")
BASE = StudySpec(name="t", search_space="conv.yaml")


def objective(trial: optuna.Trial) -> float:
    config = suggest_config(trial, SPACE, BASE.base_config())
    lr = config.learner.inner_lr
    return abs(config.architecture.blocks - 4) + abs(lr - 0.4)


@pytest.mark.parametrize("sampler", ["tpe", "random", "cmaes", "gp"])
def test_every_single_objective_sampler_drives_the_space(sampler: str) -> None:
    spec = dataclasses.replace(BASE, sampler=SamplerSpec(name=sampler, n_startup_trials=2))  # type: ignore[arg-type]
    study = optuna.create_study(sampler=make_sampler(spec))
    study.optimize(objective, n_trials=5)
    assert len(study.trials) == 5 and all(t.state.name == "COMPLETE" for t in study.trials)


def test_nsga2_drives_a_two_objective_study() -> None:
    spec = dataclasses.replace(BASE, objectives=("dev_loss", "parameters"), sampler=SamplerSpec(name="nsga2"),
                               pruner=PrunerSpec(name="none"))
    study = optuna.create_study(sampler=make_sampler(spec), directions=["minimize", "minimize"])
    study.optimize(lambda t: (objective(t), float(suggest_config(t, SPACE, BASE.base_config()).architecture.channels)),
                   n_trials=4)
    assert len(study.best_trials) >= 1


def test_seeded_sampler_repeats_its_suggestions() -> None:
    runs = []
    for _ in range(2):
        study = optuna.create_study(sampler=make_sampler(BASE))
        study.optimize(objective, n_trials=4)
        runs.append([t.params for t in study.trials])
    assert runs[0] == runs[1]


def test_conditional_parameters_follow_the_strategy() -> None:
    study = optuna.create_study(sampler=make_sampler(dataclasses.replace(BASE, sampler=SamplerSpec(name="random"))))
    study.optimize(objective, n_trials=40)
    for t in study.trials:
        strategy = t.params["learner.strategy"]
        assert ("learner.meta_step" in t.params) == (strategy == "reptile")
        assert ("learner.inner_lr.reptile" in t.params) == (strategy == "reptile")
        assert ("learner.outer_lr" in t.params) == (strategy in ("maml", "fomaml", "metasgd", "pretrain"))
        assert ("learner.train_steps" in t.params) == (strategy in ("maml", "fomaml", "metasgd", "reptile"))


@pytest.mark.parametrize("pruner", ["median", "hyperband", "wilcoxon", "none"])
def test_pruners_are_built(pruner: str) -> None:
    spec = dataclasses.replace(BASE, pruner=PrunerSpec(name=pruner))  # type: ignore[arg-type]
    assert isinstance(make_pruner(spec), optuna.pruners.BasePruner)


def test_hyperband_resources_follow_the_dev_schedule() -> None:
    from nas_meta.config import BudgetConfig, EvalConfig

    by_iterations = dataclasses.replace(BASE, pruner=PrunerSpec(name="hyperband"), budget=BudgetConfig(1000),
                                        evaluation=EvalConfig(every=50))
    by_seconds = dataclasses.replace(by_iterations, budget=BudgetConfig(10**6, 60.0),
                                     evaluation=EvalConfig(every_seconds=10))
    for spec, resources in [(by_iterations, (50, 1000)), (by_seconds, (10, 60))]:
        pruner = make_pruner(spec)
        assert (pruner._min_resource, pruner._max_resource) == resources  # type: ignore[attr-defined]


def test_baseline_params_reproduce_the_baseline_config() -> None:
    from nas_meta.config import load_train_config

    for name in ("maml", "reptile"):
        config = load_train_config(REPO / "studies" / "baselines" / f"{name}-5w1s.yaml")
        study = optuna.create_study()
        study.enqueue_trial(baseline_params(SPACE, config))
        trial = study.ask()
        rebuilt = suggest_config(trial, SPACE, config)
        assert rebuilt.learner == config.learner and rebuilt.architecture == config.architecture
