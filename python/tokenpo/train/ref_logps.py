"""Reference log-probs, computed once and stored in the shards (``tokenpo ref-logps``).

The reference model runs over every pair of a prepared directory and each shard gains two
columns, ``ref_chosen_logps`` and ``ref_rejected_logps`` (list<float32>, one value per
completion token: its log-prob given the prompt and the completion tokens before it). The
trainer then reads them instead of keeping a reference model in memory::

    tokenpo ref-logps shards/ --model runs/sft/final
    torchrun --nproc-per-node 8 -m tokenpo_cli ref-logps shards/ --model runs/sft/final

Each shard is rewritten under a temporary name and renamed over the original, in its own
format (zstd parquet or uncompressed Arrow IPC), with its schema metadata kept and the
reference's identity added under ``tokenpo.ref_model``. A re-run skips the shards that
already carry log-probs of the same reference, so a killed run resumes; another reference
recomputes everything. ``manifest.json`` is rewritten last, with each shard's new size and
checksum and a ``reference`` record. Under torchrun, rank ``r`` of ``W`` takes shards
``r, r + W, ...`` and rank 0 rewrites the manifest once all are done.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
import torch.distributed as dist
from torch import nn

from tokenpo.data.collate import collate
from tokenpo.data.dataset import REF_COLUMNS, SCHEMA_VERSION, PairDataset, file_sha256
from tokenpo.data.shards import read_shard
from tokenpo.exceptions import ConfigError, InputError, SchemaError, TokenizerError
from tokenpo.models import load_causal_lm
from tokenpo.prep import Manifest, ShardInfo
from tokenpo.train.distributed import World, world
from tokenpo.train.forward import CompletionScorer

__all__ = [
    "REF_MODEL_KEY",
    "RefLogpsOptions",
    "RefLogpsResult",
    "RefProgress",
    "compute_ref_logps",
    "reference_record",
]

REF_MODEL_KEY = "tokenpo.ref_model"
"""Shard schema metadata key: the identity (weights hash, dtype) of the reference whose
log-probs the shard holds, as canonical JSON."""

RefProgress = Callable[[int, int], None]
"""Called on rank 0 as ``(done_pairs, total_pairs)`` over that rank's shards."""

_WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.index.json")
"""Files of a model directory whose bytes, with ``config.json``, determine its outputs."""

_PARQUET_COMPRESSION = {"compression": "zstd", "compression_level": 3}
"""As prep writes parquet shards (crates/tokenpo-core/src/io/shard.rs)."""


@dataclass(kw_only=True, slots=True)
class RefLogpsOptions:
    """How the reference runs. The defaults suit one GPU or a CPU."""

    dtype: Literal["float32", "bfloat16"] = "float32"
    """The reference weights' dtype; log-probs are always stored as float32."""
    batch_size: int = 16
    """Pairs per forward pass."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``auto``: CUDA when available (each torchrun rank on its local GPU), else the CPU."""
    seed: int = 0
    """Seeds the random weights of a config-file reference (recorded in its identity)."""
    trust_remote_code: bool = False
    """Passed to transformers, for models whose code lives in their directory."""

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"dtype: must be 'float32' or 'bfloat16', got {self.dtype!r}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size: must be at least 1, got {self.batch_size}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device: must be 'auto', 'cpu' or 'cuda', got {self.device!r}")


@dataclass(frozen=True, slots=True)
class RefLogpsResult:
    """What a run did, summed over the ranks."""

    manifest: Manifest
    """The manifest as rewritten (on rank 0; on other ranks, as read)."""
    reference: dict[str, Any]
    """The manifest's ``reference`` record: ``model``, ``sha256``, ``dtype`` (and ``seed``
    for a config file)."""
    shards_written: int
    """Shards computed in this run."""
    shards_skipped: int
    """Shards that already held this reference's log-probs."""
    pairs_scored: int
    """Pairs run through the reference in this run."""
    seconds: float
    """Wall time of this process."""
    is_main: bool
    """Whether this is rank 0 (the one that reports)."""


