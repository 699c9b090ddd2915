"""Reptile's outer update equals θ + ε_t (mean φ_i − θ) with φ_i from an explicit inner loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from nas_meta.learners import get_learner
from tests.learners.helpers import tiny_config, tiny_episode


@pytest.mark.parametrize("progress", [0.0, 0.25])
def test_update_equals_formula_with_sgd_inner_loop(progress: float, device: torch.device) -> None:
    learner = get_learner(tiny_config("reptile", train_steps=3, meta_step=0.8, inner_lr=0.1), 10)
    learner.init_params(torch.Generator().manual_seed(0))
    learner.to(device)
    episode = tiny_episode(device=device)
    net = learner.network
    theta = {k: p.detach().clone() for k, p in net.named_parameters()}
    finals = []
    for t in range(episode.tasks):
        x = torch.cat([episode.support_x[t], episode.query_x[t]])
        y = torch.cat([episode.support_y[t], episode.query_y[t]])
        phi = {k: v.clone().requires_grad_() for k, v in theta.items()}
        for _ in range(3):
            grads = torch.autograd.grad(F.cross_entropy(functional_call(net, phi, (x,)), y), list(phi.values()))
            phi = {k: (p - 0.1 * g).detach().requires_grad_() for (k, p), g in zip(phi.items(), grads)}
        finals.append(phi)
    metrics = learner.meta_step(episode, progress)
    epsilon = 0.8 * (1 - progress)
    assert metrics["meta_step"] == pytest.approx(epsilon)
    for name, p in net.named_parameters():
        mean_phi = torch.stack([f[name].detach() for f in finals]).mean(0)
        assert torch.allclose(p.detach(), theta[name] + epsilon * (mean_phi - theta[name]), atol=1e-6), name


def test_meta_step_size_anneals_to_zero(device: torch.device) -> None:
    learner = get_learner(tiny_config("reptile", meta_step=1.0), 10).to(device)
    before = {k: p.detach().clone() for k, p in learner.network.named_parameters()}
    assert learner.meta_step(tiny_episode(device=device), 1.0)["meta_step"] == 0.0
    for name, p in learner.network.named_parameters():
        assert torch.equal(p.detach(), before[name])


def test_adam_inner_loop_moves_towards_the_task_solution(device: torch.device) -> None:
    learner = get_learner(tiny_config("reptile", inner_optimizer="adam", inner_lr=0.01, train_steps=5), 10).to(device)
    episode = tiny_episode(device=device)
    adapted = learner.adapt(episode.support_x, episode.support_y, ways=3, steps=10)
    assert adapted["head.weight"].shape == (4, 3, 4)
    _before, _ = learner.query_scores(episode, steps=0)
    x, y = episode.support_x, episode.support_y
    net = learner.network
    losses = [F.cross_entropy(functional_call(net, {k: v[t] for k, v in adapted.items()}, (x[t],)), y[t]) for t in range(4)]
    start = [F.cross_entropy(net(x[t]), y[t]) for t in range(4)]
    assert all(float(a) < float(b.detach()) for a, b in zip(losses, start))
