"""Meta-SGD learns one inner learning rate per parameter scalar."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call

from nas_meta.learners import MetaSGD, get_learner
from tests.learners.helpers import tiny_config, tiny_episode


def test_learning_rates_are_meta_parameters_with_the_right_gradient(device: torch.device) -> None:
    learner = get_learner(tiny_config("metasgd", inner_lr=0.2), 10)
    assert isinstance(learner, MetaSGD)
    learner.init_params(torch.Generator().manual_seed(0))
    learner.to(device)
    episode = tiny_episode(tasks=2, device=device)
    net = learner.network
    params = {k: p.detach().clone().requires_grad_() for k, p in net.named_parameters()}
    lrs = {k: torch.full_like(p, 0.2).requires_grad_() for k, p in params.items()}
    total = 0.0
    for t in range(2):
        loss = F.cross_entropy(functional_call(net, params, (episode.support_x[t],)), episode.support_y[t])
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        adapted = {k: p - lrs[k] * g for (k, p), g in zip(params.items(), grads)}
        total = total + F.cross_entropy(functional_call(net, adapted, (episode.query_x[t],)), episode.query_y[t])
    expected = torch.autograd.grad(total / 2, list(lrs.values()))
    learner.meta_step(episode, 0.0)
    for (name, _), g in zip(params.items(), expected):
        lr_param = learner.inner_lrs[name.replace(".", "__")]
        assert torch.allclose(lr_param.grad, g, atol=2e-5, rtol=1e-4), name
        moved = lr_param.detach() != 0.2
        assert torch.equal(moved, g.abs() > 1e-9)  # Adam moved exactly the lrs with a gradient (a conv bias before BN has none)
