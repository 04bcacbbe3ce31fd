"""`tokenpo eval`: generate on a test set, score the annotations, rank held-out pairs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import RenderableType
from rich.progress import (
    TaskID,
)
from rich.table import Table
from rich.text import Text

from tokenpo.exceptions import InputError
from tokenpo_cli.console import note, out, progress_bar

if TYPE_CHECKING:
    from tokenpo.eval import EvalOptions, EvalResult, MicroF1

_STAGES = {"generate": "generating", "pairwise": "scoring pairs"}


def eval_command(
    models: Annotated[
        list[Path],
        typer.Option(
            "--model",
            "-m",
            exists=True,
            file_okay=False,
            help="A model directory in the Hugging Face format (e.g. RUN_DIR/final). Repeat "
            "it to evaluate several models in one process, one after the other.",
        ),
    ],
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            "-d",
            exists=True,
            dir_okay=False,
            help="The test set (.jsonl or .parquet): a conversational prompt and the gold "
            "annotation JSON per row.",
        ),
    ],
    pairs: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            file_okay=False,
            help="Held-out pairs prepared by `tokenpo prep`: adds pairwise accuracy.",
        ),
    ] = None,
    reference: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            help="Reference model for pairwise accuracy when the pairs store no reference "
            "log-probs (`tokenpo ref-logps`).",
        ),
    ] = None,
    tokenizer: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            help="Directory with tokenizer.json, tokenizer_config.json and any "
            "chat_template.jinja [default: --model].",
        ),
    ] = None,
    out_paths: Annotated[
        list[Path] | None,
        typer.Option(
            "--out",
            "-o",
            help="Write the results to this JSON file; with several models, one --out each, "
            "in the same order.",
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print the results as JSON instead of tables (a list with several models).",
        ),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", help="Also show per-code F1 and the confusion table."),
    ] = False,
    max_new_tokens: Annotated[
        int, typer.Option(min=1, help="The most tokens generated per prompt.")
    ] = 256,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Prompts generated together; pairs per forward pass.")
    ] = 16,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Evaluate only the first N test rows.")
    ] = None,
    prompt_column: Annotated[str, typer.Option(help="The test set's prompt column.")] = "prompt",
    gold_column: Annotated[str, typer.Option(help="The test set's gold column.")] = "gold",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Evaluate models: greedy generation on a test set, scored as structured output.

    Reports JSON and schema validity and micro-F1 of codes, labels (code + subcode), exact
    spans and whole annotations; with `--pairs`, how often the implicit reward (policy minus
    reference log-probs) ranks the chosen completion over the rejected one.
    """
    from tokenpo.eval import EvalOptions

    if out_paths and len(out_paths) != len(models):
        raise typer.BadParameter(
            f"give one --out per --model: {len(models)} models, {len(out_paths)} --out",
            param_hint="--out",
        )
    options = EvalOptions(
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        limit=limit,
        prompt_column=prompt_column,
        gold_column=gold_column,
        device=device,  # type: ignore[arg-type]  # validated by EvalOptions
    )
    # Several models without --verbose: one comparison table instead of each one's tables.
    compare = len(models) > 1 and not verbose
    evaluated, payload = [], []
    for index, model in enumerate(models):
        result = _evaluate_one(model, data, pairs, reference, tokenizer, options)
        record = result.to_dict()
        out_path = out_paths[index] if out_paths else None
        if out_path is not None:
            _write(record, out_path)
        if not as_json and not compare:
            for renderable in _tables(result, verbose=verbose):
                out.print(renderable)
        if out_path is not None:
            note(Text(f"results written to {out_path}"))
        evaluated.append(result)
        payload.append(record)
    if as_json:
        text = json.dumps(
            payload[0] if len(payload) == 1 else payload, indent=2, ensure_ascii=False
        )
        sys.stdout.write(text + "\n")
    elif compare:
        out.print(_comparison(evaluated))


def _evaluate_one(
    model: Path,
    data: Path,
    pairs: Path | None,
    reference: Path | None,
    tokenizer: Path | None,
    options: EvalOptions,
) -> EvalResult:
    from tokenpo.eval import evaluate

    with _StageProgress(label=str(model)) as progress:
        return evaluate(
            model,
            data,
            pairs=pairs,
            reference=reference,
            tokenizer=tokenizer,
            options=options,
            progress=progress.update,
        )


def _write(results: dict[str, object], path: Path) -> None:
    try:
        path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    except OSError as error:
        raise InputError(f"{path}: cannot write the results: {error}", file=str(path)) from error


class _StageProgress:
    """One rich progress bar per stage on stderr, fed by ``(stage, done, total)``; silent when
    stderr is not a terminal."""

    def __init__(self, label: str) -> None:
        self._progress = progress_bar()
        self._tasks: dict[str, TaskID] = {}
        self._label = label

    def __enter__(self) -> _StageProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._progress.__exit__(None, None, None)

    def update(self, stage: str, done: int, total: int) -> None:
        if stage not in self._tasks:
            description = f"{_STAGES.get(stage, stage)} ({self._label})"
            self._tasks[stage] = self._progress.add_task(description, total=total)
        self._progress.update(self._tasks[stage], completed=done)


