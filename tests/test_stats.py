"""`tokenpo.stats` and `tokenpo stats` on prepared directories written here by hand.

Each figure is checked against plain Python over the rows written, so these tests do not
depend on the Rust prep.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tokenpo
from cli_runner import run_tokenpo
from prep_data import make_pairs, train_tokenizer, write_rows
from tokenpo.exceptions import InputError, InvalidRowError, LengthMismatchError, SchemaError
from tokenpo.stats import Distribution, compute_stats

VALUE_KEYS = {"code": 2.0, "span": 1.5}
CLASS_NAMES = {0: "text", 1: "scaffolding", 2: "key", 3: "value", 4: "value:code", 5: "value:span"}
# Scaffolding never differs and plain "value" never occurs, so the per-class figures must
# handle a class without diff tokens and a gap in the class numbers.
CLASSES_SHARED = (0, 1, 2, 4, 5)
CLASSES_DIFF = (0, 2, 4, 5)

SCHEMA = pa.schema(
    [
        ("pair_id", pa.string()),
        ("prompt_ids", pa.list_(pa.uint32())),
        ("chosen_ids", pa.list_(pa.uint32())),
        ("rejected_ids", pa.list_(pa.uint32())),
        ("chosen_diff", pa.list_(pa.uint8())),
        ("rejected_diff", pa.list_(pa.uint8())),
        ("chosen_weight", pa.list_(pa.float32())),
        ("rejected_weight", pa.list_(pa.float32())),
        ("chosen_class", pa.list_(pa.uint8())),
        ("rejected_class", pa.list_(pa.uint8())),
        ("edit_distance", pa.uint32()),
        ("lcs_len", pa.uint32()),
        ("shared_prefix_len", pa.uint32()),
        ("unaligned", pa.bool_()),
        ("score_margin", pa.float32()),
        ("difficulty", pa.float32()),
        ("truncated", pa.uint8()),
        ("source_file", pa.uint32()),
        ("source_row", pa.uint64()),
    ]
)

QUARANTINE = [
    {"file": "pairs.parquet", "row": 3, "field": "chosen", "reason": "empty completion: ''"},
    {"file": "pairs.parquet", "row": 9, "field": "chosen", "reason": "identical completions"},
    {"file": "pairs.parquet", "row": 11, "field": "rejected", "reason": "empty completion: ' '"},
    {"file": "pairs.parquet", "row": 17, "field": "prompt", "reason": "bad json: line 2: eof"},
    {"file": "pairs.parquet", "row": 20, "field": "rejected", "reason": "empty completion: ''"},
]


# --- a prepared directory, written by hand --------------------------------------------------


def make_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Prepared pairs: the rejected side is the chosen one with a few random edits."""
    rng = random.Random(seed)
    rows = []
    for index in range(n):
        chosen = [rng.randrange(50) for _ in range(rng.randint(1, 25))]
        rejected = _edit(chosen, rng.randint(0, 12), rng)
        # A low cap, so the corpus has unaligned pairs too.
        diff = tokenpo.diff_tokens(chosen, rejected, max_edit_distance=10)
        rows.append(
            {
                "pair_id": f"pair-{index}",
                "prompt_ids": [rng.randrange(50) for _ in range(rng.randint(1, 40))],
                "chosen_ids": chosen,
                "rejected_ids": rejected,
                "chosen_diff": diff.a_mask,
                "rejected_diff": diff.b_mask,
                "chosen_weight": _weights(diff.a_mask, rng),
                "rejected_weight": _weights(diff.b_mask, rng),
                "chosen_class": _classes(diff.a_mask, rng),
                "rejected_class": _classes(diff.b_mask, rng),
                "edit_distance": diff.edit_distance,
                "lcs_len": diff.lcs_len,
                "shared_prefix_len": diff.shared_prefix_len,
                "unaligned": diff.unaligned,
                "score_margin": None if index % 4 == 0 else float(rng.randint(-4, 8)),
                # Multiples of 1/64: exact in float32, and sums exact in any order.
                "difficulty": rng.randint(0, 64) / 64,
                "truncated": rng.choice([0, 0, 0, 0, 1, 2, 4, 6, 7]),
                "source_file": 0,
                "source_row": index,
            }
        )
    return rows


