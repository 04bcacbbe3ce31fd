"""The built-in GPT: a small Llama written out in plain PyTorch, for the demo and the tests.

Module and parameter names are those of ``transformers.LlamaForCausalLM`` (``model.embed_tokens``,
``model.layers[i].self_attn.q_proj``, ..., ``model.norm``, ``lm_head``), so a state dict moves
between the two unchanged and an export opens with ``AutoModelForCausalLM.from_pretrained``.
It is called the way the trainer calls a transformers model::

    hidden = model.get_decoder()(input_ids=ids, attention_mask=mask, position_ids=pos)
    logits = model.get_output_embeddings()(hidden.last_hidden_state)

``attention_mask`` is None (causal), a bool tensor [R, 1, L, L] (True: may attend), or a flex
attention ``BlockMask``. Unlike transformers, None never infers packed sequences from
``position_ids``: positions only rotate queries and keys, the mask alone decides who sees whom.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn import functional
from torch.nn.attention.flex_attention import BlockMask, flex_attention
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from tokenpo.exceptions import InputError
from tokenpo.models.generation import KVCache, greedy_generate
from tokenpo.models.gpt_config import GPTConfig

__all__ = ["GPT", "GPTConfig", "GPTDecoder"]

AttentionMask = Tensor | BlockMask | None
RotaryEmbedding = tuple[Tensor, Tensor]


class RMSNorm(nn.Module):
    """Root-mean-square norm in float32, cast back before the weight, as Llama does."""

    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, hidden_states: Tensor) -> Tensor:
        input_dtype = hidden_states.dtype
        hidden = hidden_states.to(torch.float32)
        hidden = hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * hidden.to(input_dtype)


def rotary_embedding(
    position_ids: Tensor, config: GPTConfig, dtype: torch.dtype
) -> RotaryEmbedding:
    """cos and sin [R, L, head_dim] for ``position_ids`` [R or 1, L], computed as Llama does.

    Computed per call rather than kept in a non-persistent buffer, which a meta-device build
    would leave uninitialized and ``.to(bfloat16)`` would round; the cost is one outer product.
    """
    dim = config.head_dim
    exponents = torch.arange(0, dim, 2, dtype=torch.float, device=position_ids.device) / dim
    inv_freq = 1.0 / (config.rope_theta**exponents)
    freqs = position_ids[..., None].float() * inv_freq
    angles = torch.cat((freqs, freqs), dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def _rotate_half(x: Tensor) -> Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def _apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    return x * cos[:, None] + _rotate_half(x) * sin[:, None]


_FLEX_MIN_HEAD_DIM = 16


@functools.cache
def _compiled_flex_attention() -> Callable[..., Any]:
    # Dynamic shapes: every batch has its own row count and length (packing), and a static
    # compile per shape would recompile each step until dynamo's cache limit, then fall back
    # to the unfused kernel. Dynamic, it compiles a few times (for lengths below, at and off
    # the 128-token block) and then never again.
    return torch.compile(flex_attention, dynamic=True)


def _flex_attention(query: Tensor, key: Tensor, value: Tensor, block_mask: BlockMask) -> Tensor:
    # flex_attention is only fast when compiled. On CPU it runs unfused (materializing the scores,
    # with a warning) because compiling it there takes tens of seconds and a C++ toolchain; CPU
    # runs are tests and demos, which use the bool mask anyway. Inside an outer torch.compile
    # the plain function is what dynamo expects.
    grouped = key.shape[1] != query.shape[1]
    if query.device.type == "cpu" or torch.compiler.is_compiling():
        return flex_attention(query, key, value, block_mask=block_mask, enable_gqa=grouped)
    output = _compiled_flex_attention()(
        query, key, value, block_mask=block_mask, enable_gqa=grouped
    )
    return cast(Tensor, output)


class GPTAttention(nn.Module):
    """Grouped-query self-attention with rotary embeddings and no biases."""

    def __init__(self, config: GPTConfig, layer_index: int) -> None:
        super().__init__()
        self.layer_index = layer_index
        self.head_dim = config.head_dim
        self.kv_groups = config.num_attention_heads // config.kv_heads
        hidden, head_dim = config.hidden_size, config.head_dim
        self.q_proj = nn.Linear(hidden, config.num_attention_heads * head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, config.kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, config.kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(config.num_attention_heads * head_dim, hidden, bias=False)

    def forward(
        self,
        hidden_states: Tensor,
        position_embeddings: RotaryEmbedding,
        attention_mask: AttentionMask,
        kv_cache: KVCache | None,
    ) -> Tensor:
        rows, length, _ = hidden_states.shape
        heads_shape = (rows, length, -1, self.head_dim)
        query = self.q_proj(hidden_states).view(heads_shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(heads_shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(heads_shape).transpose(1, 2)
        cos, sin = position_embeddings
        query, key = _apply_rotary(query, cos, sin), _apply_rotary(key, cos, sin)
        if kv_cache is not None:
            key, value = kv_cache.update(self.layer_index, key, value)
        if isinstance(attention_mask, BlockMask):
            output = _flex_attention(query, key, value, attention_mask)
        else:
            # Expanded like transformers' repeat_kv: SDPA's enable_gqa falls back to the math
            # kernel whenever a mask is given, and the expansion is what Llama computes.
            key = key.repeat_interleave(self.kv_groups, dim=1)
            value = value.repeat_interleave(self.kv_groups, dim=1)
            output = functional.scaled_dot_product_attention(
                query, key, value, attn_mask=attention_mask, is_causal=attention_mask is None
            )
        return cast(Tensor, self.o_proj(output.transpose(1, 2).reshape(rows, length, -1)))


class GPTMLP(nn.Module):
    """SwiGLU: ``down_proj(silu(gate_proj(x)) * up_proj(x))``."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.mlp_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.mlp_size, bias=False)
        self.down_proj = nn.Linear(config.mlp_size, config.hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return cast(Tensor, self.down_proj(functional.silu(self.gate_proj(x)) * self.up_proj(x)))


class GPTBlock(nn.Module):
    """One pre-norm decoder block; the unit the trainer shards with ``fully_shard``."""

    def __init__(self, config: GPTConfig, layer_index: int) -> None:
        super().__init__()
        self.self_attn = GPTAttention(config, layer_index)
        self.mlp = GPTMLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self,
        hidden_states: Tensor,
        position_embeddings: RotaryEmbedding,
        attention_mask: AttentionMask,
        kv_cache: KVCache | None = None,
    ) -> Tensor:
        attended = self.self_attn(
            self.input_layernorm(hidden_states), position_embeddings, attention_mask, kv_cache
        )
        hidden_states = hidden_states + attended
        transformed: Tensor = self.mlp(self.post_attention_layernorm(hidden_states))
        return hidden_states + transformed


