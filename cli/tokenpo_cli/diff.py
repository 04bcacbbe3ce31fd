"""`tokenpo diff`: look at one pair token by token, the differing tokens highlighted."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text
from tokenizers import Tokenizer

import tokenpo
from tokenpo.data import read_pair
from tokenpo.exceptions import InputError
from tokenpo.synthetic import EXAMPLE_PAIR, example_corpus, train_bpe_tokenizer
from tokenpo_cli.console import out

_CHOSEN_STYLE = "bold black on green3"
_REJECTED_STYLE = "bold white on red3"
# Alternate two shades so token boundaries show without separators.
_TOKEN_SHADES = ("grey85", "steel_blue1")


@dataclass(frozen=True, slots=True)
class _Side:
    """One completion: its token ids and how each token reads."""

    ids: list[int]
    pieces: list[str]


def diff_command(
    chosen: Annotated[str | None, typer.Argument(help="Chosen completion text.")] = None,
    rejected: Annotated[str | None, typer.Argument(help="Rejected completion text.")] = None,
    tokenizer: Annotated[
        Path | None,
        typer.Option(
            "--tokenizer",
            "-t",
            exists=True,
            dir_okay=False,
            help="A tokenizer.json; needed for text, optional for token ids.",
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            "-d",
            help="A pair file (.parquet, .arrow, .jsonl) with chosen/rejected or "
            "chosen_ids/rejected_ids columns.",
        ),
    ] = None,
    row: Annotated[int, typer.Option("--row", "-r", help="Row of --data to show (from 0).")] = 0,
    example: Annotated[
        bool, typer.Option("--example", help="Show the built-in example pair.")
    ] = False,
    max_edit_distance: Annotated[
        int,
        typer.Option(help="Beyond this edit distance the pair is unaligned, all tokens marked."),
    ] = tokenpo.DEFAULT_MAX_EDIT_DISTANCE,
) -> None:
    """Show where a chosen and a rejected completion differ, token by token.

    Give two strings with --tokenizer, or a row of a pair file with --data/--row, or
    --example. Tokens outside the longest common subsequence are highlighted: green in
    the chosen completion, red in the rejected one.
    """
    chosen_side, rejected_side = _load_sides(chosen, rejected, tokenizer, data, row, example)
    result = tokenpo.diff_tokens(
        chosen_side.ids, rejected_side.ids, max_edit_distance=max_edit_distance
    )
    out.print(_render("chosen  ", chosen_side, result.a_mask, _CHOSEN_STYLE))
    out.print(_render("rejected", rejected_side, result.b_mask, _REJECTED_STYLE))
    out.print(_figures(chosen_side, rejected_side, result))


def _load_sides(
    chosen: str | None,
    rejected: str | None,
    tokenizer_path: Path | None,
    data: Path | None,
    row: int,
    example: bool,
) -> tuple[_Side, _Side]:
    sources = sum([chosen is not None or rejected is not None, data is not None, example])
    if sources != 1:
        raise typer.BadParameter("give either CHOSEN and REJECTED, or --data, or --example")
    if example:
        trained = train_bpe_tokenizer(example_corpus())
        return _encode(EXAMPLE_PAIR.chosen, trained), _encode(EXAMPLE_PAIR.rejected, trained)
    tokenizer = _load_tokenizer(tokenizer_path)
    if data is not None:
        record = read_pair(data, row)
        pair = (record.chosen, record.rejected)
    elif chosen is None or rejected is None:
        raise typer.BadParameter("give both CHOSEN and REJECTED")
    else:
        pair = (chosen, rejected)
    sides = []
    for completion in pair:
        if isinstance(completion, str):
            if tokenizer is None:
                raise typer.BadParameter("text completions need --tokenizer")
            sides.append(_encode(completion, tokenizer))
        else:
            sides.append(_from_ids(completion, tokenizer))
    return sides[0], sides[1]


def _load_tokenizer(path: Path | None) -> Tokenizer | None:
    if path is None:
        return None
    try:
        return Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises a bare Exception on a bad file
        raise InputError(f"{path}: not a valid tokenizer.json: {error}", file=str(path)) from error


def _encode(text: str, tokenizer: Tokenizer) -> _Side:
    encoding = tokenizer.encode(text, add_special_tokens=False)
    pieces = [text[start:end] for start, end in encoding.offsets]
    return _Side(ids=list(encoding.ids), pieces=pieces)


def _from_ids(ids: list[int], tokenizer: Tokenizer | None) -> _Side:
    if tokenizer is None:
        return _Side(ids=ids, pieces=[f"{token} " for token in ids])
    return _Side(ids=ids, pieces=[tokenizer.decode([token]) for token in ids])


def _render(label: str, side: _Side, mask: list[int], diff_style: str) -> Text:
    text = Text(f"{label} ", style="bold")
    for index, (piece, in_diff) in enumerate(zip(side.pieces, mask, strict=True)):
        visible = piece.replace("\n", "⏎").replace(" ", "·") if in_diff else piece
        text.append(visible, style=diff_style if in_diff else _TOKEN_SHADES[index % 2])
    return text


def _figures(chosen: _Side, rejected: _Side, result: tokenpo.TokenDiff) -> Table:
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("tokens (chosen / rejected)", f"{len(chosen.ids)} / {len(rejected.ids)}")
    table.add_row("differing (chosen / rejected)", f"{sum(result.a_mask)} / {sum(result.b_mask)}")
    table.add_row("edit distance", str(result.edit_distance))
    table.add_row("LCS length", str(result.lcs_len))
    table.add_row("shared prefix", str(result.shared_prefix_len))
    table.add_row("unaligned", "yes" if result.unaligned else "no")
    return table
