# ruff: noqa: RUF001, RUF002 -- formulas use the math notation of docs/losses.md
"""Tensor helpers shared by the loss families: masked reductions, the logistic family, and a
hand-written gradient node for losses linear in the token log-probs (:func:`with_token_gradient`).

Masks are applied by multiplying with a 0/1 float mask (``Side.mask_float``): on CPU that is
several times cheaper than ``torch.where`` and adds no autograd node of its own, at the cost
of requiring finite padding. Every denominator is clamped at 1, so an all-masked row gives 0,
not NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable
from torch.nn.functional import logsigmoid

__all__ = [
    "TokenSlopes",
    "below",
    "logistic_loss",
    "masked_mean",
    "masked_sum",
    "safe_divide",
    "with_token_gradient",
]


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


@dataclass(frozen=True, slots=True)
class TokenSlopes:
    """The gradient of a per-pair loss into one side's log-probs when the loss depends on them
    through row sums whose weights carry no gradient: ``∂L_i/∂ℓ_{i,t} = Σ_k s_{k,i} r_{k,i,t}``.
    """

    rows: tuple[Tensor, ...]
    """The weights ``r_k``, ``[B, T]`` each."""
    slopes: tuple[Tensor, ...]
    """The per-pair slopes ``s_k = ∂L_i/∂(Σ_t r_{k,i,t} ℓ_{i,t})``, ``[B]`` each."""

    def gradient(self, grad_per_pair: Tensor) -> Tensor:
        """``∂(Σ_i g_i L_i)/∂ℓ``, ``[B, T]``, for ``g = grad_per_pair``: one pass per row."""
        first, *others = zip(self.rows, self.slopes, strict=True)
        gradient = first[0] * (grad_per_pair * first[1]).unsqueeze(-1)
        for row, slope in others:
            gradient.addcmul_(row, (grad_per_pair * slope).unsqueeze(-1))
        return gradient


def with_token_gradient(
    per_pair: Tensor,
    inputs: Sequence[Tensor],
    slopes: Sequence[TokenSlopes],
) -> Tensor:
    """``per_pair``, computed without autograd, attached to each of ``inputs`` (``[B, T]``
    each: the chosen and rejected policy log-probs, and any other per-token input a loss
    trains, such as tbpo_q's baselines) through the gradient its ``slopes`` describe.

    For losses whose graph would be a few ``[B, T]`` products and sums and many small ``[B]``
    operations: at ``B·T = 32k`` on CPU each recorded operation costs about as much as its
    work, forward and backward, and this is one node and one pass per row backward. The float64
    gradcheck tests hold each use to its formula.
    """
    if len(inputs) != len(slopes):
        raise ValueError(f"{len(inputs)} inputs but {len(slopes)} slopes")
    return _TokenGradient.apply(per_pair, tuple(slopes), *inputs)  # type: ignore[no-any-return]


class _TokenGradient(torch.autograd.Function):
    """The node :func:`with_token_gradient` adds."""

    @staticmethod
    def forward(
        ctx: FunctionCtx, per_pair: Tensor, slopes: tuple[TokenSlopes, ...], *inputs: Tensor
    ) -> Tensor:
        ctx.slopes = slopes  # type: ignore[attr-defined]
        return per_pair.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_per_pair: Tensor) -> tuple[Tensor | None, ...]:
        needed = ctx.needs_input_grad[2:]  # type: ignore[attr-defined]
        gradients = (
            slopes.gradient(grad_per_pair) if need else None
            for slopes, need in zip(ctx.slopes, needed, strict=True)  # type: ignore[attr-defined]
        )
        return (None, None, *gradients)
