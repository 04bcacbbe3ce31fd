"""Which stages run and why: the skip rule.

A stage is skipped ("up to date") when all of these hold:

- it has outputs, and every one exists;
- no input is newer than the oldest output (a directory counts as its newest entry, itself
  and everything under it);
- its :attr:`~tokenpo.pipeline.Stage.definition` equals the one recorded when it last
  completed, and its last attempt did complete;
- no earlier stage that runs in this invocation writes one of its inputs (an output equal to
  an input, inside an input directory, or holding the input). Such a stage will rewrite the
  input, so the plan knows before the run what the mtimes will say after it.

Otherwise it runs, and the plan says why, checking in this order: forced, input from a stage
that runs, input missing (the stage will fail without starting), the last attempt did not
complete (``resume`` arguments appended), no outputs declared, output missing, input newer,
no completed run recorded, definition changed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tokenpo.exceptions import ConfigError
from tokenpo.pipeline.spec import Pipeline, Stage
from tokenpo.pipeline.state import PipelineState, StageRecord

__all__ = ["StagePlan", "plan"]

UP_TO_DATE = "up to date"
NOT_SELECTED = "not selected"


@dataclass(frozen=True, kw_only=True, slots=True)
class StagePlan:
    """What a run would do with one stage."""

    stage: Stage
    """The stage."""
    action: Literal["run", "skip"]
    """run, or skip: up to date or not selected."""
    reason: str
    """Why, e.g. ``output missing: shards/manifest.json`` or ``up to date``."""
    resume: bool
    """The last attempt did not complete, so ``stage.resume`` is appended to the command."""

    @property
    def command(self) -> tuple[str, ...]:
        """The command as written, with the resume arguments when they apply."""
        return (*self.stage.run, *self.stage.resume) if self.resume else self.stage.run


def plan(
    pipeline: Pipeline,
    *,
    force: bool = False,
    from_stage: str | None = None,
    only: str | None = None,
) -> list[StagePlan]:
    """One :class:`StagePlan` per stage, in order, from the files and the state file.

    Args:
        force: Run every selected stage, up to date or not.
        from_stage: Select this stage and those after it.
        only: Select this stage alone.

    Raises:
        ConfigError: no stage has the name given, or both ``from_stage`` and ``only`` are.
        InputError: the state file is not one tokenpo wrote.
    """
    state = PipelineState(pipeline.state_file, pipeline.name)
    return plan_with_state(pipeline, state, force=force, from_stage=from_stage, only=only)


def plan_with_state(
    pipeline: Pipeline,
    state: PipelineState,
    *,
    force: bool,
    from_stage: str | None,
    only: str | None,
) -> list[StagePlan]:
    """:func:`plan` with the state already read."""
    selected = selected_stages(pipeline, from_stage, only)
    running_outputs: list[tuple[str, Path]] = []
    plans = []
    for stage in pipeline.stages:
        record = state.get(stage.name)
        resume = (
            bool(stage.resume)
            and record is not None
            and record.incomplete
            and record.definition == stage.definition
        )
        if stage.name not in selected:
            plans.append(StagePlan(stage=stage, action="skip", reason=NOT_SELECTED, resume=False))
            continue
        reason = "forced" if force else _run_reason(pipeline, stage, record, running_outputs)
        if reason is None:
            plans.append(StagePlan(stage=stage, action="skip", reason=UP_TO_DATE, resume=False))
            continue
        plans.append(StagePlan(stage=stage, action="run", reason=reason, resume=resume))
        running_outputs += [(stage.name, output) for output in stage.outputs]
    return plans


def selected_stages(pipeline: Pipeline, from_stage: str | None, only: str | None) -> set[str]:
    """The names of the stages ``from_stage`` or ``only`` select: all when neither is given."""
    names = [stage.name for stage in pipeline.stages]
    if from_stage is not None and only is not None:
        raise ConfigError("give --from or --only, not both")
    if only is not None:
        return {pipeline.stage(only).name}
    if from_stage is not None:
        return set(names[names.index(pipeline.stage(from_stage).name) :])
    return set(names)


def _run_reason(
    pipeline: Pipeline,
    stage: Stage,
    record: StageRecord | None,
    running_outputs: list[tuple[str, Path]],
) -> str | None:
    """Why ``stage`` must run, or None when it is up to date."""
    for path in stage.inputs:
        for producer, output in running_outputs:
            if path.is_relative_to(output) or output.is_relative_to(path):
                return f"input from {producer}, which runs: {pipeline.shown(path)}"
    for path in stage.inputs:
        if not path.exists():
            return f"input missing: {pipeline.shown(path)}"
    if record is not None and record.incomplete and record.definition == stage.definition:
        return "the last attempt did not complete"
    if not stage.outputs:
        return "no outputs declared"
    for path in stage.outputs:
        if not path.exists():
            return f"output missing: {pipeline.shown(path)}"
    oldest_output = min(newest_mtime(path) for path in stage.outputs)
    for path in stage.inputs:
        if newest_mtime(path) > oldest_output:
            return f"input newer: {pipeline.shown(path)}"
    if record is None or record.incomplete:
        return "no completed run recorded"
    if record.definition != stage.definition:
        return "definition changed"
    return None


def newest_mtime(path: Path) -> int:
    """The newest modification time, in ns, of ``path`` and of everything under it."""
    newest = path.stat().st_mtime_ns
    if not path.is_dir():
        return newest
    for directory, subdirectories, files in os.walk(path):
        for name in (*subdirectories, *files):
            entry = Path(directory, name)
            try:
                newest = max(newest, entry.stat().st_mtime_ns)
            except FileNotFoundError:  # a dangling symlink, or removed while walking
                continue
    return newest
