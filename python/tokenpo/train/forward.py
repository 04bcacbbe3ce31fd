"""One forward pass of a causal LM over a :class:`~tokenpo.data.collate.PackedBatch`.

The decoder runs over the packed rows; the LM head then runs only at the positions that
predict completion tokens (never over prompts or padding), which is most of the saving on
long prompts and large vocabularies. Works with any model that has ``get_decoder()`` and
``get_output_embeddings()``: every ``transformers`` causal LM (given the 4D bool mask) and
the built-in GPT (given a flex-attention ``BlockMask`` on GPU when its heads have 16 or more
dimensions, the bool mask elsewhere).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeGuard

import torch
from torch import Tensor, nn
from torch.nn.attention.flex_attention import BlockMask, create_block_mask

from tokenpo.data.collate import PackedBatch
from tokenpo.losses import ValueHead
from tokenpo.models import GPT

__all__ = ["CompletionScorer", "Scores", "block_mask"]


@dataclass(frozen=True, slots=True)
class Scores:
    """Per-token outputs for the completion tokens of ``B`` pairs, ``[B, T, ...]``."""

    chosen: Tensor
    """Log-prob of each chosen token, float32 ``[B, T]``; 0 on padding."""
    rejected: Tensor
    """Log-prob of each rejected token, float32 ``[B, T]``."""
    chosen_logits: Tensor | None = None
    """Log-softmax over the vocabulary at each chosen token, ``[B, T, V]`` (tdpo)."""
    rejected_logits: Tensor | None = None
    """``[B, T, V]``."""
    chosen_value: Tensor | None = None
    """tbpo_q's value head at the last hidden state predicting each chosen token, ``[B, T]``;
    0 on padding."""
    rejected_value: Tensor | None = None
    """``[B, T]``."""


class CompletionScorer(nn.Module):
    """Wraps a causal LM so one call gives completion log-probs in the loss layout.

    The trainer shards this wrapper as the FSDP2 root (each decoder block first), so a call
    through :meth:`forward` gathers the embedding, final norm and head like the model's own
    forward would. Its inputs are integer and bool tensors only: mixed precision casts the
    root's floating inputs, and nothing here should be rounded.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def score(
        self, batch: PackedBatch, *, logits: bool = False, value_head: ValueHead | None = None
    ) -> Scores:
        """Log-probs of ``batch``'s completion tokens; ``logits`` adds the full-vocabulary
        log-softmax over the padded ``[B, T]`` grid, ``value_head`` its values at the hidden
        states of the completion tokens (computed at the real tokens only)."""
        result: Scores = self(
            batch.input_ids,
            batch.position_ids,
            batch.attention_mask,
            (batch.chosen_index, batch.chosen_ids, batch.chosen_mask),
            (batch.rejected_index, batch.rejected_ids, batch.rejected_mask),
            logits=logits,
            value_head=value_head,
        )
        return result

    def forward(
        self,
        input_ids: Tensor,
        position_ids: Tensor,
        attention_mask: Tensor | None,
        chosen: tuple[Tensor, Tensor, Tensor],
        rejected: tuple[Tensor, Tensor, Tensor],
        *,
        logits: bool = False,
        value_head: ValueHead | None = None,
    ) -> Scores:
        """See :meth:`score`; ``chosen``/``rejected`` are ``(index, ids, mask)``."""
        decoder: nn.Module = self.model.get_decoder()  # type: ignore[operator]
        mask: Tensor | BlockMask | None = attention_mask
        if _flex_on_gpu(attention_mask, self.model):
            mask = block_mask(attention_mask)
        states = decoder(
            input_ids=input_ids, attention_mask=mask, position_ids=position_ids
        ).last_hidden_state
        flat_states = states.flatten(0, 1)
        head: nn.Module = self.model.get_output_embeddings()  # type: ignore[operator]
        chosen_logps, chosen_logits = _side_scores(flat_states, head, *chosen, logits=logits)
        rejected_logps, rejected_logits = _side_scores(flat_states, head, *rejected, logits=logits)
        chosen_value = rejected_value = None
        if value_head is not None:
            chosen_value = _side_values(flat_states, value_head, chosen[0], chosen[2])
            rejected_value = _side_values(flat_states, value_head, rejected[0], rejected[2])
        return Scores(
            chosen=chosen_logps,
            rejected=rejected_logps,
            chosen_logits=chosen_logits,
            rejected_logits=rejected_logits,
            chosen_value=chosen_value,
            rejected_value=rejected_value,
        )


def _flex_on_gpu(mask: Tensor | None, model: nn.Module) -> TypeGuard[Tensor]:
    """Whether ``mask`` goes to ``model`` as a ``BlockMask``: the built-in GPT on a GPU."""
    return (
        mask is not None
        and mask.is_cuda
        and isinstance(model, GPT)
        and model.runs_flex_attention_on_gpu
    )


def block_mask(mask: Tensor) -> BlockMask:
    """The bool ``[R, 1, L, L]`` mask as a flex-attention ``BlockMask`` (the built-in GPT's
    kernel on GPU): blocks where no query sees any key, as between packed pairs or between
    the two suffixes of a pair, are skipped rather than computed and masked."""
    rows, _, length, _ = mask.shape
    dense = mask[:, 0]

    def visible(row: Tensor, head: Tensor, query: Tensor, key: Tensor) -> Tensor:
        return dense[row, query, key]

    return create_block_mask(visible, rows, None, length, length, device=mask.device)


def _side_scores(
    flat_states: Tensor,
    head: nn.Module,
    index: Tensor,
    ids: Tensor,
    mask: Tensor,
    *,
    logits: bool,
) -> tuple[Tensor, Tensor | None]:
    if logits:
        log_softmax = head(flat_states[index]).float().log_softmax(-1)
        token_logps = log_softmax.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
        return torch.where(mask, token_logps, 0.0), log_softmax
    # Only real tokens go through the head: [N, H] -> [N, V], N = tokens in the batch.
    token_logits = head(flat_states[index[mask]]).float()
    targets = ids[mask].unsqueeze(-1)
    values = token_logits.gather(-1, targets).squeeze(-1) - token_logits.logsumexp(-1)
    return _on_grid(values, mask), None


def _side_values(flat_states: Tensor, value_head: ValueHead, index: Tensor, mask: Tensor) -> Tensor:
    """The value head at the real tokens' states, ``[N, H] -> [N]``, scattered to ``[B, T]``."""
    values: Tensor = value_head(flat_states[index[mask]]).float()
    return _on_grid(values, mask)


def _on_grid(values: Tensor, mask: Tensor) -> Tensor:
    """Per-token ``values`` of the real tokens ``[N]`` on the padded ``[B, T]`` grid, 0 off it."""
    return values.new_zeros(mask.shape).index_put((mask,), values)
