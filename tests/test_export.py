"""Export of a real tiny study and comparison with the baselines (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from nas_meta.config import load_train_config
from nas_meta.errors import ConfigError
from nas_meta.export import export_study
from nas_meta.search import search
from nas_meta.studies import summarize
from tests.helpers_study import make_study

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, omniglot: Path) -> str:
    folder = tmp_path_factory.mktemp("export")
    storage = f"journal:{folder / 'runs' / 'tiny.journal'}"
    search(make_study(folder, n_trials=5), storage=storage, device="cpu", data=omniglot)
    return storage


def test_export_writes_every_file(study: str, tmp_path: Path) -> None:
    result = export_study("tiny", study, tmp_path / "out")
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["best.yaml", "report.html", "summary.md", "trials.csv", "trials.parquet"]
    table = pd.read_csv(out / "trials.csv")
    assert list(table["number"]) == [0, 1, 2, 3, 4] and set(table["state"]) <= {"COMPLETE", "PRUNED"}
    assert {"dev_loss", "dev_accuracy", "dev_accuracy_ci95", "parameters", "strategy", "params.learner.strategy",
            "duration_s", "reason"} <= set(table.columns)
    assert pd.read_parquet(out / "trials.parquet").shape == table.shape
    best = load_train_config(out / "best.yaml")
    assert best.learner.strategy == table.loc[table["dev_loss"].idxmin(), "strategy"]
    assert best.architecture.channels == 16 and best.budget.iterations == 8
    report = (out / "report.html").read_text()
    assert report.count("<h2>") >= 4 and "Optimization history" in report and "plotly" in report
    summary = (out / "summary.md").read_text()
    assert "## Best trial" in summary and "## Top 10 trials" in summary and "maml" in summary
    assert result["best_trials"] == [int(table.loc[table["dev_loss"].idxmin(), "number"])]


def test_best_yaml_trains_unchanged(study: str, tmp_path: Path, omniglot: Path) -> None:
    export_study("tiny", study, tmp_path / "out")
    done = subprocess.run([sys.executable, "-m", "nas_meta.cli", "train", str(tmp_path / "out" / "best.yaml"), "--out",
                           str(tmp_path / "l"), "--data", str(omniglot)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["iterations"] == 8


def test_unknown_study_lists_the_existing_ones(study: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        export_study("tiyn", study, tmp_path / "o")
    assert "--study-name 'tiyn': no such study in" in str(info.value) and "['tiny']" in str(info.value)
    assert not (tmp_path / "o").exists()


def test_compare_writes_paired_table(tmp_path: Path, omniglot: Path) -> None:
    config = tmp_path / "cand.yaml"
    config.write_text("name: cand\ntask: {ways: 5, shots: 1, query: 2}\narchitecture: {channels: 16}\n"
                      "learner: {strategy: fomaml, meta_batch: 4, test_steps: 3}\nbudget: {iterations: 3}\n"
                      "evaluation: {dev_episodes: 5, every: 100}\n")
    done = subprocess.run([sys.executable, "-m", "nas_meta.cli", "compare", str(config), "--seeds", "2", "--episodes",
                           "30", "--out", str(tmp_path / "cmp"), "--data", str(omniglot)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    table = pd.read_csv(tmp_path / "cmp" / "comparison.csv")
    assert list(table["strategy"]) == ["fomaml", "maml", "reptile"]
    assert (table["iterations"] == 3).all()
    runs = pd.read_csv(tmp_path / "cmp" / "runs.csv")
    assert len(runs) == 6 and set(runs["seed"]) == {0, 1}
    assert {"diff_vs_maml", "diff_vs_maml_ci95", "diff_vs_reptile"} <= set(table.columns)
    # the paired difference is the difference of the means over the same episodes
    assert table.loc[0, "diff_vs_maml"] == pytest.approx(table.loc[0, "test_accuracy"] - table.loc[1, "test_accuracy"])
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "same budget (3 meta-iterations)" in md and "paper settings" in md
    assert (tmp_path / "cmp" / "comparison.html").stat().st_size > 100_000


def test_multi_objective_study_exports_its_pareto_front(tmp_path: Path, omniglot: Path) -> None:
    study = make_study(tmp_path, name="pareto", n_trials=3)
    text = study.read_text().replace("pruner: {name: median, n_startup_trials: 1}", "pruner: {name: none}")
    study.write_text(text.replace("sampler: {name: tpe", "objectives: [dev_loss, parameters]\nsampler: {name: nsga2"))
    storage = f"journal:{tmp_path / 'pareto.journal'}"
    summary = summarize(search(study, storage=storage, device="cpu", data=omniglot))
    assert summary["trials"] == 3 and summary["pareto_front"]
    result = export_study("pareto", storage, tmp_path / "out")
    pareto = sorted((tmp_path / "out" / "pareto").glob("trial-*.yaml"))
    assert len(pareto) == len(result["best_trials"]) >= 1
    table = pd.read_csv(tmp_path / "out" / "trials.csv")
    assert {"dev_loss", "parameters"} <= set(table.columns)
    assert "Pareto front" in (tmp_path / "out" / "report.html").read_text()
