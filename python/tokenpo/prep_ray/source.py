"""Ray Data reads prep's inputs: one read task per input file, streaming blocks of rows.

A block holds the file's pair columns (parquet, Arrow IPC) or its raw lines (JSONL), plus
each row's file index and row number, counted as the local readers count them (JSONL:
the physical line, blank lines included). The workers turn blocks back into rows with
the same Rust code as the local engine, so both keep and quarantine the same rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from ray.data.block import BlockMetadata
from ray.data.context import DataContext
from ray.data.datasource import Datasource, ReadTask

from tokenpo import _native

__all__ = ["InputFiles"]

_UTF8_BOM = b"\xef\xbb\xbf"
_IPC_FILE_MAGIC = b"ARROW1"


class InputFiles(Datasource):
    """The input files of a run, in reading order, each with the pair columns to read
    (none for JSONL, whose lines are shipped whole)."""

    def __init__(self, files: list[Path], columns: list[list[str]], batch_rows: int) -> None:
        self._files = files
        self._columns = columns
        self._batch_rows = batch_rows

    def estimate_inmemory_data_size(self) -> int | None:
        return sum(path.stat().st_size for path in self._files)

    def get_read_tasks(
        self,
        parallelism: int,
        per_task_row_limit: int | None = None,
        data_context: DataContext | None = None,
    ) -> list[ReadTask]:
        # One task per file: rows are numbered from the start of their file, and the
        # workers that prepare the blocks give the parallelism within a file.
        return [
            ReadTask(
                _FileBlocks(path, index, columns, self._batch_rows),
                BlockMetadata(
                    num_rows=None,
                    size_bytes=path.stat().st_size,
                    input_files=(str(path),),
                    exec_stats=None,
                ),
            )
            for index, (path, columns) in enumerate(zip(self._files, self._columns, strict=True))
        ]


class _FileBlocks:
    """The read function of one file (a class, so that Ray pickles only its fields)."""

    def __init__(self, path: Path, file_index: int, columns: list[str], batch_rows: int) -> None:
        self.path = path
        self.file_index = file_index
        self.columns = columns
        self.batch_rows = batch_rows

    def __call__(self) -> Iterator[pa.Table]:
        first_row = 0
        for batch in self._batches():
            yield _with_sources(batch, self.file_index, first_row)
            first_row += batch.num_rows

    def _batches(self) -> Iterator[pa.RecordBatch]:
        suffix = self.path.suffix.lower()
        if suffix in (".parquet", ".pq"):
            parquet = pq.ParquetFile(self.path)
            yield from parquet.iter_batches(batch_size=self.batch_rows, columns=self.columns)
        elif suffix in (".jsonl", ".json", ".ndjson"):
            yield from _jsonl_lines(self.path, self.batch_rows)
        else:
            yield from _ipc_batches(self.path, self.columns)


def _with_sources(batch: pa.RecordBatch, file_index: int, first_row: int) -> pa.Table:
    rows = batch.num_rows
    table = pa.Table.from_batches([batch])
    files = np.full(rows, file_index, dtype=np.uint32)
    table = table.append_column(_native.SOURCE_FILE_COLUMN, pa.array(files))
    numbers = np.arange(first_row, first_row + rows, dtype=np.uint64)
    return table.append_column(_native.SOURCE_ROW_COLUMN, pa.array(numbers))


def _jsonl_lines(path: Path, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """The file's lines, blank ones included so that row numbers are line numbers."""
    with path.open("rb") as file:
        lines: list[bytes] = []
        for number, line in enumerate(file):
            lines.append(line.removeprefix(_UTF8_BOM) if number == 0 else line)
            if len(lines) == batch_rows:
                yield _lines_batch(lines)
                lines = []
        if lines:
            yield _lines_batch(lines)


def _lines_batch(lines: list[bytes]) -> pa.RecordBatch:
    return pa.record_batch([pa.array(lines, pa.binary())], names=[_native.LINE_COLUMN])


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
