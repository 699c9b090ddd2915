"""Compare a candidate learner with the MAML and Reptile baselines on the same fixed test episodes.

Every method is meta-trained with the same budget and the same seeds, then scored on one fixed test
episode set (same ways, shots and query for all), so per-episode accuracies are paired across methods.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .checkpoint import OutputKind, atomic_write, check_output_folder, finished_result, train_to_folder
from .config import (
    MAX_ITERATIONS,
    PATH_OR_NONE,
    SHIPPED_BASELINES,
    STRATEGIES,
    BudgetConfig,
    TrainConfig,
    baseline_path,
    check_arguments,
    load_train_config,
    path_or_none,
    whole,
)
from .errors import ConfigError
from .report import comparison_figure, figures_html
from .runtime import resolve_device
from .training import EvalResult, evaluate, load_workspace, mean_ci95, train_iter

logger = logging.getLogger(__name__)

def paired_difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean of ``a - b`` over paired episodes and its 95% CI half-width.

    Raises:
        ValueError: ``a`` and ``b`` do not hold one value per episode each.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired scores need one value per episode each, but got shapes {a.shape} and {b.shape}.")
    return mean_ci95(a - b)


def compare(
    candidate: TrainConfig,
    out: str | Path,
    *,
    baselines: list[str] = ("maml", "reptile"),  # type: ignore[assignment]
    seeds: int = 3,
    episodes: int = 600,
    budget: BudgetConfig | None = None,
    data: str | Path | None = None,
    device: str = "auto",
    on_run: Callable[[dict[str, Any]], None] | None = None,
) -> pd.DataFrame:
    """Train the candidate and each baseline for ``seeds`` seeds, score all on the same test episodes, and write
    ``comparison.csv``, ``comparison.md`` and ``comparison.html`` into ``out``.

    Returns:
        The comparison table (one row per method).
    """
    if isinstance(seeds, int) and not isinstance(seeds, bool) and seeds < 1:
        raise ConfigError(f"--seeds {seeds} is not allowed: expected an integer >= 1.")
    check_arguments(
        (isinstance(candidate, TrainConfig), "candidate", candidate, "a TrainConfig (load_train_config(path))"),
        (not isinstance(baselines, (str, bytes)) and all(isinstance(b, str) for b in baselines), "baselines",
         baselines, "a list of baseline names such as ['maml', 'reptile']"),
        (whole(seeds, 1, 1000), "seeds", seeds, "an integer in [1, 1000]"),
        (whole(episodes, 1, 10**6), "episodes", episodes, "an integer in [1, 10^6]"),
        (budget is None or isinstance(budget, BudgetConfig), "budget", budget, "a BudgetConfig, or None"),
        (path_or_none(data), "data", data, PATH_OR_NONE),
        (isinstance(device, str), "device", device, "'auto', 'cpu', 'cuda' or 'cuda:N' (a string)"),
    )
    out = Path(out)
    task = candidate.task
    budget = budget or candidate.budget
    methods: dict[str, TrainConfig] = {f"candidate ({candidate.learner.strategy})": candidate}
    for name in baselines:
        path = baseline_path(name, task.ways, task.shots, [SHIPPED_BASELINES], family=task.family,
                             field_name="--baselines")
        base = load_train_config(path)
        label = "paper settings" if name in STRATEGIES else path.name  # maml-cpu-*.yaml: tuned, not the paper's
        methods[f"{name} ({label})"] = dataclasses.replace(  # the candidate's data and kind of episode
            base, data=candidate.data, task=dataclasses.replace(base.task, within_alphabet=task.within_alphabet))
    check_compare_target(out, [_slug(m) for m in methods])
    torch_device = resolve_device(device)
    workspace = load_workspace(candidate, data, torch_device)
    score = score_of(candidate)
    test = workspace.task_sampler("test", task).fixed(episodes, candidate.evaluation.seed)
    per_episode: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    runs: list[dict[str, Any]] = []
    for method, config in methods.items():
        for seed in range(seeds):
            run_config = dataclasses.replace(config, budget=budget, seed=seed)
            folder = out / _slug(method) / f"seed-{seed}"  # a finished run of an interrupted comparison is kept
            result = finished_result(folder, run_config, torch_device) or train_to_folder(
                train_iter(run_config, device=device, workspace=workspace), folder)  # an interrupt stops here
            scores = evaluate(result.learner, test, batch=run_config.evaluation.batch)
            per_episode[method].append(score.per_episode(scores))
            metrics = result.metrics
            value, ci = mean_ci95(per_episode[method][-1])
            run = {"method": method, "seed": seed, f"test_{score.name}": value,
                   f"test_{score.name}_ci95": ci, "train_seconds": metrics.train_seconds,
                   "iterations": metrics.iterations, "parameters": metrics.parameters, "status": metrics.status}
            runs.append(run)
            if on_run is not None:
                on_run(run)
    table = _table(methods, per_episode, runs, list(methods)[1:], score)
    _write(out, table, pd.DataFrame(runs), candidate, budget, episodes, seeds, score)
    return table


COMPARE_FILES = ("comparison.csv", "comparison.md", "comparison.html", "runs.csv")


@dataclasses.dataclass(frozen=True)
class Score:
    """What a comparison scores each test episode by: accuracy (classification) or the query MSE (regression)."""

    name: str  # its columns: test_<name>, test_<name>_ci95
    title: str
    percent: bool  # shown in percent (and differences in points)

    def per_episode(self, result: EvalResult) -> np.ndarray:
        return result.per_episode_accuracy if self.name == "accuracy" else result.per_episode_loss

    def text(self, value: float, ci: float) -> str:
        return f"{100 * value:.2f}% ± {100 * ci:.2f}" if self.percent else f"{value:.4f} ± {ci:.4f}"

    def difference(self, value: float, ci: float) -> str:
        return f"{100 * value:+.2f} ± {100 * ci:.2f} pts" if self.percent else f"{value:+.4f} ± {ci:.4f}"

    def spread(self, std: float) -> str:
        """A standard deviation over seeds ("–" where undefined: one seed)."""
        if math.isnan(std):
            return "–"
        return f"{100 * std:.2f}" if self.percent else f"{std:.4f}"


ACCURACY = Score("accuracy", "test accuracy", percent=True)
MSE = Score("mse", "test MSE", percent=False)


def score_of(config: TrainConfig) -> Score:
    """The score of ``config``'s task family: the query MSE for regression, else accuracy."""
    return MSE if config.task.family_info.regression else ACCURACY


