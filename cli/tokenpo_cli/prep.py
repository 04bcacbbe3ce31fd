"""`tokenpo prep`: raw pairs to prepared shards, with a progress bar and a summary."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    TaskID,
)
from rich.table import Table
from tokenizers import Tokenizer

import tokenpo
from tokenpo.data import read_prepared_row
from tokenpo.prep import IMPORTANCE_PRESETS, Manifest, PrepOptions, token_class_name
from tokenpo_cli.console import out, progress_bar


def prep_command(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            help="Pair files or globs: .parquet, .arrow/.feather, .jsonl (JSON Lines), .json "
            "(one JSON array of rows, each row numbered by its index, as Hugging Face datasets "
            "reads it; else JSON Lines). Never files in --out."
        ),
    ],
    tokenizer: Annotated[
        Path,
        typer.Option(
            "--tokenizer",
            "-t",
            help="A tokenizer.json, or a model directory with it; tokenizer_config.json (EOS, "
            "BOS, chat template) and chat_template.jinja beside it are read too.",
        ),
    ],
    out_dir: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Output directory. Prep never reads its files: an input there, named or "
            "matched by a glob, is an error (a rerun would read quarantine.jsonl back).",
        ),
    ],
    format: Annotated[str, typer.Option(help="Shard format: parquet or ipc.")] = "parquet",
    shard_rows: Annotated[int, typer.Option(min=1, help="Pairs per shard.")] = 100_000,
    batch_rows: Annotated[int, typer.Option(min=1, help="Rows processed together.")] = 4096,
    max_len: Annotated[
        int | None, typer.Option(min=2, help="Most tokens of prompt + longer completion.")
    ] = None,
    max_prompt_len: Annotated[
        int | None,
        typer.Option(min=0, help="Prompt tokens kept when truncating [default: max-len/2]."),
    ] = None,
    drop_over_length: Annotated[
        bool, typer.Option(help="Quarantine pairs over --max-len instead of truncating.")
    ] = False,
    column_map: Annotated[
        str | None,
        typer.Option(help="Rename input columns: chosen=response_a,rejected=response_b."),
    ] = None,
    eos_token: Annotated[
        str | None, typer.Option(help="EOS token for completions [default: from the config].")
    ] = None,
    importance: Annotated[
        str, typer.Option(help=f"Importance preset: {', '.join(IMPORTANCE_PRESETS)}.")
    ] = "default",
    max_edit_distance: Annotated[
        int, typer.Option(min=0, help="Edit distance beyond which a pair is unaligned.")
    ] = tokenpo.DEFAULT_MAX_EDIT_DISTANCE,
    engine: Annotated[
        str, typer.Option(help="Where to run: local (this machine's cores) or ray (a cluster).")
    ] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="With --engine ray: the cluster, HEAD:6379 "
            "[default: RAY_ADDRESS, else a new local instance]."
        ),
    ] = None,
    explain_row: Annotated[
        int | None,
        typer.Option(help="Afterwards, show pair N token by token: class, weight, diff."),
    ] = None,
) -> None:
    """Tokenize, diff, weigh and rank preference pairs into shards, on every core.

    Writes `shard-*.parquet` (or `.arrow`), `quarantine.jsonl` (rows set aside, with the
    reason) and `manifest.json`. `--engine ray` runs the same kernel on a Ray cluster and
    writes the same output. Re-running with the same arguments resumes an interrupted
    run, or does nothing if it finished.

    Inputs without a single usable row stop with exit code 2, naming the files and the
    quarantine reasons; `quarantine.jsonl` still lists every row set aside.
    """
    options = PrepOptions(
        column_map=_parse_column_map(column_map),
        eos_token=eos_token,
        max_len=max_len,
        max_prompt_len=max_prompt_len,
        drop_over_length=drop_over_length,
        shard_rows=shard_rows,
        batch_rows=batch_rows,
        format=format,  # type: ignore[arg-type]  # validated by PrepOptions
        importance=importance,
        max_edit_distance=max_edit_distance,
    )
    with _PrepProgress() as progress:
        manifest = tokenpo.prep(
            inputs,
            tokenizer,
            out_dir,
            options,
            progress.update,
            engine=engine,  # type: ignore[arg-type]  # validated by tokenpo.prep
            ray_address=ray_address,
        )
    out.print(_summary_table(manifest))
    if explain_row is not None:
        explain(manifest, explain_row)


def _parse_column_map(spec: str | None) -> dict[str, str]:
    if not spec:
        return {}
    mapping = {}
    for item in spec.split(","):
        canonical, equals, actual = (part.strip() for part in item.partition("="))
        if not equals or not canonical or not actual:
            raise typer.BadParameter(
                f"expected NAME=COLUMN, got {item!r}", param_hint="--column-map"
            )
        if canonical in mapping:
            raise typer.BadParameter(
                f"column {canonical!r} is mapped twice", param_hint="--column-map"
            )
        mapping[canonical] = actual
    return mapping


class _PrepProgress:
    """A rich progress display fed by prep's (kind, a, b, c) callback."""

    def __init__(self) -> None:
        self._progress = progress_bar(detail=True)
        self._tokenize: TaskID | None = None
        self._write: TaskID | None = None
        self._started = time.perf_counter()

    def __enter__(self) -> _PrepProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._progress.__exit__(None, None, None)

    def update(self, kind: str, a: int, b: int, c: int) -> None:
        if kind == "tokenized":
            if self._tokenize is None:
                self._tokenize = self._progress.add_task("tokenize + diff", total=None, detail="")
            rate = b / max(time.perf_counter() - self._started, 1e-9)
            detail = f"{b:,} pairs, {c:,} quarantined, {rate:,.0f} pairs/s"
            self._progress.update(self._tokenize, completed=a, detail=detail)
        else:
            if self._write is None:
                self._write = self._progress.add_task("weigh + write", total=b, detail="shards")
            self._progress.update(self._write, completed=a)


