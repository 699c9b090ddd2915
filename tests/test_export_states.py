"""Export of a study with complete, pruned, failed and still-running trials, built without training (fast)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from nas_meta.config import apply_overrides, dump_yaml, load_study_spec, load_train_config
from nas_meta.export import export_study
from nas_meta.storage import open_storage
from tests.conftest import REPO


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
