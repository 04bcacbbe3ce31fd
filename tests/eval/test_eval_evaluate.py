"""`tokenpo.eval.evaluate` in process: reading the test set, and what is checked before any
generation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from eval_kit import HELD_OUT_PAIRS, TEST_ROWS, eval_files

from tokenpo.eval import EvalOptions, evaluate, generate_completions, score_annotations
from tokenpo.eval.evaluation import read_eval_rows
from tokenpo.exceptions import ConfigError, InputError, InvalidRowError, SchemaError
from tokenpo.models import load_causal_lm
from tokenpo.synthetic.task import SCHEMA, parse_annotations

CPU = EvalOptions(device="cpu", max_new_tokens=5)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return eval_files(tmp_path_factory.mktemp("evaluate"))


def test_evaluate_scores_the_models_own_completions(files: dict[str, Path]) -> None:
    stages: set[str] = set()
    result = evaluate(
        files["model"],
        files["data"],
        pairs=files["pairs"],
        reference=files["reference"],
        options=CPU,
        progress=lambda stage, done, total: stages.add(stage),
    )
    rows = read_eval_rows(files["data"])
    completions = generate_completions(
        load_causal_lm(files["model"]),
        files["model"],
        [row.prompt for row in rows],
        max_new_tokens=CPU.max_new_tokens,
        batch_size=1,
    )
    assert result.completions == completions
    expected = score_annotations(
        [row.gold for row in rows], [parse_annotations(text) for text in completions], schema=SCHEMA
    )
    assert result.structured == expected
    assert result.pairwise is not None
    assert result.pairwise.pairs == HELD_OUT_PAIRS
    assert stages == {"generate", "pairwise"}
    json.dumps(result.to_dict())


def test_jsonl_and_parquet_read_the_same_rows(files: dict[str, Path], tmp_path: Path) -> None:
    records = [json.loads(line) for line in files["data"].read_text().splitlines()]
    parquet = tmp_path / "test.parquet"
    pq.write_table(pa.Table.from_pylist(records), parquet)
    assert read_eval_rows(parquet) == read_eval_rows(files["data"])
    assert len(read_eval_rows(files["data"])) == TEST_ROWS
    limited = read_eval_rows(parquet, EvalOptions(limit=2))
    assert limited == read_eval_rows(files["data"])[:2]
    renamed = tmp_path / "renamed.jsonl"
    lines = (json.dumps({"p": record["prompt"], "g": record["gold"]}) for record in records)
    renamed.write_text("".join(line + "\n" for line in lines))
    options = EvalOptions(prompt_column="p", gold_column="g")
    assert read_eval_rows(renamed, options) == read_eval_rows(files["data"])


def test_bad_test_sets_name_the_row(tmp_path: Path) -> None:
    path = tmp_path / "test.jsonl"
    prompt = [{"role": "user", "content": "hi"}]
    path.write_text(json.dumps({"prompt": prompt, "gold": "[]"}) + "\n{oops\n")
    with pytest.raises(InputError, match=r"line 2 is not valid JSON"):
        read_eval_rows(path)
    path.write_text(json.dumps({"prompt": prompt, "gold": '[{"code": "x"}]'}) + "\n")
    with pytest.raises(InvalidRowError, match=r"row 0: 'gold' is not a JSON list of"):
        read_eval_rows(path)
    path.write_text(json.dumps({"prompt": prompt, "answer": "[]"}) + "\n")
    with pytest.raises(SchemaError, match=r"column 'gold' missing; columns: answer, prompt"):
        read_eval_rows(path)
    csv = tmp_path / "test.csv"
    csv.write_text("prompt,gold\n")
    with pytest.raises(InputError, match=r"must be \.jsonl or \.parquet, got \.csv"):
        read_eval_rows(csv)


def test_pairs_are_checked_before_generating(files: dict[str, Path], tmp_path: Path) -> None:
    def fail(stage: str, done: int, total: int) -> None:
        raise AssertionError(f"{stage} started")

    with pytest.raises(ConfigError, match="the pairs hold no reference log-probs"):
        evaluate(files["model"], files["data"], pairs=files["pairs"], options=CPU, progress=fail)
    other = tmp_path / "other-model"
    shutil.copytree(files["model"], other)
    with (other / "tokenizer.json").open("a") as tokenizer:
        tokenizer.write("\n")  # the same tokenizer, but not the bytes prep hashed
    with pytest.raises(InputError, match="the shards were tokenized with another tokenizer"):
        evaluate(other, files["data"], pairs=files["pairs"], options=CPU, progress=fail)


def test_a_loaded_model_needs_a_tokenizer(files: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="tokenizer: required when the model is given as a"):
        evaluate(load_causal_lm(files["model"]), files["data"], options=CPU)


def test_options_name_the_field() -> None:
    with pytest.raises(ConfigError, match="max_new_tokens: must be at least 1, got 0"):
        EvalOptions(max_new_tokens=0)
    with pytest.raises(ConfigError, match="device: must be 'auto', 'cpu' or 'cuda'"):
        EvalOptions(device="tpu")  # type: ignore[arg-type]
