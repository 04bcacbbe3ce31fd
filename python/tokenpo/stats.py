"""`tokenpo.stats`: what a prepared directory holds, in figures.

Reads the shards one at a time and keeps only per-value counts and sums between them, so
memory grows with the longest sequence and the number of token classes, never with the
number of pairs. Lengths and edit distances are counted exactly per integer value, so their
percentiles are exact (nearest rank), not read off coarse histogram bins.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from tokenpo.data.shards import read_shard
from tokenpo.exceptions import InputError, InvalidRowError, LengthMismatchError, SchemaError
from tokenpo.prep import Manifest, ShardInfo, token_class_name

__all__ = [
    "DIFFICULTY_BINS",
    "EDIT_DISTANCE_THRESHOLDS",
    "Distribution",
    "PairStats",
    "TokenClassStats",
    "compute_stats",
]

DIFFICULTY_BINS = 10
"""Equal-width difficulty bins over [0, 1]; the last one includes 1."""

EDIT_DISTANCE_THRESHOLDS = (2, 6)
"""Edit distances at or under which a pair counts as close (a few tokens apart)."""

_PARTS = ("prompt", "chosen", "rejected")
_SIDES = ("chosen", "rejected")
_TRUNCATED_BITS = {"prompt": 1, "chosen": 2, "rejected": 4}
_COLUMNS = (
    "prompt_ids",
    "chosen_ids",
    "rejected_ids",
    "chosen_diff",
    "rejected_diff",
    "chosen_weight",
    "rejected_weight",
    "chosen_class",
    "rejected_class",
    "edit_distance",
    "unaligned",
    "difficulty",
    "truncated",
)

_Counts = npt.NDArray[np.int64]
_Sums = npt.NDArray[np.float64]
_PerValue = TypeVar("_PerValue", _Counts, _Sums)


@dataclass(kw_only=True, slots=True)
class Distribution:
    """A non-negative integer quantity over the pairs (a length, an edit distance)."""

    mean: float
    """Mean over the pairs; 0 when there are none."""
    p50: int
    """Median, nearest rank (numpy's ``inverted_cdf``): a value some pair has."""
    p95: int
    """95th percentile, nearest rank."""
    max: int
    """Largest value."""
    counts: list[int]
    """``counts[v]``: pairs whose value is ``v``, for ``v`` from 0 to `max`; empty with no pairs."""

    @classmethod
    def from_counts(cls, counts: _Counts) -> Distribution:
        """Summarizes per-value counts (``counts[v]`` pairs have value ``v``)."""
        total = int(counts.sum())
        if total == 0:
            return cls(mean=0.0, p50=0, p95=0, max=0, counts=[])
        largest = int(np.flatnonzero(counts)[-1])
        return cls(
            mean=float((np.arange(len(counts)) * counts).sum()) / total,
            p50=_nearest_rank(counts, total, 0.50),
            p95=_nearest_rank(counts, total, 0.95),
            max=largest,
            counts=[int(count) for count in counts[: largest + 1]],
        )

    def share_at_most(self, limit: int) -> float:
        """Share of the pairs whose value is at most ``limit``; 0 with no pairs."""
        total = sum(self.counts)
        return sum(self.counts[: limit + 1]) / total if total else 0.0


@dataclass(kw_only=True, slots=True)
class TokenClassStats:
    """Completion tokens of one importance class, chosen and rejected together."""

    name: str
    """Readable class name (`tokenpo.prep.token_class_name`): text, scaffolding, value:code, ..."""
    tokens: int
    """Tokens of this class."""
    diff_tokens: int
    """Of those, tokens outside the longest common subsequence of the pair."""
    mean_weight: float
    """Mean importance weight of its tokens (the corpus-wide mean is about 1)."""


@dataclass(kw_only=True, slots=True)
class PairStats:
    """Figures of a prepared directory; `compute_stats` builds it."""

    directory: Path
    """The prepared directory."""
    shards: int
    """Shard files read."""
    rows_read: int
    """Rows read from the input files by prep (from the manifest)."""
    pairs: int
    """Pairs in the shards."""
    quarantined: dict[str, int]
    """Rows set aside by prep, by reason (the text before its first colon), most common first."""
    prompt_tokens: Distribution
    """Prompt length in tokens."""
    chosen_tokens: Distribution
    """Chosen completion length in tokens."""
    rejected_tokens: Distribution
    """Rejected completion length in tokens."""
    edit_distance: Distribution
    """Token edit distance between chosen and rejected, unaligned pairs included."""
    edit_distance_share_at_most: dict[int, float]
    """Share of the pairs with edit distance at most each of `EDIT_DISTANCE_THRESHOLDS`."""
    unaligned: int
    """Pairs whose edit distance exceeded prep's cap (every token marked as differing)."""
    truncated: int
    """Pairs cut to fit prep's ``max_len`` on any side."""
    truncated_by_side: dict[str, int]
    """Pairs cut, per side: prompt, chosen, rejected (a pair may count on several)."""
    difficulty_source: str
    """How prep scored difficulty: ``score_margin`` or ``token_separation``."""
    difficulty_mean: float
    """Mean difficulty (0 easy, 1 hard); 0 with no pairs."""
    difficulty_histogram: list[int]
    """Pairs per difficulty bin: [0, 0.1), [0.1, 0.2), ..., [0.9, 1]."""
    completion_tokens: int
    """Tokens of all chosen and rejected completions."""
    diff_tokens: int
    """Of those, tokens outside the longest common subsequence of their pair."""
    diff_token_share: float
    """``diff_tokens / completion_tokens``; 0 with no tokens."""
    diff_weight_share: float
    """Share of the total importance weight on diff tokens; above `diff_token_share`
    when importance emphasizes where the completions differ."""
    token_classes: list[TokenClassStats] = field(default_factory=list)
    """Per importance class present in the completions, by class number."""

    def to_dict(self) -> dict[str, Any]:
        """The figures as plain JSON-ready values."""
        figures = asdict(self)
        figures["directory"] = str(self.directory)
        return figures

    def to_json(self) -> str:
        """The figures as indented JSON."""
        return json.dumps(self.to_dict(), indent=2)


def compute_stats(directory: Path) -> PairStats:
    """Figures of the prepared directory ``directory``, reading one shard at a time.

    Raises:
        InputError: no manifest, or a shard or ``quarantine.jsonl`` missing or unreadable.
        SchemaError: a shard lacks a column (names the shard and the column).
        LengthMismatchError: a completion's class, weight or diff list differs in length
            from its ids (names the shard, row and column).
        InvalidRowError: a difficulty is missing or outside [0, 1] (names the row).
    """
    manifest = Manifest.read(directory)
    tally = _Tally()
    for shard in manifest.shards:
        tally.add(_read_columns(shard), shard.path)
    return tally.finish(manifest)


def _empty_counts() -> _Counts:
    return np.zeros(0, np.int64)


def _empty_sums() -> _Sums:
    return np.zeros(0, np.float64)


@dataclass(slots=True)
class _Tally:
    """Running per-value counts and sums over the shards read so far."""

    pairs: int = 0
    # Per part (prompt, chosen, rejected): pairs per length in tokens.
    lengths: dict[str, _Counts] = field(
        default_factory=lambda: {part: _empty_counts() for part in _PARTS}
    )
    edit_distances: _Counts = field(default_factory=_empty_counts)
    unaligned: int = 0
    truncated: int = 0
    truncated_by_side: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_PARTS, 0))
    difficulty_sum: float = 0.0
    difficulty_histogram: _Counts = field(
        default_factory=lambda: np.zeros(DIFFICULTY_BINS, np.int64)
    )
    # Per token class (the index): tokens, diff tokens, weight, weight on diff tokens.
    class_tokens: _Counts = field(default_factory=_empty_counts)
    class_diff_tokens: _Counts = field(default_factory=_empty_counts)
    class_weight: _Sums = field(default_factory=_empty_sums)
    class_diff_weight: _Sums = field(default_factory=_empty_sums)

    def add(self, table: pa.Table, path: Path) -> None:
        self.pairs += table.num_rows
        for part, counts in self.lengths.items():
            self.lengths[part] = _add(counts, np.bincount(_lengths(table[f"{part}_ids"])))
        self.edit_distances = _add(
            self.edit_distances, np.bincount(_numbers(table["edit_distance"]))
        )
        self.unaligned += int(pc.sum(table["unaligned"]).as_py() or 0)
        truncated = _numbers(table["truncated"])
        self.truncated += int(np.count_nonzero(truncated))
        for side, bit in _TRUNCATED_BITS.items():
            self.truncated_by_side[side] += int(np.count_nonzero(truncated & bit))
        difficulty = _difficulty(table, path)
        self.difficulty_sum += float(difficulty.sum())
        self.difficulty_histogram += np.histogram(difficulty, DIFFICULTY_BINS, (0.0, 1.0))[0]
        for side in _SIDES:
            self._add_completion_tokens(table, side, path)

    def _add_completion_tokens(self, table: pa.Table, side: str, path: Path) -> None:
        _check_same_lengths(
            table, path, f"{side}_ids", (f"{side}_class", f"{side}_weight", f"{side}_diff")
        )
        classes = _flat(table[f"{side}_class"])
        in_diff = _flat(table[f"{side}_diff"]) != 0
        weights = _flat(table[f"{side}_weight"]).astype(np.float64)
        self.class_tokens = _add(self.class_tokens, np.bincount(classes))
        self.class_diff_tokens = _add(self.class_diff_tokens, np.bincount(classes[in_diff]))
        self.class_weight = _add(self.class_weight, _weight_sums(classes, weights))
        self.class_diff_weight = _add(
            self.class_diff_weight, _weight_sums(classes[in_diff], weights[in_diff])
        )

    def finish(self, manifest: Manifest) -> PairStats:
        edit_distance = Distribution.from_counts(self.edit_distances)
        # A class may have tokens but none in a diff: align the per-class arrays.
        class_diff_tokens = _add(np.zeros(len(self.class_tokens), np.int64), self.class_diff_tokens)
        completion_tokens = int(self.class_tokens.sum())
        diff_tokens = int(class_diff_tokens.sum())
        total_weight = float(self.class_weight.sum())
        return PairStats(
            directory=manifest.directory,
            shards=len(manifest.shards),
            rows_read=int(manifest.summary["rows_read"]),
            pairs=self.pairs,
            quarantined=_quarantine_reasons(manifest.quarantine),
            prompt_tokens=Distribution.from_counts(self.lengths["prompt"]),
            chosen_tokens=Distribution.from_counts(self.lengths["chosen"]),
            rejected_tokens=Distribution.from_counts(self.lengths["rejected"]),
            edit_distance=edit_distance,
            edit_distance_share_at_most={
                limit: edit_distance.share_at_most(limit) for limit in EDIT_DISTANCE_THRESHOLDS
            },
            unaligned=self.unaligned,
            truncated=self.truncated,
            truncated_by_side=dict(self.truncated_by_side),
            difficulty_source=str(manifest.raw.get("difficulty_source", "unknown")),
            difficulty_mean=self.difficulty_sum / self.pairs if self.pairs else 0.0,
            difficulty_histogram=[int(count) for count in self.difficulty_histogram],
            completion_tokens=completion_tokens,
            diff_tokens=diff_tokens,
            diff_token_share=diff_tokens / completion_tokens if completion_tokens else 0.0,
            diff_weight_share=(
                float(self.class_diff_weight.sum()) / total_weight if total_weight else 0.0
            ),
            token_classes=[
                TokenClassStats(
                    name=token_class_name(token_class, manifest.importance),
                    tokens=int(tokens),
                    diff_tokens=int(class_diff_tokens[token_class]),
                    mean_weight=float(self.class_weight[token_class]) / int(tokens),
                )
                for token_class, tokens in enumerate(self.class_tokens)
                if tokens
            ],
        )


