"""DARTS-style cells: the config, the network, meta-gradients against the per-task loop, and the cell search space."""

from __future__ import annotations

import dataclasses
import math

import optuna
import pytest
import torch
from torch import nn

from nas_meta import functional as fn
from nas_meta import task_batched
from nas_meta.architectures import Cell, Zero, build_network, cell_operation, feature_shape, reduction_cells
from nas_meta.config import (
    CELL_OPS,
    ArchConfig,
    TrainConfig,
    apply_overrides,
    load_search_space,
    load_study_spec,
    train_config_from_dict,
)
from nas_meta.errors import ConfigError
from nas_meta.learners import MAML, get_learner
from nas_meta.search.space import baseline_params, suggest_config
from tests.conftest import REPO
from tests.learners.helpers import tiny_config, tiny_episode
from tests.learners.test_maml import reference_meta_gradient

# every operation appears: the normal cell has 3 nodes, the reduction cell 3 (edges 2j, 2j+1 feed node j)
NORMAL = (("sep_conv_3x3", 0), ("skip", 0), ("dil_conv_3x3", 1), ("max_pool_3x3", 0), ("none", 2), ("conv_5x5", 1))
REDUCE = (("avg_pool_3x3", 0), ("sep_conv_5x5", 0), ("skip", 0), ("conv_3x3", 1), ("max_pool_3x3", 2), ("skip", 1))


def cells(blocks: int = 3, channels: int = 4, **changes: object) -> ArchConfig:
    arch = ArchConfig(kind="cells", blocks=blocks, channels=channels, cell_nodes=3,
                      normal_ops=tuple(op for op, _ in NORMAL), normal_inputs=tuple(i for _, i in NORMAL),
                      reduce_ops=tuple(op for op, _ in REDUCE), reduce_inputs=tuple(i for _, i in REDUCE))
    return dataclasses.replace(arch, **changes)  # type: ignore[arg-type]


