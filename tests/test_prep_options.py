"""Prep's options, checked before any work with a message naming the option: in
`PrepOptions` and on the `tokenpo prep` command line (exit 2, as for any bad usage)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cli_runner import run_tokenpo
from tokenpo import ConfigError, PrepOptions


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"shard_rows": -1}, "shard_rows: must be at least 1, got -1"),
        ({"batch_rows": 0}, "batch_rows: must be at least 1, got 0"),
        ({"max_edit_distance": -1}, "max_edit_distance: must be at least 0, got -1"),
        ({"max_len": 8, "max_prompt_len": -1}, "max_prompt_len: must be at least 0, got -1"),
        ({"drop_over_length": True}, "drop_over_length: needs max_len"),
    ],
)
def test_prep_options_name_the_option_at_fault(options: dict[str, Any], message: str):
    with pytest.raises(ConfigError, match=f"^{message}"):
        PrepOptions(**options)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--shard-rows", "-1"], "Invalid value for '--shard-rows'"),
        (["--max-edit-distance", "-1"], "Invalid value for '--max-edit-distance'"),
        (["--max-len", "8", "--max-prompt-len", "-1"], "Invalid value for '--max-prompt-len'"),
        (["--drop-over-length"], "drop_over_length: needs max_len"),
        (["--column-map", "chosen=a,chosen=b"], "column 'chosen' is mapped twice"),
    ],
)
def test_bad_prep_options_are_usage_errors(tmp_path: Path, arguments: list[str], message: str):
    result = run_tokenpo(
        "prep", tmp_path / "in.jsonl", "-t", tmp_path / "tokenizer.json", "-o", tmp_path / "o",
        *arguments,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "o").exists()
