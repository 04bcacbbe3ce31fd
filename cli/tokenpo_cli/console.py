"""The shared rich consoles (results to stdout, errors and progress to stderr) and the
progress bar every long-running command draws."""

from dataclasses import dataclass

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
from rich.text import Text

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


@dataclass(slots=True)
class _Settings:
    quiet: bool = False


_settings = _Settings()


def set_quiet() -> None:
    """`tokenpo --quiet`: from now on, no progress bars and no notes; results and errors only."""
    _settings.quiet = True


def note(message: object) -> None:
    """An informational line on stderr (a file written, a stage started), unless quiet."""
    if not _settings.quiet:
        err.print(message, soft_wrap=True)


def error(message: str) -> None:
    """One red ``error:`` line on stderr, even when quiet. The message is plain text: it quotes
    paths and commands, whose brackets rich would otherwise take as markup."""
    err.print(Text.assemble(("error:", "bold red"), f" {message}"), soft_wrap=True)


def interactive() -> bool:
    """Whether a person is watching: progress bars are drawn only when stdout and stderr are
    both terminals (a redirected stdout means a script or a log file is reading), never when
    quiet."""
    return out.is_terminal and err.is_terminal and not _settings.quiet


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
