"""Running a pipeline: each stage a subprocess in the workdir, in order, until one fails."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any, Literal

from tokenpo.exceptions import ConfigError, TokenpoError
from tokenpo.pipeline.plan import StagePlan, plan_with_state, selected_stages
from tokenpo.pipeline.spec import Pipeline
from tokenpo.pipeline.state import PipelineState, StageRecord, now

__all__ = ["PipelineSummary", "StageOutput", "StageResult", "run_pipeline"]

StageOutput = Literal["inherit", "stderr", "capture"]
"""Where a stage's output goes. inherit: stdout to stdout, stderr to stderr; stderr: both to
stderr (keeps stdout for a result such as JSON); capture: both kept, and returned if it fails."""

_STDERR_FD = 2
_CAPTURED_LINES = 200
"""A failed stage's captured output keeps this many of its last lines."""


@dataclass(frozen=True, kw_only=True, slots=True)
class StageResult:
    """What became of one stage."""

    name: str
    """The stage's name."""
    status: Literal["ran", "skipped", "failed", "not run"]
    """not run: an earlier stage failed, or the pipeline was stopped, before its turn."""
    reason: str
    """Why it ran or was skipped (the plan's reason), or why it was not run."""
    command: tuple[str, ...]
    """The command as written, resume arguments included when they were appended."""
    resumed: bool = False
    """The resume arguments were appended: the last attempt had not completed."""
    seconds: float | None = None
    """How long it ran; None when it did not run."""
    exit_code: int | None = None
    """The command's exit status (negative: killed by that signal); None if it did not start."""
    error: str | None = None
    """Why it failed, e.g. ``exited with code 3``."""
    output: str | None = None
    """The last lines of its output, when captured and it failed."""


@dataclass(frozen=True, kw_only=True, slots=True)
class PipelineSummary:
    """The outcome of :func:`run_pipeline`, a result per stage in order."""

    pipeline: str
    """The pipeline's name."""
    workdir: Path
    """Where the stages ran."""
    stages: tuple[StageResult, ...]
    """One per stage of the pipeline."""
    stopped: str | None = None
    """Set when a signal stopped the run between stages, e.g. ``stopped by SIGTERM``."""

    @property
    def failed(self) -> StageResult | None:
        """The stage that failed, if one did."""
        return next((result for result in self.stages if result.status == "failed"), None)

    @property
    def ok(self) -> bool:
        """No stage failed and the run was not stopped."""
        return self.failed is None and self.stopped is None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: the figures above, with the failed stage's name."""
        failed = self.failed
        return {
            "pipeline": self.pipeline,
            "workdir": str(self.workdir),
            "ok": self.ok,
            "failed_stage": None if failed is None else failed.name,
            "stopped": self.stopped,
            "stages": [
                {
                    "name": result.name,
                    "status": result.status,
                    "reason": result.reason,
                    "seconds": result.seconds,
                    "exit_code": result.exit_code,
                    "error": result.error,
                    "resumed": result.resumed,
                    "command": list(result.command),
                }
                for result in self.stages
            ],
        }


def run_pipeline(
    pipeline: Pipeline,
    *,
    force: bool = False,
    from_stage: str | None = None,
    only: str | None = None,
    stage_output: StageOutput = "inherit",
    on_stage_start: Callable[[StagePlan], None] | None = None,
    on_stage_end: Callable[[StageResult], None] | None = None,
) -> PipelineSummary:
    """Run the stages that :func:`~tokenpo.pipeline.plan` says must run, in order.

    Each runs in ``pipeline.workdir`` (created if missing). A stage fails when its command
    exits non-zero, cannot start, lacks an input, or exits 0 without all its outputs; the
    stages after it are then not run. A SIGTERM received while a stage runs (in the main
    thread) is passed to the stage, and no stage starts after it.

    Args:
        force, from_stage, only: As for :func:`~tokenpo.pipeline.plan`.
        stage_output: Where each stage's output goes (:data:`StageOutput`).
        on_stage_start: Called with a stage's plan just before it runs.
        on_stage_end: Called with each stage's result, skipped stages included, in order.

    Raises:
        ConfigError: a stage name that does not exist, or a workdir that cannot be created.
        TokenpoError: another run holds the workdir.
        InputError: the state file is not one tokenpo wrote.
    """
    selected_stages(pipeline, from_stage, only)  # bad names fail before the workdir is made
    try:
        pipeline.workdir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"{pipeline.file}: [pipeline] workdir: cannot create {pipeline.workdir}: "
            f"{error.strerror}"
        ) from error
    with _exclusive(pipeline.workdir / ".tokenpo-pipeline.lock"), _SigtermWatch() as sigterm:
        state = PipelineState(pipeline.state_file, pipeline.name)
        plans = plan_with_state(pipeline, state, force=force, from_stage=from_stage, only=only)
        results: list[StageResult] = []
        stop_reason: str | None = None
        for stage_plan in plans:
            if stop_reason is None and sigterm.received:
                stop_reason = "stopped by SIGTERM"
            if stop_reason is not None:
                result = StageResult(
                    name=stage_plan.stage.name,
                    status="not run",
                    reason=stop_reason,
                    command=stage_plan.command,
                )
            elif stage_plan.action == "skip":
                result = StageResult(
                    name=stage_plan.stage.name,
                    status="skipped",
                    reason=stage_plan.reason,
                    command=stage_plan.command,
                )
            else:
                if on_stage_start is not None:
                    on_stage_start(stage_plan)
                result = _run_stage(pipeline, stage_plan, state, stage_output, sigterm)
                if result.status == "failed":
                    stop_reason = f"{result.name} failed"
            results.append(result)
            if on_stage_end is not None:
                on_stage_end(result)
    return PipelineSummary(
        pipeline=pipeline.name,
        workdir=pipeline.workdir,
        stages=tuple(results),
        stopped="stopped by SIGTERM" if sigterm.received else None,
    )


