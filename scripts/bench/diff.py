"""Benchmark: tokenpo.diff_batch against difflib, and against tokenization, side by side.

Usage (from the repository root, after scripts/setup):

    .venv/bin/python scripts/bench/diff.py            # the sets of the targets
    .venv/bin/python scripts/bench/diff.py --scale 0.1  # a quick run

Builds two sets of text pairs (about 100 and about 500 tokens, the rejected text 1-3
local word edits away from the chosen), tokenizes them with a byte-level BPE trained
here, then measures in this one run:
- pairs/s of `diff_batch` (all cores) and of `difflib.SequenceMatcher(autojunk=False)`
  computing the same masks, in a process pool over the same cores: the ratio is the
  speed-up (target >= 20x on both sets);
- on the 500-token set, the diff time as a share of the time `tokenizers` takes to
  encode the same texts (target <= 10%).
"""

from __future__ import annotations

import argparse
import difflib
import os
import random
import string
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
from rich.console import Console
from rich.table import Table
from tokenizers import Tokenizer

import tokenpo
from tokenpo.synthetic import train_bpe_tokenizer

WORDS_PER_TOKEN = 0.93  # measured for this generator and tokenizer; only sizes the texts


@dataclass(frozen=True, slots=True)
class PairSet:
    name: str
    chosen_texts: list[str]
    rejected_texts: list[str]


def make_vocabulary(rng: random.Random, size: int = 4000) -> list[str]:
    return ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(size)]


def make_pairs(
    rng: random.Random, vocabulary: list[str], n_pairs: int, tokens: int, name: str
) -> PairSet:
    """Chosen texts of about `tokens` tokens; rejected = chosen with 1-3 local word edits."""
    weights = [1.0 / (rank + 1) for rank in range(len(vocabulary))]  # Zipf-like
    n_words = int(tokens * WORDS_PER_TOKEN)
    chosen_texts, rejected_texts = [], []
    for _ in range(n_pairs):
        words = rng.choices(vocabulary, weights=weights, k=n_words)
        edited = words.copy()
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(edited))
            kind = rng.randrange(3)
            if kind == 0:
                edited[at] = rng.choice(vocabulary)
            elif kind == 1:
                edited.insert(at, rng.choice(vocabulary))
            elif len(edited) > 1:
                del edited[at]
        chosen_texts.append(" ".join(words))
        rejected_texts.append(" ".join(edited))
    return PairSet(name, chosen_texts, rejected_texts)


def encode(tokenizer: Tokenizer, texts: list[str]) -> tuple[list[list[int]], float]:
    start = time.perf_counter()
    encodings = tokenizer.encode_batch_fast(texts, add_special_tokens=False)
    seconds = time.perf_counter() - start
    return [encoding.ids for encoding in encodings], seconds


def difflib_masks(pair: tuple[Sequence[int], Sequence[int]]) -> tuple[list[int], list[int]]:
    """The baseline: the same masks (1 outside the matched blocks) from difflib."""
    a, b = pair
    a_mask, b_mask = [1] * len(a), [1] * len(b)
    for block in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_matching_blocks():
        a_mask[block.a : block.a + block.size] = [0] * block.size
        b_mask[block.b : block.b + block.size] = [0] * block.size
    return a_mask, b_mask


def time_difflib(chosen: list[list[int]], rejected: list[list[int]], workers: int) -> float:
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(difflib_masks, zip(chosen[:64], rejected[:64], strict=True)))  # warm up
        start = time.perf_counter()
        list(pool.map(difflib_masks, zip(chosen, rejected, strict=True), chunksize=512))
        return time.perf_counter() - start


def time_diff_batch(chosen: pa.Array, rejected: pa.Array, repeats: int = 3) -> float:
    tokenpo.diff_batch(chosen.slice(0, 64), rejected.slice(0, 64))  # warm up the thread pool
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        tokenpo.diff_batch(chosen, rejected)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the full sets")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    console = Console()
    workers = os.cpu_count() or 1
    rng = random.Random(args.seed)
    vocabulary = make_vocabulary(rng)
    with console.status("generating texts and training the tokenizer"):
        sets = [
            make_pairs(rng, vocabulary, int(200_000 * args.scale), 100, "~100 tokens"),
            make_pairs(rng, vocabulary, int(50_000 * args.scale), 500, "~500 tokens"),
        ]
        tokenizer = train_bpe_tokenizer(sets[0].chosen_texts[:20_000], vocab_size=8000)

    table = Table(title=f"diff_batch vs difflib ({workers} cores each)")
    for column in ("set", "pairs", "mean tokens", "diff_batch pairs/s", "difflib pairs/s"):
        table.add_column(column, justify="right")
    table.add_column("speed-up", justify="right", style="bold")
    share_rows = []
    for pair_set in sets:
        with console.status(f"{pair_set.name}: tokenizing"):
            chosen_ids, chosen_seconds = encode(tokenizer, pair_set.chosen_texts)
            rejected_ids, rejected_seconds = encode(tokenizer, pair_set.rejected_texts)
        chosen = pa.array(chosen_ids, pa.list_(pa.uint32()))
        rejected = pa.array(rejected_ids, pa.list_(pa.uint32()))
        with console.status(f"{pair_set.name}: diff_batch"):
            diff_seconds = time_diff_batch(chosen, rejected)
        with console.status(f"{pair_set.name}: difflib"):
            difflib_seconds = time_difflib(chosen_ids, rejected_ids, workers)
        n_pairs = len(chosen_ids)
        mean_tokens = sum(map(len, chosen_ids)) / n_pairs
        table.add_row(
            pair_set.name,
            f"{n_pairs:,}",
            f"{mean_tokens:.0f}",
            f"{n_pairs / diff_seconds:,.0f}",
            f"{n_pairs / difflib_seconds:,.0f}",
            f"{difflib_seconds / diff_seconds:.1f}x",
        )
        encode_seconds = chosen_seconds + rejected_seconds
        share_rows.append((pair_set.name, encode_seconds, diff_seconds))
    console.print(table)

    shares = Table(title="diff time as a share of tokenizer encode time (same texts)")
    for column in ("set", "encode s", "diff s", "diff / encode"):
        shares.add_column(column, justify="right")
    for name, encode_seconds, diff_seconds in share_rows:
        shares.add_row(
            name,
            f"{encode_seconds:.2f}",
            f"{diff_seconds:.3f}",
            f"{100 * diff_seconds / encode_seconds:.1f}%",
        )
    console.print(shares)


if __name__ == "__main__":
    main()
