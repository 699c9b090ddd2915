"""Pure inner-loop math on ``torch.func``: adapt parameters to a support set, score a query set.

Everything here maps ``(params, buffers, episode tensors, *, steps, lr, ...)`` to new parameters or
losses, without touching module state. Meta-training and evaluation adapt through the same function,
and :func:`batched_query_loss` runs the per-task function over a meta-batch with ``vmap``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

Params = dict[str, Tensor]
LearningRate = float | Mapping[str, Tensor]


def forward(model: nn.Module, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor], x: Tensor) -> Tensor:
    """Logits of ``model`` evaluated with ``params`` and ``buffers`` in place of its own tensors."""
    out: Tensor = functional_call(model, (dict(params), dict(buffers)), (x,))
    return out


def classification_loss(
    params: Mapping[str, Tensor], model: nn.Module, buffers: Mapping[str, Tensor], x: Tensor, y: Tensor
) -> Tensor:
    """Mean cross-entropy of ``model(params)`` on ``(x, y)``; ``params`` first so ``grad`` differentiates it."""
    return F.cross_entropy(forward(model, params, buffers, x), y)


def sgd_adapt(
    model: nn.Module,
    params: Mapping[str, Tensor],
    buffers: Mapping[str, Tensor],
    x: Tensor,
    y: Tensor,
    *,
    steps: int,
    lr: LearningRate,
    first_order: bool = False,
) -> Params:
    """``steps`` steps of gradient descent on the support loss (MAML's inner loop; Meta-SGD if ``lr`` is a dict).

    Args:
        model: the network, used only as a function.
        params: starting parameters (differentiable: the returned params keep the graph to them).
        buffers: the network's buffers.
        x: support images, ``(n, C, H, W)``.
        y: support labels, ``(n,)``.
        steps: number of gradient steps (0 returns ``params`` unchanged).
        lr: one learning rate, or one tensor per parameter name (Meta-SGD), broadcast against it.
        first_order: drop the second-order term: inner gradients are treated as constants.

    Returns:
        The adapted parameters.
    """
    adapted = dict(params)
    for _ in range(steps):
        # first order: the inner gradients are constants, so no outer graph is recorded for them
        # (torch.func.grad still differentiates inside no_grad)
        with torch.no_grad() if first_order else contextlib.nullcontext():
            grads = grad(classification_loss)(adapted, model, buffers, x, y)
        if isinstance(lr, Mapping):
            adapted = {k: p - lr[k] * grads[k] for k, p in adapted.items()}
        else:
            adapted = {k: p - lr * grads[k] for k, p in adapted.items()}
    return adapted


def adam_adapt(
    model: nn.Module,
    params: Mapping[str, Tensor],
    buffers: Mapping[str, Tensor],
    x: Tensor,
    y: Tensor,
    *,
    steps: int,
    lr: float,
    betas: tuple[float, float] = (0.0, 0.999),
    eps: float = 1e-8,
) -> Params:
    """``steps`` steps of Adam on the support loss, first-order (Reptile's inner loop uses β1 = 0).

    Returns:
        The adapted parameters, detached from ``params``.
    """
    b1, b2 = betas
    adapted = {k: p.detach() for k, p in params.items()}
    m = {k: torch.zeros_like(p) for k, p in adapted.items()}
    v = {k: torch.zeros_like(p) for k, p in adapted.items()}
    for t in range(1, steps + 1):
        grads = grad(classification_loss)(adapted, model, buffers, x, y)
        m = {k: b1 * m[k] + (1 - b1) * grads[k] for k in adapted}
        v = {k: b2 * v[k] + (1 - b2) * grads[k] ** 2 for k in adapted}
        step, correction2 = lr / (1 - b1**t), (1 - b2**t) ** 0.5
        adapted = {k: p - step * m[k] / (v[k].sqrt() / correction2 + eps) for k, p in adapted.items()}
    return adapted


Adapt = Callable[..., Params]


def task_query_loss(
    params: Mapping[str, Tensor],
    support_x: Tensor,
    support_y: Tensor,
    query_x: Tensor,
    query_y: Tensor,
    *,
    model: nn.Module,
    buffers: Mapping[str, Tensor],
    adapt: Adapt,
) -> tuple[Tensor, Tensor]:
    """Adapt on one task's support set, then score its query set.

    Returns:
        ``(query_loss, query_accuracy)`` as 0-d tensors; the loss is differentiable w.r.t. ``params``.
    """
    adapted = adapt(model, params, buffers, support_x, support_y)
    logits = forward(model, adapted, buffers, query_x)
    loss = F.cross_entropy(logits, query_y)
    accuracy = (logits.argmax(dim=-1) == query_y).float().mean()
    return loss, accuracy


def batched_query_loss(
    model: nn.Module,
    params: Mapping[str, Tensor],
    buffers: Mapping[str, Tensor],
    support_x: Tensor,
    support_y: Tensor,
    query_x: Tensor,
    query_y: Tensor,
    *,
    adapt: Adapt,
) -> tuple[Tensor, Tensor]:
    """:func:`task_query_loss` for a meta-batch of tasks at once (``vmap`` over the leading task axis).

    Args:
        model: the network.
        params: the shared starting parameters (not batched).
        buffers: the network's buffers.
        support_x: ``(tasks, n_support, C, H, W)``; support_y: ``(tasks, n_support)``.
        query_x: ``(tasks, n_query, C, H, W)``; query_y: ``(tasks, n_query)``.
        adapt: the inner loop, e.g. ``partial(sgd_adapt, steps=1, lr=0.4)``.

    Returns:
        Per-task query losses and accuracies, each of shape ``(tasks,)``.
    """
    per_task = partial(task_query_loss, model=model, buffers=buffers, adapt=adapt)
    losses, accuracies = vmap(per_task, in_dims=(None, 1, 0, 1, 0), randomness="different")(
        dict(params), example_major(support_x), support_y, example_major(query_x), query_y
    )
    return losses, accuracies


def example_major(x: Tensor) -> Tensor:
    """``(tasks, n, C, H, W)`` images laid out as ``(n, tasks, C, H, W)`` in memory, for ``vmap(in_dims=1)``.

    Once the weights differ per task, ``vmap`` runs each convolution as one grouped convolution over
    ``(n, tasks * C, H, W)``. Feeding the images example-major makes that a free view for the first layer,
    and every later activation keeps the layout, instead of being transposed in memory at each layer
    (measured in ``benchmarks/speed_vs_learn2learn.py``).
    """
    return x.transpose(0, 1).contiguous()


def batched_adapt(
    model: nn.Module,
    params: Mapping[str, Tensor],
    buffers: Mapping[str, Tensor],
    support_x: Tensor,
    support_y: Tensor,
    *,
    adapt: Adapt,
) -> Params:
    """Adapt the shared ``params`` to each task of a meta-batch; every returned tensor has a leading task axis."""
    per_task = partial(adapt, model, buffers=buffers)

    def one(p: Params, x: Tensor, y: Tensor) -> Params:
        return per_task(p, x=x, y=y)

    return vmap(one, in_dims=(None, 1, 0), randomness="different")(dict(params), example_major(support_x), support_y)


def batched_forward(model: nn.Module, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor], x: Tensor) -> Tensor:
    """Logits for ``x`` of shape ``(tasks, n, C, H, W)`` with per-task ``params`` (leading task axis)."""
    return vmap(partial(forward, model), in_dims=(0, None, 1), randomness="different")(
        dict(params), dict(buffers), example_major(x)
    )


def interpolate(old: Mapping[str, Tensor], new: Mapping[str, Tensor], epsilon: float | Tensor) -> Params:
    """``old + epsilon * (new - old)`` for each parameter (Reptile's outer update)."""
    return {k: old[k] + epsilon * (new[k] - old[k]) for k in old}
