"""The task tokenizer: a lossless byte-level BPE with ChatML, loadable by `tokenpo prep`."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from tokenizers import Tokenizer

import tokenpo
from tokenpo.data import read_shard
from tokenpo.synthetic.negatives import ConfusionStats, make_negatives, pair_row
from tokenpo.synthetic.task import (
    CHAT_TEMPLATE,
    SCHEMA,
    TaskData,
    generate_task,
    prompt_for,
    to_json,
    train_task_tokenizer,
    write_rows,
)


@pytest.fixture(scope="module")
def task() -> TaskData:
    return generate_task(train=300, validation=40, test=40, seed=5)


@pytest.fixture(scope="module")
def model_dir(task: TaskData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_task_tokenizer(task, tmp_path_factory.mktemp("task") / "model", vocab_size=1024)


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path) -> Tokenizer:
    return Tokenizer.from_file(str(model_dir / "tokenizer.json"))


def test_the_directory_has_a_chatml_config(model_dir: Path, tokenizer: Tokenizer):
    config = json.loads((model_dir / "tokenizer_config.json").read_text())
    assert config["chat_template"] == CHAT_TEMPLATE
    assert config["eos_token"] == "<|im_end|>"
    assert config["bos_token"] is None
    assert tokenizer.get_vocab_size() == 1024 + 2
    for special in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        assert tokenizer.encode(special).tokens == [special]


def test_decoding_inverts_encoding_on_every_split(task: TaskData, tokenizer: Tokenizer):
    for example in task:
        for text in (prompt_for(example.message)[0]["content"], to_json(example.annotations)):
            assert tokenizer.decode(tokenizer.encode(text).ids) == text


def test_the_json_scaffolding_and_label_words_are_single_tokens(tokenizer: Tokenizer):
    for text in ['[{"', "code", '":', ' "', '",', '"},', ' {"', '"}]']:
        assert len(tokenizer.encode(text).ids) == 1, text
    # The byte-level pre-tokenizer splits at "_": test_results is test, _, results.
    labels = {*SCHEMA.codes, *(s for code in SCHEMA.codes for s in SCHEMA.subcodes(code))}
    for label in labels:
        assert tokenizer.encode(label).tokens == re.split("(_)", label), label


def test_training_is_deterministic(task: TaskData, model_dir: Path, tmp_path: Path):
    again = train_task_tokenizer(task, tmp_path / "again", vocab_size=1024)
    assert (again / "tokenizer.json").read_bytes() == (model_dir / "tokenizer.json").read_bytes()


def test_prep_renders_task_pairs_through_the_chat_template(
    task: TaskData, model_dir: Path, tokenizer: Tokenizer, tmp_path: Path
):
    rng = random.Random(0)
    rows = [
        pair_row(example, negative)
        for example in task.validation
        for negative in make_negatives(example, ConfusionStats(), rng=rng, count=2)
    ]
    source = write_rows(rows, tmp_path / "pairs.parquet")
    manifest = tokenpo.prep([source], model_dir, tmp_path / "prepared")
    assert manifest.quarantine.rows == 0
    assert manifest.pairs == len(rows)
    assert manifest.raw["tokenizer"]["chat_template"] is True
    prepared = [row for shard in manifest.shards for row in read_shard(shard.path).to_pylist()]
    eos = tokenizer.token_to_id("<|im_end|>")
    for row, raw in zip(prepared, rows, strict=True):
        user = raw["prompt"][0]["content"]
        prompt = tokenizer.decode(row["prompt_ids"], skip_special_tokens=False)
        assert prompt == f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
        assert row["chosen_ids"][-1] == eos
        assert tokenizer.decode(row["chosen_ids"]).rstrip("\n") == raw["gold"]
