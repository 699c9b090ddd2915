"""nas-meta finalize: retrain a study's best trials at a full budget, choose by dev loss, compare with the baselines."""

from __future__ import annotations

import subprocess
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState, create_trial

from nas_meta.config import load_train_config
from nas_meta.errors import ConfigError
from nas_meta.finalize import check_finalize_target, finalize, top_trials
from nas_meta.studies import TrialAttr
from tests.conftest import nas_meta_cli, snapshot
from tests.helpers_study import make_study, search_command

CONFIG = "name: cand\ntask: {ways: 5, shots: 1, query: 2}\n"


def study_with(values: list[float | None], storage: str | None = None, name: str = "s") -> optuna.Study:
    """A study whose trials have these dev losses (None: a failed trial), each with a recorded training config."""
    study = optuna.create_study(study_name=name, storage=storage)
    for value in values:
        state = TrialState.COMPLETE if value is not None else TrialState.FAIL
        study.add_trial(create_trial(value=value, state=state, user_attrs={TrialAttr.CONFIG: CONFIG}))
    return study


def test_top_trials_are_the_completed_ones_with_the_lowest_dev_loss_best_first() -> None:
    study = study_with([0.9, None, 0.3, 0.5, 0.3, 1.2])
    assert [t.number for t in top_trials(study, 3)] == [2, 4, 3]  # ties keep trial order; failed trials never
    assert [t.number for t in top_trials(study, 100)] == [2, 4, 3, 0, 5]
    with pytest.raises(ConfigError, match="'empty' has no completed trial to finalize"):
        top_trials(study_with([None, None], name="empty"), 2)


def test_out_must_be_new_empty_or_an_earlier_finalize(tmp_path: Path) -> None:
    check_finalize_target(tmp_path / "new")
    earlier = tmp_path / "earlier"
    (earlier / "candidates").mkdir(parents=True)
    (earlier / "compare").mkdir()
    (earlier / "selection.csv").write_text("trial\n")
    check_finalize_target(earlier)
    (earlier / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="notes.txt"):
        check_finalize_target(earlier)


def test_a_compare_folder_holding_other_files_is_refused_before_any_retraining(tmp_path: Path) -> None:
    """(It used to be found by compare, after top_k x seeds runs at the full budget.)"""
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study_with([0.4, 0.2], storage=storage)
    (tmp_path / "out" / "compare").mkdir(parents=True)
    (tmp_path / "out" / "compare" / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    with pytest.raises(ConfigError, match=r"holds files that are not a comparison \(notes.txt\)"):
        finalize("s", storage, tmp_path / "out", budget_seconds=1e9)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(("options", "message"), [
    ({"budget_seconds": 0}, "budget_seconds=0 is not allowed: expected a number of seconds in (0, 10^9]."),
    ({"budget_seconds": float("nan")}, "budget_seconds=nan is not allowed"),
    ({"budget_seconds": 5, "top_k": 0}, "top_k=0 is not allowed: expected an integer in [1, 1000]."),
    ({"budget_seconds": 5, "seeds": True}, "seeds=True is not allowed"),
    ({"budget_seconds": 5, "baselines": "maml"}, "baselines='maml' is not allowed"),
    ({"budget_seconds": 5, "baselines": ["nope"]}, "--baselines: 'nope' has no config"),  # found before any training
])
def test_bad_arguments_are_named_before_any_work(tmp_path: Path, options: dict[str, object], message: str) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study_with([0.4, 0.2], storage=storage)
    before = snapshot(tmp_path)
    with pytest.raises(ConfigError) as info:
        finalize("s", storage, tmp_path / "out", **options)  # type: ignore[arg-type]
    assert message in str(info.value)
    assert snapshot(tmp_path) == before  # nothing written, no run started


def test_an_unknown_study_lists_the_studies_there(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study_with([0.4], storage=storage)
    with pytest.raises(ConfigError, match=r"--study-name 'other': no such study .* studies there: \['s'\]"):
        finalize("other", storage, tmp_path / "out", budget_seconds=5)


@pytest.mark.slow
def test_finalize_retrains_the_best_trials_chooses_by_dev_loss_and_compares(tmp_path: Path, omniglot: Path) -> None:
    study = make_study(tmp_path / "study", n_trials=3, iterations=4)
    storage = f"journal:{tmp_path / 'study.journal'}"
    searched = subprocess.run(search_command(study, storage, omniglot), capture_output=True, text=True, timeout=900)
    assert searched.returncode == 0, searched.stderr[-2000:]
    done = nas_meta_cli("-q", "finalize", str(study), "--storage", storage, "--top-k", "2", "--budget-seconds", "1.5",
                        "--seeds", "2", "--episodes", "10", "--out", str(tmp_path / "fin"), "--data", str(omniglot),
                        "--device", "cpu", timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = optuna.load_study(study_name="tiny", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "study.journal"))))
    best_two = [t.number for t in sorted((t for t in loaded.trials if t.state == TrialState.COMPLETE),
                                        key=lambda t: (t.value, t.number))[:2]]
    selection = pd.read_csv(tmp_path / "fin" / "selection.csv")
    assert sorted(set(selection["trial"])) == sorted(best_two) and len(selection) == 4  # 2 trials x 2 seeds
    assert (selection["train_seconds"] >= 1.5).all() and (selection["status"] == "time_budget").all()
    means = selection.groupby("trial")["dev_loss"].mean()
    chosen = int(selection.loc[selection["chosen"], "trial"].iloc[0])
    assert chosen == int(means.idxmin()) and selection["chosen"].sum() == 2
    for trial in best_two:
        for seed in (0, 1):
            assert (tmp_path / "fin" / "candidates" / f"trial-{trial}" / f"seed-{seed}" / "config.yaml").is_file()
    table = pd.read_csv(tmp_path / "fin" / "compare" / "comparison.csv")
    assert list(table["strategy"])[1:] == ["maml", "reptile"] and (table["stopped_by"] == "seconds").all()
    chosen_config = load_train_config(tmp_path / "fin" / "candidates" / f"trial-{chosen}" / "seed-0" / "config.yaml")
    assert table["strategy"].iloc[0] == chosen_config.learner.strategy  # the chosen config is the candidate
    md = (tmp_path / "fin" / "finalize.md").read_text()
    assert "Ranking:" in md and f"| {chosen} |" in md and "vs maml:" in md
    assert done.stdout.strip() == md.strip()  # the command prints the report it wrote
