"""The pairs of a prepared directory, ready for the trainer: Arrow columns gathered by index.

IPC shards are memory-mapped, so opening a corpus costs its metadata, not its size; parquet
shards are decoded into memory. The manifest is checked before anything is read: its schema
version, that every shard it lists exists with the row count it records, and (when the
caller knows the model's tokenizer) that the tokenizer hash matches.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tokenpo.data.shards import read_shard
from tokenpo.exceptions import InputError
from tokenpo.prep import Manifest

__all__ = ["SCHEMA_VERSION", "PairDataset", "PairRows", "Ragged", "file_sha256"]

SCHEMA_VERSION = 1
"""The prepared-shard schema this trainer reads."""

REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")
"""Per-token reference log-probs, added to the shards by ``tokenpo ref-logps``."""


@dataclass(frozen=True, slots=True)
class Ragged:
    """Variable-length rows stored flat: row ``i`` is ``values[offsets[i]:offsets[i + 1]]``."""

    values: np.ndarray
    offsets: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        """Length of each row, int64 ``[B]``."""
        return np.diff(self.offsets)

    def row(self, index: int) -> np.ndarray:
        """Row ``index`` (a view)."""
        return self.values[self.offsets[index] : self.offsets[index + 1]]

    @classmethod
    def from_arrow(cls, column: pa.ChunkedArray | pa.Array) -> Ragged:
        """The rows of a list column (one chunk after ``take``), without copying the values
        when the column is already contiguous."""
        array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        offsets = array.offsets.to_numpy().astype(np.int64)
        values = array.values.to_numpy(zero_copy_only=False)
        start = offsets[0]
        return cls(values=values[start : offsets[-1]], offsets=offsets - start)


@dataclass(frozen=True, slots=True)
class PairRows:
    """A batch of pairs taken from a :class:`PairDataset`, as numpy arrays."""

    pair_id: list[str]
    prompt_ids: Ragged
    chosen_ids: Ragged
    rejected_ids: Ragged
    chosen_weight: Ragged
    rejected_weight: Ragged
    chosen_diff: Ragged
    rejected_diff: Ragged
    shared_prefix_len: np.ndarray
    """Leading completion tokens chosen and rejected have in common, int64 ``[B]``."""
    difficulty: np.ndarray
    """float32 ``[B]``."""
    ref_chosen: Ragged | None
    """Stored reference log-probs of the chosen tokens, when ``ref-logps`` has run."""
    ref_rejected: Ragged | None

    def __len__(self) -> int:
        return len(self.pair_id)

    def chosen_only(self) -> PairRows:
        """The same pairs with empty rejected completions: a batch that scores only the
        chosen side (supervised objectives)."""
        empty = Ragged(
            values=self.rejected_ids.values[:0], offsets=np.zeros(len(self) + 1, np.int64)
        )
        return replace(
            self,
            rejected_ids=empty,
            rejected_weight=replace(empty, values=self.rejected_weight.values[:0]),
            rejected_diff=replace(empty, values=self.rejected_diff.values[:0]),
            shared_prefix_len=np.zeros(len(self), np.int64),
            ref_rejected=None,
        )


class PairDataset:
    """All pairs of a prepared directory, in manifest order."""

    def __init__(self, manifest: Manifest, table: pa.Table) -> None:
        self.manifest = manifest
        self.table = table

    @classmethod
    def open(cls, directory: str | Path, *, tokenizer_sha256: str | None = None) -> PairDataset:
        """Reads the manifest of ``directory`` and maps its shards.

        Raises:
            InputError: no manifest, a schema version this trainer does not read, a missing
                or short shard, a tokenizer other than the model's, or no pairs at all.
        """
        manifest = Manifest.read(Path(directory))
        _check_manifest(manifest, tokenizer_sha256)
        tables = [_read_checked_shard(manifest, index) for index in range(len(manifest.shards))]
        if sum(table.num_rows for table in tables) == 0:
            raise InputError(f"{manifest.directory}: the prepared directory holds no pairs")
        table = pa.concat_tables(tables, promote_options="permissive")
        return cls(manifest, table)

    def __len__(self) -> int:
        return int(self.table.num_rows)

    @property
    def has_ref_logps(self) -> bool:
        """Whether every shard carries stored reference log-probs."""
        names = self.table.column_names
        return all(name in names for name in REF_COLUMNS) and all(
            self.table.column(name).null_count == 0 for name in REF_COLUMNS
        )

    def column(self, name: str) -> np.ndarray:
        """A scalar column as numpy (e.g. ``difficulty`` for the curriculum).

        Raises:
            InputError: no such column, or it holds nulls.
        """
        if name not in self.table.column_names:
            raise InputError(
                f"{self.manifest.directory}: no column {name!r}; "
                f"columns: {', '.join(self.table.column_names)}",
                file=str(self.manifest.directory),
                field=name,
            )
        column = self.table.column(name)
        if column.null_count:
            raise InputError(
                f"{self.manifest.directory}: column {name!r} has {column.null_count} null(s)",
                file=str(self.manifest.directory),
                field=name,
            )
        return np.asarray(column.to_numpy())

    def rows(self, indices: np.ndarray, *, with_ref: bool | None = None) -> PairRows:
        """The pairs at ``indices`` (positions in manifest order). ``with_ref`` defaults to
        :attr:`has_ref_logps`."""
        use_ref = self.has_ref_logps if with_ref is None else with_ref
        taken = self.table.take(pa.array(np.asarray(indices, dtype=np.int64)))

        def ragged(name: str) -> Ragged:
            return Ragged.from_arrow(taken.column(name))

        return PairRows(
            pair_id=taken.column("pair_id").to_pylist(),
            prompt_ids=ragged("prompt_ids"),
            chosen_ids=ragged("chosen_ids"),
            rejected_ids=ragged("rejected_ids"),
            chosen_weight=ragged("chosen_weight"),
            rejected_weight=ragged("rejected_weight"),
            chosen_diff=ragged("chosen_diff"),
            rejected_diff=ragged("rejected_diff"),
            shared_prefix_len=taken.column("shared_prefix_len").to_numpy().astype(np.int64),
            difficulty=taken.column("difficulty").to_numpy().astype(np.float32),
            ref_chosen=ragged(REF_COLUMNS[0]) if use_ref else None,
            ref_rejected=ragged(REF_COLUMNS[1]) if use_ref else None,
        )

    def max_token_id(self) -> int:
        """The largest token id in prompts and completions (the model's vocabulary must
        cover it)."""
        largest = 0
        for name in ("prompt_ids", "chosen_ids", "rejected_ids"):
            flat = pc.list_flatten(self.table.column(name))
            if len(flat):
                largest = max(largest, int(pc.max(flat).as_py()))
        return largest


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, as prep records the tokenizer's."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_manifest(manifest: Manifest, tokenizer_sha256: str | None) -> None:
    where = manifest.directory / "manifest.json"
    version = manifest.raw.get("schema_version")
    if version != SCHEMA_VERSION:
        raise InputError(
            f"{where}: schema version {version!r}; this tokenpo reads version {SCHEMA_VERSION}"
            " (re-run `tokenpo prep`)",
            file=str(where),
            field="schema_version",
        )
    recorded = manifest.raw.get("tokenizer", {}).get("sha256")
    if tokenizer_sha256 is not None and recorded != tokenizer_sha256:
        raise InputError(
            f"{where}: the shards were tokenized with another tokenizer "
            f"(sha256 {str(recorded)[:12]}..., the model's is {tokenizer_sha256[:12]}...); "
            "re-run `tokenpo prep` with the model's tokenizer",
            file=str(where),
            field="tokenizer.sha256",
        )


def _read_checked_shard(manifest: Manifest, index: int) -> pa.Table:
    shard = manifest.shards[index]
    if not shard.path.is_file():
        raise InputError(
            f"{shard.path}: listed in {manifest.directory / 'manifest.json'} but missing",
            file=str(shard.path),
        )
    table = read_shard(shard.path)
    if table.num_rows != shard.rows:
        raise InputError(
            f"{shard.path}: holds {table.num_rows} rows, the manifest says {shard.rows}",
            file=str(shard.path),
        )
    return table
