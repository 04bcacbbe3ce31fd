"""Pairwise accuracy on held-out prepared pairs: does the policy's implicit reward rank the
chosen completion over the rejected one?

The implicit reward of a completion (DPO's, without its beta, which does not change a ranking)
is the sum over its tokens, EOS included, of the policy's log-prob minus the reference's::

    reward(y) = sum_t [log pi(y_t | x, y_<t) - log ref(y_t | x, y_<t)]

A pair counts as right when reward(chosen) - reward(rejected) exceeds a small tolerance
(:data:`TIE_TOLERANCE` nats by default), and as a tie when it lies within it either way; a tie
is not right. The tolerance absorbs float32 noise: the same model's summed log-probs differ
by up to ~4e-5 nats when its batches are packed differently (an SFT model scored against the
log-probs ``tokenpo ref-logps`` stored for it, on the demo's validation pairs), so exact
comparison would rank a policy still equal to its reference by noise instead of giving only
ties. The reference log-probs are the ones ``tokenpo ref-logps`` stored in the shards, or come
from a reference model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from tokenpo.data.collate import PackedBatch, collate
from tokenpo.data.dataset import PairDataset
from tokenpo.eval._inference import inference, model_device, vocabulary_size
from tokenpo.exceptions import ConfigError, InputError
from tokenpo.train.forward import CompletionScorer

__all__ = [
    "TIE_TOLERANCE",
    "PairwiseProgress",
    "PairwiseScores",
    "check_reference",
    "pairwise_accuracy",
]

PairwiseProgress = Callable[[int, int], None]
"""Called as ``(done_pairs, total_pairs)`` before the first batch and after each."""

TIE_TOLERANCE = 1e-3
"""Reward margins within this many nats of zero are ties: 25 times the largest float32 noise
measured (3.8e-5 nats, on completions of up to ~170 nats), far below a trained margin."""


@dataclass(frozen=True, slots=True)
class PairwiseScores:
    """How the policy ranks held-out pairs."""

    pairs: int
    correct: int
    """Pairs with reward(chosen) - reward(rejected) > the tie tolerance."""
    ties: int
    """Pairs with |reward(chosen) - reward(rejected)| <= the tie tolerance."""
    mean_chosen_logps: float
    """Mean over pairs of the policy's log-prob of the whole chosen completion (summed over
    its tokens)."""
    mean_rejected_logps: float
    """The same for the rejected completion."""
    mean_reward_margin: float
    """Mean over pairs of reward(chosen) - reward(rejected)."""
    reference: Literal["stored", "model"]
    """Where the reference log-probs came from: the shards' columns or a reference model."""

    @property
    def accuracy(self) -> float:
        """Share of pairs ranked right."""
        return self.correct / self.pairs

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "pairs": self.pairs,
            "correct": self.correct,
            "ties": self.ties,
            "mean_chosen_logps": self.mean_chosen_logps,
            "mean_rejected_logps": self.mean_rejected_logps,
            "mean_reward_margin": self.mean_reward_margin,
            "reference": self.reference,
        }


