"""Progress bars for the command line (the library only yields records; bars live here and in ``cli``).

A training run's bar shows whichever budget ends first, meta-iterations or seconds of meta-training; a
search's bar counts the study's trials from those already there, with a bar under it for the running trial.
Without a terminal there are no bars: a line per dev scoring instead.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import optuna
from optuna.trial import FrozenTrial
from tqdm import tqdm

from .config import BudgetConfig
from .search import SearchListener
from .training import DevScore, End, Record, Step

logger = logging.getLogger("nas_meta.cli")


def interactive(quiet: bool) -> bool:
    """Whether to draw bars: stderr is a terminal and ``-q`` was not given."""
    return not quiet and sys.stderr.isatty()


class RunBar:
    """One training run: the share of its budget spent, by iterations or seconds, whichever is further along."""

    def __init__(self, budget: BudgetConfig, *, enabled: bool, desc: str = "", position: int = 0,
                 leave: bool = True) -> None:
        self.budget = budget
        self.bar = tqdm(total=100.0, desc=desc, position=position, leave=leave, disable=not enabled,
                        dynamic_ncols=True, bar_format="{desc}{percentage:3.0f}%|{bar}| {postfix} [{elapsed}<{remaining}]")
        self.shown = 0.0

    def share(self, iteration: int, train_seconds: float) -> float:
        """Percent of the budget spent: the larger of the two shares (the one that will end the run)."""
        by_iterations = iteration / self.budget.iterations if self.budget.iterations else 1.0
        by_seconds = train_seconds / self.budget.seconds if self.budget.seconds else 0.0
        return 100.0 * min(1.0, max(by_iterations, by_seconds))

    def step(self, record: Step) -> None:
        share = self.share(record.iteration, record.train_seconds)
        seconds = f", {record.train_seconds:.0f}/{self.budget.seconds:g} s" if self.budget.seconds else ""
        loss = f", loss {record.metrics['loss']:.3f}" if "loss" in record.metrics else ""
        self.bar.set_postfix_str(f"it {record.iteration}/{self.budget.iterations}{seconds}{loss}", refresh=False)
        self.bar.update(share - self.shown)
        self.shown = share

    def close(self) -> None:
        self.bar.close()


def log_dev(record: DevScore, prefix: str = "") -> None:
    accuracy = ("" if record.dev_accuracy is None  # a regression family: its loss is the score
                else f", dev accuracy {record.dev_accuracy:.4f} ± {record.dev_accuracy_ci95:.4f}")
    logger.info("%siteration %d (%.1f s of meta-training): dev loss %.4f%s", prefix, record.iteration,
                record.train_seconds, record.dev_loss, accuracy)


class SearchBars(SearchListener):
    """The study's trials (from those already there) and, under it, the running trial's budget."""

    def __init__(self, budget: BudgetConfig, *, enabled: bool) -> None:
        self.enabled = enabled
        self.budget = budget
        self.bar: Any = None
        self.trial_bar: RunBar | None = None
        self.trial = -1

    def started(self, existing: int, total: int) -> None:
        self.bar = tqdm(total=total, initial=existing, unit="trial", desc="study", disable=not self.enabled,
                        dynamic_ncols=True, position=0)

    def record(self, trial: int, record: Record) -> None:
        if trial != self.trial:
            self._close_trial()
            self.trial = trial
            self.trial_bar = RunBar(self.budget, enabled=self.enabled, desc=f"trial {trial} ", position=1, leave=False)
        if isinstance(record, Step) and self.trial_bar is not None:
            self.trial_bar.step(record)
        elif isinstance(record, DevScore):
            log_dev(record, f"trial {trial} ")
        elif isinstance(record, End) and record.status != "completed":
            logger.info("trial %d: training ended (%s) %s", trial, record.status, record.reason)

    def finished(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._close_trial()
        if self.bar is not None:
            self.bar.update(1)

    def counted(self, count: int) -> None:
        if self.bar is not None and count > self.bar.n:
            self.bar.update(count - self.bar.n)

    def _close_trial(self) -> None:
        if self.trial_bar is not None:
            self.trial_bar.close()
            self.trial_bar = None

    def close(self) -> None:
        self._close_trial()
        if self.bar is not None:
            self.bar.close()