def _edit(tokens: list[int], edits: int, rng: random.Random) -> list[int]:
    edited = list(tokens)
    for _ in range(edits):
        position = rng.randrange(len(edited) + 1)
        action = rng.choice(["insert", "delete", "replace"])
        if action == "insert" or not edited:
            edited.insert(position, rng.randrange(50))
        elif action == "delete" and len(edited) > 1:
            del edited[min(position, len(edited) - 1)]
        else:
            edited[min(position, len(edited) - 1)] = rng.randrange(50)
    return edited


def _weights(mask: list[int], rng: random.Random) -> list[float]:
    """Mean exactly 1, in quarters (exact in float32), shifted towards diff tokens."""
    weights = [1.0] * len(mask)
    differing = [index for index, bit in enumerate(mask) if bit] or list(range(len(mask)))
    for _ in range(len(mask)):
        source, target = rng.randrange(len(mask)), rng.choice(differing)
        if weights[source] >= 0.5:
            weights[source] -= 0.25
            weights[target] += 0.25
    return weights


def _classes(mask: list[int], rng: random.Random) -> list[int]:
    return [rng.choice(CLASSES_DIFF if bit else CLASSES_SHARED) for bit in mask]


def write_prepared(
    directory: Path,
    rows: list[dict[str, Any]],
    *,
    shard_rows: int = 1000,
    shard_format: str = "parquet",
    quarantine: list[dict[str, Any]] = QUARANTINE,
    empty_shard: bool = False,
) -> Path:
    """A prepared directory as `tokenpo prep` writes it: shards, quarantine, manifest."""
    directory.mkdir(parents=True, exist_ok=True)
    chunks = [rows[start : start + shard_rows] for start in range(0, len(rows), shard_rows)]
    if empty_shard:
        chunks.append([])
    suffix = "parquet" if shard_format == "parquet" else "arrow"
    shards = []
    for number, chunk in enumerate(chunks):
        path = directory / f"shard-{number:05d}.{suffix}"
        table = pa.Table.from_pylist(chunk, schema=SCHEMA)
        if shard_format == "parquet":
            pq.write_table(table, path)
        else:
            feather.write_feather(table, path, compression="uncompressed")
        shards.append(_file_record(path, len(chunk)))
    quarantine_path = directory / "quarantine.jsonl"
    quarantine_path.write_text("".join(json.dumps(record) + "\n" for record in quarantine))
    manifest = {
        "schema_version": 1,
        "fingerprint": "0" * 64,
        "tokenizer": {
            "path": "tokenizer.json",
            "sha256": "0" * 64,
            "eos_id": 0,
            "chat_template": False,
        },
        "config": {
            "importance": {
                "text": 1.0,
                "scaffolding": 0.3,
                "key": 0.6,
                "value": 2.0,
                "value_keys": VALUE_KEYS,
                "rarity": 0.5,
                "diff_factor": 2.0,
            }
        },
        "difficulty_source": "token_separation",
        "inputs": [{"path": "pairs.parquet", "bytes": 1, "sha256": "0" * 64}],
        "shards": shards,
        "quarantine": _file_record(quarantine_path, len(quarantine)),
        "summary": {
            "rows_read": len(rows) + len(quarantine),
            "pairs": len(rows),
            "quarantined": dict(Counter(_kind(record["reason"]) for record in quarantine)),
            "mean_prompt_tokens": _mean([len(row["prompt_ids"]) for row in rows]),
            "mean_chosen_tokens": _mean([len(row["chosen_ids"]) for row in rows]),
            "mean_rejected_tokens": _mean([len(row["rejected_ids"]) for row in rows]),
            "mean_edit_distance": _mean([row["edit_distance"] for row in rows]),
            "unaligned": sum(row["unaligned"] for row in rows),
            "truncated": sum(row["truncated"] != 0 for row in rows),
        },
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return directory


def _file_record(path: Path, rows: int) -> dict[str, Any]:
    data = path.read_bytes()
    return {
        "path": path.name,
        "rows": rows,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def _kind(reason: str) -> str:
    return reason.split(":")[0].strip()


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _nearest_rank(values: list[int], quantile: float) -> int:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(quantile * len(ordered))) - 1]


def _figures_without_location(stats: tokenpo.stats.PairStats) -> dict[str, Any]:
    figures = stats.to_dict()
    del figures["directory"], figures["shards"]
    return figures


