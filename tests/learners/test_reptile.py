"""Reptile's outer update equals θ + ε_t (mean φ_i − θ) with φ_i from an explicit inner loop."""

from __future__ import annotations

import copy

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


# -- the inner Adam's state carried across tasks and meta-iterations (openai/supervised-reptile) ---------------------

def carried_learner(device: torch.device, **learner: object):  # type: ignore[no-untyped-def]
    config = tiny_config("reptile", inner_optimizer="adam", inner_lr=0.01, train_steps=3, inner_state="carried",
                         **learner)
    model = get_learner(config, 10)
    model.init_params(torch.Generator().manual_seed(0))
    return model.to(device, torch.float64)


def float64(episode):  # type: ignore[no-untyped-def]
    return type(episode)(episode.support_x.double(), episode.support_y, episode.query_x.double(), episode.query_y,
                         episode.class_ids)


@pytest.mark.parametrize("inner_batch", [None, 4])
def test_one_task_at_a_time_the_carried_state_is_torch_adams_never_reset(inner_batch: int | None,
                                                                        device: torch.device) -> None:
    # with one task per meta-batch and a meta step of 1, Reptile with a carried Adam is plain Adam (β1 = 0) training
    # on one task after another: torch.optim.Adam, never reset, must follow the same path (with inner_batch, on the
    # task's examples shuffled once, 4 at a time: supervised-reptile's mini-batches)
    model = carried_learner(device, meta_batch=1, meta_step=1.0, inner_batch=inner_batch)
    episodes = [float64(tiny_episode(tasks=1, seed=s, device=device)) for s in range(3)]
    reference = copy.deepcopy(model.network)
    adam = torch.optim.Adam(reference.parameters(), lr=0.01, betas=(0.0, 0.999))
    shuffles = torch.Generator().manual_seed(model.config.seed)
    for episode in episodes:
        model.meta_step(episode, 0.0)
        x = torch.cat([episode.support_x[0], episode.query_x[0]])
        y = torch.cat([episode.support_y[0], episode.query_y[0]])
        order = torch.rand((1, len(x)), generator=shuffles).argsort(dim=1)[0].to(device)
        for step in range(3):
            part = slice(None) if inner_batch is None else order[step * inner_batch:(step + 1) * inner_batch]
            adam.zero_grad()
            F.cross_entropy(reference(x[part]), y[part]).backward()
            adam.step()
    for (name, p), q in zip(model.network.named_parameters(), reference.parameters()):
        # atol: conv biases before batch norm have a zero gradient, whose rounding noise Adam scales up to ~1e-10
        assert torch.allclose(p, q, rtol=1e-9, atol=1e-8), name
    assert int(model.get_buffer("adam_step")) == 9
    for name, p in reference.named_parameters():
        assert torch.allclose(model.carried_moments()[name], adam.state[p]["exp_avg_sq"], rtol=1e-9, atol=1e-15)


def test_a_meta_batchs_moments_compose_as_if_its_tasks_ran_one_after_another() -> None:
    from nas_meta.functional import carry_moments

    g = torch.Generator().manual_seed(0)
    start = {"w": torch.rand(4, 3, generator=g, dtype=torch.float64)}
    decay, steps = 0.999**5, 5
    contributions = torch.rand(6, 4, 3, generator=g, dtype=torch.float64)  # each task's own share of its moments
    per_task = {"w": decay * start["w"] + contributions}  # what each task reached from the common start
    sequential = start["w"]
    for d in contributions:  # one task after another: the earlier state decays, the task adds its share
        sequential = decay * sequential + d
    assert torch.allclose(carry_moments(start, per_task, steps)["w"], sequential, rtol=1e-12)


