"""Stage 5 of the demo: every model's test eval, aggregated over seeds into a results JSON
(the CLI draws its table and bar chart, so matplotlib stays in the CLI)."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenpo.demo.methods import method_names
from tokenpo.synthetic import parse_annotations

__all__ = [
    "METRICS",
    "Summary",
    "aggregate",
    "chosen_drift",
    "collect_report",
    "held_out_recall",
    "relative_change",
    "summaries_to_dict",
    "summarize",
]

METRICS = (
    "joint_f1",
    "code_f1",
    "subcode_f1",
    "span_f1",
    "held_out_recall",
    "json_validity",
    "chosen_drift",
)
"""The report's columns, per model and seed."""


def held_out_recall(rows: Sequence[Mapping[str, Any]], completions: Sequence[str]) -> float | None:
    """The share of gold annotations whose span holds held-out slot values (the rows'
    ``held_out_spans`` flags) that a completion got exactly right: code, subcode and span.
    ``completions`` answer the first rows in order. None when no such annotation is scored
    (rows without flags, as in data from before the flags, have none)."""
    found = total = 0
    for row, completion in zip(rows, completions, strict=False):
        flags = row.get("held_out_spans")
        if flags is None:
            continue
        predicted = set(parse_annotations(completion) or ())
        gold = parse_annotations(row["gold"]) or []
        for annotation, held_out in zip(gold, flags, strict=True):
            if held_out:
                total += 1
                found += annotation in predicted
    return found / total if total else None


def chosen_drift(run_dir: Path) -> float | None:
    """The last ``val/logps/chosen_drift`` of ``run_dir/metrics.jsonl``; None if never logged."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    last = None
    for line in path.read_text().splitlines():
        value = json.loads(line).get("val/logps/chosen_drift")
        if isinstance(value, int | float):
            last = float(value)
    return last


@dataclass(frozen=True, kw_only=True, slots=True)
class Summary:
    """One metric of one model over its seeds."""

    mean: float | None
    """None when no seed has the metric."""
    std: float | None
    """Sample standard deviation; 0 with one seed, None with none."""
    n: int
    """Seeds with the metric."""


def summarize(values: Sequence[float]) -> Summary:
    """Mean and sample standard deviation (0 for one value, None for none)."""
    mean = statistics.fmean(values) if values else None
    std = statistics.stdev(values) if len(values) > 1 else (0.0 if values else None)
    return Summary(mean=mean, std=std, n=len(values))


def aggregate(
    results: Mapping[str, Sequence[Mapping[str, float | None]]],
    metrics: Sequence[str] = METRICS,
) -> dict[str, dict[str, Summary]]:
    """``model -> [metrics per seed]`` to ``model -> metric -> mean ± std`` (seeds where
    a metric is None or absent are left out of its mean)."""
    return {
        model: {
            metric: summarize([float(v) for seed in seeds if (v := seed.get(metric)) is not None])
            for metric in metrics
        }
        for model, seeds in results.items()
    }


def relative_change(value: float | None, baseline: float | None) -> float | None:
    """``(value - baseline) / baseline``; None when either is missing or the baseline is 0."""
    if value is None or baseline is None or baseline == 0 or math.isnan(baseline):
        return None
    return (value - baseline) / baseline


def summaries_to_dict(summaries: Mapping[str, Mapping[str, Summary]]) -> dict[str, Any]:
    """Plain JSON values of :func:`aggregate`'s result."""
    return {
        model: {
            metric: {"mean": item.mean, "std": item.std, "n": item.n}
            for metric, item in metrics.items()
        }
        for model, metrics in summaries.items()
    }


def _metrics_of(
    eval_result: Mapping[str, Any], run_dir: Path | None, test_rows: Sequence[Mapping[str, Any]]
) -> dict[str, float | None]:
    structured = eval_result["structured"]
    return {
        "joint_f1": structured["joint"]["f1"],
        "code_f1": structured["code"]["f1"],
        "subcode_f1": structured["subcode"]["f1"],
        "span_f1": structured["span"]["f1"],
        "held_out_recall": held_out_recall(test_rows, eval_result["completions"]),
        "json_validity": structured["json_validity"],
        "chosen_drift": None if run_dir is None else chosen_drift(run_dir),
    }


def collect_report(workdir: Path) -> dict[str, Any]:
    """Reads the test evals, ``workdir/sft/test_eval.json`` and
    ``workdir/runs/{method}-s{seed}/test_eval.json``, the test split ``workdir/data/test.jsonl``
    and the runs' ``metrics.jsonl``; writes ``workdir/report/results.json`` (per seed and
    mean ± std, with the relative change of joint F1 over SFT)."""
    test_lines = (workdir / "data" / "test.jsonl").read_text().splitlines()
    test_rows = [json.loads(line) for line in test_lines]
    per_seed: dict[str, list[dict[str, float | None]]] = {}
    paths = [workdir / "sft" / "test_eval.json", *sorted(workdir.glob("runs/*/test_eval.json"))]
    for path in paths:
        if not path.is_file():
            continue
        name, _, seed = path.parent.name.rpartition("-s")
        run_dir = path.parent if name else None
        metrics = _metrics_of(json.loads(path.read_text()), run_dir, test_rows)
        seed_value = float(seed) if name else None
        per_seed.setdefault(name or "sft", []).append({**metrics, "seed": seed_value})
    # The SFT model first, then the methods in the table's order, each by seed.
    order = {model: index for index, model in enumerate(["sft", *method_names()])}
    per_seed = {
        model: sorted(per_seed[model], key=lambda seed: seed["seed"] or 0.0)
        for model in sorted(per_seed, key=lambda model: (order.get(model, len(order)), model))
    }
    baseline = per_seed.get("sft", [{}])[0].get("joint_f1")
    for seeds in per_seed.values():
        for seed_metrics in seeds:
            seed_metrics["relative_joint_f1"] = relative_change(seed_metrics["joint_f1"], baseline)
    summaries = aggregate(per_seed, (*METRICS, "relative_joint_f1"))
    report = workdir / "report"
    report.mkdir(parents=True, exist_ok=True)
    results = {"per_seed": per_seed, "summaries": summaries_to_dict(summaries)}
    (report / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results