# -- config --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("changes", "message"), [
    ({"normal_ops": ("sep_conv_3x3", "skip", "conv_7x7", "none", "skip", "skip")},
     "architecture.normal_ops[2]='conv_7x7' is not allowed: expected one of " + str(list(CELL_OPS)) + "."),
    ({"reduce_inputs": (0, 0, 0, 2, 0, 1)},
     ("architecture.reduce_inputs[3]=2 is not allowed: expected an integer in [0, 1]: edge 3 feeds node 1, whose "
      "inputs are the cell's input (0) and the nodes before it (1..1).")),
    ({"cell_nodes": 2}, ("architecture.normal_ops=['sep_conv_3x3', 'skip', 'dil_conv_3x3', 'max_pool_3x3', 'none', "
                         "'conv_5x5'] is not allowed: expected 4 entries with kind: cells (2 edges per node, "
                         "cell_nodes=2).")),
    ({"cell_nodes": 5}, "architecture.cell_nodes=5 is not allowed: expected an integer in [1, 4]."),
    ({"normal_inputs": (0, 0, 1, 0, 2, True)}, "architecture.normal_inputs[5]=True is not allowed"),
])
def test_a_bad_cell_is_named_with_the_field_the_element_and_what_is_allowed(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        cells(**changes)
    assert str(info.value).startswith(message)


def test_a_cell_config_goes_through_a_file_and_back_and_a_conv_config_ignores_empty_cells() -> None:
    config = dataclasses.replace(TrainConfig(), architecture=cells())
    data = config.to_dict()
    assert data["architecture"]["normal_ops"] == [op for op, _ in NORMAL]  # lists: YAML and JSON
    assert train_config_from_dict(data) == config
    assert ArchConfig().kind == "conv" and ArchConfig().normal_ops == ()
    with pytest.raises(ConfigError, match=r"architecture.normal_ops=\[\] is not allowed: expected 6 entries"):
        ArchConfig(kind="cells")


def test_elements_rebuild_a_cell_field_from_zero_and_a_gap_is_named() -> None:
    config = dataclasses.replace(TrainConfig(), architecture=cells())
    edges = {f"architecture.normal_ops.{i}": "skip" for i in range(4)}
    inputs = {f"architecture.normal_inputs.{i}": 0 for i in range(4)}
    changed = apply_overrides(config, {"architecture.cell_nodes": 2, **edges, **inputs,
                                       **{f"architecture.reduce_ops.{i}": "none" for i in range(4)},
                                       **{f"architecture.reduce_inputs.{i}": 0 for i in range(4)}})
    assert changed.architecture.normal_ops == ("skip",) * 4 and changed.architecture.cell_nodes == 2
    with pytest.raises(ConfigError) as info:
        apply_overrides(config, {"architecture.normal_ops.0": "skip", "architecture.normal_ops.2": "skip"})
    assert str(info.value) == ("architecture.normal_ops.1 is not set, but architecture.normal_ops.2 is: a cell's "
                               "elements are set from 0 up, without a gap.")
    with pytest.raises(ConfigError, match=r"only the cell fields .* take elements one at a time"):
        apply_overrides(config, {"learner.inner_lr.0": 0.1})
    with pytest.raises(ConfigError, match=r"architecture.reduce_inputs\[4\]=3 is not allowed"):
        apply_overrides(config, {f"architecture.reduce_inputs.{i}": v for i, v in enumerate((0, 0, 1, 0, 3, 0))})


# -- the network ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("op", CELL_OPS)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("side", [7, 8])
def test_every_operation_keeps_the_channels_and_maps_a_side_to_its_ceiling_half(op: str, stride: int, side: int) -> None:
    module = cell_operation(op, 6, stride, ArchConfig())
    y = module(torch.rand(2, 6, side, side))
    assert y.shape == (2, 6, math.ceil(side / stride), math.ceil(side / stride))
    assert (y == 0).all() == (op == "none")
    assert isinstance(module, Zero) == (op == "none")


def test_a_node_sums_its_two_edges_and_the_cell_is_the_mean_of_its_nodes() -> None:
    cell = Cell([("skip", 0), ("skip", 0), ("skip", 1), ("none", 0)], 3, reduction=False, arch=ArchConfig())
    x = torch.rand(2, 3, 5, 5)
    assert torch.allclose(cell(x), (2 * x + 2 * x) / 2)  # node 1 = 2x, node 2 = node 1 + 0 = 2x; mean 2x
    reduce = Cell([("skip", 0), ("max_pool_3x3", 0)], 3, reduction=True, arch=ArchConfig())
    assert reduce(x).shape == (2, 3, 3, 3)


@pytest.mark.parametrize(("blocks", "size"), [(1, 28), (2, 28), (3, 28), (4, 28), (5, 8), (3, 84)])
@pytest.mark.parametrize("head", ["mean", "flatten"])
def test_cell_networks_have_their_reductions_where_documented_and_the_head_reads_the_right_width(
        blocks: int, size: int, head: str) -> None:
    arch = cells(blocks, 5, head=head)
    net = build_network(arch, 7, size)
    body = net.get_submodule("body")
    kinds = [m for m in body if isinstance(m, Cell)]
    assert len(kinds) == blocks
    for i, cell in enumerate(kinds):  # a reduction cell applies stride 2 on the cell's input
        strided = any(getattr(m, "stride", 1) in (2, (2, 2)) for m in cell.modules() if m is not cell)
        assert strided == (i in reduction_cells(blocks))
    channels, side = feature_shape(arch, size)
    features = body(torch.rand(3, 1, size, size))
    assert features.shape == ((3, channels * side * side) if head == "flatten" else (3, channels))
    assert net(torch.rand(3, 1, size, size)).shape == (3, 7)


@pytest.mark.parametrize("first_order", [False, True])
def test_both_engines_run_cells_and_agree(first_order: bool, device: torch.device) -> None:
    net = build_network(cells(), 3, 8).double().to(device)
    assert task_batched.supports(net)
    params = {k: p.detach().clone().requires_grad_() for k, p in net.named_parameters()}
    episode = tiny_episode(device=device)
    xs, xq = episode.support_x.double(), episode.query_x.double()
    results = []
    for engine in ("tasks", "vmap"):
        losses, _ = fn.batched_query_loss(net, params, {}, xs, episode.support_y, xq, episode.query_y,
                                          adapt=fn.InnerLoop(2, 0.3, first_order), engine=engine)  # type: ignore[arg-type]
        results.append((losses, torch.autograd.grad(losses.sum(), list(params.values()))))
    (loss_t, grads_t), (loss_v, grads_v) = results
    assert torch.allclose(loss_t, loss_v, atol=1e-10)
    for a, b in zip(grads_t, grads_v, strict=True):
        assert torch.allclose(a, b, atol=1e-10)


@pytest.mark.parametrize(("strategy", "first_order"), [("maml", False), ("fomaml", True)])
@pytest.mark.parametrize("steps", [1, 2])
def test_cell_meta_gradient_equals_the_per_task_loop(strategy: str, first_order: bool, steps: int,
                                                     device: torch.device) -> None:
    config = dataclasses.replace(tiny_config(strategy, train_steps=steps), architecture=cells())
    learner = get_learner(config, 10)
    assert isinstance(learner, MAML)
    learner.init_params(torch.Generator().manual_seed(0))
    learner.to(device)
    episode = tiny_episode(device=device)
    expected = reference_meta_gradient(learner, episode, 0.3, steps, first_order)
    learner.meta_step(episode, 0.0)
    grads = 0
    for name, p in learner.network.named_parameters():
        assert p.grad is not None, name
        assert torch.allclose(p.grad, expected[name], atol=2e-5, rtol=1e-4), name
        grads += int(p.grad.abs().sum() > 0)
    assert grads > len(list(learner.network.parameters())) // 2  # the gradient reaches the cells' weights


# -- the search space and the study --------------------------------------------------------------------------------

def test_the_cell_space_suggests_buildable_networks_of_both_kinds_with_only_the_edges_of_their_nodes() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_search_space(REPO / "search_spaces" / "cells.yaml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = {"conv": 0, "cells": 0}
    nodes = set()
    for _ in range(40):
        trial = study.ask()
        arch = suggest_config(trial, space, TrainConfig()).architecture
        seen[arch.kind] += 1
        if arch.kind == "cells":
            nodes.add(arch.cell_nodes)
            assert len(arch.normal_ops) == len(arch.reduce_inputs) == 2 * arch.cell_nodes
            assert not any(k.startswith("architecture.kernel") for k in trial.params)
            assert sum(k.startswith("architecture.normal_ops.") for k in trial.params) == 2 * arch.cell_nodes
        else:
            assert arch.normal_ops == () and not any("_ops." in k for k in trial.params)
        network = build_network(arch, 5, 28)
        assert network(torch.rand(2, 1, 28, 28)).shape == (2, 5)
        study.tell(trial, 1.0)
    assert seen["conv"] > 5 and seen["cells"] > 5 and nodes == {2, 3, 4}


def test_the_cells_study_loads_and_its_conv_baselines_are_points_of_its_space() -> None:
    spec = load_study_spec(REPO / "studies" / "omniglot-5w1s-cells.yaml")
    space = load_search_space(REPO / "search_spaces" / "cells.yaml")
    assert spec.search_space.endswith("cells.yaml")
    from nas_meta.config import load_train_config

    maml = load_train_config(REPO / "studies" / "baselines" / "maml-5w1s.yaml")
    params = baseline_params(space, maml)
    assert params["architecture.kind"] == "conv" and not any("_ops." in k for k in params)
    cell_learner = dataclasses.replace(maml, architecture=cells(channels=16))
    params = baseline_params(space, cell_learner)
    assert params["architecture.normal_ops.2"] == "dil_conv_3x3" and params["architecture.reduce_inputs.5"] == 1


def test_cell_edges_are_listed_in_node_order() -> None:
    assert cells().cell_edges("normal") == list(NORMAL) and cells().cell_edges("reduce") == list(REDUCE)
    assert isinstance(cell_operation("skip", 4, 2, ArchConfig()), nn.Sequential)  # a strided skip is a 1x1 conv


# -- end to end: a search of the cells study, a cell learner trained, saved, loaded and scored ---------------------

@pytest.mark.slow
def test_the_cells_study_searches_both_kinds_and_a_cell_learner_is_saved_loaded_and_scored(tmp_path, omniglot) -> None:  # type: ignore[no-untyped-def]
    import csv
    import json

    from tests.conftest import nas_meta_cli

    journal = f"journal:{tmp_path / 'cells.journal'}"
    searched = nas_meta_cli("-q", "search", "omniglot-5w1s-cells", "--storage", journal, "--n-trials", "6",
                            "--set", "budget.iterations=3", "--set", "evaluation.dev_episodes=4",
                            "--set", "evaluation.batch=4", "--data", str(omniglot))
    assert searched.returncode == 0, searched.stderr[-2000:]
    exported = nas_meta_cli("-q", "export", "--study-name", "omniglot-5w1s-cells", "--storage", journal,
                            "--out", str(tmp_path / "export"))
    assert exported.returncode == 0, exported.stderr[-2000:]
    with open(tmp_path / "export" / "trials.csv") as f:
        trials = list(csv.DictReader(f))
    kinds = {t["params.architecture.kind"] for t in trials if t["state"] == "COMPLETE"}
    assert kinds == {"conv", "cells"}  # the conv baselines and at least one sampled cell network trained

    arch = cells(channels=8).__dict__
    config = tmp_path / "cells.yaml"
    config.write_text(
        "name: cells\ntask: {ways: 5, shots: 1, query: 2}\n"
        f"architecture: {json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in arch.items()})}\n"
        "learner: {strategy: maml, meta_batch: 2, test_steps: 2}\n"
        "budget: {iterations: 2}\nevaluation: {dev_episodes: 4, every: 100, batch: 4}\n")
    trained = nas_meta_cli("-q", "train", str(config), "--out", str(tmp_path / "run"), "--data", str(omniglot))
    assert trained.returncode == 0, trained.stderr[-2000:]
    scored = nas_meta_cli("-q", "evaluate", str(tmp_path / "run"), "--episodes", "6", "--data", str(omniglot))
    assert scored.returncode == 0, scored.stderr[-2000:]
    result = json.loads(scored.stdout)
    assert result["episodes"] == 6 and 0 <= result["accuracy"] <= 1
