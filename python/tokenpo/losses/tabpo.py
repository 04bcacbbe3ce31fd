# ruff: noqa: RUF001, RUF002 -- formulas use the math notation of docs/losses.md
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
from tokenpo.losses._ops import below, logistic_loss, masked_sum
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
        # One side after the other, each while its tensors are still in cache.
        chosen_weights = masked_weights(chosen_side)
        chosen_score, chosen = self._score(chosen_side, chosen_weights)
        # A comparison: the gate carries no gradient. It is 0/1 on every position here and is
        # masked by the weights (0 on padding); the gated-token count masks it explicitly.
        gate = below(chosen_side.policy, math.log(self.tau))
        gated_tokens = torch.dot(gate.reshape(-1), chosen_side.mask_float.reshape(-1))
        barrier = self._barrier(chosen_side, gate.mul_(chosen_weights.weight), chosen_weights)
        rejected_score, rejected = self._score(rejected_side, masked_weights(rejected_side))
        preference = logistic_loss(self.beta * (chosen_score - rejected_score))
        return PairTerms(
            per_pair=torch.add(preference, barrier, alpha=self.barrier_weight),
            chosen_reward=self.beta * chosen_score.detach(),
            rejected_reward=self.beta * rejected_score.detach(),
            chosen=chosen,
            rejected=rejected,
            sides=(chosen_side, rejected_side),
            metrics={
                "tabpo/preference": preference.detach(),
                "tabpo/barrier": barrier.detach(),
                "tabpo/gate_share": gated_tokens / chosen.count.sum().clamp(min=1.0),
            },
        )

    def _score(self, side: Side, weights: MaskedWeights) -> tuple[Tensor, SideStats]:
        """``s(y) − s_ref(y)`` of each row, ``[B]``, and the side's sums for the metrics.

        ``Σ_t m w̃ ρ = scale · Σ_t (m w) ρ``, so ``w̃`` is never materialised; with
        ``length_norm``, ``scale / max(1, n) = 1 / max(Σ_t m w, 1e-6)``. ``ρ`` is computed once
        and reused (detached) by the diff-margin metric.
        """
        ref = side.need("ref", by=self.name)
        token_log_ratio = side.policy - ref
        total = masked_sum(token_log_ratio, weights.weight)
        if self.length_norm:
            score = total / weights.total.clamp(min=1e-6)
        else:
            score = total if weights.scale is None else weights.scale * total
        # The unweighted sums the metrics log, without autograd.
        logps = masked_sum(side.policy.detach(), side.mask_float)
        ref_logps = masked_sum(ref.detach(), side.mask_float)
        stats = SideStats(
            count=weights.count,
            logps=logps,
            ref_logps=ref_logps,
            token_log_ratio=token_log_ratio.detach(),
        )
        return score, stats

    def _barrier(self, side: Side, gated_weight: Tensor, weights: MaskedWeights) -> Tensor:
        """``Σ g w̃ b / max(1, Σ g w̃)`` of each row, ``[B]``, from ``gated_weight = g·m·w``."""
        if self.barrier == "nll":
            numerator, sign = masked_sum(side.policy, gated_weight), -1.0
        else:
            excess = torch.relu(side.need("ref", by=self.name) - side.policy)
            numerator, sign = masked_sum(excess, gated_weight), 1.0
        # The gate and the weights carry no gradient: one factor per row, then one product.
        denominator = gated_weight.sum(-1)
        if weights.scale is None:
            factor = denominator.clamp_(min=1.0).reciprocal_()
        else:
            factor = (weights.scale * denominator).clamp_(min=1.0).reciprocal_().mul_(weights.scale)
        return numerator * factor.mul_(sign)


@dataclass(frozen=True, slots=True)
class MaskedWeights:
    """Prep's token weights on the completion tokens of one side, and their row sums."""

    weight: Tensor
    """``m·w``, ``[B, T]`` (``m`` when the batch has no weights)."""
    total: Tensor
    """``Σ_t m w``, ``[B]``."""
    count: Tensor
    """``n = Σ_t m``, ``[B]`` (unclamped)."""
    scale: Tensor | None
    """``max(1, n) / max(Σ_t m w, 1e-6)``, ``[B]``, the factor with ``w̃ = scale · w``;
    ``None`` without weights (``w̃ ≡ 1``)."""


def masked_weights(side: Side) -> MaskedWeights:
    """Prep's weights on the completion tokens and the per-row factor that renormalises them
    to mean 1, ``w̃ = scale · w`` with ``scale = n / max(Σ_t m w, 1e-6)``.

    Without weights: ``m`` and no scale. The clamps (``n`` at 1, the sum at 1e-6) are the
    authors'.
    """
    count = side.mask_float.sum(-1)
    if side.weight is None:
        return MaskedWeights(weight=side.mask_float, total=count, count=count, scale=None)
    weight = side.weight * side.mask_float
    total = weight.sum(-1)
    scale = count.clamp(min=1.0) / total.clamp(min=1e-6)
    return MaskedWeights(weight=weight, total=total, count=count, scale=scale)
