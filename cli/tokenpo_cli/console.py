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


def interactive() -> bool:
    """Whether a person is watching: progress bars are drawn only when stdout and stderr are
    both terminals (a redirected stdout means a script or a log file is reading)."""
    return out.is_terminal and err.is_terminal


def progress_bar(*, detail: bool = False) -> Progress:
    """Spinner, task name, bar, done/total, elapsed time, on stderr, when :func:`interactive`.
    ``detail`` adds the task's ``detail`` field (a rate, a phase)."""
    columns: list[ProgressColumn] = [
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
    ]
    if detail:
        columns.append(TextColumn("{task.fields[detail]}"))
    columns.append(TimeElapsedColumn())
    return Progress(*columns, console=err, disable=not interactive())