ROWS = make_rows(60)


# --- the figures ----------------------------------------------------------------------------


def test_every_figure_matches_plain_python_over_the_rows(tmp_path: Path) -> None:
    stats = compute_stats(write_prepared(tmp_path / "prepared", ROWS))

    assert stats.shards == 1
    assert stats.pairs == 60
    assert stats.rows_read == 60 + len(QUARANTINE)
    assert stats.quarantined == {"empty completion": 3, "bad json": 1, "identical completions": 1}
    assert list(stats.quarantined) == ["empty completion", "bad json", "identical completions"]

    for name in ("prompt", "chosen", "rejected"):
        lengths = [len(row[f"{name}_ids"]) for row in ROWS]
        _assert_distribution(getattr(stats, f"{name}_tokens"), lengths)
    edit_distances = [row["edit_distance"] for row in ROWS]
    _assert_distribution(stats.edit_distance, edit_distances)
    for limit in (2, 6):
        close = sum(distance <= limit for distance in edit_distances) / len(ROWS)
        assert stats.edit_distance_share_at_most[limit] == pytest.approx(close)

    assert stats.unaligned == sum(row["unaligned"] for row in ROWS) > 0
    assert stats.truncated == sum(row["truncated"] != 0 for row in ROWS) > 0
    for side, bit in (("prompt", 1), ("chosen", 2), ("rejected", 4)):
        assert stats.truncated_by_side[side] == sum(bool(row["truncated"] & bit) for row in ROWS)

    assert stats.difficulty_source == "token_separation"
    assert stats.difficulty_mean == pytest.approx(_mean([row["difficulty"] for row in ROWS]))
    bins = Counter(min(int(row["difficulty"] * 10), 9) for row in ROWS)
    assert stats.difficulty_histogram == [bins[index] for index in range(10)]

    _assert_importance(stats, ROWS)


def _assert_distribution(distribution: Distribution, values: list[int]) -> None:
    assert distribution.mean == pytest.approx(_mean(values))
    assert distribution.p50 == _nearest_rank(values, 0.50)
    assert distribution.p95 == _nearest_rank(values, 0.95)
    assert distribution.max == max(values)
    assert sum(distribution.counts) == len(values)


def _assert_importance(stats: tokenpo.stats.PairStats, rows: list[dict[str, Any]]) -> None:
    tokens: Counter[int] = Counter()
    diff_tokens: Counter[int] = Counter()
    weight: Counter[int] = Counter()
    diff_weight = 0.0
    for row in rows:
        for side in ("chosen", "rejected"):
            columns = zip(
                row[f"{side}_class"], row[f"{side}_diff"], row[f"{side}_weight"], strict=True
            )
            for token_class, in_diff, token_weight in columns:
                tokens[token_class] += 1
                weight[token_class] += token_weight
                diff_tokens[token_class] += in_diff
                diff_weight += token_weight if in_diff else 0.0
    assert stats.completion_tokens == tokens.total()
    assert stats.diff_tokens == diff_tokens.total()
    assert stats.diff_token_share == pytest.approx(diff_tokens.total() / tokens.total())
    assert stats.diff_weight_share == pytest.approx(diff_weight / sum(weight.values()))
    # The weights were shifted towards diff tokens: the skew shows.
    assert stats.diff_weight_share > stats.diff_token_share
    present = sorted(tokens)
    assert present == [0, 1, 2, 4, 5]
    assert [entry.name for entry in stats.token_classes] == [CLASS_NAMES[c] for c in present]
    for entry, token_class in zip(stats.token_classes, present, strict=True):
        assert entry.tokens == tokens[token_class]
        assert entry.diff_tokens == diff_tokens[token_class]
        assert entry.mean_weight == pytest.approx(weight[token_class] / tokens[token_class])
    assert stats.token_classes[1].diff_tokens == 0  # scaffolding never differs


