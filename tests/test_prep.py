"""`tokenpo.prep` end to end on real files, tokenizers and templates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer

import tokenpo
from prep_data import (
    bad_jsonl,
    conversations,
    make_pairs,
    train_tokenizer,
    write_model_dir,
    write_rows,
)
from tokenpo import ConfigError, InputError, NoPairsError, PrepOptions, TokenizerError
from tokenpo.data import read_shard


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    train_tokenizer().save(str(path))
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("model") / "model")


def all_rows(manifest: tokenpo.Manifest) -> list[dict[str, Any]]:
    return [row for shard in manifest.shards for row in read_shard(shard.path).to_pylist()]


def quarantine(manifest: tokenpo.Manifest) -> list[dict[str, Any]]:
    return [json.loads(line) for line in manifest.quarantine.path.read_text().splitlines()]


def test_text_pairs_are_tokenized_like_the_tokenizers_library(tmp_path: Path, tokenizer_path: Path):
    rows = make_pairs(40)
    source = write_rows(rows, tmp_path / "pairs.parquet")
    manifest = tokenpo.prep([source], tokenizer_path, tmp_path / "out", PrepOptions(shard_rows=16))
    assert manifest.pairs == 40
    assert [shard.rows for shard in manifest.shards] == [16, 16, 8]
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    eos = tokenizer.token_to_id("<|endoftext|>")
    for row, prepared in zip(rows, all_rows(manifest), strict=True):
        assert prepared["prompt_ids"] == tokenizer.encode(row["prompt"]).ids
        for side in ("chosen", "rejected"):
            completion = tokenizer.encode(row[side], add_special_tokens=False).ids
            assert prepared[f"{side}_ids"] == [*completion, eos]
        diff = tokenpo.diff_tokens(prepared["chosen_ids"], prepared["rejected_ids"])
        assert prepared["chosen_diff"] == diff.a_mask
        assert prepared["rejected_diff"] == diff.b_mask
        assert prepared["edit_distance"] == diff.edit_distance
        for side in ("chosen", "rejected"):
            weights = prepared[f"{side}_weight"]
            assert sum(weights) / len(weights) == pytest.approx(1.0, abs=1e-4)
        assert 0.0 <= prepared["difficulty"] <= 1.0
    assert manifest.raw["difficulty_source"] == "token_separation"


@pytest.mark.parametrize("suffix", [".jsonl", ".arrow"])
def test_every_input_format_gives_the_same_pairs(tmp_path: Path, tokenizer_path: Path, suffix: str):
    rows = make_pairs(12)
    reference = tokenpo.prep(
        [write_rows(rows, tmp_path / "a.parquet")], tokenizer_path, tmp_path / "ref"
    )
    other = tokenpo.prep(
        [write_rows(rows, tmp_path / f"a{suffix}")], tokenizer_path, tmp_path / "other"
    )
    assert all_rows(other) == all_rows(reference)


def test_score_margins_give_the_difficulty_with_ties_broken_by_separation(
    tmp_path: Path, tokenizer_path: Path
):
    rows = make_pairs(40, seed=5)
    for index, row in enumerate(rows):
        # Integer scores, most pairs tied on the hardest margin (as counting wrong fields gives).
        row |= {"score_chosen": 2.0 if index % 4 == 0 else 1.0, "score_rejected": 0.0}
    manifest = tokenpo.prep(
        [write_rows(rows, tmp_path / "s.jsonl")], tokenizer_path, tmp_path / "o"
    )
    assert manifest.raw["difficulty_source"] == "score_margin"
    prepared = all_rows(manifest)
    keys = [
        (
            row["score_margin"],
            row["edit_distance"] / (len(row["chosen_ids"]) + len(row["rejected_ids"])),
        )
        for row in prepared
    ]
    margins = [row["score_chosen"] - row["score_rejected"] for row in rows]
    assert [margin for margin, _ in keys] == margins
    # The data exercises both: separations that break ties, and pairs tied on both keys.
    assert len({margin for margin, _ in keys}) < len(set(keys)) < len(keys)
    for key, row in zip(keys, prepared, strict=True):
        # Rank by (margin, separation), full ties sharing their average rank; wide is easy.
        below = sum(other < key for other in keys)
        ties = sum(other == key for other in keys)
        average_rank = below + (ties - 1) / 2
        assert row["difficulty"] == pytest.approx(1 - average_rank / (len(keys) - 1))
    # Margins alone put the 30 tied pairs at 0.63, under MixDPO's threshold 0.7: none routed.
    assert any(row["difficulty"] >= 0.7 for row in prepared)


def test_conversations_are_rendered_with_the_chat_template(tmp_path: Path, model_dir: Path):
    pairs = conversations(make_pairs(6))
    manifest = tokenpo.prep([write_rows(pairs, tmp_path / "c.jsonl")], model_dir, tmp_path / "o")
    assert manifest.raw["tokenizer"]["chat_template"] is True
    # The environment transformers renders chat templates with.
    template = jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(
        json.loads((model_dir / "tokenizer_config.json").read_text())["chat_template"]
    )
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    for conversation, prepared in zip(pairs, all_rows(manifest), strict=True):
        prompt_messages = conversation["chosen"][:1]  # the longest common prefix
        prompt_text = template.render(messages=prompt_messages, add_generation_prompt=True)
        full_text = template.render(messages=conversation["chosen"], add_generation_prompt=False)
        assert prepared["prompt_ids"] == tokenizer.encode(prompt_text).ids
        completion = full_text[len(prompt_text) :]
        # The template closes the turn with <|im_end|> (the EOS) and a newline, so EOS is appended.
        expected = tokenizer.encode(completion, add_special_tokens=False).ids
        assert prepared["chosen_ids"] == [*expected, tokenizer.token_to_id("<|im_end|>")]


def test_bad_rows_are_quarantined_with_file_row_and_reason(tmp_path: Path, tokenizer_path: Path):
    path = bad_jsonl(make_pairs(2), tmp_path / "bad.jsonl")
    manifest = tokenpo.prep([path], tokenizer_path, tmp_path / "o")
    assert manifest.pairs == 2
    records = quarantine(manifest)
    assert all(record["file"] == str(path) for record in records)
    reasons = {record["row"]: record["reason"] for record in records}
    assert "null" in reasons[1]
    assert "missing" in reasons[2]
    assert "string" in reasons[3]
    assert "empty" in reasons[4]
    assert "identical after tokenization" in reasons[5]
    assert reasons.keys() >= {6, 7, 9}
    assert sum(manifest.summary["quarantined"].values()) == len(records) == 8


def test_over_length_pairs_are_cut_or_quarantined(tmp_path: Path, tokenizer_path: Path):
    rows = make_pairs(5)
    source = write_rows(rows, tmp_path / "p.parquet")
    cut = tokenpo.prep(
        [source], tokenizer_path, tmp_path / "cut", PrepOptions(max_len=24, max_prompt_len=8)
    )
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    for row, prepared in zip(rows, all_rows(cut), strict=True):
        prompt = tokenizer.encode(row["prompt"]).ids
        assert prepared["prompt_ids"] == prompt[-8:]  # the prompt keeps its end
        chosen = tokenizer.encode(row["chosen"], add_special_tokens=False).ids
        assert prepared["chosen_ids"] == chosen[:16]  # completions keep their start
        assert prepared["truncated"] == 1 | 2 | 4
    with pytest.raises(NoPairsError, match="all 5 rows read") as dropped:
        tokenpo.prep(
            [source],
            tokenizer_path,
            tmp_path / "drop",
            PrepOptions(max_len=24, drop_over_length=True),
        )
    records = Path(dropped.value.quarantine).read_text().splitlines()
    assert len(records) == 5
    assert all("over length" in json.loads(record)["reason"] for record in records)


def test_file_level_problems_stop_with_the_file_named(tmp_path: Path, tokenizer_path: Path):
    with pytest.raises(InputError, match=r"missing\.parquet"):
        tokenpo.prep([tmp_path / "missing.parquet"], tokenizer_path, tmp_path / "o")
    wrong = tmp_path / "wrong.parquet"
    pq.write_table(pa.table({"question": ["q"], "answer": ["a"]}), wrong)
    with pytest.raises(InputError, match=r"chosen.*question, answer"):
        tokenpo.prep([wrong], tokenizer_path, tmp_path / "o")
    broken = tmp_path / "tokenizer.json"
    broken.write_text("{}")
    with pytest.raises(TokenizerError, match=r"tokenizer\.json"):
        tokenpo.prep([write_rows(make_pairs(1), tmp_path / "x.parquet")], broken, tmp_path / "o")
    with pytest.raises(ConfigError, match="max_len"):
        PrepOptions(max_len=1)


def test_a_finished_run_is_not_redone_and_a_different_config_is_refused(
    tmp_path: Path, tokenizer_path: Path
):
    source = write_rows(make_pairs(10), tmp_path / "p.parquet")
    first = tokenpo.prep([source], tokenizer_path, tmp_path / "o")
    times = [shard.path.stat().st_mtime_ns for shard in first.shards]
    again = tokenpo.prep([source], tokenizer_path, tmp_path / "o")
    assert [shard.path.stat().st_mtime_ns for shard in again.shards] == times
    with pytest.raises(InputError, match="another config"):
        tokenpo.prep([source], tokenizer_path, tmp_path / "o", PrepOptions(shard_rows=3))
