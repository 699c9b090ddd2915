"""Pure inner-loop math: adapt parameters to a support set, score a query set.

Everything here maps ``(params, episode tensors, *, steps, lr, ...)`` to new parameters or losses, without
touching module state. An inner loop (:class:`InnerLoop`) is written once against a gradient oracle
(:data:`LossGrad`) and runs on a single task (``torch.func.grad``) or on a whole meta-batch:
:func:`batched_query_loss`, :func:`batched_adapt` and :func:`batched_forward` evaluate every task at once
with :mod:`nas_meta.task_batched` for the networks nas-meta builds (``engine="tasks"``), and with ``vmap``
over the per-task functions for any other module (``engine="vmap"``). ``engine="auto"`` picks the first
where it applies; the tests hold both engines equal to an explicit per-task loop.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Literal, TypeVar

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from . import objectives, task_batched

Params = dict[str, Tensor]
LearningRate = float | Mapping[str, Tensor]

CHUNK_BYTES = 96 * 2**20
"""On a CPU, the meta-batch is run in chunks of tasks whose first-layer activations (examples x channels x
pixels, float32) stay near this size, the gradients summed over chunks: streaming one huge activation tensor
through memory for every elementwise pass costs more than the extra kernel calls (measured in
``benchmarks/task_chunks.py``: 5w1s keeps its 32 tasks in one chunk, 5w5s runs chunks of 10, 20w5s of 2)."""


def tasks_per_chunk(tasks: int, examples_per_task: int, channels: int, pixels: int, device: torch.device) -> int:
    """How many tasks of a meta-batch one pass handles: all of them on a GPU (where kernel launches, not memory
    traffic, bound a step), else as many as :data:`CHUNK_BYTES` of first-layer activations hold (at least one)."""
    if device.type != "cpu":
        return tasks
    per_task = examples_per_task * channels * pixels * 4
    return max(1, min(tasks, CHUNK_BYTES // max(per_task, 1)))


def forward(model: nn.Module, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor], x: Tensor) -> Tensor:
    """Logits of ``model`` evaluated with ``params`` and ``buffers`` in place of its own tensors."""
    out: Tensor = functional_call(model, (dict(params), dict(buffers)), (x,))
    return out


def support_loss(
    params: Mapping[str, Tensor], model: nn.Module, buffers: Mapping[str, Tensor], x: Tensor, y: Tensor
) -> Tensor:
    """Mean loss of ``model(params)`` on ``(x, y)`` (:func:`nas_meta.objectives.mean_loss`: cross-entropy for class
    labels, squared error for real targets); ``params`` first so ``grad`` differentiates it."""
    return objectives.mean_loss(forward(model, params, buffers, x), y)


LossGrad = Callable[[Params, bool], Params]
"""A gradient oracle: ``(params, create_graph) -> gradient of the support loss`` for every parameter.

