"""Setting a study up: the study file resolved, sampler and pruner registries, the study created or resumed
(its files recorded, its baselines enqueued as the first trials)."""

from __future__ import annotations

import dataclasses
import difflib
import logging
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

from .._version import __version__
from ..config import (
    SHIPPED_BASELINES,
    SearchSpace,
    StudySpec,
    TrainConfig,
    baseline_path,
    check_study_name,
    from_dict,
    load_config,
    load_search_space,
    load_train_config,
    parse_yaml,
    resolve_relative,
    short,
    split_indexed,
)
from ..errors import ConfigError
from ..resources import study_file
from ..storage import (
    AtomicFileSystemArtifactStore,
    StorageHandle,
    artifact_store,
    default_artifacts_dir,
    default_storage_url,
    open_storage,
    record_artifacts_dir,
    redact,
    scrub,
    study_lock,
)
from ..studies import StudyAttr, StudyText, TrialAttr, record_study_texts, study_texts
from .space import baseline_params, check_reproduced

logger = logging.getLogger(__name__)
# nas-meta relies on these Optuna features deliberately (heartbeat retry, grouped TPE, metric names); their
# "experimental" notices are for Optuna's users, not ours.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


# -- samplers, pruners ---------------------------------------------------------------------------------

def _tpe(spec: StudySpec, seed: int | None) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=spec.sampler.n_startup_trials, multivariate=True,
                                      group=True, constant_liar=True)


def _cmaes(spec: StudySpec, seed: int | None) -> optuna.samplers.BaseSampler:
    return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=spec.sampler.n_startup_trials,
                                        warn_independent_sampling=False)


def _gp(spec: StudySpec, seed: int | None) -> optuna.samplers.BaseSampler:
    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=spec.sampler.n_startup_trials)


SAMPLERS: dict[str, Callable[[StudySpec, int | None], optuna.samplers.BaseSampler]] = {
    "tpe": _tpe,
    "random": lambda spec, seed: optuna.samplers.RandomSampler(seed=seed),
    "cmaes": _cmaes,
    "gp": _gp,
    "nsga2": lambda spec, seed: optuna.samplers.NSGAIISampler(seed=seed),
}


def _hyperband(spec: StudySpec) -> optuna.pruners.BasePruner:
    every, budget = spec.evaluation.every_seconds, spec.budget.seconds
    if every is not None and budget is not None:  # resources in seconds of meta-training
        low, high = every, max(round(budget), every)
    else:  # resources in meta-iterations
        low, high = max(1, spec.evaluation.every), max(spec.budget.iterations, spec.evaluation.every)
    return optuna.pruners.HyperbandPruner(min_resource=low, max_resource=high,
                                          reduction_factor=spec.pruner.reduction_factor)


PRUNERS: dict[str, Callable[[StudySpec], optuna.pruners.BasePruner]] = {
    "median": lambda spec: optuna.pruners.MedianPruner(n_startup_trials=spec.pruner.n_startup_trials,
                                                       n_warmup_steps=spec.pruner.n_warmup_steps),
    "hyperband": _hyperband,
    "wilcoxon": lambda spec: optuna.pruners.WilcoxonPruner(p_threshold=spec.pruner.p_threshold,
                                                           n_startup_steps=max(2, spec.pruner.n_warmup_steps)),
    "none": lambda spec: optuna.pruners.NopPruner(),
}


def make_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    """The study's sampler, seeded with ``sampler.seed`` (default: the study's seed).

    Raises:
        ConfigError: unknown sampler name (the message lists the known ones).
    """
    if spec.sampler.name not in SAMPLERS:
        raise ConfigError(f"sampler.name={spec.sampler.name!r} is not one of {sorted(SAMPLERS)}.")
    return SAMPLERS[spec.sampler.name](spec, spec.sampler.seed if spec.sampler.seed is not None else spec.seed)


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """The study's pruner.

    Raises:
        ConfigError: unknown pruner name (the message lists the known ones).
    """
    if spec.pruner.name not in PRUNERS:
        raise ConfigError(f"pruner.name={spec.pruner.name!r} is not one of {sorted(PRUNERS)}.")
    return PRUNERS[spec.pruner.name](spec)


# -- the study file resolved ---------------------------------------------------------------------------

def baseline_config(name: str, spec: StudySpec, study_path: str | Path) -> TrainConfig:
    """A baseline named in a study, with the study's data, task, budget and evaluation so it is scored exactly
    like every candidate: ``<study folder>/baselines/<name>-<W>w<S>s.yaml`` (else the shipped
    ``studies/baselines/`` file), or a YAML path.

    Raises:
        ConfigError: no such baseline file (the message lists those that exist).
    """
    if name.endswith((".yaml", ".yml")):
        path = resolve_relative(study_path, name)
    else:
        path = baseline_path(name, spec.task.ways, spec.task.shots,
                             [Path(study_path).parent / "baselines", SHIPPED_BASELINES], family=spec.task.family)
    config = load_train_config(path)
    return dataclasses.replace(config, data=spec.data, task=spec.task, budget=spec.budget, evaluation=spec.evaluation,
                               seed=spec.seed)