def _read_columns(shard: ShardInfo) -> pa.Table:
    """The columns stats needs from one shard, checked against the manifest's row count."""
    try:
        table = read_shard(shard.path)
    except (OSError, pa.ArrowInvalid) as error:
        raise InputError(
            f"{shard.path}: cannot read the shard: {error}", file=str(shard.path)
        ) from error
    missing = [name for name in _COLUMNS if name not in table.column_names]
    if missing:
        raise SchemaError(
            f"{shard.path}: not a prepared shard: no column {', '.join(missing)}",
            file=str(shard.path),
            field=missing[0],
        )
    if table.num_rows != shard.rows:
        raise InputError(
            f"{shard.path}: holds {table.num_rows} rows, the manifest says {shard.rows}",
            file=str(shard.path),
        )
    return table.select(list(_COLUMNS))


def _add(total: _PerValue, part: _PerValue) -> _PerValue:
    """Element-wise sum of two per-value arrays of different lengths (zero-padded)."""
    if len(part) > len(total):
        total, part = part, total
    summed = total.copy()
    summed[: len(part)] += part
    return summed


def _lengths(lists: pa.ChunkedArray) -> _Counts:
    return _numbers(pc.fill_null(pc.list_value_length(lists), 0))


def _numbers(column: pa.ChunkedArray) -> _Counts:
    return np.asarray(column.to_numpy(), dtype=np.int64)


