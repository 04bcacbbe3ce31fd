"""load_causal_lm: the built-in GPT, model directories, config files, and what a bad source says."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from models_testkit import llama_twin, prefix_sharing_batch
from transformers import LlamaForCausalLM

from tiny_models import tiny_llama_config
from tokenpo.exceptions import ConfigError, InputError
from tokenpo.models import GPT, GPTConfig, load_causal_lm, model_family


@pytest.fixture
def llama_config_file(tmp_path: Path) -> Path:
    config = tiny_llama_config(40)
    config.save_pretrained(tmp_path / "llama")
    return tmp_path / "llama" / "config.json"


def test_builtin_gpt_takes_the_vocabulary_size_from_the_tokenizer() -> None:
    model = load_causal_lm("gpt", gpt={"hidden_size": 16}, vocab_size=33, dtype=torch.bfloat16)
    assert isinstance(model, GPT)
    assert model.config == GPTConfig(vocab_size=33, hidden_size=16)
    assert model.lm_head.weight.dtype == torch.bfloat16
    assert model_family(model) == "gpt"
    assert isinstance(load_causal_lm(None, vocab_size=5), GPT)


def test_builtin_gpt_option_errors() -> None:
    with pytest.raises(ConfigError, match=r"gpt.vocab_size \(30\) differs from the tokenizer's"):
        load_causal_lm("gpt", gpt={"vocab_size": 30}, vocab_size=33)
    with pytest.raises(ConfigError, match=r"gpt.vocab_size is required"):
        load_causal_lm("gpt", gpt={"hidden_size": 16})
    with pytest.raises(ConfigError, match=r"unknown gpt option layers; valid options"):
        load_causal_lm("gpt", gpt={"layers": 2}, vocab_size=33)


def test_seed_fixes_the_initialization_without_touching_the_global_rng(
    llama_config_file: Path,
) -> None:
    for source in ("gpt", llama_config_file):
        torch.manual_seed(123)
        before = torch.get_rng_state()
        first = load_causal_lm(source, vocab_size=40, seed=7).state_dict()
        assert torch.equal(torch.get_rng_state(), before)
        second = load_causal_lm(source, vocab_size=40, seed=7).state_dict()
        other = load_causal_lm(source, vocab_size=40, seed=8).state_dict()
        assert all(torch.equal(first[name], second[name]) for name in first)
        assert not torch.equal(
            first["model.embed_tokens.weight"], other["model.embed_tokens.weight"]
        )


def test_a_config_file_builds_a_random_transformers_model_with_sdpa(
    llama_config_file: Path,
) -> None:
    model = load_causal_lm(llama_config_file, seed=0)
    assert isinstance(model, LlamaForCausalLM)
    assert model.config._attn_implementation == "sdpa"
    assert model.config.num_key_value_heads == 2
    assert model_family(model) == "transformers"


def test_a_transformers_model_takes_the_same_calls_as_the_gpt() -> None:
    gpt = load_causal_lm("gpt", gpt={"hidden_size": 32}, vocab_size=61, seed=0).eval()
    assert isinstance(gpt, GPT)
    llama = llama_twin(gpt)
    batch = prefix_sharing_batch([(3, 2, 4)])
    real = batch.real()
    hidden = [
        model.get_decoder()(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
        ).last_hidden_state
        for model in (gpt, llama)
    ]
    torch.testing.assert_close(hidden[0][real], hidden[1][real], atol=1e-5, rtol=0)


def test_a_missing_path_says_what_was_expected(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    expected = rf"model source '{re.escape(str(missing))}' does not exist; expected 'gpt', a model"
    with pytest.raises(ConfigError, match=expected):
        load_causal_lm(missing)


def test_a_directory_without_config_json_is_named(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(
        ConfigError, match=rf"model directory '{re.escape(str(tmp_path))}' has no config.json"
    ):
        load_causal_lm(tmp_path)


def test_an_unknown_model_type_is_named(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "no-such-model"}))
    with pytest.raises(
        ConfigError,
        match=rf"cannot load a causal LM from '{re.escape(str(path))}': expected a config whose "
        r"model_type transformers knows.*no-such-model",
    ):
        load_causal_lm(path)
    with pytest.raises(ConfigError, match=r"cannot load a causal LM from .*no-such-model"):
        load_causal_lm(tmp_path)


def test_a_directory_with_a_config_but_no_weights_is_named(llama_config_file: Path) -> None:
    directory = llama_config_file.parent
    with pytest.raises(
        ConfigError,
        match=rf"from '{re.escape(str(directory))}': .* its weights; .*no file named model",
    ):
        load_causal_lm(directory)


def test_a_config_file_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(InputError, match=r"model config '.*config.json' is not a readable JSON"):
        load_causal_lm(path)


def test_model_family_refuses_other_modules() -> None:
    with pytest.raises(TypeError, match="not a causal LM tokenpo can build: Linear"):
        model_family(torch.nn.Linear(2, 2))
