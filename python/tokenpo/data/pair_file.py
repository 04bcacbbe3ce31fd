"""One row of a preference-pair file (parquet, Arrow IPC or JSONL), for inspection.

Raw files hold ``chosen``/``rejected`` strings; prepared shards hold ``chosen_ids``/
``rejected_ids`` token lists. Either is read, token ids taking precedence.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from tokenpo.exceptions import InputError, InvalidRowError, SchemaError

__all__ = ["PairRecord", "read_pair"]

_ID_COLUMNS = ("chosen_ids", "rejected_ids")
_TEXT_COLUMNS = ("chosen", "rejected")


@dataclass(frozen=True, slots=True)
class PairRecord:
    """The two completions of one pair, as text or as token ids."""

    chosen: str | list[int]
    """The chosen completion."""
    rejected: str | list[int]
    """The rejected completion."""


def read_pair(path: Path, row: int) -> PairRecord:
    """Read row ``row`` (from 0) of a pair file.

    Raises:
        InputError: the file is missing, unreadable, or has no such row.
        SchemaError: neither ``chosen_ids``/``rejected_ids`` nor ``chosen``/``rejected``.
        InvalidRowError: the row holds a null completion.
    """
    table = _read_table(path)
    columns = _pair_columns(table, path)
    if not 0 <= row < table.num_rows:
        raise InputError(
            f"{path}: row {row} does not exist; the file has {table.num_rows} rows",
            file=str(path),
            row=row,
        )
    chosen, rejected = (table.column(name)[row].as_py() for name in columns)
    for name, value in zip(columns, (chosen, rejected), strict=True):
        if value is None:
            raise InvalidRowError(
                f"{path}, row {row}, field '{name}': is null", file=str(path), row=row, field=name
            )
    return PairRecord(chosen=chosen, rejected=rejected)


def _read_table(path: Path) -> pa.Table:
    if not path.is_file():
        raise InputError(f"{path}: no such file", file=str(path))
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pq.read_table(path)
        if suffix in {".arrow", ".feather", ".ipc"}:
            return feather.read_table(path)
        if suffix in {".jsonl", ".json"}:
            return pa_json.read_json(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise InputError(f"{path}: cannot be read: {error}", file=str(path)) from error
    raise InputError(
        f"{path}: unknown format '{suffix}'; expected .parquet, .arrow/.feather or .jsonl",
        file=str(path),
    )


def _pair_columns(table: pa.Table, path: Path) -> tuple[str, str]:
    for columns in (_ID_COLUMNS, _TEXT_COLUMNS):
        if all(name in table.column_names for name in columns):
            return columns
    raise SchemaError(
        f"{path}: needs columns 'chosen' and 'rejected' (or 'chosen_ids' and 'rejected_ids');"
        f" found {', '.join(table.column_names) or 'none'}",
        file=str(path),
    )
