"""metrics.jsonl on resume: records past the resumed step dropped, the rewrite atomic."""

from __future__ import annotations

import json
from pathlib import Path

from tokenpo.train.metrics import MetricsLog, read_metrics


def _log_with_steps(path: Path, steps: range) -> None:
    path.write_text(
        "".join(json.dumps({"step": step, "loss": 1.0 / step}) + "\n" for step in steps)
    )


def test_a_resumed_log_keeps_the_records_up_to_the_resumed_step(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    _log_with_steps(path, range(1, 8))
    log = MetricsLog(path, resume_step=4)
    log.write({"step": 5, "loss": 0.5})
    assert [record["step"] for record in read_metrics(path)] == [1, 2, 3, 4, 5]
    assert sorted(item.name for item in tmp_path.iterdir()) == ["metrics.jsonl"]


def test_a_fresh_log_starts_empty_and_a_torn_line_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    _log_with_steps(path, range(1, 4))
    path.write_text(path.read_text() + '{"step": 4, "lo')  # killed mid-write
    MetricsLog(path, resume_step=9)
    assert [record["step"] for record in read_metrics(path)] == [1, 2, 3]
    MetricsLog(path, resume_step=None)
    assert path.read_text() == ""