def pairwise_accuracy(
    policy: nn.Module,
    pairs: str | Path | PairDataset,
    *,
    reference: nn.Module | None = None,
    batch_size: int = 16,
    tie_tolerance: float = TIE_TOLERANCE,
    progress: PairwiseProgress | None = None,
) -> PairwiseScores:
    """Scores every pair of a prepared directory (or an opened :class:`PairDataset`).

    Args:
        policy: the model evaluated, on the device to run on.
        pairs: a directory written by ``tokenpo prep``.
        reference: a reference model (on the policy's device). When given it is used, even if
            the shards store reference log-probs; when not, the shards must store them.
        batch_size: pairs per forward pass.
        tie_tolerance: reward margins (nats) within this of zero count as ties.
        progress: told how many pairs are done.

    Raises:
        ConfigError: no reference model and no stored reference log-probs,
            ``batch_size`` < 1 or a negative ``tie_tolerance``.
        InputError: the directory cannot be read, holds no pairs, or holds token ids outside
            a model's vocabulary.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size: must be at least 1, got {batch_size}")
    if not tie_tolerance >= 0:
        raise ConfigError(f"tie_tolerance: must be at least 0, got {tie_tolerance}")
    dataset = pairs if isinstance(pairs, PairDataset) else PairDataset.open(pairs)
    if len(dataset) == 0:  # open() refuses an empty directory; a dataset built by hand may be
        raise InputError(
            f"{dataset.manifest.directory}: no pairs to score",
            file=str(dataset.manifest.directory),
        )
    check_reference(dataset, has_model=reference is not None)
    largest = dataset.max_token_id()
    for role, model in (("policy", policy), ("reference", reference)):
        if model is not None and largest >= vocabulary_size(model):
            raise InputError(
                f"{dataset.manifest.directory}: the pairs hold token {largest}, outside the "
                f"{role}'s vocabulary [0, {vocabulary_size(model)}); were they prepared with "
                "its tokenizer?",
                file=str(dataset.manifest.directory),
            )
    device = model_device(policy)
    policy_scorer = CompletionScorer(policy)
    reference_scorer = None if reference is None else CompletionScorer(reference)
    chosen_logps: list[Tensor] = []
    rejected_logps: list[Tensor] = []
    margins: list[Tensor] = []
    if progress is not None:
        progress(0, len(dataset))
    with inference(*(model for model in (policy, reference) if model is not None)):
        for start in range(0, len(dataset), batch_size):
            indices = np.arange(start, min(start + batch_size, len(dataset)))
            rows = dataset.rows(indices, with_ref=reference is None)
            batch = collate(rows, layout="shared").to(device)
            chosen, rejected = _sequence_logps(policy_scorer, batch)
            ref_chosen, ref_rejected = _sequence_logps(reference_scorer, batch)
            chosen_logps.append(chosen)
            rejected_logps.append(rejected)
            margins.append((chosen - ref_chosen) - (rejected - ref_rejected))
            if progress is not None:
                progress(int(indices[-1]) + 1, len(dataset))
    margin = torch.cat(margins)
    return PairwiseScores(
        pairs=len(dataset),
        correct=int((margin > tie_tolerance).sum()),
        ties=int((margin.abs() <= tie_tolerance).sum()),
        mean_chosen_logps=float(torch.cat(chosen_logps).mean()),
        mean_rejected_logps=float(torch.cat(rejected_logps).mean()),
        mean_reward_margin=float(margin.mean()),
        reference="stored" if reference is None else "model",
    )


def check_reference(dataset: PairDataset, *, has_model: bool) -> None:
    """Raises ConfigError unless there is a reference model or the pairs store reference
    log-probs (callers check before doing anything costly)."""
    if not has_model and not dataset.has_ref_logps:
        raise ConfigError(
            f"{dataset.manifest.directory}: the pairs hold no reference log-probs; pass a "
            "reference model, or store them first with `tokenpo ref-logps`"
        )


def _sequence_logps(scorer: CompletionScorer | None, batch: PackedBatch) -> tuple[Tensor, Tensor]:
    """Each pair's summed log-probs of its chosen and rejected completion, float64 [B] on
    the CPU: from ``scorer``'s model, or without one from the batch's stored columns."""
    if scorer is not None:
        scores = scorer.score(batch)
        chosen, rejected = scores.chosen, scores.rejected
    elif batch.ref_chosen is not None and batch.ref_rejected is not None:
        chosen, rejected = batch.ref_chosen, batch.ref_rejected
    else:  # pairwise_accuracy asks for stored columns whenever it has no reference model
        raise AssertionError("the batch holds no reference log-probs")
    return chosen.sum(-1).double().cpu(), rejected.sum(-1).double().cpu()