def _run_stage(
    pipeline: Pipeline,
    stage_plan: StagePlan,
    state: PipelineState,
    stage_output: StageOutput,
    sigterm: _SigtermWatch,
) -> StageResult:
    stage = stage_plan.stage
    command = stage_plan.command

    def failed(error: str, **details: Any) -> StageResult:
        return StageResult(
            name=stage.name,
            status="failed",
            reason=stage_plan.reason,
            command=command,
            resumed=stage_plan.resume,
            error=error,
            **details,
        )

    missing = [path for path in stage.inputs if not path.exists()]
    if missing:
        return failed(f"input missing: {pipeline.shown(missing[0])}")
    try:
        argv = _argv(command)
    except FileNotFoundError as error:
        return failed(str(error))
    started_at = now()
    state.put(
        stage.name,
        StageRecord(
            status="started",
            definition=stage.definition,
            command=command,
            started_at=started_at,
        ),
    )
    start = time.monotonic()
    with _output_files(stage_output) as (stdout, stderr, captured):
        try:
            process = subprocess.Popen(
                argv, cwd=pipeline.workdir, stdout=stdout, stderr=stderr, env=_environment()
            )
        except OSError as error:
            exit_code = None
            error_message: str | None = f"cannot start {argv[0]}: {error.strerror}"
        else:
            with process:
                exit_code = sigterm.forward_while_waiting(process)
            error_message = _exit_error(pipeline, stage.name, exit_code, stage.outputs)
        output = _tail(captured) if captured is not None and error_message else None
    seconds = time.monotonic() - start
    state.put(
        stage.name,
        StageRecord(
            status="failed" if error_message else "completed",
            definition=stage.definition,
            command=command,
            started_at=started_at,
            finished_at=now(),
            seconds=round(seconds, 3),
            exit_code=exit_code,
        ),
    )
    if error_message:
        return failed(error_message, seconds=seconds, exit_code=exit_code, output=output)
    return StageResult(
        name=stage.name,
        status="ran",
        reason=stage_plan.reason,
        command=command,
        resumed=stage_plan.resume,
        seconds=seconds,
        exit_code=exit_code,
    )


def _exit_error(
    pipeline: Pipeline, name: str, exit_code: int, outputs: tuple[Path, ...]
) -> str | None:
    if exit_code < 0:
        return f"killed by {signal.Signals(-exit_code).name}"
    if exit_code > 0:
        return f"exited with code {exit_code}"
    for path in outputs:
        if not path.exists():
            return f"stage {name} exited 0 but did not produce {pipeline.shown(path)}"
    return None


def _argv(command: tuple[str, ...]) -> list[str]:
    """The command to start: ``tokenpo`` and ``python`` mean this interpreter."""
    program, *arguments = command
    if program == "tokenpo":
        return [sys.executable, "-m", "tokenpo_cli", *arguments]
    if program == "python":
        return [sys.executable, *arguments]
    if os.sep in program:  # a path: Popen looks it up relative to the workdir
        return list(command)
    found = shutil.which(program)
    if found is None:
        raise FileNotFoundError(f"{program}: command not found on PATH")
    return [found, *arguments]


def _environment() -> dict[str, str]:
    # Python stages write their output as they go, even to a pipe or a CI log.
    return {"PYTHONUNBUFFERED": "1", **os.environ}


@contextmanager
def _output_files(
    stage_output: StageOutput,
) -> Iterator[tuple[int | IO[bytes] | None, int | None, IO[bytes] | None]]:
    """(stdout, stderr, captured) for Popen: the captured file when output is captured."""
    if stage_output == "capture":
        with tempfile.TemporaryFile() as captured:
            yield captured, subprocess.STDOUT, captured
        return
    # What this process printed so far comes before the stage's output.
    sys.stdout.flush()
    sys.stderr.flush()
    yield (None if stage_output == "inherit" else _STDERR_FD), None, None


def _tail(captured: IO[bytes]) -> str:
    captured.seek(0)
    lines = captured.read().decode("utf-8", errors="replace").splitlines()
    shown = lines[-_CAPTURED_LINES:]
    if len(lines) > len(shown):
        shown.insert(0, f"[{len(lines) - len(shown)} earlier lines not shown]")
    return "\n".join(shown)


@contextmanager
def _exclusive(lock_file: Path) -> Iterator[None]:
    """Holds an exclusive lock on ``lock_file``: one run at a time in a workdir."""
    with lock_file.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TokenpoError(
                f"another pipeline run is using {lock_file.parent} (it holds {lock_file.name})"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(slots=True)
class _SigtermWatch:
    """Passes a SIGTERM on to the running stage and remembers it, so no later stage starts.

    A scheduler that preempts a job may signal only the process it started; the stage then
    gets its chance to checkpoint. Signal handlers can only be set in the main thread;
    elsewhere SIGTERM keeps its usual effect.
    """

    received: bool = False
    _process: subprocess.Popen[bytes] | None = None
    _installed: bool = False
    _previous: Any = field(default=None, repr=False)

    def __enter__(self) -> _SigtermWatch:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._installed:
            # None: the handler was set outside Python; the default is the nearest we can restore.
            signal.signal(signal.SIGTERM, self._previous or signal.SIG_DFL)

    def forward_while_waiting(self, process: subprocess.Popen[bytes]) -> int:
        """Waits for ``process``, passing it any SIGTERM; its exit status."""
        self._process = process
        try:
            return process.wait()
        finally:
            self._process = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = True
        if self._process is not None:
            self._process.send_signal(signum)
