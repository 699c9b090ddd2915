"""nas_meta.search.space: walking a conditional space, suggesting a config, a baseline's parameters (fast)."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import optuna
import pytest

from nas_meta.config import (
    ParamSpec,
    SamplerSpec,
    SearchSpace,
    StudySpec,
    TrainConfig,
    load_search_space,
    load_train_config,
)
from nas_meta.errors import ConfigError
from nas_meta.search import baseline_params, make_sampler, suggest_config, walk
from tests.conftest import REPO

SPACE = load_search_space(REPO / "search_spaces" / "conv.yaml")
BASE = StudySpec(name="t", search_space="conv.yaml")

# A space whose conditions chain: meta_step hangs on inner_optimizer, which hangs on the strategy (bounds are
# floats, as the YAML loader gives them).
CHAINED = SearchSpace(name="chained", parameters=(
    ParamSpec("learner.strategy", "categorical", choices=("maml", "reptile")),
    ParamSpec("learner.inner_lr", "float", low=0.01, high=1.0, when={"learner.strategy": ["maml"]}),
    ParamSpec("learner.inner_lr", "float", low=1e-4, high=0.5, label="learner.inner_lr.reptile",
              when={"learner.strategy": ["reptile"]}),
    ParamSpec("learner.inner_optimizer", "categorical", choices=("adam", "sgd"), when={"learner.strategy": ["reptile"]}),
    ParamSpec("learner.meta_step", "float", low=0.1, high=1.0, when={"learner.inner_optimizer": ["adam"]}),
    ParamSpec("learner.test_steps", "int", low=1.0, high=50.0),
    ParamSpec("learner.train_steps", "int", low=1.0, high=10.0,
              when={"learner.strategy": ["reptile"], "learner.inner_optimizer": ["sgd"]}),
), fixed={"architecture.channels": 16})


def objective(trial: optuna.Trial) -> float:
    config = suggest_config(trial, SPACE, BASE.base_config())
    lr = config.learner.inner_lr
    return abs(config.architecture.blocks - 4) + abs(lr - 0.4)


def scripted(choices: dict[str, object]):
    """A ``pick`` for :func:`walk` that answers from ``choices`` (else a parameter's low/first value) and records
    the keys it was asked for, in order."""
    asked: list[str] = []

    def pick(p: ParamSpec) -> object:
        asked.append(p.key)
        if p.key in choices:
            return choices[p.key]
        return (p.choices or ())[0] if p.type == "categorical" else p.low

    return pick, asked


@pytest.mark.parametrize(("choices", "visited"), [
    ({"learner.strategy": "maml"}, ["learner.strategy", "learner.inner_lr", "learner.test_steps"]),
    ({"learner.strategy": "reptile", "learner.inner_optimizer": "adam"},
     ["learner.strategy", "learner.inner_lr.reptile", "learner.inner_optimizer", "learner.meta_step",
      "learner.test_steps"]),
    ({"learner.strategy": "reptile", "learner.inner_optimizer": "sgd"},
     ["learner.strategy", "learner.inner_lr.reptile", "learner.inner_optimizer", "learner.test_steps",
      "learner.train_steps"]),
])
def test_walk_visits_a_conditional_parameter_only_when_its_conditions_hold(choices: dict[str, object],
                                                                          visited: list[str]) -> None:
    pick, asked = scripted(choices)
    values = walk(CHAINED, pick)
    assert asked == visited  # in declaration order; meta_step is skipped when inner_optimizer is inactive (maml)
    assert list(values) == visited
    for key, value in choices.items():
        assert values[key] == value


def test_suggest_config_applies_labels_and_the_fixed_fields() -> None:
    study = optuna.create_study()
    study.enqueue_trial({"learner.strategy": "reptile", "learner.inner_lr.reptile": 0.003,
                         "learner.inner_optimizer": "adam", "learner.meta_step": 0.5, "learner.test_steps": 7})
    config = suggest_config(study.ask(), CHAINED, TrainConfig())
    assert config.learner.strategy == "reptile" and config.learner.inner_lr == 0.003  # the label sets its field
    assert config.learner.inner_optimizer == "adam" and config.learner.meta_step == 0.5
    assert config.learner.test_steps == 7 and config.learner.train_steps == TrainConfig().learner.train_steps
    assert config.architecture.channels == 16  # fixed by the space


def test_conditional_parameters_follow_the_strategy() -> None:
    study = optuna.create_study(sampler=make_sampler(dataclasses.replace(BASE, sampler=SamplerSpec(name="random"))))
    study.optimize(objective, n_trials=40)
    for t in study.trials:
        strategy = t.params["learner.strategy"]
        assert ("learner.meta_step" in t.params) == (strategy == "reptile")
        assert "learner.inner_lr" in t.params  # one name for the concept, its range by strategy
        low, high = (1e-4, 0.5) if strategy == "reptile" else (0.01, 1.0)
        assert low <= t.params["learner.inner_lr"] <= high
        assert t.distributions["learner.inner_lr"].low == low
        assert ("learner.outer_lr" in t.params) == (strategy in ("maml", "fomaml", "metasgd", "pretrain"))
        assert ("learner.train_steps" in t.params) == (strategy in ("maml", "fomaml", "metasgd", "reptile"))


def test_baseline_params_reproduce_the_baseline_config() -> None:
    for name in ("maml", "reptile"):
        config = load_train_config(REPO / "studies" / "baselines" / f"{name}-5w1s.yaml")
        study = optuna.create_study()
        study.enqueue_trial(baseline_params(SPACE, config))
        trial = study.ask()
        rebuilt = suggest_config(trial, SPACE, config)
        assert rebuilt.learner == config.learner and rebuilt.architecture == config.architecture


def test_baseline_params_hold_only_the_active_parameters() -> None:
    config = dataclasses.replace(TrainConfig(name="r"), architecture=dataclasses.replace(TrainConfig().architecture,
                                                                                          channels=16))
    reptile = dataclasses.replace(config, learner=dataclasses.replace(config.learner, strategy="reptile",
                                                                      inner_lr=0.001, inner_optimizer="sgd"))
    assert baseline_params(CHAINED, reptile) == {
        "learner.strategy": "reptile", "learner.inner_lr.reptile": 0.001, "learner.inner_optimizer": "sgd",
        "learner.test_steps": reptile.learner.test_steps, "learner.train_steps": reptile.learner.train_steps,
    }


@pytest.mark.parametrize(("learner", "message"), [
    ({"strategy": "maml", "inner_lr": 5.0}, "baseline 'b': learner.inner_lr=5.0 lies outside the search space's [0.01, 1]."),
    ({"strategy": "reptile", "inner_lr": 0.9},
     "baseline 'b': learner.inner_lr=0.9 lies outside the search space's [0.0001, 0.5]."),
    ({"strategy": "maml", "test_steps": 60}, "baseline 'b': learner.test_steps=60 lies outside the search space's [1, 50]."),
    ({"strategy": "metasgd"}, "baseline 'b': learner.strategy='metasgd' lies outside the search space's ['maml', 'reptile']."),
])
def test_baseline_params_refuse_a_value_outside_the_space(learner: dict[str, object], message: str) -> None:
    config = TrainConfig(name="b")
    config = dataclasses.replace(config, architecture=dataclasses.replace(config.architecture, channels=16),
                                 learner=dataclasses.replace(config.learner, **learner))
    with pytest.raises(ConfigError) as info:
        baseline_params(CHAINED, config)
    assert str(info.value) == message


def test_baseline_params_refuse_a_value_the_space_fixes_otherwise() -> None:
    with pytest.raises(ConfigError, match=r"baseline 'b': architecture\.channels=64 differs from the space's fixed 16\."):
        baseline_params(CHAINED, TrainConfig(name="b"))


def test_one_name_may_hold_several_ranges_only_under_exclusive_conditions() -> None:
    strategy = ParamSpec("learner.strategy", "categorical", choices=("maml", "reptile"))
    maml = ParamSpec("learner.inner_lr", "float", low=0.01, high=1.0, log=True, when={"learner.strategy": ["maml"]})
    reptile = ParamSpec("learner.inner_lr", "float", low=1e-4, high=0.5, log=True, when={"learner.strategy": ["reptile"]})
    SearchSpace(name="ok", parameters=(strategy, maml, reptile))
    overlapping = dataclasses.replace(reptile, when={"learner.strategy": ["reptile", "maml"]})
    for second in (overlapping, dataclasses.replace(reptile, when=None)):
        with pytest.raises(ConfigError) as info:
            SearchSpace(name="clash", parameters=(strategy, maml, second))
        assert str(info.value) == ("parameters[2] (learner.inner_lr): declared twice with conditions that can hold at "
                                   "once; give both a `when` on the same parameter with no value in common (or a "
                                   "`label:` to tell them apart).")


def test_a_baseline_whose_trial_would_differ_from_it_is_refused_by_name() -> None:
    import dataclasses

    from nas_meta.config import LearnerConfig, TrainConfig, load_search_space
    from nas_meta.search.space import baseline_params, check_reproduced
    from tests.conftest import REPO

    space = load_search_space(REPO / "search_spaces" / "lr-init.yaml")  # searches no learner.init
    base = TrainConfig()
    reptile = dataclasses.replace(base, name="reptile-x", learner=LearnerConfig(
        strategy="reptile", inner_optimizer="adam", inner_lr=0.001, meta_batch=5, inner_state="carried", inner_batch=10))
    check_reproduced(space, base, reptile, baseline_params(space, reptile))  # every field it sets is searched
    xavier = dataclasses.replace(reptile, learner=dataclasses.replace(reptile.learner, init="xavier"))
    with pytest.raises(ConfigError) as info:
        check_reproduced(space, base, xavier, baseline_params(space, xavier))
    assert str(info.value) == (
        "baseline 'reptile-x': learner.init='xavier' is neither searched nor fixed by the search space 'lr-init', so "
        "its trial would run with 'kaiming'; add learner.init to the space (or to its fixed fields), or leave it at the "
        "study's value in the baseline.")


# The shape of meta-training episodes may be searched, conditioned on a head that adapts to any ways.
TRAIN_SHAPE = SearchSpace(name="train-shape", parameters=(
    ParamSpec("learner.head", "categorical", choices=("fixed", "zero")),
    ParamSpec("task.train_ways", "categorical", choices=(None, 5), when={"learner.head": ["zero"]}),
    ParamSpec("task.train_shots", "int", low=1.0, high=5.0, when={"learner.head": ["zero"]}),
))
TWENTY_WAY = dataclasses.replace(TrainConfig(name="b"), task=dataclasses.replace(TrainConfig().task, ways=20, shots=5,
                                                                                 query=5))


def test_a_space_may_search_the_meta_training_episodes_shape_but_not_the_dev_and_test_one() -> None:
    study = optuna.create_study()
    study.enqueue_trial({"learner.head": "zero", "task.train_ways": 5, "task.train_shots": 1})
    config = suggest_config(study.ask(), TRAIN_SHAPE, TWENTY_WAY)
    assert (config.task.ways, config.task.shots) == (20, 5)  # what the objective scores is the base's
    assert (config.task.training_task().ways, config.task.training_task().shots) == (5, 1)
    study.enqueue_trial({"learner.head": "fixed"})
    assert suggest_config(study.ask(), TRAIN_SHAPE, TWENTY_WAY).task.training_task().ways == 20
    for field in ("task.ways", "task.shots", "task.query"):
        with pytest.raises(ConfigError, match=rf"parameters\[0\]\.name='{field}' is not allowed: expected one of "):
            load_space_text(f"name: s\nparameters: [{{name: {field}, type: int, low: 2, high: 5}}]\n")


def test_a_searched_meta_training_shape_is_checked_where_it_applies() -> None:
    """A train_ways the base's fixed head cannot take is refused when the space is read, naming the field."""
    with pytest.raises(ConfigError, match=r"parameters\[0\] \(task.train_ways\): 20 is not a valid value: "
                                          r"task.train_ways=20 is not allowed: expected unset or task.ways=5"):
        load_space_text("name: s\nparameters: [{name: task.train_ways, type: categorical, choices: [5, 20]}]\n")


def test_baseline_params_reproduce_an_unset_or_set_meta_training_shape() -> None:
    maml = dataclasses.replace(TWENTY_WAY, learner=dataclasses.replace(TWENTY_WAY.learner, head="zero"))
    five = dataclasses.replace(maml, task=dataclasses.replace(maml.task, train_ways=5, train_shots=2))
    assert baseline_params(TRAIN_SHAPE, five) == {"learner.head": "zero", "task.train_ways": 5, "task.train_shots": 2}
    assert baseline_params(dataclasses.replace(TRAIN_SHAPE, parameters=TRAIN_SHAPE.parameters[:2]), maml) == {
        "learner.head": "zero", "task.train_ways": None}
    with pytest.raises(ConfigError) as info:  # unset is outside an int range: a message, not a TypeError
        baseline_params(TRAIN_SHAPE, maml)
    assert str(info.value) == "baseline 'b': task.train_shots=None lies outside the search space's [1, 5]."


def load_space_text(text: str) -> SearchSpace:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "space.yaml"
        path.write_text(text)
        return load_search_space(path)
