"""The meta-training generator: budgets, dev scoring, divergence; evaluation statistics; runs on real Omniglot (slow)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from nas_meta.config import ArchConfig, BudgetConfig, DataConfig, EvalConfig, LearnerConfig, TaskConfig, TrainConfig
from nas_meta.data import ClassSet
from nas_meta.episodes import EpisodeSampler
from nas_meta.errors import ConfigError, Terminated
from nas_meta.learners import BaseLearner, get_learner
from nas_meta.training import (
    Z_95,
    DevScore,
    End,
    Result,
    Step,
    evaluate,
    load_workspace,
    mean_ci95,
    meta_train,
    train_iter,
)
from tests.conftest import nas_meta_cli
from tests.learners.helpers import tiny_config
from tests.search.helpers import synthetic_workspace


def synthetic_sampler(ways: int = 3, split: str = "train", device: torch.device | str = "cpu") -> EpisodeSampler:
    """12 random characters drawn on the CPU; the sampler builds its episodes where the images are, on ``device``."""
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(12, 20, 8, 8, generator=g) * 255).to(torch.uint8).to(device)
    return EpisodeSampler(images, ClassSet(np.arange(12), np.zeros(12, dtype=np.int64), True), ways, 2, 2, split)


def run(config, iterations=6, every=3, seconds=None, every_seconds=None, device: torch.device | str = "cpu"):
    learner = get_learner(config, 48)
    learner.init_params(torch.Generator().manual_seed(0))
    learner.to(device)
    dev = synthetic_sampler(device=device).fixed(8, seed=0)
    return list(meta_train(learner, synthetic_sampler(device=device), BudgetConfig(iterations, seconds), meta_batch=2,
                           generator=torch.Generator().manual_seed(1), dev=dev, eval_every=every,
                           eval_every_seconds=every_seconds, eval_batch=4))


def test_records_steps_dev_scores_and_end(device: torch.device) -> None:
    records = run(tiny_config("maml"), iterations=7, every=3, device=device)
    assert sum(isinstance(r, Step) for r in records) == 7
    dev = [r for r in records if isinstance(r, DevScore)]
    assert [r.iteration for r in dev] == [3, 6, 7]
    assert [(r.step, r.final) for r in dev] == [(3, False), (6, False), (7, True)]
    assert isinstance(records[-1], End) and (records[-1].status, records[-1].iterations) == ("completed", 7)
    assert len(dev[-1].dev_losses) == 8 and dev[-1].dev_loss == pytest.approx(float(np.mean(dev[-1].dev_losses)))


def test_dev_scored_every_so_many_seconds_of_meta_training(device: torch.device) -> None:
    records = run(tiny_config("maml"), iterations=10**6, seconds=2.5, every_seconds=1, device=device)
    dev = [r for r in records if isinstance(r, DevScore)]
    end = records[-1]
    assert [r.step for r in dev] == [1, 2, 3] and [r.final for r in dev] == [False, False, True]
    assert [r.train_seconds >= mark for r, mark in zip(dev, [1, 2, 2.5])] == [True] * 3
    assert isinstance(end, End) and end.status == "time_budget" and 2.5 <= end.train_seconds < 3.0
    # the budget counts meta-training only: the time spent scoring comes on top
    scoring = end.elapsed - end.train_seconds
    assert scoring > 0 and end.elapsed >= 2.5 + scoring - 1e-6


# CPU only: it asks for bitwise-equal losses, and CUDA kernels (cuDNN's convolution backward among them) need not
# give the same bits from run to run unless torch.use_deterministic_algorithms is on, which nas_meta does not set.
def test_training_is_reproducible() -> None:
    a = [r.metrics["loss"] for r in run(tiny_config("maml")) if isinstance(r, Step)]
    b = [r.metrics["loss"] for r in run(tiny_config("maml")) if isinstance(r, Step)]
    assert len(a) == 6 and a == b


def test_time_budget_stops_training(device: torch.device) -> None:
    records = run(tiny_config("maml"), iterations=10**6, every=10**6, seconds=0.5, device=device)
    end = records[-1]
    assert isinstance(end, End) and end.status == "time_budget" and "0.5 s time budget" in end.reason
    assert 0 < end.iterations < 10**6


def test_time_the_caller_holds_a_record_is_not_meta_training(device: torch.device) -> None:
    """A caller that scores test episodes (or draws a progress bar) between records does not spend the budget."""
    import time

    learner = get_learner(tiny_config("fomaml"), 48)
    learner.init_params(torch.Generator().manual_seed(0))
    learner.to(device)
    records = []
    for record in meta_train(learner, synthetic_sampler(device=device), BudgetConfig(5, 60.0), meta_batch=2,
                             generator=torch.Generator().manual_seed(1), dev=None):
        records.append(record)
        if isinstance(record, Step):
            time.sleep(0.2)  # the caller's own work: 1 s over the run
    end = records[-1]
    assert isinstance(end, End) and end.status == "completed" and end.iterations == 5
    assert end.elapsed - end.train_seconds >= 1.0  # the held time is in the wall clock only
    steps = [r for r in records if isinstance(r, Step)]
    assert steps[-1].train_seconds < steps[-1].elapsed - 0.8  # each step's train_seconds excludes earlier holds


@pytest.mark.parametrize("strategy", ["maml", "pretrain"])
def test_the_outer_optimizer_is_made_before_the_clock_starts(strategy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first optimizer a process creates imports part of torch (about 3 s here): set-up, not meta-training, and
    more than a short seconds budget (a 2 s compare once trained its candidate for one iteration)."""
    import time

    made = torch.optim.Adam.__init__

    def slow_first_import(self: torch.optim.Adam, *args: Any, **kwargs: Any) -> None:
        time.sleep(0.6)
        made(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "__init__", slow_first_import)
    learner = get_learner(tiny_config(strategy), 48)
    learner.init_params(torch.Generator().manual_seed(0))
    records = list(meta_train(learner, synthetic_sampler(), BudgetConfig(2, 60.0), meta_batch=2,
                              generator=torch.Generator().manual_seed(1), dev=None))
    end = records[-1]
    assert isinstance(end, End) and end.iterations == 2 and learner.optimizer is not None
    assert end.train_seconds < 0.5  # made once, before the budget's clock


