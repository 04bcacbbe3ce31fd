"""`tokenpo demo --quick` end to end: the artifacts of every stage, not the scores."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tokenpo.pipeline import load_pipeline, plan
from tokenpo.synthetic import SCHEMA, parse_annotations


def _demo(workdir: Path) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(
        [sys.executable, "-m", "tokenpo_cli", "demo", "--quick", "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr[-4000:]
    return completed


def _report_tables(completed: subprocess.CompletedProcess[str]) -> int:
    return (completed.stdout + completed.stderr).count("tokenpo demo: test split")


def _check_pairs(path: Path) -> int:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows
    for row in rows:
        rejected = row["rejected"][0]["content"]
        annotations = parse_annotations(rejected)
        assert annotations is not None, rejected
        assert all(SCHEMA.allows(item.code, item.subcode) for item in annotations), rejected
        assert rejected != row["chosen"][0]["content"]
        assert rejected != row["gold"]
    return len(rows)


@pytest.mark.slow
def test_quick_demo_writes_every_artifact_and_resumes(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    assert _report_tables(_demo(workdir)) == 1
    pipeline = load_pipeline(workdir / "demo.toml")
    for stage in pipeline.stages:
        for output in stage.outputs:
            assert output.exists(), (stage.name, output)
    assert _check_pairs(workdir / "pairs" / "train_pairs.jsonl") > 0
    assert _check_pairs(workdir / "pairs" / "val_pairs.jsonl") > 0
    assert json.loads((workdir / "pairs" / "confusion.json").read_text())["aligned"] >= 0
    stop = json.loads((workdir / "sft" / "sft_stop.json").read_text())
    assert stop["steps"] == 2
    assert 0.0 <= stop["joint_f1"] <= 1.0
    results = json.loads((workdir / "report" / "results.json").read_text())
    assert set(results["per_seed"]) == {"sft", "dpo", "tabpo"}
    for model, seeds in results["per_seed"].items():
        for seed in seeds:
            for metric in ("joint_f1", "code_f1", "subcode_f1", "span_f1", "json_validity"):
                assert 0.0 <= seed[metric] <= 1.0, (model, metric, seed[metric])
            # None when the few evaluated messages hold no held-out span.
            assert seed["held_out_recall"] is None or 0.0 <= seed["held_out_recall"] <= 1.0
            if model != "sft":
                assert math.isfinite(seed["chosen_drift"]), (model, seed)
    for image in ("joint_f1.png", "curves.png"):
        assert (workdir / "report" / image).read_bytes()[:4] == b"\x89PNG"

    rerun = _demo(workdir)
    assert _report_tables(rerun) == 1  # the report stage is skipped: the demo prints it
    assert all(stage_plan.action == "skip" for stage_plan in plan(pipeline))
    for stage in pipeline.stages:
        assert any(
            stage.name in line and "skipped" in line for line in rerun.stdout.splitlines()
        ), (
            stage.name,
            rerun.stdout,
        )
