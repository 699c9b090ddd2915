"""One training run: the data it reads, the meta-training generator, evaluation over fixed episodes.

:func:`meta_train` yields a typed record per meta-iteration (:class:`Step`) and per development scoring
(:class:`DevScore`), then :class:`End`; :func:`train_iter` runs it for a :class:`TrainConfig` and ends with
a :class:`Result`. Callers (the CLI's progress bar, an Optuna objective that reports and prunes) decide what
to do with the records; nothing here writes to disk.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import Tensor

from ._version import __version__
from .architectures import count_parameters
from .config import FAMILIES, BudgetConfig, TaskConfig, TrainConfig
from .data import ClassSet, Omniglot, class_splits, load_omniglot
from .episodes import Episode, EpisodeSampler, FixedEpisodes
from .errors import ConfigError, Terminated
from .learners import BaseLearner, get_learner
from .runtime import check_interrupt, resolve_device, seed_everything, tune_allocator
from .sinusoid import SinusoidTasks

Z_95 = 1.959963984540054


@dataclass(frozen=True)
class EvalResult:
    """Mean query accuracy and loss over a fixed episode set, with 95% confidence half-widths. A regression family
    has no accuracy (None; its per-episode accuracies are NaN): its loss is the mean squared error."""

    accuracy: float | None
    accuracy_ci95: float | None
    loss: float
    loss_ci95: float
    episodes: int
    per_episode_accuracy: np.ndarray = field(repr=False)
    per_episode_loss: np.ndarray = field(repr=False)

    def summary(self) -> dict[str, float | int | None]:
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
        check_interrupt()
        episode_loss, episode_accuracy = learner.query_scores(episode, steps=steps)
        losses.append(episode_loss.cpu())
        accuracies.append(episode_accuracy.cpu())
    loss_arr = torch.cat(losses).double().numpy()
    acc_arr = torch.cat(accuracies).double().numpy()
    acc, acc_ci = mean_ci95(acc_arr) if not np.isnan(acc_arr).all() else (None, None)
    loss, loss_ci = mean_ci95(loss_arr)
    return EvalResult(acc, acc_ci, loss, loss_ci, len(acc_arr), acc_arr, loss_arr)


# -- records -------------------------------------------------------------------------------------------

Status = Literal["completed", "time_budget", "diverged", "interrupted"]


@dataclass(frozen=True)
class Step:
    """One meta-iteration: its number, the clock, and the learner's metrics (``loss``, ``accuracy``, …)."""

    iteration: int
    elapsed: float
    train_seconds: float
    metrics: dict[str, float]


@dataclass(frozen=True)
class DevScore:
    """A scoring of the fixed dev episodes. ``step`` is where a pruner compares it with other trials: the
    iteration, or the seconds mark reached; ``final`` marks the scoring at the end of the budget."""

    iteration: int
    elapsed: float
    train_seconds: float
    step: int
    final: bool
    dev_loss: float
    dev_accuracy: float | None
    dev_accuracy_ci95: float | None
    dev_losses: np.ndarray = field(repr=False)

    def summary(self) -> dict[str, float | int | bool | None]:
        """The scoring without its per-episode losses (for ``metrics.json``'s history)."""
        return {"iteration": self.iteration, "elapsed": self.elapsed, "train_seconds": self.train_seconds,
                "step": self.step, "final": self.final, "dev_loss": self.dev_loss, "dev_accuracy": self.dev_accuracy,
                "dev_accuracy_ci95": self.dev_accuracy_ci95}