def _tables(result: EvalResult, *, verbose: bool) -> list[RenderableType]:
    """The results as rich renderables: a heading, then one table per part."""
    structured = result.structured
    heading = Text(f"{result.model} on {result.data}", style="bold")
    validity = Table(title="outputs", title_justify="left", show_header=False)
    validity.add_column(style="bold")
    validity.add_column(justify="right")
    validity.add_column(justify="right")
    for name, rate, count in (
        ("JSON valid", structured.json_validity, structured.json_valid),
        ("schema valid", structured.schema_validity, structured.schema_valid),
    ):
        validity.add_row(name, f"{rate:.1%}", f"{count:,} of {structured.examples:,}")
    overview = Table(title="micro-F1", title_justify="left")
    for column in ("level", "precision", "recall", "F1", "tp / predicted / gold"):
        overview.add_column(column, justify="left" if column == "level" else "right")
    for name, scores in (
        ("code", structured.code),
        ("code + subcode", structured.subcode),
        ("span (exact)", structured.span),
        ("joint", structured.joint),
    ):
        overview.add_row(name, *_f1_cells(scores))
    tables: list[RenderableType] = [heading, validity, overview]
    if result.pairwise is not None:
        pairwise = result.pairwise
        ranking = Table(
            title=Text(f"pairwise accuracy on {result.pairs}"),
            title_justify="left",
            show_header=False,
        )
        ranking.add_column(style="bold")
        ranking.add_column(justify="right")
        ranking.add_row("accuracy", f"{pairwise.accuracy:.3f}")
        source = "stored in the pairs" if pairwise.reference == "stored" else "reference model"
        ranking.add_row("reference log-probs", source)
        ranking.add_row("pairs (ties)", f"{pairwise.pairs:,} ({pairwise.ties:,})")
        ranking.add_row("mean chosen log-prob", f"{pairwise.mean_chosen_logps:.3f}")
        ranking.add_row("mean rejected log-prob", f"{pairwise.mean_rejected_logps:.3f}")
        ranking.add_row("mean reward margin", f"{pairwise.mean_reward_margin:+.3f}")
        tables.append(ranking)
    if verbose:
        tables += [_per_code(result), _confusion(result)]
    return tables


def _comparison(results: list[EvalResult]) -> Table:
    """One row per model: validity and the micro-F1 of each level (pairwise accuracy too)."""
    table = Table(title=Text(f"{len(results)} models on {results[0].data}"), title_justify="left")
    columns = ["JSON valid", "code F1", "subcode F1", "span F1", "joint F1"]
    if results[0].pairwise is not None:
        columns.append("pairwise acc.")
    # A long model path folds onto more lines: its end, which tells the runs apart, stays.
    table.add_column("model", overflow="fold")
    for column in columns:
        table.add_column(column, justify="right")
    for result in results:
        scores = result.structured
        cells = [f"{scores.json_validity:.1%}"]
        cells += [f"{level.f1:.3f}" for level in (scores.code, scores.subcode, scores.span)]
        cells.append(f"{scores.joint.f1:.3f}")
        if result.pairwise is not None:
            cells.append(f"{result.pairwise.accuracy:.3f}")
        table.add_row(Text(result.model), *cells)
    return table


def _f1_cells(scores: MicroF1) -> tuple[str, str, str, str]:
    return (
        f"{scores.precision:.3f}",
        f"{scores.recall:.3f}",
        f"{scores.f1:.3f}",
        f"{scores.true_positives:,} / {scores.predicted:,} / {scores.gold:,}",
    )


def _per_code(result: EvalResult) -> Table:
    table = Table(title="per code (whole annotations)", title_justify="left")
    for column in ("code", "precision", "recall", "F1", "tp / predicted / gold"):
        table.add_column(column, justify="left" if column == "code" else "right")
    for code, scores in result.structured.per_code.items():
        table.add_row(Text(code), *_f1_cells(scores))
    return table


def _confusion(result: EvalResult) -> Table:
    table = Table(
        title="confusion (∅: missed or spurious)",
        title_justify="left",
    )
    for column in ("gold", "predicted", "count"):
        table.add_column(column, justify="right" if column == "count" else "left")
    for (gold, predicted), count in result.structured.confusion.items():
        style = "dim" if gold == predicted else None
        table.add_row(_label(gold), _label(predicted), f"{count:,}", style=style)
    return table


def _label(label: tuple[str, str] | None) -> Text:
    """A label as plain text: predicted labels are model output, not rich markup."""
    return Text("∅" if label is None else f"{label[0]}/{label[1]}")
