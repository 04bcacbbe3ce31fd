"""Benchmark: `tokenpo.prep` against what a user does today, and against the floor.

Usage (from the repository root, after scripts/setup):

    .venv/bin/python scripts/bench/prep.py                # the sets of the targets
    .venv/bin/python scripts/bench/prep.py --scale 0.1    # a quick run
    .venv/bin/python scripts/bench/prep.py --rss-scaling  # peak RSS at 100k and 1M pairs
    .venv/bin/python scripts/bench/prep.py --engine ray   # the Ray engine beside the local one
    .venv/bin/python scripts/bench/prep.py --engine ray --set long   # one set only

Sets, generated here: short structured pairs (JSON annotations 1-3 tokens apart, about
100 tokens a pair) and long chat pairs (about 550 tokens a pair), written to parquet in
row groups of 50,000 rows (at scale 1 the long-chat set is one). Measured in this run,
each in a fresh process so peak RSS is its own:
- baseline: HF `datasets` `.map(batched=True, num_proc=2)` tokenizing with `tokenizers`,
  masks from difflib, written to parquet;
- floor: `tokenizers` `encode_batch` over the same texts and nothing else;
- tokenpo: `tokenpo.prep` to parquet shards.
Targets on 2 cores: >= 1.6x the baseline's pairs/s; time <= 1.15x the floor; peak RSS
<= 1 GiB and flat from 100k to 1M pairs.

With ``--engine ray``: `tokenpo.prep(engine="ray")` beside the local engine on the same
sets, on a Ray instance of 2 workers started once beforehand (as a cluster would be
running already), so each run pays for connecting and scheduling but not for starting
Ray. Target: >= 0.7x the local engine's pairs/s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from tokenpo.synthetic import train_bpe_tokenizer

CODES = {
    "medication": ["refill_request", "side_effect", "dosage_question", "new_prescription"],
    "symptom": ["new_symptom", "worsening_symptom", "resolved_symptom", "chronic_symptom"],
    "scheduling": ["new_appointment", "reschedule", "cancel", "follow_up"],
}
WORDS = [
    "patient",
    "reports",
    "pain",
    "since",
    "monday",
    "and",
    "asks",
    "about",
    "the",
    "dose",
    "of",
    "the",
    "new",
    "medication",
    "before",
    "the",
    "appointment",
    "next",
    "week",
    "because",
    "the",
    "symptoms",
    "got",
    "worse",
    "after",
    "the",
    "last",
    "visit",
    "with",
    "the",
    "doctor",
]


def annotation(rng: random.Random, n: int) -> list[dict[str, str]]:
    items = []
    for _ in range(n):
        code = rng.choice(sorted(CODES))
        span = " ".join(rng.choices(WORDS, k=rng.randint(2, 6)))
        items.append({"code": code, "subcode": rng.choice(CODES[code]), "span": span})
    return items


def short_pair(rng: random.Random) -> dict[str, str]:
    gold = annotation(rng, rng.randint(1, 3))
    wrong = [dict(item) for item in gold]
    victim = rng.choice(wrong)
    victim["subcode"] = rng.choice([s for s in CODES[victim["code"]] if s != victim["subcode"]])
    prompt = "Annotate: " + " ".join(rng.choices(WORDS, k=12))
    return {"prompt": prompt, "chosen": json.dumps(gold), "rejected": json.dumps(wrong)}


def long_pair(rng: random.Random) -> dict[str, str]:
    prompt = "User: " + " ".join(rng.choices(WORDS, k=60)) + "\nAssistant:"
    answer = rng.choices(WORDS, k=180)
    edited = answer.copy()
    for _ in range(rng.randint(1, 3)):
        edited[rng.randrange(len(edited))] = rng.choice(WORDS)
    return {"prompt": prompt, "chosen": " ".join(answer), "rejected": " ".join(edited)}


# The sets of the targets: (name, kind of pair, pairs at scale 1).
BenchSet = tuple[str, str, int]
SETS: tuple[BenchSet, ...] = (("short JSON", "short", 200_000), ("long chat", "long", 50_000))


def write_set(path: Path, n_pairs: int, make: str, seed: int) -> None:
    rng = random.Random(seed)
    maker = short_pair if make == "short" else long_pair
    writer = None
    for start in range(0, n_pairs, 50_000):
        rows = [maker(rng) for _ in range(min(50_000, n_pairs - start))]
        table = pa.Table.from_pylist(rows)
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    if writer is not None:
        writer.close()


# The three contenders run as `python prep.py --run NAME DATA TOKENIZER OUT` in a child.
def run_floor(data: Path, tokenizer_path: Path, _out: Path) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    for batch in pq.ParquetFile(data).iter_batches(batch_size=4096):
        for column in ("prompt", "chosen", "rejected"):
            tokenizer.encode_batch_fast(batch.column(column).to_pylist())


def run_baseline(data: Path, tokenizer_path: Path, out: Path) -> None:
    import difflib

    from datasets import Dataset, disable_progress_bars
    from tokenizers import Tokenizer

    disable_progress_bars()
    tokenizer = Tokenizer.from_file(str(tokenizer_path))

    def masks(a: list[int], b: list[int]) -> tuple[list[int], list[int]]:
        a_mask, b_mask = [1] * len(a), [1] * len(b)
        for block in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_matching_blocks():
            a_mask[block.a : block.a + block.size] = [0] * block.size
            b_mask[block.b : block.b + block.size] = [0] * block.size
        return a_mask, b_mask

    def tokenize(batch: dict[str, list[str]]) -> dict[str, list[list[int]]]:
        prompt = [e.ids for e in tokenizer.encode_batch(batch["prompt"])]
        chosen = [e.ids for e in tokenizer.encode_batch(batch["chosen"], add_special_tokens=False)]
        rejected = [
            e.ids for e in tokenizer.encode_batch(batch["rejected"], add_special_tokens=False)
        ]
        diffs = [masks(c, r) for c, r in zip(chosen, rejected, strict=True)]
        return {
            "prompt_ids": prompt,
            "chosen_ids": chosen,
            "rejected_ids": rejected,
            "chosen_diff": [d[0] for d in diffs],
            "rejected_diff": [d[1] for d in diffs],
        }

    dataset = Dataset.from_parquet(str(data), cache_dir=str(out / "cache"))
    mapped = dataset.map(tokenize, batched=True, num_proc=2, remove_columns=dataset.column_names)
    mapped.to_parquet(str(out / "baseline.parquet"))


def run_tokenpo(data: Path, tokenizer_path: Path, out: Path) -> None:
    import tokenpo

    tokenpo.prep([data], tokenizer_path, out / "shards")


def run_tokenpo_ray(data: Path, tokenizer_path: Path, out: Path) -> None:
    import tokenpo

    address = os.environ[RAY_ADDRESS_VARIABLE]
    tokenpo.prep([data], tokenizer_path, out / "shards", engine="ray", ray_address=address)


CONTENDERS = {
    "baseline": run_baseline,
    "floor": run_floor,
    "tokenpo": run_tokenpo,
    "tokenpo-ray": run_tokenpo_ray,
}
RAY_ADDRESS_VARIABLE = "TOKENPO_BENCH_RAY_ADDRESS"
RAY_ENVIRONMENT = {
    # Every Ray process on loopback: Ray otherwise swaps 127.0.0.1 for the machine's
    # routable address.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    # The drivers present the token of the instance started here.
    "RAY_AUTH_MODE": "token",
    # Ray starts its workers at niceness 15, behind every other process of a shared
    # machine; the local engine runs at 0, so the two would not compete alike.
    "RAY_worker_niceness": "0",
}
RAY_WORKERS = 2

# A Ray instance kept up for the whole benchmark, in a process of its own: it prints the
# address drivers connect to, and shuts Ray down when its standard input closes.
_RAY_HEAD = """
import sys, ray
ray.init(num_cpus=int(sys.argv[1]), include_dashboard=False)
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()
ray.shutdown()
"""


@contextmanager
def ray_instance(workers: int) -> Iterator[str]:
    """A local Ray instance of ``workers`` CPUs; yields its address."""
    head = subprocess.Popen(
        [sys.executable, "-c", _RAY_HEAD, str(workers)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert head.stdin is not None
    assert head.stdout is not None
    try:
        yield head.stdout.readline().strip()
    finally:
        head.stdin.close()
        head.wait(timeout=120)


# A wrapper interpreter per measurement: RUSAGE_CHILDREN keeps the maximum over all the
# children of a process, so each contender's peak must be read in a process of its own.
_MEASURE = """
import resource, subprocess, sys, tempfile, time
with tempfile.TemporaryDirectory() as out:
    start = time.perf_counter()
    subprocess.run(sys.argv[1:] + [out], check=True)
    print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def measure(name: str, data: Path, tokenizer: Path) -> tuple[float, float]:
    """Seconds and peak RSS (GiB, worker processes included) of one contender."""
    contender = [sys.executable, __file__, "--run", name, str(data), str(tokenizer)]
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, *contender], capture_output=True, text=True, check=True
    )
    seconds, peak_kib = result.stdout.split()
    return float(seconds), int(peak_kib) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the full sets")
    parser.add_argument("--rss-scaling", action="store_true", help="tokenpo at 100k and 1M pairs")
    parser.add_argument(
        "--set", choices=[kind for _, kind, _ in SETS], help="only this set (default: both)"
    )
    parser.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="ray: the Ray engine beside the local one, instead of the three contenders",
    )
    parser.add_argument("--run", nargs=4, metavar=("NAME", "DATA", "TOKENIZER", "OUT"))
    args = parser.parse_args()
    if args.run:
        name, data, tokenizer, out = args.run
        CONTENDERS[name](Path(data), Path(tokenizer), Path(out))
        return
    console = Console()
    with tempfile.TemporaryDirectory() as work_dir:
        work = Path(work_dir)
        rng = random.Random(0)
        corpus = [json.dumps(short_pair(rng)) for _ in range(5000)]
        tokenizer = work / "tokenizer.json"
        train_bpe_tokenizer(corpus, vocab_size=4000).save(str(tokenizer))
        if args.rss_scaling:
            rss_scaling(console, work, tokenizer)
            return
        sets = [entry for entry in SETS if args.set in (None, entry[1])]
        if args.engine == "ray":
            os.environ |= RAY_ENVIRONMENT
            with ray_instance(RAY_WORKERS) as address:
                os.environ[RAY_ADDRESS_VARIABLE] = address
                compare_engines(console, work, tokenizer, sets, args.scale)
        else:
            compare(console, work, tokenizer, sets, args.scale)


