"""`tokenpo prep` on input it cannot use whole: the real command, its exit code and message,
and what it leaves on disk (nothing lost: every row set aside is in quarantine.jsonl)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import tokenpo
from cli_runner import run_tokenpo
from prep_data import make_pairs, train_tokenizer, write_rows
from tokenpo import NoPairsError
from tokenpo.data import read_shard


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    train_tokenizer().save(str(path))
    return path


def quarantine_records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "quarantine.jsonl").read_text().splitlines()]


def one_line(stderr: str) -> str:
    """The CLI's error, its line breaks (rich wraps at the terminal width) undone."""
    return " ".join(stderr.split())


def test_inputs_without_rows_stop_with_exit_code_2(tmp_path: Path, tokenizer_path: Path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    result = run_tokenpo("prep", empty, "-t", tokenizer_path, "-o", tmp_path / "out")
    assert result.returncode == 2, result.stderr
    assert f"error: no pairs to prepare: the input files hold no rows ({empty})" in one_line(
        result.stderr
    )
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_inputs_whose_rows_are_all_quarantined_stop_and_keep_every_row(
    tmp_path: Path, tokenizer_path: Path
):
    first = tmp_path / "a.jsonl"
    first.write_text(
        '{"prompt": "p", "chosen": "same", "rejected": "same"}\n{"prompt": "p", "rejected": "x"}\n'
    )
    second = tmp_path / "b.jsonl"
    second.write_text('{"prompt": "p", "chosen": null, "rejected": "x"}\n')
    out = tmp_path / "out"
    result = run_tokenpo("prep", first, second, "-t", tokenizer_path, "-o", out)
    assert result.returncode == 2, result.stderr
    quarantine = out / "quarantine.jsonl"
    assert (
        f"error: no pairs to prepare: all 3 rows read from {first}, {second} were quarantined "
        "(chosen and rejected are identical after tokenization: 1; chosen is missing: 1; "
        f"chosen is null: 1); {quarantine} lists each row with its reason"
    ) in one_line(result.stderr)
    records = [
        (record["file"], record["row"], record["field"]) for record in quarantine_records(out)
    ]
    assert records == [
        (str(first), 0, "rejected"),
        (str(first), 1, "chosen"),
        (str(second), 0, "chosen"),
    ]
    assert not (out / "manifest.json").exists()
    # The library raises the same error, typed, with what the CLI printed.
    with pytest.raises(NoPairsError, match="all 3 rows read") as raised:
        tokenpo.prep([first, second], tokenizer_path, out)
    assert (raised.value.rows_read, raised.value.quarantine) == (3, str(quarantine))
    assert isinstance(raised.value, tokenpo.InputError)


def test_files_of_the_output_directory_are_never_inputs(tmp_path: Path, tokenizer_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    source = write_rows(make_pairs(6), data / "pairs.jsonl")
    # Before, this run succeeded and its rerun read data/quarantine.jsonl back as input.
    result = run_tokenpo("prep", data / "*.jsonl", "-t", tokenizer_path, "-o", data)
    assert result.returncode == 2, result.stderr
    message = one_line(result.stderr)
    assert f"error: {data / '*.jsonl'}: matches 1 file in the output directory {data}" in message
    assert "keep the output directory apart from the inputs" in message
    assert sorted(path.name for path in data.iterdir()) == ["pairs.jsonl"]
    named = run_tokenpo("prep", source, "-t", tokenizer_path, "-o", data)
    assert named.returncode == 2, named.stderr
    assert f"error: {source}: is in the output directory {data}" in one_line(named.stderr)
    # Apart from the inputs, a rerun finds the finished run.
    out = tmp_path / "out"
    assert run_tokenpo("prep", data / "*.jsonl", "-t", tokenizer_path, "-o", out).returncode == 0
    again = run_tokenpo("prep", data / "*.jsonl", "-t", tokenizer_path, "-o", out)
    assert again.returncode == 0, again.stderr
    help_text = one_line(run_tokenpo("prep", "--help").stdout)
    assert "Never files in --out" in help_text
    assert "one JSON array of rows" in help_text


def test_a_pretty_printed_json_array_is_read_row_by_row(tmp_path: Path, tokenizer_path: Path):
    pairs = make_pairs(12, scores=True)
    rows: list[Any] = [*pairs[:5], {"prompt": "p", "rejected": "x"}, "not a row", *pairs[5:]]
    source = tmp_path / "pairs.json"
    source.write_text(json.dumps(rows, indent=2))
    out = tmp_path / "json"
    result = run_tokenpo("prep", source, "-t", tokenizer_path, "-o", out)
    assert result.returncode == 0, result.stderr
    records = [(r["file"], r["row"], r["field"], r["reason"]) for r in quarantine_records(out)]
    assert records == [
        (str(source), 5, "chosen", "chosen is missing"),
        (str(source), 6, None, "element is not a JSON object"),
    ]
    manifest = tokenpo.Manifest.read(out)
    assert manifest.summary["rows_read"] == 14
    # The same pairs as JSON Lines give the same shards, but for where each row came from.
    lines = tokenpo.prep([write_rows(pairs, tmp_path / "p.jsonl")], tokenizer_path, tmp_path / "l")
    from_array, from_lines = prepared_rows(manifest), prepared_rows(lines)
    assert [row.pop("source_row") for row in from_array] == [*range(5), *range(7, 14)]
    assert [row.pop("source_row") for row in from_lines] == list(range(12))
    assert from_array == from_lines


def prepared_rows(manifest: tokenpo.Manifest) -> list[dict[str, Any]]:
    return [row for shard in manifest.shards for row in read_shard(shard.path).to_pylist()]


def tokenizer_saved_truncating(path: Path, max_length: int) -> Path:
    """The test tokenizer, its tokenizer.json set to truncate to ``max_length`` tokens (with a
    stride over the length, which the tokenizers crate would panic on) and to pad."""
    saved = json.loads(train_tokenizer().to_str())
    saved["truncation"] = {
        "direction": "Right",
        "max_length": max_length,
        "strategy": "LongestFirst",
        "stride": 4 * max_length,
    }
    saved["padding"] = {
        "strategy": {"Fixed": 4 * max_length},
        "direction": "Right",
        "pad_to_multiple_of": None,
        "pad_id": 0,
        "pad_type_id": 0,
        "pad_token": "<|im_end|>",
    }
    path.write_text(json.dumps(saved))
    return path


def test_truncation_and_padding_saved_in_tokenizer_json_are_not_applied(
    tmp_path: Path, tokenizer_path: Path
):
    # Applied, they would cut or pad every row without a word; prep has its own limits.
    saved = tokenizer_saved_truncating(tmp_path / "tokenizer.json", max_length=8)
    source = write_rows(make_pairs(6), tmp_path / "p.jsonl")
    plain = tokenpo.prep([source], tokenizer_path, tmp_path / "plain")
    result = run_tokenpo("prep", source, "-t", saved, "-o", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert quarantine_records(tmp_path / "out") == []
    columns = ("prompt_ids", "chosen_ids", "rejected_ids")
    ids = [
        [{key: row[key] for key in columns} for row in prepared_rows(manifest)]
        for manifest in (plain, tokenpo.Manifest.read(tmp_path / "out"))
    ]
    assert ids[1] == ids[0]
    assert max(len(row["chosen_ids"]) for row in ids[0]) > 8
