"""YAML -> frozen dataclasses: training configs, search spaces and study files load or fail with exact messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from nas_meta.config import (
    SHIPPED_BASELINES,
    TrainConfig,
    baseline_path,
    dump_yaml,
    load_search_space,
    load_study_spec,
    load_train_config,
    train_config_from_dict,
)
from nas_meta.errors import ConfigError
from tests.conftest import REPO


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_shipped_baselines_load() -> None:
    for path in sorted((REPO / "studies" / "baselines").glob("*.yaml")):
        config = load_train_config(path)
        assert config.learner.strategy in path.name


def test_round_trip() -> None:
    config = load_train_config(REPO / "studies" / "baselines" / "maml-5w1s.yaml")
    assert train_config_from_dict(config.to_dict()) == config
    assert isinstance(dump_yaml(config.to_dict()), str)


def test_defaults_when_empty(tmp_path: Path) -> None:
    assert load_train_config(write(tmp_path, "")) == TrainConfig()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("learner: {strategy: mamll}",
         "learner.strategy='mamll' is not one of ['fomaml', 'maml', 'metasgd', 'pretrain', 'random', 'reptile']."),
        ("learner: {stratgy: maml}", "learner.stratgy is not a known field; allowed fields: ['strategy',"),
        ("task: {ways: five}", "task.ways='five' must be an integer."),
        ("task: {ways: 5.5}", "task.ways=5.5 must be an integer."),
        ("learner: {inner_lr: -0.1}", "learner.inner_lr=-0.1 is not allowed: expected a number > 0."),
        ("task: {shots: 5, query: 16}",
         "task.shots + task.query=21 is not allowed: expected at most 20 (Omniglot has 20 drawings of each character)."),
        ("data: {protocol: omniglot}", "data.protocol='omniglot' is not one of ['lake', 'maml', 'vinyals']."),
        ("- 1\n- 2", "the file must be a mapping of fields, but got list [1, 2]."),
        ("task: [1, 2]", "task must be a mapping of fields, but got list [1, 2]."),
        ("seed: true", "seed=True must be an integer."),
        ("task: {ways: 1}", "task.ways=1 is not allowed: expected an integer in [2, 10000]."),
    ],
)
def test_bad_files_name_file_field_value_and_allowed(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_train_config(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_train_config(write(tmp_path, "task: {ways: [}"))
    with pytest.raises(ConfigError, match="no such file"):
        load_train_config(tmp_path / "absent.yaml")


SPACE = """
name: s
parameters:
  - {name: learner.strategy, type: categorical, choices: [maml, reptile]}
  - {name: learner.inner_lr, type: float, low: 0.01, high: 1.0, log: true, when: {learner.strategy: [maml]}}
