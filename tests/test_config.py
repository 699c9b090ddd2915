"""YAML -> frozen dataclasses: training configs, search spaces and study files load or fail with exact messages."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nas_meta.config import (
    MAX_YAML_BYTES,
    SHIPPED_BASELINES,
    TrainConfig,
    baseline_path,
    dump_yaml,
    load_config,
    load_search_space,
    load_study_spec,
    load_train_config,
    read_yaml,
    train_config_from_dict,
)
from nas_meta.errors import ConfigError
from tests.conftest import REPO, deadline, snapshot


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


def test_an_empty_mapping_takes_every_default_and_an_empty_file_is_refused(tmp_path: Path) -> None:
    assert load_train_config(write(tmp_path, "{}\n")) == TrainConfig()
    path = write(tmp_path, "")
    with pytest.raises(ConfigError) as info:
        load_train_config(path)
    assert str(info.value) == f"{path}: is empty; give a mapping of fields (an empty mapping {{}} takes every default)."


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
        ("task: {within_alphabet: 'yes'}", "task.within_alphabet='yes' must be true or false."),
        ("data: {train_rotations: 'yes'}", "data.train_rotations='yes' must be true or false."),
        ("data: {train_rotations: false}\ntask: {family: sinusoid, ways: 1}\narchitecture: {kind: mlp, norm: none}",
         "data.train_rotations=False is not allowed: expected unset (null) with task.family: sinusoid (its tasks are "
         "generated, not images)."),
        ("data: {protocol: vinyals, train_rotations: true}",
         "data.train_rotations=True is not allowed: expected false or unset (null) with the 'vinyals' protocol, whose "
         "four rotations are separate classes already."),
        ("task: {ways: 20, within_alphabet: true}",  # the default (maml) protocol's dev alphabets are small
         "task.ways=20 is not allowed: expected at most 6 with task.within_alphabet: true, the classes of the largest "
         "alphabet of the 'maml' protocol's dev split."),
        ("data: {protocol: lake}\ntask: {ways: 41, within_alphabet: true}",
         "task.ways=41 is not allowed: expected at most 40 with task.within_alphabet: true, the classes of the largest "
         "alphabet of the 'lake' protocol's dev split."),
        ("task: {ways: 20, train_ways: 5}",
         "task.train_ways=5 is not allowed: expected unset or task.ways=20 for strategy 'maml' with learner.head "
         "'fixed', which adapts to its training ways only (learner.head: zero or shared for ['maml', 'fomaml'] adapts "
         "to any)."),
        ("task: {ways: 20, train_ways: 5}\nlearner: {strategy: reptile}",
         "task.train_ways=5 is not allowed: expected unset or task.ways=20 for strategy 'reptile' with learner.head "
         "'fixed'"),
        ("task: {train_ways: 1}", "task.train_ways=1 is not allowed: expected an integer in [2, 10000], or unset (null)"),
        ("task: {train_ways: 10001}",
         "task.train_ways=10001 is not allowed: expected an integer in [2, 10000], or unset (null)"),
        ("task: {train_ways: 5.0}", "task.train_ways=5.0 must be an integer"),
        ("task: {train_shots: 0}", "task.train_shots=0 is not allowed: expected an integer >= 1, or unset (null)"),
        ("task: {train_shots: 6, query: 15}",
         "task.train_shots + task.query=21 is not allowed: expected at most 20 (Omniglot has 20 drawings"),
        ("data: {protocol: lake}\ntask: {ways: 20, train_ways: 56, within_alphabet: true}\nlearner: {head: zero}",
         "task.train_ways=56 is not allowed: expected at most 55 with task.within_alphabet: true, the classes of the "
         "largest alphabet of the 'lake' protocol's train split."),
        ("task: {family: sinusoid, ways: 1, train_ways: 2}\narchitecture: {kind: mlp, norm: none}",
         "task.train_ways=2 is not allowed: expected unset (null) with task.family: sinusoid"),
    ],
)
def test_bad_files_name_file_field_value_and_allowed(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_train_config(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


@pytest.mark.parametrize(("text", "shape"), [
    ("task: {ways: 20, shots: 5, train_ways: 5, train_shots: 1}\nlearner: {head: zero}", (5, 1)),
    ("task: {ways: 20, shots: 5, train_shots: 1}", (20, 1)),
    ("task: {ways: 20, shots: 5, train_ways: 5}\nlearner: {strategy: pretrain}", (5, 5)),
    ("task: {ways: 20, shots: 5, train_ways: 20}", (20, 5)),  # a fixed head at its own ways
    ("task: {ways: 20, shots: 5}", (20, 5)),
])
def test_meta_training_episodes_may_take_another_shape(tmp_path: Path, text: str, shape: tuple[int, int]) -> None:
    task = load_train_config(write(tmp_path, text)).task
    trained = task.training_task()
    assert (trained.ways, trained.shots) == shape and (task.ways, task.shots) == (20, 5)
    assert (trained.query, trained.within_alphabet, trained.train_ways, trained.train_shots) == (task.query, False,
                                                                                                 None, None)


@pytest.mark.parametrize("text", ["learner: {inner_lr: 1%s}", "budget: {seconds: 1%s}", "learner: {meta_step: -1%s}"])
def test_a_number_beyond_any_float_is_refused_as_not_finite(tmp_path: Path, text: str) -> None:
    """An int of 400 digits in a float field (it used to escape as an OverflowError traceback)."""
    path = write(tmp_path, text % ("0" * 400))
    with pytest.raises(ConfigError, match=r"=-?1000.* must be a finite number\.$"):
        load_train_config(path)
    with pytest.raises(ConfigError, match="must be a finite number"):
        load_train_config(write(tmp_path, "{}"), [text.split(":")[0] + "." + text.split("{")[1].split(":")[0] + "=1"
                                                  + "0" * 400])


def test_a_repeated_parameter_whose_condition_is_not_a_list_is_refused_by_name(tmp_path: Path) -> None:
    """(It used to fail inside the exclusivity check: a TypeError for a number, letters compared for a string.)"""
    for value, shown in (("2", "2"), ("maml", "'maml'"), ("null", "None")):
        text = ("name: s\nparameters:\n  - {name: learner.strategy, type: categorical, choices: [maml, reptile]}\n"
                f"  - {{name: learner.inner_lr, type: float, low: 0.1, high: 1, when: {{learner.strategy: {value}}}}}\n"
                "  - {name: learner.inner_lr, type: float, low: 0.001, high: 0.01, "
                "when: {learner.strategy: reptile}}\n")
        path = write(tmp_path, text)
        with pytest.raises(ConfigError) as info:
            load_search_space(path)
        assert str(info.value).endswith(f"parameters[1].when.learner.strategy={shown} is not allowed: expected a "
                                        "non-empty list of values.")


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


# -- hostile files: every message is one line naming the file, the field, the bad value and what is allowed ----------

TRAIN_FIELDS = "['name', 'data', 'task', 'architecture', 'learner', 'budget', 'evaluation', 'seed']"
LEARNER_FIELDS = ("['strategy', 'inner_lr', 'train_steps', 'test_steps', 'outer_lr', 'meta_batch', 'inner_optimizer', "
                  "'meta_step', 'init', 'head', 'inner_state', 'inner_batch']")
EMPTY = "is empty; give a mapping of fields (an empty mapping {} takes every default)."
STUDY_FIELDS = ("['name', 'data', 'task', 'architecture', 'learner', 'budget', 'evaluation', 'search_space', "
                "'objectives', 'sampler', 'pruner', 'storage', 'n_trials', 'timeout', 'baselines', 'seed']")
SPACE_FIELDS = "['name', 'parameters', 'description', 'fixed']"
PARAM_FIELDS = "['name', 'type', 'low', 'high', 'log', 'step', 'choices', 'when', 'label']"
STRATEGIES = "['fomaml', 'maml', 'metasgd', 'pretrain', 'random', 'reptile']"
NAME_RULE = "1 to 100 letters, digits, '.', '_' or '-', starting with a letter or digit"




def refused(load: Callable[[Path], object], path: Path) -> str:
    """The one-line message ``load(path)`` is refused with; the folder of ``path`` is left byte for byte."""
    before = snapshot(path.parent)
    with pytest.raises(ConfigError) as info:
        load(path)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    assert snapshot(path.parent) == before
    return message


def _param(text: str, message: str, id: str) -> Any:
    return pytest.param(text, message, id=id)


HOSTILE_TRAIN = [
    # not a mapping of fields
    _param("- a\n- b\n", "the file must be a mapping of fields, but got list ['a', 'b'].", "document-list"),
    _param("42\n", "the file must be a mapping of fields, but got int 42.", "document-int"),
    _param("hello\n", "the file must be a mapping of fields, but got str 'hello'.", "document-str"),
    _param("true\n", "the file must be a mapping of fields, but got bool True.", "document-bool"),
    _param("learner: 3\n", "learner must be a mapping of fields, but got int 3.", "section-int"),
    _param("learner: maml\n", "learner must be a mapping of fields, but got str 'maml'.", "section-str"),
    _param("budget: [1000]\n", "budget must be a mapping of fields, but got list [1000].", "section-list"),
    # unknown fields, top level and nested; keys that are not strings
    _param("seeed: 1\n", f"seeed is not a known field; allowed fields: {TRAIN_FIELDS}.", "unknown-top"),
    _param("learner: {inner_rate: 0.1}\n", f"learner.inner_rate is not a known field; allowed fields: {LEARNER_FIELDS}.",
           "unknown-nested"),
    _param("1: 2\n", f"1 is not a known field; allowed fields: {TRAIN_FIELDS}.", "key-int"),
    _param("~: 2\n", f"None is not a known field; allowed fields: {TRAIN_FIELDS}.", "key-null"),
    # int fields
    _param("seed: '3'\n", "seed='3' must be an integer.", "int-quoted"),
    _param("seed: 3.0\n", "seed=3.0 must be an integer.", "int-float"),
    _param("seed: [3]\n", "seed=[3] must be an integer.", "int-list"),
    _param("seed: {a: 1}\n", "seed={'a': 1} must be an integer.", "int-mapping"),
    _param("seed: null\n", "seed=None must be an integer.", "int-null"),
    _param("task: {ways: true}\n", "task.ways=True must be an integer.", "int-bool-true"),
    _param("seed: false\n", "seed=False must be an integer.", "int-bool-false"),
    _param("budget: {iterations: yes}\n", "budget.iterations=True must be an integer.", "int-bool-yes"),
    _param("evaluation: {every_seconds: on}\n", "evaluation.every_seconds=True must be an integer.", "int-bool-on"),
    _param("data: {image_size: .nan}\n", "data.image_size=nan must be an integer.", "int-nan"),
    _param("data: {image_size: .inf}\n", "data.image_size=inf must be an integer.", "int-inf"),
    _param("seed: 2024-01-01\n", "seed=datetime.date(2024, 1, 1) must be an integer.", "int-date"),
    # float fields
    _param("learner: {inner_lr: fast}\n", "learner.inner_lr='fast' must be a finite number.", "float-str"),
    _param("learner: {inner_lr: true}\n", "learner.inner_lr=True must be a finite number.", "float-bool"),
    _param("learner: {inner_lr: [0.1]}\n", "learner.inner_lr=[0.1] must be a finite number.", "float-list"),
    _param("learner: {inner_lr: null}\n", "learner.inner_lr=None must be a finite number.", "float-null"),
    _param("learner: {inner_lr: .nan}\n", "learner.inner_lr=nan must be a finite number.", "float-nan"),
    _param("learner: {inner_lr: .NaN}\n", "learner.inner_lr=nan must be a finite number.", "float-NaN"),
    _param("learner: {outer_lr: .inf}\n", "learner.outer_lr=inf must be a finite number.", "float-inf"),
    _param("learner: {outer_lr: -.inf}\n", "learner.outer_lr=-inf must be a finite number.", "float-minus-inf"),
    _param("learner: {meta_step: .Inf}\n", "learner.meta_step=inf must be a finite number.", "float-Inf"),
    _param("budget: {seconds: .nan}\n", "budget.seconds=nan must be a finite number.", "optional-float-nan"),
    _param("budget: {seconds: .inf}\n", "budget.seconds=inf must be a finite number.", "optional-float-inf"),
    _param("budget: {seconds: soon}\n", "budget.seconds='soon' must be a finite number.", "optional-float-str"),
    _param("budget: {seconds: false}\n", "budget.seconds=False must be a finite number.", "optional-float-bool"),
    # str fields
    _param("name: 5\n", "name=5 must be a string.", "str-int"),
    _param("name: [a]\n", "name=['a'] must be a string.", "str-list"),
    _param("name: {a: b}\n", "name={'a': 'b'} must be a string.", "str-mapping"),
    _param("name: null\n", "name=None must be a string.", "str-null"),
    _param("name: !!binary aGVsbG8=\n", "name=b'hello' must be a string.", "str-binary"),
    # Literal fields
    _param("learner: {strategy: 3}\n", f"learner.strategy=3 is not one of {STRATEGIES}.", "literal-int"),
    _param("learner: {strategy: null}\n", f"learner.strategy=None is not one of {STRATEGIES}.", "literal-null"),
    _param("learner: {strategy: MAML}\n", f"learner.strategy='MAML' is not one of {STRATEGIES}.", "literal-case"),
    _param("data: {protocol: true}\n", "data.protocol=True is not one of ['lake', 'maml', 'vinyals'].", "literal-bool"),
    _param("architecture: {norm: [batch]}\n", "architecture.norm=['batch'] is not one of ['batch', 'instance', "
           "'layer', 'none'].", "literal-list"),
    _param("architecture: {activation: ReLU}\n", "architecture.activation='ReLU' is not one of ['elu', 'gelu', "
           "'leaky_relu', 'relu', 'silu', 'tanh'].", "literal-activation"),
    _param("architecture: {downsample: avgpool}\n", "architecture.downsample='avgpool' is not one of ['maxpool', "
           "'stride'].", "literal-downsample"),
    _param("architecture: {head: linear}\n", "architecture.head='linear' is not one of ['flatten', 'mean'].",
           "literal-head"),
    _param("learner: {inner_optimizer: rmsprop}\n", "learner.inner_optimizer='rmsprop' is not one of ['adam', 'sgd'].",
           "literal-optimizer"),
    _param("learner: {init: zeros}\n", "learner.init='zeros' is not one of ['kaiming', 'orthogonal', 'xavier'].",
           "literal-init"),
]

_RANGES = [  # field, bad value, value shown, what is allowed
    ("data.image_size", "7", "7", "an integer in [8, 105]"),
    ("data.image_size", "106", "106", "an integer in [8, 105]"),
    ("task.ways", "1", "1", "an integer in [2, 10000]"),
    ("task.ways", "10001", "10001", "an integer in [2, 10000]"),
    ("task.shots", "0", "0", "an integer >= 1"),
    ("task.query", "0", "0", "an integer >= 1"),
    ("task.query", "-3", "-3", "an integer >= 1"),
    ("architecture.blocks", "0", "0", "an integer in [1, 8]"),
    ("architecture.blocks", "9", "9", "an integer in [1, 8]"),
    ("architecture.channels", "0", "0", "an integer in [1, 1024]"),
    ("architecture.channels", "1025", "1025", "an integer in [1, 1024]"),
    ("architecture.kernel", "2", "2", "one of [1, 3, 5, 7]"),
    ("architecture.kernel", "9", "9", "one of [1, 3, 5, 7]"),
    ("learner.inner_lr", "0", "0.0", "a number > 0"),
    ("learner.inner_lr", "-0.1", "-0.1", "a number > 0"),
    ("learner.outer_lr", "0.0", "0.0", "a number > 0"),
    ("learner.train_steps", "0", "0", "an integer in [1, 1000]"),
    ("learner.train_steps", "1001", "1001", "an integer in [1, 1000]"),
    ("learner.test_steps", "-1", "-1", "an integer in [0, 10000]"),
    ("learner.test_steps", "10001", "10001", "an integer in [0, 10000]"),
    ("learner.meta_batch", "0", "0", "an integer in [1, 10000]"),
    ("learner.meta_batch", "10001", "10001", "an integer in [1, 10000]"),
    ("learner.meta_step", "0", "0.0", "a number in (0, 1]"),
    ("learner.meta_step", "1.5", "1.5", "a number in (0, 1]"),
    ("budget.iterations", "-1", "-1", "an integer in [0, 10^9]"),
    ("budget.iterations", "1000000001", "1000000001", "an integer in [0, 10^9]"),
    ("budget.seconds", "0", "0.0", "a number of seconds in (0, 10^9], or null"),
    ("budget.seconds", "-60", "-60.0", "a number of seconds in (0, 10^9], or null"),
    ("budget.seconds", "1.0e+10", "10000000000.0", "a number of seconds in (0, 10^9], or null"),
    ("evaluation.dev_episodes", "0", "0", "an integer in [1, 100000]"),
    ("evaluation.dev_episodes", "100001", "100001", "an integer in [1, 100000]"),
    ("evaluation.every", "0", "0", "an integer in [1, 10^9]"),
    ("evaluation.every", "1000000001", "1000000001", "an integer in [1, 10^9]"),
    ("evaluation.every_seconds", "0", "0", "a whole number of seconds >= 1, or null"),
    ("evaluation.every_seconds", "1000000001", "1000000001", "a whole number of seconds >= 1, or null"),
    ("evaluation.batch", "0", "0", "an integer in [1, 10000]"),
    ("evaluation.batch", "10001", "10001", "an integer in [1, 10000]"),
    ("evaluation.seed", "-1", "-1", "an integer in [0, 4294967295]"),
    ("evaluation.seed", "4294967296", "4294967296", "an integer in [0, 4294967295]"),
    ("seed", "-1", "-1", "an integer in [0, 4294967295]"),
    ("seed", "4294967296", "4294967296", "an integer in [0, 4294967295]"),
    ("name", "''", "''", "a name of 1 to 200 printable characters"),
    ("name", '"a\\tb"', "'a\\tb'", "a name of 1 to 200 printable characters"),
]


def _yaml_of(field: str, value: str) -> str:
    section, _, name = field.rpartition(".")
    return f"{section}: {{{name}: {value}}}\n" if section else f"{field}: {value}\n"


HOSTILE_TRAIN += [
    _param(_yaml_of(f, v), f"{f}={shown} is not allowed: expected {allowed}.", f"range-{f}={v}")
    for f, v, shown, allowed in _RANGES
]
HOSTILE_TRAIN += [
    _param("task: {shots: 1, query: 20}\n", "task.shots + task.query=21 is not allowed: expected at most 20 (Omniglot "
           "has 20 drawings of each character).", "range-shots+query"),
    _param("task: {shots: 15, query: 15}\n", "task.shots + task.query=30 is not allowed: expected at most 20 (Omniglot "
           "has 20 drawings of each character).", "range-shots+query-30"),
]


@pytest.mark.parametrize(("text", "message"), HOSTILE_TRAIN)
def test_hostile_training_config_is_refused_in_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    assert refused(load_train_config, path) == f"{path}: {message}"
    assert refused(lambda p: load_config(TrainConfig, p), path) == f"{path}: {message}"


STUDY_BASE = "name: st\nsearch_space: space.yaml\ntask: {ways: 5, shots: 1, query: 2}\n"
HOSTILE_STUDY = [
    _param("null\n", EMPTY, "document-null"),
    _param("", EMPTY, "document-empty"),
    _param("{}\n", f"name is required but missing; fields: {STUDY_FIELDS}.", "document-empty-mapping"),
    _param("name: st\n", f"search_space is required but missing; fields: {STUDY_FIELDS}.", "required-missing"),
    _param("name: st\nsearch_space: null\n", "search_space=None must be a string.", "required-null"),
    _param("name: st\nsearch_space: [space.yaml]\n", "search_space=['space.yaml'] must be a string.", "required-list"),
    _param("name: null\nsearch_space: space.yaml\n", "name=None must be a string.", "name-null"),
    _param("- 1\n", "the file must be a mapping of fields, but got list [1].", "document-list"),
    _param(STUDY_BASE + "n_trails: 5\n", f"n_trails is not a known field; allowed fields: {STUDY_FIELDS}.", "unknown"),
    _param(STUDY_BASE + "sampler: {name: tpe, seeds: 1}\n", "sampler.seeds is not a known field; allowed fields: "
           "['name', 'seed', 'n_startup_trials'].", "unknown-nested"),
    _param(STUDY_BASE + "n_trials: 0\n", "n_trials=0 is not allowed: expected an integer in [1, 10^6].", "n_trials-0"),
    _param(STUDY_BASE + "n_trials: 1000001\n", "n_trials=1000001 is not allowed: expected an integer in [1, 10^6].",
           "n_trials-above"),
    _param(STUDY_BASE + "n_trials: true\n", "n_trials=True must be an integer.", "n_trials-bool"),
    _param(STUDY_BASE + "n_trials: 2.5\n", "n_trials=2.5 must be an integer.", "n_trials-float"),
    _param(STUDY_BASE + "timeout: 0\n", "timeout=0.0 is not allowed: expected a number of seconds in (0, 10^9], or "
           "null.", "timeout-0"),
    _param(STUDY_BASE + "timeout: -5\n", "timeout=-5.0 is not allowed: expected a number of seconds in (0, 10^9], or "
           "null.", "timeout-negative"),
    _param(STUDY_BASE + "timeout: 1.0e+10\n", "timeout=10000000000.0 is not allowed: expected a number of seconds in "
           "(0, 10^9], or null.", "timeout-above"),
    _param(STUDY_BASE + "timeout: .nan\n", "timeout=nan must be a finite number.", "timeout-nan"),
    _param(STUDY_BASE + "timeout: .inf\n", "timeout=inf must be a finite number.", "timeout-inf"),
    _param(STUDY_BASE + "pruner: {name: hyperband, reduction_factor: 1}\n", "pruner.reduction_factor=1 is not allowed: "
           "expected an integer in [2, 100].", "reduction_factor-1"),
    _param(STUDY_BASE + "pruner: {name: hyperband, reduction_factor: 101}\n", "pruner.reduction_factor=101 is not "
           "allowed: expected an integer in [2, 100].", "reduction_factor-101"),
    _param(STUDY_BASE + "pruner: {name: hyperband, reduction_factor: 2.5}\n", "pruner.reduction_factor=2.5 must be an "
           "integer.", "reduction_factor-float"),
    _param(STUDY_BASE + "pruner: {name: wilcoxon, p_threshold: 0}\n", "pruner.p_threshold=0.0 is not allowed: expected "
           "a number in (0, 1).", "p_threshold-0"),
    _param(STUDY_BASE + "pruner: {name: wilcoxon, p_threshold: 1}\n", "pruner.p_threshold=1.0 is not allowed: expected "
           "a number in (0, 1).", "p_threshold-1"),
    _param(STUDY_BASE + "pruner: {name: wilcoxon, p_threshold: .nan}\n", "pruner.p_threshold=nan must be a finite "
           "number.", "p_threshold-nan"),
    _param(STUDY_BASE + "pruner: {n_startup_trials: -1}\n", "pruner.n_startup_trials=-1 is not allowed: expected an "
           "integer in [0, 10^6].", "pruner-n_startup_trials"),
    _param(STUDY_BASE + "pruner: {n_warmup_steps: -1}\n", "pruner.n_warmup_steps=-1 is not allowed: expected an "
           "integer in [0, 10^9].", "pruner-n_warmup_steps"),
    _param(STUDY_BASE + "sampler: {seed: -1}\n", "sampler.seed=-1 is not allowed: expected an integer in "
           "[0, 4294967295], or null.", "sampler-seed"),
    _param(STUDY_BASE + "sampler: {n_startup_trials: 1000001}\n", "sampler.n_startup_trials=1000001 is not allowed: "
           "expected an integer in [0, 10^6].", "sampler-n_startup_trials"),
    _param(STUDY_BASE + "objectives: dev_loss\n", "objectives='dev_loss' must be a list.", "objectives-str"),
    _param(STUDY_BASE + "objectives: []\n", "objectives=[] is not allowed: expected a list starting with 'dev_loss' "
           "(optionally followed by 'parameters' or 'latency').", "objectives-empty"),
    _param(STUDY_BASE + "objectives: [accuracy]\n", "objectives[0]='accuracy' is not one of ['dev_loss', 'latency', "
           "'parameters'].", "objectives-unknown"),
    _param(STUDY_BASE + "baselines: maml\n", "baselines='maml' must be a list.", "baselines-str"),
    _param(STUDY_BASE + "baselines: [1]\n", "baselines[0]=1 must be a string.", "baselines-int"),
    _param(STUDY_BASE + "storage: 5\n", "storage=5 must be a string.", "storage-int"),
    _param(STUDY_BASE.replace("ways: 5", "ways: 147") + "data: {protocol: lake}\n", "task.ways=147 is not allowed: "
           "expected at most 146, the classes of the 'lake' protocol's dev split.", "ways-above-protocol"),
    _param(STUDY_BASE.replace("ways: 5", "ways: 48, within_alphabet: true") + "data: {protocol: lake}\n",
           "task.ways=48 is not allowed: expected at most 40 with task.within_alphabet: true, the classes of the "
           "largest alphabet of the 'lake' protocol's dev split.", "ways-above-largest-alphabet"),
]
HOSTILE_STUDY += [
    _param(f"name: {written}\nsearch_space: space.yaml\n", f"name={shown} is not allowed: expected {NAME_RULE}.",
           f"study-name-{label}")
    for label, written, shown in [("slash", "a/b", "'a/b'"), ("dotdot", "'..'", "'..'"), ("parent", "../x", "'../x'"),
                                  ("space", "a b", "'a b'"), ("hidden", ".hidden", "'.hidden'"), ("empty", "''", "''"),
                                  ("backslash", "'a\\b'", "'a\\\\b'"), ("tab", '"a\\tb"', "'a\\tb'")]
]


@pytest.mark.parametrize(("text", "message"), HOSTILE_STUDY)
def test_hostile_study_file_is_refused_in_one_line(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "space.yaml").write_text(SPACE)
    path = tmp_path / "study.yaml"
    path.write_text(text)
    assert refused(load_study_spec, path) == f"{path}: {message}"


def test_a_study_name_of_101_characters_is_refused_without_echoing_it(tmp_path: Path) -> None:
    (tmp_path / "space.yaml").write_text(SPACE)
    path = tmp_path / "study.yaml"
    path.write_text(f"name: {'a' * 101}\nsearch_space: space.yaml\n")
    assert refused(load_study_spec, path) == (f"{path}: name='{'a' * 27}...{'a' * 28}' is not allowed: expected "
                                              f"{NAME_RULE}.")


def test_a_study_file_without_a_name_is_refused(tmp_path: Path) -> None:
    (tmp_path / "space.yaml").write_text(SPACE)
    path = tmp_path / "study.yaml"
    path.write_text("search_space: space.yaml\n")
    assert refused(load_study_spec, path) == f"{path}: name is required but missing; fields: {STUDY_FIELDS}."


HOSTILE_SPACE = [
    _param("- 1\n", "the file must be a mapping of fields, but got list [1].", "document-list"),
    _param("null\n", EMPTY, "document-null"),
    _param("{}\n", f"name is required but missing; fields: {SPACE_FIELDS}.", "document-empty-mapping"),
    _param("name: s\nparameters: []\n", "parameters=[] is not allowed: expected at least one parameter to search.",
           "no-parameter"),
    _param("name: s\n", f"parameters is required but missing; fields: {SPACE_FIELDS}.", "parameters-missing"),
    _param("name: s\nparameters: null\n", "parameters=None must be a list.", "parameters-null"),
    _param("name: s\nparameters: {a: 1}\n", "parameters={'a': 1} must be a list.", "parameters-mapping"),
    _param("name: s\nparameters: [3]\n", "parameters[0] must be a mapping of fields, but got int 3.", "parameter-int"),
    _param("name: s\nparameters: [{type: int, low: 1, high: 2}]\n",
           f"parameters[0].name is required but missing; fields: {PARAM_FIELDS}.", "parameter-name-missing"),
    _param("name: s\nparameters: [{name: architecture.blocks, type: int, low: one, high: 3}]\n",
           "parameters[0].low='one' must be a finite number.", "low-str"),
    _param("name: s\nparameters: [{name: learner.inner_lr, type: float, low: .nan, high: 3}]\n",
           "parameters[0].low=nan must be a finite number.", "low-nan"),
    _param("name: s\nparameters: [{name: learner.inner_lr, type: float, low: 0.1, high: .inf}]\n",
           "parameters[0].high=inf must be a finite number.", "high-inf"),
    _param("name: s\nparameters: [{name: learner.inner_lr, type: float, low: 0.1, high: 1, log: 1}]\n",
           "parameters[0].log=1 must be true or false.", "bool-int"),
    _param("name: s\nparameters: [{name: architecture.blocks, type: int, low: 1.5, high: 3}]\n",
           "parameters[0].low/high=(1.5, 3.0) is not allowed: expected integers for an int parameter.", "int-fraction"),
    _param("name: s\nparameters: [{name: architecture.blocks, type: int, low: 1, high: 20}]\n",
           "parameters[0] (architecture.blocks): 20 is not a valid value: architecture.blocks=20 is not allowed: "
           "expected an integer in [1, 8].", "range-outside-field"),
    _param("name: s\nparameters: [{name: architecture.blocks, type: int, low: 1, high: 4, step: 0}]\n",
           "parameters[0].step=0.0 is not allowed: expected a number in (0, high - low = 3], or unset.", "step-0"),
    _param("name: s\nparameters: [{name: budget.iterations, type: int, low: 1, high: 3}]\n",
           "parameters[0].name='budget.iterations' is not allowed: expected one of ['architecture.blocks', "
           "'architecture.channels', 'architecture.kernel', 'architecture.downsample', 'architecture.norm', "
           "'architecture.activation', 'architecture.head', 'architecture.kind', 'architecture.cell_nodes', "
           "'learner.strategy', 'learner.inner_lr', "
           "'learner.train_steps', 'learner.test_steps', 'learner.outer_lr', 'learner.meta_batch', "
           "'learner.inner_optimizer', 'learner.meta_step', 'learner.init', 'learner.head', 'learner.inner_state', 'learner.inner_batch', "
           "'task.train_ways', 'task.train_shots'], or one element of a "
           "cell: ['architecture.normal_ops.N', 'architecture.normal_inputs.N', 'architecture.reduce_ops.N', "
           "'architecture.reduce_inputs.N'] (N from 0).", "name-not-searchable"),
    _param("name: s\nparameters: [{name: learner.strategy, type: categorical, choices: [maml]}]\n"
           "fixed: {architecture.blocks: 99}\n",
           "fixed: architecture.blocks=99 is not allowed: expected an integer in [1, 8].", "fixed-out-of-range"),
    _param("name: s\nparameters: [{name: learner.strategy, type: categorical, choices: [maml]}]\n"
           "fixed: {architecture.depth: 3}\n",
           "fixed: architecture.depth is not a field of a training config.", "fixed-unknown"),
    _param("name: s\nparameters: []\nfixed: [1]\n", "fixed=[1] must be a mapping.", "fixed-list"),
    _param("name: s\nparameters:\n  - {name: learner.inner_lr, type: float, low: 0.1, high: 1.0}\n"
           "fixed: {data.train_rotations: true}\n",
           "fixed='data.train_rotations' is not allowed: expected a field outside data and task (but task.train_ways, "
           "task.train_shots): the study file's data and task sections say what every trial trains on and is scored on; "
           "set it there.", "fixed-data"),
    _param("name: s\nparameters:\n  - {name: learner.inner_lr, type: float, low: 0.1, high: 1.0}\n"
           "fixed: {task.ways: 20}\n",
           "fixed='task.ways' is not allowed: expected a field outside data and task (but task.train_ways, "
           "task.train_shots): the study file's data and task sections say what every trial trains on and is scored on; "
           "set it there.", "fixed-task-ways"),
]


@pytest.mark.parametrize(("text", "message"), HOSTILE_SPACE)
def test_hostile_search_space_is_refused_in_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    assert refused(load_search_space, path) == f"{path}: {message}"


def test_a_bad_search_space_named_by_a_study_is_reported_with_its_own_file(tmp_path: Path) -> None:
    (tmp_path / "space.yaml").write_text("- not a space\n")
    path = tmp_path / "study.yaml"
    path.write_text(STUDY_BASE)
    assert refused(load_study_spec, path) == (f"{tmp_path / 'space.yaml'}: the file must be a mapping of fields, but "
                                              "got list ['not a space'].")


# -- hostile YAML: the reader itself ------------------------------------------------------------------------------

LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 10)}]\n" for a, b in zip("abcdefgh", "bcdefghi"))


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        pytest.param("seed: 1\nseed: 2\n", r"is not valid YAML at line 2: the key 'seed' appears twice \(first on line "
                     r"1\)\.", id="duplicate-key"),
        pytest.param("learner: {strategy: maml, strategy: reptile}\n", r"is not valid YAML at line 1: the key "
                     r"'strategy' appears twice \(first on line 1\)\.", id="duplicate-key-nested"),
        pytest.param("task:\n  ways: 5\n  ways: 20\n", r"is not valid YAML at line 3: the key 'ways' appears twice "
                     r"\(first on line 2\)\.", id="duplicate-key-block"),
        pytest.param("seed: 1\n---\nseed: 2\n", r"is not valid YAML at line 2: it holds several YAML documents "
                     r"\(---\); give one\.",
                     id="several-documents"),
        pytest.param("seed: !!python/object/apply:os.system ['true']\n", r"is not plain YAML at line 1: could not "
                     r"determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system' \(tags "
                     r"such as !!python/object are not allowed\)\.", id="tag-python-apply"),
        pytest.param("!!python/object:builtins.dict {}\n", r"is not plain YAML at line 1: could not determine a "
                     r"constructor for the tag 'tag:yaml.org,2002:python/object:builtins.dict' \(tags such as "
                     r"!!python/object are not allowed\)\.", id="tag-python-object"),
        pytest.param("name: !!python/name:os.system\n", r"is not plain YAML at line 1: could not determine a "
                     r"constructor for the tag 'tag:yaml.org,2002:python/name:os.system' \(tags such as "
                     r"!!python/object are not allowed\)\.", id="tag-python-name"),
        pytest.param("seed: !custom 3\n", r"is not plain YAML at line 1: could not determine a constructor for the "
                     r"tag '!custom' \(tags such as !!python/object are not allowed\)\.", id="tag-local"),
        pytest.param("seed: *nope\n", r"is not valid YAML at line 1: found undefined alias 'nope'\.",
                     id="undefined-alias"),
        pytest.param(LAUGHS, r"is not valid YAML at line \d+: it expands to more than 100000 values \(anchors and "
                     r"aliases\?\)\.", id="billion-laughs"),
        pytest.param("a: " + "{b: " * 1000 + "1" + "}" * 1000 + "\n", r"is nested too deeply to be a nas-meta YAML "
                     r"file\.", id="deep-mappings"),
        pytest.param("a: " + "[" * 600 + "]" * 600 + "\n", r"is nested too deeply to be a nas-meta YAML file\.",
                     id="deep-lists"),
        pytest.param("task: {ways: [}\n", r"is not valid YAML at line 1: expected the node content, but found '}'\.",
                     id="malformed-flow"),
        pytest.param("seed:\t1\n", r"is not valid YAML at line 1: found character '\\t' that cannot start any "
                     r"token\.", id="tab"),
    ],
)
def test_hostile_yaml_is_refused_quickly_naming_the_file(tmp_path: Path, text: str, pattern: str) -> None:
    path = write(tmp_path, text)
    start = time.perf_counter()
    message = refused(load_train_config, path)
    assert time.perf_counter() - start < 3.0  # a "billion laughs" file is refused, not expanded
    assert re.fullmatch(re.escape(f"{path}: ") + pattern, message), message
    assert refused(read_yaml, path) == message


def test_a_file_over_one_mebibyte_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"# padding\n" * (MAX_YAML_BYTES // 10) + b"seed: 1\n")
    assert path.stat().st_size > MAX_YAML_BYTES
    assert refused(load_train_config, path) == (f"{path}: is larger than 1024 KiB; nas-meta's YAML files are a few "
                                                "kB.")


@pytest.mark.parametrize(
    ("raw", "byte"),
    [
        pytest.param(b"name: caf\xe9\n", 9, id="latin-1"),
        pytest.param("name: x\n".encode("utf-16"), 0, id="utf-16"),
        pytest.param(b"\x89PNG\r\n\x1a\n\x00\x00", 0, id="binary"),
    ],
)
def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path, raw: bytes, byte: int) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(raw)
    assert refused(load_train_config, path) == f"{path}: is not UTF-8 text (byte {byte}); is it a YAML file?"


def test_a_folder_or_a_missing_file_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    assert refused(load_train_config, folder) == f"{folder}: is a folder, not a YAML file."
    assert refused(read_yaml, tmp_path / "absent.yaml") == f"{tmp_path / 'absent.yaml'}: no such file."
    assert refused(load_study_spec, tmp_path / "absent.yaml") == f"{tmp_path / 'absent.yaml'}: no such file."
    assert refused(load_search_space, folder) == f"{folder}: is a folder, not a YAML file."


HUGE = "x" * 400_000


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(f"name: {HUGE}\n", id="huge-string"),
        pytest.param(f"learner: {{strategy: {HUGE}}}\n", id="huge-literal"),
        pytest.param(f"seed: {'9' * 5000}\n", id="huge-integer"),
        pytest.param(f"task: {{ways: {'9' * 4000}}}\n", id="huge-integer-in-range-check"),
        pytest.param(f"{HUGE}: 1\n", id="huge-key"),
        pytest.param(f"learner: {{{HUGE}: 1}}\n", id="huge-nested-key"),
        pytest.param(f"name: [{', '.join(['ab'] * 8_000)}]\n", id="huge-list"),
        pytest.param(f"- {HUGE}\n", id="huge-document"),
    ],
)
def test_a_huge_value_is_never_echoed(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    message = refused(load_train_config, path)
    assert message.startswith(f"{path}: ") and len(message) < 300 + len(str(path)), message
    assert "x" * 100 not in message and "9" * 100 not in message and "ab, " * 20 not in message


# -- --set KEY=VALUE overrides ------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("setting", "pattern"),
    [
        pytest.param("noequals", r"--set 'noequals': not KEY=VALUE \(e\.g\. --set budget\.seconds=60\)\.",
                     id="no-equals"),
        pytest.param("=5", r"--set '=5': not KEY=VALUE \(e\.g\. --set budget\.seconds=60\)\.", id="empty-key"),
        pytest.param(" =5", r"--set ' =5': not KEY=VALUE \(e\.g\. --set budget\.seconds=60\)\.", id="blank-key"),
        pytest.param("bogus=1", r"--set 'bogus=1': 'bogus' is not a field of .*; fields: "
                     + re.escape(TRAIN_FIELDS) + r"\.", id="unknown-top"),
        pytest.param("learner.bogus=1", r"--set 'learner\.bogus=1': 'bogus' is not a field of learner; fields: "
                     + re.escape(LEARNER_FIELDS) + r"\.", id="unknown-nested"),
        pytest.param("learner.=1", r"--set 'learner\.=1': '' is not a field of learner; fields: "
                     + re.escape(LEARNER_FIELDS) + r"\.", id="empty-part"),
        pytest.param("learner.inner_lr.x=1", r"--set 'learner\.inner_lr\.x=1': learner\.inner_lr has no fields\.",
                     id="into-a-scalar"),
        pytest.param("seed.x=1", r"--set 'seed\.x=1': seed has no fields\.", id="into-a-top-scalar"),
        pytest.param("seed=[", r"--set 'seed=\[': the value is not valid YAML \(.*\)\.", id="bad-yaml"),
        pytest.param("seed=*a", r"--set 'seed=\*a': the value is not valid YAML \(found undefined alias 'a'.*\)\.",
                     id="undefined-alias"),
        pytest.param("seed=!!python/object/apply:os.system [true]", r"--set 'seed=!!python/object/apply:os\.system "
                     r"\[true\]': the value is not valid YAML \(could not determine a constructor for the tag .*\)\.",
                     id="python-tag"),
        pytest.param("seed={a: 1, a: 2}", r"--set 'seed=\{a: 1, a: 2\}': the value is not valid YAML \(the key 'a' "
                     r"appears twice.*\)\.", id="duplicate-key"),
    ],
)
def test_a_malformed_override_is_refused(tmp_path: Path, setting: str, pattern: str) -> None:
    path = write(tmp_path, "learner: {strategy: maml}\n")
    message = refused(lambda p: load_train_config(p, [setting]), path)
    assert re.search(pattern + "$", message), message


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        pytest.param("learner.inner_lr=-1", "learner.inner_lr=-1.0 is not allowed: expected a number > 0.",
                     id="out-of-range"),
        pytest.param("learner.inner_lr=.nan", "learner.inner_lr=nan must be a finite number.", id="nan"),
        pytest.param("budget.seconds=.inf", "budget.seconds=inf must be a finite number.", id="inf"),
        pytest.param("learner.strategy=mamll", f"learner.strategy='mamll' is not one of {STRATEGIES}.",
                     id="literal"),
        pytest.param("task.ways=true", "task.ways=True must be an integer.", id="bool-for-int"),
        pytest.param("task.query=20", "task.shots + task.query=21 is not allowed: expected at most 20 (Omniglot has "
                     "20 drawings of each character).", id="cross-field"),
        pytest.param("learner=3", "learner must be a mapping of fields, but got int 3.", id="section-scalar"),
        pytest.param("learner={bogus: 1}", f"learner.bogus is not a known field; allowed fields: {LEARNER_FIELDS}.",
                     id="section-unknown-field"),
    ],
)
def test_an_invalid_override_value_names_the_file_and_the_override(tmp_path: Path, setting: str,
                                                                   message: str) -> None:
    path = write(tmp_path, "learner: {strategy: maml}\n")
    assert refused(lambda p: load_train_config(p, [setting]), path) == f"{path} with --set {setting}: {message}"


def test_an_invalid_override_of_a_study_names_the_study_file(tmp_path: Path) -> None:
    (tmp_path / "space.yaml").write_text(SPACE)
    path = tmp_path / "study.yaml"
    path.write_text(STUDY_BASE)
    assert refused(lambda p: load_study_spec(p, ["n_trials=0"]), path) == (
        f"{path} with --set n_trials=0: n_trials=0 is not allowed: expected an integer in [1, 10^6].")
    assert refused(lambda p: load_study_spec(p, ["name=../x"]), path) == (
        f"{path} with --set name=../x: name='../x' is not allowed: expected {NAME_RULE}.")


@pytest.mark.parametrize("setting", ["noequals", "bogus=1", "learner.inner_lr.x=1", "seed=["])
def test_every_override_message_names_the_file(tmp_path: Path, setting: str) -> None:
    path = write(tmp_path, "learner: {strategy: maml}\n")
    assert str(path) in refused(lambda p: load_train_config(p, [setting]), path)


@pytest.mark.parametrize("setting", [f"name={HUGE}", f"learner.strategy={HUGE}", f"{HUGE}=1"])
def test_a_huge_override_is_never_echoed(tmp_path: Path, setting: str) -> None:
    path = write(tmp_path, "learner: {strategy: maml}\n")
    message = refused(lambda p: load_train_config(p, [setting]), path)
    assert len(message) < 300 + len(str(path)) and "x" * 100 not in message


# -- regression: a FIFO given as a YAML file is refused at once, never opened ---------------------------------------



@pytest.mark.parametrize("load", [read_yaml, load_train_config, load_search_space, load_study_spec],
                         ids=lambda f: f.__name__)
def test_a_fifo_is_refused_at_once_without_being_opened(tmp_path: Path, load: Callable[[Path], object]) -> None:
    fifo = tmp_path / "c.yaml"
    os.mkfifo(fifo)
    start = time.perf_counter()
    with deadline(5.0):
        message = refused(load, fifo)
    assert time.perf_counter() - start < 1.0
    assert message == f"{fifo}: is not a regular file (a FIFO or a device?); give a YAML file."


def test_a_conditional_parameter_is_checked_where_it_applies(tmp_path: Path) -> None:
    # inner_state and inner_batch are Reptile's: valid under learner.strategy: [reptile] (and inner_optimizer adam),
    # refused, naming the rule, when the space makes them conditional on MAML
    good = ("name: s\nparameters:\n  - {name: learner.strategy, type: categorical, choices: [maml, reptile]}\n"
            "  - {name: learner.inner_optimizer, type: categorical, choices: [adam], when: {learner.strategy: [reptile]}}\n"
            "  - {name: learner.inner_state, type: categorical, choices: [fresh, carried], "
            "when: {learner.inner_optimizer: [adam]}}\n"
            "  - {name: learner.inner_batch, type: categorical, choices: [null, 10], when: {learner.strategy: [reptile]}}\n")
    (tmp_path / "good.yaml").write_text(good)
    assert len(load_search_space(tmp_path / "good.yaml").parameters) == 4
    (tmp_path / "bad.yaml").write_text(good.replace("choices: [null, 10], when: {learner.strategy: [reptile]}",
                                                    "choices: [null, 10], when: {learner.strategy: [maml]}"))
    with pytest.raises(ConfigError) as info:
        load_search_space(tmp_path / "bad.yaml")
    assert str(info.value) == (f"{tmp_path / 'bad.yaml'}: parameters[3] (learner.inner_batch): 10 is not a valid value: "
                               "learner.inner_batch=10 is not allowed: expected unset (null) for strategy 'maml' (inner "
                               "mini-batches are for reptile).")
