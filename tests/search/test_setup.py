"""nas_meta.search.setup: sampler/pruner registries, the study lock, opening a study (fast; real resume: slow)."""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, get_args

import optuna
import pytest

import nas_meta
from nas_meta.config import (
    BudgetConfig,
    EvalConfig,
    PrunerName,
    PrunerSpec,
    SamplerName,
    SamplerSpec,
    StudySpec,
    load_search_space,
)
from nas_meta.errors import ConfigError
from nas_meta.search import (
    PRUNERS,
    SAMPLERS,
    baseline_config,
    baseline_params,
    make_pruner,
    make_sampler,
    open_study,
    prepare,
    search,
    suggest_config,
)
from nas_meta.studies import StudyAttr, StudyText, TrialAttr, study_texts
from tests.conftest import REPO
from tests.helpers_study import SPACE as TINY_SPACE_YAML
from tests.helpers_study import make_study
from tests.search.helpers import copy_searched, finished_trial, journal_setup, searched_study

SPACE = load_search_space(REPO / "search_spaces" / "conv.yaml")
BASE = StudySpec(name="t", search_space="conv.yaml")
SAMPLER_CLASSES: dict[str, type[optuna.samplers.BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
    "cmaes": optuna.samplers.CmaEsSampler, "gp": optuna.samplers.GPSampler, "nsga2": optuna.samplers.NSGAIISampler,
}


def objective(trial: optuna.Trial) -> float:
    config = suggest_config(trial, SPACE, BASE.base_config())
    lr = config.learner.inner_lr
    return abs(config.architecture.blocks - 4) + abs(lr - 0.4)


def small_objective(trial: optuna.Trial) -> float:
    """Two dimensions: enough to see which points a sampler picks, cheap for a GP to model."""
    return (trial.suggest_float("x", 0.0, 1.0) - 0.3) ** 2 + trial.suggest_int("k", 1, 5)


def suggestions(spec: StudySpec, n_trials: int = 3) -> list[dict[str, Any]]:
    """The parameters the spec's sampler suggests for ``n_trials`` trials (past its 2 start-up trials)."""
    study = optuna.create_study(sampler=make_sampler(spec), directions=["minimize"] * len(spec.objectives))
    two = len(spec.objectives) == 2
    study.optimize(small_objective if not two else lambda t: (small_objective(t), 0.0), n_trials=n_trials)
    return [t.params for t in study.trials]


# -- registries ----------------------------------------------------------------------------------------

def test_the_registries_know_exactly_the_names_a_study_file_accepts() -> None:
    assert set(SAMPLERS) == set(get_args(SamplerName)) == set(SAMPLER_CLASSES)
    assert set(PRUNERS) == set(get_args(PrunerName))


@pytest.mark.parametrize("field", ["sampler", "pruner"])
def test_an_unknown_name_is_refused_naming_the_field_the_value_and_the_known_names(field: str) -> None:
    # the YAML loader refuses it first; build the spec directly to reach the registry's own check
    spec = dataclasses.replace(BASE, **{field: dataclasses.replace(getattr(BASE, field), name="bogus")})
    build, registry = (make_sampler, SAMPLERS) if field == "sampler" else (make_pruner, PRUNERS)
    with pytest.raises(ConfigError) as info:
        build(spec)  # type: ignore[operator]
    message = str(info.value)
    assert message.startswith(f"{field}.name='bogus' is not one of [")
    for name in registry:
        assert repr(name) in message


# -- samplers ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sampler", ["tpe", "random", "cmaes", "gp"])
def test_every_single_objective_sampler_drives_the_space(sampler: str) -> None:
    # 4 random start-up trials, then the sampler's own (one GP fit over the full space is the slow part)
    spec = dataclasses.replace(BASE, sampler=SamplerSpec(name=sampler, n_startup_trials=4))  # type: ignore[arg-type]
    built = make_sampler(spec)
    assert type(built) is SAMPLER_CLASSES[sampler]
    if sampler != "random":  # the random sampler has no start-up phase
        assert built._n_startup_trials == 4  # type: ignore[attr-defined]
    study = optuna.create_study(sampler=built)
    study.optimize(objective, n_trials=5)
    assert len(study.trials) == 5 and all(t.state.name == "COMPLETE" for t in study.trials)


def test_tpe_is_multivariate_grouped_and_lies_about_running_trials() -> None:
    tpe = make_sampler(dataclasses.replace(BASE, sampler=SamplerSpec(n_startup_trials=7)))
    assert type(tpe) is optuna.samplers.TPESampler
    assert tpe._n_startup_trials == 7  # type: ignore[attr-defined]
    assert tpe._multivariate and tpe._group and tpe._constant_liar  # type: ignore[attr-defined]


def test_nsga2_drives_a_two_objective_study() -> None:
    spec = dataclasses.replace(BASE, objectives=("dev_loss", "parameters"), sampler=SamplerSpec(name="nsga2"),
                               pruner=PrunerSpec(name="none"))
    sampler = make_sampler(spec)
    assert type(sampler) is optuna.samplers.NSGAIISampler
    study = optuna.create_study(sampler=sampler, directions=["minimize", "minimize"])
    study.optimize(lambda t: (objective(t), float(suggest_config(t, SPACE, BASE.base_config()).architecture.channels)),
                   n_trials=4)
    assert len(study.best_trials) >= 1
    assert all(len(t.values) == 2 for t in study.trials)


def test_seeded_sampler_repeats_its_suggestions() -> None:
    runs = []
    for _ in range(2):
        study = optuna.create_study(sampler=make_sampler(BASE))
        study.optimize(objective, n_trials=4)
        runs.append([t.params for t in study.trials])
    assert runs[0] == runs[1]


@pytest.mark.parametrize("sampler", ["tpe", "random", "cmaes", "gp", "nsga2"])
def test_the_sampler_seed_is_the_study_seed_unless_the_sampler_names_one(sampler: str) -> None:
    two = {"objectives": ("dev_loss", "parameters"), "pruner": PrunerSpec(name="none")} if sampler == "nsga2" else {}
    spec = dataclasses.replace(BASE, seed=3, sampler=SamplerSpec(name=sampler, n_startup_trials=2), **two)  # type: ignore[arg-type]
    first = suggestions(spec)
    assert suggestions(spec) == first
    named = dataclasses.replace(spec, seed=0, sampler=SamplerSpec(name=sampler, seed=3, n_startup_trials=2))  # type: ignore[arg-type]
    assert suggestions(named) == first  # sampler.seed=3 on a seed-0 study samples as the seed-3 study does
    assert suggestions(dataclasses.replace(spec, seed=4)) != first


# -- pruners -------------------------------------------------------------------------------------------

def test_median_pruner_takes_the_study_files_settings() -> None:
    pruner = make_pruner(dataclasses.replace(BASE, pruner=PrunerSpec(name="median", n_startup_trials=5, n_warmup_steps=7)))
    assert type(pruner) is optuna.pruners.MedianPruner
    assert (pruner._n_startup_trials, pruner._n_warmup_steps) == (5, 7)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("value", "step", "finished", "pruned"), [
    (5.0, 2, 2, True),  # clearly worse than the finished trials, after the warm-up: pruned
    (0.5, 2, 2, False),  # better: kept
    (5.0, 0, 2, False),  # worse, but at a step inside n_warmup_steps=1: kept
    (5.0, 2, 1, False),  # worse, but fewer finished trials than n_startup_trials=2: kept
])
def test_median_pruner_from_a_spec_prunes_a_clearly_worse_trial(value: float, step: int, finished: int,
                                                                 pruned: bool) -> None:
    spec = dataclasses.replace(BASE, pruner=PrunerSpec(name="median", n_startup_trials=2, n_warmup_steps=1))
    study = optuna.create_study(pruner=make_pruner(spec))
    for _ in range(finished):
        study.add_trial(finished_trial(1.0, steps=[0, 1, 2]))
    trial = study.ask()
    trial.report(value, step)
    assert bool(trial.should_prune()) is pruned  # (Optuna's median pruner answers with a numpy bool)


