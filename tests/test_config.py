"""YAML -> frozen dataclasses: accepted files round-trip, bad ones give exact messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from nas_meta.config import TrainConfig, dump_yaml, load_train_config, train_config_from_dict
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
        ("task: {ways: 1}", "task.ways=1 is not allowed: expected an integer >= 2."),
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
