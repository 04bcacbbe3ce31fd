"""One pass over a set of pairs: collate, forward policy (and live reference), loss.

Shared by training steps (with backward) and validation (without). A rank's pairs are cut
into micro-batches. Each micro-batch's loss is a mean over its own averaged pairs (those with
a completion token on each side; every pair for sft), so it is weighted by how many it has:
the accumulated gradient is then that of the mean over the averaged pairs of the whole global
batch, whatever the micro-batch size and the number of ranks. Batch-level terms (rpo's NLL)
are weighted alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from tokenpo.data.collate import PackedBatch, collate
from tokenpo.data.dataset import PairDataset, PairRows
from tokenpo.losses import LossOutput
from tokenpo.train.config import DataConfig
from tokenpo.train.distributed import World, all_reduce_mean
from tokenpo.train.forward import CompletionScorer
from tokenpo.train.objective import Objective, pair_logps

__all__ = ["PassTotals", "pass_metrics", "run_pairs"]


@dataclass(slots=True)
class PassTotals:
    """What one pass over a rank's pairs adds up to."""

    pairs: int = 0
    averaged_pairs: int = 0
    """Pairs the loss averages over (:meth:`Objective.averaged_pairs`)."""
    loss_sum: float = 0.0
    """Each micro-batch's loss times its averaged pairs."""
    input_tokens: int = 0
    """Tokens the model ran (after prefix sharing, without padding)."""
    sequence_tokens: int = 0
    """Prompt + chosen plus prompt + rejected per pair (how TRL counts tokens); prompt + chosen
    alone for an objective that scores only the chosen side."""
    metric_sums: dict[str, float] = field(default_factory=dict)
    """Each metric times the pairs it was measured on."""

    def add(self, other: PassTotals) -> None:
        """Adds the counts and sums of ``other`` to these."""
        self.pairs += other.pairs
        self.averaged_pairs += other.averaged_pairs
        self.loss_sum += other.loss_sum
        self.input_tokens += other.input_tokens
        self.sequence_tokens += other.sequence_tokens
        for name, value in other.metric_sums.items():
            self.metric_sums[name] = self.metric_sums.get(name, 0.0) + value

    def rank_values(self) -> dict[str, float]:
        """What :func:`pass_metrics` averages over the ranks: the pair-weighted means of the
        metrics, and the loss's sum and pair count."""
        means = {name: total / max(self.pairs, 1) for name, total in self.metric_sums.items()}
        return {"loss_sum": self.loss_sum, "averaged_pairs": float(self.averaged_pairs), **means}


def pass_metrics(values: dict[str, float], world: World) -> dict[str, float]:
    """The means over the ranks of ``values`` (:meth:`PassTotals.rank_values` and any other
    per-rank values), with the loss in place of its sum and count: the mean over the averaged
    pairs of every rank (a rank's own mean would weigh ranks alike)."""
    means = all_reduce_mean(values, world)
    loss_sum, pairs = means.pop("loss_sum"), means.pop("averaged_pairs")
    return {"loss": loss_sum / pairs if pairs else 0.0, **means}


def run_pairs(
    indices: np.ndarray,
    *,
    data: PairDataset,
    data_config: DataConfig,
    policy: CompletionScorer,
    reference: CompletionScorer | None,
    objective: Objective,
    world: World,
    backward: bool,
    autocast: bool = False,
) -> PassTotals:
    """Runs ``indices`` of ``data`` in micro-batches; with ``backward``, accumulates the
    gradient of the mean loss over the averaged pairs of every rank's ``indices`` (a
    collective: each rank passes its share of one global batch). ``autocast`` runs the model
    forward in bfloat16 (mixed precision without FSDP, on one process); the loss runs in
    float32 either way."""
    totals = PassTotals()
    micro = data_config.micro_batch_size or len(indices)
    use_stored = reference is None and objective.needs_reference
    row_tokens = data_config.row_tokens if data_config.layout == "shared" else None
    chunks = [
        data.rows(indices[start : start + micro], with_ref=use_stored)
        for start in range(0, len(indices), micro)
    ]
    if not objective.needs_rejected:
        chunks = [rows.chosen_only() for rows in chunks]
    counts = [objective.averaged_pairs(rows) for rows in chunks]
    # Weighted by its averaged pairs over their mean count per rank, each micro-batch's mean
    # adds up, once FSDP has averaged the ranks' gradients, to the global batch's mean.
    per_rank = all_reduce_mean({"pairs": float(sum(counts))}, world)["pairs"] if backward else 0
    for rows, count in zip(chunks, counts, strict=True):
        batch = collate(rows, layout=data_config.layout, row_tokens=row_tokens).to(world.device)
        with torch.set_grad_enabled(backward):
            output = _loss(batch, policy, reference, objective, autocast=autocast)
        if backward:
            weight = count / per_rank if per_rank else 0.0
            (output.loss * weight).backward()  # type: ignore[no-untyped-call]
        values = _to_floats({"loss": output.loss.detach(), **output.metrics})
        totals.pairs += len(rows)
        totals.averaged_pairs += count
        totals.loss_sum += values.pop("loss") * count
        totals.input_tokens += batch.tokens
        totals.sequence_tokens += _sequence_tokens(rows)
        for name, value in values.items():
            totals.metric_sums[name] = totals.metric_sums.get(name, 0.0) + value * len(rows)
    return totals


def _loss(
    batch: PackedBatch,
    policy: CompletionScorer,
    reference: CompletionScorer | None,
    objective: Objective,
    *,
    autocast: bool,
) -> LossOutput:
    """The objective on ``batch``. Only the forward passes run under ``autocast``: the loss
    stays in float32 (tdpo's KL over the vocabulary in bfloat16 was off by 0.04 per token)."""
    precision = torch.autocast(batch.input_ids.device.type, dtype=torch.bfloat16, enabled=autocast)
    with precision:
        scores = policy.score(batch, logits=objective.needs_logits, value_head=objective.value_head)
        with torch.no_grad():
            ref_scores = (
                None if reference is None else reference.score(batch, logits=objective.needs_logits)
            )
    return objective(pair_logps(batch, scores, ref_scores))


def _sequence_tokens(rows: PairRows) -> int:
    """Prompt + chosen plus, where the batch holds it, prompt + rejected."""
    prompt, rejected = rows.prompt_ids.lengths, rows.rejected_ids.lengths
    return int(
        (prompt + rows.chosen_ids.lengths + np.where(rejected > 0, prompt + rejected, 0)).sum()
    )


def _to_floats(values: dict[str, torch.Tensor]) -> dict[str, float]:
    """One device-to-host copy for all metrics."""
    names = list(values)
    stacked = torch.stack([values[name].float().reshape(()) for name in names]).cpu()
    return dict(zip(names, stacked.tolist(), strict=True))
