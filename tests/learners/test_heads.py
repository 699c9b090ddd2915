"""learner.head: fixed (today's), zero and shared heads for MAML and first-order MAML; adapting to any number of ways."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from nas_meta.config import TrainConfig, load_train_config
from nas_meta.errors import ConfigError
from nas_meta.learners import MAML, get_learner
from tests.learners.helpers import tiny_config, tiny_episode


def learner_with(head: str, strategy: str = "maml", device: torch.device | str = "cpu", **learner: object) -> MAML:
    built = get_learner(tiny_config(strategy, head=head, **learner), 10)
    assert isinstance(built, MAML) and built.head_mode == head
    built.init_params(torch.Generator().manual_seed(0))
    return built.to(device)  # type: ignore[return-value]


def reference(learner: MAML, episode, steps: int, first_order: bool) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The meta-gradient by an explicit per-task loop from the learner's starting head, and the mean query loss."""
    ways = int(episode.class_ids.shape[1])
    meta = {k: p for k, p in learner.named_parameters() if p.requires_grad}
    leaves = {k: p.detach().clone().requires_grad_() for k, p in meta.items()}
    body = {k.removeprefix("network."): v for k, v in leaves.items() if k.startswith("network.")}
    if learner.head_mode == "shared":
        head = {"head.weight": leaves["shared_head_weight"].expand(ways, -1),
                "head.bias": leaves["shared_head_bias"].expand(ways)}
    else:
        size = learner.network.head.in_features
        head = {"head.weight": torch.zeros(ways, size, device=episode.support_x.device, requires_grad=True),
                "head.bias": torch.zeros(ways, device=episode.support_x.device, requires_grad=True)}
    net = learner.template(ways)
    total = 0.0
    for t in range(episode.tasks):
        adapted = {**body, **head}
        for _ in range(steps):
            loss = F.cross_entropy(functional_call(net, adapted, (episode.support_x[t],)), episode.support_y[t])
            grads = torch.autograd.grad(loss, list(adapted.values()), create_graph=not first_order)
            adapted = {k: p - 0.3 * g for (k, p), g in zip(adapted.items(), grads)}
        total = total + F.cross_entropy(functional_call(net, adapted, (episode.query_x[t],)), episode.query_y[t])
    mean = total / episode.tasks
    grads = torch.autograd.grad(mean, list(leaves.values()), allow_unused=True)
    return {k: g if g is not None else torch.zeros_like(leaves[k]) for k, g in zip(leaves, grads)}, mean.detach()


@pytest.mark.parametrize("head", ["zero", "shared"])
@pytest.mark.parametrize(("strategy", "first_order"), [("maml", False), ("fomaml", True)])
@pytest.mark.parametrize("steps", [1, 2])
def test_meta_gradient_from_a_zero_or_shared_head_equals_the_per_task_loop(head: str, strategy: str, first_order: bool,
                                                                           steps: int, device: torch.device) -> None:
    learner = learner_with(head, strategy, device, train_steps=steps)
    learner.chunk_tasks = 3  # chunks too
    episode = tiny_episode(device=device)
    expected, mean_loss = reference(learner, episode, steps, first_order)
    metrics = learner.meta_step(episode, 0.0)
    assert metrics["loss"] == pytest.approx(float(mean_loss), rel=1e-5)
    for name, p in learner.named_parameters():
        if name.startswith("network.head."):
            assert p.grad is None and not p.requires_grad  # the network's own head is never used
        else:
            assert p.grad is not None and torch.allclose(p.grad, expected[name], atol=2e-5, rtol=1e-4), name


@pytest.mark.parametrize("head", ["zero", "shared"])
@pytest.mark.parametrize("ways", [2, 3, 5])  # fewer, as many and more ways than the learner was trained on (3)
def test_a_learner_with_a_zero_or_shared_head_adapts_to_any_number_of_ways(head: str, ways: int,
                                                                           device: torch.device) -> None:
    learner = learner_with(head, device=device)
    learner.meta_step(tiny_episode(device=device), 0.0)  # trained on 3-way tasks
    episode = tiny_episode(tasks=2, ways=ways, device=device)
    losses, accuracies = learner.query_scores(episode, steps=2)
    assert losses.shape == (2,) and torch.isfinite(losses).all() and ((0 <= accuracies) & (accuracies <= 1)).all()
    params = learner.adapt(episode.support_x, episode.support_y, ways=ways, steps=1)
    assert params["head.weight"].shape[-2] == ways and params["head.bias"].shape[-1] == ways
    learner.meta_step(tiny_episode(tasks=2, ways=ways, device=device), 0.0)  # and meta-trains on them too


