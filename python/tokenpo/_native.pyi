"""Type stubs of the native extension ``tokenpo._native`` (built from crates/tokenpo-py)."""

from collections.abc import Callable, Sequence
from pathlib import Path

import pyarrow as pa

__version__: str
DEFAULT_MAX_EDIT_DISTANCE: int
SOURCE_FILE_COLUMN: str
SOURCE_ROW_COLUMN: str
LINE_COLUMN: str
ELEMENT_COLUMN: str

class TokenDiff:
    """The diff of one pair of token sequences."""

    @property
    def a_mask(self) -> list[int]:
        """One int per token of ``a``: 1 where it lies outside the longest common subsequence."""
    @property
    def b_mask(self) -> list[int]:
        """One int per token of ``b``: 1 where it lies outside the longest common subsequence."""
    @property
    def edit_distance(self) -> int:
        """Insertions plus deletions turning ``a`` into ``b`` (``len(a) + len(b)`` if unaligned)."""
    @property
    def lcs_len(self) -> int:
        """Length of the longest common subsequence (0 if unaligned)."""
    @property
    def shared_prefix_len(self) -> int:
        """Number of leading tokens both sequences share."""
    @property
    def unaligned(self) -> bool:
        """The edit distance exceeded ``max_edit_distance``; every token is marked."""

def diff_tokens(
    a: Sequence[int], b: Sequence[int], *, max_edit_distance: int = ...
) -> TokenDiff: ...
def diff_batch(
    chosen: pa.Array | pa.ChunkedArray,
    rejected: pa.Array | pa.ChunkedArray,
    *,
    max_edit_distance: int = ...,
) -> pa.RecordBatch: ...
def prep(
    inputs: list[str],
    tokenizer: str,
    out: str,
    config_json: str,
    progress: Callable[[str, int, int, int], None] | None = None,
) -> str: ...
def importance_preset(name: str) -> str: ...
def token_class_name(token_class: int, importance_json: str) -> str: ...

class PrepRun:
    """A prep run as planned on the driver, or the manifest of the same run already done."""

    def __init__(self, inputs: list[str], tokenizer: str, out: str, config_json: str) -> None: ...
    @property
    def finished_manifest(self) -> str | None:
        """The manifest (JSON) when the output directory already holds this run."""
    @property
    def files(self) -> list[Path]:
        """The input files in reading order (a row's ``source_file`` indexes this list)."""
    @property
    def fingerprint(self) -> str:
        """The run's fingerprint."""
    def input_columns(self) -> list[list[str]]:
        """Per input file, the pair columns to ship (none for JSON); checks each file."""
    def finish(
        self,
        shards_json: list[str],
        sums_json: list[str],
        quarantined: pa.RecordBatch,
        difficulty_source: str,
    ) -> str:
        """Writes ``quarantine.jsonl`` and ``manifest.json``; returns the manifest (JSON)."""

class JsonRecords:
    """The raw records of a JSON input for a read task to ship: record batches of one
    ``large_binary`` column, ``LINE_COLUMN`` (JSON Lines) or ``ELEMENT_COLUMN`` (the
    elements of a JSON array), every record in file order, so the ``n``th is row ``n``."""

    def __init__(self, path: str, batch_rows: int) -> None: ...
    def __iter__(self) -> JsonRecords: ...
    def __next__(self) -> pa.RecordBatch: ...

class ShippedBatchPreparer:
    """Pass 1 on a worker: shipped batches of raw rows to pairs and quarantine records."""

    def __init__(self, tokenizer: str, config_json: str) -> None: ...
    def prepare(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, pa.RecordBatch]:
        """``(pairs, quarantined)`` of a shipped batch; raises `TokenizerError` when a
        conversational row needs a chat template the tokenizer lacks or cannot parse."""
    def frequencies(self, prepared: pa.RecordBatch) -> tuple[int, pa.Array]:
        """``(documents, counts)``: token document frequencies of a batch of pairs."""

def difficulty_scale(keys: pa.RecordBatch) -> tuple[str, pa.RecordBatch]:
    """``(source, sorted_keys)`` of the whole corpus's ``score_margin``/``difficulty_key``;
    ``sorted_keys`` has float64 columns ``primary`` and ``tiebreak``."""

def finish_shard(
    prepared: pa.RecordBatch,
    *,
    index: int,
    out: str,
    config_json: str,
    fingerprint: str,
    documents: int,
    counts: pa.Array,
    sorted_keys: pa.RecordBatch,
    difficulty_source: str,
) -> tuple[str, str]:
    """Pass 2 of one shard, written to ``out``; ``(record, sums)`` as JSON."""
