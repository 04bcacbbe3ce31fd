# ruff: noqa: RUF001, RUF002, RUF003 -- formulas use the math notation of docs/losses.md
"""Token-level baselines: TDPO, TIS-DPO (weighted form) and ConfPO.

Definitions: ``docs/losses.md`` § "Token-level baselines". TRL 1.16 has none of them; the
tests check each against an independent float64 implementation of the formula.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor

from tokenpo.losses._base import PairLoss, PairTerms, SideStats, side_stats
from tokenpo.losses._ops import (
    TokenSlopes,
    logistic_loss,
    masked_sum,
    safe_divide,
    with_token_gradient,
)
from tokenpo.losses.batch import PairLogps, Side
from tokenpo.losses.config import check_choice, check_number

__all__ = ["TDPO", "TIS", "ConfPO", "sequence_kl", "token_kl"]


def token_kl(side: Side, *, by: str) -> Tensor:
    """``KL(π_ref(·|s_t) ‖ π(·|s_t))`` over the full vocabulary at each token, ``[B, T]``.

    Uses ``Σ_v p_ref (log p_ref − z_v) + logsumexp(z)`` with ``z`` the policy logits, which
    equals the KL because ``Σ_v p_ref = 1``; it never materialises the policy log-softmax, and
    is the same whether the policy gives logits or log-softmax. The reference is detached;
    padding holds finite values.
    """
    with torch.no_grad():
        ref_logp = torch.log_softmax(side.need("ref_logits", by=by), dim=-1)
        ref_prob = ref_logp.exp()
        ref_neg_entropy = (ref_prob * ref_logp).sum(-1)
    logits = side.need("policy_logits", by=by)
    cross = torch.einsum("btv,btv->bt", ref_prob, logits)
    return ref_neg_entropy - cross + torch.logsumexp(logits, dim=-1)


def sequence_kl(side: Side, *, by: str) -> Tensor:
    """``D(y) = Σ_t m_t KL(π_ref(·|s_t) ‖ π(·|s_t))``, ``[B]`` (see :func:`token_kl`)."""
    return masked_sum(token_kl(side, by=by), side.mask_float)


@dataclass(frozen=True, kw_only=True, slots=True)
class TDPO(PairLoss):
    """TDPO (Zeng et al., arXiv 2404.11999, Eqs. 25-26): DPO plus a sequential forward KL.

    ``−log σ(β[Δ + α(D(y_w) − D(y_l))])`` with ``D`` from :func:`sequence_kl`; TDPO2 stops the
    gradient through ``D(y_w)``. Needs the reference per-token log-probs and the policy and
    reference logits of both sides (so a live reference model).
    """

    name: ClassVar[str] = "tdpo"
    beta: float = 0.1
    """β > 0."""
    variant: Literal["tdpo1", "tdpo2"] = "tdpo2"
    """``tdpo2`` (the paper's better variant) detaches ``D(y_w)``; ``tdpo1`` does not."""
    alpha: float | None = None
    """α ≥ 0 weighting the KL difference; ``None``: 0.5 for tdpo2, 1.0 for tdpo1 (the paper's)."""

    def __post_init__(self) -> None:
        check_number(self.name, "beta", self.beta, low=0.0, low_open=True)
        check_choice(self.name, "variant", self.variant, ("tdpo1", "tdpo2"))
        if self.alpha is not None:
            check_number(self.name, "alpha", self.alpha, low=0.0)

    @property
    def kl_weight(self) -> float:
        """α after resolving the per-variant default."""
        if self.alpha is not None:
            return self.alpha
        return 0.5 if self.variant == "tdpo2" else 1.0

    def terms(self, batch: PairLogps, /) -> PairTerms:
        chosen_side, rejected_side = batch.sides()
        chosen = side_stats(chosen_side, by=self.name)
        rejected = side_stats(rejected_side, by=self.name)
        kl_chosen = sequence_kl(chosen_side, by=self.name)
        kl_rejected = sequence_kl(rejected_side, by=self.name)
        if self.variant == "tdpo2":
            kl_chosen = kl_chosen.detach()
        delta = chosen.log_ratio - rejected.log_ratio
        margin = self.beta * (delta + self.kl_weight * (kl_chosen - kl_rejected))
        return PairTerms(
            per_pair=logistic_loss(margin),
            chosen_reward=self.beta * chosen.log_ratio.detach(),
            rejected_reward=self.beta * rejected.log_ratio.detach(),
            chosen=chosen,
            rejected=rejected,
            sides=(chosen_side, rejected_side),
            metrics={
                "kl/chosen": kl_chosen.detach(),
                "kl/rejected": kl_rejected.detach(),
            },
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class TIS(PairLoss):
    """TIS-DPO (Liu et al., arXiv 2410.04350, Eq. 11, weighted form).

    ``−log σ(β[Σ_t m w ρ(y_w) − Σ_t m w ρ(y_l)])`` with the token weights of prep
    (``chosen_weight``/``rejected_weight``, used as given); the paper estimates its weights
    with contrastive models instead. The rewards logged are the weighted sums times β.
    """

    name: ClassVar[str] = "tis"
    beta: float = 0.1
    """β > 0."""

    def __post_init__(self) -> None:
        check_number(self.name, "beta", self.beta, low=0.0, low_open=True)

    def terms(self, batch: PairLogps, /) -> PairTerms:
        chosen_side, rejected_side = batch.sides()
        chosen_reward = self.beta * _weighted_log_ratio(chosen_side, by=self.name)
        rejected_reward = self.beta * _weighted_log_ratio(rejected_side, by=self.name)
        return PairTerms(
            per_pair=logistic_loss(chosen_reward - rejected_reward),
            chosen_reward=chosen_reward.detach(),
            rejected_reward=rejected_reward.detach(),
            chosen=side_stats(chosen_side, by=None, grad=False),
            rejected=side_stats(rejected_side, by=None, grad=False),
            sides=(chosen_side, rejected_side),
        )


def _weighted_log_ratio(side: Side, *, by: str) -> Tensor:
    """``Σ_t m_t w_t ρ_t``, ``[B]``; the reference part is summed without autograd."""
    weight = side.need("weight", by=by) * side.mask_float
    with torch.no_grad():
        ref = masked_sum(side.need("ref", by=by), weight)
    return masked_sum(side.policy, weight) - ref


@dataclass(frozen=True, kw_only=True, slots=True)
class ConfPO(PairLoss):
    """ConfPO (Yoon et al., arXiv 2506.08712): SimPO on the policy's low-confidence tokens.

    Critical tokens are those whose policy probability is below the mean token probability of
    their completion (a detached, boolean selection); ``S`` is the mean log-prob over them and
    the loss ``−log σ(β(S_w − S_l) − γ)``. Reference-free. As in the authors' code, a pair with
    a side that has no critical token (one token, or all tokens equally likely) has no ``S``
    there and contributes 0 (it still counts in the mean). Defaults follow SimPO's.
    """

    name: ClassVar[str] = "confpo"
    beta: float = 2.0
    """β > 0, the reward scale."""
    gamma: float = 1.0
    """γ, the target reward margin."""

    def __post_init__(self) -> None:
        check_number(self.name, "beta", self.beta, low=0.0, low_open=True)
        check_number(self.name, "gamma", self.gamma)

    def terms(self, batch: PairLogps, /) -> PairTerms:
        chosen_side, rejected_side = batch.sides()
        # Computed off the graph, then attached to it through its gradient (with_token_gradient).
        with torch.no_grad():
            chosen = self._side(chosen_side)
            rejected = self._side(rejected_side)
            margin = chosen.score - rejected.score - self.gamma
            scored = torch.minimum(chosen.critical_count, rejected.critical_count).clamp_(max=1.0)
            # −log σ(x) has slope −σ(−x); each score is Σ_t c_t ℓ_t / d.
            slope = torch.sigmoid(margin.neg()).mul_(scored)
            critical_share = (chosen.critical_count + rejected.critical_count).sum() / (
                chosen.stats.count + rejected.stats.count
            ).sum().clamp(min=1.0)
        per_pair = with_token_gradient(
            logistic_loss(margin).mul_(scored),
            (chosen_side.policy, rejected_side.policy),
            (
                TokenSlopes((chosen.critical,), (slope.neg() / chosen.denominator,)),
                TokenSlopes((rejected.critical,), (slope / rejected.denominator,)),
            ),
        )
        return PairTerms(
            per_pair=per_pair,
            chosen_reward=chosen.score,
            rejected_reward=rejected.score,
            chosen=chosen.stats,
            rejected=rejected.stats,
            sides=(chosen_side, rejected_side),
            metrics={"confpo/critical_share": critical_share},
        )

    def _side(self, side: Side) -> _ConfPOSide:
        """``β S`` of each row and the rest of one side, without autograd."""
        count = side.mask_float.sum(-1)
        critical = critical_tokens(side, count=count)
        critical_count = critical.sum(-1)
        # β/max(1, k) is one row tensor, so the score is one division by its inverse.
        denominator = critical_count.clamp(min=1.0).div_(self.beta)
        return _ConfPOSide(
            score=masked_sum(side.policy, critical) / denominator,
            denominator=denominator,
            critical=critical,
            critical_count=critical_count,
            stats=SideStats(
                count=count, logps=masked_sum(side.policy, side.mask_float), ref_logps=None
            ),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class _ConfPOSide:
    """What ConfPO computes for one side (no autograd)."""

    score: Tensor
    """``β S = Σ_t c_t ℓ_t / d``, ``[B]``."""
    denominator: Tensor
    """``d = max(1, Σ_t c_t) / β``, ``[B]``."""
    critical: Tensor
    """The critical tokens ``c``, 0/1, ``[B, T]``."""
    critical_count: Tensor
    """``Σ_t c_t``, ``[B]``."""
    stats: SideStats
    """The side's sums for the metrics."""


def critical_tokens(side: Side, *, count: Tensor | None = None) -> Tensor:
    """ConfPO's selection as a 0/1 float mask: tokens less likely than their completion's mean.

    Computed without autograd: the selection passes no gradient. ``count`` is the side's
    token count per row (``Σ_t m_t``), when the caller has it already. One buffer holds the
    probabilities, masked in place (padding out of the mean), then the comparison's result.
    """
    if count is None:
        count = side.mask_float.sum(-1)
    critical = side.policy.detach().exp().mul_(side.mask_float)
    mean = safe_divide(critical.sum(-1), count)
    # Padding compares 0 < mean: the product with the mask takes it out again.
    return torch.lt(critical, mean.unsqueeze(-1), out=critical).mul_(side.mask_float)
