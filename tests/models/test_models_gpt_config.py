"""GPTConfig: derived defaults, validation messages, and the Llama it maps to."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
from transformers import LlamaForCausalLM

from tokenpo.exceptions import ConfigError
from tokenpo.models import GPT, GPTConfig


def test_derived_defaults() -> None:
    config = GPTConfig(vocab_size=100)
    assert config.num_key_value_heads == config.num_attention_heads == 4
    assert config.intermediate_size == 384  # 8/3 * 128 rounded up to a multiple of 64
    assert GPTConfig(vocab_size=100, hidden_size=256).intermediate_size == 704
    assert GPTConfig(vocab_size=100, intermediate_size=100).intermediate_size == 100
    assert config.head_dim == 32


def test_from_dict_round_trips_and_lists_valid_keys_on_a_typo() -> None:
    config = GPTConfig(vocab_size=10, hidden_size=64, num_key_value_heads=2)
    assert GPTConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match=r"unknown gpt option hiden_size; valid options: vocab"):
        GPTConfig.from_dict({"vocab_size": 10, "hiden_size": 64})
    with pytest.raises(ConfigError, match=r"unknown gpt options a, b; valid options: .*rope_theta"):
        GPTConfig.from_dict({"vocab_size": 10, "b": 1, "a": 2})
    with pytest.raises(ConfigError, match=r"gpt.vocab_size is required"):
        GPTConfig.from_dict({"hidden_size": 64})
    with pytest.raises(ConfigError, match=r"gpt must be a table of GPTConfig fields, got 3"):
        GPTConfig.from_dict(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"vocab_size": 0}, r"gpt.vocab_size must be a positive integer, got 0"),
        ({"hidden_size": True}, r"gpt.hidden_size must be a positive integer, got True"),
        ({"num_hidden_layers": 1.5}, r"gpt.num_hidden_layers must be a positive integer"),
        ({"hidden_size": 30}, r"gpt.hidden_size \(30\) must be a multiple of .*heads \(4\)"),
        ({"hidden_size": 12}, r"must be even for rotary embeddings, got 12 / 4 = 3"),
        ({"num_key_value_heads": 3}, r"gpt.num_key_value_heads \(3\) must divide .*heads \(4\)"),
        ({"intermediate_size": 0}, r"gpt.intermediate_size must be a positive integer, got 0"),
        ({"rope_theta": -1.0}, r"gpt.rope_theta must be a positive finite number, got -1.0"),
        ({"rms_norm_eps": float("nan")}, r"gpt.rms_norm_eps must be a positive finite number"),
        ({"tie_word_embeddings": "yes"}, r"gpt.tie_word_embeddings must be true or false"),
    ],
)
def test_a_bad_value_names_its_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        GPTConfig(**({"vocab_size": 10} | fields))


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        GPTConfig(vocab_size=10).hidden_size = 3  # type: ignore[misc]


@pytest.mark.parametrize("tied", [False, True])
def test_parameter_names_and_shapes_are_llamas(tied: bool) -> None:
    config = GPTConfig(
        vocab_size=50, hidden_size=64, num_key_value_heads=2, tie_word_embeddings=tied
    )
    llama_config = config.to_llama_config(eos_token_id=7)
    with torch.device("meta"):
        gpt = GPT(config)
        llama = LlamaForCausalLM(llama_config)
    assert {k: v.shape for k, v in gpt.state_dict().items()} == {
        k: v.shape for k, v in llama.state_dict().items()
    }
    assert (gpt.lm_head.weight is gpt.model.embed_tokens.weight) == tied
    assert llama_config.architectures == ["LlamaForCausalLM"]
    assert (llama_config.eos_token_id, llama_config.bos_token_id) == (7, None)
    assert llama_config.intermediate_size == config.intermediate_size
    assert llama_config.num_key_value_heads == 2
    assert llama_config.rope_parameters["rope_theta"] == config.rope_theta
    assert llama_config.tie_word_embeddings == tied


def test_from_config_accepts_a_mapping() -> None:
    gpt = GPT.from_config({"vocab_size": 20, "hidden_size": 16, "num_hidden_layers": 3})
    assert gpt.config == GPTConfig(vocab_size=20, hidden_size=16, num_hidden_layers=3)
    assert len(gpt.model.layers) == 3
