"""One pass over a set of pairs: collate, forward policy (and live reference), loss.

Shared by training steps (with backward) and validation (without). A rank's pairs are cut
into micro-batches; each micro-batch's loss is scaled by its share of the rank's pairs, so the
accumulated gradient is that of the mean over the rank's pairs, and FSDP's average over
ranks makes it the mean over the global batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from tokenpo.data.collate import collate
from tokenpo.data.dataset import PairDataset, PairRows
from tokenpo.train.config import DataConfig
from tokenpo.train.forward import CompletionScorer
from tokenpo.train.objective import Objective, pair_logps

__all__ = ["PassTotals", "run_pairs"]


@dataclass(slots=True)
class PassTotals:
    """What one pass over a rank's pairs adds up to."""

    pairs: int = 0
    input_tokens: int = 0
    """Tokens the model ran (after prefix sharing, without padding)."""
    sequence_tokens: int = 0
    """Prompt + chosen plus prompt + rejected per pair (how TRL counts tokens); prompt + chosen
    alone for an objective that scores only the chosen side."""
    metric_sums: dict[str, float] = field(default_factory=dict)
    """Each metric times the pairs it was measured on."""

    def metrics(self) -> dict[str, float]:
        """Pair-weighted means of the metrics."""
        return {name: total / max(self.pairs, 1) for name, total in self.metric_sums.items()}


def run_pairs(
    indices: np.ndarray,
    *,
    data: PairDataset,
    data_config: DataConfig,
    policy: CompletionScorer,
    reference: CompletionScorer | None,
    objective: Objective,
    device: torch.device,
    backward: bool,
    autocast: bool = False,
) -> PassTotals:
    """Runs ``indices`` of ``data`` in micro-batches; with ``backward``, accumulates the
    gradient of the mean loss over them. ``autocast`` runs the forward in bfloat16 (mixed
    precision without FSDP, on one process)."""
    totals = PassTotals()
    micro = data_config.micro_batch_size or len(indices)
    use_stored = reference is None and objective.needs_reference
    row_tokens = data_config.row_tokens if data_config.layout == "shared" else None
    for start in range(0, len(indices), micro):
        chunk = indices[start : start + micro]
        rows = data.rows(chunk, with_ref=use_stored)
        if not objective.needs_rejected:
            rows = rows.chosen_only()
        batch = collate(rows, layout=data_config.layout, row_tokens=row_tokens)
        batch = batch.to(device)
        precision = torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast)
        with torch.set_grad_enabled(backward), precision:
            scores = policy.score(
                batch, logits=objective.needs_logits, value_head=objective.value_head
            )
            with torch.no_grad():
                ref_scores = (
                    None
                    if reference is None
                    else reference.score(batch, logits=objective.needs_logits)
                )
            output = objective(pair_logps(batch, scores, ref_scores))
        if backward:
            (output.loss * (len(chunk) / len(indices))).backward()  # type: ignore[no-untyped-call]
        totals.pairs += len(chunk)
        totals.input_tokens += batch.tokens
        totals.sequence_tokens += _sequence_tokens(rows)
        values = {"loss": output.loss.detach(), **output.metrics}
        for name, value in _to_floats(values).items():
            totals.metric_sums[name] = totals.metric_sums.get(name, 0.0) + value * len(chunk)
    return totals


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
