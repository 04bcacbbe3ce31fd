"""`tokenpo eval` end to end in a subprocess, and a usage error. (Library errors, which
the app prints as one red line with exit 1, are tested in process: test_eval_evaluate.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from eval_kit import HELD_OUT_PAIRS, TEST_ROWS, eval_files

from cli_runner import run_tokenpo


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return eval_files(tmp_path_factory.mktemp("eval-cli"))


def rates(results: dict[str, Any]) -> list[float]:
    structured = results["structured"]
    values = [structured["json_validity"], structured["schema_validity"]]
    for level in ("code", "subcode", "span", "joint"):
        values += [structured[level][name] for name in ("precision", "recall", "f1")]
    return [*values, results["pairwise"]["accuracy"]]


def test_eval_end_to_end(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    result = run_tokenpo(
        "eval", "--model", files["model"], "--data", files["data"], "--pairs", files["pairs"],
        "--reference", files["reference"], "--out", out, "--max-new-tokens", "6", "--verbose",
        "--device", "cpu",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    results = json.loads(out.read_text())
    assert results["structured"]["examples"] == TEST_ROWS
    assert len(results["completions"]) == TEST_ROWS
    assert results["pairwise"]["pairs"] == HELD_OUT_PAIRS
    assert results["pairwise"]["reference"] == "model"
    assert all(0.0 <= value <= 1.0 for value in rates(results))
    for heading in ("JSON valid", "joint", "pairwise accuracy", "per code", "confusion"):
        assert heading in result.stdout
    assert f"results written to {out}" in result.stderr


def test_json_goes_to_stdout(files: dict[str, Path]) -> None:
    result = run_tokenpo(
        "eval", "-m", files["model"], "-d", files["data"], "--json", "--limit", "2",
        "--max-new-tokens", "4", "--device", "cpu",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout)
    assert results["structured"]["examples"] == 2
    assert results["pairwise"] is None


def test_several_models_in_one_process_match_one_at_a_time(
    files: dict[str, Path], tmp_path: Path
) -> None:
    common = ("-d", files["data"], "--limit", "3", "--max-new-tokens", "5", "--device", "cpu")
    outs = [tmp_path / "model.json", tmp_path / "reference.json"]
    both = run_tokenpo(
        "eval", "-m", files["model"], "-m", files["reference"], "--out", outs[0], "--out",
        outs[1], "--json", *common,
    )  # fmt: skip
    assert both.returncode == 0, both.stderr
    listed = json.loads(both.stdout)
    assert [result["model"] for result in listed] == [str(files["model"]), str(files["reference"])]
    for model, out, result in zip(("model", "reference"), outs, listed, strict=True):
        alone = run_tokenpo("eval", "-m", files[model], "--json", *common)
        assert alone.returncode == 0, alone.stderr
        expected = json.loads(alone.stdout)
        for written in (result, json.loads(out.read_text())):
            assert written["completions"] == expected["completions"]
            assert written["structured"] == expected["structured"]


def test_several_models_print_one_comparison_table_unless_verbose(files: dict[str, Path]) -> None:
    common = ("-d", files["data"], "--limit", "2", "--max-new-tokens", "3", "--device", "cpu")
    models = ("-m", files["model"], "-m", files["reference"])
    compared = run_tokenpo("eval", *models, *common)
    assert compared.returncode == 0, compared.stderr
    assert "2 models on" in compared.stdout
    assert "micro-F1" not in compared.stdout  # no per-model tables
    assert compared.stdout.count("joint F1") == 1
    verbose = run_tokenpo("eval", *models, *common, "--verbose")
    assert verbose.returncode == 0, verbose.stderr
    assert verbose.stdout.count("micro-F1") == 2
    assert "models on" not in verbose.stdout


def test_one_out_per_model_or_a_usage_error(files: dict[str, Path], tmp_path: Path) -> None:
    result = run_tokenpo(
        "eval", "-m", files["model"], "-m", files["reference"], "-d", files["data"],
        "--out", tmp_path / "only-one.json",
    )  # fmt: skip
    assert result.returncode == 2
    assert "one --out per --model" in result.stderr
    assert not (tmp_path / "only-one.json").exists()


def test_a_missing_model_directory_is_a_usage_error(files: dict[str, Path], tmp_path: Path) -> None:
    missing = tmp_path / "no-model"
    result = run_tokenpo("eval", "--model", missing, "--data", files["data"])
    assert result.returncode == 2
    assert "does not exist" in result.stderr
    assert missing.name in result.stderr
