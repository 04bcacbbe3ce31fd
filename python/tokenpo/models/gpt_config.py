"""The built-in GPT's configuration: the numbers of a small Llama, checked when it is built."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from transformers import LlamaConfig

from tokenpo.exceptions import ConfigError

__all__ = ["GPTConfig"]


def _default_intermediate_size(hidden_size: int) -> int:
    # SwiGLU has three matrices where a GELU MLP has two; 8/3 * hidden keeps the parameter count of
    # the classic 4 * hidden MLP (Shazeer 2020, Llama). Rounded up to a multiple of 64 so matmuls
    # tile well: 128 -> 384, 256 -> 704, 512 -> 1408.
    return math.ceil(8 * hidden_size / 3 / 64) * 64


@dataclasses.dataclass(kw_only=True, slots=True, frozen=True)
class GPTConfig:
    """A decoder-only LM that is architecturally a Llama, so it exports as ``LlamaForCausalLM``.

    ``num_key_value_heads`` and ``intermediate_size`` may be left out; they are derived in
    ``__post_init__``, so on a built config every field holds a concrete number.
    """

    vocab_size: int
    """Rows of the embedding and of ``lm_head``: the tokenizer's vocabulary size."""
    hidden_size: int = 128
    """Width of the residual stream."""
    num_hidden_layers: int = 2
    """Number of decoder blocks."""
    num_attention_heads: int = 4
    """Query heads; must divide ``hidden_size`` into an even head size (rotary embeddings)."""
    num_key_value_heads: int | None = None
    """Key/value heads for grouped-query attention; must divide ``num_attention_heads``.
    None: as many as ``num_attention_heads`` (plain multi-head attention)."""
    intermediate_size: int | None = None
    """Width of the SwiGLU MLP. None: 8/3 * ``hidden_size`` rounded up to a multiple of 64
    (384 for the default width), which matches the parameter count of a 4x GELU MLP."""
    max_position_embeddings: int = 2048
    """Longest sequence the model is meant for; recorded in the exported config."""
    rope_theta: float = 10000.0
    """Base of the rotary embedding frequencies."""
    rms_norm_eps: float = 1e-6
    """Epsilon inside every RMSNorm."""
    tie_word_embeddings: bool = False
    """Share one matrix between ``model.embed_tokens`` and ``lm_head``."""
    initializer_range: float = 0.02
    """Standard deviation of the normal initialization of every linear and embedding weight."""

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"):
            _check_positive_int(name, getattr(self, name))
        if self.num_key_value_heads is None:
            object.__setattr__(self, "num_key_value_heads", self.num_attention_heads)
        if self.intermediate_size is None:
            object.__setattr__(
                self, "intermediate_size", _default_intermediate_size(self.hidden_size)
            )
        for name in ("num_key_value_heads", "intermediate_size", "max_position_embeddings"):
            _check_positive_int(name, getattr(self, name))
        if self.hidden_size % self.num_attention_heads != 0:
            raise ConfigError(
                f"gpt.hidden_size ({self.hidden_size}) must be a multiple of "
                f"gpt.num_attention_heads ({self.num_attention_heads})"
            )
        if self.head_dim % 2 != 0:
            raise ConfigError(
                f"gpt.hidden_size / gpt.num_attention_heads must be even for rotary embeddings, "
                f"got {self.hidden_size} / {self.num_attention_heads} = {self.head_dim}"
            )
        if self.num_attention_heads % self.kv_heads != 0:
            raise ConfigError(
                f"gpt.num_key_value_heads ({self.kv_heads}) must divide "
                f"gpt.num_attention_heads ({self.num_attention_heads})"
            )
        for name in ("rope_theta", "rms_norm_eps", "initializer_range"):
            _check_positive_float(name, getattr(self, name))
        if not isinstance(self.tie_word_embeddings, bool):
            raise ConfigError(
                f"gpt.tie_word_embeddings must be true or false, got {self.tie_word_embeddings!r}"
            )

    @property
    def head_dim(self) -> int:
        """Width of one attention head: ``hidden_size // num_attention_heads``."""
        return self.hidden_size // self.num_attention_heads

    @property
    def kv_heads(self) -> int:
        """``num_key_value_heads`` as resolved by ``__post_init__`` (never None)."""
        assert self.num_key_value_heads is not None  # resolved in __post_init__
        return self.num_key_value_heads

    @property
    def mlp_size(self) -> int:
        """``intermediate_size`` as resolved by ``__post_init__`` (never None)."""
        assert self.intermediate_size is not None  # resolved in __post_init__
        return self.intermediate_size

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> GPTConfig:
        """Build a config from a mapping of field names, e.g. a ``[model.gpt]`` TOML table.

        Raises:
            ConfigError: on a key that is not a field (the message lists the valid ones) or on a
                value that ``__post_init__`` rejects.
        """
        if not isinstance(values, Mapping):
            raise ConfigError(f"gpt must be a table of GPTConfig fields, got {values!r}")
        valid = [field.name for field in dataclasses.fields(cls)]
        unknown = sorted(str(key) for key in values if key not in valid)
        if unknown:
            raise ConfigError(
                f"unknown gpt option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                f"valid options: {', '.join(valid)}"
            )
        if "vocab_size" not in values:
            raise ConfigError("gpt.vocab_size is required")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain values (the inverse of :meth:`from_dict`)."""
        return dataclasses.asdict(self)

    def to_llama_config(
        self,
        *,
        bos_token_id: int | None = None,
        eos_token_id: int | None = None,
        pad_token_id: int | None = None,
    ) -> LlamaConfig:
        """The equivalent ``transformers.LlamaConfig``: a ``LlamaForCausalLM`` built from it takes
        this model's ``state_dict`` as is and computes the same logits.

        The special token ids default to None rather than Llama's 1 and 2, which would be wrong
        for any tokenizer trained here; pass the tokenizer's ids when exporting a model.
        """
        return LlamaConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.mlp_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.kv_heads,
            head_dim=self.head_dim,
            hidden_act="silu",
            max_position_embeddings=self.max_position_embeddings,
            rope_parameters={"rope_type": "default", "rope_theta": float(self.rope_theta)},
            rms_norm_eps=self.rms_norm_eps,
            tie_word_embeddings=self.tie_word_embeddings,
            initializer_range=self.initializer_range,
            attention_bias=False,
            mlp_bias=False,
            attention_dropout=0.0,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            architectures=["LlamaForCausalLM"],
        )


def _check_positive_int(name: str, value: object) -> None:
    # bool is an int subclass; `hidden_size = true` is a typo, not a width.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"gpt.{name} must be a positive integer, got {value!r}")


def _check_positive_float(name: str, value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"gpt.{name} must be a positive finite number, got {value!r}")