@pytest.mark.parametrize(
    ("shard_rows", "shard_format"),
    [(7, "parquet"), (1, "parquet"), (13, "ipc"), (1000, "ipc")],
)
def test_splitting_into_shards_changes_nothing(
    tmp_path: Path, shard_rows: int, shard_format: str
) -> None:
    whole = compute_stats(write_prepared(tmp_path / "whole", ROWS))
    split = compute_stats(
        write_prepared(tmp_path / "split", ROWS, shard_rows=shard_rows, shard_format=shard_format)
    )
    assert split.shards == math.ceil(len(ROWS) / shard_rows)
    # The weights and difficulties sum exactly in any order, so equality is exact.
    assert _figures_without_location(split) == _figures_without_location(whole)


@pytest.mark.parametrize("empty_shard", [False, True])
def test_a_directory_without_pairs(tmp_path: Path, empty_shard: bool) -> None:
    stats = compute_stats(write_prepared(tmp_path / "empty", [], empty_shard=empty_shard))
    assert stats.pairs == 0
    assert stats.shards == int(empty_shard)
    assert stats.quarantined["empty completion"] == 3
    for distribution in (stats.prompt_tokens, stats.edit_distance):
        assert (distribution.mean, distribution.p50, distribution.p95, distribution.max) == (
            0,
            0,
            0,
            0,
        )
        assert distribution.counts == []
    assert stats.edit_distance_share_at_most == {2: 0.0, 6: 0.0}
    assert stats.difficulty_histogram == [0] * 10
    assert stats.difficulty_mean == 0.0
    assert (stats.completion_tokens, stats.diff_token_share, stats.diff_weight_share) == (0, 0, 0)
    assert stats.token_classes == []
    json.loads(stats.to_json())


@given(st.lists(st.integers(min_value=0, max_value=300), min_size=1, max_size=200))
def test_percentiles_are_the_nearest_rank(values: list[int]) -> None:
    distribution = Distribution.from_counts(np.bincount(values))
    assert distribution.p50 == _nearest_rank(values, 0.50)
    assert distribution.p95 == _nearest_rank(values, 0.95)
    assert distribution.p95 == int(np.quantile(values, 0.95, method="inverted_cdf"))
    assert distribution.max == max(values)
    assert distribution.share_at_most(2) == pytest.approx(sum(v <= 2 for v in values) / len(values))


def test_stats_agree_with_the_summary_of_a_real_prep(tmp_path: Path) -> None:
    rows = [*make_pairs(40), {"prompt": "Message: hi", "chosen": "[]", "rejected": ""}]
    source = write_rows(rows, tmp_path / "pairs.parquet")
    tokenizer = tmp_path / "tokenizer.json"
    train_tokenizer().save(str(tokenizer))
    options = tokenpo.PrepOptions(shard_rows=16, max_len=24)
    manifest = tokenpo.prep([source], tokenizer, tmp_path / "prepared", options)
    stats = compute_stats(manifest.directory)
    summary = manifest.summary
    assert (stats.rows_read, stats.pairs) == (summary["rows_read"], summary["pairs"]) == (41, 40)
    assert stats.quarantined == summary["quarantined"] == {"rejected is empty": 1}
    assert stats.prompt_tokens.mean == pytest.approx(summary["mean_prompt_tokens"])
    assert stats.chosen_tokens.mean == pytest.approx(summary["mean_chosen_tokens"])
    assert stats.rejected_tokens.mean == pytest.approx(summary["mean_rejected_tokens"])
    assert stats.edit_distance.mean == pytest.approx(summary["mean_edit_distance"])
    assert (stats.unaligned, stats.truncated) == (summary["unaligned"], summary["truncated"])
    assert stats.truncated > 0
    assert sum(stats.difficulty_histogram) == 40


# --- bad directories ------------------------------------------------------------------------


def test_no_manifest_names_the_directory(tmp_path: Path) -> None:
    with pytest.raises(
        InputError, match=re.escape(f"{tmp_path}: no manifest.json; is it a prep output")
    ):
        compute_stats(tmp_path)


def _drop_column(table: pa.Table) -> pa.Table:
    return table.drop_columns(["difficulty"])


def _short_weights(table: pa.Table) -> pa.Table:
    weights = table["chosen_weight"].to_pylist()
    weights[4] = weights[4][:-1]
    column = table.column_names.index("chosen_weight")
    return table.set_column(column, "chosen_weight", pa.array(weights, pa.list_(pa.float32())))


