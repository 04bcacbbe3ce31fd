"""Ray Data reads prep's inputs: one read task per row group of a parquet file and per
other input file, streaming blocks of rows.

A block holds the file's pair columns (parquet, Arrow IPC) or its raw records (JSON: the
lines of JSON Lines, or the elements of a JSON array, read by the Rust reader), plus each
row's file index and row number, counted as the local readers count them (JSON Lines: the
physical line, blank lines included; a JSON array: the element's index). The workers turn
blocks back into rows with the same Rust code as the local engine, so both keep and
quarantine the same rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from ray.data.block import BlockMetadata
from ray.data.context import DataContext
from ray.data.datasource import Datasource, ReadTask

from tokenpo import _native

__all__ = ["InputFiles"]

_IPC_FILE_MAGIC = b"ARROW1"


class InputFiles(Datasource):
    """The input files of a run, in reading order, each with the pair columns to read
    (none for JSON, whose records are shipped whole), cut into pieces of one read task each:
    a parquet file's row groups, any other file whole."""

    def __init__(self, files: list[Path], columns: list[list[str]], batch_rows: int) -> None:
        self._files = files
        self._pieces = [
            piece
            for index, (path, file_columns) in enumerate(zip(files, columns, strict=True))
            for piece in _pieces(path, index, file_columns, batch_rows)
        ]

    @property
    def pieces(self) -> int:
        """How many read tasks the files make."""
        return len(self._pieces)

    def estimate_inmemory_data_size(self) -> int | None:
        return sum(path.stat().st_size for path in self._files)

    def get_read_tasks(
        self,
        parallelism: int,
        per_task_row_limit: int | None = None,
        data_context: DataContext | None = None,
    ) -> list[ReadTask]:
        # One task per piece, whatever the parallelism: rows are numbered from the start
        # of their file, and Ray Data splits a task's blocks when it wants more of them.
        return [
            ReadTask(
                piece,
                BlockMetadata(
                    num_rows=piece.rows,
                    size_bytes=piece.size_bytes,
                    input_files=(str(piece.path),),
                    exec_stats=None,
                ),
            )
            for piece in self._pieces
        ]


def _pieces(path: Path, file_index: int, columns: list[str], batch_rows: int) -> list[_Piece]:
    """A parquet file's row groups, each numbered from its first row in the file; any
    other file whole."""
    whole = _Piece(
        path=path,
        file_index=file_index,
        columns=columns,
        batch_rows=batch_rows,
        row_group=None,
        first_row=0,
        rows=None,
        size_bytes=path.stat().st_size,
    )
    if not _is_parquet(path):
        return [whole]
    metadata = pq.ParquetFile(path).metadata
    pieces, first_row = [], 0
    for index in range(metadata.num_row_groups):
        row_group = metadata.row_group(index)
        rows = row_group.num_rows
        size_bytes = row_group.total_byte_size
        pieces.append(
            replace(whole, row_group=index, first_row=first_row, rows=rows, size_bytes=size_bytes)
        )
        first_row += rows
    return pieces


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


@dataclass(frozen=True, slots=True, kw_only=True)
class _Piece:
    """The read function of a file, or of one row group of a parquet file (an object, so
    that Ray pickles only its fields)."""

    path: Path
    file_index: int
    columns: list[str]
    batch_rows: int
    row_group: int | None
    """Of a parquet file; ``None``: the whole file."""
    first_row: int
    """The row number, in the file, of the piece's first row."""
    rows: int | None
    size_bytes: int

    def __call__(self) -> Iterator[pa.Table]:
        first_row = self.first_row
        for batch in self._batches():
            yield _with_sources(batch, self.file_index, first_row)
            first_row += batch.num_rows

    def _batches(self) -> Iterator[pa.RecordBatch]:
        if self.row_group is not None:
            yield from pq.ParquetFile(self.path).iter_batches(
                batch_size=self.batch_rows, row_groups=[self.row_group], columns=self.columns
            )
        elif self.path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
            yield from _native.JsonRecords(str(self.path), self.batch_rows)
        else:
            yield from _ipc_batches(self.path, self.columns)


def _with_sources(batch: pa.RecordBatch, file_index: int, first_row: int) -> pa.Table:
    rows = batch.num_rows
    table = pa.Table.from_batches([batch])
    files = np.full(rows, file_index, dtype=np.uint32)
    table = table.append_column(_native.SOURCE_FILE_COLUMN, pa.array(files))
    numbers = np.arange(first_row, first_row + rows, dtype=np.uint64)
    return table.append_column(_native.SOURCE_ROW_COLUMN, pa.array(numbers))


def _ipc_batches(path: Path, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """The record batches of an Arrow IPC file, or stream when it lacks the file magic."""
    with path.open("rb") as file:
        is_file_format = file.read(len(_IPC_FILE_MAGIC)) == _IPC_FILE_MAGIC
    if is_file_format:
        reader = pa.ipc.open_file(path)
        batches = (reader.get_batch(index) for index in range(reader.num_record_batches))
    else:
        batches = iter(pa.ipc.open_stream(path))
    for batch in batches:
        yield batch.select(columns)
