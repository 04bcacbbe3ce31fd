"""Where metrics go: ``metrics.jsonl`` (one JSON object per logged step) and memory figures."""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

__all__ = ["MetricsLog", "peak_memory_gib", "read_metrics"]

if TYPE_CHECKING:
    import torch


class MetricsLog:
    """Appends records to ``metrics.jsonl``. On resume, records past the resumed step are
    dropped first, so a killed and resumed run leaves the trace an uninterrupted one would."""

    def __init__(self, path: Path, *, resume_step: int | None) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = [] if resume_step is None else _records_up_to(path, resume_step)
        # Written aside and renamed, so a kill mid-rewrite leaves the old records intact.
        staged = path.with_name(path.name + ".tmp")
        staged.write_text("".join(json.dumps(record) + "\n" for record in kept))
        staged.replace(path)

    def write(self, record: dict[str, Any]) -> None:
        """Appends ``record`` and flushes it."""
        with self.path.open("a") as file:
            file.write(json.dumps(record) + "\n")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl``; a torn last line (a kill mid-write) is skipped."""
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _records_up_to(path: Path, step: int) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [record for record in read_metrics(path) if int(record.get("step", 0)) <= step]


def peak_memory_gib(device: torch.device) -> float:
    """Peak memory of this process so far: allocated CUDA memory on GPU, else peak RSS."""
    # Imported here so that reading metrics (tokenpo plot) does not load torch.
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    return peak / (2**30 if sys.platform == "darwin" else 2**20)
