"""Stages 2-4 of the demo: SFT to a target F1, confusion-aware pairs, one method's run.

Each stage is resumable by its outputs: the SFT loop resumes the trainer's checkpoint, the
pairs stage re-uses prep's and ref-logps' own skipping.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from tokenpo.demo.data import DataSizes
from tokenpo.demo.methods import TrainSettings, method, method_overrides
from tokenpo.eval import EvalOptions, evaluate
from tokenpo.exceptions import ConfigError
from tokenpo.prep import PrepOptions, prep
from tokenpo.synthetic import (
    ConfusionStats,
    make_negatives,
    pair_row,
    pairs_from_model_outputs,
    parse_annotations,
    write_rows,
)
from tokenpo.synthetic.task import Example, Split
from tokenpo.train.config import load_config
from tokenpo.train.loop import TrainResult, train
from tokenpo.train.ref_logps import compute_ref_logps

__all__ = [
    "DataSizes",
    "PairsOptions",
    "SftOptions",
    "make_pairs",
    "pair_rows",
    "prep_pairs",
    "read_examples",
    "run_sft",
    "train_method",
]

Device = Literal["auto", "cpu", "cuda"]
Log = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


def prep_pairs(pairs: Path, tokenizer_dir: Path, out: Path) -> Path:
    """``tokenpo prep`` with the TAB-PO authors' importance coefficients; skips a done dir."""
    if not (out / "manifest.json").is_file():
        options = PrepOptions(importance="tabpo_authors", format="ipc")
        prep([pairs], tokenizer_dir / "tokenizer.json", out, options)
    return out


