"""The inner-loop math against independent computations: explicit loops, autograd, finite differences."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from nas_meta import functional as Fn
from tests.conftest import tiny_network, tiny_tasks


def loop_meta_gradient(net, params, xs, ys, xq, yq, lr, steps, first_order):
    """Reference: one task at a time with torch.autograd.grad(create_graph=True), no torch.func."""
    total = 0.0
    for t in range(xs.shape[0]):
        adapted = dict(params)
        for _ in range(steps):
            loss = F.cross_entropy(functional_call(net, adapted, (xs[t],)), ys[t])
            grads = torch.autograd.grad(loss, list(adapted.values()), create_graph=not first_order)
            adapted = {k: p - lr * g for (k, p), g in zip(adapted.items(), grads)}
        total = total + F.cross_entropy(functional_call(net, adapted, (xq[t],)), yq[t])
    mean = total / xs.shape[0]
    return mean, torch.autograd.grad(mean, list(params.values()))


def vmap_meta_gradient(net, params, xs, ys, xq, yq, lr, steps, first_order):
    adapt = partial(Fn.sgd_adapt, steps=steps, lr=lr, first_order=first_order)
    losses, _ = Fn.batched_query_loss(net, params, {}, xs, ys, xq, yq, adapt=adapt)
    mean = losses.mean()
    return mean, torch.autograd.grad(mean, list(params.values()))


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("first_order", [False, True])
def test_vmap_meta_gradient_equals_per_task_loop(steps: int, first_order: bool) -> None:
    net = tiny_network()
    params = {k: p.detach().clone().requires_grad_() for k, p in net.named_parameters()}
    data = tiny_tasks()
    ref_loss, ref_grads = loop_meta_gradient(net, params, *data, 0.3, steps, first_order)
    loss, grads = vmap_meta_gradient(net, params, *data, 0.3, steps, first_order)
    assert torch.allclose(loss, ref_loss, atol=1e-10)
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, atol=1e-10, rtol=1e-8)


def test_vmap_equals_loop_in_float32_to_1e_5() -> None:
    net = tiny_network().float()
    params = {k: p.detach().clone().requires_grad_() for k, p in net.named_parameters()}
    xs, ys, xq, yq = tiny_tasks(tasks=4)
    data = (xs.float(), ys, xq.float(), yq)
    ref_loss, ref_grads = loop_meta_gradient(net, params, *data, 0.4, 1, False)
    loss, grads = vmap_meta_gradient(net, params, *data, 0.4, 1, False)
    assert abs(float(loss - ref_loss)) < 1e-5
    for g, r in zip(grads, ref_grads):
        assert float((g - r).abs().max()) < 1e-5


def test_second_order_meta_gradient_matches_finite_differences() -> None:
    torch.manual_seed(0)
    net = tiny_network(norm="none")
    params = {k: p.detach().clone().requires_grad_() for k, p in net.named_parameters()}
    data = tiny_tasks(tasks=2)
    _, grads = vmap_meta_gradient(net, params, *data, 0.5, 1, False)
    _, fo_grads = vmap_meta_gradient(net, params, *data, 0.5, 1, True)
    flat = torch.cat([g.flatten() for g in grads])
    fo_flat = torch.cat([g.flatten() for g in fo_grads])
    direction = torch.randn_like(flat)
    eps = 1e-6

    def objective(shift: float) -> float:
        shifted, offset = {}, 0
        for k, p in params.items():
            n = p.numel()
            shifted[k] = (p + shift * direction[offset : offset + n].view_as(p)).detach()
            offset += n
        adapt = partial(Fn.sgd_adapt, steps=1, lr=0.5)
        losses, _ = Fn.batched_query_loss(net, shifted, {}, *data, adapt=adapt)
        return float(losses.mean())

    numeric = (objective(eps) - objective(-eps)) / (2 * eps)
    assert numeric == pytest.approx(float(flat @ direction), rel=1e-5, abs=1e-8)
    # the first-order gradient is measurably different: the test above would catch a missing second-order term
    assert abs(float(fo_flat @ direction) - numeric) > 1e-4


def test_first_order_drops_exactly_the_hessian_term() -> None:
    """MAML: g = (I - α H_s) g_q with g_q = ∇L_q(θ'); FOMAML: g = g_q."""
    net = tiny_network()
    params = {k: p.detach().clone().requires_grad_() for k, p in net.named_parameters()}
    xs, ys, xq, yq = tiny_tasks(tasks=1)
    lr = 0.3
    _, so = vmap_meta_gradient(net, params, xs, ys, xq, yq, lr, 1, False)
    _, fo = vmap_meta_gradient(net, params, xs, ys, xq, yq, lr, 1, True)
    support = F.cross_entropy(functional_call(net, params, (xs[0],)), ys[0])
    g_s = torch.autograd.grad(support, list(params.values()), create_graph=True)
    adapted = {k: (p - lr * g).detach().requires_grad_() for (k, p), g in zip(params.items(), g_s)}
    g_q = torch.autograd.grad(F.cross_entropy(functional_call(net, adapted, (xq[0],)), yq[0]), list(adapted.values()))
    hvp = torch.autograd.grad(g_s, list(params.values()), grad_outputs=g_q)
    for a, b, q, h in zip(so, fo, g_q, hvp):
        assert torch.allclose(b, q, atol=1e-12)
        assert torch.allclose(a, q - lr * h, atol=1e-10)


def test_metasgd_lr_dict_equal_to_scalar_when_uniform() -> None:
    net = tiny_network()
    params = {k: p.detach().clone() for k, p in net.named_parameters()}
    xs, ys, _, _ = tiny_tasks(tasks=1)
    scalar = Fn.sgd_adapt(net, params, {}, xs[0], ys[0], steps=2, lr=0.2)
    per_param = Fn.sgd_adapt(net, params, {}, xs[0], ys[0], steps=2, lr={k: torch.full_like(p, 0.2) for k, p in params.items()})
    for k in scalar:
        assert torch.allclose(scalar[k], per_param[k])


def test_adam_adapt_matches_torch_optim_adam() -> None:
    net = tiny_network(norm="none")
    params = {k: p.detach().clone() for k, p in net.named_parameters()}
    xs, ys, _, _ = tiny_tasks(tasks=1)
    ours = Fn.adam_adapt(net, params, {}, xs[0], ys[0], steps=4, lr=0.01, betas=(0.0, 0.999))
    ref = {k: p.clone().requires_grad_() for k, p in params.items()}
    opt = torch.optim.Adam(list(ref.values()), lr=0.01, betas=(0.0, 0.999), eps=1e-8)
    for _ in range(4):
        opt.zero_grad()
        F.cross_entropy(functional_call(net, ref, (xs[0],)), ys[0]).backward()
        opt.step()
    for k in ours:
        assert torch.allclose(ours[k], ref[k].detach(), atol=1e-10)


def test_zero_steps_returns_the_starting_parameters() -> None:
    net = tiny_network()
    params = {k: p.detach() for k, p in net.named_parameters()}
    xs, ys, _, _ = tiny_tasks(tasks=1)
    out = Fn.sgd_adapt(net, params, {}, xs[0], ys[0], steps=0, lr=0.5)
    assert all(out[k] is params[k] for k in params)


def test_interpolate() -> None:
    old = {"w": torch.tensor([1.0, 2.0])}
    new = {"w": torch.tensor([3.0, 6.0])}
    assert torch.equal(Fn.interpolate(old, new, 0.25)["w"], torch.tensor([1.5, 3.0]))
