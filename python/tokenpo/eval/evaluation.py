"""`tokenpo eval`: greedy generation on a test set scored against gold annotations, and
optionally pairwise accuracy on held-out prepared pairs.

    result = evaluate("runs/tabpo/final", "test.jsonl", pairs="shards-test/")
    print(result.structured.joint.f1, result.pairwise.accuracy)

The test set is a JSONL or parquet file with a conversational ``prompt`` column and a
``gold`` column holding the gold annotation JSON (``tokenpo.synthetic.task.write_split``
writes both). Completions and gold are parsed with
:func:`tokenpo.synthetic.task.parse_annotations` and scored against
:data:`tokenpo.synthetic.task.SCHEMA` (see :mod:`tokenpo.eval.scoring`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from tokenpo.data.dataset import PairDataset, file_sha256
from tokenpo.eval.generation import Prompt, PromptTokenizer, generate_completions
from tokenpo.eval.pairwise import PairwiseScores, check_reference, pairwise_accuracy
from tokenpo.eval.scoring import StructuredScores, score_annotations
from tokenpo.exceptions import ConfigError, InputError, InvalidRowError, SchemaError
from tokenpo.models import load_causal_lm
from tokenpo.synthetic.task import SCHEMA, Annotation, parse_annotations

__all__ = ["EvalOptions", "EvalProgress", "EvalResult", "EvalRow", "evaluate", "read_eval_rows"]

EvalProgress = Callable[[str, int, int], None]
"""Called as ``(stage, done, total)``; ``stage`` is ``"generate"`` (prompts) or
``"pairwise"`` (pairs)."""


@dataclass(kw_only=True, slots=True)
class EvalOptions:
    """How evaluation reads the test set and runs the model."""

    max_new_tokens: int = 256
    """The most tokens generated per prompt."""
    batch_size: int = 16
    """Prompts generated together, and pairs per forward pass."""
    limit: int | None = None
    """Evaluate only the first ``limit`` rows of the test set; None: all."""
    prompt_column: str = "prompt"
    """The test set's column of prompts (conversational messages, or text)."""
    gold_column: str = "gold"
    """The test set's column of gold annotation JSON."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``auto``: CUDA when available, else the CPU."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens: must be at least 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size: must be at least 1, got {self.batch_size}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit: must be at least 1, got {self.limit}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device: must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device: 'cuda', but no CUDA device is available")

    @property
    def torch_device(self) -> torch.device:
        use_cuda = self.device == "cuda" or (self.device == "auto" and torch.cuda.is_available())
        return torch.device("cuda" if use_cuda else "cpu")


@dataclass(frozen=True, slots=True)
class EvalRow:
    """One test example."""

    prompt: Prompt
    gold: list[Annotation]


@dataclass(frozen=True, slots=True)
class EvalResult:
    """Everything one evaluation measured."""

    model: str
    data: str
    pairs: str | None
    options: EvalOptions
    structured: StructuredScores
    pairwise: PairwiseScores | None
    """None without held-out pairs."""
    completions: list[str] = field(repr=False)
    """The model's completion of each test prompt, in order."""
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values."""
        return {
            "model": self.model,
            "data": self.data,
            "pairs": self.pairs,
            "options": asdict(self.options),
            "structured": self.structured.to_dict(),
            "pairwise": None if self.pairwise is None else self.pairwise.to_dict(),
            "completions": list(self.completions),
            "seconds": self.seconds,
        }


def evaluate(
    model: str | Path | nn.Module,
    data: str | Path,
    *,
    pairs: str | Path | None = None,
    reference: str | Path | nn.Module | None = None,
    tokenizer: str | Path | None = None,
    options: EvalOptions | None = None,
    progress: EvalProgress | None = None,
) -> EvalResult:
    """Generates a completion for every test prompt and scores it; scores held-out pairs.

    Args:
        model: a model directory in the Hugging Face format (e.g. a trainer's
            ``RUN_DIR/final``, or any transformers causal LM), or a loaded model.
        data: the test set, ``.jsonl`` or ``.parquet``.
        pairs: a directory written by ``tokenpo prep`` from held-out pairs: adds pairwise
            accuracy.
        reference: the reference model of pairwise accuracy (a directory, config or loaded
            model); needed when the pairs hold no stored reference log-probs.
        tokenizer: a directory with ``tokenizer.json`` and ``tokenizer_config.json`` (or a
            ``tokenizer.json``); default: ``model``, which must then be a directory.
        options: generation and reading options.
        progress: told how far generation and pair scoring are.

    Raises:
        InputError: an unreadable test set, a missing column, a gold annotation that does
            not parse, prompts or pairs the model's vocabulary does not cover, pairs
            prepared with another tokenizer.
        TokenizerError: no usable tokenizer.
        ConfigError: a model that cannot be loaded, bad options, or pairs without stored
            reference log-probs and no reference model.
    """
    started = time.perf_counter()
    options = options or EvalOptions()
    if tokenizer is None:
        if isinstance(model, nn.Module):
            raise ConfigError("tokenizer: required when the model is given as a loaded module")
        tokenizer = model
    prompt_tokenizer = PromptTokenizer.load(tokenizer)
    rows = read_eval_rows(data, options)
    dataset = None
    if pairs is not None:
        sha256 = None if prompt_tokenizer.file is None else file_sha256(prompt_tokenizer.file)
        dataset = PairDataset.open(pairs, tokenizer_sha256=sha256)
        check_reference(dataset, has_model=reference is not None)
    device = options.torch_device
    policy = _load(model, device)

    def report(stage: str) -> Callable[[int, int], None] | None:
        if progress is None:
            return None
        return lambda done, total: progress(stage, done, total)

    completions = generate_completions(
        policy,
        prompt_tokenizer,
        [row.prompt for row in rows],
        max_new_tokens=options.max_new_tokens,
        batch_size=options.batch_size,
        progress=report("generate"),
    )
    structured = score_annotations(
        [row.gold for row in rows],
        [parse_annotations(completion) for completion in completions],
        schema=SCHEMA,
    )
    pairwise = None
    if dataset is not None:
        pairwise = pairwise_accuracy(
            policy,
            dataset,
            reference=None if reference is None else _load(reference, device),
            batch_size=options.batch_size,
            progress=report("pairwise"),
        )
    return EvalResult(
        model=_name(model),
        data=str(data),
        pairs=None if pairs is None else str(pairs),
        options=options,
        structured=structured,
        pairwise=pairwise,
        completions=completions,
        seconds=time.perf_counter() - started,
    )


def read_eval_rows(path: str | Path, options: EvalOptions | None = None) -> list[EvalRow]:
    """The test set's prompts and parsed gold annotations (the first ``options.limit``).

    Raises:
        InputError: the file cannot be read or has another suffix than ``.jsonl`` or
            ``.parquet`` (naming the line of bad JSON); SchemaError: a column is missing;
            InvalidRowError: a gold value that is not a JSON annotation list, or a prompt
            that is neither text nor a list of messages; no rows at all.
    """
    options = options or EvalOptions()
    path = Path(path)
    columns = (options.prompt_column, options.gold_column)
    records = _read_records(path, columns, options.limit)
    if not records:
        raise InputError(f"{path}: the test set holds no rows", file=str(path))
    rows = []
    for index, record in enumerate(records):
        prompt, gold_text = record[options.prompt_column], record[options.gold_column]
        if not isinstance(prompt, str | list):
            raise InvalidRowError(
                f"{path}: row {index}: {options.prompt_column!r} must be text or a list of "
                f"messages, got {type(prompt).__name__}",
                file=str(path),
                row=index,
                field=options.prompt_column,
            )
        gold = parse_annotations(gold_text) if isinstance(gold_text, str) else None
        if gold is None:
            raise InvalidRowError(
                f"{path}: row {index}: {options.gold_column!r} is not a JSON list of "
                f'{{"code", "subcode", "span"}} objects: {str(gold_text)[:200]!r}',
                file=str(path),
                row=index,
                field=options.gold_column,
            )
        rows.append(EvalRow(prompt=prompt, gold=gold))
    return rows


def _read_records(path: Path, columns: tuple[str, ...], limit: int | None) -> list[dict[str, Any]]:
    if not path.is_file():
        raise InputError(f"{path}: no such test set file", file=str(path))
    if path.suffix == ".jsonl":
        records = _read_jsonl(path, limit)
        names = set().union(*(record.keys() for record in records)) if records else set()
    elif path.suffix == ".parquet":
        try:
            names = set(pq.read_schema(path).names)
            table = pq.read_table(path, columns=[name for name in columns if name in names])
        except (OSError, pa.ArrowException) as error:
            raise InputError(f"{path}: cannot read parquet: {error}", file=str(path)) from error
        records = table.slice(0, limit).to_pylist()
    else:
        raise InputError(
            f"{path}: the test set must be .jsonl or .parquet, got {path.suffix or 'no suffix'}",
            file=str(path),
        )
    for name in columns:
        if name not in names:
            raise SchemaError(
                f"{path}: required column {name!r} missing; columns: {', '.join(sorted(names))}",
                file=str(path),
                field=name,
            )
        row = next((row for row, record in enumerate(records) if name not in record), None)
        if row is not None:
            raise InvalidRowError(
                f"{path}: row {row} has no {name!r}", file=str(path), row=row, field=name
            )
    return records


def _read_jsonl(path: Path, limit: int | None) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    try:
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if limit is not None and len(records) == limit:
                    break
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise InputError(
                        f"{path}: line {number} is not valid JSON: {error}",
                        file=str(path),
                        row=len(records),
                    ) from None
                if not isinstance(record, dict):
                    raise InputError(
                        f"{path}: line {number} is not a JSON object",
                        file=str(path),
                        row=len(records),
                    )
                records.append(record)
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read: {error}", file=str(path)) from error
    return records


def _load(source: str | Path | nn.Module, device: torch.device) -> nn.Module:
    model = source if isinstance(source, nn.Module) else load_causal_lm(source)
    return model.to(device)


def _name(source: str | Path | nn.Module) -> str:
    return type(source).__name__ if isinstance(source, nn.Module) else str(source)
