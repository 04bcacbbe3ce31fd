"""Small models and masks shared by the tests of tokenpo.models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from transformers import LlamaForCausalLM

from tokenpo.models import GPT, GPTConfig

VOCAB = 61


def small_gpt(seed: int = 0, **fields: Any) -> GPT:
    """A tiny GPT in eval mode with seeded random weights.

    Initialized wider than the default 0.02, so that attention is far from uniform and a wrong
    mask or position shows in the logits well above the tolerances.
    """
    defaults = {"vocab_size": VOCAB, "hidden_size": 32, "initializer_range": 0.2}
    fields = defaults | fields
    torch.manual_seed(seed)
    return GPT(GPTConfig(**fields)).eval()


def llama_twin(gpt: GPT) -> LlamaForCausalLM:
    """transformers' Llama built from the GPT's config, holding the GPT's weights."""
    llama = LlamaForCausalLM._from_config(gpt.config.to_llama_config(), attn_implementation="sdpa")
    llama.load_state_dict(gpt.state_dict(), strict=True)
    return llama.eval()


@dataclass(frozen=True)
class PrefixSharingBatch:
    """One row per (prefix, suffix A, suffix B) triple, laid out prefix | A | B | padding.

    A and B both continue the prefix (their positions start where it ends) and cannot see each
    other; padding rows may see nothing.
    """

    input_ids: Tensor  # [R, L]
    attention_mask: Tensor  # [R, 1, L, L] bool
    position_ids: Tensor  # [R, L]
    segments: list[tuple[list[int], list[int], list[int]]]  # token ids of prefix, A, B per row

    def real(self) -> Tensor:
        """[R, L] True where a token is not padding."""
        return self.attention_mask[:, 0].any(dim=-1)


def prefix_sharing_batch(lengths: list[tuple[int, int, int]], seed: int = 0) -> PrefixSharingBatch:
    generator = torch.Generator().manual_seed(seed)
    width = max(sum(row) for row in lengths) + 2
    rows = len(lengths)
    input_ids = torch.zeros(rows, width, dtype=torch.long)
    mask = torch.zeros(rows, 1, width, width, dtype=torch.bool)
    positions = torch.zeros(rows, width, dtype=torch.long)
    segments = []
    for row, (prefix, first, second) in enumerate(lengths):
        tokens = torch.randint(0, VOCAB, (prefix + first + second,), generator=generator)
        input_ids[row, : len(tokens)] = tokens
        ranges = [(0, prefix), (prefix, prefix + first), (prefix + first, len(tokens))]
        for start, end in ranges:
            # Both suffixes continue the prefix's positions.
            first_position = 0 if start == 0 else prefix
            positions[row, start:end] = torch.arange(end - start) + first_position
            mask[row, 0, start:end, :prefix] = start > 0  # the suffixes see the whole prefix
            causal = torch.ones(end - start, end - start, dtype=torch.bool).tril()
            mask[row, 0, start:end, start:end] = causal
        prefix_ids, first_ids, second_ids = (tokens[start:end].tolist() for start, end in ranges)
        segments.append((prefix_ids, first_ids, second_ids))
    return PrefixSharingBatch(input_ids, mask, positions, segments)