def compute_ref_logps(
    shards: str | Path,
    model: str | Path,
    options: RefLogpsOptions | None = None,
    progress: RefProgress | None = None,
) -> RefLogpsResult:
    """Stores the reference log-probs of every pair of the prepared directory ``shards``.

    ``model`` is a model directory (``config.json`` + weights, e.g. a trainer's
    ``RUN_DIR/final``) or a config file, whose weights are then random from
    ``options.seed``. The built-in ``"gpt"`` is not accepted: a reference made of fresh
    random weights is only meaningful when it can be rebuilt, which a config file with a
    seed is.

    Everything is checked before a shard is touched; on any of these errors nothing is
    written.

    Raises:
        InputError: no manifest, a schema version this tokenpo does not read, a shard
            missing, short or without token columns, a pair with an empty prompt, or a
            reference whose vocabulary does not cover the shards' token ids.
        TokenizerError: the model directory's ``tokenizer.json`` is not the tokenizer the
            shards were prepared with.
        ConfigError: a model source that does not exist or cannot be loaded.
    """
    started = time.perf_counter()
    options = options or RefLogpsOptions()
    manifest = Manifest.read(Path(shards))
    _check_schema_version(manifest)
    source = Path(model)
    if not source.exists():
        raise ConfigError(
            f"reference model {str(source)!r} does not exist; expected a model directory "
            "(config.json + weights, e.g. RUN_DIR/final) or a config.json file"
        )
    _check_tokenizer(manifest, source)
    largest_id = _scan_token_ids(manifest)
    reference = reference_record(source, options)
    identity = _identity(reference)
    with world(options.device) as world_:
        scorer = _load_scorer(source, options, world_.device, largest_id)
        mine = manifest.shards[world_.rank :: world_.world_size]
        counter = _Counter(sum(shard.rows for shard in mine), progress if world_.is_main else None)
        written = skipped = 0
        for shard in mine:
            if _holds_reference(shard.path, identity):
                skipped += 1
                counter.add(shard.rows)
                continue
            _rewrite_shard(manifest, shard, scorer, identity, options.batch_size, counter)
            written += 1
        # The sum over ranks is also the barrier: every rank has renamed its shards into
        # place before rank 0 hashes them for the manifest.
        totals = _sum_over_ranks([written, skipped, counter.scored], world_)
        if world_.is_main:
            manifest = _rewrite_manifest(manifest.directory, reference)
        return RefLogpsResult(
            manifest=manifest,
            reference=reference,
            shards_written=totals[0],
            shards_skipped=totals[1],
            pairs_scored=totals[2],
            seconds=time.perf_counter() - started,
            is_main=world_.is_main,
        )


def reference_record(source: Path, options: RefLogpsOptions) -> dict[str, Any]:
    """The manifest's ``reference`` record for ``source``: its path as given, the SHA-256
    of what determines its outputs (a directory's ``config.json`` and weight files, or a
    config file), the dtype, and for a config file the seed of its random weights."""
    record: dict[str, Any] = {
        "model": str(source),
        "sha256": _model_sha256(source),
        "dtype": options.dtype,
    }
    if source.is_file():
        record["seed"] = options.seed
    return record


def _model_sha256(source: Path) -> str:
    if source.is_file():
        return file_sha256(source)
    names = {"config.json"}
    for pattern in _WEIGHT_PATTERNS:
        names.update(path.name for path in source.glob(pattern) if path.is_file())
    digest = hashlib.sha256()
    for name in sorted(names):
        path = source / name
        if path.is_file():
            digest.update(f"{name} {file_sha256(path)}\n".encode())
    return digest.hexdigest()


def _identity(reference: dict[str, Any]) -> str:
    """What makes two runs' log-probs the same: everything but the path."""
    return json.dumps({k: v for k, v in reference.items() if k != "model"}, sort_keys=True)


def _check_schema_version(manifest: Manifest) -> None:
    version = manifest.raw.get("schema_version")
    if version != SCHEMA_VERSION:
        where = manifest.directory / "manifest.json"
        raise InputError(
            f"{where}: schema version {version!r}; this tokenpo reads version {SCHEMA_VERSION}"
            " (re-run `tokenpo prep`)",
            file=str(where),
            field="schema_version",
        )


