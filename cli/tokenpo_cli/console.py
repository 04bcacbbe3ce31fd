"""The shared rich consoles (results to stdout, errors and progress to stderr) and the
progress bar every long-running command draws."""

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def progress_bar(*, detail: bool = False, terminal_only: bool = False) -> Progress:
    """Spinner, task name, bar, done/total, elapsed time, on stderr. ``detail`` adds the
    task's ``detail`` field (a rate, a phase); ``terminal_only`` draws nothing when stderr
    is not a terminal."""
    columns: list[ProgressColumn] = [
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
    ]
    if detail:
        columns.append(TextColumn("{task.fields[detail]}"))
    columns.append(TimeElapsedColumn())
    return Progress(*columns, console=err, disable=terminal_only and not err.is_terminal)