@dataclass(frozen=True)
class End:
    """Meta-training stopped: ``completed`` (iterations spent), ``time_budget``, ``diverged``, or ``interrupted``
    (Ctrl-C or SIGTERM: ``interrupt`` holds it, to be raised again once the run's learner is kept)."""

    status: Status
    iterations: int
    elapsed: float
    train_seconds: float
    reason: str
    interrupt: KeyboardInterrupt | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class RunMetrics:
    """What a finished run reports and a learner folder keeps in ``metrics.json``."""

    status: Status
    reason: str
    iterations: int
    train_seconds: float
    wall_seconds: float
    dev_loss: float | None
    dev_accuracy: float | None
    dev_accuracy_ci95: float | None
    dev_history: tuple[dict[str, float | int | bool | None], ...]
    parameters: int
    label_space: int
    family: str  # the task family (omniglot, sinusoid)
    protocol: str | None  # Omniglot's class split; None for another family
    device: str
    nas_meta_version: str

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["dev_history"] = list(self.dev_history)
        return data


@dataclass(frozen=True)
class Result:
    """The end of :func:`train_iter`: the config run (seed applied), the trained learner and its metrics;
    ``path`` is the learner folder once saved (:func:`nas_meta.checkpoint.save_result`)."""

    config: TrainConfig
    learner: BaseLearner
    metrics: RunMetrics
    path: Path | None = None


Record = Step | DevScore | End | Result  # what train_iter yields


# -- meta-training -------------------------------------------------------------------------------------

def meta_train(
    learner: BaseLearner,
    sampler: TaskSampler,
    budget: BudgetConfig,
    *,
    meta_batch: int,
    generator: torch.Generator,
    dev: FixedEpisodes | None = None,
    eval_every: int = 200,
    eval_every_seconds: int | None = None,
    eval_batch: int = 50,
) -> Iterator[Step | DevScore | End]:
    """Meta-train ``learner`` until the budget is spent, yielding typed records.

    Time is counted two ways: ``elapsed`` (wall clock since the start) and ``train_seconds`` (meta-training
    only: neither dev scoring nor the time the caller holds a record, e.g. to score test episodes, is counted). The seconds budget and ``eval_every_seconds`` use ``train_seconds``, so a
    learner that is slow to score is not cut short by its own evaluation.

    Records: a :class:`Step` every meta-iteration; a :class:`DevScore` every ``eval_every`` iterations (or
    every ``eval_every_seconds`` seconds of meta-training, when given) and once at the end (``final`` true);
    last an :class:`End`. A non-finite loss or parameter stops training as ``diverged``.
    """
    tune_allocator()
    learner.prepare_training()  # one-time set-up, not meta-training: before the clock starts
    start = time.perf_counter()
    iterations = budget.iterations if learner.trains else 0
    seconds = budget.seconds
    iteration = 0
    status: Status = "completed"
    reason = ""
    scoring_seconds = 0.0  # wall time spent scoring the dev episodes
    marks_scored = 0  # with eval_every_seconds: how many of its marks have been scored
    last_dev = -1

    held_seconds = 0.0  # wall time the caller held the records yielded so far

    def train_seconds() -> float:
        return time.perf_counter() - start - scoring_seconds - held_seconds

    def hand_over(record: Step | DevScore) -> Iterator[Step | DevScore]:
        nonlocal held_seconds
        handed = time.perf_counter()
        yield record
        held_seconds += time.perf_counter() - handed

    def dev_score(step: int, final: bool) -> DevScore:
        nonlocal scoring_seconds
        assert dev is not None
        trained = train_seconds()
        scoring_start = time.perf_counter()
        result = evaluate(learner, dev, batch=eval_batch)
        scoring_seconds += time.perf_counter() - scoring_start
        return DevScore(iteration, time.perf_counter() - start, trained, step, final, result.loss, result.accuracy,
                        result.accuracy_ci95, result.per_episode_loss)

    learner.train()
    interrupt: KeyboardInterrupt | None = None
    episode: Episode | None = None  # the next meta-batch, when drawn ahead
    try:
        while iteration < iterations:
            check_interrupt()  # a deferred Ctrl-C or SIGTERM stops the run here, between meta-iterations
            trained = train_seconds()
            if seconds is not None and trained >= seconds:
                status, reason = "time_budget", f"stopped at the {seconds:g} s time budget after {iteration} iterations"
                break
            progress = max(iteration / iterations, trained / seconds if seconds else 0.0)
            launched = learner.launch_meta_step(episode or sampler.sample(generator, meta_batch), progress)
            iteration += 1
            # the next meta-batch is drawn while a GPU still works on this step (the same draws, in the same order)
            episode = sampler.sample(generator, meta_batch) if iteration < iterations else None
            metrics = {name: float(value) for name, value in launched.items()}
            loss = metrics.get("loss")
            finite = math.isfinite(loss) if loss is not None else learner.parameters_finite()
            trained = train_seconds()
            yield from hand_over(Step(iteration, time.perf_counter() - start, trained, metrics))
            if not finite:
                status = "diverged"
                reason = f"the meta-training loss became {loss} at iteration {iteration}" if loss is not None else (
                    f"a meta-parameter became NaN/inf at iteration {iteration}"
                )
                break
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
                score = dev_score(step, final=False)
                yield from hand_over(score)
                if not math.isfinite(score.dev_loss):
                    status, reason = "diverged", f"the dev loss became {score.dev_loss} at iteration {iteration}"
                    break
        if dev is not None and last_dev != iteration and status != "diverged":
            final_step = iteration if eval_every_seconds is None else math.ceil(min(train_seconds(), seconds or math.inf))
            yield from hand_over(dev_score(final_step, final=True))
    except KeyboardInterrupt as err:  # the learner trained so far is worth keeping: end the run, then re-raise above
        interrupt = err
        status = "interrupted"
        reason = (f"interrupted by {'SIGTERM' if isinstance(err, Terminated) else 'Ctrl-C'} after {iteration} "
                  "iterations")
    yield End(status, iteration, time.perf_counter() - start, train_seconds(), reason, interrupt)