def test_hyperband_resources_follow_the_dev_schedule() -> None:
    by_iterations = dataclasses.replace(BASE, pruner=PrunerSpec(name="hyperband", reduction_factor=4),
                                        budget=BudgetConfig(1000), evaluation=EvalConfig(every=50))
    by_seconds = dataclasses.replace(by_iterations, budget=BudgetConfig(10**6, 60.0),
                                     evaluation=EvalConfig(every_seconds=10))
    for spec, resources in [(by_iterations, (50, 1000)), (by_seconds, (10, 60))]:
        pruner = make_pruner(spec)
        assert type(pruner) is optuna.pruners.HyperbandPruner
        assert (pruner._min_resource, pruner._max_resource) == resources  # type: ignore[attr-defined]
        assert pruner._reduction_factor == 4  # type: ignore[attr-defined]


@pytest.mark.parametrize(("warmup", "startup_steps"), [(0, 2), (5, 5)])
def test_wilcoxon_pruner_takes_the_threshold_and_at_least_two_startup_steps(warmup: int, startup_steps: int) -> None:
    spec = dataclasses.replace(BASE, pruner=PrunerSpec(name="wilcoxon", p_threshold=0.05, n_warmup_steps=warmup))
    pruner = make_pruner(spec)
    assert type(pruner) is optuna.pruners.WilcoxonPruner
    assert (pruner._p_threshold, pruner._n_startup_steps) == (0.05, startup_steps)  # type: ignore[attr-defined]