@dataclasses.dataclass(frozen=True)
class SearchSetup:
    """A study file resolved: its spec, space, storage and study name."""

    spec: StudySpec
    space: SearchSpace
    study_path: Path
    storage: StorageHandle
    study_name: str
    artifacts_dir: Path
    baselines: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()  # --set KEY=VALUE on top of the study file

    def artifact_store(self) -> AtomicFileSystemArtifactStore:
        return artifact_store(self.artifacts_dir)

    def lock(self) -> study_lock:
        return study_lock(self.storage, self.study_name)


def prepare(study_path: str | Path, *, storage: str | None = None, study_name: str | None = None,
            artifacts: str | Path | None = None, overrides: Sequence[str] = (),
            check: Callable[[StudySpec], None] | None = None) -> SearchSetup:
    """Read and check the study file (a path or a shipped study's name, ``overrides`` applied) and its search
    space, run ``check`` on the spec (what else can be checked before the storage is opened), then open the
    storage; runs no trial.

    Raises:
        ConfigError: the study file, its search space or a baseline is invalid.
        StorageError: the storage cannot be opened.
    """
    study_path = study_file(study_path)
    spec = load_config(StudySpec, study_path, overrides)
    space = load_search_space(resolve_relative(study_path, spec.search_space))
    name = check_study_name(study_name) if study_name is not None else spec.name
    _check_overrides_reach(space, overrides, study_path)
    baselines = study_baselines(spec, study_path)
    for baseline in baselines:
        try:  # early, before any storage is opened: the baseline is a point of the space, and its trial is it
            config = baseline_config(baseline, spec, study_path)
            check_reproduced(space, spec.base_config(), config, baseline_params(space, config))
        except ConfigError as err:
            raise ConfigError(f"{study_path}: {err}") from None
    if check is not None:
        check(spec)
    handle = open_storage(storage or spec.storage or default_storage_url(name))
    artifacts_dir = Path(artifacts) if artifacts is not None else default_artifacts_dir(handle, name)
    return SearchSetup(spec, space, study_path, handle, name, artifacts_dir, baselines, tuple(overrides))


def _check_overrides_reach(space: SearchSpace, overrides: Sequence[str], study_path: Path) -> None:
    """A ``--set`` of a field the search space samples or fixes would be silently replaced in every trial: refuse it.

    Raises:
        ConfigError: the override names a searched or fixed field.
    """
    searched = {split_indexed(p.name)[0] for p in space.parameters} | set(space.fixed or {})
    for setting in overrides:
        key = setting.partition("=")[0].strip()
        if key in searched:
            raise ConfigError(f"{study_path}: --set {short(setting)}: {key} is set by the search space "
                              f"{space.name!r} in every trial (searched or fixed), so this override would do nothing; "
                              "change the space instead.")


DEFAULT_BASELINES = ("maml", "reptile")


def study_baselines(spec: StudySpec, study_path: Path) -> tuple[str, ...]:
    """The study's baselines: those it names, else MAML and Reptile where a config exists for its ways and shots."""
    if spec.baselines is not None:
        return spec.baselines
    stem = f"{spec.task.ways}w{spec.task.shots}s.yaml"
    folders = (study_path.parent / "baselines", SHIPPED_BASELINES)
    return tuple(b for b in DEFAULT_BASELINES if any((f / f"{b}-{stem}").is_file() for f in folders))


def study_file_text(setup: SearchSetup) -> str:
    """The study file as recorded on the study: its ``storage:`` line, if it holds a secret, rewritten with the
    URL as :func:`redact` shows it (however the file quoted or escaped it)."""
    text = setup.study_path.read_text()
    storage = setup.spec.storage
    if storage and redact(storage) != storage:
        text = re.sub(r"(?m)^(\s*storage\s*:).*$", lambda m: f"{m.group(1)} {redact(storage)!r}", text)
        text = scrub(text, storage)  # a value continued on the next lines, however it was quoted
    return text + "".join(f"\n# --set {redact(setting)}" for setting in setup.overrides)


def study_record(setup: SearchSetup) -> dict[str, str]:
    """What is recorded on the study as user attributes: protocol, study file name, version, objectives, artifacts."""
    return {
        StudyAttr.PROTOCOL: setup.spec.data.protocol,
        StudyAttr.STUDY_FILE_NAME: str(setup.study_path),
        StudyAttr.VERSION: __version__,
        StudyAttr.OBJECTIVES: ",".join(setup.spec.objectives),
        StudyAttr.ARTIFACTS_DIR: record_artifacts_dir(setup.storage, setup.artifacts_dir),
    }


