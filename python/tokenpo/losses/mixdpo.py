"""MixDPO: route hard pairs to an SFT term, keep the preference loss for the easy ones.

RECONSTRUCTION from the abstract of Pang et al., arXiv 2602.00954 ("Small-Margin Preferences
Still Matter"); the full text was not available to us. Definitions in ``docs/losses.md``
§ "MixDPO". The easy-to-hard curriculum belongs to the data sampler, not to this loss; the
difficulty comes from prep (``PairLogps.difficulty``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from tokenpo.exceptions import InputError
from tokenpo.losses._base import PairLoss, PairTerms, TermsLoss, valid_pairs
from tokenpo.losses._ops import masked_mean
from tokenpo.losses.batch import PairLogps
from tokenpo.losses.config import LossConfigError, check_number

__all__ = ["MixDPO"]


@dataclass(frozen=True, kw_only=True, slots=True)
class MixDPO(PairLoss):
    """MixDPO routing (arXiv 2602.00954, RECONSTRUCTION) around any base loss.

    Pair ``i`` is hard when ``difficulty_i ≥ threshold``; a hard pair's loss is
    ``sft_weight · NLL(y_w) / |y_w|``, an easy pair's is the base loss of that pair. The
    base's batch-level term (rpo's NLL) is added unchanged, and its
    metrics are kept; ``mixdpo/routed_share`` is the share of valid pairs routed to SFT.
    Needs ``PairLogps.difficulty`` and whatever the base needs.
    """

    name: ClassVar[str] = "mixdpo"
    base: TermsLoss
    """The preference loss applied to easy pairs (a built loss, e.g. ``build("tabpo")``)."""
    threshold: float = 0.9
    """q in [0, 1]: pairs at least this difficult are routed to SFT. The default routes the
    hardest tenth, as the authors' margin threshold (0.5 on UltraFeedback's ratings) does."""
    sft_weight: float = 1.0
    """λ ≥ 0, the weight of the SFT term of a routed pair."""

    def __post_init__(self) -> None:
        check_number(self.name, "threshold", self.threshold, low=0.0, high=1.0)
        check_number(self.name, "sft_weight", self.sft_weight, low=0.0)
        if isinstance(self.base, MixDPO):
            raise LossConfigError("mixdpo.base cannot itself be mixdpo")
        if not callable(getattr(self.base, "terms", None)):
            raise LossConfigError(f"mixdpo.base must be a built loss, got {self.base!r}")

    def terms(self, batch: PairLogps, /) -> PairTerms:
        if batch.difficulty is None:
            raise InputError("mixdpo needs PairLogps.difficulty, which is None", field="difficulty")
        base = self.base.terms(batch)
        routed = batch.difficulty >= self.threshold
        chosen_side = base.sides[0]
        nll = -masked_mean(chosen_side.policy, chosen_side.mask_float)
        valid = valid_pairs(base)
        routed_valid = routed & valid
        metrics = dict(base.metrics)
        metrics["mixdpo/routed_share"] = routed_valid.sum() / valid.sum().clamp(min=1)
        metrics["mixdpo/sft_nll"] = torch.where(routed_valid, nll.detach(), 0.0).sum() / (
            routed_valid.sum().clamp(min=1)
        )
        return PairTerms(
            per_pair=torch.where(routed, self.sft_weight * nll, base.per_pair),
            chosen_reward=base.chosen_reward,
            rejected_reward=base.rejected_reward,
            chosen=base.chosen,
            rejected=base.rejected,
            sides=base.sides,
            batch_term=base.batch_term,
            metrics=metrics,
        )
