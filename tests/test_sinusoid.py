"""The sinusoid task family (MAML paper, section 5.1): its tasks, its config, both engines on regression, every
strategy, the regression API, and a study, a training run and a comparison that need no data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.func import functional_call

from nas_meta import ConfigError, load_learner, objectives
from nas_meta import functional as Fn
from nas_meta.architectures import build_network
from nas_meta.config import STRATEGIES, ArchConfig, load_train_config, train_config_from_dict
from nas_meta.learners import get_learner
from nas_meta.sinusoid import AMPLITUDE, PHASE, X_RANGE, SinusoidSampler, SinusoidTasks
from nas_meta.training import Result, evaluate, train_iter
from tests.conftest import REPO, nas_meta_cli

BASELINES = REPO / "studies" / "baselines"


def sinusoid(**sections: object) -> object:
    return train_config_from_dict({"task": {"family": "sinusoid"}, **sections})


# -- tasks ----------------------------------------------------------------------------------------------------

def test_a_task_is_one_sinusoid_drawn_in_the_papers_ranges() -> None:
    sampler = SinusoidSampler(5, 7, "train split", torch.device("cpu"))
    index = sampler.sample_index(torch.Generator().manual_seed(0), 400)
    episode = sampler.build(index)
    assert episode.support_x.shape == (400, 5, 1) and episode.query_x.shape == (400, 7, 1)
    assert episode.support_y.shape == (400, 5, 1) and episode.support_y.dtype == torch.float32
    assert episode.class_ids.shape == (400, 1) and not episode.class_ids.any()
    assert AMPLITUDE[0] <= float(index.amplitude.min()) and float(index.amplitude.max()) <= AMPLITUDE[1]
    assert PHASE[0] <= float(index.phase.min()) and float(index.phase.max()) <= PHASE[1]
    assert X_RANGE[0] <= float(index.x.min()) and float(index.x.max()) <= X_RANGE[1]
    # the draws cover their ranges (400 tasks: the extremes lie within 5% of the ends)
    assert float(index.amplitude.max()) > 4.7 and float(index.amplitude.min()) < 0.4
    x = torch.cat([episode.support_x, episode.query_x], dim=1)[..., 0].double()
    y = torch.cat([episode.support_y, episode.query_y], dim=1)[..., 0].double()
    expected = index.amplitude.double()[:, None] * torch.sin(x - index.phase.double()[:, None])
    assert torch.allclose(y, expected, atol=1e-5)


def test_fixed_sets_depend_on_split_shape_and_seed_alone() -> None:
    def xs(split: str, shots: int = 5, seed: int = 0) -> torch.Tensor:
        fixed = SinusoidSampler(shots, 5, split, torch.device("cpu")).fixed(20, seed)
        return torch.cat([b.support_x for b in fixed.batches(7)])

    assert len(SinusoidSampler(5, 5, "dev split", torch.device("cpu")).fixed(20, 0)) == 20
    assert torch.equal(xs("dev split"), xs("dev split"))  # every learner is scored on the same tasks
    assert not torch.equal(xs("dev split"), xs("test split"))
    assert not torch.equal(xs("dev split"), xs("dev split", seed=1))
    assert not torch.equal(xs("dev split")[:, :5], xs("dev split", shots=10)[:, :5])


def test_training_draws_follow_the_generator() -> None:
    sampler = SinusoidTasks(torch.device("cpu")).task_sampler("train", sinusoid().task)
    a = sampler.sample(torch.Generator().manual_seed(3), 4)
    b = sampler.sample(torch.Generator().manual_seed(3), 4)
    c = sampler.sample(torch.Generator().manual_seed(4), 4)
    assert torch.equal(a.support_y, b.support_y) and not torch.equal(a.support_y, c.support_y)


# -- config ---------------------------------------------------------------------------------------------------

def test_the_family_brings_the_papers_network_and_rates_and_keeps_what_a_file_sets() -> None:
    config = sinusoid()
    assert (config.task.ways, config.task.shots, config.task.query) == (1, 10, 10)
    arch = config.architecture
    assert (arch.kind, arch.blocks, arch.channels, arch.norm, arch.activation) == ("mlp", 2, 40, "none", "relu")
    assert (config.learner.inner_lr, config.learner.meta_batch, config.learner.init) == (0.01, 25, "xavier")
    assert config.network_input() == (1, 1)
    mine = sinusoid(architecture={"channels": 80, "activation": "tanh"}, learner={"inner_lr": 0.05})
    assert (mine.architecture.channels, mine.architecture.activation, mine.architecture.blocks) == (80, "tanh", 2)
    assert mine.learner.inner_lr == 0.05
    assert train_config_from_dict(mine.to_dict()) == mine
    omniglot = train_config_from_dict({})  # Omniglot's defaults are untouched
    assert (omniglot.task.family, omniglot.architecture.kind, omniglot.learner.inner_lr) == ("omniglot", "conv", 0.4)


@pytest.mark.parametrize(("data", "message"), [
    ({"task": {"family": "sinusoid", "ways": 5}},
     "task.ways=5 is not allowed: expected 1 with task.family: sinusoid (one regression output)."),
    ({"task": {"family": "sinusoid"}, "architecture": {"kind": "conv", "norm": "batch"}},
     ("architecture.kind='conv' is not allowed: expected 'mlp' with task.family: sinusoid (its inputs are numbers, "
     "not images).")),
    ({"task": {"family": "sinusoid", "within_alphabet": True}},
     "task.within_alphabet=True is not allowed: expected false with task.family: sinusoid (alphabets are Omniglot's)."),
    ({"task": {"family": "sinusoid", "shots": 60_000, "query": 60_000}},
     "task.shots + task.query=120000 is not allowed: expected at most 100000 points per sinusoid task."),
    ({"task": {"family": "sinusoid"}, "architecture": {"norm": "batch"}},
     ("architecture.norm='batch' is not allowed: expected 'none' with kind: mlp (the norms are those of convolutional "
     "feature maps).")),
    ({"task": {"family": "sine"}}, "task.family='sine' is not one of ['omniglot', 'sinusoid']."),
    ({"task": {"family": ["sinusoid"]}}, "task.family=['sinusoid'] is not one of ['omniglot', 'sinusoid']."),
])
def test_a_bad_sinusoid_config_names_the_field_the_value_and_what_is_allowed(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        train_config_from_dict(data)
    assert str(info.value) == message


def test_a_malformed_section_is_named_not_merged() -> None:
    with pytest.raises(ConfigError, match="architecture must be a mapping"):
        train_config_from_dict({"task": {"family": "sinusoid"}, "architecture": [1, 2]})


# -- the math: both engines on regression, against a per-task loop ---------------------------------------------

def _mlp(device: torch.device, activation: str = "tanh") -> torch.nn.Module:
    torch.manual_seed(0)
    return build_network(ArchConfig(kind="mlp", blocks=2, channels=8, norm="none", activation=activation), 1, 1,
                         1).double().to(device)


def _tasks(device: torch.device, tasks: int = 3) -> tuple[torch.Tensor, ...]:
    sampler = SinusoidSampler(4, 6, "test", torch.device("cpu"))
    e = sampler.build(sampler.sample_index(torch.Generator().manual_seed(1), tasks))
    return tuple(t.double().to(device) for t in (e.support_x, e.support_y, e.query_x, e.query_y))


def loop_meta_gradient(net, params, xs, ys, xq, yq, lr, steps, first_order):
    """Reference: one task at a time, squared error written out, torch.autograd.grad(create_graph=True)."""
    total = 0.0
    for t in range(xs.shape[0]):
        adapted = dict(params)
        for _ in range(steps):
            loss = ((functional_call(net, adapted, (xs[t],)) - ys[t]) ** 2).mean()
            grads = torch.autograd.grad(loss, list(adapted.values()), create_graph=not first_order)
            adapted = {k: p - lr * g for (k, p), g in zip(adapted.items(), grads)}
        total = total + ((functional_call(net, adapted, (xq[t],)) - yq[t]) ** 2).mean()
    mean = total / xs.shape[0]
    return mean, torch.autograd.grad(mean, list(params.values()))


@pytest.mark.parametrize("engine", ["tasks", "vmap"])
@pytest.mark.parametrize("first_order", [False, True])
def test_both_engines_equal_the_per_task_loop_on_regression(engine: str, first_order: bool,
                                                            device: torch.device) -> None:
    net = _mlp(device)
    params = {k: p.detach().clone().requires_grad_() for k, p in net.named_parameters()}
    data = _tasks(device)
    ref_loss, ref_grads = loop_meta_gradient(net, params, *data, 0.05, 3, first_order)
    losses, accuracies = Fn.batched_query_loss(net, params, {}, *data, adapt=Fn.InnerLoop(3, 0.05, first_order),
                                               engine=engine)
    loss = losses.mean()
    grads = torch.autograd.grad(loss, list(params.values()))
    assert torch.allclose(loss, ref_loss, atol=1e-10)
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, atol=1e-10, rtol=1e-8)
    assert torch.isnan(accuracies).all()  # regression has no accuracy


def test_objectives_read_the_task_kind_from_its_targets() -> None:
    out = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0])
    assert torch.allclose(objectives.example_losses(out, labels),
                          torch.nn.functional.cross_entropy(out, labels, reduction="none"))
    assert objectives.example_correct(out, labels).tolist() == [1.0, 0.0]
    targets = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    assert objectives.example_losses(out, targets).tolist() == [0.5, 2.0]
    assert float(objectives.mean_loss(out, targets)) == 1.25
    assert torch.isnan(objectives.example_correct(out, targets)).all()


# -- every strategy ---------------------------------------------------------------------------------------------

REPTILE = {"inner_optimizer": "sgd", "inner_lr": 0.02, "train_steps": 4, "inner_batch": 5, "meta_step": 0.1}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_trains_and_scores_a_regression_meta_batch(strategy: str, device: torch.device) -> None:
    learner_fields = {"strategy": strategy, "meta_batch": 4, **(REPTILE if strategy == "reptile" else {})}
    config = sinusoid(task={"family": "sinusoid", "shots": 5, "query": 5}, learner=learner_fields)
    learner = get_learner(config, 1)
    learner.init_params(torch.Generator().manual_seed(0))
    learner.to(device)
    sampler = SinusoidSampler(5, 5, "train", device)
    before = {k: v.detach().clone() for k, v in learner.state_dict().items()}
    metrics = learner.meta_step(sampler.sample(torch.Generator().manual_seed(0), 4), 0.0)
    changed = any(not torch.equal(before[k], v) for k, v in learner.state_dict().items())
    assert changed is (strategy != "random")
    if "loss" in metrics:  # (Reptile reports its step size; random init does not train)
        assert math.isfinite(metrics["loss"]) and math.isnan(metrics["accuracy"])
    result = evaluate(learner, SinusoidSampler(5, 5, "dev", device).fixed(6, 0), batch=4)
    assert result.accuracy is None and result.accuracy_ci95 is None
    assert math.isfinite(result.loss) and result.loss > 0 and len(result.per_episode_loss) == 6


@pytest.mark.slow
def test_maml_learns_to_adapt_far_better_than_a_random_init() -> None:
    """600 meta-iterations of the shipped 10-shot MAML against fine-tuning from a random init, same dev tasks."""
    scores = {}
    for strategy in ("maml", "random"):
        config = load_train_config(BASELINES / "maml-sinusoid-10s.yaml",
                                   ["budget.iterations=600", "evaluation.every=600", f"learner.strategy={strategy}"])
        result = next(r for r in train_iter(config, device="cpu") if isinstance(r, Result))
        scores[strategy] = result.metrics.dev_loss
    assert scores["random"] > 2.0  # fine-tuning 10 steps from scratch barely moves off the mean (about A^2 / 2)
    assert scores["maml"] < 0.4 * scores["random"]


# -- the regression API -------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_trained_regression_learner_adapts_to_points_and_predicts(tmp_path: Path) -> None:
    done = nas_meta_cli("-q", "train", str(BASELINES / "maml-sinusoid-10s.yaml"), "--out", str(tmp_path / "run"),
                        "--set", "budget.iterations=800", "--set", "evaluation.every=800", "--device", "cpu")
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads(done.stdout)
    assert metrics["family"] == "sinusoid" and metrics["protocol"] is None and metrics["dev_accuracy"] is None
    learner = load_learner(tmp_path / "run")
    x = np.linspace(-5, 5, 10)
    curve = learner.adapt_points(x, 3.0 * np.sin(x - 1.0))
    grid = np.linspace(-4.5, 4.5, 50)
    predicted = curve.predict(grid)
    assert predicted.shape == (50,) and predicted.dtype == np.float32
    adapted_error = float(np.mean((predicted - 3.0 * np.sin(grid - 1.0)) ** 2))
    assert adapted_error < 0.5 * float(np.mean((3.0 * np.sin(grid - 1.0)) ** 2))  # it fits the curve, not zero
    assert np.allclose(curve.module()(torch.as_tensor(grid, dtype=torch.float32)[:, None])[:, 0].detach().numpy(),
                       predicted)
    with pytest.raises(ConfigError, match="adapt it with adapt_points"):
        learner.adapt(np.zeros((2, 28, 28)), [0, 1])
    with pytest.raises(ValueError, match="got 10 x values but 3 y values"):
        learner.adapt_points(x, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="NaN or infinite"):
        curve.predict([0.0, float("inf")])
    evaluated = nas_meta_cli("evaluate", str(tmp_path / "run"), "--episodes", "50", "--shots", "5", "--device", "cpu")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    report = json.loads(evaluated.stdout)
    assert (report["family"], report["shots"], report["accuracy"], report["episodes"]) == ("sinusoid", 5, None, 50)
    assert 0 < report["loss"] < 10 and report["loss_ci95"] > 0


# -- a study and a comparison with no data ------------------------------------------------------------------------

@pytest.mark.slow
def test_the_sinusoid_smoke_study_runs_with_no_omniglot_anywhere(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAS_META_DATA", str(tmp_path / "no-such-folder"))  # a search that looked for Omniglot fails
    done = nas_meta_cli("-q", "search", "sinusoid-smoke", "--storage", f"journal:{tmp_path / 's.journal'}",
                        "--device", "cpu", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["trials"] == 6  # the study's n_trials, its two baselines among them
    for name in ("maml", "reptile"):
        baseline = summary["baselines"][name]
        assert baseline["state"] == "COMPLETE" and baseline["dev_accuracy"] is None
        assert 0 < baseline["dev_loss"] < 20


@pytest.mark.slow
def test_compare_scores_regression_by_the_query_mse_on_the_same_tasks(tmp_path: Path) -> None:
    config = tmp_path / "cand.yaml"
    config.write_text("name: cand\ntask: {family: sinusoid, shots: 5, query: 5}\narchitecture: {channels: 20}\n"
                      "learner: {strategy: fomaml}\nbudget: {iterations: 30}\nevaluation: {dev_episodes: 5, every: 100}\n")
    done = nas_meta_cli("compare", str(config), "--seeds", "2", "--episodes", "40", "--out", str(tmp_path / "cmp"),
                        "--baselines", "maml,pretrain", "--device", "cpu", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    table = pd.read_csv(tmp_path / "cmp" / "comparison.csv")
    assert list(table["strategy"]) == ["fomaml", "maml", "pretrain"]
    assert "test_accuracy" not in table.columns and (table["test_mse"] > 0).all()
    assert (table["test_mse_ci95"] > 0).all() and np.isfinite(table["diff_vs_maml"].iloc[0])
    runs = pd.read_csv(tmp_path / "cmp" / "runs.csv")
    assert len(runs) == 6 and (runs["test_mse"] > 0).all()
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert md.startswith("# Sinusoid regression, 5-shot: candidate vs baselines")
    candidate = table.iloc[0]
    assert f"| {candidate['test_mse']:.4f} ± {candidate['test_mse_ci95']:.4f} |" in md
    assert f"vs maml: {candidate['diff_vs_maml']:+.4f} ± {candidate['diff_vs_maml_ci95']:.4f}" in md
    assert "pts" not in md and "%" not in md.split("\n", 3)[3]


def test_the_studies_listing_names_the_family_not_a_protocol(capsys: pytest.CaptureFixture[str]) -> None:
    from nas_meta.cli import main

    assert main(["studies"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")}
    assert "sinusoid regression, 10-shot, space sinusoid, 6 trials" in lines["sinusoid-smoke"]
    assert "5-way 1-shot Omniglot (maml protocol), space lr-init, 6 trials" in lines["smoke"]
