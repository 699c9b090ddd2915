"""Build the few-shot network described by an :class:`ArchConfig`.

The default is the MAML paper's Omniglot network (Finn et al., 2017): 4 x [3x3 conv, 64 filters,
stride 2, BatchNorm, ReLU] -> spatial mean -> linear. BatchNorm keeps no running statistics and always
normalises with the statistics of the batch it sees, as in MAML.
"""

from __future__ import annotations

import math

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


def feature_shape(arch: ArchConfig, image_size: int) -> tuple[int, int]:
    """Channels and side length of the feature map the convolutional body outputs."""
    side = image_size
    for _ in range(arch.blocks):
        if side >= 2:
            side = (side + 1) // 2
    return arch.channels, side


def build_body(arch: ArchConfig, image_size: int, in_channels: int = 1) -> nn.Sequential:
    """The convolutional feature extractor, ending with the head's pooling/flattening."""
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
        image_size: side of the square input images.
        in_channels: input channels (1 for Omniglot).

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
