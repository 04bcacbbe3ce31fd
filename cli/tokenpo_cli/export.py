"""`tokenpo export`: the policy of a run's checkpoint, in the Hugging Face format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from tokenpo_cli.console import out


def export_command(
    run_dir: Annotated[
        Path, typer.Argument(metavar="RUN_DIR", help="A directory written by `tokenpo train`.")
    ],
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Where to write. Default: RUN_DIR/export-step-NNNNNN."),
    ] = None,
    checkpoint: Annotated[
        str,
        typer.Option(help="`latest`, a checkpoint's name (`step-000200`) or its step (`200`)."),
    ] = "latest",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the output directory if it exists.")
    ] = False,
) -> None:
    """Write the policy of a checkpoint so that `AutoModelForCausalLM.from_pretrained` loads it.

    The run itself exports its last policy to RUN_DIR/final; use this for an earlier
    checkpoint, or for a run that was stopped. Runs on the CPU in this process, whatever
    number of ranks trained the run. The model is rebuilt from RUN_DIR/config.toml, which
    needs the run's training shards (for the vocabulary) where it names them.
    """
    from tokenpo.train.export import export_checkpoint

    written = export_checkpoint(
        run_dir, checkpoint=checkpoint, out_dir=out_dir, overwrite=overwrite
    )
    out.print(Text(f"exported the policy of {run_dir} ({checkpoint}) to {written}"), soft_wrap=True)
