# ruff: noqa: RUF001, RUF002, RUF003 -- formulas use the math notation of docs/losses.md
"""TAB-PO: token-weighted, reference-adjusted DPO with a confidence-gated barrier.

Source: Fodeh et al., arXiv 2603.00025, as implemented by the authors in SarielMa/TAB-PO
(``train_dpo.py``, commit a80ad13, read for this module); definitions in ``docs/losses.md``
§ "TAB-PO". One deliberate difference from LOSSES.md, following that code: the barrier is a
*weighted* mean, its denominator ``max(1, Σ_t g_t w̃_t)`` rather than ``max(1, Σ_t g_t)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor

from tokenpo.losses._base import PairLoss, PairTerms, SideStats
from tokenpo.losses._ops import (
    TokenSlopes,
    below,
    logistic_loss,
    masked_sum,
    with_token_gradient,
)
from tokenpo.losses.batch import PairLogps, Side
from tokenpo.losses.config import check_bool, check_choice, check_number

__all__ = ["TABPO", "MaskedWeights", "masked_weights"]


@dataclass(frozen=True, kw_only=True, slots=True)
class TABPO(PairLoss):
    """TAB-PO (arXiv 2603.00025): ``L_pref + λ L_bar`` per pair, averaged with ``pair_weight``.

    - ``w̃ = w · n / max(Σ_t m_t w_t, 1e-6)`` with ``n = max(1, Σ_t m_t)``: prep's token weights
      renormalised to mean 1 over each completion (all ones without weights).
    - ``s(y) = Σ_t m_t w̃_t ℓ_t / n`` (``length_norm``, the authors' default) or without ``/ n``;
      ``s_ref`` likewise; ``L_pref = −log σ(β[(s(y_w) − s(y_l)) − (s_ref(y_w) − s_ref(y_l))])``.
    - Gate on chosen tokens ``g_t = m_t · 1[ℓ^w_t < log τ]`` (boolean, so no gradient);
      ``L_bar = Σ_t g_t w̃_t b_t / max(1, Σ_t g_t w̃_t)`` with ``b_t = −ℓ^w_t`` (``"nll"``, the
      authors') or ``relu(ℓ^ref,w_t − ℓ^w_t)`` (``"ref"``, ours: never pushed above the SFT model).

    Needs the reference log-probs; uses ``chosen_weight``/``rejected_weight`` when given.
    With unit weights and ``barrier_weight=0`` it is dpo (``length_norm=False``) or DPO on
    mean token log-probs (``length_norm=True``, TRL's ``sigmoid_norm``).
    """

    name: ClassVar[str] = "tabpo"
    beta: float = 0.5
    """β > 0 (the authors use 0.5)."""
    tau: float = 0.66
    """τ in (0, 1]: chosen tokens with probability below τ get the barrier."""
    barrier_weight: float = 0.5
    """λ ≥ 0, the weight of the barrier (the authors' ``sft_barrier_weight``)."""
    length_norm: bool = True
    """Divide the weighted sums by the completion length (the authors do)."""
    barrier: Literal["nll", "ref"] = "nll"
    """``"nll"``: the authors' barrier ``−ℓ``; ``"ref"``: ``relu(ℓ^ref − ℓ)``."""

    def __post_init__(self) -> None:
        check_number(self.name, "beta", self.beta, low=0.0, low_open=True)
        check_number(self.name, "tau", self.tau, low=0.0, high=1.0, low_open=True)
        check_number(self.name, "barrier_weight", self.barrier_weight, low=0.0)
        check_bool(self.name, "length_norm", self.length_norm)
        check_choice(self.name, "barrier", self.barrier, ("nll", "ref"))

    def terms(self, batch: PairLogps, /) -> PairTerms:
        chosen_side, rejected_side = batch.sides()
        # Computed off the graph, then attached to it through its gradient (with_token_gradient).
        with torch.no_grad():
            # One side after the other, each while its tensors are still in cache.
            chosen_weights = masked_weights(chosen_side)
            chosen_reward, chosen, chosen_denominator = self._reward(chosen_side, chosen_weights)
            barrier = self._barrier(chosen_side, chosen_weights)
            rejected_weights = masked_weights(rejected_side)
            rejected_reward, rejected, rejected_denominator = self._reward(
                rejected_side, rejected_weights
            )
            margin = chosen_reward - rejected_reward
            preference = logistic_loss(margin)
            # −log σ(x) has slope −σ(−x); each reward is Σ_t (m w) ρ / d, with ∂ρ/∂ℓ = 1.
            preference_slope = torch.sigmoid(margin.neg())
        per_pair = with_token_gradient(
            torch.add(preference, barrier.value, alpha=self.barrier_weight),
            (chosen_side.policy, rejected_side.policy),
            (
                TokenSlopes(
                    (chosen_weights.weight, barrier.token_slope),
                    (
                        preference_slope.neg() / chosen_denominator,
                        self.barrier_weight / barrier.denominator,
                    ),
                ),
                TokenSlopes((rejected_weights.weight,), (preference_slope / rejected_denominator,)),
            ),
        )
        return PairTerms(
            per_pair=per_pair,
            chosen_reward=chosen_reward,
            rejected_reward=rejected_reward,
            chosen=chosen,
            rejected=rejected,
            sides=(chosen_side, rejected_side),
            metrics={
                "tabpo/preference": preference,
                "tabpo/barrier": barrier.value,
                "tabpo/gate_share": barrier.gated_tokens / chosen.count.sum().clamp(min=1.0),
            },
        )

    def _reward(
        self, side: Side, weights: MaskedWeights
    ) -> tuple[Tensor, SideStats, Tensor | float]:
        """``β (s(y) − s_ref(y))`` of each row, ``[B]``, the side's sums for the metrics, and
        the reward's denominator ``d`` (the reward is ``Σ_t (m w) ρ / d``).

        ``ρ`` is computed once and reused by the diff-margin metric.
        """
        ref = side.need("ref", by=self.name)
        token_log_ratio = side.policy - ref
        denominator = self._reward_denominator(weights)
        stats = SideStats(
            count=weights.count,
            logps=masked_sum(side.policy, side.mask_float),
            ref_logps=masked_sum(ref, side.mask_float),
            token_log_ratio=token_log_ratio,
        )
        return masked_sum(token_log_ratio, weights.weight) / denominator, stats, denominator

    def _reward_denominator(self, weights: MaskedWeights) -> Tensor | float:
        """``d`` with ``β (s(y) − s_ref(y)) = Σ_t (m w) ρ / d``, per row (or one number).

        ``Σ_t m w̃ ρ = scale · Σ_t (m w) ρ``, so ``w̃`` is never materialised; with
        ``length_norm``, ``scale / max(1, n) = 1 / max(Σ_t m w, 1e-6)``.
        """
        if self.length_norm:
            return weights.total.clamp(min=1e-6).div_(self.beta)
        if weights.weighted:
            return weights.inverse_scale().div_(self.beta)
        return 1.0 / self.beta

    def _barrier(self, side: Side, weights: MaskedWeights) -> _Barrier:
        """``Σ g w̃ b / max(1, Σ g w̃)`` of each row and what its gradient needs.

        The gate is a comparison (no gradient), 0/1 on every position: the weights mask it
        (0 on padding), the gated-token count masks it explicitly. With ``w̃ = scale · w`` the
        barrier is ``Σ g m w b / d`` with ``d = max(1 / scale, Σ g m w)`` (``scale > 0``).
        """
        gate = below(side.policy, math.log(self.tau))
        gated_tokens = torch.dot(gate.reshape(-1), side.mask_float.reshape(-1))
        gated_weight = gate.mul_(weights.weight)
        denominator = gated_weight.sum(-1)
        if weights.weighted:
            torch.maximum(weights.inverse_scale(), denominator, out=denominator)
        else:
            denominator.clamp_(min=1.0)
        if self.barrier == "nll":
            # b = −ℓ: the sign goes to the denominator; ∂(Σ g m w ℓ)/∂ℓ = g m w.
            denominator.neg_()
            numerator, token_slope = masked_sum(side.policy, gated_weight), gated_weight
        else:
            excess = torch.relu(side.need("ref", by=self.name) - side.policy)
            numerator = masked_sum(excess, gated_weight)
            # relu(ℓ^ref − ℓ) has slope −1 where it is positive (0 at the kink, as torch's).
            token_slope = below(excess.neg_(), 0.0).mul_(gated_weight).neg_()
        return _Barrier(
            value=numerator / denominator,
            denominator=denominator,
            token_slope=token_slope,
            gated_tokens=gated_tokens,
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class _Barrier:
    """TAB-PO's barrier on the chosen side and what its gradient needs (no autograd)."""

    value: Tensor
    """``L_bar`` of each row, ``[B]``."""
    denominator: Tensor
    """``d`` with ``L_bar = Σ_t g m w ℓ / d`` (``"nll"``, ``d < 0``) or ``Σ_t g m w b / d``."""
    token_slope: Tensor
    """``∂(d · L_bar)/∂ℓ_t``, ``[B, T]``: ``g m w`` (``"nll"``) or ``−g m w 1[b_t > 0]``."""
    gated_tokens: Tensor
    """``Σ_t g_t m_t`` over the batch, a scalar (for the gate-share metric)."""


@dataclass(frozen=True, slots=True)
class MaskedWeights:
    """Prep's token weights on the completion tokens of one side, and their row sums."""

    weight: Tensor
    """``m·w``, ``[B, T]`` (the side's ``mask_float`` itself when the batch has no weights)."""
    total: Tensor
    """``Σ_t m w``, ``[B]``."""
    count: Tensor
    """``n = Σ_t m``, ``[B]`` (unclamped)."""
    weighted: bool
    """Whether the batch has weights (else ``w̃ ≡ 1``)."""

    def inverse_scale(self) -> Tensor:
        """``1 / scale = max(Σ_t m w, 1e-6) / max(1, n)``, ``[B]``, a new tensor."""
        return self.total.clamp(min=1e-6) / self.count.clamp(min=1.0)


def masked_weights(side: Side) -> MaskedWeights:
    """Prep's weights on the completion tokens and their row sums: ``w̃ = scale · w``, with
    ``scale = max(1, n) / max(Σ_t m w, 1e-6)``, renormalises them to mean 1.

    Without weights: the mask itself (``w̃ ≡ 1``). The clamps (``n`` at 1, the sum at 1e-6)
    are the authors'.
    """
    count = side.mask_float.sum(-1)
    if side.weight is None:
        return MaskedWeights(weight=side.mask_float, total=count, count=count, weighted=False)
    weight = side.weight * side.mask_float
    return MaskedWeights(weight=weight, total=weight.sum(-1), count=count, weighted=True)
