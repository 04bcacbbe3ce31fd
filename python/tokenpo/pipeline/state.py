"""The state file, ``{workdir}/.tokenpo-pipeline.json``: what each stage last did.

::

    {
      "format": 1,
      "pipeline": "demo",
      "stages": {
        "prep": {"status": "completed", "definition": "<sha256>", "command": ["tokenpo", ...],
                 "started_at": "2025-01-01T12:00:00+00:00", "finished_at": "...",
                 "seconds": 1.5, "exit_code": 0},
        "train": {"status": "started", "definition": "<sha256>", "command": [...],
                  "started_at": "...", "finished_at": null, "seconds": null, "exit_code": null}
      }
    }

A stage's entry is replaced with ``started`` before it runs and with ``completed`` or ``failed``
when it ends, each time by writing a temporary file and renaming it over the old one, so a kill
leaves the old state or the new, never half a file. ``started`` left behind means the run was
killed during that stage.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

from tokenpo.exceptions import InputError

__all__ = ["PipelineState", "StageRecord", "StageStatus"]

StageStatus = Literal["started", "completed", "failed"]
_FORMAT = 1


@dataclass(frozen=True, kw_only=True, slots=True)
class StageRecord:
    """One stage's entry in the state file."""

    status: StageStatus
    """started: running, or killed while running; completed: exited 0 with its outputs."""
    definition: str
    """:attr:`Stage.definition` of the attempt: a different one means the stage changed since."""
    command: tuple[str, ...]
    """The command as written, resume arguments included when they were appended."""
    started_at: str
    """When the attempt started, ISO 8601 in UTC."""
    finished_at: str | None = None
    """When it ended; None while started."""
    seconds: float | None = None
    """How long it ran; None while started."""
    exit_code: int | None = None
    """The command's exit status (negative: killed by that signal); None if it did not start."""

    @property
    def incomplete(self) -> bool:
        """The attempt started but did not complete: killed, failed, or missing its outputs."""
        return self.status != "completed"


def now() -> str:
    """The current time as the state file writes it."""
    return datetime.now(UTC).isoformat(timespec="seconds")


class PipelineState:
    """The state file's stages, read once and written through on every change."""

    def __init__(self, path: Path, pipeline: str) -> None:
        self.path = path
        self.pipeline = pipeline
        self._records = _read(path)

    def get(self, stage: str) -> StageRecord | None:
        """The stage's last record, or None if it never ran in this workdir."""
        return self._records.get(stage)

    def put(self, stage: str, record: StageRecord) -> None:
        """Replace the stage's record and write the file atomically."""
        self._records[stage] = record
        document = {
            "format": _FORMAT,
            "pipeline": self.pipeline,
            "stages": {
                name: {**asdict(entry), "command": list(entry.command)}
                for name, entry in self._records.items()
            },
        }
        fd, temporary = tempfile.mkstemp(
            dir=self.path.parent, prefix=f"{self.path.name}.", suffix=".tmp"
        )
        try:
            os.fchmod(fd, 0o644)  # mkstemp's 0o600 would hide the state from the job's group
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                json.dump(document, file, indent=2)
                file.write("\n")
                file.flush()
                os.fsync(file.fileno())
            Path(temporary).replace(self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def _read(path: Path) -> dict[str, StageRecord]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise InputError(f"{path}: cannot read: {error.strerror}", file=str(path)) from error
    try:
        document = json.loads(text)
        if document.get("format") != _FORMAT:
            raise ValueError(f"format {document.get('format')!r}, expected {_FORMAT}")
        return {name: _record(entry) for name, entry in document["stages"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise InputError(
            f"{path}: not a pipeline state file ({error}); delete it to run every stage again",
            file=str(path),
        ) from error


def _record(entry: dict[str, Any]) -> StageRecord:
    if entry["status"] not in get_args(StageStatus):
        raise ValueError(f"unknown status {entry['status']!r}")
    return StageRecord(**{**entry, "command": tuple(entry["command"])})