With ``create_graph`` the gradient stays differentiable w.r.t. ``params`` (second-order MAML); without it
the gradient is a constant."""

Engine = Literal["auto", "tasks", "vmap"]


def sgd_steps(loss_grad: LossGrad, params: Mapping[str, Tensor], *, steps: int, lr: LearningRate,
              first_order: bool = False) -> Params:
    """``steps`` steps of gradient descent (MAML's inner loop; Meta-SGD if ``lr`` is a dict).

    Args:
        loss_grad: the support loss's gradient oracle.
        params: starting parameters (differentiable: the returned params keep the graph to them).
        steps: number of gradient steps (0 returns ``params`` unchanged).
        lr: one learning rate, or one tensor per parameter name (Meta-SGD), broadcast against it.
        first_order: drop the second-order term: inner gradients are treated as constants.

    Returns:
        The adapted parameters.
    """
    adapted = dict(params)
    for _ in range(steps):
        grads = loss_grad(adapted, not first_order)
        if isinstance(lr, Mapping):
            adapted = {k: p - lr[k] * grads[k] for k, p in adapted.items()}
        else:
            adapted = {k: p - lr * grads[k] for k, p in adapted.items()}
    return adapted


ADAM_BETAS = (0.0, 0.999)  # the inner Adam's betas: β1 = 0, as in Reptile


def adam_steps(loss_grad: LossGrad, params: Mapping[str, Tensor], *, steps: int, lr: float,
               betas: tuple[float, float] = ADAM_BETAS, eps: float = 1e-8) -> Params:
    """``steps`` steps of Adam from zero moments, first-order (Reptile's inner loop uses β1 = 0).

    Returns:
        The adapted parameters, detached from ``params``.
    """
    return adam_steps_carried(loss_grad, params, steps=steps, lr=lr, betas=betas, eps=eps)[0]


def adam_steps_carried(loss_grad: LossGrad, params: Mapping[str, Tensor], *, steps: int, lr: float,
                       betas: tuple[float, float] = ADAM_BETAS, eps: float = 1e-8, moments: Mapping[str, Tensor] | None
                       = None, step: int = 0) -> tuple[Params, Params]:
    """``steps`` steps of Adam with β1 = 0 from second moments ``moments`` (zeros if None) after ``step`` earlier
    steps (for the bias correction), as a carried ``torch.optim.Adam`` takes them.

    Returns:
        The adapted parameters (detached) and the second moments after the last step (shaped like the adapted
        parameters: ``moments`` without a task axis broadcast against parameters with one).
    """
    b1, b2 = betas
    assert b1 == 0.0, "the carried state holds second moments only (β1 = 0)"
    adapted = {k: p.detach() for k, p in params.items()}
    v = {k: moments[k] if moments is not None else torch.zeros_like(p) for k, p in adapted.items()}
    for t in range(step + 1, step + steps + 1):
        grads = loss_grad(adapted, False)
        v = {k: b2 * v[k] + (1 - b2) * grads[k] ** 2 for k in adapted}
        correction2 = (1 - b2**t) ** 0.5
        adapted = {k: p - lr * grads[k] / (v[k].sqrt() / correction2 + eps) for k, p in adapted.items()}
    return adapted, v


def carry_moments(start: Mapping[str, Tensor], per_task: Mapping[str, Tensor], steps: int,
                  beta2: float = ADAM_BETAS[1]) -> Params:
    """One Adam state after a meta-batch's tasks, as if they had run one after another from ``start``.

    Each task ``i`` ran ``steps`` steps from ``start``: its moments are ``b^steps * start + d_i`` (``b`` = β2).
    Sequentially, task ``i``'s contribution ``d_i`` decays over the ``steps`` steps of every later task:
    ``b^(T*steps) * start + sum_i b^(steps*(T-1-i)) d_i``. (The tasks' gradients are those taken from ``start``.)
    """
    out: Params = {}
    decay = beta2**steps
    for name, v0 in start.items():
        tasks = per_task[name].shape[0]
        weights = decay ** torch.arange(tasks - 1, -1, -1, dtype=v0.dtype, device=v0.device)
        contributions = per_task[name] - decay * v0
        out[name] = decay**tasks * v0 + torch.tensordot(weights, contributions, dims=1)
    return out


@dataclass(frozen=True, eq=False)
class InnerLoop:
    """How a learner adapts to a support set: ``steps`` steps of SGD (or Adam) at learning rate ``lr``.

    Attributes:
        steps: number of gradient steps.
        lr: one learning rate, or one tensor per parameter name (Meta-SGD; SGD only).
        first_order: inner gradients are constants (no second-order term through them).
        optimizer: ``"sgd"`` or ``"adam"`` (Adam is always first order; β1 = 0 as in Reptile).
    """

    steps: int
    lr: LearningRate
    first_order: bool = False
    optimizer: Literal["sgd", "adam"] = "sgd"
    moments: Mapping[str, Tensor] | None = None  # Adam only: carried second moments (None: zeros)
    step: int = 0  # Adam only: the carried step count

    def run(self, loss_grad: LossGrad, params: Mapping[str, Tensor]) -> Params:
        """The adapted parameters, starting from ``params``."""
        if self.optimizer == "adam":
            return self.run_adam(loss_grad, params)[0]
        return sgd_steps(loss_grad, params, steps=self.steps, lr=self.lr, first_order=self.first_order)

    def run_adam(self, loss_grad: LossGrad, params: Mapping[str, Tensor]) -> tuple[Params, Params]:
        """Adam's adapted parameters and second moments (:func:`adam_steps_carried`)."""
        assert self.optimizer == "adam" and not isinstance(self.lr, Mapping), "Adam takes one learning rate"
        return adam_steps_carried(loss_grad, params, steps=self.steps, lr=self.lr, moments=self.moments, step=self.step)


def task_loss_grad(model: nn.Module, buffers: Mapping[str, Tensor], x: Tensor, y: Tensor) -> LossGrad:
    """Gradient oracle of one task's support loss, with ``torch.func.grad`` (composes with ``vmap``)."""

    def loss_grad(params: Params, create_graph: bool) -> Params:
        # without create_graph no outer graph is recorded (torch.func.grad still differentiates inside no_grad)
        with contextlib.nullcontext() if create_graph else torch.no_grad():
            grads: Params = grad(support_loss)(params, model, buffers, x, y)
        return grads

    return loss_grad


def sgd_adapt(model: nn.Module, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor], x: Tensor, y: Tensor,
              *, steps: int, lr: LearningRate, first_order: bool = False) -> Params:
    """:func:`sgd_steps` on one task's support set ``x (n, C, H, W)``, ``y (n,)``."""
    return sgd_steps(task_loss_grad(model, buffers, x, y), params, steps=steps, lr=lr, first_order=first_order)


def adam_adapt(model: nn.Module, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor], x: Tensor, y: Tensor,
               *, steps: int, lr: float, betas: tuple[float, float] = (0.0, 0.999), eps: float = 1e-8) -> Params:
    """:func:`adam_steps` on one task's support set ``x (n, C, H, W)``, ``y (n,)``."""
    return adam_steps(task_loss_grad(model, buffers, x, y), params, steps=steps, lr=lr, betas=betas, eps=eps)


def tasks_loss_grad(model: nn.Module, x: Tensor, y: Tensor) -> LossGrad:
    """Gradient oracle of every task's support loss at once (:mod:`nas_meta.task_batched`).

    Args:
        model: a network :func:`nas_meta.task_batched.supports` accepts.
        x: support images, example-major ``(n, T, C, H, W)``.
        y: support labels ``(T, n)``.

    The oracle takes and returns parameters with a leading task axis; each task's gradient is that of its
    own mean loss (:mod:`nas_meta.objectives`).
    """

    def loss_grad(params: Params, create_graph: bool) -> Params:
        names = list(params)
        with torch.enable_grad():
            if create_graph:
                inputs = [p if p.requires_grad else p.detach().requires_grad_() for p in params.values()]
            else:
                inputs = [p.detach().requires_grad_() for p in params.values()]
            logits = task_batched.forward(model, dict(zip(names, inputs)), x)
            grads = torch.autograd.grad(task_batched.summed_task_loss(logits, y), inputs, create_graph=create_graph,
                                        allow_unused=True, materialize_grads=True)
        return dict(zip(names, grads))

    return loss_grad


def task_query_loss(
    params: Mapping[str, Tensor],
    support_x: Tensor,
    support_y: Tensor,
    query_x: Tensor,
    query_y: Tensor,
    *,
    model: nn.Module,
    buffers: Mapping[str, Tensor],
    adapt: InnerLoop,
) -> tuple[Tensor, Tensor]:
    """Adapt on one task's support set, then score its query set.

    Returns:
        ``(query_loss, query_accuracy)`` as 0-d tensors (accuracy NaN for regression); the loss is differentiable
        w.r.t. ``params``.
    """
    adapted = adapt.run(task_loss_grad(model, buffers, support_x, support_y), params)
    logits = forward(model, adapted, buffers, query_x)
    return objectives.mean_loss(logits, query_y), objectives.example_correct(logits, query_y).mean()


def use_tasks_engine(model: nn.Module, buffers: Mapping[str, Tensor], engine: Engine) -> bool:
    """Whether the batched functions run ``model`` with :mod:`nas_meta.task_batched` (else ``vmap``)."""
    supported = not buffers and task_batched.supports(model)
    if engine == "tasks" and not supported:
        raise ValueError(f"engine='tasks' cannot run {type(model).__name__}: use engine='vmap' or 'auto'")
    return engine != "vmap" and supported


def per_task(params: Mapping[str, Tensor], tasks: int) -> Params:
    """Shared parameters as per-task ones: expanded views (no copy) with a leading task axis."""
    return {k: v.expand(tasks, *v.shape) for k, v in params.items()}


InnerRun = TypeVar("InnerRun")


def _adapt_all_tasks(model: nn.Module, params: Mapping[str, Tensor], support_x: Tensor, support_y: Tensor,
                     run: Callable[[LossGrad, Params], InnerRun], batch: int | None = None) -> InnerRun:
    """The task-batched engine's inner loop ``run`` (:meth:`InnerLoop.run` or :meth:`InnerLoop.run_adam`) on every
    task of a meta-batch (leading task axis out); ``batch``: see :func:`batched_adapt`."""
    x = example_major(support_x)
    loss_grad = cycling([tasks_loss_grad(model, x[part], support_y[:, part])
                         for part in _slices(support_x.shape[1], batch)])
    return run(loss_grad, per_task(params, support_x.shape[0]))


def batched_query_loss(model: nn.Module, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor],
                       support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor, *,
                       adapt: InnerLoop, engine: Engine = "auto") -> tuple[Tensor, Tensor]:
    """:func:`task_query_loss` for a meta-batch of tasks at once.

    Args:
        model: the network.
        params: the shared starting parameters (not batched).
        buffers: the network's buffers.
        support_x: ``(tasks, n_support, C, H, W)``; support_y: ``(tasks, n_support)``.
        query_x: ``(tasks, n_query, C, H, W)``; query_y: ``(tasks, n_query)``.
        adapt: the inner loop, e.g. ``InnerLoop(steps=1, lr=0.4)``.
        engine: ``"tasks"``, ``"vmap"`` or ``"auto"`` (see the module docstring).

    Returns:
        Per-task query losses and accuracies, each of shape ``(tasks,)``.
    """
    if use_tasks_engine(model, buffers, engine):
        adapted = _adapt_all_tasks(model, params, support_x, support_y, adapt.run)
        return task_batched.task_scores(task_batched.forward(model, adapted, example_major(query_x)), query_y)
    one_task = partial(task_query_loss, model=model, buffers=buffers, adapt=adapt)
    losses, accuracies = vmap(one_task, in_dims=(None, 1, 0, 1, 0), randomness="different")(
        dict(params), example_major(support_x), support_y, example_major(query_x), query_y
    )
    return losses, accuracies


