"""The Ray engine of `tokenpo.prep`: the local engine's two passes, distributed.

1. Ray Data reads the inputs (`InputFiles`) and `map_batches` runs pass 1 of the Rust
   kernel on each block of raw rows (Arrow in and out; the kernel releases the GIL):
   prepared pairs and quarantine records.
2. Token document frequencies are counted per block on the workers and summed in a tree
   of Ray Data maps; the difficulty keys (two numbers a pair) are gathered and ranked once
   on the driver. Both are broadcast with `ray.put` to the shard writers.
3. The pairs, in input order, are cut into shards of `shard_rows`; one Ray task per shard
   runs pass 2 of the kernel (importance weights, difficulty) and writes it.
4. The driver writes `quarantine.jsonl` and `manifest.json` with the local engine's code.

The output is the local engine's, row for row, for the same inputs and config. Every
node must see the inputs, the tokenizer and the output directory at the same paths.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.data import DataContext, Dataset

from tokenpo import _native
from tokenpo.prep_ray.source import InputFiles

__all__ = ["prep_on_ray"]

_QUARANTINE_SCHEMA = pa.schema(
    [
        ("source_file", pa.uint32()),
        ("source_row", pa.uint64()),
        ("quarantine_field", pa.string()),
        ("quarantine_reason", pa.string()),
    ]
)
_KEY_SCHEMA = pa.schema([("score_margin", pa.float32()), ("difficulty_key", pa.float64())])
# Blocks of partial token counts summed by one task of the frequency tree.
_FAN_IN = 16


def prep_on_ray(
    inputs: list[str],
    tokenizer: str,
    out: Path,
    config_json: str,
    progress: Callable[[str, int, int, int], None] | None,
    address: str | None,
) -> str:
    """Runs prep on the Ray cluster at ``address`` (a new local one when ``None`` and none
    is running); returns the manifest as JSON."""
    run = _native.PrepRun(inputs, tokenizer, str(out), config_json)
    if run.finished_manifest is not None:
        return run.finished_manifest
    columns = run.input_columns()
    out.mkdir(parents=True, exist_ok=True)
    report = progress or (lambda kind, a, b, c: None)
    with _connected(address), _in_input_order():
        kernel = _Kernel(tokenizer, config_json)
        pairs, quarantined = _pass_one(InputFiles(run.files, columns, kernel.batch_rows), kernel)
        total = pairs.count()
        report("tokenized", total + quarantined.num_rows, total, quarantined.num_rows)
        documents, counts = _document_frequencies(pairs, kernel)
        keys = _gathered(pairs.select_columns(_KEY_SCHEMA.names), _KEY_SCHEMA)
        difficulty_source, sorted_keys = _native.difficulty_scale(keys)
        job = _ShardJob(
            out=str(out),
            config_json=config_json,
            fingerprint=run.fingerprint,
            documents=documents,
            difficulty_source=difficulty_source,
        )
        written = _write_shards(pairs, total, job, ray.put(counts), ray.put(sorted_keys), report)
        records, sums = zip(*written, strict=True) if written else ((), ())
        return run.finish(list(records), list(sums), quarantined, difficulty_source)


def _pass_one(inputs: InputFiles, kernel: _Kernel) -> tuple[Dataset, pa.RecordBatch]:
    """Pass 1 on the workers: the pairs (kept in the object store, in input order) and
    the quarantine records (gathered on the driver)."""
    outcomes = (
        ray.data.read_datasource(inputs)
        .map_batches(kernel.prepare_block, batch_format="pyarrow")
        .materialize()
    )
    pairs = outcomes.map_batches(_pairs_only, batch_format="pyarrow").materialize()
    quarantined = outcomes.map_batches(_quarantined_only, batch_format="pyarrow")
    return pairs, _gathered(quarantined, _QUARANTINE_SCHEMA)


@contextmanager
def _connected(address: str | None) -> Iterator[None]:
    """Uses the Ray session already open (whatever ``address`` says), else connects to
    ``address`` (or starts a local instance) for the run."""
    if ray.is_initialized():
        yield
        return
    ray.init(address=address, include_dashboard=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


@contextmanager
def _in_input_order() -> Iterator[None]:
    """Ray Data keeps blocks in input order (shards are cut by position) and stays quiet."""
    context = DataContext.get_current()
    saved = (context.execution_options.preserve_order, context.enable_progress_bars)
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    try:
        yield
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars = saved


class _Kernel:
    """The per-block work of the workers: small, so Ray ships it with every task; the
    native preparer it uses is made once per worker process."""

    def __init__(self, tokenizer: str, config_json: str) -> None:
        self.tokenizer = tokenizer
        self.config_json = config_json
        self.batch_rows = int(json.loads(config_json)["batch_rows"])

    def prepare_block(self, block: pa.Table) -> pa.Table:
        """Pass 1: raw rows to prepared pairs and quarantine records, in one table."""
        preparer = _preparer(self.tokenizer, self.config_json)
        tables = []
        for batch in block.combine_chunks().to_batches():
            pairs, quarantined = preparer.prepare(batch)
            tables += [pa.Table.from_batches([pairs]), pa.Table.from_batches([quarantined])]
        return pa.concat_tables(tables, promote_options="default")

    def count_block(self, block: pa.Table) -> pa.Table:
        """The token document frequencies of a block of pairs, as one row."""
        preparer = _preparer(self.tokenizer, self.config_json)
        documents, counts = 0, np.zeros(0, dtype=np.uint64)
        for batch in block.combine_chunks().to_batches():
            batch_documents, batch_counts = preparer.frequencies(batch)
            documents += batch_documents
            counts = _add_counts(counts, batch_counts.to_numpy())
        return _counts_row(documents, counts)


@functools.cache
def _preparer(tokenizer: str, config_json: str) -> _native.ShippedBatchPreparer:
    """One preparer per worker process: the tokenizer loads once, prompts stay cached."""
    _preparer_threads()
    return _native.ShippedBatchPreparer(tokenizer, config_json)


def _preparer_threads() -> None:
    """Sizes the kernel's thread pool to the task's CPUs, before its first use."""
    # Ray hands a task its CPUs in OMP_NUM_THREADS; without this the kernel's thread pool
    # would start a thread per core of the node in every worker.
    os.environ.setdefault("RAYON_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))


def _pairs_only(outcomes: pa.Table) -> pa.Table:
    reasons = outcomes["quarantine_reason"]
    # Most blocks quarantine nothing: dropping columns copies no data, filtering would.
    kept = outcomes if reasons.null_count == len(reasons) else outcomes.filter(pc.is_null(reasons))
    return kept.drop_columns(["quarantine_field", "quarantine_reason"])


def _quarantined_only(outcomes: pa.Table) -> pa.Table:
    return outcomes.filter(pc.is_valid(outcomes["quarantine_reason"])).select(
        _QUARANTINE_SCHEMA.names
    )


def _gathered(dataset: Dataset, schema: pa.Schema) -> pa.RecordBatch:
    """Every row of a small dataset, on the driver, as one record batch of ``schema``."""
    tables = [table.select(schema.names) for table in ray.get(dataset.to_arrow_refs())]
    return _one_batch(
        pa.concat_tables([schema.empty_table(), *tables], promote_options="permissive")
    )


def _one_batch(table: pa.Table) -> pa.RecordBatch:
    return pa.record_batch(
        [column.combine_chunks() for column in table.columns], schema=table.schema
    )


def _document_frequencies(pairs: Dataset, kernel: _Kernel) -> tuple[int, pa.Array]:
    """Counts per block on the workers, summed in a tree of maps to one row."""
    partial = pairs.map_batches(kernel.count_block, batch_format="pyarrow").materialize()
    while partial.count() > 1:
        partial = partial.map_batches(
            _sum_counts, batch_size=_FAN_IN, batch_format="pyarrow"
        ).materialize()
    rows = partial.take_all()
    if not rows:
        return 0, pa.array([], pa.uint32())
    counts = np.minimum(np.asarray(rows[0]["counts"], dtype=np.uint64), np.iinfo(np.uint32).max)
    return int(rows[0]["documents"]), pa.array(counts.astype(np.uint32))


def _sum_counts(rows: pa.Table) -> pa.Table:
    documents = pc.sum(rows["documents"]).as_py() or 0
    counts = np.zeros(0, dtype=np.uint64)
    lists = rows["counts"].combine_chunks()
    for row in range(len(lists)):
        counts = _add_counts(counts, lists[row].values.to_numpy(zero_copy_only=False))
    return _counts_row(documents, counts)


def _add_counts(total: np.ndarray, more: np.ndarray) -> np.ndarray:
    """``total + more``, the shorter padded with zeros (ids past the end count 0)."""
    width = max(len(total), len(more))
    summed = np.zeros(width, dtype=np.uint64)
    summed[: len(total)] += total
    summed[: len(more)] += more
    return summed


def _counts_row(documents: int, counts: np.ndarray) -> pa.Table:
    return pa.table(
        {
            "documents": pa.array([documents], pa.uint64()),
            "counts": pa.array([counts], pa.list_(pa.uint64())),
        }
    )


@dataclass(frozen=True, slots=True)
class _ShardJob:
    """What every shard writer needs besides its pairs and the two broadcast arrays."""

    out: str
    config_json: str
    fingerprint: str
    documents: int
    difficulty_source: str


def _write_shards(
    pairs: Dataset,
    total: int,
    job: _ShardJob,
    counts: ray.ObjectRef[pa.Array],
    sorted_keys: ray.ObjectRef[pa.Array],
    report: Callable[[str, int, int, int], None],
) -> list[tuple[str, str]]:
    """Cuts the pairs into shards of ``shard_rows`` in input order, writes each in a task
    of its own; returns each shard's record and sums (JSON), in shard order."""
    shard_rows = int(json.loads(job.config_json)["shard_rows"])
    bounds = list(range(shard_rows, total, shard_rows))
    pieces: Sequence[Dataset] = (
        pairs.split_at_indices(bounds) if bounds else [pairs][: min(total, 1)]
    )
    pending = {
        _write_shard.remote(index, job, counts, sorted_keys, *piece.to_arrow_refs()): index
        for index, piece in enumerate(pieces)
    }
    written: dict[int, tuple[str, str]] = {}
    while pending:
        [done], _ = ray.wait(list(pending), num_returns=1)
        written[pending.pop(done)] = ray.get(done)
        report("written", len(written), len(pieces), 0)
    return [written[index] for index in range(len(pieces))]


@ray.remote
def _write_shard(
    index: int,
    job: _ShardJob,
    counts: pa.Array,
    sorted_keys: pa.Array,
    *tables: pa.Table,
) -> tuple[str, str]:
    """Pass 2 of one shard: weights and difficulty added, the shard written."""
    _preparer_threads()
    prepared = _one_batch(pa.concat_tables(tables))
    return _native.finish_shard(
        prepared,
        index=index,
        out=job.out,
        config_json=job.config_json,
        fingerprint=job.fingerprint,
        documents=job.documents,
        counts=counts,
        sorted_keys=sorted_keys,
        difficulty_source=job.difficulty_source,
    )