@dataclass(frozen=True, kw_only=True, slots=True)
class SftOptions:
    """How the SFT stage trains and when it stops."""

    target_f1: float = 0.45
    """Stop once validation joint micro-F1 reaches this (the issue: 0.4-0.6)."""
    increment: int = 500
    """Optimizer steps between validations."""
    max_steps: int = 2000
    """Stop here even below the target."""
    lr: float = 3e-3
    """Learning rate, constant after the warmup (high: copying spans emerges sooner)."""
    warmup_steps: int = 100
    """Optimizer steps of linear warmup."""
    batch_size: int = 16
    """Pairs (gold completions) per step."""
    hidden_size: int = 128
    """The built-in GPT's width."""
    layers: int = 2
    """The built-in GPT's depth."""
    heads: int = 4
    """Attention heads."""
    tie_embeddings: bool = True
    """One matrix for input and output embeddings: the model learns to copy spans sooner."""
    val_messages: int = 64
    """Validation messages generated greedily after each increment."""
    max_new_tokens: int = 128
    """The most tokens generated per validation message."""
    seed: int = 0
    """The run's seed."""
    device: Device = "auto"
    """``run.device``."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.target_f1 <= 1.0:
            raise ConfigError(f"target_f1 must be in [0, 1], got {self.target_f1}")
        for name in ("increment", "max_steps", "batch_size", "val_messages", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be >= 0, got {self.warmup_steps}")


def _eval_options(limit: int | None, max_new_tokens: int, device: Device) -> EvalOptions:
    return EvalOptions(limit=limit, max_new_tokens=max_new_tokens, batch_size=32, device=device)


def run_sft(data_dir: Path, out: Path, options: SftOptions, log: Log = _quiet) -> dict[str, Any]:
    """Trains the built-in GPT with the ``sft`` objective on ``data_dir/sft_pairs.jsonl`` in
    increments until validation joint micro-F1 reaches the target or the step cap.

    Writes ``out/shards`` (the prepared SFT pairs), the run in ``out`` (its policy in
    ``out/final``) and ``out/sft_stop.json``: the steps, the F1 history, the seconds. A
    killed run resumes from the trainer's last checkpoint and the history so far.
    """
    out.mkdir(parents=True, exist_ok=True)
    shards = prep_pairs(data_dir / "sft_pairs.jsonl", data_dir / "tokenizer", out / "shards")
    history_file = out / "sft_history.json"
    history: list[dict[str, float]] = (
        json.loads(history_file.read_text()) if history_file.is_file() else []
    )
    # Seconds spent by earlier, killed attempts, so that the history's clock is the run's.
    earlier = history[-1]["seconds"] if history else 0.0
    started = time.perf_counter()
    gpt = {
        "hidden_size": options.hidden_size,
        "num_hidden_layers": options.layers,
        "num_attention_heads": options.heads,
        "tie_word_embeddings": options.tie_embeddings,
    }
    gpt_text = "{" + ", ".join(f"{key} = {json.dumps(value)}" for key, value in gpt.items()) + "}"
    steps = int(history[-1]["step"]) if history else 0
    while (not history or history[-1]["joint_f1"] < options.target_f1) and (
        steps < options.max_steps
    ):
        steps = min(steps + options.increment, options.max_steps)
        config = load_config(
            None,
            [
                f"run.out_dir={json.dumps(str(out / 'run'))}",
                f"run.seed={options.seed}",
                f"run.device={json.dumps(options.device)}",
                'model.source="gpt"',
                f"model.gpt={gpt_text}",
                f"data.shards={json.dumps(str(shards))}",
                f"data.batch_size={options.batch_size}",
                f"data.tokenizer={json.dumps(str(data_dir / 'tokenizer' / 'tokenizer.json'))}",
                'loss.name="sft"',
                f"optim.lr={options.lr}",
                'schedule.kind="constant"',
                f"schedule.warmup_steps={min(options.warmup_steps, steps)}",
                f"schedule.max_steps={steps}",
                "checkpoint.resume=true",
            ],
        )
        result = train(config)
        scores = evaluate(
            result.export_dir,
            data_dir / "validation.jsonl",
            tokenizer=data_dir / "tokenizer",
            options=_eval_options(options.val_messages, options.max_new_tokens, options.device),
        ).structured
        history.append(
            {
                "step": steps,
                "joint_f1": scores.joint.f1,
                "json_validity": scores.json_validity,
                "seconds": earlier + time.perf_counter() - started,
            }
        )
        history_file.write_text(json.dumps(history, indent=2) + "\n")
        log(f"sft step {steps}: joint F1 {scores.joint.f1:.3f}")
    stop = {
        "steps": steps,
        "target_f1": options.target_f1,
        "reached": bool(history) and history[-1]["joint_f1"] >= options.target_f1,
        "joint_f1": history[-1]["joint_f1"] if history else None,
        "history": history,
        "model": str(out / "run" / "final"),
        "options": asdict(options),
    }
    (out / "sft_stop.json").write_text(json.dumps(stop, indent=2) + "\n")
    return stop


def read_examples(path: Path, split: Split) -> list[Example]:
    """The examples of a split file written by ``tokenpo demo data``, marked as of ``split``
    (which decides whether their negatives may use held-out slot values)."""
    examples = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        annotations = parse_annotations(row["gold"])
        if annotations is None:
            raise ConfigError(f"{path}: a gold annotation does not parse: {row['gold']!r}")
        examples.append(Example(row["message"], tuple(annotations), split, ()))
    return examples


@dataclass(frozen=True, kw_only=True, slots=True)
class PairsOptions:
    """How the pairs stage builds negatives."""

    limit: int | None = None
    """Use only the first ``limit`` training messages; None: all."""
    negatives: int = 2
    """Perturbed negatives per message (plus the model's own wrong valid output)."""
    max_new_tokens: int = 128
    """The most tokens generated per message."""
    seed: int = 0
    """Seeds the perturbations."""
    device: Device = "auto"
    """Where the SFT model generates and scores."""


def pair_rows(
    examples: Sequence[Example],
    outputs: Sequence[str],
    stats: ConfusionStats,
    *,
    rng: random.Random,
    negatives: int,
) -> list[dict[str, Any]]:
    """Preference rows: ``negatives`` perturbed negatives per example, then the model's own
    wrong valid ``outputs``. A pair drawn twice (an output equal to a perturbation) is kept
    once, the first time."""
    drawn = [
        (example, negative)
        for example in examples
        for negative in make_negatives(example, stats, rng=rng, count=negatives)
    ]
    drawn += pairs_from_model_outputs(examples, outputs)
    seen: set[tuple[str, str]] = set()
    rows = []
    for example, negative in drawn:
        if (example.message, negative.text) not in seen:
            seen.add((example.message, negative.text))
            rows.append(pair_row(example, negative))
    return rows


def _pairs_for(
    model: Path, data_dir: Path, split: Split, options: PairsOptions, limit: int | None
) -> tuple[list[dict[str, Any]], ConfusionStats]:
    examples = read_examples(data_dir / f"{split}.jsonl", split)[:limit]
    outputs = evaluate(
        model,
        data_dir / f"{split}.jsonl",
        tokenizer=data_dir / "tokenizer",
        options=_eval_options(len(examples), options.max_new_tokens, options.device),
    ).completions
    stats = ConfusionStats.from_outputs(examples, outputs)
    rng = random.Random(f"{options.seed}/{split}")
    rows = pair_rows(examples, outputs, stats, rng=rng, negatives=options.negatives)
    return rows, stats


def make_pairs(
    model: Path, data_dir: Path, out: Path, options: PairsOptions, log: Log = _quiet
) -> dict[str, Any]:
    """Greedy outputs of the SFT ``model`` on the training (and validation) messages, their
    confusion statistics (``out/confusion.json``), the negatives they give
    (``out/{train,val}_pairs.jsonl``), prepared (``out/{train,val}``) with reference
    log-probs from ``model``. Returns a summary (also ``out/pairs.json``)."""
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {}
    splits: tuple[tuple[Split, str], ...] = (("train", "train"), ("validation", "val"))
    for split, name in splits:
        raw = out / f"{name}_pairs.jsonl"
        limit = options.limit if split == "train" else None
        if not raw.is_file():
            rows, stats = _pairs_for(model, data_dir, split, options, limit)
            if split == "train":
                (out / "confusion.json").write_text(json.dumps(stats.as_dict(), indent=2) + "\n")
            write_rows(rows, raw)
            log(f"{name}: {len(rows)} pairs")
        shards = prep_pairs(raw, data_dir / "tokenizer", out / name)
        compute_ref_logps(shards, model)
        summary[name] = sum(1 for _ in raw.open())
    (out / "pairs.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def train_method(name: str, settings: TrainSettings, *, out_dir: Path, seed: int) -> TrainResult:
    """Trains method ``name`` of :data:`~tokenpo.demo.methods.METHODS` into ``out_dir``
    (resuming its last checkpoint)."""
    return train(
        load_config(None, method_overrides(method(name), settings, out_dir=out_dir, seed=seed))
    )
