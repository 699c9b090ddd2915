"""Network construction from ArchConfig; forward passes run on the ``device`` fixture ($NAS_META_TEST_DEVICE)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nas_meta.architectures import BatchStatNorm2d, build_network, count_parameters, feature_dim, initialize
from nas_meta.config import ArchConfig


def test_default_is_the_maml_omniglot_network(device: torch.device) -> None:
    net = build_network(ArchConfig(), ways=5).to(device)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (1, 64, (3, 3), (2, 2))] + [(64, 64, (3, 3), (2, 2))] * 3
    assert sum(isinstance(m, BatchStatNorm2d) for m in net.modules()) == 4
    # 4 convs (640 + 3 * 36,928) + 4 BatchNorms (4 * 128) + linear 64 -> 5 (325)
    assert count_parameters(net) == 112_261
    assert net(torch.rand(7, 1, 28, 28, device=device)).shape == (7, 5)


@pytest.mark.parametrize("blocks", [2, 4, 6])
@pytest.mark.parametrize("downsample", ["stride", "maxpool"])
@pytest.mark.parametrize("norm", ["batch", "instance", "layer", "none"])
@pytest.mark.parametrize("head", ["mean", "flatten"])
def test_every_combination_builds_and_runs(blocks: int, downsample: str, norm: str, head: str,
                                           device: torch.device) -> None:
    arch = ArchConfig(blocks=blocks, channels=8, kernel=5, downsample=downsample, norm=norm, head=head)  # type: ignore[arg-type]
    net = build_network(arch, ways=20, image_size=28).to(device)
    out = net(torch.rand(3, 1, 28, 28, device=device))
    assert out.shape == (3, 20)
    assert net.get_submodule("head").in_features == feature_dim(arch, 28)


def test_batch_stat_norm_equals_torch_batch_norm_in_value_and_gradients(device: torch.device) -> None:
    torch.manual_seed(0)
    x = torch.randn(6, 5, 4, 4, dtype=torch.float64).to(device).requires_grad_()  # drawn on the CPU, then moved
    norm = BatchStatNorm2d(5).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-1, 1)
    norm.to(device)
    ours = norm(x)
    ref = F.batch_norm(x, None, None, norm.weight, norm.bias, training=True, eps=1e-5)
    assert torch.allclose(ours, ref, atol=1e-12)
    w = torch.randn_like(ours)
    g1 = torch.autograd.grad((ours * w).sum(), x, create_graph=True)[0]
    g2 = torch.autograd.grad((ref * w).sum(), x, create_graph=True)[0]
    assert torch.allclose(g1, g2, atol=1e-10)
    h1 = torch.autograd.grad((g1**2).sum(), norm.weight)[0]
    h2 = torch.autograd.grad((g2**2).sum(), norm.weight)[0]
    assert torch.allclose(h1, h2, atol=1e-8)


# CPU only: initialize fills weights from a CPU torch.Generator, so it runs before a module moves (build_learner
# initialises a learner on the CPU, then moves it to its device); CUDA weights would need a CUDA generator, and the
# orthogonal scheme would still draw its matrix on the CPU.
@pytest.mark.parametrize("scheme", ["kaiming", "xavier", "orthogonal"])
def test_initialize_is_deterministic_and_scaled(scheme: str) -> None:
    a, b = build_network(ArchConfig(), 5), build_network(ArchConfig(), 5)
    initialize(a, scheme, torch.Generator().manual_seed(3))  # type: ignore[arg-type]
    initialize(b, scheme, torch.Generator().manual_seed(3))  # type: ignore[arg-type]
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name
    conv = a.get_submodule("body.3").weight
    fan_in = conv[0].numel()
    if scheme == "kaiming":
        assert float(conv.std()) == pytest.approx((2 / fan_in) ** 0.5, rel=0.05)
    if scheme == "orthogonal":
        flat = conv.reshape(conv.shape[0], -1)
        assert torch.allclose(flat @ flat.T, torch.eye(conv.shape[0]), atol=1e-5)
    assert float(a.get_submodule("body.0").bias.abs().sum()) == 0.0
