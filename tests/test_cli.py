"""End to end through the console script on the real Omniglot copy (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

TINY = """
name: tiny-{strategy}
task: {{ways: 5, shots: 1, query: 3}}
architecture: {{blocks: 4, channels: 32}}
learner: {{strategy: {strategy}, inner_lr: 0.4, train_steps: 1, test_steps: 5, outer_lr: 0.003, meta_batch: 8}}
budget: {{iterations: {iterations}}}
evaluation: {{dev_episodes: 20, every: 20}}
seed: 3
"""


def nas_meta_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nas_meta.cli", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, omniglot: Path) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    config = folder / "tiny.yaml"
    config.write_text(TINY.format(strategy="maml", iterations=60))
    done = nas_meta_cli("train", str(config), "--out", str(folder / "learner"), "--data", str(omniglot), "--device", "cpu")
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)
    assert metrics["status"] == "completed" and metrics["iterations"] == 60 and metrics["protocol"] == "maml"
    assert metrics["dev_accuracy"] > 0.4  # well above chance (0.2) after 60 meta-iterations
    return folder / "learner"


def test_data_info_prints_counts(omniglot: Path) -> None:
    done = nas_meta_cli("data", "info", "--data", str(omniglot))
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["zips"]["images_evaluation"]["characters"] == 659
    assert info["protocols"]["vinyals"]["dev"]["characters"] == 172


def test_evaluate_prints_accuracy_with_ci_on_fixed_test_episodes(trained: Path, omniglot: Path) -> None:
    args = ["evaluate", str(trained), "--split", "test", "--episodes", "40", "--data", str(omniglot)]
    first, second = nas_meta_cli(*args), nas_meta_cli(*args)
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert result["episodes"] == 40 and result["split"] == "test" and result["ways"] == 5
    assert 0.4 < result["accuracy"] <= 1.0 and 0 < result["accuracy_ci95"] < 0.2
    assert json.loads(second.stdout)["accuracy"] == result["accuracy"]  # the same fixed episodes


def test_evaluate_other_ways_is_refused_for_maml(trained: Path, omniglot: Path) -> None:
    done = nas_meta_cli("evaluate", str(trained), "--ways", "20", "--episodes", "5", "--data", str(omniglot))
    assert done.returncode == 2
    assert "ways=20: this maml learner meta-learned a 5-way head" in done.stderr
    assert "Traceback" not in done.stderr


def test_train_reports_bad_config_without_traceback(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("learner: {strategy: mamll}\n")
    done = nas_meta_cli("train", str(config), "--out", str(tmp_path / "o"))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"nas-meta: error: {config}: learner.strategy='mamll' is not one of "
        "['fomaml', 'maml', 'metasgd', 'pretrain', 'random', 'reptile']."
    )
    assert not (tmp_path / "o").exists()


def test_train_bad_data_folder(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(TINY.format(strategy="maml", iterations=1))
    done = nas_meta_cli("train", str(config), "--out", str(tmp_path / "o"), "--data", str(tmp_path / "missing"))
    assert done.returncode == 2 and "is not a folder; it must hold images_background.zip" in done.stderr


@pytest.mark.parametrize("strategy", ["fomaml", "reptile", "metasgd", "pretrain", "random"])
def test_every_strategy_trains_and_evaluates(strategy: str, tmp_path: Path, omniglot: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(TINY.format(strategy=strategy, iterations=10).replace("inner_lr: 0.4", "inner_lr: 0.1"))
    done = nas_meta_cli("train", str(config), "--out", str(tmp_path / "l"), "--data", str(omniglot))
    assert done.returncode == 0, done.stderr
    ways = "20" if strategy in ("pretrain", "random") else "5"
    done = nas_meta_cli("evaluate", str(tmp_path / "l"), "--episodes", "10", "--ways", ways, "--data", str(omniglot))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["strategy"] == strategy and result["ways"] == int(ways) and 0 <= result["accuracy"] <= 1
