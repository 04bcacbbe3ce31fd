# ruff: noqa: RUF001, RUF002 -- formulas use the math notation of docs/losses.md
"""The frame every loss shares: per-pair terms in, batch average and metrics out.

A loss implements :meth:`PairLoss.terms`, which returns the loss of each pair and the implicit
rewards; :func:`finish` averages over the valid pairs (both sides have a token), weighted by
``PairLogps.pair_weight``, and builds the metrics. MixDPO reuses ``terms`` of its base loss.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import torch
from torch import Tensor

from tokenpo.losses._ops import masked_sum, safe_divide
from tokenpo.losses.batch import LossOutput, PairLogps, Side, float_mask

__all__ = ["PairLoss", "PairTerms", "SideStats", "TermsLoss", "finish", "side_stats"]


@dataclass(frozen=True, kw_only=True, slots=True)
class SideStats:
    """Sequence sums of one side, computed once per call and shared by loss and metrics."""

    count: Tensor
    """Completion tokens per row, ``[B]``."""
    logps: Tensor
    """``Σ_t m_t ℓ_t`` per row, ``[B]``, with gradient unless computed for metrics only."""
    ref_logps: Tensor | None
    """``Σ_t m_t ℓ^ref_t`` per row, ``[B]``, or ``None`` when the loss is reference-free."""
    token_log_ratio: Tensor | None = None
    """``ρ_t = ℓ_t − ℓ^ref_t``, ``[B, T]``, detached, when the loss computed it anyway (the
    diff-margin metric then reuses it instead of subtracting again)."""

    @property
    def log_ratio(self) -> Tensor:
        """``Σ_t m_t (ℓ_t − ℓ^ref_t)``, ``[B]`` (``c`` or ``r`` of LOSSES.md)."""
        if self.ref_logps is None:
            raise AssertionError("log_ratio of reference-free stats")
        return self.logps - self.ref_logps


def side_stats(side: Side, *, by: str | None, grad: bool = True) -> SideStats:
    """Sums of ``side``; with ``by`` (the loss name) the reference is required and summed.

    With ``grad=False`` the policy sum is computed without autograd (losses that only log it).
    """
    count = side.mask_float.sum(-1)
    ref = None if by is None else masked_sum(side.need("ref", by=by), side.mask_float).detach()
    if grad:
        logps = masked_sum(side.policy, side.mask_float)
    else:
        with torch.no_grad():
            logps = masked_sum(side.policy, side.mask_float)
    return SideStats(count=count, logps=logps, ref_logps=ref)


@dataclass(frozen=True, kw_only=True, slots=True)
class PairTerms:
    """What a loss computes before the batch average."""

    per_pair: Tensor
    """Loss of each pair, ``[B]``; rows without tokens on a side are ignored by :func:`finish`."""
    chosen_reward: Tensor
    """Implicit reward of the chosen side (``β c`` for DPO), ``[B]``, logged only."""
    rejected_reward: Tensor
    """Implicit reward of the rejected side, ``[B]``, logged only."""
    chosen: SideStats
    """Sums of the chosen side (token counts and absolute log-probs, for metrics)."""
    rejected: SideStats
    """Sums of the rejected side."""
    sides: tuple[Side, Side]
    """The chosen and rejected :class:`Side` the terms came from (reused by the metrics)."""
    batch_term: Tensor | None = None
    """A scalar added after the pair average (rpo's NLL)."""
    metrics: dict[str, Tensor] = field(default_factory=dict)
    """Loss-specific metrics: scalars, or per-pair ``[B]`` values averaged over valid pairs."""


class TermsLoss(Protocol):
    """Anything that computes :class:`PairTerms`; what MixDPO accepts as its base."""

    def terms(self, batch: PairLogps, /) -> PairTerms:
        """Per-pair loss and rewards of ``batch``."""
        ...


class PairLoss(ABC):
    """Base of the stateless losses: a frozen config whose call maps a batch to a loss."""

    __slots__ = ()
    name: ClassVar[str]
    """The registry name, used in error messages."""

    @abstractmethod
    def terms(self, batch: PairLogps, /) -> PairTerms:
        """Per-pair loss and rewards of ``batch``."""

    def __call__(self, batch: PairLogps, /) -> LossOutput:
        """The batch loss and its metrics."""
        return finish(self.terms(batch), batch)


def valid_pairs(terms: PairTerms) -> Tensor:
    """Pairs with at least one completion token on each side, ``[B]`` bool."""
    return (terms.chosen.count > 0) & (terms.rejected.count > 0)


def finish(terms: PairTerms, batch: PairLogps) -> LossOutput:
    """Average ``terms.per_pair`` over valid pairs, weighted by ``pair_weight``; add metrics."""
    valid = valid_pairs(terms)
    per_pair = torch.where(valid, terms.per_pair, 0.0)
    if batch.pair_weight is None:
        weight = valid.to(per_pair.dtype)
    else:
        weight = torch.where(valid, batch.pair_weight.to(per_pair.dtype), 0.0)
    total = weight.sum()
    # An all-invalid batch gives a zero loss that is still connected to the graph.
    loss = (per_pair * weight).sum() / torch.where(total > 0, total, 1.0)
    if terms.batch_term is not None:
        loss = loss + terms.batch_term
    with torch.no_grad():
        metrics = pair_metrics(terms, batch, valid)
    return LossOutput(loss=loss, metrics=metrics)


def pair_metrics(terms: PairTerms, batch: PairLogps, valid: Tensor) -> dict[str, Tensor]:
    """Means over valid pairs (unweighted) of the rewards, margins and absolute log-probs.

    With diff masks, also the log-ratio margin restricted to diff tokens and to shared tokens
    (policy log-probs alone when the batch has no reference): a margin that lives in the
    shared tokens is the gradient dilution TAB-PO targets.
    """
    chosen, rejected = terms.chosen_reward, terms.rejected_reward
    per_pair = {
        "rewards/chosen": chosen,
        "rewards/rejected": rejected,
        "rewards/margins": chosen - rejected,
        "rewards/accuracies": (chosen > rejected).to(chosen.dtype),
        "logps/chosen": terms.chosen.logps,
        "logps/rejected": terms.rejected.logps,
        "logps/chosen_token_mean": safe_divide(terms.chosen.logps, terms.chosen.count),
        "logps/rejected_token_mean": safe_divide(terms.rejected.logps, terms.rejected.count),
    }
    if batch.chosen_diff is not None:
        per_pair["margins/diff_tokens"], per_pair["margins/shared_tokens"] = _diff_margins(terms)
    scalars = {"pairs/valid_share": valid.to(chosen.dtype).mean()}
    # Per-pair metrics ([B]) are averaged like the rewards; scalars are logged as they are.
    for key, value in terms.metrics.items():
        if value.dim() == 1:
            per_pair[key] = value.to(chosen.dtype)
        else:
            scalars[key] = value
    # One stacked reduction instead of one small kernel per metric.
    stacked = torch.stack(list(per_pair.values())).detach()
    means = torch.where(valid, stacked, 0.0).sum(-1) / valid.sum().clamp(min=1)
    metrics = dict(zip(per_pair, means.unbind(), strict=True))
    metrics.update({key: value.detach() for key, value in scalars.items()})
    return metrics


def _diff_margins(terms: PairTerms) -> tuple[Tensor, Tensor]:
    """Chosen minus rejected log-ratio sums over diff tokens and over shared tokens."""
    diff_sums, all_sums = [], []
    for side, stats in zip(terms.sides, (terms.chosen, terms.rejected), strict=True):
        score, total = side.policy, stats.logps
        if side.ref is not None:
            score = score - side.ref if stats.token_log_ratio is None else stats.token_log_ratio
            ref_total = stats.ref_logps
            total = total - (
                masked_sum(side.ref, side.mask_float) if ref_total is None else ref_total
            )
        diff = side.need("diff", by="the diff-margin metric")
        diff_sums.append(masked_sum(score, float_mask(side.mask & diff, score.dtype)))
        all_sums.append(total)
    diff_margin = diff_sums[0] - diff_sums[1]
    return diff_margin, (all_sums[0] - all_sums[1]) - diff_margin
