"""`tokenpo.prep` and the files beside tokenizer.json: the chat template (from
tokenizer_config.json, chat_template.jinja or chat_template.json), its EOS and BOS."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

import tokenpo
from prep_data import CHAT_TEMPLATE, conversations, make_pairs, write_model_dir, write_rows
from tokenpo import InputError, TokenizerError
from tokenpo.data import read_shard


def all_rows(manifest: tokenpo.Manifest) -> list[dict[str, Any]]:
    return [row for shard in manifest.shards for row in read_shard(shard.path).to_pylist()]


def edit_config(model: Path, **changes: Any) -> None:
    config_path = model / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    config_path.write_text(json.dumps(config))


@pytest.mark.parametrize(
    "change",
    [
        # Every newline a space, the generation prompt's too: still a template whose prompt
        # renders as a prefix of the conversation, so the rows are not all set aside.
        {"chat_template": CHAT_TEMPLATE.replace("\\n", " ")},
        {"eos_token": "<|im_start|>"},
    ],
    ids=["chat_template", "eos_token"],
)
def test_a_changed_tokenizer_config_is_another_run(tmp_path: Path, change: dict[str, str]):
    model = write_model_dir(tmp_path / "model")
    source = write_rows(conversations(make_pairs(4)), tmp_path / "c.jsonl")
    first = tokenpo.prep([source], model, tmp_path / "o")
    edit_config(model, **change)
    with pytest.raises(InputError, match="another config"):
        tokenpo.prep([source], model, tmp_path / "o")
    second = tokenpo.prep([source], model, tmp_path / "o2")
    assert second.raw["fingerprint"] != first.raw["fingerprint"]
    assert all_rows(second) != all_rows(first)


def test_conversations_without_a_chat_template_stop_naming_the_tokenizer(tmp_path: Path):
    model = write_model_dir(tmp_path / "model")
    edit_config(model, chat_template=None)
    source = write_rows(conversations(make_pairs(3)), tmp_path / "c.jsonl")
    message = f"{re.escape(str(model))}: conversational rows need a chat template"
    with pytest.raises(TokenizerError, match=message):
        tokenpo.prep([source], model, tmp_path / "o")
    text = tokenpo.prep([write_rows(make_pairs(3), tmp_path / "t.jsonl")], model, tmp_path / "t")
    assert text.pairs == 3
    assert text.raw["tokenizer"]["chat_template"] is False


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("chat_template.jinja", CHAT_TEMPLATE),
        ("chat_template.json", json.dumps({"chat_template": CHAT_TEMPLATE})),
    ],
)
def test_the_chat_template_is_read_from_its_own_file(tmp_path: Path, name: str, text: str):
    pairs = conversations(make_pairs(4))
    source = write_rows(pairs, tmp_path / "c.jsonl")
    reference = tokenpo.prep([source], write_model_dir(tmp_path / "ref"), tmp_path / "o_ref")
    model = write_model_dir(tmp_path / "model")
    edit_config(model, chat_template=None)
    (model / name).write_text(text)
    manifest = tokenpo.prep([source], model, tmp_path / "o")
    assert manifest.raw["tokenizer"]["chat_template"] is True
    assert all_rows(manifest) == all_rows(reference)


def test_a_template_that_does_not_parse_stops_only_conversations(tmp_path: Path):
    model = write_model_dir(tmp_path / "model")
    edit_config(model, chat_template="{% generation %}{{ x }}{% endgeneration %}")
    text = tokenpo.prep([write_rows(make_pairs(3), tmp_path / "t.jsonl")], model, tmp_path / "t")
    assert text.pairs == 3
    config = re.escape(str(model / "tokenizer_config.json"))
    with pytest.raises(TokenizerError, match=rf"{config}: the chat template, .* does not parse"):
        tokenpo.prep(
            [write_rows(conversations(make_pairs(3)), tmp_path / "c.jsonl")], model, tmp_path / "c"
        )
