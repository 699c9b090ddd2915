"""Multi-task pre-training over pooled classes, then fine-tuning a fresh head; random init control."""

from __future__ import annotations

import torch

from nas_meta.learners import get_learner
from tests.learners.helpers import tiny_config, tiny_episode


def test_pretraining_learns_the_pooled_labels(device: torch.device) -> None:
    learner = get_learner(tiny_config("pretrain", outer_lr=0.01), 10)
    assert learner.network.get_submodule("head").out_features == 10
    learner.init_params(torch.Generator().manual_seed(0))
    learner.to(device)
    episode = tiny_episode(tasks=4, device=device)
    first = learner.meta_step(episode, 0.0)["loss"]
    for _ in range(150):
        last = learner.meta_step(episode, 0.0)["loss"]
    assert last < 0.5 * first


def test_fine_tuning_starts_from_a_zero_head_of_any_width(device: torch.device) -> None:
    learner = get_learner(tiny_config("pretrain"), 10).to(device)
    episode = tiny_episode(tasks=2, ways=5, device=device)
    start = learner.starting_params(5)
    assert start["head.weight"].device == start["head.bias"].device == episode.support_x.device
    assert torch.count_nonzero(start["head.weight"]) == 0 and start["head.weight"].shape == (5, 4)
    losses, _ = learner.query_scores(episode, steps=0)
    assert torch.allclose(losses, torch.full_like(losses, torch.log(torch.tensor(5.0)).item()), atol=1e-5)
    tuned, _ = learner.query_scores(episode, steps=5)
    assert tuned.shape == (2,) and bool(torch.isfinite(tuned).all())


def test_random_init_does_not_train_and_adapts_any_ways(device: torch.device) -> None:
    learner = get_learner(tiny_config("random", init="orthogonal"), 10).to(device)
    assert learner.trains is False
    before = [p.detach().clone() for p in learner.parameters()]
    assert learner.meta_step(tiny_episode(device=device), 0.5) == {}
    assert all(torch.equal(a, b) for a, b in zip(before, learner.parameters()))
    episode = tiny_episode(tasks=2, ways=4, device=device)
    adapted = learner.adapt(episode.support_x, episode.support_y, ways=4)
    assert adapted["head.weight"].shape == (2, 4, 4)
