"""Search at low fidelity, then retrain the best at full budget (``nas-meta finalize``).

A search scores each candidate after a short training budget; whether its ranking survives a real budget is
what a researcher needs to know. :func:`finalize` retrains the ``top_k`` best completed trials of a study for
``seeds`` seeds each with a full budget of seconds, chooses the one whose mean dev loss at that budget is lowest
(dev episodes only: the test episodes are never used to choose), then tests the chosen one against the MAML and
Reptile baselines trained with the same budget and seeds, on the same test episodes (:func:`nas_meta.compare.compare`:
paired differences with 95% intervals). The chosen config is retrained there with the same seeds, so its test score
is not the maximum of several runs.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from .checkpoint import OutputKind, atomic_write, check_output_folder, finished_result, train_to_folder
from .compare import check_compare_target, compare
from .config import (  # argument checks
    MAX_ITERATIONS,
    PATH_OR_NONE,
    SHIPPED_BASELINES,
    BudgetConfig,
    DataConfig,
    baseline_path,
    check_arguments,
    finite,
    path_or_none,
    whole,
)
from .errors import ConfigError
from .runtime import resolve_device
from .storage import StorageHandle
from .studies import existing_study, trial_config
from .training import TaskSource, load_workspace, train_iter

logger = logging.getLogger(__name__)

FINALIZE_FILES = ("selection.csv", "finalize.md")
FINALIZE_FOLDERS = ("candidates", "compare")


def top_trials(study: optuna.Study, k: int) -> list[FrozenTrial]:
    """The ``k`` completed trials with the lowest dev loss (the first objective), best first.

    Raises:
        ConfigError: the study has no completed trial.
    """
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values]
    if not done:
        raise ConfigError(f"study {study.study_name!r} has no completed trial to finalize.")
    return sorted(done, key=lambda t: (t.values[0], t.number))[:k]


def check_finalize_target(out: Path) -> None:
    """``--out`` must be a new or empty folder, or an earlier finalize (its files and folders replaced).

    Raises:
        ConfigError: ``out`` is a file, lies below a file, or holds other files.
    """
    def foreign(entries: list[Path]) -> list[str]:
        return [p.name for p in entries if not ((p.name in FINALIZE_FILES and p.is_file())
                                                 or (p.name in FINALIZE_FOLDERS and p.is_dir()))]

    check_output_folder(out, OutputKind("for the retrained candidates and the comparison",
                                        "files that are not a finalize", "an earlier finalize", foreign))


def finalize(
    study_name: str,
    storage: str | StorageHandle,
    out: str | Path,
    *,
    budget_seconds: float,
    top_k: int = 5,
    seeds: int = 3,
    episodes: int = 600,
    baselines: list[str] = ("maml", "reptile"),  # type: ignore[assignment]
    data: str | Path | None = None,
    device: str = "auto",
    on_run: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Retrain the ``top_k`` best trials at ``budget_seconds`` of meta-training for ``seeds`` seeds, choose by mean dev
    loss, and compare the chosen config with the baselines at the same budget and seeds on the same test episodes.

    Writes ``selection.csv`` (one row per retrained run), ``finalize.md``, the runs under ``candidates/`` and the
    comparison under ``compare/`` into ``out``.

    Returns:
        ``{"chosen_trial", "selection": [rows], "comparison": [rows]}``.

    Raises:
        ConfigError: a bad argument (named), an unknown study, no completed trial, an unusable ``out``.
    """
    check_arguments(
        (isinstance(study_name, str), "study_name", study_name, "a study name (a string)"),
        (isinstance(budget_seconds, (int, float)) and not isinstance(budget_seconds, bool)
         and finite(budget_seconds) and 0 < budget_seconds <= 10**9, "budget_seconds", budget_seconds,
         "a number of seconds in (0, 10^9]"),
        (whole(top_k, 1, 1000), "top_k", top_k, "an integer in [1, 1000]"),
        (whole(seeds, 1, 1000), "seeds", seeds, "an integer in [1, 1000]"),
        (whole(episodes, 1, 10**6), "episodes", episodes, "an integer in [1, 10^6]"),
        (not isinstance(baselines, (str, bytes)) and all(isinstance(b, str) for b in baselines), "baselines",
         baselines, "a list of baseline names such as ['maml', 'reptile']"),
        (path_or_none(data), "data", data, PATH_OR_NONE),
        (isinstance(device, str), "device", device, "'auto', 'cpu', 'cuda' or 'cuda:N' (a string)"),
    )
    out = Path(out)
    check_finalize_target(out)
    check_compare_target(out / "compare", ["candidate", *baselines])  # before the hours of retraining, not after
    study = existing_study(storage, study_name)
    trials = top_trials(study, top_k)
    configs = {t.number: trial_config(study, t) for t in trials}  # every config read before any training
    for config in configs.values():  # and every baseline found: a typo must not surface after hours of training
        for name in baselines:
            baseline_path(name, config.task.ways, config.task.shots, [SHIPPED_BASELINES], field_name="--baselines",
                          family=config.task.family)
    budget = BudgetConfig(iterations=MAX_ITERATIONS, seconds=float(budget_seconds))
    torch_device = resolve_device(device)
    workspaces: dict[tuple[DataConfig, str], TaskSource] = {}  # data loaded once for the trials that share it
    rows: list[dict[str, Any]] = []
    for trial in trials:
        config = configs[trial.number]
        source = (config.data, config.task.family)
        if source not in workspaces:
            workspaces[source] = load_workspace(config, data, torch_device)
        for seed in range(seeds):
            run_config = dataclasses.replace(config, budget=budget, seed=seed)
            folder = out / "candidates" / f"trial-{trial.number}" / f"seed-{seed}"  # kept from an interrupted finalize
            result = finished_result(folder, run_config, torch_device) or train_to_folder(
                train_iter(run_config, device=device, workspace=workspaces[source]), folder)  # an interrupt stops here
            metrics = result.metrics
            row = {"trial": trial.number, "seed": seed, "search_dev_loss": trial.values[0],
                   "dev_loss": metrics.dev_loss if metrics.dev_loss is not None else math.nan,
                   "dev_accuracy": metrics.dev_accuracy if metrics.dev_accuracy is not None else math.nan,
                   "iterations": metrics.iterations, "train_seconds": metrics.train_seconds, "status": metrics.status}
            rows.append(row)
            logger.info("trial %d seed %d: dev loss %.4f after %d iterations at the full budget", trial.number, seed,
                        row["dev_loss"], metrics.iterations)
    selection = pd.DataFrame(rows)
    means = selection.groupby("trial", sort=False)["dev_loss"].mean().fillna(math.inf)  # a diverged run loses
    chosen = int(means.idxmin())
    selection["chosen"] = selection["trial"] == chosen
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "selection.csv", selection.to_csv(index=False).encode())
    table = compare(configs[chosen], out / "compare", baselines=baselines, seeds=seeds, episodes=episodes,
                    budget=budget, data=data, device=device, on_run=on_run)
    atomic_write(out / "finalize.md", _markdown(study.study_name, selection, means, chosen, budget_seconds, seeds,
                                                (out / "compare" / "comparison.md").read_text()).encode())
    return {"chosen_trial": chosen, "selection": selection.to_dict("records"), "comparison": table.to_dict("records")}