def _prepare_mask(mask: AttentionMask, rows: int, length: int, kv_length: int) -> AttentionMask:
    """Check a 4D mask's shape and let each fully masked query row attend to its own token.

    SDPA kernels may return NaN for a query that may attend to nothing (a padding row), and a
    NaN in a hidden state poisons the backward pass even where the loss masks it out. Opening
    only the diagonal of empty rows leaves every other row, and so every real token, unchanged.
    """
    if mask is None:
        if kv_length != length:
            raise InputError(
                "attention_mask is required when a KV cache holds earlier tokens",
                field="attention_mask",
            )
        return None
    if isinstance(mask, BlockMask):
        if tuple(mask.seq_lengths) != (length, kv_length):
            raise InputError(
                f"attention_mask BlockMask covers {tuple(mask.seq_lengths)} query x key tokens, "
                f"expected ({length}, {kv_length})",
                field="attention_mask",
            )
        return mask
    if (
        mask.dtype != torch.bool
        or mask.ndim != 4
        or mask.shape[0] not in (1, rows)
        or tuple(mask.shape[2:]) != (length, kv_length)
    ):
        raise InputError(
            f"attention_mask must be a bool tensor [{rows}, 1, {length}, {kv_length}] "
            f"(True: may attend), got {mask.dtype} {list(mask.shape)}",
            field="attention_mask",
        )
    own_key = torch.arange(kv_length, device=mask.device) == (
        torch.arange(length, device=mask.device)[:, None] + (kv_length - length)
    )
    empty_rows = ~mask.any(dim=-1, keepdim=True)
    return mask | (empty_rows & own_key)