def check_compare_target(out: Path, methods: list[str]) -> None:
    """``--out`` must be a new or empty folder, or an earlier comparison (its files and method folders replaced).

    Raises:
        ConfigError: ``out`` is a file, lies below a file, or holds other files.
    """
    def method_folder(p: Path) -> bool:  # a method's runs, of this comparison or of an earlier one
        if not p.is_dir():
            return False
        runs = list(p.iterdir())
        return p.name in methods or (bool(runs) and all(r.is_dir() and r.name.startswith("seed-") for r in runs))

    def foreign(entries: list[Path]) -> list[str]:
        return [p.name for p in entries if not ((p.name in COMPARE_FILES and p.is_file()) or method_folder(p))]

    check_output_folder(out, OutputKind("for the comparison's runs and tables", "files that are not a comparison",
                                        "an earlier comparison", foreign))


def _slug(method: str) -> str:
    return method.split(" ")[0]


STOPPED_BY = {"time_budget": "seconds", "completed": "iterations"}  # which limit ended a run (else its status)


def _table(methods: dict[str, TrainConfig], per_episode: dict[str, list[np.ndarray]], runs: list[dict[str, Any]],
           baselines: list[str], score: Score) -> pd.DataFrame:
    rows = []
    candidate = next(iter(methods))
    cand_mean = np.mean(per_episode[candidate], axis=0)
    for method, config in methods.items():
        episode_mean = np.mean(per_episode[method], axis=0)  # each episode's score, averaged over seeds
        acc, ci = mean_ci95(episode_mean)
        seed_means = [float(a.mean()) for a in per_episode[method]]
        mine = [r for r in runs if r["method"] == method]
        row: dict[str, Any] = {
            "method": method, "strategy": config.learner.strategy,
            f"test_{score.name}": acc, f"test_{score.name}_ci95": ci,
            "seed_std": float(np.std(seed_means, ddof=1)) if len(seed_means) > 1 else math.nan,
            "parameters": mine[0]["parameters"], "train_seconds": float(np.mean([r["train_seconds"] for r in mine])),
            "iterations": float(np.mean([r["iterations"] for r in mine])),
            "stopped_by": ", ".join(sorted({STOPPED_BY.get(r["status"], r["status"]) for r in mine})),
        }
        for base in baselines:
            if method == candidate:
                diff, diff_ci = paired_difference(cand_mean, np.mean(per_episode[base], axis=0))
                row[f"diff_vs_{_slug(base)}"] = diff
                row[f"diff_vs_{_slug(base)}_ci95"] = diff_ci
        rows.append(row)
    return pd.DataFrame(rows)