def test_divergence_stops_with_a_clear_status(device: torch.device) -> None:
    config = tiny_config("maml", inner_lr=1e30)
    records = run(config, iterations=50, device=device)
    end = records[-1]
    assert isinstance(end, End) and end.status == "diverged" and end.iterations < 50
    assert "became nan" in end.reason or "became inf" in end.reason


def test_random_init_skips_training_but_is_scored(device: torch.device) -> None:
    records = run(tiny_config("random"), iterations=100, device=device)
    assert [type(r) for r in records] == [DevScore, End]
    assert records[-1].iterations == 0


def test_evaluate_reports_mean_and_95_ci_over_episodes(device: torch.device) -> None:
    learner = get_learner(tiny_config("maml"), 48).to(device)
    fixed = synthetic_sampler(device=device).fixed(30, seed=3)
    result = evaluate(learner, fixed, batch=7)
    assert result.episodes == 30
    acc = result.per_episode_accuracy
    assert result.accuracy == pytest.approx(acc.mean())
    assert result.accuracy_ci95 == pytest.approx(Z_95 * acc.std(ddof=1) / math.sqrt(30))
    again = evaluate(learner, fixed, batch=30)
    assert np.allclose(again.per_episode_loss, result.per_episode_loss, atol=1e-5)  # batching does not change scores


def test_mean_ci95_of_one_value_is_nan() -> None:
    mean, ci = mean_ci95(np.array([0.5]))
    assert mean == 0.5 and math.isnan(ci)


def test_config_budget_iterations_zero_trains_nothing(device: torch.device) -> None:
    config = dataclasses.replace(tiny_config("maml"))
    records = run(config, iterations=0, device=device)
    assert [type(r) for r in records] == [DevScore, End]


