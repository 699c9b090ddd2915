"""The few-shot network evaluated on every task of a meta-batch at once, each task with its own parameters.

This is the fast path behind :mod:`nas_meta.functional` for the networks :mod:`nas_meta.architectures`
builds; ``vmap`` remains the path for any other module, and the tests hold the two equal.

Layout: the activations of ``T`` tasks of ``n`` images each are one contiguous ``(n, T, C, H, W)`` tensor
("example-major"). Viewed as ``(n*T, C, H, W)`` it is one dense batch, so a convolution whose weights
all tasks share is one ordinary convolution; viewed as ``(n, T*C, H, W)`` it is the input of a grouped
convolution with one group per task, for per-task weights. No layout change is ever needed between the two.

Parameters carry a leading task axis. A parameter all tasks share (the meta-parameters, before the first
inner step) is passed as an expanded view, stride 0 on that axis: :func:`conv` then convolves densely, yet
still returns one gradient per task (a grouped weight gradient), which is what the inner loop needs.
That is why the convolution has its own autograd function: ``vmap`` runs every convolution of the first
inner step as a grouped one, and its second derivative loops over the groups one at a time. Batch norm has
one too, with its second derivative written out (:class:`_BatchNormBackward`): on this layout every pass
over the first layer's activations costs about a millisecond of memory traffic on a CPU, and autograd's
derivative of the plain formula makes several dozen of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import objectives
from .architectures import BatchStatNorm2d, Cell, SpatialMean, Zero

_ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh)
_PER_IMAGE = (nn.MaxPool2d, nn.AvgPool2d, Zero)


def is_shared(t: Tensor) -> bool:
    """True if every slice along the task axis is the same tensor (an expanded view, or a single task)."""
    return t.shape[0] == 1 or t.stride(0) == 0


def supports(model: nn.Module) -> bool:
    """True if ``model`` is a network this module evaluates: ``body`` (conv blocks or cells) then a linear ``head``."""
    if not isinstance(model, nn.Sequential) or set(model._modules) != {"body", "head"}:
        return False
    body, head = model.get_submodule("body"), model.get_submodule("head")
    if not isinstance(body, nn.Sequential) or not isinstance(head, nn.Linear) or any(True for _ in model.buffers()):
        return False
    return all(_supported_layer(layer) for layer in body)


def _supported_layer(layer: nn.Module) -> bool:
    if isinstance(layer, nn.Conv2d):
        return layer.padding_mode == "zeros" and not isinstance(layer.padding, str)
    if isinstance(layer, nn.GroupNorm):
        return layer.affine
    if isinstance(layer, nn.Linear):
        return layer.bias is not None
    if isinstance(layer, Cell):
        return all(_supported_layer(edge) for edge in layer.edges)
    if isinstance(layer, nn.Sequential):  # an edge of a cell
        return all(_supported_layer(sub) for sub in layer)
    return isinstance(layer, (BatchStatNorm2d, nn.Identity, nn.Flatten, SpatialMean, *_ELEMENTWISE, *_PER_IMAGE))


Pair = tuple[int, int]


class Geometry(NamedTuple):
    """A convolution's settings besides its tensors: ``groups`` is the layer's own (``channels`` for a depthwise
    convolution); with per-task weights each task's groups are groups of the one grouped kernel."""

    stride: Pair
    padding: Pair
    dilation: Pair = (1, 1)
    groups: int = 1


def _convolve(x: Tensor, weight: Tensor, bias: Tensor | None, geometry: Geometry) -> Tensor:
    """The forward kernel: dense where the weights are shared, else grouped with one group (set) per task."""
    n, tasks = x.shape[:2]
    stride, padding, dilation, groups = geometry
    x = x.contiguous()
    if is_shared(weight):
        shared_bias = bias[0] if bias is not None and is_shared(bias) else None
        y = F.conv2d(x.flatten(0, 1), weight[0], shared_bias, stride, padding, dilation, groups)
        y = y.view(n, tasks, *y.shape[1:])
        return y + bias[None, :, :, None, None] if bias is not None and shared_bias is None else y
    flat_bias = bias.flatten() if bias is not None else None
    y = F.conv2d(x.flatten(1, 2), weight.flatten(0, 1), flat_bias, stride, padding, dilation, tasks * groups)
    return y.view(n, tasks, weight.shape[1], *y.shape[2:])


def _backward_kernel(grad_y: Tensor, x: Tensor, weight: Tensor, geometry: Geometry, groups: int,
                     which: int) -> Tensor:
    """One of the convolution's backward kernels (0: input gradient, 1: weight gradient), ``groups`` in all.

    ``x`` and ``weight`` must be real tensors of the right shapes even where only their shapes matter:
    the expanded placeholders of ``torch.nn.grad.conv2d_input``/``conv2d_weight`` are copied in full by the kernel.
    """
    mask = (which == 0, which == 1, False)
    out: Tensor = torch.ops.aten.convolution_backward(grad_y, x, weight, None, geometry.stride, geometry.padding,
                                                      geometry.dilation, False, (0, 0), groups, mask)[which]
    return out


