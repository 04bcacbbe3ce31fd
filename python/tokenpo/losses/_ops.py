# ruff: noqa: RUF002 -- formulas use the math notation of docs/losses.md
"""Tensor helpers shared by the loss families: masked reductions and the logistic family.

Masks are applied by multiplying with a 0/1 float mask (``Side.mask_float``): on CPU that is
several times cheaper than ``torch.where`` and adds no autograd node of its own, at the cost
of requiring finite padding. Every denominator is clamped at 1, so an all-masked row gives 0,
not NaN.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.functional import logsigmoid

__all__ = ["below", "logistic_loss", "masked_mean", "masked_sum", "safe_divide"]


def masked_sum(values: Tensor, mask_float: Tensor) -> Tensor:
    """``Σ_t mask_t · values_t`` over the last dimension: ``[B, T] -> [B]``."""
    return (values * mask_float).sum(-1)


def below(values: Tensor, threshold: Tensor | float) -> Tensor:
    """``1[values < threshold]`` as 0/1 in the dtype and shape of ``values``, no gradient.

    ``threshold`` must broadcast to ``values`` (a scalar, or ``[B, 1]`` against ``[B, T]``).
    The comparison writes floats directly: on CPU a ``bool`` result and its conversion cost
    several times more than the comparison itself.
    """
    values = values.detach()
    if isinstance(threshold, Tensor):
        threshold = threshold.detach()
    return torch.lt(values, threshold, out=torch.empty_like(values))


def safe_divide(numerator: Tensor, denominator: Tensor) -> Tensor:
    """``numerator / max(denominator, 1)``: a mean over zero items is 0."""
    return numerator / denominator.clamp(min=1.0)


def masked_mean(values: Tensor, mask_float: Tensor) -> Tensor:
    """Mean of ``values`` over the selected entries of each row, 0 for an empty row."""
    return safe_divide(masked_sum(values, mask_float), mask_float.sum(-1))


def logistic_loss(margin: Tensor, *, label_smoothing: float = 0.0) -> Tensor:
    """``−(1−ε) log σ(x) − ε log σ(−x)``, elementwise: the loss of DPO and its logistic kin.

    ``log σ`` is computed by ``logsigmoid``, which is exact for margins of any size.
    """
    loss = -logsigmoid(margin)
    if label_smoothing:
        loss = (1.0 - label_smoothing) * loss - label_smoothing * logsigmoid(-margin)
    return loss