def _write(out: Path, table: pd.DataFrame, runs: pd.DataFrame, candidate: TrainConfig, budget: BudgetConfig,
           episodes: int, seeds: int, score: Score) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "comparison.csv", table.to_csv(index=False).encode())
    atomic_write(out / "runs.csv", runs.to_csv(index=False).encode())
    task = candidate.task
    if budget.seconds is None:
        budget_text = f"{budget.iterations} meta-iterations"
    elif budget.iterations >= MAX_ITERATIONS:
        budget_text = f"{budget.seconds:g} s of meta-training"
    else:
        budget_text = f"{budget.iterations} meta-iterations or {budget.seconds:g} s, whichever came first"
    family = task.family_info
    if family.regression:
        points = f"{task.query} query points per task"
    else:
        points = f"{task.query} query images per class"
    setting = task.described(candidate.data.protocol)
    setting = setting[0].upper() + setting[1:]
    what = "Accuracy" if score.percent else "Query MSE"
    lines = [
        f"# {setting}: candidate vs baselines", "",
        (f"Each method meta-trained with the same budget ({budget_text}) for {seeds} seed(s), then scored on the same "
         f"{episodes} fixed test episodes ({points}). Baselines are the shipped configs for this task "
         f"(studies/baselines/: their papers' settings unless named otherwise), scaled only in the number of "
         f"meta-iterations. {what} ± 95% CI over episodes "
         f"(per-episode {score.title[5:]} averaged over seeds); seed std is the spread of the per-seed means; the paired "
         "difference is over identical episodes."), "",
        f"| method | {score.title} | seed std | paired difference | parameters | train s | meta-iterations | stopped by |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in table.to_dict("records"):
        diffs = "; ".join(f"vs {k[8:]}: {score.difference(row[k], row[k + '_ci95'])}"
                          for k in row if k.startswith("diff_vs_") and not k.endswith("_ci95") and not pd.isna(row[k]))
        spread = score.spread(row["seed_std"])
        lines.append(f"| {row['method']} | {score.text(row[f'test_{score.name}'], row[f'test_{score.name}_ci95'])} | "
                     f"{spread} | {diffs} | {row['parameters']:,} | {row['train_seconds']:.0f} | "
                     f"{row['iterations']:.0f} | {row['stopped_by']} |")
    atomic_write(out / "comparison.md", ("\n".join(lines) + "\n").encode())
    intro = "".join(f"<p>{line}</p>" for line in lines[2:3])
    atomic_write(out / "comparison.html", figures_html("nas-meta comparison", [
        (f"{score.title.capitalize()} (95% CI over episodes)", comparison_figure(table, score.name, score.percent))],
        intro).encode())