def _input_grad(grad_y: Tensor, weight: Tensor, x: Tensor, geometry: Geometry) -> Tensor:
    """The input-gradient kernel (a transposed convolution), dense where the weights are shared; ``x`` for its shape."""
    grad_y, x = grad_y.contiguous(), x.contiguous()
    if is_shared(weight):
        gx = _backward_kernel(grad_y.flatten(0, 1), x.flatten(0, 1), weight[0], geometry, geometry.groups, 0)
    else:
        gx = _backward_kernel(grad_y.flatten(1, 2), x.flatten(1, 2), weight.flatten(0, 1), geometry,
                              x.shape[1] * geometry.groups, 0)
    return gx.view(x.shape)


def _weight_grad(x: Tensor, grad_y: Tensor, weight_shape: torch.Size, geometry: Geometry) -> Tensor:
    """The weight-gradient kernel: one gradient per task (grouped), whether or not the weights were shared."""
    placeholder = x.new_empty((weight_shape[0] * weight_shape[1], *weight_shape[2:]))
    gw = _backward_kernel(grad_y.contiguous().flatten(1, 2), x.contiguous().flatten(1, 2), placeholder, geometry,
                          x.shape[1] * geometry.groups, 1)
    return gw.view(weight_shape)


# Three autograd functions, each the derivative of the others: a convolution, its input gradient and its
# weight gradient are bilinear in their two tensor arguments, so each one's backward is made of the other
# two. Second derivatives (MAML) therefore run the same dense and grouped kernels as the first ones, and
# never autograd's generic double backward of a grouped convolution, which loops over the groups.


