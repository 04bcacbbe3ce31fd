"""`tokenpo ref-logps`: store the reference model's per-token log-probs in the shards."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import (
    TaskID,
)

from tokenpo_cli.console import out, progress_bar

if TYPE_CHECKING:
    from tokenpo.train.ref_logps import RefLogpsResult


def ref_logps_command(
    shards: Annotated[
        Path, typer.Argument(help="A prepared directory (the output of `tokenpo prep`).")
    ],
    model: Annotated[
        Path,
        typer.Option(
            "--model",
            "-m",
            help="The reference: a model directory (e.g. RUN_DIR/final) or a config.json "
            "(random weights from --seed).",
        ),
    ],
    dtype: Annotated[str, typer.Option(help="Weights dtype: float32 or bfloat16.")] = "float32",
    batch_size: Annotated[int, typer.Option(help="Pairs per forward pass.")] = 16,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of a config.json reference's weights.")] = 0,
    trust_remote_code: Annotated[
        bool, typer.Option(help="Let transformers run the model directory's own code.")
    ] = False,
) -> None:
    """Run the reference model once over prepared shards and store its log-probs in them.

    Adds `ref_chosen_logps` and `ref_rejected_logps` to every shard and a `reference`
    record to `manifest.json`; training then needs no reference model in memory. A re-run
    skips shards already computed with the same model, so an interrupted run resumes. On
    several GPUs: `torchrun --nproc-per-node N -m tokenpo_cli ref-logps ...`.
    """
    from tokenpo.train.ref_logps import RefLogpsOptions, compute_ref_logps

    options = RefLogpsOptions(
        dtype=dtype,  # type: ignore[arg-type]  # validated by RefLogpsOptions
        batch_size=batch_size,
        device=device,  # type: ignore[arg-type]
        seed=seed,
        trust_remote_code=trust_remote_code,
    )
    with _PairProgress() as progress:
        result = compute_ref_logps(shards, model, options, progress.update)
    if result.is_main:
        out.print(_summary(result), soft_wrap=True)


class _PairProgress:
    """A rich progress bar over pairs, fed by the ``(done, total)`` callback."""

    def __init__(self) -> None:
        self._progress = progress_bar(detail=True)
        self._task: TaskID | None = None
        self._started = 0.0

    def __enter__(self) -> _PairProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._progress.__exit__(None, None, None)

    def update(self, done: int, total: int) -> None:
        if self._task is None:  # the first call comes once the model is loaded
            self._task = self._progress.add_task("reference log-probs", total=total, detail="")
            self._started = time.perf_counter()
        rate = done / max(time.perf_counter() - self._started, 1e-9)
        self._progress.update(self._task, completed=done, detail=f"{rate:,.0f} pairs/s")


def _summary(result: RefLogpsResult) -> str:
    reference = result.reference
    return (
        f"reference log-probs of {reference['model']} ({reference['dtype']}, sha256 "
        f"{reference['sha256'][:12]}) in {result.manifest.directory}: "
        f"{result.shards_written} shard(s) written, {result.shards_skipped} already done; "
        f"{result.pairs_scored:,} pairs scored in {result.seconds:.1f}s"
    )