def tiny_real_config(protocol: str, image_size: int = 28, head: str = "mean") -> TrainConfig:
    """A few meta-iterations of a 2-block, 4-channel network on real Omniglot, scored on 4 dev episodes."""
    return TrainConfig(data=DataConfig(protocol=protocol, image_size=image_size),  # type: ignore[arg-type]
                       task=TaskConfig(ways=5, shots=1, query=2),
                       architecture=ArchConfig(blocks=2, channels=4, head=head),  # type: ignore[arg-type]
                       learner=LearnerConfig(strategy="fomaml", meta_batch=2, test_steps=2),
                       budget=BudgetConfig(iterations=3), evaluation=EvalConfig(dev_episodes=4, every=2, batch=4))


def check_records(records: list[object], protocol: str) -> Result:
    assert [type(r) for r in records] == [Step, Step, DevScore, Step, DevScore, End, Result]
    dev = [r for r in records if isinstance(r, DevScore)]
    assert [(r.iteration, r.final) for r in dev] == [(2, False), (3, True)]
    assert all(len(r.dev_losses) == 4 and np.isfinite(r.dev_losses).all() and 0 <= r.dev_accuracy <= 1 for r in dev)
    end, result = records[-2], records[-1]
    assert isinstance(end, End) and (end.status, end.iterations) == ("completed", 3)
    assert isinstance(result, Result) and result.path is None
    assert result.metrics.protocol == protocol and result.metrics.iterations == 3
    assert result.metrics.dev_loss == dev[-1].dev_loss and len(result.metrics.dev_history) == 2
    return result


@pytest.mark.slow
def test_train_iter_on_the_vinyals_protocol(omniglot: Path) -> None:
    records = list(train_iter(tiny_real_config("vinyals"), data=omniglot, device="cpu"))
    result = check_records(records, "vinyals")
    assert result.metrics.label_space == 1028 * 4  # four rotations of each training character, as separate classes


@pytest.mark.slow
def test_train_iter_on_the_lake_protocol(omniglot: Path) -> None:
    config = tiny_real_config("lake")
    result = check_records(list(train_iter(config, data=omniglot, device="cpu")), "lake")
    ws = load_workspace(config, omniglot, torch.device("cpu"))
    train = ws.splits["train"]
    assert result.metrics.label_space == len(train)  # no rotations: one class per character
    assert len(np.unique(ws.dataset.alphabet_of[train.characters])) == 25
    assert (train.characters < ws.dataset.background).all()


@pytest.mark.slow
def test_train_iter_at_another_image_size(omniglot: Path) -> None:
    config = tiny_real_config("maml", image_size=20, head="flatten")  # the flattened head fixes the input size
    result = check_records(list(train_iter(config, data=omniglot, device="cpu")), "maml")
    assert result.metrics.label_space == 1100 * 4  # the maml protocol rotates each class at random
    network = result.learner.network.eval()
    with torch.no_grad():
        assert network(torch.zeros(2, 1, 20, 20)).shape == (2, 5)
        with pytest.raises(RuntimeError):
            network(torch.zeros(2, 1, 28, 28))


# -- regression: Ctrl-C or SIGTERM ends the run with the learner trained so far, then is raised again ---------------

def interrupt_at(monkeypatch: pytest.MonkeyPatch, error: BaseException, call: int = 3) -> list[int]:
    """Make every learner's ``launch_meta_step`` (what the training loop calls) raise ``error`` at its ``call``-th
    call; returns the call counter."""
    calls = [0]
    for cls in {type(get_learner(tiny_config(s), 12)) for s in ("maml", "fomaml", "reptile", "metasgd", "pretrain")}:
        real = cls.launch_meta_step

        def launch(self: BaseLearner, episode: object, progress: float, _real: Any = real) -> dict[str, Any]:
            calls[0] += 1
            if calls[0] == call:
                raise error
            return _real(self, episode, progress)

        monkeypatch.setattr(cls, "launch_meta_step", launch)
    return calls


INTERRUPTED = dataclasses.replace(tiny_config("fomaml", meta_batch=2), architecture=ArchConfig(blocks=1, channels=4),
                                  budget=BudgetConfig(iterations=5), evaluation=EvalConfig(dev_episodes=3, every=100,
                                                                                           batch=3))