class _ConvOp(torch.autograd.Function):
    """Shared by the three: inputs ``(a, b, third, geometry)``, ``a`` and ``b`` saved; each subclass names its
    kernel (``forward``) and its derivatives with respect to ``a``, ``b`` and ``third``, as functions of the output
    gradient ``g``, ``a``, ``b`` and the geometry (``None``: no gradient)."""

    derivatives: tuple[Callable[..., Tensor] | None, ...]

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        a, b, _, ctx.geometry = inputs
        ctx.save_for_backward(a, b)

    @classmethod
    def backward(cls, ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        a, b = ctx.saved_tensors
        grads = [derivative(g, a, b, ctx.geometry) if derivative is not None and needed else None
                 for derivative, needed in zip(cls.derivatives, ctx.needs_input_grad)]
        return (*grads, None)


class _Conv(_ConvOp):
    """``conv(x, weight, bias)``; its derivatives are the input gradient, the weight gradient and a sum."""

    forward = staticmethod(_convolve)
    derivatives = (lambda g, x, weight, geometry: input_grad(g, weight, x, *geometry),
                   lambda g, x, weight, geometry: weight_grad(x, g, weight.shape, *geometry),
                   lambda g, x, weight, geometry: g.sum(dim=(0, 3, 4)))


class _InputGrad(_ConvOp):
    """``input_grad(grad_y, weight, x)`` (``x`` gives the shape only); bilinear in ``grad_y`` and ``weight``."""

    forward = staticmethod(_input_grad)
    derivatives = (lambda g, grad_y, weight, geometry: conv(g, weight, None, *geometry),
                   lambda g, grad_y, weight, geometry: weight_grad(g, grad_y, weight.shape, *geometry),
                   None)


class _WeightGrad(_ConvOp):
    """``weight_grad(x, grad_y, weight_shape)``; bilinear in ``x`` and ``grad_y``."""

    forward = staticmethod(_weight_grad)
    derivatives = (lambda g, x, grad_y, geometry: input_grad(grad_y, g, x, *geometry),
                   lambda g, x, grad_y, geometry: conv(x, g, None, *geometry),
                   None)


def conv(x: Tensor, weight: Tensor, bias: Tensor | None, stride: Pair, padding: Pair, dilation: Pair = (1, 1),
         groups: int = 1) -> Tensor:
    """Per-task 2-d convolution: ``x (n, T, C, H, W)``, ``weight (T, O, C // groups, k, k)``, ``bias (T, O)`` or None.

    Dense where ``weight`` is shared (an expanded view), grouped with one set of ``groups`` groups per task where
    it is not; either way the gradient w.r.t. ``weight`` has one slice per task. Differentiable any number of times.
    """
    out: Tensor = _Conv.apply(x, weight, bias, Geometry(stride, padding, dilation, groups))  # type: ignore[no-untyped-call]
    return out


def input_grad(grad_y: Tensor, weight: Tensor, x: Tensor, stride: Pair, padding: Pair, dilation: Pair = (1, 1),
               groups: int = 1) -> Tensor:
    """Gradient of :func:`conv` w.r.t. its input ``x`` (used for its shape only), given the output's gradient.

    Differentiable w.r.t. ``grad_y`` and ``weight``.
    """
    geometry = Geometry(stride, padding, dilation, groups)
    out: Tensor = _InputGrad.apply(grad_y, weight, x.detach(), geometry)  # type: ignore[no-untyped-call]
    return out


def weight_grad(x: Tensor, grad_y: Tensor, weight_shape: torch.Size, stride: Pair, padding: Pair,
                dilation: Pair = (1, 1), groups: int = 1) -> Tensor:
    """Per-task gradient of :func:`conv` w.r.t. its weights, given the output's gradient (differentiable)."""
    geometry = Geometry(stride, padding, dilation, groups)
    out: Tensor = _WeightGrad.apply(x, grad_y, weight_shape, geometry)  # type: ignore[no-untyped-call]
    return out


class _BatchNorm(torch.autograd.Function):
    """Batch norm of ``(n, C, H, W)`` with batch statistics: fused kernels forward and backward.

    The backward is :class:`_BatchNormBackward`, whose own derivative (MAML's second-order term) is written
    out below: a dozen passes over the activations, where autograd's derivative of the plain formula takes
    several dozen and the fused kernel's generic double backward is slower still.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
        y, mean, inv_std = torch.native_batch_norm(x, weight, bias, None, None, True, 0.0, eps)
        ctx.save_for_backward(x, weight)
        ctx.mean, ctx.inv_std, ctx.eps = mean, inv_std, eps
        return y

    @staticmethod
    def backward(ctx: Any, grad_y: Tensor) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad_x, grad_weight, grad_bias = _BatchNormBackward.apply(  # type: ignore[no-untyped-call]
            grad_y, x, weight, ctx.mean, ctx.inv_std, ctx.eps)
        return grad_x, grad_weight, grad_bias, None


class _BatchNormBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, grad_y: Tensor, x: Tensor, weight: Tensor, mean: Tensor, inv_std: Tensor,
                eps: float) -> tuple[Tensor, Tensor, Tensor]:
        ctx.save_for_backward(grad_y, x, weight)
        ctx.mean, ctx.inv_std = mean, inv_std
        grads: tuple[Tensor, Tensor, Tensor] = torch.ops.aten.native_batch_norm_backward(
            grad_y.contiguous(), x, weight, None, None, mean, inv_std, True, eps, [True, True, True])
        return grads

    @staticmethod
    def backward(ctx: Any, gg_x: Tensor, gg_weight: Tensor, gg_bias: Tensor) -> tuple[Tensor | None, ...]:
        # With x_hat = (x - mean) s, N values per channel, <.> their mean and R = g - <g> - x_hat <g x_hat>,
        # the backward is gx = weight s R, gw = sum g x_hat, gb = sum g. Its derivative, given (Gx, Gw, Gb):
        #   d/dg      = P - <P> - x_hat <P x_hat> + Gw x_hat + Gb,         with P = weight s Gx
        #   d/dweight = s sum(Gx R)
        #   d/dx      = s (H - <H> - x_hat <H x_hat>) - s^2 (weight sum(Gx R)) x_hat / N   (through x_hat and s)
        #     with H  = -P <g x_hat> - g <P x_hat> + Gw g                                   (d/dx_hat)
        grad_y, x, weight = ctx.saved_tensors
        needs_grad_y, needs_x, needs_weight = ctx.needs_input_grad[:3]

        def channel_mean(t: Tensor) -> Tensor:
            return t.mean(dim=(0, 2, 3), keepdim=True)

        def per_channel(t: Tensor) -> Tensor:
            return t[None, :, None, None]

        s, gamma = per_channel(ctx.inv_std), per_channel(weight)
        x_hat = torch.addcmul(-per_channel(ctx.mean) * s, x, s)
        count = x.numel() // x.shape[1]
        scale = gamma * s
        gg_x_x_hat = channel_mean(gg_x * x_hat)
        p_mean, p_x_hat = scale * channel_mean(gg_x), scale * gg_x_x_hat
        g_mean, g_x_hat = channel_mean(grad_y), channel_mean(grad_y * x_hat)
        d_grad_y = d_x = d_weight = None
        if needs_grad_y:
            d_grad_y = torch.addcmul(per_channel(gg_bias) - p_mean, x_hat, per_channel(gg_weight) - p_x_hat)
            d_grad_y = d_grad_y.addcmul_(gg_x, scale)
        if needs_x or needs_weight:
            gg_x_r = count * (channel_mean(gg_x * grad_y) - g_mean * channel_mean(gg_x) - g_x_hat * gg_x_x_hat)
            d_weight = (s * gg_x_r).flatten()
            if needs_x:
                h = torch.addcmul(grad_y * (per_channel(gg_weight) - p_x_hat), gg_x, -scale * g_x_hat)
                projection = channel_mean(h * x_hat) + scale * gg_x_r / count
                d_x = torch.addcmul(h - channel_mean(h), x_hat, -projection).mul_(s)
        return d_grad_y, d_x, d_weight if needs_weight else None, None, None, None


def batch_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """:class:`~nas_meta.architectures.BatchStatNorm2d` per task: statistics over each task's images and pixels.

    Differentiable twice (:class:`_BatchNorm`), as MAML's support pass needs.
    """
    n, tasks, channels, h, w = x.shape
    y: Tensor = _BatchNorm.apply(x.reshape(n, tasks * channels, h, w), weight.reshape(-1), bias.reshape(-1), eps)  # type: ignore[no-untyped-call]
    return y.view(x.shape)


def group_norm(x: Tensor, groups: int, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """``nn.GroupNorm`` (per image) with per-task affine parameters."""
    y = F.group_norm(x.flatten(0, 1), groups, None, None, eps).view(x.shape)
    return y * weight[None, :, :, None, None] + bias[None, :, :, None, None]


def forward(model: nn.Module, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
    """Logits of every task's images under that task's parameters.

    Args:
        model: a network :func:`supports` accepts, used only for its structure and settings.
        params: every parameter of ``model`` by name, with a leading task axis (expanded views where shared).
        x: images, example-major ``(n, T, C, H, W)``.

    Returns:
        Logits ``(n, T, ways)``.
    """
    body = model.get_submodule("body")
    assert isinstance(body, nn.Sequential)
    x = _layers(body, "body.", params, x)
    logits = torch.einsum("ntf,tof->nto", x, params["head.weight"])
    return logits + params["head.bias"][None]


def _layers(layers: nn.Sequential, prefix: str, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
    for index, layer in enumerate(layers):
        x = _layer(layer, f"{prefix}{index}.", params, x)
    return x


def _layer(layer: nn.Module, name: str, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
    """One layer of the body on every task (``name``: its parameters' prefix)."""
    if isinstance(layer, nn.Conv2d):
        return conv(x, params[name + "weight"], params.get(name + "bias"), layer.stride, layer.padding,  # type: ignore[arg-type]
                    layer.dilation, layer.groups)  # type: ignore[arg-type]
    if isinstance(layer, BatchStatNorm2d):
        return batch_norm(x, params[name + "weight"], params[name + "bias"], layer.eps)
    if isinstance(layer, nn.GroupNorm):
        return group_norm(x, layer.num_groups, params[name + "weight"], params[name + "bias"], layer.eps)
    if isinstance(layer, _PER_IMAGE):
        pooled = layer(x.flatten(0, 1))
        pooled_tasks: Tensor = pooled.view(*x.shape[:2], *pooled.shape[1:])
        return pooled_tasks
    if isinstance(layer, nn.Linear):  # a hidden layer of an MLP body (with a bias: supports): each task's own weights
        return torch.einsum("nti,toi->nto", x, params[name + "weight"]) + params[name + "bias"][None]
    if isinstance(layer, nn.Flatten):
        return x.flatten(2)
    if isinstance(layer, SpatialMean):
        return x.mean(dim=(-2, -1))
    if isinstance(layer, Cell):  # Cell.forward's wiring, each edge on every task
        return layer.wire(x, lambda edge, state: _layer(layer.edges[edge], f"{name}edges.{edge}.", params, state))
    if isinstance(layer, nn.Sequential):
        return _layers(layer, name, params, x)
    out: Tensor = layer(x)  # elementwise activation, or Identity
    return out


def summed_task_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Sum over tasks of each task's mean loss (:mod:`nas_meta.objectives`); ``logits (n, T, outputs)``, targets
    ``y (T, n)`` (labels) or ``(T, n, outputs)`` (real values).

    Its gradient w.r.t. per-task parameters is each task's own loss gradient.
    """
    return objectives.example_losses(logits, y.transpose(0, 1)).sum() / y.shape[1]


def task_scores(logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Per-task mean loss and accuracy (NaN for regression), each ``(T,)``; shapes as :func:`summed_task_loss`."""
    targets = y.transpose(0, 1)
    losses = objectives.example_losses(logits, targets)
    return losses.mean(dim=0), objectives.example_correct(logits, targets).mean(dim=0)