class GPTDecoder(nn.Module):
    """Embedding, blocks and final norm: the ``model`` of ``LlamaForCausalLM``."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(GPTBlock(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: AttentionMask = None,
        position_ids: Tensor | None = None,
        *,
        kv_cache: KVCache | None = None,
    ) -> BaseModelOutputWithPast:
        """Hidden states [R, L, hidden] after the final norm, as ``.last_hidden_state``.

        Args:
            input_ids: [R, L] token ids.
            attention_mask: None (causal), a bool [R or 1, 1, L, K] tensor (True: may attend;
                K = L, or cached + L with ``kv_cache``), or a ``BlockMask`` (flex attention).
            position_ids: [R or 1, L] rotary positions; None: 0..L-1 after the cached tokens.
            kv_cache: earlier tokens' keys and values (generation); this call's are appended.
        """
        rows, length = input_ids.shape
        cached = 0 if kv_cache is None else kv_cache.length
        if position_ids is None:
            position_ids = torch.arange(cached, cached + length, device=input_ids.device)[None]
        mask = _prepare_mask(attention_mask, rows, length, cached + length)
        hidden_states = self.embed_tokens(input_ids)
        position_embeddings = rotary_embedding(position_ids, self.config, hidden_states.dtype)
        for block in self.layers:
            hidden_states = block(hidden_states, position_embeddings, mask, kv_cache)
        if kv_cache is not None:
            kv_cache.length += length
        return BaseModelOutputWithPast(last_hidden_state=self.norm(hidden_states))


class GPT(nn.Module):
    """The built-in decoder-only LM; see the module docstring for how it is called."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.model = GPTDecoder(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self._init_weights()

    @classmethod
    def from_config(cls, config: GPTConfig | Mapping[str, Any]) -> GPT:
        """Build a randomly initialized GPT from a config or a mapping of its fields."""
        return cls(config if isinstance(config, GPTConfig) else GPTConfig.from_dict(config))

    @torch.no_grad()
    def _init_weights(self) -> None:
        """Normal(0, initializer_range) for linear and embedding weights, ones for the norms:
        Llama's initialization, as transformers' ``_init_weights`` does it."""
        for module in self.modules():
            if module is self.lm_head and self.config.tie_word_embeddings:
                continue  # its weight is the embedding's, drawn once
            if isinstance(module, nn.Linear | nn.Embedding):
                module.weight.normal_(mean=0.0, std=self.config.initializer_range)
            elif isinstance(module, RMSNorm):
                module.weight.fill_(1.0)

    @property
    def runs_flex_attention_on_gpu(self) -> bool:
        """Whether a ``BlockMask`` can run on a GPU: the compiled kernel's ``tl.dot`` needs
        heads of at least 16 dimensions (smaller ones must use the bool mask and SDPA)."""
        return self.config.head_dim >= _FLEX_MIN_HEAD_DIM

    def get_decoder(self) -> GPTDecoder:
        return self.model

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: AttentionMask = None,
        position_ids: Tensor | None = None,
        *,
        kv_cache: KVCache | None = None,
        logits_to_keep: int = 0,
    ) -> CausalLMOutputWithPast:
        """Logits [R, L, vocab] in the weights' dtype, as ``.logits``.

        ``logits_to_keep``: compute logits for the last N positions only (0: all), as in
        transformers. The other arguments are :meth:`GPTDecoder.forward`'s.
        """
        hidden = self.model(input_ids, attention_mask, position_ids, kv_cache=kv_cache)
        last_hidden = hidden.last_hidden_state[:, -logits_to_keep:]
        return CausalLMOutputWithPast(logits=self.lm_head(last_hidden))

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int,
        eos_token_id: int | None,
    ) -> list[list[int]]:
        """Greedy completions of ``prompts``, left-padded into one batch, with a KV cache.

        Returns one list per prompt: the new tokens only, stopping before the first
        ``eos_token_id`` (which is not included) or after ``max_new_tokens``. Runs under
        ``torch.no_grad`` in eval mode and restores the mode. See
        :func:`tokenpo.models.generation.greedy_generate`.
        """
        return greedy_generate(
            self, prompts, max_new_tokens=max_new_tokens, eos_token_id=eos_token_id
        )
