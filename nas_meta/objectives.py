"""A task's loss and score, read from its targets: the one place where classification and regression differ.

Class labels (an integer tensor) mean classification: the loss is the cross-entropy of the outputs (one logit per
class) and the score is accuracy. Real-valued targets (a floating tensor with the outputs' last dimension) mean
regression: the loss is the mean squared error and there is no accuracy (NaN, reported as missing). A task family
(:mod:`nas_meta.tasks`) chooses its objective by the targets its episodes carry; the engines, learners and
evaluation call these functions and never ask which family they run.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def is_regression(targets: Tensor) -> bool:
    """Whether ``targets`` are real values (regression) rather than class labels."""
    return targets.is_floating_point()


def example_losses(outputs: Tensor, targets: Tensor) -> Tensor:
    """The loss of each example: ``outputs (..., C)`` against labels ``(...)`` or real targets ``(..., C)``."""
    if is_regression(targets):
        return (outputs - targets).square().mean(dim=-1)
    flat = F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1), reduction="none")
    return flat.view(targets.shape)


def mean_loss(outputs: Tensor, targets: Tensor) -> Tensor:
    """The mean loss over all examples (a 0-d tensor)."""
    if is_regression(targets):
        return F.mse_loss(outputs, targets)
    return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1))


def example_correct(outputs: Tensor, targets: Tensor) -> Tensor:
    """1 where an example's class is predicted, else 0; NaN for every example of a regression task."""
    if is_regression(targets):
        return torch.full(outputs.shape[:-1], float("nan"), dtype=outputs.dtype, device=outputs.device)
    return (outputs.argmax(dim=-1) == targets).to(outputs.dtype)
