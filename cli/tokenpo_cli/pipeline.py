"""`tokenpo pipeline run|show FILE`: tokenpo's stages scripted in one TOML file.

Exit codes: 0 every stage ran or was up to date, 1 a stage failed (or a SIGTERM stopped the
run), 2 bad usage or a bad pipeline file.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from tokenpo.pipeline import (
    BUILTIN_VARS,
    Pipeline,
    PipelineSummary,
    StagePlan,
    StageResult,
    load_pipeline,
    plan,
    run_pipeline,
)
from tokenpo_cli.console import err, error, note, out

app = typer.Typer(
    name="pipeline",
    help="Run tokenpo's stages from a pipeline file, skipping those that are up to date.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

_STAGE_FAILED = 1
_STATUS_STYLES = {"ran": "green", "skipped": "dim", "failed": "bold red", "not run": "yellow"}

FileArgument = Annotated[Path, typer.Argument(metavar="FILE", help="The pipeline's TOML file.")]
VarOption = Annotated[
    list[str] | None,
    typer.Option("--var", metavar="NAME=VALUE", help="Override a var of the file's [vars]."),
]
FromOption = Annotated[
    str | None, typer.Option("--from", metavar="STAGE", help="Only this stage and later ones.")
]
OnlyOption = Annotated[str | None, typer.Option("--only", metavar="STAGE", help="Only this stage.")]
ForceOption = Annotated[
    bool, typer.Option("--force", help="Run the selected stages even when up to date.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@app.command(name="run")
def run_command(
    file: FileArgument,
    variables: VarOption = None,
    from_stage: FromOption = None,
    only: OnlyOption = None,
    force: ForceOption = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", help="Show a stage's output only if it fails, and only the summary."
        ),
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Run the stages of FILE in order, each in the workdir; skip those that are up to date.

    A stage is up to date when its outputs exist, are newer than its inputs, and its command,
    inputs and outputs are those of its last completed run. After a kill, the stage that was
    running runs again, with its `resume` arguments. Exits 1 if a stage fails.
    """
    pipeline = load_pipeline(file, _parse_vars(variables))
    summary = run_pipeline(
        pipeline,
        force=force,
        from_stage=from_stage,
        only=only,
        # With --json, stdout holds the JSON alone: stage output goes to stderr.
        stage_output="capture" if quiet else "stderr" if json_output else "inherit",
        on_stage_start=None if quiet else _announce,
        on_stage_end=None if quiet else _report,
    )
    failed = summary.failed
    if failed is not None and failed.output:
        err.print(Text(f"output of {failed.name}:", style="bold"))
        err.print(Text(failed.output), soft_wrap=True)
    if json_output:
        _print_json(summary.to_dict())
    else:
        out.print(_summary_table(summary))
    if failed is not None:
        error(f"stage {failed.name} failed: {failed.error}")
    elif summary.stopped is not None:
        error(summary.stopped)
    raise typer.Exit(0 if summary.ok else _STAGE_FAILED)


@app.command(name="show")
def show_command(
    file: FileArgument,
    variables: VarOption = None,
    from_stage: FromOption = None,
    only: OnlyOption = None,
    force: ForceOption = False,
    json_output: JsonOption = False,
) -> None:
    """Show the stages of FILE, vars substituted, and whether `run` would run each, and why."""
    pipeline = load_pipeline(file, _parse_vars(variables))
    plans = plan(pipeline, force=force, from_stage=from_stage, only=only)
    if json_output:
        _print_json(_plan_dict(pipeline, plans))
        return
    out.print(Text.assemble(("pipeline ", "bold"), (pipeline.name, "bold"), f"  {pipeline.file}"))
    out.print(Text(f"workdir  {pipeline.workdir}"), soft_wrap=True)
    user_vars = {k: v for k, v in pipeline.vars.items() if k not in BUILTIN_VARS}
    if user_vars:
        listed = ", ".join(f"{name}={value}" for name, value in user_vars.items())
        out.print(Text(f"vars     {listed}"), soft_wrap=True)
    for stage_plan in plans:
        out.print()
        out.print(_plan_heading(stage_plan), soft_wrap=True)
        stage = stage_plan.stage
        rows = [("run", shlex.join(stage_plan.command))]
        rows += [("inputs", ", ".join(pipeline.shown(path) for path in stage.inputs))]
        rows += [("outputs", ", ".join(pipeline.shown(path) for path in stage.outputs))]
        if stage.resume:
            rows += [("resume", shlex.join(stage.resume))]
        for label, value in rows:
            out.print(Text(f"  {label:<8} {value or '-'}"), soft_wrap=True)


def _parse_vars(settings: list[str] | None) -> dict[str, str]:
    values = {}
    for setting in settings or []:
        name, equals, value = setting.partition("=")
        if not equals or not name:
            raise typer.BadParameter(f"expected NAME=VALUE, got {setting!r}", param_hint="--var")
        values[name] = value
    return values


def _announce(stage_plan: StagePlan) -> None:
    why = stage_plan.reason + (", resuming" if stage_plan.resume else "")
    note(Text.assemble((f"▶ {stage_plan.stage.name}", "bold"), f" ({why})"))
    note(Text(f"$ {shlex.join(stage_plan.command)}", style="dim"))


def _report(result: StageResult) -> None:
    if result.status == "skipped":
        note(Text(f"· {result.name} skipped: {result.reason}", style="dim"))
    elif result.status == "ran":
        note(Text(f"✓ {result.name} ({result.seconds:.1f}s)", style="green"))
    elif result.status == "failed":
        err.print(Text(f"✗ {result.name}: {result.error}", style="bold red"), soft_wrap=True)


def _summary_table(summary: PipelineSummary) -> Table:
    table = Table(title=f"pipeline {summary.pipeline}", title_justify="left")
    table.add_column("stage", style="bold")
    table.add_column("status")
    table.add_column("seconds", justify="right")
    table.add_column("reason")
    for result in summary.stages:
        if result.status == "failed":
            reason = result.error or ""
        elif result.resumed:
            reason = f"{result.reason} (resumed)"
        else:
            reason = result.reason
        seconds = "-" if result.seconds is None else f"{result.seconds:.1f}"
        status = Text(result.status, style=_STATUS_STYLES[result.status])
        table.add_row(result.name, status, seconds, Text(reason))
    return table


def _plan_heading(stage_plan: StagePlan) -> Text:
    verdict = ("would run", "green") if stage_plan.action == "run" else ("would be skipped", "dim")
    resumed = ", with its resume arguments" if stage_plan.resume else ""
    return Text.assemble(
        (stage_plan.stage.name, "bold"), ": ", verdict, f" ({stage_plan.reason}{resumed})"
    )


def _plan_dict(pipeline: Pipeline, plans: list[StagePlan]) -> dict[str, Any]:
    return {
        "pipeline": pipeline.name,
        "file": str(pipeline.file),
        "workdir": str(pipeline.workdir),
        "vars": dict(pipeline.vars),
        "stages": [
            {
                "name": stage_plan.stage.name,
                "action": stage_plan.action,
                "reason": stage_plan.reason,
                "resume": stage_plan.resume,
                "command": list(stage_plan.command),
                "inputs": [str(path) for path in stage_plan.stage.inputs],
                "outputs": [str(path) for path in stage_plan.stage.outputs],
            }
            for stage_plan in plans
        ],
    }


def _print_json(document: Mapping[str, Any]) -> None:
    out.print(Text(json.dumps(document, indent=2)), soft_wrap=True)