def _flat(lists: pa.ChunkedArray) -> npt.NDArray[Any]:
    return np.asarray(pc.list_flatten(lists).to_numpy())


def _weight_sums(classes: npt.NDArray[Any], weights: _Sums) -> _Sums:
    """Total weight per class (the index)."""
    return np.asarray(np.bincount(classes, weights), dtype=np.float64)


def _difficulty(table: pa.Table, path: Path) -> npt.NDArray[np.float64]:
    """The difficulty column, every value checked to be in [0, 1]."""
    column = table["difficulty"]
    values = np.asarray(column.to_numpy(), dtype=np.float64)
    # A null reads as NaN, which fails the comparison below like an out-of-range value.
    bad = np.flatnonzero(~((values >= 0.0) & (values <= 1.0)))
    if len(bad):
        row = int(bad[0])
        raise InvalidRowError(
            f"{path}: row {row}, field 'difficulty': {column[row].as_py()} is not in [0, 1]",
            file=str(path),
            row=row,
            field="difficulty",
        )
    return values


def _check_same_lengths(
    table: pa.Table, path: Path, reference: str, others: tuple[str, ...]
) -> None:
    """Raises if a per-token column has a different length than ``reference`` in some row."""
    expected = _lengths(table[reference])
    for name in others:
        actual = _lengths(table[name])
        wrong = np.flatnonzero(actual != expected)
        if len(wrong):
            row = int(wrong[0])
            raise LengthMismatchError(
                f"{path}: row {row}, field '{name}': {actual[row]} values "
                f"for {expected[row]} tokens in {reference}",
                file=str(path),
                row=row,
                field=name,
            )


