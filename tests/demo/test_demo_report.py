"""Report aggregation: mean ± std over seeds, the change over SFT, the files written."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tokenpo.demo import aggregate, collect_report, relative_change
from tokenpo.demo.report import METRICS, held_out_recall, summaries_to_dict
from tokenpo.synthetic.task import Annotation, to_json
from tokenpo_cli.demo import _COLUMNS, _print_report


def test_aggregate_gives_mean_and_sample_std_over_seeds() -> None:
    summaries = aggregate(
        {
            "dpo": [{"joint_f1": 0.4, "chosen_drift": None}, {"joint_f1": 0.6}],
            "sft": [{"joint_f1": 0.5, "chosen_drift": None}],
        }
    )
    joint = summaries["dpo"]["joint_f1"]
    assert joint.mean == pytest.approx(0.5)
    assert joint.std == pytest.approx(math.sqrt(0.02))
    assert joint.n == 2
    assert summaries["sft"]["joint_f1"].std == 0.0
    assert summaries["sft"]["chosen_drift"].mean is None
    assert summaries["sft"]["chosen_drift"].n == 0


def test_relative_change_is_none_without_a_baseline() -> None:
    assert relative_change(0.55, 0.5) == pytest.approx(0.1)
    assert relative_change(0.5, 0.0) is None
    assert relative_change(None, 0.5) is None


def test_held_out_recall_counts_exact_hits_on_held_out_gold_only() -> None:
    refill = Annotation("medication", "refill_request", "my zolpril")
    side = Annotation("medication", "side_effect", "the zolpril")
    visit = Annotation("scheduling", "cancel", "my appointment on May 3")
    rows = [
        {"gold": to_json([refill, side]), "held_out_spans": [True, False]},
        {"gold": to_json([visit, side]), "held_out_spans": [True, True]},
        {"gold": to_json([refill]), "held_out_spans": [True]},  # not evaluated
    ]
    wrong_span = Annotation("medication", "side_effect", "zolpril")
    completions = [to_json([wrong_span, refill]), '[{"code": "medication"']
    assert held_out_recall(rows, completions) == pytest.approx(1 / 3)
    assert held_out_recall(rows[:1], [to_json([side])]) == 0.0
    assert held_out_recall([{"gold": to_json([side]), "held_out_spans": [False]}], ["[]"]) is None
    assert held_out_recall([{"gold": to_json([refill])}], [to_json([refill])]) is None


def test_the_report_table_has_a_column_per_metric() -> None:
    assert tuple(_COLUMNS) == METRICS


def test_the_report_table_fits_80_columns_with_every_model_and_std(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    seed = {**dict.fromkeys(METRICS, 0.5), "relative_joint_f1": 0.04}
    per_seed = {
        "sft_continued": [seed],
        "tabpo": [{**seed, "chosen_drift": 0.8}, {**seed, "chosen_drift": 0.9}],
    }
    summaries = aggregate(per_seed, (*METRICS, "relative_joint_f1"))
    _print_report({"summaries": summaries_to_dict(summaries)})
    printed = capsys.readouterr().out
    assert max(len(line) for line in printed.splitlines()) <= 80, printed
    for cell in ("sft_continued", "+0.850", "±0.071", "+4.0%", "sample std"):
        assert cell in printed, printed
    assert "…" not in printed, printed


def test_report_cells_show_a_zero_std_over_seeds_but_none_for_one_seed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    seed = {**dict.fromkeys(METRICS, 0.5), "relative_joint_f1": 0.04}
    summaries = aggregate({"sft": [seed], "tabpo": [seed, seed, seed]}, METRICS)
    _print_report({"summaries": summaries_to_dict(summaries)})
    lines = capsys.readouterr().out.splitlines()
    sft = next(index for index, line in enumerate(lines) if line.lstrip().startswith("sft"))
    tabpo = next(index for index, line in enumerate(lines) if line.lstrip().startswith("tabpo"))
    assert "±" not in lines[sft + 1], lines
    assert lines[tabpo + 1].count("±0.000") == len(METRICS), lines


def _eval(path: Path, joint: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    score = {"f1": joint}
    structured = {
        "joint": score,
        "code": {"f1": 0.9},
        "subcode": {"f1": 0.8},
        "span": {"f1": 0.7},
        "json_validity": 1.0,
    }
    path.write_text(json.dumps({"structured": structured, "completions": ["[]"]}))


def test_collect_report_reads_the_evals_and_the_drift(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    gold = {"gold": to_json([Annotation("symptom", "new_symptom", "hives")])}
    (tmp_path / "data" / "test.jsonl").write_text(json.dumps({**gold, "held_out_spans": [True]}))
    _eval(tmp_path / "sft" / "test_eval.json", 0.5)
    _eval(tmp_path / "runs" / "tabpo-s0" / "test_eval.json", 0.6)
    _eval(tmp_path / "runs" / "tabpo-s1" / "test_eval.json", 0.5)
    metrics = [{"step": 1, "val/logps/chosen_drift": -1.0}, {"step": 2, "loss": 0.3}]
    metrics += [{"step": 3, "val/logps/chosen_drift": -2.5}]
    lines = "".join(json.dumps(record) + "\n" for record in metrics)
    (tmp_path / "runs" / "tabpo-s0" / "metrics.jsonl").write_text(lines)
    results = collect_report(tmp_path)
    tabpo = results["summaries"]["tabpo"]
    assert tabpo["joint_f1"]["mean"] == pytest.approx(0.55)
    assert tabpo["relative_joint_f1"]["mean"] == pytest.approx(0.1)
    assert tabpo["chosen_drift"] == {"mean": -2.5, "std": 0.0, "n": 1}
    assert tabpo["held_out_recall"] == {"mean": 0.0, "std": 0.0, "n": 2}
    assert results["summaries"]["sft"]["relative_joint_f1"]["mean"] == 0.0
    assert [seed["seed"] for seed in results["per_seed"]["tabpo"]] == [0.0, 1.0]
    written = json.loads((tmp_path / "report" / "results.json").read_text())
    assert written == results