def _check_tokenizer(manifest: Manifest, source: Path) -> None:
    """A model directory that ships a tokenizer must ship the data's."""
    tokenizer = source / "tokenizer.json"
    if not tokenizer.is_file():
        return
    recorded = manifest.raw.get("tokenizer", {})
    model_sha256 = file_sha256(tokenizer)
    if model_sha256 != recorded.get("sha256"):
        raise TokenizerError(
            f"{tokenizer}: the reference model's tokenizer (sha256 {model_sha256[:12]}...) is "
            f"not the one the shards were prepared with ({recorded.get('path')}, sha256 "
            f"{str(recorded.get('sha256'))[:12]}...); use the model the data was tokenized "
            "for, or re-run `tokenpo prep` with its tokenizer",
            file=str(tokenizer),
        )


def _scan_token_ids(manifest: Manifest) -> int:
    """The largest token id over all shards, after checking each shard is whole and every
    prompt gives its completions some context."""
    largest = 0
    for shard in manifest.shards:
        table = _read_columns(shard, ("pair_id", "prompt_ids", "chosen_ids", "rejected_ids"))
        prompt_lengths = pc.list_value_length(table.column("prompt_ids"))
        if table.num_rows and pc.min(prompt_lengths).as_py() == 0:
            row = pc.index(prompt_lengths, 0).as_py()
            raise InputError(
                f"{shard.path}: pair {table.column('pair_id')[row].as_py()!r} (row {row}) has an "
                "empty prompt: its first completion token has no context to be predicted from",
                file=str(shard.path),
                row=row,
                field="prompt_ids",
            )
        for name in ("prompt_ids", "chosen_ids", "rejected_ids"):
            flat = pc.list_flatten(table.column(name))
            if len(flat):
                largest = max(largest, int(pc.max(flat).as_py()))
    return largest


def _read_columns(shard: ShardInfo, names: Sequence[str]) -> pa.Table:
    """Some columns of ``shard``, which must exist and hold the manifest's row count."""
    if not shard.path.is_file():
        raise InputError(f"{shard.path}: listed in the manifest but missing", file=str(shard.path))
    try:
        if shard.path.suffix == ".parquet":
            schema_names = pq.read_schema(shard.path).names
            table = None
        else:
            table = read_shard(shard.path)
            schema_names = table.column_names
        missing = [name for name in names if name not in schema_names]
        if missing:
            raise SchemaError(
                f"{shard.path}: not a prepared shard: no column {', '.join(missing)}",
                file=str(shard.path),
                field=missing[0],
            )
        table = pq.read_table(shard.path, columns=list(names)) if table is None else table
    except (OSError, pa.ArrowInvalid) as error:
        raise InputError(
            f"{shard.path}: cannot read the shard: {error}", file=str(shard.path)
        ) from error
    if table.num_rows != shard.rows:
        raise InputError(
            f"{shard.path}: holds {table.num_rows} rows, the manifest says {shard.rows}",
            file=str(shard.path),
        )
    return table.select(list(names))


def _load_scorer(
    source: Path, options: RefLogpsOptions, device: torch.device, largest_id: int
) -> CompletionScorer:
    dtype = torch.bfloat16 if options.dtype == "bfloat16" else torch.float32
    model = load_causal_lm(
        source, dtype=dtype, trust_remote_code=options.trust_remote_code, seed=options.seed
    )
    vocabulary = _vocabulary_size(model)
    if largest_id >= vocabulary:
        raise InputError(
            f"reference model {str(source)!r} has a vocabulary of {vocabulary} tokens, but the "
            f"shards hold token id {largest_id}: the model was not built for the tokenizer the "
            "data was prepared with",
            file=str(source),
        )
    config = getattr(model, "config", None)
    if hasattr(config, "use_cache"):
        config.use_cache = False  # type: ignore[union-attr]
    model.requires_grad_(False).eval()
    return CompletionScorer(model.to(device))


def _vocabulary_size(model: nn.Module) -> int:
    """Rows of the input and output embeddings (the fewer, if they differ)."""
    sizes = [
        int(module.weight.shape[0])
        for module in (
            model.get_input_embeddings(),  # type: ignore[operator]
            model.get_output_embeddings(),  # type: ignore[operator]
        )
        if module is not None
    ]
    return min(sizes)