"""


def test_shipped_spaces_and_studies_load() -> None:
    for path in sorted((REPO / "search_spaces").glob("*.yaml")):
        assert load_search_space(path).parameters
    names = {load_study_spec(p).name for p in sorted((REPO / "studies").glob("*.yaml"))}
    assert {"omniglot-5w1s", "omniglot-5w5s", "omniglot-20w1s", "omniglot-20w5s", "smoke"} <= names


def test_conv_space_covers_the_joint_space() -> None:
    space = load_search_space(REPO / "search_spaces" / "conv.yaml")
    by_key = {p.key: p for p in space.parameters}
    assert (by_key["architecture.blocks"].low, by_key["architecture.blocks"].high) == (2, 6)
    assert set(by_key["learner.strategy"].choices) == {"maml", "fomaml", "reptile", "metasgd", "pretrain", "random"}
    assert by_key["learner.meta_step"].when == {"learner.strategy": ["reptile"]}
    lr_init = load_search_space(REPO / "search_spaces" / "lr-init.yaml")
    assert not [p for p in lr_init.parameters if p.name.startswith("architecture.")]


@pytest.mark.parametrize(
    ("replace", "by", "message"),
    [
        ("type: float, low: 0.01", "type: float, low: 0.0",
         "parameters[1].low=0.0 is not allowed: expected > 0 with log: true (a log scale starts above 0)."),
        ("low: 0.01, high: 1.0", "low: 2.0, high: 1.0", "parameters[1].low=2.0 is not allowed: expected less than high=1.0."),
        ("choices: [maml, reptile]", "choices: []", "parameters[0].choices=() is not allowed: expected a non-empty list."),
        ("choices: [maml, reptile]", "choices: [maml, mamll]",
         ("parameters[0] (learner.strategy): 'mamll' is not a valid value: learner.strategy='mamll' is not one of "
         "['fomaml', 'maml', 'metasgd', 'pretrain', 'random', 'reptile'].")),
        ("name: learner.inner_lr", "name: learner.inner_rate", "parameters[1].name='learner.inner_rate' is not allowed"),
        ("type: float", "type: double",
         "parameters[1].type='double' is not one of ['categorical', 'float', 'int']."),
        ("log: true,", "log: yes please,", "parameters[1].log='yes please' must be true or false."),
        ("when: {learner.strategy: [maml]}", "when: {learner.strategy: [mamal]}",
         "parameters[1].when.learner.strategy=['mamal'] is not allowed: expected values among ['maml', 'reptile']."),
        ("- {name: learner.strategy", "- {nme: learner.strategy",
         ("parameters[0].nme is not a known field; allowed fields: ['name', 'type', 'low', 'high', 'log', 'step', "
         "'choices', 'when', 'label'].")),
    ],
)
def test_malformed_space_messages(tmp_path: Path, replace: str, by: str, message: str) -> None:
    assert replace in SPACE
    path = tmp_path / "space.yaml"
    path.write_text(SPACE.replace(replace, by, 1))
    with pytest.raises(ConfigError) as info:
        load_search_space(path)
    assert str(info.value).startswith(f"{path}: {message}")


STUDY = """
name: st
search_space: space.yaml
task: {ways: 5, shots: 1, query: 2}
sampler: {name: tpe}
pruner: {name: median}
"""


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("sampler: {name: annealing}", "sampler.name='annealing' is not one of ['cmaes', 'gp', 'nsga2', 'random', 'tpe']."),
        ("pruner: {name: patient}", "pruner.name='patient' is not one of ['hyperband', 'median', 'none', 'wilcoxon']."),
        ("task: {ways: 101, shots: 1, query: 2}",
         "task.ways=101 is not allowed: expected at most 100, the classes of the 'maml' protocol's dev split."),
        ("task: {ways: 5, shots: 10, query: 11}",
         "task.shots + task.query=21 is not allowed: expected at most 20 (Omniglot has 20 drawings of each character)."),
        ("objectives: [dev_loss, parameters]",
         "pruner.name='median' is not allowed: expected 'none' for a multi-objective study"),
        ("n_trails: 5", "n_trails is not a known field; allowed fields: ['name', 'data', 'task', 'architecture', "
                        "'learner', 'budget', 'evaluation', 'search_space', 'objectives',"),
        ("evaluation: {every_seconds: 0}",
         "evaluation.every_seconds=0 is not allowed: expected a whole number of seconds >= 1, or null."),
        ("evaluation: {every_seconds: 7.5}", "evaluation.every_seconds=7.5 must be an integer."),
        ("pruner: {name: hyperband}\nevaluation: {every_seconds: 10}",
         "budget.seconds=None is not allowed: expected a number of seconds when evaluation.every_seconds paces a "
         "hyperband pruner"),
    ],
)
def test_malformed_study_messages(tmp_path: Path, extra: str, message: str) -> None:
    (tmp_path / "space.yaml").write_text(SPACE)
    key = extra.split(":")[0]
    lines = [line for line in STUDY.strip().splitlines() if not line.startswith(key + ":")]
    path = tmp_path / "study.yaml"
    path.write_text("\n".join(lines + [extra]) + "\n")
    with pytest.raises(ConfigError) as info:
        load_study_spec(path)
    assert str(info.value).startswith(f"{path}: {message}")


def test_study_with_missing_space_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(STUDY)
    with pytest.raises(ConfigError, match=r"space.yaml: no such file"):
        load_study_spec(path)


def test_baseline_lookup_prefers_the_study_folder_and_names_what_exists(tmp_path: Path) -> None:
    assert baseline_path("maml", 5, 1, [tmp_path, SHIPPED_BASELINES]) == SHIPPED_BASELINES / "maml-5w1s.yaml"
    (tmp_path / "maml-5w1s.yaml").write_text("")
    assert baseline_path("maml", 5, 1, [tmp_path, SHIPPED_BASELINES]) == tmp_path / "maml-5w1s.yaml"
    with pytest.raises(ConfigError) as info:
        baseline_path("protonet", 5, 1, [SHIPPED_BASELINES], field_name="--baselines")
    assert str(info.value).startswith(f"--baselines: 'protonet' has no config {SHIPPED_BASELINES / 'protonet-5w1s.yaml'}")
    assert "'maml-5w1s.yaml'" in str(info.value)
