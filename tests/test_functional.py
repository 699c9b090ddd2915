"""The inner-loop math against independent computations: explicit loops, autograd, finite differences.

Every test runs on the ``device`` fixture ($NAS_META_TEST_DEVICE, default cpu); the data are drawn on the CPU first.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from nas_meta import functional as Fn
from nas_meta import task_batched
from nas_meta.architectures import build_network
from nas_meta.config import ArchConfig
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


def batched_meta_gradient(net, params, xs, ys, xq, yq, lr, steps, first_order, engine="auto"):
    adapt = Fn.InnerLoop(steps, lr, first_order)
    losses, _ = Fn.batched_query_loss(net, params, {}, xs, ys, xq, yq, adapt=adapt, engine=engine)
    mean = losses.mean()
    return mean, torch.autograd.grad(mean, list(params.values()))


ENGINES = ["tasks", "vmap"]
# every kind of layer the task-batched engine evaluates: norms, downsampling, activations, heads
ARCHITECTURES = [
    dict(),
    dict(norm="instance", downsample="maxpool", activation="gelu", head="flatten"),
    dict(norm="layer", activation="elu", kernel=5),
    dict(norm="none", downsample="maxpool", activation="leaky_relu"),
    dict(kind="mlp", norm="none", activation="tanh"),  # an MLP on the flattened image: per-task linear layers
    # DARTS-style cells, every operation (depthwise, dilated and strided convolutions, pools, skip, none) in one net
    dict(kind="cells", cell_nodes=3, normal_ops=("sep_conv_3x3", "skip", "dil_conv_3x3", "max_pool_3x3", "none",
                                                  "conv_5x5"), normal_inputs=(0, 0, 1, 0, 2, 1),
         reduce_ops=("avg_pool_3x3", "sep_conv_5x5", "skip", "conv_3x3", "max_pool_3x3", "skip"),
         reduce_inputs=(0, 0, 0, 1, 2, 1)),
    dict(kind="cells", cell_nodes=2, norm="instance", head="flatten", normal_ops=("conv_3x3", "avg_pool_3x3",
         "sep_conv_5x5", "skip"), normal_inputs=(0, 0, 1, 0), reduce_ops=("dil_conv_3x3", "skip", "none", "conv_5x5"),
         reduce_inputs=(0, 0, 1, 0)),
]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("first_order", [False, True])
def test_batched_meta_gradient_equals_per_task_loop(engine: str, steps: int, first_order: bool,
                                                    device: torch.device) -> None:
    net = tiny_network(device=device)
    params = {k: p.detach().clone().requires_grad_() for k, p in net.named_parameters()}
    data = tiny_tasks(device=device)
    ref_loss, ref_grads = loop_meta_gradient(net, params, *data, 0.3, steps, first_order)
    loss, grads = batched_meta_gradient(net, params, *data, 0.3, steps, first_order, engine)
    assert torch.allclose(loss, ref_loss, atol=1e-10)
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=lambda a: "-".join(map(str, a.values())) or "default")
@pytest.mark.parametrize("first_order", [False, True])
def test_task_batched_engine_equals_loop_for_every_layer_kind(arch: dict, first_order: bool,
                                                              device: torch.device) -> None:
    net = build_network(ArchConfig(blocks=3, channels=4, **arch), 3, 9).double()  # odd size: ceil-mode pooling
    torch.manual_seed(1)
    params = {k: (p.detach() + 0.1 * torch.randn_like(p)).to(device).requires_grad_() for k, p in net.named_parameters()}
    net.to(device)
    data = tiny_tasks(size=9, device=device)
    assert task_batched.supports(net)
    ref_loss, ref_grads = loop_meta_gradient(net, params, *data, 0.3, 2, first_order)
    loss, grads = batched_meta_gradient(net, params, *data, 0.3, 2, first_order, "tasks")
    assert torch.allclose(loss, ref_loss, atol=1e-10)
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("engine", ENGINES)
def test_batched_equals_loop_in_float32_to_1e_5(engine: str, device: torch.device) -> None:
    net = tiny_network(device=device).float()
    params = {k: p.detach().clone().requires_grad_() for k, p in net.named_parameters()}
    xs, ys, xq, yq = tiny_tasks(tasks=4, device=device)
    data = (xs.float(), ys, xq.float(), yq)
    ref_loss, ref_grads = loop_meta_gradient(net, params, *data, 0.4, 1, False)
    loss, grads = batched_meta_gradient(net, params, *data, 0.4, 1, False, engine)
    assert abs(float(loss - ref_loss)) < 1e-5
    for g, r in zip(grads, ref_grads):
        assert float((g - r).abs().max()) < 1e-5


def test_metasgd_and_adam_inner_loops_agree_across_engines(device: torch.device) -> None:
    net = tiny_network(device=device)
    params = {k: p.detach().clone().requires_grad_() for k, p in net.named_parameters()}
    lrs = {k: torch.rand_like(p, dtype=torch.float64).requires_grad_() for k, p in params.items()}
    xs, ys, xq, yq = tiny_tasks(device=device)
    for adapt in (Fn.InnerLoop(2, lrs), Fn.InnerLoop(3, 0.01, optimizer="adam")):
        results = []
        for engine in ENGINES:
            adapted = Fn.batched_adapt(net, params, {}, xs, ys, adapt=adapt, engine=engine)
            losses = Fn.batched_query_loss(net, params, {}, xs, ys, xq, yq, adapt=adapt, engine=engine)[0]
            # Meta-SGD: meta-gradients for the weights and the learning rates; Adam (Reptile) is detached
            grads = torch.autograd.grad(losses.sum(), [*params.values(), *lrs.values()]) if losses.requires_grad else ()
            results.append((adapted, losses, grads))
        (a_tasks, l_tasks, g_tasks), (a_vmap, l_vmap, g_vmap) = results
        assert torch.allclose(l_tasks, l_vmap, atol=1e-10)
        assert len(g_tasks) == (2 * len(params) if adapt.optimizer == "sgd" else 0)
        assert not torch.allclose(a_tasks["head.weight"][0], params["head.weight"])  # the loop did adapt
        for k in params:
            assert torch.allclose(a_tasks[k], a_vmap[k], atol=1e-10)
        for a, b in zip(g_tasks, g_vmap, strict=True):
            assert torch.allclose(a, b, atol=1e-10)


def test_task_batched_engine_refuses_what_it_cannot_run(device: torch.device) -> None:
    other = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3)).double().to(device)
    params = dict(other.named_parameters())
    xs, ys, xq, yq = tiny_tasks(device=device)
    assert not task_batched.supports(other)
    with pytest.raises(ValueError, match="engine='tasks'"):
        Fn.batched_query_loss(other, params, {}, xs, ys, xq, yq, adapt=Fn.InnerLoop(1, 0.1), engine="tasks")
    losses, _ = Fn.batched_query_loss(other, params, {}, xs, ys, xq, yq, adapt=Fn.InnerLoop(1, 0.1))  # auto: vmap
    assert losses.shape == (3,)


def test_second_order_meta_gradient_matches_finite_differences(device: torch.device) -> None:
    torch.manual_seed(0)
    net = tiny_network(norm="none", device=device)
    params = {k: p.detach().clone().requires_grad_() for k, p in net.named_parameters()}
    data = tiny_tasks(tasks=2, device=device)
    _, grads = batched_meta_gradient(net, params, *data, 0.5, 1, False)
    _, fo_grads = batched_meta_gradient(net, params, *data, 0.5, 1, True)
    flat = torch.cat([g.flatten() for g in grads])
    fo_flat = torch.cat([g.flatten() for g in fo_grads])
    direction = torch.randn_like(flat.cpu()).to(device)  # drawn on the CPU: the same direction on every device
    eps = 1e-6

    def objective(shift: float) -> float:
        shifted, offset = {}, 0
        for k, p in params.items():
            n = p.numel()
            shifted[k] = (p + shift * direction[offset : offset + n].view_as(p)).detach()
            offset += n
        losses, _ = Fn.batched_query_loss(net, shifted, {}, *data, adapt=Fn.InnerLoop(1, 0.5))
        return float(losses.mean())

    numeric = (objective(eps) - objective(-eps)) / (2 * eps)
    assert numeric == pytest.approx(float(flat @ direction), rel=1e-5, abs=1e-8)
    # the first-order gradient is measurably different: the test above would catch a missing second-order term
    assert abs(float(fo_flat @ direction) - numeric) > 1e-4


def test_first_order_drops_exactly_the_hessian_term(device: torch.device) -> None:
    """MAML: g = (I - α H_s) g_q with g_q = ∇L_q(θ'); FOMAML: g = g_q."""
    net = tiny_network(device=device)
    params = {k: p.detach().clone().requires_grad_() for k, p in net.named_parameters()}
    xs, ys, xq, yq = tiny_tasks(tasks=1, device=device)
    lr = 0.3
    _, so = batched_meta_gradient(net, params, xs, ys, xq, yq, lr, 1, False)
    _, fo = batched_meta_gradient(net, params, xs, ys, xq, yq, lr, 1, True)
    support = F.cross_entropy(functional_call(net, params, (xs[0],)), ys[0])
    g_s = torch.autograd.grad(support, list(params.values()), create_graph=True)
    adapted = {k: (p - lr * g).detach().requires_grad_() for (k, p), g in zip(params.items(), g_s)}
    g_q = torch.autograd.grad(F.cross_entropy(functional_call(net, adapted, (xq[0],)), yq[0]), list(adapted.values()))
    hvp = torch.autograd.grad(g_s, list(params.values()), grad_outputs=g_q)
    for a, b, q, h in zip(so, fo, g_q, hvp):
        assert torch.allclose(b, q, atol=1e-12)
        assert torch.allclose(a, q - lr * h, atol=1e-10)


def test_metasgd_lr_dict_equal_to_scalar_when_uniform(device: torch.device) -> None:
    net = tiny_network(device=device)
    params = {k: p.detach().clone() for k, p in net.named_parameters()}
    xs, ys, _, _ = tiny_tasks(tasks=1, device=device)
    scalar = Fn.sgd_adapt(net, params, {}, xs[0], ys[0], steps=2, lr=0.2)
    per_param = Fn.sgd_adapt(net, params, {}, xs[0], ys[0], steps=2, lr={k: torch.full_like(p, 0.2) for k, p in params.items()})
    for k in scalar:
        assert torch.allclose(scalar[k], per_param[k])


def test_adam_adapt_matches_torch_optim_adam(device: torch.device) -> None:
    net = tiny_network(norm="none", device=device)
    params = {k: p.detach().clone() for k, p in net.named_parameters()}
    xs, ys, _, _ = tiny_tasks(tasks=1, device=device)
    ours = Fn.adam_adapt(net, params, {}, xs[0], ys[0], steps=4, lr=0.01, betas=(0.0, 0.999))
    ref = {k: p.clone().requires_grad_() for k, p in params.items()}
    opt = torch.optim.Adam(list(ref.values()), lr=0.01, betas=(0.0, 0.999), eps=1e-8)
    for _ in range(4):
        opt.zero_grad()
        F.cross_entropy(functional_call(net, ref, (xs[0],)), ys[0]).backward()
        opt.step()
    for k in ours:
        assert torch.allclose(ours[k], ref[k].detach(), atol=1e-10)


def test_zero_steps_returns_the_starting_parameters(device: torch.device) -> None:
    net = tiny_network(device=device)
    params = {k: p.detach() for k, p in net.named_parameters()}
    xs, ys, _, _ = tiny_tasks(tasks=1, device=device)
    out = Fn.sgd_adapt(net, params, {}, xs[0], ys[0], steps=0, lr=0.5)
    assert all(out[k] is params[k] for k in params)


def test_interpolate(device: torch.device) -> None:
    old = {"w": torch.tensor([1.0, 2.0], device=device)}
    new = {"w": torch.tensor([3.0, 6.0], device=device)}
    assert torch.equal(Fn.interpolate(old, new, 0.25)["w"].cpu(), torch.tensor([1.5, 3.0]))