def compare(
    console: Console, work: Path, tokenizer: Path, sets: list[BenchSet], scale: float
) -> None:
    table = Table(title="prep: tokenpo vs HF datasets + difflib (baseline) vs encode only (floor)")
    for column in ("set", "pairs", "baseline pairs/s", "floor pairs/s", "tokenpo pairs/s"):
        table.add_column(column, justify="right")
    for column in ("vs baseline", "time / floor", "tokenpo peak RSS"):
        table.add_column(column, justify="right", style="bold")
    for name, kind, pairs in sets:
        n_pairs = int(pairs * scale)
        data = work / f"{kind}.parquet"
        write_set(data, n_pairs, kind, seed=1)
        results = {
            contender: measure(contender, data, tokenizer)
            for contender in ("baseline", "floor", "tokenpo")
        }
        seconds = {contender: result[0] for contender, result in results.items()}
        table.add_row(
            name,
            f"{n_pairs:,}",
            *(f"{n_pairs / seconds[c]:,.0f}" for c in ("baseline", "floor", "tokenpo")),
            f"{seconds['baseline'] / seconds['tokenpo']:.2f}x",
            f"{seconds['tokenpo'] / seconds['floor']:.2f}x",
            f"{results['tokenpo'][1]:.2f} GiB",
        )
    console.print(table)


