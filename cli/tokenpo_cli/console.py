"""The shared rich consoles: results to stdout, errors and progress to stderr."""

from rich.console import Console

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
