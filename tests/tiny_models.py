"""The tiny transformers Llama the tests build: small enough for a CPU, with grouped-query
attention (4 heads over 2 key-value heads) so the GQA paths run too."""

from __future__ import annotations

from typing import Any

from transformers import LlamaConfig

TINY_LLAMA_SIZES: dict[str, int] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}
"""Also valid :class:`tokenpo.models.GPTConfig` keys, for the built-in GPT of the same shape."""


def tiny_llama_config(vocab_size: int, **overrides: Any) -> LlamaConfig:
    """A :data:`TINY_LLAMA_SIZES` Llama config; ``overrides`` replace or add fields."""
    return LlamaConfig(vocab_size=vocab_size, **{**TINY_LLAMA_SIZES, **overrides})