def example_major(x: Tensor) -> Tensor:
    """``(tasks, n, C, H, W)`` images laid out as ``(n, tasks, C, H, W)`` in memory.

    Both engines want this layout: :mod:`nas_meta.task_batched` reads it as one dense batch or as the input
    of a grouped convolution with one group per task; ``vmap(in_dims=1)`` runs every convolution with per-task
    weights as such a grouped convolution, and with this layout every activation keeps it instead of being
    transposed in memory at each layer.
    """
    return x.transpose(0, 1).contiguous()


def cycling(oracles: list[LossGrad]) -> LossGrad:
    """A gradient oracle whose ``k``-th call asks ``oracles[k % len(oracles)]``: inner steps on mini-batches in turn."""
    calls = itertools.count()

    def loss_grad(params: Params, create_graph: bool) -> Params:
        return oracles[next(calls) % len(oracles)](params, create_graph)

    return loss_grad


def _slices(n: int, batch: int | None) -> list[slice]:
    return [slice(None)] if batch is None or batch >= n else [slice(a, a + batch) for a in range(0, n, batch)]


def _adapt_each_task(model: nn.Module, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor],
                     support_x: Tensor, support_y: Tensor, run: Callable[[LossGrad, Params], InnerRun],
                     engine: Engine, batch: int | None) -> InnerRun:
    """The inner loop ``run`` on every task of a meta-batch, by either engine (leading task axis out)."""
    if use_tasks_engine(model, buffers, engine):
        return _adapt_all_tasks(model, params, support_x, support_y, run, batch)
    parts = _slices(support_x.shape[1], batch)

    def one(p: Params, x: Tensor, y: Tensor) -> InnerRun:
        return run(cycling([task_loss_grad(model, buffers, x[part], y[part]) for part in parts]), p)

    out: InnerRun = vmap(one, in_dims=(None, 1, 0), randomness="different")(dict(params), example_major(support_x),
                                                                            support_y)
    return out


