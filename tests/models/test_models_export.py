"""export_hf: a Hugging Face directory that from_pretrained opens with the same logits."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from models_testkit import VOCAB, prefix_sharing_batch, small_gpt
from transformers import AutoModelForCausalLM

import tokenpo.models.export
from tokenpo.exceptions import ConfigError, InputError
from tokenpo.models import GPT, export_hf, load_causal_lm


def trained_a_little(gpt: GPT) -> GPT:
    """A few SGD steps, so that no weight is still at its initial value (norms included)."""
    optimizer = torch.optim.SGD(gpt.parameters(), lr=0.5)
    input_ids = torch.randint(0, VOCAB, (4, 9), generator=torch.Generator().manual_seed(0))
    gpt.train()
    for _ in range(3):
        logits = gpt(input_ids).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), input_ids[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return gpt.eval()


def assert_same_logits(exported: torch.nn.Module, model: torch.nn.Module) -> None:
    batch = prefix_sharing_batch([(3, 4, 2), (2, 2, 5)], seed=4)
    inputs = (batch.input_ids, batch.attention_mask, batch.position_ids)
    with torch.no_grad():
        expected = model(*inputs).logits
        got = exported(*inputs).logits
    torch.testing.assert_close(got[batch.real()], expected[batch.real()], atol=1e-5, rtol=0)


def leftovers(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir() if path.name.startswith("."))


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_an_exported_gpt_opens_with_from_pretrained(tmp_path: Path, tied: bool) -> None:
    gpt = trained_a_little(small_gpt(num_key_value_heads=2, tie_word_embeddings=tied))
    out = export_hf(gpt, config=gpt.config, out_dir=tmp_path / "export")
    assert sorted(path.name for path in out.iterdir()) == ["config.json", "model.safetensors"]
    written = json.loads((out / "config.json").read_text())
    assert written["architectures"] == ["LlamaForCausalLM"]
    assert written["dtype"] == "float32"
    loaded = AutoModelForCausalLM.from_pretrained(out)
    assert_same_logits(loaded, gpt)
    assert (loaded.lm_head.weight is loaded.model.embed_tokens.weight) == tied
    assert leftovers(tmp_path) == []


def test_a_gathered_state_dict_with_a_separate_tied_copy(tmp_path: Path) -> None:
    # A full state dict gathered from FSDP holds the tied matrix twice, as two tensors.
    gpt = trained_a_little(small_gpt(tie_word_embeddings=True))
    state = {name: tensor.clone() for name, tensor in gpt.state_dict().items()}
    assert "lm_head.weight" in state
    out = export_hf(state, config=gpt.config, out_dir=tmp_path / "export")
    assert_same_logits(load_causal_lm(out), gpt)


def test_a_transformers_model_from_a_config_file_round_trips(tmp_path: Path) -> None:
    source = small_gpt(num_key_value_heads=1)
    source.config.to_llama_config().save_pretrained(tmp_path / "spec")
    model = load_causal_lm(tmp_path / "spec" / "config.json", seed=3)
    config = model.config
    out = export_hf(model, config=config, out_dir=tmp_path / "export")
    assert config.dtype == torch.float32  # the caller's config is left as it was
    assert_same_logits(load_causal_lm(out), model)


def test_the_exported_config_turns_the_generation_cache_back_on(tmp_path: Path) -> None:
    # The trainer sets use_cache = False; transformers' generate would then recompute every
    # prefix at each new token.
    source = small_gpt()
    source.config.to_llama_config().save_pretrained(tmp_path / "spec")
    model = load_causal_lm(tmp_path / "spec" / "config.json", seed=3)
    model.config.use_cache = False
    out = export_hf(model, config=model.config, out_dir=tmp_path / "export")
    assert json.loads((out / "config.json").read_text())["use_cache"] is True
    assert model.config.use_cache is False  # the caller's config is left as it was


def test_tokenizer_files_are_copied(tmp_path: Path, tokenizer_json: Path) -> None:
    tokenizer_config = tmp_path / "tokenizer_config.json"
    tokenizer_config.write_text(json.dumps({"eos_token": "</s>"}))
    gpt = small_gpt()
    out = export_hf(
        gpt.state_dict(),
        config=gpt.config,
        out_dir=tmp_path / "export",
        tokenizer_files=[tokenizer_json, tokenizer_config],
    )
    assert (out / "tokenizer.json").read_bytes() == tokenizer_json.read_bytes()
    assert (out / "tokenizer_config.json").read_bytes() == tokenizer_config.read_bytes()


def test_a_non_empty_directory_is_replaced_only_with_overwrite(tmp_path: Path) -> None:
    gpt = small_gpt()
    out = tmp_path / "export"
    out.mkdir()
    export_hf(gpt, config=gpt.config, out_dir=out)  # an empty directory is fine
    (out / "notes.txt").write_text("mine")
    message = rf"export directory '{re.escape(str(out))}' is not empty; pass overwrite=True"
    with pytest.raises(ConfigError, match=message):
        export_hf(gpt, config=gpt.config, out_dir=out)
    assert (out / "notes.txt").exists()
    export_hf(gpt, config=gpt.config, out_dir=out, overwrite=True)
    assert not (out / "notes.txt").exists()
    assert (out / "model.safetensors").exists()
    assert leftovers(tmp_path) == []


def test_a_failed_write_leaves_no_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(*_: object, **__: object) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(tokenpo.models.export, "save_file", disk_full)
    gpt = small_gpt()
    with pytest.raises(OSError, match="No space left"):
        export_hf(gpt, config=gpt.config, out_dir=tmp_path / "export")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_overwrite_keeps_the_previous_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gpt = small_gpt()
    out = export_hf(gpt, config=gpt.config, out_dir=tmp_path / "export")
    before = (out / "model.safetensors").read_bytes()

    def disk_full(*_: object, **__: object) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(tokenpo.models.export, "save_file", disk_full)
    with pytest.raises(OSError, match="No space left"):
        export_hf(small_gpt(seed=5), config=gpt.config, out_dir=out, overwrite=True)
    assert (out / "model.safetensors").read_bytes() == before
    assert leftovers(tmp_path) == []


def test_a_state_dict_that_does_not_fit_the_config(tmp_path: Path) -> None:
    gpt = small_gpt()
    state = gpt.state_dict()
    out = tmp_path / "export"
    missing = {k: v for k, v in state.items() if k != "model.norm.weight"} | {
        "extra": state["lm_head.weight"]
    }
    with pytest.raises(InputError, match=r"missing model.norm.weight, unexpected extra"):
        export_hf(missing, config=gpt.config, out_dir=out)
    reshaped = state | {"model.norm.weight": torch.ones(3)}
    with pytest.raises(InputError, match=r"model.norm.weight should be a tensor of shape \[32\]"):
        export_hf(reshaped, config=gpt.config, out_dir=out)
    wrong = small_gpt(hidden_size=64)
    with pytest.raises(InputError, match=r"shape \[61, 64\], got \[61, 32\]"):
        export_hf(gpt, config=wrong.config, out_dir=out)
    assert not out.exists()


def test_tokenizer_file_problems_are_named(tmp_path: Path) -> None:
    gpt = small_gpt()
    absent = tmp_path / "tokenizer.json"
    with pytest.raises(ConfigError, match=r"tokenizer file '.*tokenizer.json' does not exist"):
        export_hf(gpt, config=gpt.config, out_dir=tmp_path / "a", tokenizer_files=[absent])
    clash = tmp_path / "config.json"
    clash.write_text("{}")
    with pytest.raises(ConfigError, match=r"would overwrite another file of the export"):
        export_hf(gpt, config=gpt.config, out_dir=tmp_path / "a", tokenizer_files=[clash])
    assert not (tmp_path / "a").exists()
