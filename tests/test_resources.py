"""The shipped study files, search spaces and baselines, found by name (fast)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nas_meta import resources
from nas_meta.config import load_search_space, load_study_spec, load_train_config
from nas_meta.errors import ConfigError
from tests.conftest import REPO


def test_a_clone_reads_the_repository_folders() -> None:
    assert resources.shipped_root() == REPO  # no wheel copy inside the package here
    assert resources.shipped_baselines() == REPO / "studies" / "baselines"


def test_every_shipped_study_space_and_baseline_loads() -> None:
    studies, spaces = resources.shipped_studies(), resources.shipped_spaces()
    assert {"smoke", "omniglot-5w1s", "omniglot-5w5s", "omniglot-20w1s", "omniglot-20w5s"} <= set(studies)
    assert {"conv", "lr-init"} <= set(spaces)
    for name, path in studies.items():
        assert load_study_spec(path).name == name
    for path in spaces.values():
        assert load_search_space(path).parameters
    for path in resources.shipped_baselines().glob("*.yaml"):
        assert load_train_config(path).name == path.stem


def test_a_study_is_found_by_name_or_by_path(tmp_path: Path) -> None:
    assert resources.study_file("smoke") == REPO / "studies" / "smoke.yaml"
    own = tmp_path / "mine.yaml"
    assert resources.study_file(own) == own  # a path is taken as given; reading it names a missing file
    assert resources.study_file("sub/smoke") == Path("sub/smoke")


def test_an_unknown_name_lists_the_shipped_studies() -> None:
    with pytest.raises(ConfigError) as info:
        resources.study_file("smok")
    assert str(info.value) == (f"study 'smok' is neither a study file nor a shipped study; shipped studies: "
                               f"{sorted(resources.shipped_studies())} (nas-meta studies lists them).")


def test_a_wheel_reads_its_own_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "nas_meta"
    (package / "_shipped" / "studies" / "baselines").mkdir(parents=True)
    (package / "_shipped" / "studies" / "tiny.yaml").write_text("name: tiny\nsearch_space: x.yaml\n")
    monkeypatch.setattr(resources, "files", lambda _: package)
    assert resources.shipped_root() == package / "_shipped"
    assert resources.study_file("tiny") == package / "_shipped" / "studies" / "tiny.yaml"
