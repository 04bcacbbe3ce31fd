"""`tokenpo stats`: the figures of a prepared directory, as tables, a plot and JSON."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich.console import Group
from rich.table import Table
from rich.text import Text

from tokenpo.exceptions import InputError
from tokenpo.stats import DIFFICULTY_BINS, Distribution, PairStats, compute_stats
from tokenpo_cli.console import out

_BAR_WIDTH = 30
# Length and edit-distance histograms: at most this many bins, so wide ranges stay readable.
_MAX_PLOT_BINS = 50


def stats_command(
    shards_dir: Annotated[
        Path, typer.Argument(metavar="SHARDS_DIR", help="A directory written by `tokenpo prep`.")
    ],
    plot: Annotated[
        Path | None,
        typer.Option(help="Write histograms to this image (PNG, or by suffix: .svg, .pdf)."),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the figures to this JSON file.")
    ] = None,
) -> None:
    """Show what a prepared directory holds: lengths, edit distances, difficulty, importance.

    Reads the shards one at a time, so it works on corpora larger than memory. Percentiles
    are exact (nearest rank).
    """
    stats = compute_stats(shards_dir)
    out.print(Text(str(stats.directory), style="bold"))
    for table in (
        _overview(stats),
        _lengths(stats),
        _edit_distance(stats),
        _difficulty(stats),
        _importance(stats),
        _quarantine(stats),
    ):
        out.print(table)
    if plot is not None:
        _write(plot, "plot", lambda path: _plot(stats).savefig(path, dpi=120))
        out.print(Text(f"plot written to {plot}"))
    if json_path is not None:
        _write(json_path, "JSON", lambda path: path.write_text(stats.to_json() + "\n"))
        out.print(Text(f"figures written to {json_path}"))


def _write(path: Path, what: str, writer: Callable[[Path], object]) -> None:
    """Runs ``writer``, turning a failure to write into one clear error line."""
    try:
        writer(path)
    except (OSError, ValueError) as error:  # matplotlib raises ValueError on an unknown suffix
        raise InputError(f"{path}: cannot write the {what}: {error}", file=str(path)) from error


def _overview(stats: PairStats) -> Table:
    table = Table(title="overview", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("shards", f"{stats.shards:,}")
    table.add_row("rows read", f"{stats.rows_read:,}")
    table.add_row("pairs", f"{stats.pairs:,}")
    table.add_row("quarantined", f"{sum(stats.quarantined.values()):,}")
    table.add_row("unaligned", f"{stats.unaligned:,}")
    sides = stats.truncated_by_side
    table.add_row(
        "truncated (prompt / chosen / rejected)",
        f"{stats.truncated:,} ({sides['prompt']:,} / {sides['chosen']:,} / {sides['rejected']:,})",
    )
    return table


def _distribution_table(title: str, extra_columns: tuple[str, ...] = ()) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("")
    for column in ("mean", "p50", "p95", "max", *extra_columns):
        table.add_column(column, justify="right")
    return table


def _distribution_cells(distribution: Distribution) -> tuple[str, ...]:
    return (
        f"{distribution.mean:.1f}",
        f"{distribution.p50:,}",
        f"{distribution.p95:,}",
        f"{distribution.max:,}",
    )


def _lengths(stats: PairStats) -> Table:
    table = _distribution_table("tokens per pair")
    table.add_row("prompt", *_distribution_cells(stats.prompt_tokens))
    table.add_row("chosen", *_distribution_cells(stats.chosen_tokens))
    table.add_row("rejected", *_distribution_cells(stats.rejected_tokens))
    return table


def _edit_distance(stats: PairStats) -> Table:
    shares = stats.edit_distance_share_at_most
    table = _distribution_table("edit distance", tuple(f"≤ {limit}" for limit in shares))
    share_cells = (f"{share:.1%}" for share in shares.values())
    table.add_row("chosen ↔ rejected", *_distribution_cells(stats.edit_distance), *share_cells)
    return table


def _difficulty(stats: PairStats) -> Table:
    table = Table(
        title=f"difficulty (from {stats.difficulty_source}, mean {stats.difficulty_mean:.2f})",
        title_justify="left",
    )
    table.add_column("bin")
    table.add_column("pairs", justify="right")
    table.add_column("share", justify="right")
    table.add_column("")
    largest = max(stats.difficulty_histogram, default=0)
    for index, count in enumerate(stats.difficulty_histogram):
        low, high = index / DIFFICULTY_BINS, (index + 1) / DIFFICULTY_BINS
        closing = "]" if index == DIFFICULTY_BINS - 1 else ")"
        share = count / stats.pairs if stats.pairs else 0.0
        bar = "█" * round(_BAR_WIDTH * count / largest) if largest else ""
        table.add_row(f"[{low:.1f}, {high:.1f}{closing}", f"{count:,}", f"{share:.1%}", bar)
    return table


def _importance(stats: PairStats) -> Group:
    table = Table(title="importance by token class", title_justify="left")
    for column in ("class", "tokens", "share", "diff tokens", "mean weight"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for token_class in stats.token_classes:
        share = token_class.tokens / stats.completion_tokens
        table.add_row(
            token_class.name,
            f"{token_class.tokens:,}",
            f"{share:.1%}",
            f"{token_class.diff_tokens:,}",
            f"{token_class.mean_weight:.3f}",
        )
    # A line of its own rather than a caption, which would wrap at the table's width.
    skew = (
        f"diff tokens are {stats.diff_token_share:.1%} of completion tokens "
        f"and carry {stats.diff_weight_share:.1%} of the weight"
    )
    return Group(table, Text(skew))


def _quarantine(stats: PairStats) -> Table:
    table = Table(title="quarantined rows by reason", title_justify="left")
    table.add_column("reason")
    table.add_column("rows", justify="right")
    for reason, count in stats.quarantined.items():
        table.add_row(reason, f"{count:,}")
    if not stats.quarantined:
        table.add_row("none", "0")
    return table


def _plot(stats: PairStats) -> Figure:
    """Histograms of lengths, edit distance and difficulty, and mean weight by class."""
    # A bare Figure on the Agg canvas: no pyplot, so no global state and no GUI backend.
    figure = Figure(figsize=(12, 8), layout="constrained")
    FigureCanvasAgg(figure)
    lengths, edits, difficulty, weights = figure.subplots(2, 2).flat
    figure.suptitle(f"{stats.directory}: {stats.pairs:,} pairs")
    _histogram(
        lengths,
        {
            "prompt": stats.prompt_tokens,
            "chosen": stats.chosen_tokens,
            "rejected": stats.rejected_tokens,
        },
    )
    lengths.set(title="tokens per pair", xlabel="tokens", ylabel="pairs")
    _histogram(edits, {"chosen ↔ rejected": stats.edit_distance})
    edits.set(title="edit distance", xlabel="tokens", ylabel="pairs")
    edges = np.linspace(0.0, 1.0, DIFFICULTY_BINS + 1)
    difficulty.stairs(stats.difficulty_histogram, edges, fill=True)
    difficulty.set(
        title=f"difficulty (from {stats.difficulty_source})",
        xlabel="difficulty (0 easy, 1 hard)",
        ylabel="pairs",
    )
    names = [token_class.name for token_class in stats.token_classes]
    weights.bar(names, [token_class.mean_weight for token_class in stats.token_classes])
    weights.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    weights.set(title="mean importance weight by token class", ylabel="mean weight")
    weights.tick_params(axis="x", labelrotation=30)
    return figure


def _histogram(axes: Axes, distributions: dict[str, Distribution]) -> None:
    """Step histograms of per-value counts on shared integer bins."""
    largest = max(distribution.max for distribution in distributions.values())
    step = max(1, -(-(largest + 1) // _MAX_PLOT_BINS))
    edges = np.arange(0, largest + step + 1, step).tolist()
    for label, distribution in distributions.items():
        values = np.arange(len(distribution.counts))
        axes.hist(values, edges, weights=distribution.counts, histtype="step", label=label)
    axes.legend()
