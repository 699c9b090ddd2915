"""Build the few-shot network described by an :class:`ArchConfig`.

The default is the MAML paper's Omniglot network (Finn et al., 2017): 4 x [3x3 conv, 64 filters,
stride 2, BatchNorm, ReLU] -> spatial mean -> linear. BatchNorm keeps no running statistics and always
normalises with the statistics of the batch it sees, as in MAML.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .config import ArchConfig, InitScheme

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}


class BatchStatNorm2d(nn.Module):
    """BatchNorm that always normalises with the statistics of the batch it sees (no running statistics).

    Equal to ``nn.BatchNorm2d(track_running_stats=False)``, written with plain tensor ops: under ``vmap`` MAML's
    second-order meta-gradient differentiates through its backward pass, and autograd's derivative of these ops
    was cheaper there than the fused kernel's double-backward formula. The task-batched engine, which runs the
    networks nas-meta builds, has its own batch norm (:func:`nas_meta.task_batched.batch_norm`).
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        centered = x - mean
        var = (centered * centered).mean(dim=(0, 2, 3), keepdim=True)
        scale = torch.rsqrt(var + self.eps) * self.weight[:, None, None]
        return centered * scale + self.bias[:, None, None]


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return BatchStatNorm2d(channels)
    if kind == "instance":
        return nn.GroupNorm(channels, channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    return nn.Identity()


def reduction_cells(blocks: int) -> set[int]:
    """Positions of the reduction cells among ``blocks`` cells: ``blocks // 3`` and ``2 * blocks // 3`` (DARTS)."""
    return {blocks // 3, 2 * blocks // 3}


def feature_shape(arch: ArchConfig, image_size: int) -> tuple[int, int]:
    """Channels and side length of the feature map the convolutional body outputs."""
    side = image_size
    halvings = arch.blocks if arch.kind == "conv" else 1 + len(reduction_cells(arch.blocks))  # cells: stem, reductions
    for _ in range(halvings):
        if side >= 2:
            side = (side + 1) // 2
    return arch.channels, side


class Zero(nn.Module):
    """The ``none`` operation of a cell: no connection (zeros of the output's shape)."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., :: self.stride, :: self.stride] * 0.0


def cell_operation(op: str, channels: int, stride: int, arch: ArchConfig) -> nn.Module:
    """One edge of a cell (an operation of :data:`~nas_meta.config.CELL_OPS`), ``channels`` in and out.

    Convolutions are activation -> convolution(s) -> norm, as in DARTS; a separable convolution is a depthwise
    ``k x k`` then a pointwise ``1 x 1`` convolution; the dilated one a depthwise 3 x 3 with dilation 2 then a
    pointwise one. ``skip`` with stride 2 is a strided ``1 x 1`` convolution. Every operation maps a side ``n`` to
    ``ceil(n / stride)``.
    """
    act, c = _ACTIVATIONS[arch.activation], channels
    if op in ("conv_3x3", "conv_5x5"):
        k = int(op[-1])
        return nn.Sequential(act(), nn.Conv2d(c, c, k, stride, k // 2), _norm(arch.norm, c))
    if op in ("sep_conv_3x3", "sep_conv_5x5"):
        k = int(op[-1])
        return nn.Sequential(act(), nn.Conv2d(c, c, k, stride, k // 2, groups=c), nn.Conv2d(c, c, 1), _norm(arch.norm, c))
    if op == "dil_conv_3x3":
        return nn.Sequential(act(), nn.Conv2d(c, c, 3, stride, 2, dilation=2, groups=c), nn.Conv2d(c, c, 1),
                             _norm(arch.norm, c))
    if op == "max_pool_3x3":
        return nn.MaxPool2d(3, stride, 1)
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride, 1, count_include_pad=False)
    if op == "skip":
        return nn.Identity() if stride == 1 else nn.Sequential(act(), nn.Conv2d(c, c, 1, stride), _norm(arch.norm, c))
    if op == "none":
        return Zero(stride)
    raise ValueError(f"unknown cell operation {op!r}")  # ArchConfig refuses it first


class Cell(nn.Module):
    """A DARTS-style cell: node ``j`` sums its two edges (``edges[2j]``, ``edges[2j + 1]``), each an operation on the
    cell's input (0) or an earlier node (``k``); the output is the mean of the nodes. A reduction cell applies its
    operations on the cell's input with stride 2, halving the side."""

    def __init__(self, edges: list[tuple[str, int]], channels: int, reduction: bool, arch: ArchConfig) -> None:
        super().__init__()
        self.sources = [source for _, source in edges]
        self.edges = nn.ModuleList(cell_operation(op, channels, 2 if reduction and source == 0 else 1, arch)
                                   for op, source in edges)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wire(x, lambda edge, state: self.edges[edge](state))

    def wire(self, x: torch.Tensor, edge: Callable[[int, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The cell's sums and mean, with ``edge(i, state)`` the ``i``-th edge applied to a state (the task-batched
        engine applies each edge to every task at once)."""
        states = [x]
        for j in range(len(self.edges) // 2):
            a, b = 2 * j, 2 * j + 1
            states.append(edge(a, states[self.sources[a]]) + edge(b, states[self.sources[b]]))
        return torch.stack(states[1:]).mean(dim=0)


def build_cell_body(arch: ArchConfig, in_channels: int = 1) -> list[nn.Module]:
    """A stride-2 ``3 x 3`` stem convolution and its norm, then ``arch.blocks`` cells (see :class:`ArchConfig`)."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, arch.channels, 3, 2, 1), _norm(arch.norm, arch.channels)]
    reductions = reduction_cells(arch.blocks)
    for i in range(arch.blocks):
        reduction = i in reductions
        layers.append(Cell(arch.cell_edges("reduce" if reduction else "normal"), arch.channels, reduction, arch))
    return layers


def build_body(arch: ArchConfig, image_size: int, in_channels: int = 1) -> nn.Sequential:
    """The feature extractor: convolutional (ending with the head's pooling/flattening), or for ``kind: mlp`` the
    flattened input through ``blocks`` hidden layers of ``channels`` units, each followed by the activation."""
    if arch.kind == "mlp":
        hidden: list[nn.Module] = [nn.Flatten()]
        width = in_channels * image_size * image_size
        for _ in range(arch.blocks):
            hidden += [nn.Linear(width, arch.channels), _ACTIVATIONS[arch.activation]()]
            width = arch.channels
        return nn.Sequential(*hidden)
    if arch.kind == "cells":
        return nn.Sequential(*build_cell_body(arch, in_channels),
                             nn.Flatten() if arch.head == "flatten" else SpatialMean())
    layers: list[nn.Module] = []
    channels, side = in_channels, image_size
    for _ in range(arch.blocks):
        downsample = side >= 2  # a 1x1 map is not downsampled further
        stride = 2 if downsample and arch.downsample == "stride" else 1
        layers.append(nn.Conv2d(channels, arch.channels, arch.kernel, stride=stride, padding=arch.kernel // 2))
        layers.append(_norm(arch.norm, arch.channels))
        layers.append(_ACTIVATIONS[arch.activation]())
        if downsample and arch.downsample == "maxpool":
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        if downsample:
            side = (side + 1) // 2
        channels = arch.channels
    layers.append(nn.Flatten() if arch.head == "flatten" else SpatialMean())
    return nn.Sequential(*layers)


def feature_dim(arch: ArchConfig, image_size: int) -> int:
    """Length of the feature vector the head's linear layer reads."""
    if arch.kind == "mlp":
        return arch.channels
    channels, side = feature_shape(arch, image_size)
    return channels * side * side if arch.head == "flatten" else channels


class SpatialMean(nn.Module):
    """Mean over the two spatial axes: ``(..., C, H, W) -> (..., C)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1))


def build_network(arch: ArchConfig, ways: int, image_size: int = 28, in_channels: int = 1) -> nn.Sequential:
    """The few-shot classifier: body then a ``ways``-way linear head (module names ``body``/``head``).

    Args:
        arch: the architecture.
        ways: number of output classes.
        image_size: side of the square input images (1 for a task family whose inputs are real vectors:
            :meth:`~nas_meta.config.TrainConfig.network_input`).
        in_channels: input channels (1 for Omniglot), or an input vector's length.

    Returns:
        An ``nn.Sequential`` with children ``body`` and ``head``.
    """
    net = nn.Sequential()
    net.add_module("body", build_body(arch, image_size, in_channels))
    net.add_module("head", nn.Linear(feature_dim(arch, image_size), ways))
    return net


def initialize(module: nn.Module, scheme: InitScheme, generator: torch.Generator | None = None) -> None:
    """Re-initialise conv and linear weights in place with ``scheme``; biases to zero, norm scales to one."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight
            with torch.no_grad():
                if scheme == "kaiming":
                    fan_in = w[0].numel()
                    w.normal_(0.0, math.sqrt(2.0 / fan_in), generator=generator)
                elif scheme == "xavier":
                    fan_in, fan_out = w[0].numel(), w.shape[0] * w[0][0].numel()
                    bound = math.sqrt(6.0 / (fan_in + fan_out))
                    w.uniform_(-bound, bound, generator=generator)
                else:
                    flat = torch.randn(w.shape[0], w[0].numel(), generator=generator)
                    q, r = torch.linalg.qr(flat if flat.shape[0] >= flat.shape[1] else flat.T)
                    q = q * torch.sign(torch.diagonal(r))
                    w.copy_((q if flat.shape[0] >= flat.shape[1] else q.T).reshape(w.shape))
                if m.bias is not None:
                    m.bias.zero_()
        elif isinstance(m, (BatchStatNorm2d, nn.GroupNorm)) and m.weight is not None:
            with torch.no_grad():
                m.weight.fill_(1.0)
                m.bias.zero_()


def count_parameters(module: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
