"""Optuna search over φ = architecture + learning rates + initialization strategy.

``space`` walks a conditional search space (the only caller of ``trial.suggest_*``), ``objective`` builds
``objective(trial) -> float``, ``setup`` resolves a study file and creates or resumes its study, ``workers``
runs trials on one or many worker processes.
"""

from .objective import make_objective
from .setup import PRUNERS, SAMPLERS, SearchSetup, baseline_config, make_pruner, make_sampler, open_study, prepare
from .space import baseline_params, suggest_config, walk
from .workers import SearchListener, fail_stale_trials, run_trial, run_worker, search, worker_devices

__all__ = [
    "PRUNERS", "SAMPLERS", "SearchListener", "SearchSetup", "baseline_config", "baseline_params", "fail_stale_trials", "make_objective",
    "make_pruner", "make_sampler", "open_study", "prepare", "run_trial", "run_worker", "search", "suggest_config",
    "walk", "worker_devices",
]
