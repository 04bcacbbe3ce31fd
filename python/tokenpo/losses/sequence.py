# ruff: noqa: RUF001, RUF002 -- formulas use the math notation of docs/losses.md
"""Sequence-level baselines: DPO and its kin, on summed (or mean) completion log-probs.

Definitions: ``docs/losses.md`` § "Sequence-level baselines". With ``c = Σ_t m_t ρ^w_t``,
``r = Σ_t m_t ρ^l_t`` and ``Δ = c − r`` per pair; every loss here is averaged over the valid
pairs of the batch. The tests compare them with TRL 1.16's own loss code
(``DPOTrainer._compute_loss``, ``CPOTrainer.cpo_loss``), except cdpo, which TRL 1.x dropped
(compared with a float64 implementation of the formula).
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor
from torch.nn.functional import logsigmoid

from tokenpo.losses._base import PairLoss, PairTerms, SideStats, side_stats
from tokenpo.losses._ops import logistic_loss, safe_divide
from tokenpo.losses.batch import PairLogps
from tokenpo.losses.config import check_number

__all__ = ["CDPO", "DPO", "IPO", "RPO", "Hinge", "RobustDPO", "SimPO"]


@dataclass(frozen=True, kw_only=True, slots=True)
class _LogRatioLoss(PairLoss):
    """A loss of the reward margin ``βΔ`` (and the side sums); subclasses give the shape."""

    beta: float = 0.1
    """β > 0, the strength of the implicit KL penalty (IPO's τ)."""

    def __post_init__(self) -> None:
        check_number(self.name, "beta", self.beta, low=0.0, low_open=True)
        self.check_params()

    def check_params(self) -> None:
        """Validate the parameters a subclass adds; none by default."""

    def terms(self, batch: PairLogps, /) -> PairTerms:
        chosen_side, rejected_side = batch.sides()
        chosen = side_stats(chosen_side, by=self.name)
        rejected = side_stats(rejected_side, by=self.name)
        chosen_ratio, rejected_ratio = chosen.log_ratio, rejected.log_ratio
        return PairTerms(
            per_pair=self.pair_loss(self.beta * (chosen_ratio - rejected_ratio), chosen, rejected),
            chosen_reward=self.beta * chosen_ratio.detach(),
            rejected_reward=self.beta * rejected_ratio.detach(),
            chosen=chosen,
            rejected=rejected,
            sides=(chosen_side, rejected_side),
            batch_term=self.batch_term(batch, chosen, rejected),
        )

    @abstractmethod
    def pair_loss(self, margin: Tensor, chosen: SideStats, rejected: SideStats) -> Tensor:
        """Loss of each pair from ``margin = βΔ``, ``[B]``."""

    def batch_term(self, batch: PairLogps, chosen: SideStats, rejected: SideStats) -> Tensor | None:
        """A batch-level term added after the pair average; none by default."""
        return None


@dataclass(frozen=True, kw_only=True, slots=True)
class DPO(_LogRatioLoss):
    """DPO (Rafailov et al., arXiv 2305.18290, Eq. 7): ``−log σ(βΔ)``.

    Needs ``ref_chosen``/``ref_rejected``. TRL name: ``loss_type="sigmoid"``.
    """

    name: ClassVar[str] = "dpo"

    def pair_loss(self, margin: Tensor, chosen: SideStats, rejected: SideStats) -> Tensor:
        return logistic_loss(margin)


@dataclass(frozen=True, kw_only=True, slots=True)
class CDPO(_LogRatioLoss):
    """Conservative DPO (label smoothing; DPO arXiv 2305.18290 and TRL ≤ 0.28 ``sigmoid``).

    ``−(1−ε) log σ(βΔ) − ε log σ(−βΔ)``: the preference label is flipped with probability ε.
    """

    name: ClassVar[str] = "cdpo"
    label_smoothing: float = 0.1
    """ε in [0, 0.5], the assumed probability that a label is flipped."""

    def check_params(self) -> None:
        check_number(self.name, "label_smoothing", self.label_smoothing, low=0.0, high=0.5)

    def pair_loss(self, margin: Tensor, chosen: SideStats, rejected: SideStats) -> Tensor:
        return logistic_loss(margin, label_smoothing=self.label_smoothing)


@dataclass(frozen=True, kw_only=True, slots=True)
class RobustDPO(_LogRatioLoss):
    """Robust DPO (Chowdhury et al., arXiv 2403.00409, Eq. 8), unbiased under label noise ε.

    ``[−(1−ε) log σ(βΔ) + ε log σ(−βΔ)] / (1 − 2ε)``. TRL name: ``loss_type="robust"``.
    """

    name: ClassVar[str] = "robust"
    label_smoothing: float = 0.1
    """ε in [0, 0.5), the assumed probability that a label is flipped."""

    def check_params(self) -> None:
        check_number(
            self.name, "label_smoothing", self.label_smoothing, low=0.0, high=0.5, high_open=True
        )

    def pair_loss(self, margin: Tensor, chosen: SideStats, rejected: SideStats) -> Tensor:
        eps = self.label_smoothing
        return (-(1.0 - eps) * logsigmoid(margin) + eps * logsigmoid(-margin)) / (1.0 - 2.0 * eps)


@dataclass(frozen=True, kw_only=True, slots=True)
class Hinge(_LogRatioLoss):
    """Hinge (SLiC-style, as in TRL ``loss_type="hinge"``): ``relu(1 − βΔ)``."""

    name: ClassVar[str] = "hinge"

    def pair_loss(self, margin: Tensor, chosen: SideStats, rejected: SideStats) -> Tensor:
        return torch.relu(1.0 - margin)


@dataclass(frozen=True, kw_only=True, slots=True)
class IPO(_LogRatioLoss):
    """IPO (Azar et al., arXiv 2310.12036, Eq. 17), length-normalised as in TRL ``ipo``.

    ``(c/|y_w| − r/|y_l| − 1/(2β))²``; ``beta`` is the paper's τ.
    """

    name: ClassVar[str] = "ipo"

    def pair_loss(self, margin: Tensor, chosen: SideStats, rejected: SideStats) -> Tensor:
        per_token = safe_divide(chosen.log_ratio, chosen.count) - safe_divide(
            rejected.log_ratio, rejected.count
        )
        return (per_token - 1.0 / (2.0 * self.beta)) ** 2


@dataclass(frozen=True, kw_only=True, slots=True)
class RPO(_LogRatioLoss):
    """RPO (Pang et al., arXiv 2404.19733): DPO plus ``α`` times the NLL of the chosen tokens.

    The NLL is the token mean over all chosen tokens of the batch (TRL
    ``loss_type=["sigmoid", "sft"]``, ``loss_weights=[1, α]``); with ``pair_weight`` each
    pair's tokens count with its weight.
    """

    name: ClassVar[str] = "rpo"
    alpha: float = 1.0
    """α ≥ 0, the weight of the chosen NLL (the paper's default is 1)."""

    def check_params(self) -> None:
        check_number(self.name, "alpha", self.alpha, low=0.0)

    def pair_loss(self, margin: Tensor, chosen: SideStats, rejected: SideStats) -> Tensor:
        return logistic_loss(margin)

    def batch_term(self, batch: PairLogps, chosen: SideStats, rejected: SideStats) -> Tensor:
        valid = (chosen.count > 0) & (rejected.count > 0)
        weight = valid.to(chosen.logps.dtype)
        if batch.pair_weight is not None:
            weight = weight * batch.pair_weight.to(weight.dtype)
        nll = -(chosen.logps * weight).sum() / (chosen.count * weight).sum().clamp(min=1.0)
        return self.alpha * nll


@dataclass(frozen=True, kw_only=True, slots=True)
class SimPO(PairLoss):
    """SimPO (Meng et al., arXiv 2405.14734, Eq. 6), reference-free on mean token log-probs.

    ``−log σ(β(ℓ̄_w − ℓ̄_l) − γ)``; the rewards logged are ``β ℓ̄``. TRL: ``CPOTrainer``
    with ``loss_type="simpo"``. Defaults are the paper's Llama-3-Base setting.
    """

    name: ClassVar[str] = "simpo"
    beta: float = 2.0
    """β > 0, the reward scale."""
    gamma: float = 1.0
    """γ, the target reward margin."""

    def __post_init__(self) -> None:
        check_number(self.name, "beta", self.beta, low=0.0, low_open=True)
        check_number(self.name, "gamma", self.gamma)

    def terms(self, batch: PairLogps, /) -> PairTerms:
        chosen_side, rejected_side = batch.sides()
        chosen = side_stats(chosen_side, by=None)
        rejected = side_stats(rejected_side, by=None)
        chosen_score = self.beta * safe_divide(chosen.logps, chosen.count)
        rejected_score = self.beta * safe_divide(rejected.logps, rejected.count)
        return PairTerms(
            per_pair=logistic_loss(chosen_score - rejected_score - self.gamma),
            chosen_reward=chosen_score.detach(),
            rejected_reward=rejected_score.detach(),
            chosen=chosen,
            rejected=rejected,
            sides=(chosen_side, rejected_side),
        )
