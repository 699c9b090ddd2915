"""Study exports: a study in every trial state built without training (fast), a real tiny study (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

import nas_meta.export as export_module
from nas_meta.api import load_learner
from nas_meta.config import apply_overrides, dump_yaml, load_study_spec, load_train_config
from nas_meta.errors import ConfigError, StorageError
from nas_meta.export import export_study
from nas_meta.search import search
from nas_meta.storage import open_storage
from nas_meta.studies import summarize
from tests.conftest import REPO, snapshot
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
    assert sorted(p.name for p in out.iterdir()) == ["best", "best.yaml", "report.html", "summary.md", "trials.csv",
                                                     "trials.parquet"]
    assert "best" in result["files"]
    table = pd.read_csv(out / "trials.csv")
    assert list(table["number"]) == [0, 1, 2, 3, 4] and set(table["state"]) <= {"COMPLETE", "PRUNED"}
    assert {"dev_loss", "dev_accuracy", "dev_accuracy_ci95", "parameters", "strategy", "params.learner.strategy",
            "duration_s", "reason"} <= set(table.columns)
    assert pd.read_parquet(out / "trials.parquet").shape == table.shape
    complete = table[table["state"] == "COMPLETE"]
    best = load_train_config(out / "best.yaml")
    assert best.learner.strategy == complete.loc[complete["dev_loss"].idxmin(), "strategy"]
    assert best.architecture.channels == 16 and best.budget.iterations == 8
    learner = load_learner(out / "best")  # the best learner itself, loadable without retraining
    assert learner.config.learner == best.learner and learner.metrics["dev_loss"] == complete["dev_loss"].min()
    report = (out / "report.html").read_text()
    assert report.count("<h2>") >= 4 and "Optimization history" in report and "plotly" in report
    summary = (out / "summary.md").read_text()
    assert "## Best trial" in summary and f"## Top {len(complete)} complete trials, by dev_loss" in summary
    assert result["best_trials"] == [int(complete.loc[complete["dev_loss"].idxmin(), "number"])]


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


# -- where `export --out` may write: refused targets are left byte for byte, an earlier export is replaced -----------



HEADER = ("number,state,dev_loss,datetime_start,duration_s,strategy,baseline,dev_accuracy,dev_accuracy_ci95,parameters,"
          "adaptation_latency_ms,iterations,train_seconds,device,status,reason\n")


def quick_study(tmp_path: Path, name: str = "quick", values: tuple[float, ...] = (0.7, 0.4)) -> str:
    """A journal holding study ``name`` with completed trials (no training) and an empty study 'empty'."""
    storage = f"journal:{tmp_path / 'studies.journal'}"
    handle = open_storage(storage)
    study = optuna.create_study(study_name=name, storage=handle.storage, load_if_exists=True)
    study.set_user_attr("study_file", (REPO / "studies" / "smoke.yaml").read_text())
    study.set_user_attr("search_space", (REPO / "search_spaces" / "lr-init.yaml").read_text())
    base = load_study_spec(REPO / "studies" / "smoke.yaml").base_config()
    dist = {"learner.inner_lr": FloatDistribution(0.01, 1.0, log=True)}
    for value in values:
        lr = round(value / 2, 3)
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=value, params={"learner.inner_lr": lr},
                                     distributions=dist, user_attrs={"strategy": "maml", "dev_accuracy": 1 - value,
                                     "config": dump_yaml(apply_overrides(base, {"learner.inner_lr": lr}).to_dict())}))
    if "empty" not in [s.study_name for s in optuna.get_all_study_summaries(handle.storage)]:
        optuna.create_study(study_name="empty", storage=handle.storage)
    return storage


def _file(tmp: Path) -> Path:
    (tmp / "report.pdf").write_bytes(b"%PDF my report")
    return tmp / "report.pdf"


def _folder_with(*names: str) -> Any:
    def make(tmp: Path) -> Path:
        folder = tmp / "out"
        folder.mkdir()
        for name in names:
            (folder / name).write_text(f"kept {name}")
        return folder
    return make


NOT_EXPORT = "; give a new or empty folder, or an earlier export to replace."


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(_file, "--out {out!r} is a file; give a folder for the export.", id="a-file"),
        pytest.param(_folder_with("notes.txt"), "--out {out!r} holds files that are not an export (notes.txt)"
                     + NOT_EXPORT, id="a-folder-with-a-file"),
        pytest.param(_folder_with("trials.csv", "summary.md", "thesis.tex"),
                     "--out {out!r} holds files that are not an export (thesis.tex)" + NOT_EXPORT,
                     id="an-export-with-a-foreign-file"),
        pytest.param(_folder_with("config.yaml", "metrics.json", "weights.safetensors"),
                     "--out {out!r} holds files that are not an export (config.yaml, metrics.json, weights.safetensors)"
                     + NOT_EXPORT, id="a-learner-folder"),
        pytest.param(_folder_with(*[f"f{i}.txt" for i in range(6)]),
                     "--out {out!r} holds files that are not an export (f0.txt, f1.txt, f2.txt, f3.txt, f4.txt, …)"
                     + NOT_EXPORT, id="many-files"),
    ],
)
def test_an_export_target_that_is_no_export_is_refused_untouched(tmp_path: Path, make: Any, message: str) -> None:
    storage = quick_study(tmp_path)
    out = make(tmp_path)
    before = snapshot(tmp_path)  # the target, the journal and the folder a staging copy would go in
    with pytest.raises(ConfigError) as info:
        export_study("quick", storage, out)
    assert str(info.value) == message.format(out=str(out))
    assert snapshot(tmp_path) == before


def test_an_unknown_study_or_storage_is_refused_and_writes_no_export(tmp_path: Path) -> None:
    storage = quick_study(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(ConfigError) as info:
        export_study("quik", storage, tmp_path / "out")
    assert str(info.value) == (f"--study-name 'quik': no such study in {storage}; studies there: ['empty', 'quick'].")
    with pytest.raises(ConfigError) as info:
        export_study("quick", "redis://:hunter2@h/0", tmp_path / "out")
    assert "hunter2" not in str(info.value) and str(info.value).startswith("--storage 'redis://:***@h/0': the scheme")
    assert snapshot(tmp_path) == before


def test_an_export_from_a_missing_journal_creates_nothing(tmp_path: Path) -> None:
    journal = tmp_path / "typo" / "studies.journal"
    with pytest.raises(StorageError) as info:
        export_study("quick", f"journal:{journal}", tmp_path / "out")
    assert str(info.value) == f"cannot open storage journal:{journal}: no such journal file."
    assert list(tmp_path.iterdir()) == []


def test_an_earlier_export_is_replaced(tmp_path: Path) -> None:
    storage = quick_study(tmp_path)
    out = tmp_path / "out"
    export_study("quick", storage, out)
    assert pd.read_csv(out / "trials.csv")["dev_loss"].tolist() == [0.7, 0.4]
    (out / ".notes").write_text("hidden files are kept")
    quick_study(tmp_path, values=(0.2,))  # one more trial, now the best
    result = export_study("quick", storage, out)
    assert result["trials"] == 3 and result["best_trials"] == [2]
    assert pd.read_csv(out / "trials.csv")["dev_loss"].tolist() == [0.7, 0.4, 0.2]
    assert load_train_config(out / "best.yaml").learner.inner_lr == 0.1
    assert "trials: 3 (COMPLETE: 3)" in (out / "summary.md").read_text()
    assert sorted(p.name for p in out.iterdir()) == [".notes", "best.yaml", "report.html", "summary.md", "trials.csv",
                                                     "trials.parquet"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "studies.journal"]  # no staging folder left


def test_an_earlier_export_is_swapped_for_the_new_one_as_a_whole(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The new export takes the earlier one's place by renaming folders, not file by file: a crash between two
    files used to leave a trials table of one export beside the summary of another."""
    storage = quick_study(tmp_path)
    out = tmp_path / "out"
    export_study("quick", storage, out)
    quick_study(tmp_path, values=(0.2,))
    renamed_files: list[str] = []
    real_replace = os.replace
    monkeypatch.setattr(export_module.os, "replace",
                        lambda src, dst: (renamed_files.append(str(dst)), real_replace(src, dst)))
    export_study("quick", storage, out)
    assert [f for f in renamed_files if Path(f).parent == out] == []  # no file of out/ replaced one at a time
    assert pd.read_csv(out / "trials.csv")["dev_loss"].tolist() == [0.7, 0.4, 0.2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "studies.journal"]  # nothing left beside it