def compare_engines(
    console: Console, work: Path, tokenizer: Path, sets: list[BenchSet], scale: float
) -> None:
    table = Table(title=f"prep: Ray engine ({RAY_WORKERS} local workers) vs local engine")
    for column in ("set", "pairs", "local pairs/s", "ray pairs/s"):
        table.add_column(column, justify="right")
    table.add_column("ray / local (>= 0.7x)", justify="right", style="bold")
    table.add_column("ray peak RSS (driver)", justify="right")
    for name, kind, pairs in sets:
        n_pairs = int(pairs * scale)
        data = work / f"{kind}.parquet"
        write_set(data, n_pairs, kind, seed=1)
        local, _ = measure("tokenpo", data, tokenizer)
        distributed, driver_gib = measure("tokenpo-ray", data, tokenizer)
        table.add_row(
            name,
            f"{n_pairs:,}",
            f"{n_pairs / local:,.0f}",
            f"{n_pairs / distributed:,.0f}",
            f"{local / distributed:.2f}x",
            f"{driver_gib:.2f} GiB",
        )
    console.print(table)


def rss_scaling(console: Console, work: Path, tokenizer: Path) -> None:
    table = Table(title="tokenpo prep peak RSS by corpus size (short JSON pairs)")
    for column in ("pairs", "seconds", "peak RSS"):
        table.add_column(column, justify="right")
    for n_pairs in (100_000, 1_000_000):
        data = work / f"short-{n_pairs}.parquet"
        write_set(data, n_pairs, "short", seed=2)
        seconds, peak_gib = measure("tokenpo", data, tokenizer)
        table.add_row(f"{n_pairs:,}", f"{seconds:.1f}", f"{peak_gib:.2f} GiB")
    console.print(table)


if __name__ == "__main__":
    main()