def study_file_texts(setup: SearchSetup) -> dict[str, str]:
    """The study file and search space texts recorded once on the study (:class:`StudyText`)."""
    return {StudyText.STUDY_FILE: study_file_text(setup),
            StudyText.SEARCH_SPACE: resolve_relative(setup.study_path, setup.spec.search_space).read_text()}


def open_study(setup: SearchSetup, *, force: bool = False) -> optuna.Study:
    """Create the study, or load it when it exists (refusing a different study file unless ``force``).

    New studies get the baselines enqueued as their first trials and the study file recorded.

    Raises:
        ConfigError: the study exists and was created from another study file or search space (without ``force``).
    """
    with setup.lock():  # workers starting together create the study and enqueue the baselines once
        return _open_study_locked(setup, force)


def _open_study_locked(setup: SearchSetup, force: bool) -> optuna.Study:
    spec = setup.spec
    sampler, pruner = make_sampler(spec), make_pruner(spec)
    try:  # load first: create_study(load_if_exists=True) would append a create record to a journal every time
        study = optuna.load_study(study_name=setup.study_name, storage=setup.storage.storage, sampler=sampler,
                                  pruner=pruner)
    except KeyError:
        directions = [optuna.study.StudyDirection.MINIMIZE] * len(spec.objectives)
        study = optuna.create_study(study_name=setup.study_name, storage=setup.storage.storage, sampler=sampler,
                                    pruner=pruner, directions=directions, load_if_exists=True)  # a lockless race
    texts, stored = study_file_texts(setup), study_texts(study)
    if set(stored) < set(texts) and all(texts[k] == v for k, v in stored.items()):
        # a new study, or one whose creation was cut short: the texts are written last, one by one
        for key, value in study_record(setup).items():
            study.set_user_attr(key, value)
        study.set_metric_names(list(spec.objectives))  # Optuna's own name for each objective: dev_loss, …
        if all(t.state == TrialState.WAITING and TrialAttr.BASELINE in t.user_attrs for t in study.trials):
            queued = {t.user_attrs[TrialAttr.BASELINE] for t in study.trials}
            for name in setup.baselines:
                if name not in queued:
                    config = baseline_config(name, spec, setup.study_path)
                    study.enqueue_trial(baseline_params(setup.space, config), user_attrs={TrialAttr.BASELINE: name},
                                        skip_if_exists=True)
        record_study_texts(study, texts)
    elif stored != texts:
        def lines(recorded: dict[str, str]) -> list[str]:
            return "".join(recorded.get(k, "") + "\n" for k in (StudyText.STUDY_FILE, StudyText.SEARCH_SPACE)).splitlines(True)

        diff = "".join(difflib.unified_diff(lines(stored), lines(texts), fromfile=f"study {setup.study_name!r} as created",
                                            tofile=str(setup.study_path)))
        if not force:
            raise ConfigError(
                f"study {setup.study_name!r} in {setup.storage.url} was created from a different study file or "
                f"search space; resuming it with {setup.study_path} would mix incomparable trials. Differences:\n"
                f"{diff}Use the original file, another --study-name, or --force to resume anyway."
            )
        _check_optuna_can_resume(setup, stored)
        logger.warning("resuming study %r with a different study file (--force)", setup.study_name)
    return study


def _check_optuna_can_resume(setup: SearchSetup, stored: dict[str, str]) -> None:
    """Even with ``--force``: Optuna cannot change a categorical parameter's choices within a study.

    Raises:
        ConfigError: a categorical parameter's choices differ from those the study was created with.
    """
    try:
        old = from_dict(SearchSpace, parse_yaml(stored.get(StudyText.SEARCH_SPACE, "")))
    except (ConfigError, ValueError, yaml.YAMLError):
        return  # nothing comparable was recorded
    kinds = {p.key: p.type for p in old.parameters}
    for p in setup.space.parameters:
        if p.key in kinds and kinds[p.key] != p.type:
            raise ConfigError(f"{setup.study_path}: {p.key} changed from {kinds[p.key]} to {p.type} since study "
                              f"{setup.study_name!r} was created; Optuna cannot change a parameter's kind within a "
                              "study, not even with --force. Use another --study-name.")
    before = {p.key: list(p.choices or ()) for p in old.parameters if p.type == "categorical"}
    for p in setup.space.parameters:
        if p.type == "categorical" and p.key in before and before[p.key] != list(p.choices or ()):
            raise ConfigError(f"{setup.study_path}: {p.key} had the choices {before[p.key]} when study "
                              f"{setup.study_name!r} was created and now has {list(p.choices or ())}; Optuna cannot "
                              "change a categorical parameter's choices within a study, not even with --force. Use "
                              "another --study-name.")