@pytest.mark.parametrize("inside", [False, True])
def test_a_swapped_export_keeps_the_folders_mode_and_the_working_folder(tmp_path: Path, inside: bool,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    storage = quick_study(tmp_path)
    out = tmp_path / "out"
    export_study("quick", storage, out)
    out.chmod(0o700)  # kept private
    if inside:  # the shell sits in the export folder: it is updated in place, not renamed away
        monkeypatch.chdir(out)
    inode = out.stat().st_ino
    quick_study(tmp_path, values=(0.2,))
    export_study("quick", storage, out)
    assert (out.stat().st_mode & 0o777) == 0o700
    assert (out.stat().st_ino == inode) is inside
    assert pd.read_csv(out / "trials.csv")["dev_loss"].tolist() == [0.7, 0.4, 0.2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "studies.journal"]


def test_a_study_without_trials_gives_a_valid_empty_export(tmp_path: Path) -> None:
    storage = quick_study(tmp_path)
    journal = (tmp_path / "studies.journal").read_bytes()
    result = export_study("empty", storage, tmp_path / "out")
    out = tmp_path / "out"
    assert result == {"study": "empty", "out": str(out), "trials": 0,
                      "files": ["trials.csv", "trials.parquet", "report.html", "summary.md"], "best_trials": []}
    assert (out / "trials.csv").read_text() == HEADER
    assert pd.read_csv(out / "trials.csv").empty and pd.read_parquet(out / "trials.parquet").empty
    assert (out / "summary.md").read_text().splitlines()[:5] == [
        "# Study `empty`", "", "- protocol: `?`; study file: `?`; nas-meta ?", "- objectives: dev_loss (minimised)",
        "- trials: 0 (none)"]
    report = (out / "report.html").read_text()
    assert "nas-meta study empty" in report and "0 trials (0 finished)" in report
    assert not (out / "best.yaml").exists() and not (out / "pareto").exists()
    assert (tmp_path / "studies.journal").read_bytes() == journal  # exporting reads the study, never writes it


def test_an_export_replacing_one_with_a_best_config_leaves_no_stale_best(tmp_path: Path) -> None:
    storage = quick_study(tmp_path)
    export_study("quick", storage, tmp_path / "out")
    export_study("empty", storage, tmp_path / "out")
    assert not (tmp_path / "out" / "best.yaml").exists()


def test_an_export_below_a_file_is_refused(tmp_path: Path) -> None:
    storage = quick_study(tmp_path)
    with pytest.raises(ConfigError):
        export_study("quick", storage, _file(tmp_path) / "out")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"out": 7}, "out=7 is not allowed: expected a folder path (str or pathlib.Path)."),
    ({"study_name": 123}, "study_name=123 is not allowed: expected a study's name (a string)."),
])
def test_export_names_a_bad_argument(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"study_name": "s", "storage": f"journal:{tmp_path / 'none.journal'}",
                                 "out": tmp_path / "out", **kwargs}
    with pytest.raises(ConfigError) as info:
        export_study(**arguments)
    assert str(info.value) == message and list(tmp_path.iterdir()) == []