def _bad_difficulty(table: pa.Table) -> pa.Table:
    difficulty = table["difficulty"].to_pylist()
    difficulty[2] = 1.5
    column = table.column_names.index("difficulty")
    return table.set_column(column, "difficulty", pa.array(difficulty, pa.float32()))


def _fewer_rows(table: pa.Table) -> pa.Table:
    return table.slice(0, 5)


@pytest.mark.parametrize(
    ("corrupt", "error", "message"),
    [
        (
            _drop_column,
            SchemaError,
            "shard-00001.parquet: not a prepared shard: no column difficulty",
        ),
        (
            _short_weights,
            LengthMismatchError,
            "shard-00001.parquet: row 4, field 'chosen_weight': ",
        ),
        (_bad_difficulty, InvalidRowError, "row 2, field 'difficulty': 1.5 is not in [0, 1]"),
        (_fewer_rows, InputError, "shard-00001.parquet: holds 5 rows, the manifest says 10"),
    ],
)
def test_a_bad_shard_names_file_row_and_field(
    tmp_path: Path,
    corrupt: Callable[[pa.Table], pa.Table],
    error: type[InputError],
    message: str,
) -> None:
    directory = write_prepared(tmp_path / "prepared", ROWS[:20], shard_rows=10)
    path = directory / "shard-00001.parquet"
    pq.write_table(corrupt(pq.read_table(path)), path)
    with pytest.raises(error, match=re.escape(message)) as raised:
        compute_stats(directory)
    assert raised.value.file == str(path)


def test_a_missing_shard_names_it(tmp_path: Path) -> None:
    directory = write_prepared(tmp_path / "prepared", ROWS[:20], shard_rows=10)
    (directory / "shard-00001.parquet").unlink()
    with pytest.raises(InputError, match=re.escape("shard-00001.parquet: cannot read the shard")):
        compute_stats(directory)


def test_a_broken_quarantine_line_names_the_line(tmp_path: Path) -> None:
    directory = write_prepared(tmp_path / "prepared", ROWS[:5])
    with (directory / "quarantine.jsonl").open("a") as quarantine:
        quarantine.write('{"file": "pairs.parquet", "row": 30}\n')
    with pytest.raises(
        InputError, match=re.escape("quarantine.jsonl: line 6: not a quarantine record")
    ):
        compute_stats(directory)


# --- the command ----------------------------------------------------------------------------


def test_the_command_prints_tables_and_writes_plot_and_json(tmp_path: Path) -> None:
    directory = write_prepared(tmp_path / "prepared", ROWS, shard_rows=25)
    plot, figures = tmp_path / "stats.png", tmp_path / "stats.json"
    result = run_tokenpo("stats", directory, "--plot", plot, "--json", figures)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    stats = compute_stats(directory)
    for title in (
        "tokens per pair",
        "edit distance",
        "difficulty (from token_separation",
        "importance by token class",
        "quarantined rows by reason",
    ):
        assert title in result.stdout
    assert f"diff tokens are {stats.diff_token_share:.1%} of completion tokens" in result.stdout
    assert f"carry {stats.diff_weight_share:.1%} of the weight" in result.stdout
    for name in ("value:code", "value:span", "scaffolding", "empty completion", "bad json"):
        assert name in result.stdout
    assert f"{stats.prompt_tokens.mean:.1f}" in result.stdout

    image = plot.read_bytes()
    assert image.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(image) > 20_000
    assert json.loads(figures.read_text()) == json.loads(stats.to_json())


def test_the_command_on_an_empty_directory(tmp_path: Path) -> None:
    directory = write_prepared(tmp_path / "prepared", [], quarantine=[])
    plot = tmp_path / "stats.png"
    result = run_tokenpo("stats", directory, "--plot", plot)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no matplotlib warning about empty histograms
    assert "none" in result.stdout
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_the_command_without_a_manifest_gives_one_red_line(tmp_path: Path) -> None:
    result = run_tokenpo("stats", tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path}: no manifest.json; is it a prep output?"
    ]
    assert result.stdout == ""


def test_an_unwritable_output_gives_one_red_line(tmp_path: Path) -> None:
    directory = write_prepared(tmp_path / "prepared", ROWS[:5])
    target = tmp_path / "missing" / "stats.json"
    result = run_tokenpo("stats", directory, "--json", target)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {target}: cannot write the JSON: ")
    assert "Traceback" not in result.stderr