# -- one run of a training config ----------------------------------------------------------------------

class TaskSampler(Protocol):
    """Draws a task family's episodes from one split: meta-batches for training, fixed sets for scoring."""

    def sample(self, generator: torch.Generator, tasks: int) -> Episode: ...

    def fixed(self, episodes: int, seed: int) -> FixedEpisodes: ...


class TaskSource(Protocol):
    """A task family loaded for one config on one device: the interface a run needs from it (Omniglot's
    :class:`Workspace`, :class:`nas_meta.sinusoid.SinusoidTasks`). Its loss and score come from its episodes'
    targets (:mod:`nas_meta.objectives`), its default network from :attr:`nas_meta.config.Family.defaults`."""

    @property
    def label_space(self) -> int:
        """Width of a pre-training head: the training split's distinct labels (1 for regression)."""
        ...

    def task_sampler(self, split: str, task: TaskConfig) -> TaskSampler: ...


@dataclass(frozen=True)
class Workspace:
    """Omniglot loaded for one config: images on the device and the protocol's class splits."""

    dataset: Omniglot
    images: Tensor
    splits: dict[str, ClassSet]

    @property
    def label_space(self) -> int:
        return self.splits["train"].label_space

    def sampler(self, split: str, ways: int, shots: int, query: int, *, within_alphabet: bool = False) -> EpisodeSampler:
        return EpisodeSampler(self.images, self.splits[split], ways, shots, query, f"{split} split",
                              within_alphabet=within_alphabet)

    def task_sampler(self, split: str, task: TaskConfig) -> EpisodeSampler:
        """The sampler of ``task``'s episodes (shape and whether within one alphabet) from ``split``."""
        return self.sampler(split, task.ways, task.shots, task.query, within_alphabet=task.within_alphabet)


GENERATED_FAMILIES: dict[str, Callable[[torch.device], TaskSource]] = {  # families without data: their task sources
    "sinusoid": SinusoidTasks,
}
assert set(GENERATED_FAMILIES) == {name for name, family in FAMILIES.items() if not family.needs_data}