def test_the_none_pruner_never_prunes() -> None:
    pruner = make_pruner(dataclasses.replace(BASE, pruner=PrunerSpec(name="none")))
    assert type(pruner) is optuna.pruners.NopPruner
    study = optuna.create_study(pruner=pruner)
    for _ in range(3):
        study.add_trial(finished_trial(0.0, steps=[0, 1, 2]))
    trial = study.ask()
    trial.report(1e9, 2)
    assert not trial.should_prune()


# -- the study lock ------------------------------------------------------------------------------------

def _waiting_for_a_lock(pid: int, timeout: float = 10.0) -> bool:
    """Whether process ``pid`` is seen blocked on a file lock (``->`` lines of /proc/locks) within ``timeout``."""
    locks = Path("/proc/locks")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not locks.exists():  # not Linux: give the process time to reach the lock
            time.sleep(1.0)
            return True
        if any(line.split()[1:3] == ["->", "FLOCK"] and str(pid) in line.split() for line in
               locks.read_text().splitlines()):
            return True
        time.sleep(0.01)
    return False


def test_the_study_lock_makes_a_second_process_wait_for_the_first(tmp_path: Path) -> None:
    setup = journal_setup(tmp_path)
    log = tmp_path / "order.log"
    context = multiprocessing.get_context("fork")

    def second() -> None:
        with setup.lock(), open(log, "a") as f:
            f.write("second holds it\n")

    proc = context.Process(target=second)
    try:
        with setup.lock():
            proc.start()
            assert _waiting_for_a_lock(proc.pid)  # type: ignore[arg-type]
            assert not log.exists()
            log.write_text("first releases it\n")
        proc.join(10)
    finally:
        if proc.is_alive():
            proc.kill()
    assert proc.exitcode == 0
    assert log.read_text().splitlines() == ["first releases it", "second holds it"]
    assert Path(f"{setup.storage.journal_path}.asklock").is_file()  # the lock file lies beside the journal


def test_the_study_lock_is_released_when_its_block_raises(tmp_path: Path) -> None:
    setup = journal_setup(tmp_path)
    with pytest.raises(RuntimeError), setup.lock():
        raise RuntimeError("boom")

    def take_it() -> None:
        with setup.lock():
            pass

    proc = multiprocessing.get_context("fork").Process(target=take_it)
    proc.start()
    proc.join(10)
    if proc.is_alive():
        proc.kill()
    assert proc.exitcode == 0  # it got the lock (a still-held lock would leave it waiting past the join)


# -- creating and resuming a study (fast: no trial runs) -----------------------------------------------

def test_a_new_study_records_its_files_and_queues_its_baselines_once(tmp_path: Path) -> None:
    study_path = make_study(tmp_path)
    setup = prepare(study_path, storage=f"journal:{tmp_path / 's.journal'}")
    study = open_study(setup)
    trials = study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.WAITING] * 2
    for trial, name in zip(trials, ["maml", "reptile"]):
        assert trial.user_attrs == {TrialAttr.BASELINE: name}
        expected = baseline_params(setup.space, baseline_config(name, setup.spec, study_path))
        assert trial.system_attrs["fixed_params"] == expected  # what enqueue_trial asks the trial to take
    assert study_texts(study) == {StudyText.STUDY_FILE: study_path.read_text(), StudyText.SEARCH_SPACE: TINY_SPACE_YAML}
    attrs = study.user_attrs
    assert set(attrs) == {StudyAttr.PROTOCOL, StudyAttr.STUDY_FILE_NAME, StudyAttr.VERSION, StudyAttr.OBJECTIVES,
                          StudyAttr.ARTIFACTS_DIR}  # short values only: `optuna studies` stays readable
    assert attrs[StudyAttr.STUDY_FILE_NAME] == str(study_path) and attrs[StudyAttr.PROTOCOL] == "maml"
    assert attrs[StudyAttr.VERSION] == nas_meta.__version__ and attrs[StudyAttr.OBJECTIVES] == "dev_loss"
    recorded = tmp_path / attrs[StudyAttr.ARTIFACTS_DIR]  # recorded relative to the journal's folder, or absolute
    assert recorded.resolve() == setup.artifacts_dir.resolve() == (tmp_path / "s-artifacts").resolve()
    assert study.metric_names == ["dev_loss"]
    assert list(study.trials_dataframe().filter(like="value").columns) == ["value_dev_loss"]
    again = open_study(prepare(study_path, storage=f"journal:{tmp_path / 's.journal'}"))
    assert len(again.get_trials()) == 2  # resuming queues nothing more


