"""`tokenpo plot`: the curves of one or several runs, one panel per metric, to an image."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from rich.text import Text

from tokenpo.exceptions import ConfigError, InputError
from tokenpo.train.plot import DEFAULT_METRICS, RunCurves, plotted_metrics, read_runs, smooth
from tokenpo_cli.console import out

_COLUMNS = 3
_PANEL_SIZE = (5.0, 3.4)


def plot_command(
    run_dirs: Annotated[
        list[Path],
        typer.Argument(metavar="RUN_DIR", help="Directories written by `tokenpo train`."),
    ],
    out_path: Annotated[
        Path,
        typer.Option("--out", "-o", help="The image to write: PNG, or by suffix .svg, .pdf."),
    ],
    metrics: Annotated[
        list[str] | None,
        typer.Option(
            "--metric",
            "-m",
            help="A metric to draw (repeatable), e.g. `val/rewards/margins`. "
            f"Default: those of {', '.join(DEFAULT_METRICS)} that a run logged.",
        ),
    ] = None,
    labels: Annotated[
        list[str] | None,
        typer.Option(
            "--label",
            help="A legend label per run, in order (repeatable). Runs with the same label "
            "share one colour and one legend entry (the seeds of a method, say).",
        ),
    ] = None,
    smooth_window: Annotated[
        int,
        typer.Option(
            "--smooth",
            min=1,
            help="Moving average over this many logged points (training curves only).",
        ),
    ] = 1,
) -> None:
    """Draw the training and validation curves of runs, one panel per metric, x = step.

    One line per run, one colour per label; a metric a run did not log is left out of its
    panel. Validation curves are drawn unsmoothed: each point is already a mean over the
    validation set.
    """
    _check_format(out_path)
    runs = read_runs(run_dirs, labels or ())
    chosen = plotted_metrics(runs, metrics or ())
    figure = curves_figure(runs, chosen, smooth_window)
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(out_path, dpi=120)
    except OSError as error:
        raise InputError(
            f"{out_path}: cannot write the plot: {error}", file=str(out_path)
        ) from error
    out.print(
        Text(f"plotted {', '.join(chosen)} of {len(runs)} run(s) to {out_path}"), soft_wrap=True
    )


def _check_format(path: Path) -> None:
    """Fails before any work when matplotlib cannot write ``path``'s format."""
    formats = FigureCanvasAgg.get_supported_filetypes()
    if path.suffix.lstrip(".").lower() not in formats:
        raise ConfigError(
            f"--out {path}: unknown image format {path.suffix or '(no suffix)'}; "
            f"use one of {', '.join(sorted('.' + name for name in formats))}"
        )


def curves_figure(runs: list[RunCurves], metrics: list[str], smooth_window: int) -> Figure:
    """One panel per metric, one colour per distinct run label, a legend entry per label."""
    colors = _label_colors(runs)
    columns = min(_COLUMNS, len(metrics))
    rows = math.ceil(len(metrics) / columns)
    # A bare Figure on the Agg canvas: no pyplot, so no global state and no GUI backend.
    figure = Figure(
        figsize=(_PANEL_SIZE[0] * columns, _PANEL_SIZE[1] * rows + 0.6), layout="constrained"
    )
    FigureCanvasAgg(figure)
    panels = figure.subplots(rows, columns, squeeze=False).flat
    for panel, metric in zip(panels, metrics, strict=False):
        _panel(panel, runs, metric, smooth_window, colors)
    for panel in list(panels)[len(metrics) :]:
        panel.set_visible(False)
    handles = [Line2D([], [], color=color) for color in colors.values()]
    figure.legend(
        handles,
        list(colors),
        loc="outside upper center",
        ncols=min(len(colors), 2 * columns),  # fits the figure width
        title=f"moving average over {smooth_window} points" if smooth_window > 1 else None,
    )
    return figure


def _panel(
    axes: Axes, runs: list[RunCurves], metric: str, smooth_window: int, colors: dict[str, str]
) -> None:
    validation = metric.startswith("val/")
    for run in runs:
        series = run.series.get(metric)
        if series is None:
            continue
        color = colors[run.label]
        if validation:
            axes.plot(series.steps, series.values, color=color, marker="o", markersize=3)
        elif smooth_window > 1:
            axes.plot(series.steps, series.values, color=color, alpha=0.25, linewidth=0.8)
            axes.plot(series.steps, smooth(series.values, smooth_window), color=color)
        else:
            axes.plot(series.steps, series.values, color=color)
    axes.set(title=metric, xlabel="step")
    _widen_flat(axes)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)


def _widen_flat(axes: Axes) -> None:
    """A (nearly) constant panel, like a constant lr, gets ±10 % around its value: otherwise
    the y axis zooms into rounding noise and labels ticks 5e-05 + 1e-16."""
    low, high = axes.get_ylim()
    scale = max(abs(low), abs(high))
    if high - low <= 1e-9 * scale:
        middle = (low + high) / 2
        axes.set_ylim(middle - 0.1 * scale, middle + 0.1 * scale)


def _label_colors(runs: list[RunCurves]) -> dict[str, str]:
    """Each distinct label's colour, in order of first appearance, the same in every panel."""
    labels = dict.fromkeys(run.label for run in runs)
    return {label: f"C{index % 10}" for index, label in enumerate(labels)}
