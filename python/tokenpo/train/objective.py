"""What the trainer minimises: a loss of :mod:`tokenpo.losses` by name, or ``sft``.

Besides the loss itself, the objective says what the forward pass must provide: reference
log-probs (every loss but simpo and sft), full-vocabulary logits of policy and reference
(tdpo), or tbpo_q's value head at the policy's hidden states.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from tokenpo import losses
from tokenpo.data.collate import PackedBatch
from tokenpo.data.dataset import PairRows
from tokenpo.losses import LossOutput, PairLogps
from tokenpo.train.forward import Scores

__all__ = ["Objective", "build_objective", "objective_names", "pair_logps"]

_REFERENCE_FREE = frozenset({"simpo", "sft"})
_NEEDS_LOGITS = frozenset({"tdpo", "tbpo_a"})


@dataclass(frozen=True, slots=True)
class Objective:
    """A built training objective and what it needs from the forward pass."""

    name: str
    loss: losses.Loss
    needs_reference: bool
    needs_logits: bool
    """Full-vocabulary log-softmax of policy and (live) reference: tdpo, tbpo_a."""
    needs_rejected: bool
    """Whether the rejected completions are scored at all (not for sft, which reads only the
    chosen side: leaving them out of the batch saves their forward and backward)."""
    value_head: losses.ValueHead | None
    """The loss's trainable parameters, or ``None``: tbpo_q's value head, which the policy's
    forward applies to its hidden states."""

    def __call__(self, batch: PairLogps) -> LossOutput:
        """The loss of ``batch`` and its metrics."""
        return self.loss(batch)

    def averaged_pairs(self, rows: PairRows) -> int:
        """How many of ``rows`` the loss averages over: sft every pair, the others those with
        a completion token on each side (the rest have no margin)."""
        if not self.needs_rejected:
            return len(rows)
        return int(((rows.chosen_ids.lengths > 0) & (rows.rejected_ids.lengths > 0)).sum())


def objective_names() -> tuple[str, ...]:
    """What ``loss.name`` accepts: every loss of :mod:`tokenpo.losses`, and ``sft``."""
    return (*losses.available(), "sft")


def build_objective(name: str, params: Mapping[str, Any], *, hidden_size: int) -> Objective:
    """Builds ``name`` with ``params``; tbpo_q's ``hidden_size`` defaults to the model's.

    Raises:
        LossConfigError: an unknown name or parameter (the message lists the valid ones).
    """
    params = dict(params)
    # The family that decides what the forward pass provides: mixdpo's base.
    family = str(params.get("base", "dpo")) if name == "mixdpo" else name
    if family == "tbpo_q":
        target = params.setdefault("base_params", {}) if name == "mixdpo" else params
        target.setdefault("hidden_size", hidden_size)
    loss: losses.Loss = _build_sft(params) if name == "sft" else losses.build(name, **params)
    return Objective(
        name=name,
        loss=loss,
        needs_reference=family not in _REFERENCE_FREE,
        needs_logits=family in _NEEDS_LOGITS,
        needs_rejected=name != "sft",
        value_head=losses.trainable_module(loss),
    )


def _build_sft(params: Mapping[str, Any]) -> SFT:
    unknown = sorted(set(params) - {"weighted"})
    if unknown:
        raise losses.LossConfigError(
            f"sft got unknown parameter(s) {', '.join(unknown)}; valid: weighted"
        )
    return SFT(**params)


@dataclass(frozen=True, kw_only=True, slots=True)
class SFT:
    """Supervised fine-tuning on the chosen completion: the token-mean NLL of each pair's
    chosen tokens, averaged over pairs. ``weighted`` weighs each token by its importance
    (the weighted mean, so the scale stays that of the NLL)."""

    weighted: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.weighted, bool):
            raise losses.LossConfigError(f"sft.weighted must be a bool, got {self.weighted!r}")

    def __call__(self, batch: PairLogps) -> LossOutput:
        chosen = batch.sides()[0]
        weight = chosen.mask_float
        if self.weighted:
            weight = weight * chosen.need("weight", by="sft")
        token_mean = (chosen.policy * weight).sum(-1) / weight.sum(-1).clamp(min=1e-12)
        nll = -token_mean.mean()
        with torch.no_grad():
            chosen_logps = (chosen.policy * chosen.mask_float).sum(-1).mean()
        return LossOutput(loss=nll, metrics={"sft/nll": nll.detach(), "logps/chosen": chosen_logps})


def pair_logps(
    batch: PackedBatch,
    policy: Scores,
    reference: Scores | None,
) -> PairLogps:
    """The loss input for ``batch``: policy scores, and reference log-probs from the live
    reference when there is one, else from the shards (``None`` when neither has them)."""
    ref_chosen, ref_rejected = batch.ref_chosen, batch.ref_rejected
    if reference is not None:
        ref_chosen, ref_rejected = reference.chosen, reference.rejected
    return PairLogps(
        policy_chosen=policy.chosen,
        policy_rejected=policy.rejected,
        chosen_mask=batch.chosen_mask,
        rejected_mask=batch.rejected_mask,
        ref_chosen=ref_chosen,
        ref_rejected=ref_rejected,
        chosen_weight=batch.chosen_weight,
        rejected_weight=batch.rejected_weight,
        chosen_diff=batch.chosen_diff,
        rejected_diff=batch.rejected_diff,
        difficulty=batch.difficulty,
        policy_chosen_logits=policy.chosen_logits,
        policy_rejected_logits=policy.rejected_logits,
        ref_chosen_logits=None if reference is None else reference.chosen_logits,
        ref_rejected_logits=None if reference is None else reference.rejected_logits,
        chosen_value=policy.chosen_value,
        rejected_value=policy.rejected_value,
    )
