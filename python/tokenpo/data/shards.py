"""Reading rows of prepared shards (the output of `tokenpo.prep`)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq

from tokenpo.exceptions import InputError
from tokenpo.prep import Manifest

__all__ = ["read_prepared_row", "read_shard"]


def read_shard(path: Any) -> pa.Table:
    """One shard as a table (parquet, or Arrow IPC memory-mapped)."""
    if str(path).endswith(".parquet"):
        return pq.read_table(path)
    return feather.read_table(path, memory_map=True)


def read_prepared_row(manifest: Manifest, index: int) -> dict[str, Any]:
    """Pair ``index`` (from 0, across all shards in order) as a dict of Python values."""
    if not 0 <= index < manifest.pairs:
        raise InputError(
            f"{manifest.directory}: pair {index} does not exist; it holds {manifest.pairs} pairs",
            file=str(manifest.directory),
            row=index,
        )
    for shard in manifest.shards:
        if index < shard.rows:
            row: dict[str, Any] = read_shard(shard.path).slice(index, 1).to_pylist()[0]
            return row
        index -= shard.rows
    raise InputError(f"{manifest.directory}: the manifest's shard row counts are inconsistent")
