"""MAML / FOMAML meta-steps against an explicit per-task autograd loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from nas_meta.errors import ConfigError
from nas_meta.learners import LEARNERS, MAML, get_learner
from tests.learners.helpers import tiny_config, tiny_episode


def reference_meta_gradient(learner: MAML, episode, lr: float, steps: int, first_order: bool):
    net = learner.network
    params = {k: p.detach().clone().requires_grad_() for k, p in net.named_parameters()}
    total = 0.0
    for t in range(episode.tasks):
        adapted = dict(params)
        for _ in range(steps):
            loss = F.cross_entropy(functional_call(net, adapted, (episode.support_x[t],)), episode.support_y[t])
            grads = torch.autograd.grad(loss, list(adapted.values()), create_graph=not first_order)
            adapted = {k: p - lr * g for (k, p), g in zip(adapted.items(), grads)}
        total = total + F.cross_entropy(functional_call(net, adapted, (episode.query_x[t],)), episode.query_y[t])
    grads = torch.autograd.grad(total / episode.tasks, list(params.values()))
    return dict(zip(params, grads))


@pytest.mark.parametrize(("strategy", "first_order"), [("maml", False), ("fomaml", True)])
@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("chunk", [None, 1, 3])  # the whole meta-batch at once, one task a pass, uneven chunks 3 + 1
def test_meta_step_gradient_equals_per_task_loop(strategy: str, first_order: bool, steps: int, chunk: int | None,
                                                 device: torch.device) -> None:
    config = tiny_config(strategy, train_steps=steps)
    learner = get_learner(config, 10)
    assert isinstance(learner, MAML) and learner.first_order is first_order
    learner.init_params(torch.Generator().manual_seed(0))
    learner.to(device)
    learner.chunk_tasks = chunk
    episode = tiny_episode(device=device)
    expected = reference_meta_gradient(learner, episode, 0.3, steps, first_order)
    with torch.no_grad():
        query_loss, _ = learner.query_scores(episode, steps=steps)  # the same adaptation, before the update
    before = {k: p.detach().clone() for k, p in learner.network.named_parameters()}
    metrics = learner.meta_step(episode, 0.0)
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert metrics["loss"] == pytest.approx(float(query_loss.mean()), rel=1e-5)  # the mean over every chunk's tasks
    for name, p in learner.network.named_parameters():
        assert p.grad is not None
        assert torch.allclose(p.grad, expected[name], atol=2e-5, rtol=1e-4), name
        assert not torch.equal(p.detach(), before[name])  # Adam moved every parameter


def test_second_and_first_order_differ(device: torch.device) -> None:
    episode = tiny_episode(device=device)
    grads = {}
    for strategy in ("maml", "fomaml"):
        learner = get_learner(tiny_config(strategy), 10)
        learner.init_params(torch.Generator().manual_seed(0))
        learner.to(device)
        learner.meta_step(episode, 0.0)
        grads[strategy] = torch.cat([p.grad.flatten() for p in learner.network.parameters()])
    assert not torch.allclose(grads["maml"], grads["fomaml"], atol=1e-6)


def test_adaptation_is_fixed_to_the_trained_ways() -> None:
    learner = get_learner(tiny_config("maml"), 10)
    with pytest.raises(ConfigError, match=r"ways=5: this maml learner meta-learned a 3-way head"):
        learner.template(5)


def test_unknown_strategy_lists_the_known_ones() -> None:
    import dataclasses

    config = tiny_config()
    bad = dataclasses.replace(config, learner=dataclasses.replace(config.learner, strategy="mamll"))
    with pytest.raises(ConfigError) as info:
        get_learner(bad, 10)
    assert str(info.value) == f"learner.strategy='mamll' is not one of {sorted(LEARNERS)}."


def test_tasks_per_chunk_keeps_a_gpu_batch_whole_and_sizes_cpu_chunks_by_activation_memory() -> None:
    from nas_meta.functional import CHUNK_BYTES, tasks_per_chunk

    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)  # a device object only: nothing is allocated
    assert tasks_per_chunk(16, 200, 64, 28 * 28, gpu) == 16
    per_task = 200 * 64 * 28 * 28 * 4  # 20w5s: 100 support + 100 query images
    assert tasks_per_chunk(16, 200, 64, 28 * 28, cpu) == CHUNK_BYTES // per_task == 2
    assert tasks_per_chunk(32, 10, 64, 28 * 28, cpu) == 32  # 5w1s, one query image: one chunk
    assert tasks_per_chunk(32, 50, 64, 28 * 28, cpu) == 10  # 5w5s
    assert tasks_per_chunk(4, 10**6, 64, 28 * 28, cpu) == 1  # never fewer than one task


def test_episode_chunks_are_consecutive_views_covering_every_task() -> None:
    episode = tiny_episode(tasks=7)
    parts = list(episode.chunks(3))
    assert [p.tasks for p in parts] == [3, 3, 1]
    assert torch.equal(torch.cat([p.query_x for p in parts]), episode.query_x)
    assert torch.equal(torch.cat([p.class_ids for p in parts]), episode.class_ids)
    assert parts[1].support_x.data_ptr() == episode.support_x[3].data_ptr()  # a view, not a copy