def load_workspace(config: TrainConfig, data: str | Path | None, device: torch.device,
                   progress: Callable[[int, int], None] | None = None) -> TaskSource:
    """Load the config's task family onto ``device``: for Omniglot the images at the config's size, with its
    protocol's splits; the sinusoid family has nothing to load.

    Raises:
        DataError: the data is missing or corrupt.
        ConfigError: the task asks for more ways than a split has classes.
    """
    if not config.task.family_info.needs_data:
        return GENERATED_FAMILIES[config.task.family](device)
    dataset = load_omniglot(data, config.data.image_size, progress=progress)
    splits = class_splits(config.data.protocol, dataset, config.data.train_rotations)
    for split in ("train", "dev"):
        n = len(splits[split])
        field, ways = config.task.split_ways(split)
        if ways > n:
            raise ConfigError(
                f"{field}={ways} is more than the {n} classes of the {config.data.protocol!r} "
                f"protocol's {split} split; use at most {n}."
            )
    return Workspace(dataset, torch.from_numpy(dataset.images).to(device), splits)


def build_learner(config: TrainConfig, label_space: int, device: torch.device, seed: int) -> BaseLearner:
    """A freshly initialised learner on ``device``; its initial weights depend only on ``seed``."""
    learner = get_learner(config, label_space)
    learner.init_params(torch.Generator().manual_seed(seed))
    return learner.to(device)


def train_iter(
    config: TrainConfig,
    *,
    data: str | Path | None = None,
    device: str = "auto",
    seed: int | None = None,
    workspace: TaskSource | None = None,
) -> Iterator[Step | DevScore | End | Result]:
    """Meta-train ``config``, yielding the records of :func:`meta_train`, then a :class:`Result`.

    Args:
        config: the training config.
        data: the Omniglot folder (default: see :func:`nas_meta.data.resolve_data_dir`), unless ``workspace``.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        seed: overrides ``config.seed``.
        workspace: the task family already loaded for this config (a search loads it once for all its trials).
    """
    if seed is not None:
        config = dataclasses.replace(config, seed=seed)
    torch_device = resolve_device(device)
    seed_everything(config.seed)
    ws = workspace or load_workspace(config, data, torch_device)
    task = config.task
    train_sampler = ws.task_sampler("train", task.training_task())
    dev = ws.task_sampler("dev", task).fixed(config.evaluation.dev_episodes, config.evaluation.seed)
    learner = build_learner(config, ws.label_space, torch_device, config.seed)
    generator = torch.Generator().manual_seed(config.seed + 1)
    history: list[dict[str, float | int | bool | None]] = []
    end: End | None = None
    last: DevScore | None = None
    for record in meta_train(learner, train_sampler, config.budget, meta_batch=config.learner.meta_batch,
                             generator=generator, dev=dev, eval_every=config.evaluation.every,
                             eval_every_seconds=config.evaluation.every_seconds,
                             eval_batch=config.evaluation.batch):
        if isinstance(record, DevScore):
            last = record
            history.append(record.summary())
        elif isinstance(record, End):
            end = record
        yield record
    assert end is not None
    metrics = RunMetrics(
        status=end.status, reason=end.reason, iterations=end.iterations, train_seconds=end.train_seconds,
        wall_seconds=end.elapsed, dev_loss=last.dev_loss if last else None,
        dev_accuracy=last.dev_accuracy if last else None, dev_accuracy_ci95=last.dev_accuracy_ci95 if last else None,
        dev_history=tuple(history), parameters=count_parameters(learner.network),
        label_space=ws.label_space, family=config.task.family,
        protocol=config.data.protocol if config.task.family_info.needs_data else None, device=str(torch_device),
        nas_meta_version=__version__,
    )
    yield Result(config, learner, metrics)
    if end.interrupt is not None:  # the caller has had the Result (to keep the learner); now stop as asked
        raise end.interrupt