@pytest.mark.parametrize("cut_after", ["created", "one baseline", "both baselines", "one text"])
def test_a_study_whose_creation_was_cut_short_is_completed_when_next_opened(tmp_path: Path, cut_after: str) -> None:
    """A worker killed while it created the study (before the texts, written last, were all recorded): the next
    one queues the missing baselines, once each, and records the texts, instead of calling the study changed or
    leaving it without baselines."""
    study_path = make_study(tmp_path)
    storage = f"journal:{tmp_path / 's.journal'}"
    setup = prepare(study_path, storage=storage)
    study = optuna.create_study(study_name=setup.study_name, storage=setup.storage.storage)
    for name in {"created": [], "one baseline": ["maml"], "both baselines": ["maml", "reptile"],
                 "one text": ["maml", "reptile"]}[cut_after]:
        config = baseline_config(name, setup.spec, study_path)
        study.enqueue_trial(baseline_params(setup.space, config), user_attrs={TrialAttr.BASELINE: name})
    if cut_after == "one text":
        study._storage.set_study_system_attr(study._study_id, StudyText.STUDY_FILE, study_path.read_text())
    opened = open_study(prepare(study_path, storage=storage))
    trials = opened.get_trials()
    assert [t.user_attrs for t in trials] == [{TrialAttr.BASELINE: "maml"}, {TrialAttr.BASELINE: "reptile"}]
    assert [t.state for t in trials] == [optuna.trial.TrialState.WAITING] * 2
    assert study_texts(opened) == {StudyText.STUDY_FILE: study_path.read_text(), StudyText.SEARCH_SPACE: TINY_SPACE_YAML}
    assert len(open_study(prepare(study_path, storage=storage)).get_trials()) == 2


def test_a_study_nas_meta_did_not_create_gets_no_baselines_among_its_trials(tmp_path: Path) -> None:
    study_path = make_study(tmp_path)
    storage = f"journal:{tmp_path / 's.journal'}"
    setup = prepare(study_path, storage=storage)
    study = optuna.create_study(study_name=setup.study_name, storage=setup.storage.storage)
    study.optimize(lambda t: t.suggest_float("learner.inner_lr", 0.1, 0.5), n_trials=1)
    opened = open_study(prepare(study_path, storage=storage))
    assert [t.state for t in opened.get_trials()] == [optuna.trial.TrialState.COMPLETE]


