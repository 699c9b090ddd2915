"""Reading studies: a trial's recorded config, picking a trial, summaries, log lines, a trial's saved learner (fast)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.artifacts import upload_artifact
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

import nas_meta.studies as studies_module
from nas_meta.checkpoint import save_learner
from nas_meta.config import dump_yaml
from nas_meta.errors import CheckpointError, ConfigError
from nas_meta.inference import load_learner_folder
from nas_meta.learners import get_learner
from nas_meta.storage import artifact_store, open_storage
from nas_meta.studies import (
    StudyAttr,
    TrialAttr,
    counted_trials,
    fetch_trial_learner,
    pick_trial,
    summarize,
    trial_config,
    trial_line,
)
from tests.conftest import snapshot
from tests.learners.helpers import tiny_config

STRATEGY = {"learner.strategy": CategoricalDistribution(["maml", "fomaml", "reptile"])}


def new_study(tmp_path: Path, name: str = "s", directions: list[str] | None = None) -> tuple[str, optuna.Study]:
    url = f"journal:{tmp_path / 's.journal'}"
    study = optuna.create_study(study_name=name, storage=open_storage(url).storage, directions=directions)
    return url, study


def add(study: optuna.Study, state: TrialState = TrialState.COMPLETE, value: float | list[float] | None = None,
        strategy: str | None = "maml", **attrs: Any) -> None:
    values = value if isinstance(value, list) else None
    user_attrs = {TrialAttr.STRATEGY: strategy, **attrs} if strategy else attrs
    study.add_trial(create_trial(state=state, value=None if values else value, values=values,
                                 params={"learner.strategy": strategy or "maml"}, distributions=STRATEGY,
                                 user_attrs=user_attrs))


def test_trial_config_reads_the_recorded_yaml(tmp_path: Path) -> None:
    _, study = new_study(tmp_path)
    config = tiny_config("reptile", inner_lr=0.01, inner_optimizer="adam")
    add(study, value=0.5, strategy="reptile", config=dump_yaml(config.to_dict()))
    assert trial_config(study, study.trials[0]) == config


def test_trial_config_refuses_a_trial_without_one(tmp_path: Path) -> None:
    _, study = new_study(tmp_path)
    add(study, value=0.5)
    with pytest.raises(ConfigError) as info:
        trial_config(study, study.trials[0])
    assert str(info.value) == ("trial 0 of study 's' has no recorded training config; "
                               "it was not run by this version of nas-meta search.")


def test_trial_config_refuses_a_recorded_config_that_is_not_valid(tmp_path: Path) -> None:
    _, study = new_study(tmp_path)
    add(study, value=0.5, config="learner: {strategy: mamll}\n")
    with pytest.raises(ConfigError, match=r"learner.strategy='mamll' is not one of \['fomaml', 'maml'"):
        trial_config(study, study.trials[0])


def test_pick_trial_best_by_number_and_unknown(tmp_path: Path) -> None:
    _, study = new_study(tmp_path)
    add(study, value=0.9)
    add(study, value=0.5, strategy="fomaml")
    add(study, TrialState.PRUNED, strategy="reptile")
    assert pick_trial(study, None).number == 1  # lowest dev loss
    assert pick_trial(study, 2).state == TrialState.PRUNED
    assert pick_trial(study, 0).value == 0.9
    with pytest.raises(ConfigError) as info:
        pick_trial(study, 7)
    assert str(info.value) == "trial 7 is not in study 's' (trials 0..2)."


def test_pick_trial_needs_a_number_in_a_multi_objective_study(tmp_path: Path) -> None:
    _, study = new_study(tmp_path, "m", ["minimize", "minimize"])
    add(study, value=[0.5, 2000.0])
    add(study, value=[0.9, 100.0])
    add(study, value=[1.0, 3000.0])  # dominated by trial 0
    with pytest.raises(ConfigError) as info:
        pick_trial(study, None)
    assert str(info.value) == "study 'm' is multi-objective: name a trial of its Pareto front [0, 1]."
    assert pick_trial(study, 2).values == [1.0, 3000.0]


def test_pick_trial_without_a_completed_trial(tmp_path: Path) -> None:
    _, study = new_study(tmp_path)
    add(study, TrialState.PRUNED)
    add(study, TrialState.FAIL)
    with pytest.raises(ConfigError) as info:
        pick_trial(study, None)
    assert str(info.value) == "study 's' has no completed trial yet."


def test_summarize_best_baselines_and_states(tmp_path: Path) -> None:
    _, study = new_study(tmp_path)
    add(study, value=0.9, baseline="maml", dev_accuracy=0.6)
    add(study, value=0.5, strategy="fomaml", dev_accuracy=0.8)
    add(study, TrialState.PRUNED, strategy="reptile", baseline="reptile")
    add(study, TrialState.FAIL, baseline="maml-again")  # not finished: not listed among the baselines
    study.ask()  # still running
    summary = summarize(study)
    assert summary["study"] == "s" and summary["trials"] == 5
    assert summary["states"] == {"COMPLETE": 2, "PRUNED": 1, "FAIL": 1, "RUNNING": 1}
    assert summary["best"] == {"number": 1, "dev_loss": 0.5, "dev_accuracy": 0.8, "strategy": "fomaml",
                               "params": {"learner.strategy": "fomaml"}}
    assert summary["baselines"] == {
        "maml": {"number": 0, "state": "COMPLETE", "dev_loss": 0.9, "dev_accuracy": 0.6},
        "reptile": {"number": 2, "state": "PRUNED", "dev_loss": None, "dev_accuracy": None},
    }
    assert "pareto_front" not in summary


def test_summarize_multi_objective_and_empty_studies(tmp_path: Path) -> None:
    _, study = new_study(tmp_path, "m", ["minimize", "minimize"])
    assert summarize(study) == {"study": "m", "trials": 0, "states": {}, "baselines": {}}
    add(study, value=[0.5, 2000.0])
    add(study, value=[0.9, 100.0], strategy="reptile")
    add(study, value=[1.0, 3000.0])
    summary = summarize(study)
    assert "best" not in summary
    assert sorted((p["number"], p["strategy"]) for p in summary["pareto_front"]) == [(0, "maml"), (1, "reptile")]
    assert [p["values"] for p in sorted(summary["pareto_front"], key=lambda p: p["number"])] == [[0.5, 2000.0],
                                                                                                 [0.9, 100.0]]


def test_trial_line_for_each_kind_of_trial(tmp_path: Path) -> None:
    _, study = new_study(tmp_path)
    add(study, value=0.51234, baseline="maml", dev_accuracy=0.8, reason="not shown for a complete trial")
    add(study, TrialState.PRUNED, strategy="reptile", reason="pruned at step 4")
    add(study, TrialState.FAIL, strategy=None, reason="the meta-training loss became nan at iteration 3")
    add(study, value=0.25, dev_accuracy=1)  # an integer accuracy is not formatted as one
    lines = [trial_line(t) for t in study.trials]
    assert lines == [
        "trial 0 COMPLETE value=0.5123 dev_acc=0.8000 strategy=maml [maml baseline]",
        "trial 1 PRUNED value=- strategy=reptile (pruned at step 4)",
        "trial 2 FAIL value=- strategy=? (the meta-training loss became nan at iteration 3)",
        "trial 3 COMPLETE value=0.2500 strategy=maml",
    ]
    _, multi = new_study(tmp_path / "m", "m", ["minimize", "minimize"])
    add(multi, value=[0.5, 1234.0])
    assert trial_line(multi.trials[0]) == "trial 0 COMPLETE value=0.5000, 1234.0000 strategy=maml"


def test_counted_trials_skip_failed_trials_that_were_rerun(tmp_path: Path) -> None:
    _, study = new_study(tmp_path)
    add(study, TrialState.FAIL)  # 0: re-run by trial 1
    add(study, value=0.5, retry_of=0)  # 1
    add(study, TrialState.FAIL)  # 2: re-run by Optuna's heartbeat retry (trial 3)
    study.add_trial(create_trial(state=TrialState.PRUNED, system_attrs={"retry_history": [2]}))  # 3
    add(study, TrialState.FAIL)  # 4: failed for good, counts
    study.ask()  # 5: running, counts
    study.enqueue_trial({"learner.strategy": "maml"})  # 6: waiting, does not count yet
    assert counted_trials(study) == 4


def saved_learner(folder: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    config = tiny_config("maml")
    learner = get_learner(config, 10)
    learner.init_params(torch.Generator().manual_seed(5))
    state = {k: v.clone() for k, v in learner.state_dict().items()}
    return save_learner(folder, config, state, {"label_space": 10, "status": "completed"}), state


def study_with_saved_learner(tmp_path: Path) -> tuple[str, optuna.Study, Path, dict[str, torch.Tensor]]:
    url, study = new_study(tmp_path)
    folder, state = saved_learner(tmp_path / "learner")
    archive = shutil.make_archive(str(tmp_path / "trial-1"), "zip", folder)  # as the objective keeps it
    artifacts = tmp_path / "artifacts"
    artifact_id = upload_artifact(artifact_store=artifact_store(artifacts), file_path=archive, study_or_trial=study)
    add(study, TrialState.PRUNED, reason="pruned at step 4")
    add(study, value=0.5, artifact_id=artifact_id)
    return url, study, artifacts, state


def test_fetch_trial_learner_round_trip_through_the_artifact_store(tmp_path: Path) -> None:
    url, study, artifacts, state = study_with_saved_learner(tmp_path)
    study.set_user_attr(StudyAttr.ARTIFACTS_DIR, str(artifacts))
    path = fetch_trial_learner(url, "s")  # the best trial, from the folder recorded on the study
    assert path == artifacts / "learners" / "trial-1"
    loaded = load_learner_folder(path).learner.state_dict()
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
    assert [p.name for p in artifacts.iterdir() if p.is_dir()] == ["learners"]  # no temporary folder left
    for artifact in [p for p in artifacts.iterdir() if p.is_file()]:
        artifact.unlink()
    assert fetch_trial_learner(url, "s", 1) == path  # unpacked once: later calls read the folder


def test_fetch_trial_learner_from_a_read_only_study_unpacks_into_the_users_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A study shared read-only (another user's artifacts): nothing is written there (it used to fail with a
    PermissionError traceback); the learner is unpacked once into this user's cache."""
    url, study, artifacts, state = study_with_saved_learner(tmp_path)
    study.set_user_attr(StudyAttr.ARTIFACTS_DIR, str(artifacts))
    monkeypatch.setenv("NAS_META_CACHE", str(tmp_path / "cache"))
    real_access = os.access
    monkeypatch.setattr(studies_module.os, "access",
                        lambda path, mode: False if str(path).startswith(str(artifacts)) else real_access(path, mode))
    before = snapshot(artifacts)
    path = fetch_trial_learner(url, "s")
    assert path.parent == tmp_path / "cache" / "learners"
    loaded = load_learner_folder(path).learner.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    assert snapshot(artifacts) == before
    assert fetch_trial_learner(url, "s") == path and sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_fetch_trial_learner_says_so_when_neither_the_study_nor_the_cache_can_be_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url, study, artifacts, _ = study_with_saved_learner(tmp_path)
    study.set_user_attr(StudyAttr.ARTIFACTS_DIR, str(artifacts))
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("NAS_META_CACHE", str(tmp_path / "file" / "cache"))  # below a file: cannot be made
    real_access = os.access
    monkeypatch.setattr(studies_module.os, "access",
                        lambda path, mode: False if str(path).startswith(str(artifacts)) else real_access(path, mode))
    with pytest.raises(CheckpointError) as info:
        fetch_trial_learner(url, "s")
    assert str(info.value).startswith(f"trial 1 of 's': its learner cannot be unpacked: the artifact folder "
                                      f"{artifacts} is read-only and the cache folder {tmp_path / 'file' / 'cache'}")
    assert "set NAS_META_CACHE to a folder you can write" in str(info.value)
    monkeypatch.setenv("NAS_META_CACHE", str(tmp_path / "cache"))  # a cache folder that exists, but ...
    (tmp_path / "cache" / "learners").mkdir(parents=True)
    monkeypatch.setattr(studies_module.tempfile, "TemporaryDirectory", _refused)  # ... cannot be written
    with pytest.raises(CheckpointError) as info:
        fetch_trial_learner(url, "s")
    assert str(info.value) == (f"trial 1 of 's': its learner cannot be unpacked into {tmp_path / 'cache' / 'learners'} "
                               "(Permission denied); set NAS_META_CACHE to a folder you can write.")


