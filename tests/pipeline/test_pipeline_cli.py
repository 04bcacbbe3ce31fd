"""`tokenpo pipeline run|show`, run as the real command: summary, JSON, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pipeline_kit import stage, write_pipeline

from cli_runner import run_tokenpo
from prep_data import make_pairs, train_tokenizer, write_rows

ANSI_ESCAPE = "\x1b["


@pytest.mark.slow
def test_a_tokenpo_stage_runs_then_the_rerun_skips_everything(tmp_path: Path):
    train_tokenizer().save(str(tmp_path / "tokenizer.json"))
    write_rows(make_pairs(12), tmp_path / "pairs.jsonl")
    manifest = "json.loads(pathlib.Path('shards/manifest.json').read_text())"
    count = f"import json; pathlib.Path('n').write_text(str({manifest}['summary']['pairs']))"
    path = write_pipeline(
        tmp_path,
        [
            {
                "name": "prep",
                "run": [
                    "tokenpo",
                    "prep",
                    "{pipeline_dir}/pairs.jsonl",
                    "-t",
                    "{tok}",
                    "-o",
                    "shards",
                ],
                "inputs": ["{pipeline_dir}/pairs.jsonl", "{tok}"],
                "outputs": ["shards/manifest.json"],
            },
            stage("count", inputs=("shards/manifest.json",), outputs=("count.txt",), code=count),
        ],
        variables={"tok": "{pipeline_dir}/tokenizer.json"},
    )
    first = run_tokenpo("pipeline", "run", path)
    assert first.returncode == 0, first.stderr
    assert ANSI_ESCAPE not in first.stdout + first.stderr
    rows = {line.split("│")[1].strip(): line for line in first.stdout.splitlines() if "│" in line}
    assert "ran" in rows["prep"]
    assert "output missing: shards/manifest.json" in rows["prep"]
    assert "input from prep, which runs: shards/manifest.json" in rows["count"]
    assert "▶ prep (output missing: shards/manifest.json)" in first.stderr
    assert (tmp_path / "work" / "n").read_text() == "12"

    again = run_tokenpo("pipeline", "run", path, "--json")
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["ok"] is True
    assert summary["failed_stage"] is None
    assert [(s["name"], s["status"], s["reason"]) for s in summary["stages"]] == [
        ("prep", "skipped", "up to date"),
        ("count", "skipped", "up to date"),
    ]


def test_a_failing_stage_exits_1_and_quiet_shows_only_its_output(tmp_path: Path):
    path = write_pipeline(
        tmp_path,
        [
            stage("fine", outputs=("fine.txt",), code="print('all is well')"),
            stage("broken", code="print('why it broke', file=sys.stderr); sys.exit(3)"),
            stage("after"),
        ],
    )
    result = run_tokenpo("pipeline", "run", path, "--quiet")
    assert result.returncode == 1
    assert ANSI_ESCAPE not in result.stdout + result.stderr
    assert "all is well" not in result.stdout + result.stderr
    assert "output of broken:\nwhy it broke\n" in result.stderr
    assert "error: stage broken failed: exited with code 3" in result.stderr
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if "│" in line}
    assert "failed" in rows["broken"]
    assert "exited with code 3" in rows["broken"]
    assert "not run" in rows["after"]
    assert "broken failed" in rows["after"]


def test_the_root_quiet_option_leaves_the_summary_and_drops_the_notes(tmp_path: Path):
    path = write_pipeline(tmp_path, [stage("fine", outputs=("fine.txt",), code="print('ok')")])
    loud = run_tokenpo("pipeline", "run", path, "--force")
    quiet = run_tokenpo("--quiet", "pipeline", "run", path, "--force")
    assert loud.returncode == quiet.returncode == 0, quiet.stderr
    assert "▶ fine" in loud.stderr
    assert "✓ fine" in loud.stderr
    assert "▶" not in quiet.stderr
    assert "✓" not in quiet.stderr
    assert "fine" in quiet.stdout  # the summary table is a result, printed either way


def test_a_bad_file_exits_2_naming_the_file_stage_and_key(tmp_path: Path):
    path = write_pipeline(tmp_path, [{"name": "train", "run": ["echo"], "ouputs": ["x"]}])
    result = run_tokenpo("pipeline", "run", path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(
        f"error: {path}: stage 'train': unknown key 'ouputs' (did you mean 'outputs'?)"
    )


def test_show_prints_the_resolved_stages_and_what_would_run(tmp_path: Path):
    path = write_pipeline(
        tmp_path,
        [
            stage("make", outputs=("{name}.txt",)),
            {**stage("use", inputs=("{name}.txt",), outputs=("used.txt",)), "resume": ["-r"]},
        ],
        variables={"name": "data"},
    )
    result = run_tokenpo("pipeline", "show", path, "--var", "name=other")
    assert result.returncode == 0, result.stderr
    assert ANSI_ESCAPE not in result.stdout
    lines = result.stdout.splitlines()
    assert lines[0] == f"pipeline test  {path}"
    assert lines[1] == f"workdir  {tmp_path / 'work'}"
    assert lines[2] == "vars     name=other"
    assert "make: would run (output missing: other.txt)" in lines
    assert "use: would run (input from make, which runs: other.txt)" in lines
    assert "  inputs   other.txt" in lines
    assert "  outputs  used.txt" in lines
    assert "  resume   -r" in lines
    assert any(line.startswith("  run      python -c ") for line in lines)
    assert not (tmp_path / "work").exists(), "show changes nothing"
