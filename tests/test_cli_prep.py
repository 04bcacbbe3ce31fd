"""`tokenpo prep` as the real command: summary, --explain-row, errors."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cli_runner import run_tokenpo
from prep_data import make_pairs, train_tokenizer, write_rows


def test_prep_prints_a_summary_and_explains_a_row(tmp_path: Path):
    tokenizer = tmp_path / "tokenizer.json"
    train_tokenizer().save(str(tokenizer))
    rows = [*make_pairs(20), {"prompt": "p", "chosen": "same", "rejected": "same"}]
    source = write_rows(rows, tmp_path / "pairs.parquet")
    out = tmp_path / "shards"
    result = run_tokenpo(
        "prep", source, "-t", tokenizer, "-o", out, "--shard-rows", "8",
        "--importance", "tabpo_authors", "--explain-row", "3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "quarantined: chosen and rejected are identical after tokenization" in result.stdout
    assert "pair 3" in result.stdout
    assert "value:subcode" in result.stdout
    assert "scaffolding" in result.stdout
    assert sorted(path.name for path in out.iterdir()) == [
        "manifest.json",
        "quarantine.jsonl",
        "shard-00000.parquet",
        "shard-00001.parquet",
        "shard-00002.parquet",
    ]


def test_prep_stops_on_a_file_without_the_columns(tmp_path: Path):
    tokenizer = tmp_path / "tokenizer.json"
    train_tokenizer().save(str(tokenizer))
    source = tmp_path / "other.parquet"
    pq.write_table(pa.table({"question": ["q"], "answer": ["a"]}), source)
    result = run_tokenpo("prep", source, "-t", tokenizer, "-o", tmp_path / "out")
    assert result.returncode == 2
    assert f"error: {source}: required column 'chosen' missing" in result.stderr
    assert "question, answer" in result.stderr


def test_a_column_map_renames_inputs(tmp_path: Path):
    tokenizer = tmp_path / "tokenizer.json"
    train_tokenizer().save(str(tokenizer))
    rows = [
        {"prompt": r["prompt"], "good": r["chosen"], "bad": r["rejected"]} for r in make_pairs(4)
    ]
    source = write_rows(rows, tmp_path / "renamed.jsonl")
    result = run_tokenpo(
        "prep",
        source,
        "-t",
        tokenizer,
        "-o",
        tmp_path / "out",
        "--column-map",
        "chosen=good,rejected=bad",
    )
    assert result.returncode == 0, result.stderr
    bad_map = run_tokenpo(
        "prep", source, "-t", tokenizer, "-o", tmp_path / "o2", "--column-map", "answer=x"
    )
    assert bad_map.returncode == 2
    assert "unknown column 'answer'" in bad_map.stderr