def _markdown(study: str, selection: pd.DataFrame, means: pd.Series, chosen: int, seconds: float, seeds: int,
              comparison: str) -> str:
    lines = [f"# Finalize {study}: the top {len(means)} trials retrained for {seconds:g} s each, {seeds} seed(s)", "",
             ("Chosen by the mean dev loss at the full budget (dev episodes only); the test episodes score the chosen "
              "config once, beside the baselines trained with the same budget and seeds."), "",
             ("| trial | dev loss in the search | dev loss at the full budget (mean over seeds) | meta-iterations | "
              "chosen |"), "|---|---|---|---|---|"]
    for trial, mean in means.items():
        runs = selection[selection["trial"] == trial]
        lines.append(f"| {trial} | {runs['search_dev_loss'].iloc[0]:.4f} | {mean:.4f} | "
                     f"{runs['iterations'].mean():.0f} | {'**yes**' if trial == chosen else ''} |")
    search_best = int(selection.sort_values(["search_dev_loss", "trial"])["trial"].iloc[0])
    verdict = ("the search's best trial stays best at the full budget" if search_best == chosen else
               f"the ranking changed: the search's best was trial {search_best}, at the full budget trial {chosen}")
    lines += ["", f"Ranking: {verdict}.", "", comparison.split("\n", 2)[2] if comparison.count("\n") >= 2 else comparison]
    return "\n".join(lines) + "\n"
