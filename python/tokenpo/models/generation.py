"""Greedy batched generation with a KV cache, for the built-in GPT.

Prompts of different lengths are left-padded into one batch. Each row's real tokens get
positions 0, 1, ... whatever its padding, and padding slots are masked out as keys, so a row's
completion is the one it would get alone (up to floating-point summation order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from tokenpo.exceptions import InputError

if TYPE_CHECKING:
    from tokenpo.models.gpt import GPT

__all__ = ["KVCache", "greedy_generate"]


@dataclass(slots=True)
class KVCache:
    """Every layer's keys and values for the tokens seen so far, in buffers of ``capacity`` slots.

    A layer's buffers [R, kv_heads, capacity, head_dim] are allocated at its first
    :meth:`update`, in the dtype and on the device of the keys it is given (under mixed precision
    that is the compute dtype, not the stored weights'). Slots ``[0, length)`` are filled; the
    decoder advances ``length`` after each forward pass.
    """

    capacity: int
    length: int = 0
    keys: dict[int, Tensor] = field(default_factory=dict)
    values: dict[int, Tensor] = field(default_factory=dict)

    def update(self, layer: int, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """Store one layer's new keys and values [R, kv_heads, n, head_dim]; return all of them."""
        end = self.length + key.shape[2]
        if end > self.capacity:
            raise ValueError(f"KV cache full: {end} tokens for {self.capacity} slots")
        if layer not in self.keys:
            shape = (key.shape[0], key.shape[1], self.capacity, key.shape[3])
            self.keys[layer] = key.new_empty(shape)
            self.values[layer] = value.new_empty(shape)
        self.keys[layer][:, :, self.length : end] = key
        self.values[layer][:, :, self.length : end] = value
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


def greedy_generate(
    model: GPT,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    eos_token_id: int | None,
) -> list[list[int]]:
    """Greedy completions of ``prompts`` in one batch, reusing keys and values across steps.

    Returns one list per prompt: the new tokens only (not the prompt), ending before the first
    ``eos_token_id``, which is not included, or after ``max_new_tokens`` tokens. The loop stops
    as soon as every row has produced EOS. Runs under ``torch.no_grad`` with the model in eval
    mode, and puts back the model's train/eval mode afterwards.

    Raises:
        InputError: on an empty prompt or a token id outside the vocabulary (naming the row), or
            a negative ``max_new_tokens``.
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
        raise InputError(f"max_new_tokens must be an integer, got {max_new_tokens!r}")
    if max_new_tokens < 0:
        raise InputError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    input_ids, prompt_lengths = _left_pad(prompts, model.config.vocab_size)
    if max_new_tokens == 0 or not prompts:
        return [[] for _ in prompts]

    rows, width = input_ids.shape
    device = model.get_input_embeddings().weight.device
    input_ids, prompt_lengths = input_ids.to(device), prompt_lengths.to(device)
    padding = width - prompt_lengths
    slots = torch.arange(width + max_new_tokens, device=device)
    # A key slot is real unless it is left padding; generated slots are all real.
    real_key = slots[None, :] >= padding[:, None]
    causal = slots[:width, None] >= slots[None, :width]
    prefill_mask = (causal[None] & real_key[:, None, :width])[:, None]
    prefill_positions = (slots[None, :width] - padding[:, None]).clamp(min=0)

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            cache = KVCache(capacity=width + max_new_tokens)
            logits = model(
                input_ids, prefill_mask, prefill_positions, kv_cache=cache, logits_to_keep=1
            ).logits
            new_tokens: list[Tensor] = []
            finished = torch.zeros(rows, dtype=torch.bool, device=device)
            for step in range(max_new_tokens):
                token = logits[:, -1].argmax(dim=-1)
                new_tokens.append(token)
                if eos_token_id is not None:
                    finished |= token == eos_token_id
                if step + 1 == max_new_tokens or bool(finished.all()):
                    break
                step_mask = real_key[:, None, None, : cache.length + 1]
                step_positions = (prompt_lengths + step)[:, None]
                logits = model(
                    token[:, None], step_mask, step_positions, kv_cache=cache, logits_to_keep=1
                ).logits
    finally:
        model.train(was_training)

    completions: list[list[int]] = torch.stack(new_tokens, dim=1).tolist()
    if eos_token_id is not None:
        completions = [_before(eos_token_id, row) for row in completions]
    return completions


def _left_pad(prompts: Sequence[Sequence[int]], vocab_size: int) -> tuple[Tensor, Tensor]:
    """Prompts as [R, max length] token ids right-aligned behind zeros, and their lengths [R]."""
    width = max((len(prompt) for prompt in prompts), default=0)
    input_ids = torch.zeros(len(prompts), width, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        try:
            tokens = torch.as_tensor(prompt)
        except (TypeError, ValueError, RuntimeError) as error:
            raise InputError(f"prompt {row} is not a list of token ids: {error}", row=row) from None
        if tokens.ndim != 1 or len(tokens) == 0:
            raise InputError(
                f"prompt {row} must be a non-empty list of token ids, "
                f"got shape {list(tokens.shape)}",
                row=row,
            )
        if tokens.dtype == torch.bool or tokens.is_floating_point() or tokens.is_complex():
            raise InputError(f"prompt {row} holds {tokens.dtype} values, not token ids", row=row)
        outside = (tokens < 0) | (tokens >= vocab_size)
        if bool(outside.any()):
            bad = int(tokens[outside][0])
            raise InputError(
                f"prompt {row} holds token {bad}, outside the vocabulary [0, {vocab_size})", row=row
            )
        input_ids[row, width - len(tokens) :] = tokens
    return input_ids, torch.tensor([len(prompt) for prompt in prompts], dtype=torch.long)


def _before(token: int, row: list[int]) -> list[int]:
    return row[: row.index(token)] if token in row else row
