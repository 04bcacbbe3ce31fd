"""The Typer app behind the `tokenpo` command."""

from __future__ import annotations

import os
from dataclasses import dataclass

import typer

from tokenpo.exceptions import ConfigError, InputError, TokenpoError
from tokenpo_cli import demo, diff, evaluate, export, pipeline, plot, prep, ref_logps, stats, train
from tokenpo_cli.console import error, set_quiet

app = typer.Typer(
    name="tokenpo",
    help="Token-level preference optimization: prepare pairs, train, evaluate.",
    epilog="Exit codes: 0 ok, 1 failed, 2 bad usage or input.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
app.command(name="prep")(prep.prep_command)
app.command(name="diff")(diff.diff_command)
app.command(name="stats")(stats.stats_command)
app.command(name="train")(train.train_command)
app.command(name="plot")(plot.plot_command)
app.command(name="export")(export.export_command)
app.command(name="ref-logps")(ref_logps.ref_logps_command)
app.command(name="eval")(evaluate.eval_command)
app.add_typer(pipeline.app, name="pipeline")
app.add_typer(demo.app, name="demo")


@dataclass(slots=True)
class _State:
    debug: bool = False


_state = _State()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback on errors."),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="Results and errors only: no progress bars, no notes."
    ),
) -> None:
    _state.debug = debug
    if quiet:
        set_quiet()


def main() -> None:
    """Entry point: runs the app and turns tokenpo errors into one red line, exiting 2 for bad
    input or options (as Typer does for bad usage) and 1 for anything else that failed."""
    # transformers draws a tqdm bar for every model it loads; tokenpo draws its own. Set
    # before transformers is imported (commands import it lazily); stages inherit it.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        app()
    except TokenpoError as failure:
        if _state.debug:
            raise
        error(str(failure))
        raise SystemExit(2 if isinstance(failure, ConfigError | InputError) else 1) from None