def _summary_table(manifest: Manifest) -> Table:
    summary = manifest.summary
    table = Table(title=f"prepared {manifest.directory}", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("rows read", f"{summary['rows_read']:,}")
    table.add_row("pairs", f"{summary['pairs']:,}")
    for reason, count in summary["quarantined"].items():
        table.add_row(f"quarantined: {reason}", f"{count:,}")
    table.add_row(
        "mean tokens (prompt / chosen / rejected)",
        f"{summary['mean_prompt_tokens']:.1f} / {summary['mean_chosen_tokens']:.1f}"
        f" / {summary['mean_rejected_tokens']:.1f}",
    )
    table.add_row("mean edit distance", f"{summary['mean_edit_distance']:.2f}")
    table.add_row("unaligned / truncated", f"{summary['unaligned']:,} / {summary['truncated']:,}")
    table.add_row("difficulty from", str(manifest.raw["difficulty_source"]))
    table.add_row("shards", f"{len(manifest.shards)}")
    return table


def explain(manifest: Manifest, index: int) -> None:
    """Print pair ``index`` token by token: text, class, weight, diff flag."""
    row = read_prepared_row(manifest, index)
    tokenizer = Tokenizer.from_file(manifest.raw["tokenizer"]["path"])
    importance = manifest.importance
    for side in ("chosen", "rejected"):
        table = Table(title=f"pair {index} ({row['pair_id']}): {side}")
        for column in ("#", "token", "class", "weight", "diff"):
            table.add_column(column, justify="right" if column in ("#", "weight") else "left")
        columns = zip(
            row[f"{side}_ids"],
            row[f"{side}_class"],
            row[f"{side}_weight"],
            row[f"{side}_diff"],
            strict=True,
        )
        for position, (token, token_class, weight, in_diff) in enumerate(columns):
            table.add_row(
                str(position),
                repr(tokenizer.decode([token], skip_special_tokens=False)),
                token_class_name(token_class, importance),
                f"{weight:.3f}",
                "◆" if in_diff else "",
                style="bold red" if in_diff else None,
            )
        out.print(table)