@pytest.mark.parametrize(("error", "signal_name"), [(Terminated(), "SIGTERM"), (KeyboardInterrupt(), "Ctrl-C")],
                         ids=["sigterm", "ctrl-c"])
def test_an_interrupt_ends_the_run_with_the_learner_trained_so_far_then_is_raised(
        monkeypatch: pytest.MonkeyPatch, error: BaseException, signal_name: str) -> None:
    workspace = synthetic_workspace()
    reference = list(train_iter(dataclasses.replace(INTERRUPTED, budget=BudgetConfig(iterations=2)), device="cpu",
                                workspace=workspace))[-1]  # the same run, stopped after 2 iterations by its budget
    calls = interrupt_at(monkeypatch, error)
    records: list[object] = []
    with pytest.raises(type(error)) as info:
        for record in train_iter(INTERRUPTED, device="cpu", workspace=workspace):
            records.append(record)
    assert info.value is error and calls[0] == 3  # the very interrupt, raised once the Result was handed over
    assert [type(r) for r in records] == [Step, Step, End, Result]
    end, result = records[-2], records[-1]
    assert isinstance(end, End) and isinstance(result, Result)
    reason = f"interrupted by {signal_name} after 2 iterations"
    assert (end.status, end.iterations, end.reason) == ("interrupted", 2, reason) and end.interrupt is error
    assert (result.metrics.status, result.metrics.reason, result.metrics.iterations) == ("interrupted", reason, 2)
    assert result.metrics.dev_loss is None  # not scored: the interrupt ends the run at once
    assert isinstance(reference, Result)
    kept, trained = result.learner.state_dict(), reference.learner.state_dict()
    assert kept.keys() == trained.keys() and all(torch.equal(kept[k], trained[k]) for k in kept)


def test_an_interrupt_in_meta_train_yields_an_interrupted_end(monkeypatch: pytest.MonkeyPatch) -> None:
    interrupt_at(monkeypatch, Terminated())
    records = []
    learner = get_learner(INTERRUPTED, 48)
    learner.init_params(torch.Generator().manual_seed(0))
    try:
        for record in meta_train(learner, synthetic_sampler(), BudgetConfig(6), meta_batch=2,
                                 generator=torch.Generator().manual_seed(1), dev=synthetic_sampler().fixed(4, seed=0),
                                 eval_every=1, eval_every_seconds=None, eval_batch=4):
            records.append(record)
    except KeyboardInterrupt:  # caught here, or pytest would take it for the user's Ctrl-C and stop the session
        pytest.fail("the interrupt escaped meta_train: it should end the run with an End record holding it")
    assert [type(r) for r in records] == [Step, DevScore, Step, DevScore, End]
    end = records[-1]
    assert isinstance(end, End) and end.status == "interrupted" and isinstance(end.interrupt, Terminated)
    assert end.reason == "interrupted by SIGTERM after 2 iterations" and end.iterations == 2


@pytest.mark.slow
def test_lakes_one_shot_task_trains_and_scores_within_one_alphabet(tmp_path: Path, omniglot: Path) -> None:
    """20-way 1-shot episodes within one alphabet, trained on the background alphabets, scored on the evaluation ones."""
    import json

    config = tmp_path / "lake.yaml"
    config.write_text("name: lake\ndata: {protocol: lake}\ntask: {ways: 20, shots: 1, query: 1, within_alphabet: true}\n"
                      "architecture: {blocks: 2, channels: 4}\nlearner: {strategy: fomaml, meta_batch: 2, test_steps: 1}\n"
                      "budget: {iterations: 2}\nevaluation: {dev_episodes: 4, every: 100, batch: 4}\n")
    done = nas_meta_cli("-q", "train", str(config), "--out", str(tmp_path / "run"), "--data", str(omniglot))
    assert done.returncode == 0, done.stderr[-2000:]
    scored = nas_meta_cli("-q", "evaluate", str(tmp_path / "run"), "--split", "test", "--episodes", "8", "--data",
                          str(omniglot))
    assert scored.returncode == 0, scored.stderr[-2000:]
    result = json.loads(scored.stdout)
    assert (result["within_alphabet"], result["ways"], result["episodes"], result["protocol"]) == (True, 20, 8, "lake")
    assert 0 <= result["accuracy"] <= 1


