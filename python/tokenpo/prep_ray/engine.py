"""The Ray engine of `tokenpo.prep`: the local engine's two passes, distributed.

1. Ray Data reads the inputs (`InputFiles`) and `map_batches` runs pass 1 of the Rust
   kernel on each block of raw rows (Arrow in and out; the kernel releases the GIL):
   prepared pairs and quarantine records, kept in the object store in input order.
2. One task per block of that output sets apart what the driver needs: its quarantine
   records, its difficulty keys (two numbers a pair) and its token document frequencies.
   The frequencies are summed in a tree of tasks; the records and keys are gathered on
   the driver, which ranks the keys once. Frequencies and keys are broadcast with
   `ray.put` to the shard writers.
3. The pairs, in input order, are cut into shards of `shard_rows`; one task per shard
   runs pass 2 of the kernel (importance weights, difficulty) and writes it.
4. The driver writes `quarantine.jsonl` and `manifest.json` with the local engine's code.

Steps 2 and 3 are plain Ray tasks on the blocks, not Ray Data: every Ray Data execution
costs about a second of scheduling however little it does, and they would take five.

The output is the local engine's, row for row, for the same inputs and config. Every
node must see the inputs, the tokenizer and the output directory at the same paths.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.data import DataContext

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
        blocks = _pass_one(InputFiles(run.files, columns, kernel.batch_rows), kernel)
        block_records = ray.get([block.quarantined for block in blocks])
        quarantined = _gathered(block_records, _QUARANTINE_SCHEMA)
        block_keys = ray.get([block.keys for block in blocks])
        keys = _gathered(block_keys, _KEY_SCHEMA)
        pairs = keys.num_rows
        report("tokenized", pairs + quarantined.num_rows, pairs, quarantined.num_rows)
        documents, counts = _document_frequencies([block.counts for block in blocks])
        difficulty_source, sorted_keys = _native.difficulty_scale(keys)
        job = _ShardJob(
            out=str(out),
            config_json=config_json,
            fingerprint=run.fingerprint,
            documents=documents,
            difficulty_source=difficulty_source,
        )
        shards = _shard_slices([table.num_rows for table in block_keys], job.shard_rows)
        written = _write_shards(blocks, shards, job, ray.put(counts), ray.put(sorted_keys), report)
        records, sums = zip(*written, strict=True) if written else ((), ())
        return run.finish(list(records), list(sums), quarantined, difficulty_source)


@dataclass(frozen=True, slots=True)
class _Block:
    """A block of pass 1's output (pairs and quarantine records, in one table) and what
    the driver needs of it, all in the object store."""

    outcomes: ray.ObjectRef[pa.Table]
    quarantined: ray.ObjectRef[pa.Table]
    keys: ray.ObjectRef[pa.Table]
    counts: ray.ObjectRef[pa.Table]


def _pass_one(inputs: InputFiles, kernel: _Kernel) -> list[_Block]:
    """Pass 1 on the workers, its output in input order, each block set apart."""
    outcomes = (
        ray.data.read_datasource(inputs, override_num_blocks=_read_blocks(inputs))
        .map_batches(kernel.prepare_block, batch_format="pyarrow")
        .to_arrow_refs()
    )
    return [_set_apart(kernel, block) for block in outcomes]


def _read_blocks(inputs: InputFiles) -> int:
    """How many blocks pass 1 reads: one per read task, and at least two per CPU.

    When the read tasks alone are that many, Ray Data runs the kernel inside them (fused),
    so no CPU waits on a read; otherwise it splits each task's rows into equal blocks.
    Ray Data's default, blocks of at least 1 MiB, suits light transforms, not this kernel
    (about half a second a MiB of chat pairs): Ray Data takes ~0.1 s to schedule each
    task, and a read task holds a CPU while it feeds them blocks at that pace."""
    cpus = int(ray.cluster_resources().get("CPU", 1))  # type: ignore[no-untyped-call]
    return max(inputs.pieces, 2 * cpus)


def _set_apart(kernel: _Kernel, outcomes: ray.ObjectRef[pa.Table]) -> _Block:
    # A task of three returns gives three references, whatever Ray's type stubs say.
    quarantined, keys, counts = cast(
        "list[ray.ObjectRef[pa.Table]]", _set_apart_task.remote(kernel, outcomes)
    )
    return _Block(outcomes, quarantined, keys, counts)


@ray.remote(num_returns=3)
def _set_apart_task(kernel: _Kernel, outcomes: pa.Table) -> tuple[pa.Table, pa.Table, pa.Table]:
    """A block's quarantine records, its pairs' difficulty keys and their token document
    frequencies."""
    pairs = _pairs_only(outcomes)
    keys = pairs.select(_KEY_SCHEMA.names)
    return _quarantined_only(outcomes), keys, kernel.count_block(pairs)


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


def _gathered(tables: list[pa.Table], schema: pa.Schema) -> pa.RecordBatch:
    """Small tables, as one record batch of ``schema``."""
    return _one_batch(
        pa.concat_tables([schema.empty_table(), *tables], promote_options="permissive")
    )


def _one_batch(table: pa.Table) -> pa.RecordBatch:
    return pa.record_batch(
        [column.combine_chunks() for column in table.columns], schema=table.schema
    )


def _document_frequencies(counts: list[ray.ObjectRef[pa.Table]]) -> tuple[int, pa.Array]:
    """The blocks' counts summed in a tree of tasks, so that no task holds more than
    ``_FAN_IN`` vocabulary-long rows."""
    while len(counts) > 1:
        counts = [
            _sum_counts.remote(*counts[start : start + _FAN_IN])
            for start in range(0, len(counts), _FAN_IN)
        ]
    if not counts:
        return 0, pa.array([], pa.uint32())
    row = ray.get(counts[0])
    summed = np.asarray(row["counts"][0].values, dtype=np.uint64)
    clipped = np.minimum(summed, np.iinfo(np.uint32).max).astype(np.uint32)
    return int(row["documents"][0].as_py()), pa.array(clipped)


@ray.remote
def _sum_counts(*rows: pa.Table) -> pa.Table:
    documents, counts = 0, np.zeros(0, dtype=np.uint64)
    for row in rows:
        documents += row["documents"][0].as_py()
        counts = _add_counts(counts, row["counts"][0].values.to_numpy(zero_copy_only=False))
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

    @property
    def shard_rows(self) -> int:
        return int(json.loads(self.config_json)["shard_rows"])


def _write_shards(
    blocks: list[_Block],
    shards: list[list[tuple[int, int, int]]],
    job: _ShardJob,
    counts: ray.ObjectRef[pa.Array],
    sorted_keys: ray.ObjectRef[pa.RecordBatch],
    report: Callable[[str, int, int, int], None],
) -> list[tuple[str, str]]:
    """Writes each shard (its pairs as ``_shard_slices`` gives them) in a task of its own;
    returns each shard's record and sums (JSON), in shard order."""
    pending = {
        _write_shard.remote(
            index,
            job,
            counts,
            sorted_keys,
            [(start, stop) for _, start, stop in slices],
            *[blocks[block].outcomes for block, _, _ in slices],
        ): index
        for index, slices in enumerate(shards)
    }
    written: dict[int, tuple[str, str]] = {}
    while pending:
        [done], _ = ray.wait(list(pending), num_returns=1)
        written[pending.pop(done)] = ray.get(done)
        report("written", len(written), len(shards), 0)
    return [written[index] for index in range(len(shards))]


def _shard_slices(block_pairs: list[int], shard_rows: int) -> list[list[tuple[int, int, int]]]:
    """Per shard, its pairs as ``(block, start, stop)`` ranges of the blocks' pairs."""
    shards: list[list[tuple[int, int, int]]] = []
    room = 0
    for block, pairs in enumerate(block_pairs):
        start = 0
        while start < pairs:
            if room == 0:
                shards.append([])
                room = shard_rows
            stop = min(pairs, start + room)
            shards[-1].append((block, start, stop))
            room -= stop - start
            start = stop
    return shards


@ray.remote
def _write_shard(
    index: int,
    job: _ShardJob,
    counts: pa.Array,
    sorted_keys: pa.RecordBatch,
    ranges: list[tuple[int, int]],
    *outcomes: pa.Table,
) -> tuple[str, str]:
    """Pass 2 of one shard: weights and difficulty added, the shard written."""
    _preparer_threads()
    slices = [
        _pairs_only(table).slice(start, stop - start)
        for table, (start, stop) in zip(outcomes, ranges, strict=True)
    ]
    prepared = _one_batch(pa.concat_tables(slices))
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
