"""The data stage: splits, tokenizer and gold SFT pairs."""

from __future__ import annotations

import json
from pathlib import Path

from tokenpo.demo import DataSizes, make_data, sft_pair_rows
from tokenpo.synthetic import SCHEMA, generate_task, parse_annotations, to_json


def test_sft_pairs_take_the_gold_as_chosen_and_a_valid_perturbation_as_rejected() -> None:
    data = generate_task(train=20, validation=0, test=0, seed=5)
    rows = sft_pair_rows(data.train, seed=5)
    assert len(rows) == 20
    assert rows == sft_pair_rows(data.train, seed=5)
    for example, row in zip(data.train, rows, strict=True):
        assert row["chosen"] == [{"role": "assistant", "content": to_json(example.annotations)}]
        rejected = parse_annotations(row["rejected"][0]["content"])
        assert rejected is not None
        assert all(SCHEMA.allows(item.code, item.subcode) for item in rejected)
        assert tuple(rejected) != example.annotations


def test_make_data_writes_every_file(tmp_path: Path) -> None:
    make_data(tmp_path, DataSizes(train=12, validation=4, test=3), seed=1)
    assert (tmp_path / "tokenizer" / "tokenizer.json").is_file()
    counts = {
        name: len((tmp_path / f"{name}.jsonl").read_text().splitlines())
        for name in ("train", "validation", "test", "sft_pairs", "sft_val_pairs")
    }
    assert counts == {"train": 12, "validation": 4, "test": 3, "sft_pairs": 12, "sft_val_pairs": 4}
    row = json.loads((tmp_path / "test.jsonl").read_text().splitlines()[0])
    assert parse_annotations(row["gold"])