def batched_adapt(model: nn.Module, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor],
                  support_x: Tensor, support_y: Tensor, *, adapt: InnerLoop, engine: Engine = "auto",
                  batch: int | None = None) -> Params:
    """Adapt the shared ``params`` to each task of a meta-batch; every returned tensor has a leading task axis.

    ``batch``: inner step ``k`` takes the ``k``-th slice of ``batch`` examples of each task (cycling), else all.
    """
    return _adapt_each_task(model, params, buffers, support_x, support_y, adapt.run, engine, batch)


def batched_adam_adapt(model: nn.Module, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor],
                       support_x: Tensor, support_y: Tensor, *, adapt: InnerLoop, engine: Engine = "auto",
                       batch: int | None = None) -> tuple[Params, Params]:
    """:func:`batched_adapt` with an Adam inner loop, also returning each task's second moments (leading task axis)."""
    adapted, moments = _adapt_each_task(model, params, buffers, support_x, support_y, adapt.run_adam, engine, batch)
    return adapted, {k: v.expand(support_x.shape[0], *params[k].shape) for k, v in moments.items()}


def batched_forward(model: nn.Module, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor], x: Tensor,
                    *, engine: Engine = "auto") -> Tensor:
    """Logits ``(tasks, n, ways)`` for ``x`` of shape ``(tasks, n, C, H, W)`` with per-task ``params`` (leading task axis)."""
    if use_tasks_engine(model, buffers, engine):
        return task_batched.forward(model, params, example_major(x)).transpose(0, 1)
    return vmap(partial(forward, model), in_dims=(0, None, 1), randomness="different")(
        dict(params), dict(buffers), example_major(x)
    )


def interpolate(old: Mapping[str, Tensor], new: Mapping[str, Tensor], epsilon: float | Tensor) -> Params:
    """``old + epsilon * (new - old)`` for each parameter (Reptile's outer update)."""
    return {k: old[k] + epsilon * (new[k] - old[k]) for k in old}
