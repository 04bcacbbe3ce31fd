"""`tokenpo diff`, run as the real command in a subprocess."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer

from cli_runner import run_tokenpo


def figures(stdout: str) -> dict[str, str]:
    """The figures table as {label: value}."""
    rows = {}
    for line in stdout.splitlines():
        label, _, value = line.strip().rpartition("  ")
        if label:
            rows[label.strip()] = value.strip()
    return rows


def test_the_example_shows_one_confused_subcode():
    result = run_tokenpo("diff", "--example")
    assert result.returncode == 0, result.stderr
    assert "worsening_symptom" in result.stdout
    table = figures(result.stdout)
    assert table["differing (chosen / rejected)"] == "1 / 1"
    assert table["edit distance"] == "2"
    assert table["unaligned"] == "no"


def test_two_strings_with_a_tokenizer(tokenizer_json: Path):
    result = run_tokenpo(
        "diff", '{"code": "medication"}', '{"code": "symptom"}', "-t", tokenizer_json
    )
    assert result.returncode == 0, result.stderr
    assert figures(result.stdout)["edit distance"] == "2"


def test_a_parquet_row_of_text(tokenizer_json: Path, tmp_path: Path):
    path = tmp_path / "pairs.parquet"
    pairs = {"chosen": ["my lisinopril", "a cough"], "rejected": ["my metformin", "a cough today"]}
    pq.write_table(pa.table(pairs), path)
    result = run_tokenpo("diff", "--data", path, "--row", "1", "--tokenizer", tokenizer_json)
    assert result.returncode == 0, result.stderr
    assert "today" in result.stdout
    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    appended = len(tokenizer.encode("a cough today").ids) - len(tokenizer.encode("a cough").ids)
    assert figures(result.stdout)["differing (chosen / rejected)"] == f"0 / {appended}"


def test_token_ids_need_no_tokenizer(tmp_path: Path):
    path = tmp_path / "shard.arrow"
    table = pa.table({"chosen_ids": [[10, 11, 12]], "rejected_ids": [[10, 13, 12]]})
    feather.write_feather(table, path)
    result = run_tokenpo("diff", "--data", path)
    assert result.returncode == 0, result.stderr
    assert figures(result.stdout)["LCS length"] == "2"


def test_jsonl_input(tokenizer_json: Path, tmp_path: Path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"prompt": "p", "chosen": "a rash", "rejected": "a cough"}) + "\n")
    result = run_tokenpo("diff", "--data", path, "--tokenizer", tokenizer_json)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("table", "row", "message"),
    [
        ({"chosen": ["a"], "rejected": ["b"]}, 5, "row 5 does not exist; the file has 1 rows"),
        ({"chosen": ["a"], "answer": ["b"]}, 0, "found chosen, answer"),
        ({"chosen": [None], "rejected": ["b"]}, 0, "row 0, field 'chosen': is null"),
    ],
)
def test_bad_files_give_one_clear_line(
    tokenizer_json: Path, tmp_path: Path, table: dict[str, list[str | None]], row: int, message: str
):
    path = tmp_path / "pairs.parquet"
    pq.write_table(pa.table(table), path)
    result = run_tokenpo("diff", "--data", path, "--row", str(row), "-t", tokenizer_json)
    assert result.returncode == 2
    assert f"error: {path}" in result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback(tmp_path: Path):
    result = run_tokenpo("--debug", "diff", "--data", tmp_path / "missing.parquet")
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert "no such file" in result.stderr


def test_a_broken_tokenizer_file(tmp_path: Path):
    path = tmp_path / "tokenizer.json"
    path.write_text("{not json")
    result = run_tokenpo("diff", "a", "b", "--tokenizer", path)
    assert result.returncode == 2
    assert f"{path}: not a valid tokenizer.json" in result.stderr


def test_text_without_a_tokenizer_is_a_usage_error():
    result = run_tokenpo("diff", "a", "b")
    assert result.returncode == 2
    assert "text completions need --tokenizer" in result.stderr