def test_a_fixed_head_still_refuses_other_ways() -> None:
    learner = learner_with("fixed")
    with pytest.raises(ConfigError, match="meta-learned a 3-way head, so it adapts to 3-way tasks only"):
        learner.query_scores(tiny_episode(tasks=1, ways=5))


@pytest.mark.parametrize(("strategy", "head", "any_ways"), [
    ("maml", "fixed", False), ("maml", "zero", True), ("maml", "shared", True), ("fomaml", "fixed", False),
    ("fomaml", "zero", True), ("fomaml", "shared", True), ("reptile", "fixed", False), ("metasgd", "fixed", False),
    ("pretrain", "fixed", True), ("random", "fixed", True),
])
def test_the_config_says_which_learners_adapt_to_any_ways_and_every_learner_acts_on_it(strategy: str, head: str,
                                                                                     any_ways: bool) -> None:
    """One rule (``LearnerConfig.adapts_to_any_ways``) for config checks (task.train_ways) and learners alike."""
    config = tiny_config(strategy, head=head)
    assert config.learner.adapts_to_any_ways is any_ways
    assert config.learner.adaptation_head == ("zero" if strategy in ("pretrain", "random") else head)
    learner = get_learner(config, 10)
    learner.init_params(torch.Generator().manual_seed(0))
    assert learner.head_mode == config.learner.adaptation_head
    episode = tiny_episode(tasks=1, ways=5)  # the learner was built for 3-way tasks
    if any_ways:
        losses, _ = learner.query_scores(episode, steps=1)
        assert torch.isfinite(losses).all()
    else:
        with pytest.raises(ConfigError, match="so it adapts to 3-way tasks only .learner.head: zero or shared"):
            learner.query_scores(episode, steps=1)


def test_a_shared_head_gets_no_meta_gradient_and_adapts_exactly_as_a_zero_head() -> None:
    """Copied to every class, the shared row adds the same logit to each: softmax cancels it, in the inner steps'
    gradients and in the query loss. So a shared head learns nothing that a zero head does not (for SGD or Adam
    inner loops on a linear softmax head)."""
    shared, zero = learner_with("shared", train_steps=2), learner_with("zero", train_steps=2)
    zero.network.load_state_dict(shared.network.state_dict())
    episode = tiny_episode()
    for learner in (shared, zero):
        learner.outer_optimizer().zero_grad()
    metrics = [learner.meta_step(episode, 0.0) for learner in (shared, zero)]
    assert metrics[0]["loss"] == pytest.approx(metrics[1]["loss"], rel=1e-5)
    assert shared.shared_head_weight.grad.abs().max() < 1e-6 and shared.shared_head_bias.grad.abs().max() < 1e-6
    assert shared.shared_head_weight.abs().max() > 0.01  # it is not the zero head: initialised like a linear row
    body = [n for n, _ in shared.network.named_parameters() if not n.startswith("head.")]
    grads = dict(shared.network.named_parameters()), dict(zero.network.named_parameters())
    for name in body:
        assert torch.allclose(grads[0][name].grad, grads[1][name].grad, atol=1e-6), name


def test_the_shared_head_is_saved_with_the_learner() -> None:
    learner = learner_with("shared")
    state = learner.state_dict()
    assert state["shared_head_weight"].shape == (1, learner.network.head.in_features)
    again = learner_with("shared")
    again.load_state_dict(state)
    assert torch.equal(again.shared_head_weight, learner.shared_head_weight)


@pytest.mark.parametrize(("strategy", "head"), [("reptile", "zero"), ("metasgd", "shared"), ("pretrain", "zero")])
def test_zero_and_shared_heads_are_for_maml_and_fomaml_only(tmp_path, strategy: str, head: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"name: c\nlearner: {{strategy: {strategy}, head: {head}}}\n")
    with pytest.raises(ConfigError) as info:
        load_train_config(path)
    assert f"learner.head={head!r} is not allowed: expected 'fixed' for strategy {strategy!r}" in str(info.value)
    path.write_text("name: c\nlearner: {strategy: maml, head: wide}\n")
    with pytest.raises(ConfigError, match=r"learner.head='wide' is not one of \['fixed', 'shared', 'zero'\]"):
        load_train_config(path)
    assert TrainConfig().learner.head == "fixed"
