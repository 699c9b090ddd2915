"""Study exports: a study in every trial state built without training (fast), a real tiny study (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from nas_meta.config import apply_overrides, dump_yaml, load_study_spec, load_train_config
from nas_meta.errors import ConfigError
from nas_meta.export import export_study
from nas_meta.search import search
from nas_meta.storage import open_storage
from nas_meta.studies import summarize
from tests.conftest import REPO
from tests.helpers_study import make_study


def test_export_of_a_running_study_with_failed_and_pruned_trials(tmp_path: Path) -> None:
    storage = f"journal:{tmp_path / 's.journal'}"
    study = optuna.create_study(study_name="mixed", storage=open_storage(storage).storage)
    study.set_user_attr("study_file", (REPO / "studies" / "smoke.yaml").read_text())
    study.set_user_attr("search_space", (REPO / "search_spaces" / "lr-init.yaml").read_text())
    study.set_user_attr("protocol", "maml")
    dists = {"learner.strategy": CategoricalDistribution(["maml", "fomaml", "reptile", "metasgd", "pretrain", "random"]),
             "learner.inner_lr": FloatDistribution(0.01, 1.0, log=True)}
    base = load_study_spec(REPO / "studies" / "smoke.yaml").base_config()
    rows = [(TrialState.COMPLETE, 0.9, "maml", 0.3), (TrialState.COMPLETE, 0.5, "fomaml", 0.2),
            (TrialState.PRUNED, None, "maml", 0.9), (TrialState.FAIL, None, "fomaml", 0.7)]
    for state, value, strategy, lr in rows:
        study.add_trial(create_trial(state=state, value=value, params={"learner.strategy": strategy,
                                     "learner.inner_lr": lr}, distributions=dists,
                                     user_attrs={"strategy": strategy, "dev_accuracy": 0.8 if value else None,
                                                 "reason": "" if value else "stopped", "config": dump_yaml(
                                                     apply_overrides(base, {"learner.strategy": strategy,
                                                                            "learner.inner_lr": lr}).to_dict())}))
    study.ask({"learner.strategy": dists["learner.strategy"]})  # a trial still RUNNING
    result = export_study("mixed", storage, tmp_path / "out")
    table = pd.read_csv(tmp_path / "out" / "trials.csv")
    assert list(table["state"]) == ["COMPLETE", "COMPLETE", "PRUNED", "FAIL", "RUNNING"]
    assert result["best_trials"] == [1]
    best = load_train_config(tmp_path / "out" / "best.yaml")
    assert best.learner.strategy == "fomaml" and best.learner.inner_lr == 0.2 and best.budget.iterations == 25
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "trial 1 (fomaml): dev_loss 0.5000" in summary and "RUNNING: 1" in summary


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, omniglot: Path) -> str:
    folder = tmp_path_factory.mktemp("export")
    storage = f"journal:{folder / 'runs' / 'tiny.journal'}"
    search(make_study(folder, n_trials=5), storage=storage, device="cpu", data=omniglot)
    return storage


@pytest.mark.slow
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


@pytest.mark.slow
def test_best_yaml_trains_unchanged(study: str, tmp_path: Path, omniglot: Path) -> None:
    export_study("tiny", study, tmp_path / "out")
    done = subprocess.run([sys.executable, "-m", "nas_meta.cli", "train", str(tmp_path / "out" / "best.yaml"), "--out",
                           str(tmp_path / "l"), "--data", str(omniglot)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["iterations"] == 8


@pytest.mark.slow
def test_unknown_study_lists_the_existing_ones(study: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        export_study("tiyn", study, tmp_path / "o")
    assert "--study-name 'tiyn': no such study in" in str(info.value) and "['tiny']" in str(info.value)
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
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
