"""`tokenpo train`: run a training config, in this process or under torchrun's agent."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from tokenpo.exceptions import ConfigError
from tokenpo_cli.console import err, error, interactive, out

# Shown beside the bar when the loss reports them.
# Shown for each validation, when present.
_VALIDATION_METRICS = (
    "val/loss",
    "val/rewards/accuracies",
    "val/rewards/margins",
    "val/logps/chosen_drift",
    "val/logps/rejected_drift",
    "val/sft/nll",
)
_BAR_METRICS = (
    ("loss", "loss", "{:.4f}"),
    ("rewards/margins", "margin", "{:+.3f}"),
    ("rewards/accuracies", "acc", "{:.2f}"),
    ("tokens_per_s", "tok/s", "{:,.0f}"),
)


def train_command(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="The run's TOML file.")
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set", metavar="KEY=VALUE", help="Override a config key, e.g. `loss.beta=0.2`."
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Resume from the run's latest checkpoint.")
    ] = False,
    nproc_per_node: Annotated[
        int | None,
        typer.Option(
            "--nproc-per-node",
            min=1,
            help="Start this many processes with torchrun's elastic agent (FSDP2).",
        ),
    ] = None,
    print_config: Annotated[
        bool, typer.Option("--print-config", help="Print the default config and exit.")
    ] = False,
) -> None:
    """Train a policy on prepared shards with any loss of `tokenpo.losses` (or `sft`).

    Metrics go to RUN_DIR/metrics.jsonl, checkpoints to RUN_DIR/checkpoints, and the trained
    policy, in the Hugging Face format, to RUN_DIR/final. `--print-config` shows every key.
    """
    from tokenpo.train.config import default_config_toml, load_config
    from tokenpo.train.loop import train

    if print_config:
        # A file's text, not console output: rich would wrap it at the console width.
        sys.stdout.write(default_config_toml())
        return
    if config is None:
        raise ConfigError("--config is required (see `tokenpo train --print-config`)")
    settings = [*(overrides or []), *(["checkpoint.resume=true"] if resume else [])]
    if nproc_per_node is not None and nproc_per_node > 1:
        _launch(config, settings, nproc_per_node)
        return
    reporter = _BarReporter()
    with reporter.progress:
        result = train(load_config(config, settings), reporter)
    if not result.is_main:
        return
    out.print(
        f"trained {result.steps} steps"
        + (" (stopped early)" if result.stopped_early else "")
        + f"; policy exported to {result.export_dir}"
    )


def _launch(config: Path, settings: list[str], processes: int) -> None:
    """Runs this same command in ``processes`` workers under torchrun's elastic agent."""
    from torch.distributed.run import get_args_parser, run

    worker = ["-m", "tokenpo_cli", "train", "--config", str(config)]
    for setting in settings:
        worker += ["--set", setting]
    arguments = get_args_parser().parse_args(
        ["--standalone", "--nproc-per-node", str(processes), *worker]
    )
    try:
        run(arguments)  # type: ignore[no-untyped-call]
    except Exception as failure:  # torchrun's ChildFailedError carries each rank's traceback
        error(f"training failed: {failure}")
        raise SystemExit(1) from None


class _BarReporter:
    """A rich progress bar with the loss, margin, accuracy and throughput."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[metrics]}"),
            console=err,
            disable=not interactive(),
        )
        self.task: TaskID | None = None

    def start(self, *, total_steps: int, first_step: int) -> None:
        self.task = self.progress.add_task(
            "train", total=total_steps, completed=first_step, metrics=""
        )

    def step(self, record: dict[str, Any]) -> None:
        shown = "  ".join(
            f"{label} {template.format(record[key])}"
            for key, label, template in _BAR_METRICS
            if key in record
        )
        if self.task is not None:
            self.progress.update(self.task, completed=record["step"], metrics=shown)

    def validation(self, record: dict[str, Any]) -> None:
        shown = ", ".join(
            f"{key.removeprefix('val/')} {value:.4g}"
            for key, value in record.items()
            if key in _VALIDATION_METRICS
        )
        self.progress.console.print(f"[cyan]validation[/] step {record['step']}: {shown}")

    def message(self, text: str) -> None:
        self.progress.console.print(text, markup=False)
