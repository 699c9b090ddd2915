"""Meta-training loop (a generator of metric records) and evaluation over fixed episodes.

:func:`meta_train` yields one record per meta-iteration and one per development scoring, so callers
(the CLI's progress bar, an Optuna objective that reports and prunes) decide what to do with them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from .config import BudgetConfig
from .episodes import EpisodeSampler, FixedEpisodes
from .learners import BaseLearner
from .runtime import tune_allocator

Z_95 = 1.959963984540054


@dataclass(frozen=True)
class EvalResult:
    """Mean query accuracy and loss over a fixed episode set, with 95% confidence half-widths."""

    accuracy: float
    accuracy_ci95: float
    loss: float
    loss_ci95: float
    episodes: int
    per_episode_accuracy: np.ndarray = field(repr=False)
    per_episode_loss: np.ndarray = field(repr=False)

    def summary(self) -> dict[str, float | int]:
        return {
            "accuracy": self.accuracy,
            "accuracy_ci95": self.accuracy_ci95,
            "loss": self.loss,
            "loss_ci95": self.loss_ci95,
            "episodes": self.episodes,
        }


def mean_ci95(values: np.ndarray) -> tuple[float, float]:
    """Mean and the half-width of its normal 95% confidence interval."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(Z_95 * values.std(ddof=1) / math.sqrt(len(values)))


def evaluate(learner: BaseLearner, episodes: FixedEpisodes, *, steps: int | None = None, batch: int = 50) -> EvalResult:
    """Adapt on each fixed episode's support set and score its query set.

    Args:
        learner: the learner.
        episodes: the fixed episode set.
        steps: adaptation steps (default: ``learner.test_steps``).
        batch: episodes adapted at once.
    """
    tune_allocator()
    losses: list[torch.Tensor] = []
    accuracies: list[torch.Tensor] = []
    for episode in episodes.batches(batch):
        episode_loss, episode_accuracy = learner.query_scores(episode, steps=steps)
        losses.append(episode_loss.cpu())
        accuracies.append(episode_accuracy.cpu())
    loss_arr = torch.cat(losses).double().numpy()
    acc_arr = torch.cat(accuracies).double().numpy()
    acc, acc_ci = mean_ci95(acc_arr)
    loss, loss_ci = mean_ci95(loss_arr)
    return EvalResult(acc, acc_ci, loss, loss_ci, len(acc_arr), acc_arr, loss_arr)


def meta_train(
    learner: BaseLearner,
    sampler: EpisodeSampler,
    budget: BudgetConfig,
    *,
    meta_batch: int,
    generator: torch.Generator,
    dev: FixedEpisodes | None = None,
    eval_every: int = 200,
    eval_every_seconds: int | None = None,
    eval_batch: int = 50,
) -> Iterator[dict[str, object]]:
    """Meta-train ``learner`` until the budget is spent, yielding metric records.

    Time is counted two ways: ``elapsed`` (wall clock since the start) and ``train_seconds`` (meta-training
    only: dev scoring not counted). The seconds budget and ``eval_every_seconds`` use ``train_seconds``, so a
    learner that is slow to score is not cut short by its own evaluation.

    Records: ``{"kind": "step", "iteration", "elapsed", "train_seconds", ...learner metrics}`` every
    meta-iteration; ``{"kind": "dev", "iteration", "elapsed", "train_seconds", "step", "final", "dev_loss",
    "dev_accuracy", "dev_accuracy_ci95", "dev_losses"}`` every ``eval_every`` iterations (or every
    ``eval_every_seconds`` seconds of meta-training, when given) and once at the end (``final`` true);
    ``step`` is where a pruner should compare it with other trials: the iteration, or the seconds mark
    reached. Last comes ``{"kind": "end", "status": "completed" | "time_budget" | "diverged", "iterations",
    "elapsed", "train_seconds", "reason"}``. A non-finite loss or parameter stops training as ``diverged``.
    """
    tune_allocator()
    start = time.perf_counter()
    iterations = budget.iterations if learner.trains else 0
    seconds = budget.seconds
    iteration = 0
    status, reason = "completed", ""
    scoring_seconds = 0.0  # wall time spent scoring the dev episodes
    marks_scored = 0  # with eval_every_seconds: how many of its marks have been scored
    last_dev = -1

    def train_seconds() -> float:
        return time.perf_counter() - start - scoring_seconds

    def dev_record(step: int, final: bool) -> dict[str, object]:
        nonlocal scoring_seconds
        assert dev is not None
        trained = train_seconds()
        scoring_start = time.perf_counter()
        result = evaluate(learner, dev, batch=eval_batch)
        scoring_seconds += time.perf_counter() - scoring_start
        return {
            "kind": "dev",
            "iteration": iteration,
            "elapsed": time.perf_counter() - start,
            "train_seconds": trained,
            "step": step,
            "final": final,
            "dev_loss": result.loss,
            "dev_accuracy": result.accuracy,
            "dev_accuracy_ci95": result.accuracy_ci95,
            "dev_losses": result.per_episode_loss,
        }

    learner.train()
    while iteration < iterations:
        trained = train_seconds()
        if seconds is not None and trained >= seconds:
            status, reason = "time_budget", f"stopped at the {seconds:g} s time budget after {iteration} iterations"
            break
        progress = max(iteration / iterations, trained / seconds if seconds else 0.0)
        metrics = learner.meta_step(sampler.sample(generator, meta_batch), progress)
        iteration += 1
        loss = metrics.get("loss")
        finite = math.isfinite(loss) if loss is not None else learner.parameters_finite()
        trained = train_seconds()
        step_record = {"kind": "step", "iteration": iteration, "elapsed": time.perf_counter() - start,
                       "train_seconds": trained, **metrics}
        if not finite:
            status = "diverged"
            reason = f"the meta-training loss became {loss} at iteration {iteration}" if loss is not None else (
                f"a meta-parameter became NaN/inf at iteration {iteration}"
            )
            yield step_record
            break
        yield step_record
        if dev is None or iteration == iterations or (seconds is not None and trained >= seconds):
            continue  # the end of the budget is scored after the loop
        if eval_every_seconds is None:
            due, step = iteration % eval_every == 0, iteration
        else:
            marks = int(trained // eval_every_seconds)
            due, step = marks > marks_scored, marks * eval_every_seconds
            marks_scored = marks
        if due:
            last_dev = iteration
            record = dev_record(step, final=False)
            if not math.isfinite(float(record["dev_loss"])):  # type: ignore[arg-type]
                status, reason = "diverged", f"the dev loss became {record['dev_loss']} at iteration {iteration}"
                yield record
                break
            yield record
    if dev is not None and last_dev != iteration and status != "diverged":
        final_step = iteration if eval_every_seconds is None else math.ceil(min(train_seconds(), seconds or math.inf))
        yield dev_record(final_step, final=True)
    yield {"kind": "end", "status": status, "iterations": iteration, "elapsed": time.perf_counter() - start,
           "train_seconds": train_seconds(), "reason": reason}
