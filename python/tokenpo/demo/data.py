"""Stage 1 of the demo: the synthetic task's splits, its tokenizer, and the gold SFT pairs."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from tokenpo.synthetic import (
    ConfusionStats,
    TaskData,
    generate_task,
    make_negatives,
    pair_row,
    train_task_tokenizer,
    write_rows,
    write_split,
)
from tokenpo.synthetic.task import Example

__all__ = ["DataSizes", "make_data", "sft_pair_rows"]


@dataclass(frozen=True, kw_only=True, slots=True)
class DataSizes:
    """How many messages each split holds."""

    train: int = 24_000
    """Training messages: SFT's 2000 steps of 16 see each one or two times (on a small split the
    model memorizes messages instead of learning to copy spans); the preference pairs come
    from the first few hundred."""
    validation: int = 200
    """Validation messages (SFT stopping, tuning)."""
    test: int = 200
    """Test messages (the report)."""


def sft_pair_rows(examples: tuple[Example, ...], *, seed: int) -> list[dict[str, object]]:
    """Pair rows whose chosen is the gold; the rejected is one random schema-valid
    perturbation (empty confusion statistics), which SFT ignores but prep needs."""
    rng = random.Random(f"{seed}/sft-pairs")
    rows: list[dict[str, object]] = []
    for example in examples:
        for negative in make_negatives(example, ConfusionStats(), rng=rng, count=1):
            rows.append(pair_row(example, negative))
    return rows


def make_data(out: str | Path, sizes: DataSizes, *, seed: int) -> TaskData:
    """Writes ``out/tokenizer/``, ``out/{train,validation,test}.jsonl``, and
    ``out/sft_pairs.jsonl`` and ``out/sft_val_pairs.jsonl`` (gold as chosen)."""
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    data = generate_task(train=sizes.train, validation=sizes.validation, test=sizes.test, seed=seed)
    train_task_tokenizer(data, directory / "tokenizer")
    for split in ("train", "validation", "test"):
        write_split(data, split, directory / f"{split}.jsonl")
    write_rows(sft_pair_rows(data.train, seed=seed), directory / "sft_pairs.jsonl")
    write_rows(sft_pair_rows(data.validation, seed=seed), directory / "sft_val_pairs.jsonl")
    return data