def test_the_carried_state_is_learned_used_at_test_time_and_saved_with_the_weights(device: torch.device,
                                                                                 tmp_path) -> None:  # type: ignore[no-untyped-def]
    from nas_meta.checkpoint import save_learner
    from nas_meta.learners import Reptile

    model = carried_learner(device)
    assert isinstance(model, Reptile)
    fresh = get_learner(tiny_config("reptile", inner_optimizer="adam", inner_lr=0.01, train_steps=3), 10)
    assert not any(n.startswith("adam_") for n, _ in fresh.named_buffers())  # fresh learners save what they did
    episodes = [float64(tiny_episode(seed=s, device=device)) for s in range(2)]
    before = model.query_scores(episodes[0], steps=2)[0]
    for e in episodes:
        model.meta_step(e, 0.0)
    moments = model.carried_moments()
    assert all(float(v.min()) >= 0 and float(v.max()) > 0 for v in moments.values())
    assert int(model.get_buffer("adam_step")) == 2 * 4 * 3  # meta-iterations x tasks x steps
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    assert {k for k in state if k.startswith("adam_")} == {"adam_step", *(f"adam_moments__{n.replace('.', '__')}"
                                                                          for n, _ in model.network.named_parameters())}
    # test-time adaptation starts from the carried state: zero it and the adapted scores change
    after = model.query_scores(episodes[0], steps=2)[0]
    for v in moments.values():
        v.zero_()
    model.get_buffer("adam_step").zero_()
    zeroed = model.query_scores(episodes[0], steps=2)[0]
    assert not torch.allclose(after, zeroed) and not torch.allclose(before, after)
    saved = save_learner(tmp_path / "run", model.config, {k: v.float() for k, v in state.items()},
                         {"status": "completed"})
    from nas_meta.inference import load_learner_folder

    loaded = load_learner_folder(saved, str(device)).learner
    for k, v in state.items():
        assert torch.allclose(loaded.state_dict()[k].to(v), v.float().to(v)), k


def test_sgd_steps_on_mini_batches_equal_a_loop_over_the_slices(device: torch.device) -> None:
    from nas_meta import functional as fn

    model = carried_learner(device)
    episode = float64(tiny_episode(seed=3, device=device))
    params = dict(model.network.named_parameters())
    adapt = fn.InnerLoop(3, 0.2, first_order=True)
    for engine in ("tasks", "vmap"):
        adapted = fn.batched_adapt(model.network, params, {}, episode.support_x, episode.support_y, adapt=adapt,
                                   engine=engine, batch=4)  # 6 examples a task: slices 0-3, 4-5, then 0-3 again
        for t in range(episode.tasks):
            phi = {k: v.detach().clone() for k, v in params.items()}
            for part in (slice(0, 4), slice(4, 6), slice(0, 4)):
                phi = {k: v.requires_grad_() for k, v in phi.items()}
                loss = F.cross_entropy(functional_call(model.network, phi, (episode.support_x[t][part],)),
                                       episode.support_y[t][part])
                grads = torch.autograd.grad(loss, list(phi.values()))
                phi = {k: (v - 0.2 * g).detach() for (k, v), g in zip(phi.items(), grads)}
            for k in params:
                assert torch.allclose(adapted[k][t], phi[k], atol=1e-10), (engine, k)


@pytest.mark.parametrize(("changes", "message"), [
    ({"strategy": "maml", "inner_batch": 10}, "learner.inner_batch=10 is not allowed: expected unset (null) for "
                                              "strategy 'maml' (inner mini-batches are for reptile)."),
    ({"inner_batch": 0}, "learner.inner_batch=0 is not allowed: expected an integer in [1, 100000], or unset (null): "
                         "all of a task's examples in every step."),
    ({"strategy": "maml"}, "learner.inner_state='carried' is not allowed: expected 'fresh' for strategy 'maml' with "
                           "inner_optimizer 'adam' ('carried' is for reptile with inner_optimizer: adam)."),
    ({"inner_optimizer": "sgd"}, "learner.inner_state='carried' is not allowed: expected 'fresh' for strategy "
                                 "'reptile' with inner_optimizer 'sgd' ('carried' is for reptile with inner_optimizer: "
                                 "adam)."),
])
def test_carried_state_is_for_reptile_with_adam_only(changes: dict, message: str) -> None:
    from nas_meta.config import LearnerConfig
    from nas_meta.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        LearnerConfig(**{"strategy": "reptile", "inner_optimizer": "adam", "inner_state": "carried", **changes})
    assert str(info.value) == message


@pytest.mark.parametrize("batch", [None, 5])
def test_both_engines_carry_the_same_moments(batch: int | None, device: torch.device) -> None:
    from nas_meta import functional as fn

    model = carried_learner(device)
    model.meta_step(float64(tiny_episode(seed=1, device=device)), 0.0)  # a non-zero carried state
    episode = float64(tiny_episode(seed=2, device=device))
    params = dict(model.network.named_parameters())
    adapt = model.inner_loop(3, first_order=True)
    results = [fn.batched_adam_adapt(model.network, params, {}, episode.support_x, episode.support_y, adapt=adapt,
                                     engine=engine, batch=batch) for engine in ("tasks", "vmap")]
    for name in params:
        assert torch.allclose(results[0][0][name], results[1][0][name], atol=1e-8)  # see the test above
        assert torch.allclose(results[0][1][name], results[1][1][name], atol=1e-15)
        assert results[0][1][name].shape == (4, *params[name].shape)
