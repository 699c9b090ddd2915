"""Bad input against an existing study: a clear message, and the study's storage is left byte for byte (slow)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas_meta.storage import open_storage
from tests.helpers_study import make_study, run, search_command, worker_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def existing(tmp_path_factory: pytest.TempPathFactory, omniglot: Path) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("bad")
    study = make_study(folder, n_trials=2)
    journal = folder / "runs" / "tiny.journal"
    done = run(search_command(study, f"journal:{journal}", omniglot), env=worker_env())
    assert done.returncode == 0, done.stderr[-2000:]
    return study, journal


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("study.yaml", "sampler: {name: tpe", "sampler: {name: tpee"),
         "sampler.name='tpee' is not one of ['cmaes', 'gp', 'nsga2', 'random', 'tpe']."),
        (("study.yaml", "task: {ways: 5", "task: {ways: 500"),
         "task.ways=500 is not allowed: expected at most 100, the classes of the 'maml' protocol's dev split."),
        (("study.yaml", "query: 2}", "query: 20}"), "task.shots + task.query=21 is not allowed"),
        (("space.yaml", "choices: [4, 5]", "choices: []"), "parameters[9].choices=() is not allowed: expected a non-empty list."),
        (("space.yaml", "low: 0.05, high: 0.8", "low: 0.0, high: 0.8"),
         "parameters[1].low=0.0 is not allowed: expected > 0 with log: true"),
        (("space.yaml", "choices: [maml, fomaml, reptile]", "choices: [maml, fomaml, reptlie]"),
         "'reptlie' is not a valid value: learner.strategy='reptlie' is not one of"),
        (("study.yaml", "seed: 1", "seed: 1\nextra_field: 3"), "extra_field is not a known field"),
        (("study.yaml", "pruner: {name: median", "pruner: {name: medain"), "pruner.name='medain' is not one of"),
    ],
)
def test_bad_study_input_leaves_the_study_untouched(existing: tuple[Path, Path], tmp_path: Path, omniglot: Path,
                                                    edit: tuple[str, str, str], message: str) -> None:
    study, journal = existing
    before = journal.read_bytes()
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("study.yaml", "space.yaml"):
        (copy / name).write_text((study.parent / name).read_text())
    os.symlink(study.parent / "baselines", copy / "baselines")
    target, old, new = edit
    text = (copy / target).read_text()
    assert old in text
    (copy / target).write_text(text.replace(old, new, 1))
    done = run(search_command(copy / "study.yaml", f"journal:{journal}", omniglot, "--n-trials", "5"))
    assert done.returncode == 2
    assert message in done.stderr and str(copy / target) in done.stderr
    assert "Traceback" not in done.stderr
    assert journal.read_bytes() == before


def test_force_resumes_a_study_with_a_changed_file(existing: tuple[Path, Path], tmp_path: Path, omniglot: Path) -> None:
    study, journal = existing
    copy = tmp_path / "forced"
    copy.mkdir()
    (copy / "space.yaml").write_text((study.parent / "space.yaml").read_text())
    os.symlink(study.parent / "baselines", copy / "baselines")
    (copy / "study.yaml").write_text(study.read_text().replace("dev_episodes: 12", "dev_episodes: 10"))
    refused = run(search_command(copy / "study.yaml", f"journal:{journal}", omniglot, "--n-trials", "3"))
    assert refused.returncode == 2 and "-evaluation: {dev_episodes: 12" in refused.stderr
    forced = run(search_command(copy / "study.yaml", f"journal:{journal}", omniglot, "--n-trials", "3", "--force"),
                 env=worker_env())
    assert forced.returncode == 0, forced.stderr[-2000:]
    trials = optuna.load_study(study_name="tiny", storage=open_storage(f"journal:{journal}").storage).trials
    assert len(trials) == 3


def test_ctrl_c_stops_cleanly_and_leaves_no_running_trial(tmp_path: Path, omniglot: Path) -> None:
    # a budget no trial finishes within the test, so Ctrl-C always lands in the middle of a trial, never
    # after the search has ended (a tiny 200-iteration study could finish before the signal arrived)
    study = make_study(tmp_path, iterations=1_000_000, every=50, n_trials=3)
    journal = tmp_path / "runs" / "tiny.journal"
    proc = subprocess.Popen(search_command(study, f"journal:{journal}", omniglot), env=worker_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if journal.exists():
            try:
                trials = optuna.load_study(study_name="tiny", storage=open_storage(f"journal:{journal}").storage).trials
                if any(t.state == TrialState.RUNNING for t in trials):
                    break
            except KeyError:
                pass
        time.sleep(0.3)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err[-3000:]
    trials = optuna.load_study(study_name="tiny", storage=open_storage(f"journal:{journal}").storage).trials
    assert trials and all(t.state != TrialState.RUNNING for t in trials)
    interrupted = [t for t in trials if t.state == TrialState.FAIL]
    assert len(interrupted) == 1 and "interrupted" in interrupted[0].user_attrs["reason"]
    queued = [t for t in trials if t.state == TrialState.WAITING and "retry_of" in t.user_attrs]
    assert len(queued) == 1 and queued[0].user_attrs["retry_of"] == interrupted[0].number