class _Counter:
    """Pairs done over pairs to do, reported to the progress callback."""

    def __init__(self, total: int, progress: RefProgress | None) -> None:
        self.total = total
        self.done = 0
        self.scored = 0
        self.progress = progress
        if progress is not None:
            progress(0, total)

    def add(self, pairs: int, *, scored: bool = False) -> None:
        self.done += pairs
        self.scored += pairs if scored else 0
        if self.progress is not None:
            self.progress(self.done, self.total)


def _holds_reference(path: Path, identity: str) -> bool:
    """Whether the shard already holds log-probs of this reference (a shard under its final
    name is complete: it is only ever renamed into place)."""
    if path.suffix == ".parquet":
        schema = pq.read_schema(path)
    else:
        with pa.memory_map(str(path)) as source:
            schema = pa.ipc.open_file(source).schema
    metadata = schema.metadata or {}
    return (
        all(name in schema.names for name in REF_COLUMNS)
        and metadata.get(REF_MODEL_KEY.encode()) == identity.encode()
    )


@torch.no_grad()
def _rewrite_shard(
    manifest: Manifest,
    shard: ShardInfo,
    scorer: CompletionScorer,
    identity: str,
    batch_size: int,
    counter: _Counter,
) -> None:
    table = read_shard(shard.path)
    table = table.drop_columns([name for name in REF_COLUMNS if name in table.column_names])
    pairs = PairDataset(manifest, table)
    device = next(scorer.parameters()).device
    chosen: list[np.ndarray] = []
    rejected: list[np.ndarray] = []
    for start in range(0, len(pairs), batch_size):
        rows = pairs.rows(np.arange(start, min(start + batch_size, len(pairs))), with_ref=False)
        batch = collate(rows, layout="shared").to(device)
        scores = scorer.score(batch)
        chosen.append(scores.chosen[batch.chosen_mask].cpu().numpy())
        rejected.append(scores.rejected[batch.rejected_mask].cpu().numpy())
        counter.add(len(rows), scored=True)
    item = pa.list_(pa.float32())
    for name, values, ids in zip(
        REF_COLUMNS, (chosen, rejected), ("chosen_ids", "rejected_ids"), strict=True
    ):
        table = table.append_column(pa.field(name, item), _like(table.column(ids), values))
    metadata = {**(table.schema.metadata or {}), REF_MODEL_KEY.encode(): identity.encode()}
    _write_atomically(table.replace_schema_metadata(metadata), shard.path)


def _like(ids: pa.ChunkedArray, values: list[np.ndarray]) -> pa.Array:
    """A list<float32> column of ``values`` (flat, row after row) shaped like ``ids``."""
    lengths = pc.list_value_length(ids).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.concatenate(values) if values else np.zeros(0, dtype=np.float32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=pa.float32()))


def _write_atomically(table: pa.Table, path: Path) -> None:
    """Writes ``table`` in ``path``'s format to ``path.tmp``, syncs it and renames it over
    ``path``: a file under its final name is always complete."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        if path.suffix == ".parquet":
            pq.write_table(table, temporary, **_PARQUET_COMPRESSION)
        else:
            with (
                pa.OSFile(str(temporary), "wb") as sink,
                pa.ipc.new_file(sink, table.schema) as out,
            ):
                out.write_table(table)
        _sync(temporary)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    temporary.replace(path)


def _sync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _sum_over_ranks(counts: list[int], world_: World) -> list[int]:
    if not world_.distributed:
        return counts
    summed = torch.tensor(counts, dtype=torch.int64, device=world_.device)
    dist.all_reduce(summed)
    return [int(count) for count in summed.tolist()]


def _rewrite_manifest(directory: Path, reference: dict[str, Any]) -> Manifest:
    """The manifest with each shard's new size and checksum and the ``reference`` record,
    written through a temporary file and a rename (only when it changed)."""
    path = directory / "manifest.json"
    before = path.read_text(encoding="utf-8")
    raw = json.loads(before)
    for record in raw["shards"]:
        shard = directory / record["path"]
        record["bytes"] = shard.stat().st_size
        record["sha256"] = file_sha256(shard)
    raw["reference"] = reference
    text = json.dumps(raw, indent=2, ensure_ascii=False) + "\n"
    if text != before:
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(text, encoding="utf-8")
        _sync(temporary)
        temporary.replace(path)
    return Manifest.from_json(directory, text)