def _refused(*args: Any, **kwargs: Any) -> Any:
    raise PermissionError(13, "Permission denied")


def test_two_processes_unpacking_one_learner_both_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two ``load_learner`` of one trial at once (a SLURM array): the second's rename meets the first's folder
    (ENOTEMPTY); it uses that one instead of failing."""
    url, study, artifacts, state = study_with_saved_learner(tmp_path)
    study.set_user_attr(StudyAttr.ARTIFACTS_DIR, str(artifacts))
    real_replace = os.replace

    def first_one_wins(src: str, dst: str) -> None:
        real_replace(src, dst)  # the other process's copy lands first ...
        shutil.copytree(dst, src)
        real_replace(src, dst)  # ... then this one's rename fails: the folder is not empty

    monkeypatch.setattr(studies_module.os, "replace", first_one_wins)
    path = fetch_trial_learner(url, "s")
    monkeypatch.undo()
    loaded = load_learner_folder(path).learner.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_fetch_trial_learner_from_a_given_artifact_folder(tmp_path: Path) -> None:
    url, _, artifacts, state = study_with_saved_learner(tmp_path)  # no folder recorded on the study
    path = fetch_trial_learner(url, "s", 1, artifacts=artifacts)
    assert path == artifacts / "learners" / "trial-1"
    assert torch.equal(load_learner_folder(path).learner.state_dict()["network.head.bias"], state["network.head.bias"])


def test_fetch_trial_learner_refuses_a_trial_without_saved_weights(tmp_path: Path) -> None:
    url, _, artifacts, _ = study_with_saved_learner(tmp_path)
    with pytest.raises(ConfigError) as info:
        fetch_trial_learner(url, "s", 0, artifacts=artifacts)
    assert str(info.value) == ("trial 0 of 's' (PRUNED) has no saved learner; only completed trials keep their weights.")
    assert not (artifacts / "learners").exists()
    with pytest.raises(ConfigError, match=r"--study-name 'x': no such study in journal:.*; studies there: \['s'\]"):
        fetch_trial_learner(url, "x")


def test_fetch_trial_learner_names_a_missing_artifact_folder(tmp_path: Path) -> None:
    url, _, _, _ = study_with_saved_learner(tmp_path)
    with pytest.raises(ConfigError) as info:
        fetch_trial_learner(url, "s", 1, artifacts=tmp_path / "moved")
    assert str(info.value).startswith(f"study 's': its artifact folder is not at {[str(tmp_path / 'moved')]}")
    assert not (tmp_path / "moved").exists()