@pytest.mark.parametrize("changed", ["study", "space"])
def test_resuming_with_another_study_file_or_space_is_refused_unless_forced(tmp_path: Path, changed: str,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    study_path = make_study(tmp_path)
    storage = f"journal:{tmp_path / 's.journal'}"
    open_study(prepare(study_path, storage=storage))
    if changed == "study":
        study_path.write_text(study_path.read_text().replace("seed: 1", "seed: 2"))
        removed, added = "\n-seed: 1", "\n+seed: 2"
    else:
        space = tmp_path / "space.yaml"
        space.write_text(space.read_text().replace("high: 50}", "high: 60}"))
        line = "  - {name: learner.test_steps, type: int, low: 1, high: %d}"
        removed, added = "\n-" + line % 50, "\n+" + line % 60
    with pytest.raises(ConfigError) as info:
        open_study(prepare(study_path, storage=storage))
    message = str(info.value)
    assert "was created from a different study file or search space" in message and "--force" in message
    assert removed in message and added in message
    with caplog.at_level(logging.WARNING, logger="nas_meta.search.setup"):
        study = open_study(prepare(study_path, storage=storage), force=True)
    assert "resuming study 'tiny' with a different study file (--force)" in caplog.text
    assert len(study.get_trials()) == 2  # the forced resume neither re-queues nor loses anything


def test_prepare_refuses_a_baseline_outside_the_space_naming_the_study_file(tmp_path: Path) -> None:
    study_path = make_study(tmp_path)
    space = tmp_path / "space.yaml"
    space.write_text(space.read_text().replace("low: 0.05, high: 0.8, log: true", "low: 0.05, high: 0.3, log: true"))
    with pytest.raises(ConfigError) as info:
        prepare(study_path, storage=f"journal:{tmp_path / 's.journal'}")
    assert str(info.value) == (f"{study_path}: baseline 'maml-5w1s': learner.inner_lr=0.4 lies outside the search "
                               "space's [0.05, 0.3].")


# -- slow: resuming a real search ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory, omniglot: Path) -> tuple[Path, str]:
    """A copy of the session's tiny searched study, so these tests may add trials to it."""
    return copy_searched(searched_study(tmp_path_factory, omniglot), tmp_path_factory.mktemp("resume"))


@pytest.mark.slow
def test_resume_adds_trials_and_a_finished_study_says_so(searched: tuple[Path, str], omniglot: Path) -> None:
    study_path, storage = searched
    done = subprocess.run([sys.executable, "-m", "nas_meta.cli", "search", str(study_path), "--storage", storage,
                           "--device", "cpu", "--data", str(omniglot)], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0
    assert "already holds 4 trials (n_trials=4); pass a larger --n-trials to run more." in done.stderr
    done = subprocess.run([sys.executable, "-m", "nas_meta.cli", "search", str(study_path), "--storage", storage,
                           "--n-trials", "5", "--device", "cpu", "--data", str(omniglot)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["trials"] == 5 and set(summary["baselines"]) == {"maml", "reptile"}


@pytest.mark.slow
def test_changed_study_file_is_refused_with_the_difference(tmp_path: Path, searched: tuple[Path, str],
                                                           omniglot: Path) -> None:
    study_path, storage = searched
    changed = tmp_path / "study.yaml"
    shutil.copytree(study_path.parent / "baselines", tmp_path / "baselines")
    (tmp_path / "space.yaml").write_text(TINY_SPACE_YAML)
    changed.write_text(study_path.read_text().replace("seed: 1", "seed: 2"))
    before = len(optuna.load_study(study_name="tiny", storage=prepare(study_path, storage=storage).storage.storage).trials)
    with pytest.raises(ConfigError) as info:
        search(changed, storage=storage, n_trials=10, device="cpu", data=omniglot)
    message = str(info.value)
    assert "was created from a different study file or search space" in message
    assert "-seed: 1" in message and "+seed: 2" in message and "--force" in message
    after = optuna.load_study(study_name="tiny", storage=prepare(study_path, storage=storage).storage.storage).trials
    assert len(after) == before


# -- regression: the study file's storage line is recorded without its password, however it was quoted ------------

@pytest.mark.parametrize(("line", "secret"), [
    ("storage: 'postgresql://u:Tr0ub4dor''s3cret@127.0.0.1:1/db'", "Tr0ub4dor"),  # '' is a quote in single quotes
    ('storage: "postgresql://u:Tr0ub4dor\\x27s3cret@127.0.0.1:1/db"', "Tr0ub4dor"),  # \x27 in double quotes
    ('storage: "postgresql://u:hunter\\u0032@127.0.0.1:1/db"', "hunter"),
    ("storage: postgresql://u:hunter2@127.0.0.1:1/db", "hunter2"),  # plain, as before
    ("storage:    'postgresql://u:hunter2@127.0.0.1:1/db'   # the team's database", "hunter2"),
], ids=["single-quoted-escape", "double-quoted-hex-escape", "double-quoted-unicode-escape", "plain", "comment"])
def test_the_study_files_storage_password_is_never_recorded_on_the_study(tmp_path: Path, line: str,
                                                                         secret: str) -> None:
    study_path = make_study(tmp_path)
    study_path.write_text(study_path.read_text() + line + "\n")
    setup = prepare(study_path, storage=f"journal:{tmp_path / 's.journal'}")  # the file's database is never opened
    assert setup.spec.storage is not None and secret in setup.spec.storage
    texts = study_texts(open_study(setup))
    recorded = texts[StudyText.STUDY_FILE]
    assert secret not in recorded and "s3cret" not in recorded
    assert recorded == study_path.read_text().replace(line, "storage: 'postgresql://u:***@127.0.0.1:1/db'")
    assert secret not in (tmp_path / "s.journal").read_text()


# -- regression: Optuna cannot change a categorical parameter's choices, so --force cannot either -----------------

def test_resuming_with_other_categorical_choices_is_refused_even_with_force(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    study_path = make_study(tmp_path)
    storage = f"journal:{tmp_path / 's.journal'}"
    open_study(prepare(study_path, storage=storage))
    space = tmp_path / "space.yaml"
    space.write_text(space.read_text().replace("choices: [4, 5]}", "choices: [4, 5, 6]}"))
    journal = (tmp_path / "s.journal").read_bytes()
    for force in (False, True):
        with pytest.raises(ConfigError) as info:
            open_study(prepare(study_path, storage=storage), force=force)
        if force:
            assert str(info.value) == (
                f"{study_path}: learner.meta_batch had the choices [4, 5] when study 'tiny' was created and now has "
                "[4, 5, 6]; Optuna cannot change a categorical parameter's choices within a study, not even with "
                "--force. Use another --study-name.")
    assert (tmp_path / "s.journal").read_bytes() == journal  # nothing appended
    import nas_meta.search.workers as workers_module

    monkeypatch.setattr(workers_module, "resolve_data_dir", lambda data: tmp_path)  # no Omniglot needed
    with pytest.raises(ConfigError, match="not even with --force"):  # the same through search, before any trial
        search(study_path, storage=storage, force=True, device="cpu")
    assert (tmp_path / "s.journal").read_bytes() == journal


def test_resuming_with_a_changed_numeric_range_is_still_allowed_with_force(tmp_path: Path) -> None:
    study_path = make_study(tmp_path)
    storage = f"journal:{tmp_path / 's.journal'}"
    open_study(prepare(study_path, storage=storage))
    space = tmp_path / "space.yaml"
    space.write_text(space.read_text().replace("high: 50}", "high: 60}"))
    assert len(open_study(prepare(study_path, storage=storage), force=True).get_trials()) == 2


@pytest.mark.parametrize("value", ["storage: >-\n  postgresql://u:hunter2@127.0.0.1:1/db\n",
                                   "storage:\n  'postgresql://u:hunter2@127.0.0.1:1/db'\n"],
                         ids=["folded-block", "on-the-next-line"])
def test_a_storage_value_on_the_next_line_is_recorded_without_its_password(tmp_path: Path, value: str) -> None:
    study_path = make_study(tmp_path)
    study_path.write_text(study_path.read_text() + value)
    setup = prepare(study_path, storage=f"journal:{tmp_path / 's.journal'}")
    assert setup.spec.storage == "postgresql://u:hunter2@127.0.0.1:1/db"
    recorded = study_texts(open_study(setup))[StudyText.STUDY_FILE]
    assert "hunter2" not in recorded and "hunter2" not in (tmp_path / "s.journal").read_text()
    assert "storage: 'postgresql://u:***@127.0.0.1:1/db'" in recorded


def test_a_set_of_a_field_the_space_searches_or_fixes_is_refused(tmp_path: Path) -> None:
    study_path = make_study(tmp_path)
    for setting, key in (("learner.inner_lr=0.1", "learner.inner_lr"), ("architecture.channels=8",
                                                                        "architecture.channels")):
        with pytest.raises(ConfigError) as info:
            prepare(study_path, storage=f"journal:{tmp_path / 's.journal'}", overrides=[setting])
        assert str(info.value) == (f"{study_path}: --set '{setting}': {key} is set by the search space 'tiny-space' in "
                                   "every trial (searched or fixed), so this override would do nothing; change the "
                                   "space instead.")
    assert not (tmp_path / "s.journal").exists()


def test_a_parameter_that_changed_kind_is_refused_even_with_force(tmp_path: Path) -> None:
    study_path = make_study(tmp_path)
    storage = f"journal:{tmp_path / 's.journal'}"
    open_study(prepare(study_path, storage=storage))
    space = tmp_path / "space.yaml"
    space.write_text(space.read_text().replace(
        "{name: learner.test_steps, type: int, low: 1, high: 50}",
        "{name: learner.test_steps, type: categorical, choices: [1, 10, 50]}"))
    before = (tmp_path / "s.journal").read_bytes()
    with pytest.raises(ConfigError, match="learner.test_steps changed from int to categorical since study 'tiny' was "
                                          "created; Optuna cannot change a parameter's kind"):
        open_study(prepare(study_path, storage=storage), force=True)
    assert (tmp_path / "s.journal").read_bytes() == before