def _nearest_rank(counts: _Counts, total: int, quantile: float) -> int:
    """The smallest value with at least ``ceil(quantile * total)`` pairs at or under it."""
    rank = max(1, math.ceil(quantile * total))
    return int(np.searchsorted(np.cumsum(counts), rank))


def _quarantine_reasons(quarantine: ShardInfo) -> dict[str, int]:
    """Quarantined rows by reason kind, most common first, read line by line."""
    reasons: dict[str, int] = {}
    try:
        with quarantine.path.open(encoding="utf-8") as lines:
            for line_number, line in enumerate(lines):
                if line.strip():
                    kind = _reason_kind(line, quarantine.path, line_number)
                    reasons[kind] = reasons.get(kind, 0) + 1
    except OSError as error:
        raise InputError(
            f"{quarantine.path}: cannot read the quarantine file: {error}",
            file=str(quarantine.path),
        ) from error
    return dict(sorted(reasons.items(), key=lambda item: (-item[1], item[0])))


def _reason_kind(line: str, path: Path, line_number: int) -> str:
    """The reason of one quarantine record without its row details (after a colon), as prep
    groups them in the manifest's summary."""
    try:
        reason = json.loads(line)["reason"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise InputError(
            f"{path}: line {line_number + 1}: not a quarantine record with a reason: {error}",
            file=str(path),
            row=line_number,
            field="reason",
        ) from error
    return str(reason).split(":", 1)[0].strip()