@pytest.mark.slow
def test_a_zero_head_learner_trained_at_5_ways_is_scored_at_20(tmp_path: Path, omniglot: Path) -> None:
    import json

    config = tmp_path / "zero.yaml"
    config.write_text("name: zero\ntask: {ways: 5, shots: 1, query: 2}\narchitecture: {blocks: 2, channels: 4}\n"
                      "learner: {strategy: maml, head: zero, meta_batch: 2, test_steps: 2}\n"
                      "budget: {iterations: 2}\nevaluation: {dev_episodes: 4, every: 100, batch: 4}\n")
    done = nas_meta_cli("-q", "train", str(config), "--out", str(tmp_path / "run"), "--data", str(omniglot))
    assert done.returncode == 0, done.stderr[-2000:]
    for ways in (20, 3):
        scored = nas_meta_cli("-q", "evaluate", str(tmp_path / "run"), "--ways", str(ways), "--episodes", "6",
                              "--data", str(omniglot))
        assert scored.returncode == 0, scored.stderr[-2000:]
        assert (json.loads(scored.stdout)["ways"], json.loads(scored.stdout)["episodes"]) == (ways, 6)


# -- meta-training episodes of another shape than the dev and test episodes (task.train_ways, task.train_shots) ------

@pytest.mark.parametrize(("strategy", "head"), [("maml", "zero"), ("fomaml", "shared"), ("pretrain", "fixed")])
def test_meta_training_takes_the_train_shape_and_dev_scoring_the_task_shape(
        monkeypatch: pytest.MonkeyPatch, strategy: str, head: str) -> None:
    config = dataclasses.replace(
        INTERRUPTED, task=TaskConfig(ways=4, shots=1, query=2, train_ways=3, train_shots=2),
        learner=LearnerConfig(strategy=strategy, head=head, meta_batch=2, test_steps=1),  # type: ignore[arg-type]
        budget=BudgetConfig(iterations=2), evaluation=EvalConfig(dev_episodes=3, every=1, batch=3))
    shapes: dict[str, set[tuple[int, int]]] = {"train": set(), "scored": set()}
    cls = type(get_learner(config, 6))
    real_step, real_scores = cls.launch_meta_step, cls.query_scores

    def step(self: BaseLearner, episode: Any, progress: float) -> dict[str, Any]:
        shapes["train"].add((int(episode.support_y.max()) + 1, episode.support_y.shape[1]))
        return real_step(self, episode, progress)

    def scores(self: BaseLearner, episode: Any, *args: Any, **kwargs: Any) -> Any:
        shapes["scored"].add((int(episode.support_y.max()) + 1, episode.support_y.shape[1]))
        return real_scores(self, episode, *args, **kwargs)

    monkeypatch.setattr(cls, "launch_meta_step", step)
    monkeypatch.setattr(cls, "query_scores", scores)
    result = list(train_iter(config, device="cpu", workspace=synthetic_workspace()))[-1]
    assert isinstance(result, Result) and result.metrics.iterations == 2 and result.metrics.dev_loss is not None
    assert shapes == {"train": {(3, 6)}, "scored": {(4, 4)}}  # 3 ways x 2 shots in training; 4 x 1 for dev episodes


@pytest.mark.slow
def test_train_ways_beyond_the_training_split_is_refused_by_name(omniglot: Path) -> None:
    config = dataclasses.replace(tiny_real_config("lake"), task=TaskConfig(ways=5, shots=1, query=2, train_ways=900),
                                 learner=LearnerConfig(strategy="maml", head="zero"))
    with pytest.raises(ConfigError, match=r"^task.train_ways=900 is more than the \d+ classes of the 'lake' protocol's "
                                          r"train split; use at most \d+\.$"):
        load_workspace(config, omniglot, torch.device("cpu"))
