"""`tokenpo demo`: the TAB-PO authors' pipeline in miniature on the embedded task.

`tokenpo demo` alone writes the pipeline file into the workdir and runs it (a killed demo
resumes); each stage is also a command of its own.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich import box
from rich.table import Table

from tokenpo.exceptions import ConfigError
from tokenpo_cli.console import err, error, note, out

app = typer.Typer(
    help="Run the embedded token-critical demo: data, SFT, pairs, every method, report.",
    invoke_without_command=True,
    no_args_is_help=False,
)

Device = Literal["auto", "cpu", "cuda"]
DeviceOption = Annotated[str, typer.Option(help="auto, cpu or cuda.")]
MaxNewTokens = Annotated[int, typer.Option(min=1, help="The most tokens generated per message.")]


def _device(value: str) -> Device:
    if value not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {value!r}")
    return value  # type: ignore[return-value]  # checked just above


@app.callback()
def run_demo(
    ctx: typer.Context,
    seeds: Annotated[int, typer.Option(min=1, help="Train and evaluate every method K times.")] = 1,
    quick: Annotated[
        bool, typer.Option(help="Tiny data and few steps: checks the stages, not the scores.")
    ] = False,
    workdir: Annotated[Path, typer.Option(help="Where the pipeline file and outputs go.")] = Path(
        "runs/demo"
    ),
    device: Annotated[
        str, typer.Option(help="auto, cpu or cuda; cuda runs a larger model on more data.")
    ] = "auto",
) -> None:
    """Write the demo's pipeline file into the workdir and run it; print stage timings."""
    if ctx.invoked_subcommand is not None:
        return
    from dataclasses import replace

    from tokenpo.demo.pipeline import CUDA_PLAN, DEFAULT_PLAN, QUICK_PLAN, pipeline_toml
    from tokenpo.pipeline import load_pipeline, run_pipeline

    checked = _device(device)
    base = QUICK_PLAN if quick else CUDA_PLAN if checked == "cuda" else DEFAULT_PLAN
    plan = replace(base, seeds=tuple(range(seeds)), device=checked)
    workdir.mkdir(parents=True, exist_ok=True)
    file = workdir / "demo.toml"
    file.write_text(pipeline_toml(plan))
    pipeline = load_pipeline(file)
    summary = run_pipeline(
        pipeline,
        stage_output="stderr",
        on_stage_start=lambda stage: note(f"[bold]{stage.stage.name}[/] …"),
    )
    table = Table(title=f"tokenpo demo: {workdir}")
    for column in ("stage", "status", "seconds"):
        table.add_column(column)
    for result in summary.stages:
        seconds = "" if result.seconds is None else f"{result.seconds:.1f}"
        table.add_row(result.name, result.status, seconds)
    out.print(table)
    if not summary.ok:
        failed = summary.failed
        detail = "" if failed is None else f"{failed.name}: {failed.error}"
        error(f"the demo failed at {detail or summary.stopped}")
        if failed is not None and failed.output:
            err.print(failed.output, markup=False)
        raise typer.Exit(1)
    # A report stage that ran has printed its table already (stage output goes to stderr).
    report_ran = any(
        result.name == "report" and result.status == "ran" for result in summary.stages
    )
    report = workdir / "report" / "results.json"
    if report.is_file() and not report_ran:
        _print_report(json.loads(report.read_text()))


@app.command("data")
def data_command(
    out_dir: Annotated[Path, typer.Argument(help="The output directory.")],
    train: Annotated[int, typer.Option(min=1)] = 24_000,
    validation: Annotated[int, typer.Option(min=1)] = 200,
    test: Annotated[int, typer.Option(min=1)] = 200,
    seed: Annotated[int, typer.Option()] = 0,
    task_version: Annotated[
        int | None,
        typer.Option(help="Refuse unless this tokenpo generates this version of the task."),
    ] = None,
) -> None:
    """Generate the task's splits, its tokenizer and the gold SFT pairs."""
    from tokenpo.demo.data import DataSizes, make_data
    from tokenpo.synthetic.task import TASK_VERSION

    if task_version is not None and task_version != TASK_VERSION:
        raise ConfigError(
            f"--task-version {task_version} was asked for, but this tokenpo generates version "
            f"{TASK_VERSION} of the task; run `tokenpo demo` again to rewrite its pipeline file"
        )
    make_data(out_dir, DataSizes(train=train, validation=validation, test=test), seed=seed)
    note(f"wrote {out_dir}")


@app.command("sft")
def sft_command(
    data: Annotated[Path, typer.Option(help="The `tokenpo demo data` directory.")],
    out_dir: Annotated[Path, typer.Option("--out", help="The SFT run's directory.")],
    target_f1: Annotated[float, typer.Option(help="Stop at this validation joint F1.")] = 0.45,
    increment: Annotated[int, typer.Option(min=1, help="Steps between checks.")] = 500,
    max_steps: Annotated[int, typer.Option(min=1, help="Stop here regardless.")] = 2000,
    lr: Annotated[float, typer.Option(help="Learning rate, constant after the warmup.")] = 3e-3,
    warmup_steps: Annotated[int, typer.Option(min=0, help="Steps of linear warmup.")] = 100,
    batch_size: Annotated[int, typer.Option(min=1)] = 16,
    val_messages: Annotated[int, typer.Option(min=1, help="Messages per check.")] = 64,
    max_new_tokens: MaxNewTokens = 128,
    seed: Annotated[int, typer.Option()] = 0,
    hidden_size: Annotated[int, typer.Option(min=1, help="The GPT's width.")] = 128,
    layers: Annotated[int, typer.Option(min=1, help="The GPT's depth.")] = 2,
    heads: Annotated[int, typer.Option(min=1, help="Attention heads.")] = 4,
    tie_embeddings: Annotated[
        bool, typer.Option(help="One matrix for the input and output embeddings.")
    ] = True,
    device: DeviceOption = "auto",
) -> None:
    """SFT the built-in GPT on the gold until validation joint micro-F1 reaches a target."""
    from tokenpo.demo.stages import SftOptions, run_sft

    options = SftOptions(
        target_f1=target_f1,
        increment=increment,
        max_steps=max_steps,
        lr=lr,
        warmup_steps=warmup_steps,
        batch_size=batch_size,
        val_messages=val_messages,
        max_new_tokens=max_new_tokens,
        seed=seed,
        hidden_size=hidden_size,
        layers=layers,
        heads=heads,
        tie_embeddings=tie_embeddings,
        device=_device(device),
    )
    stop = run_sft(data, out_dir, options, log=note)
    out.print(f"SFT stopped at step {stop['steps']}: joint F1 {stop['joint_f1']:.3f}")


@app.command("negatives")
def negatives_command(
    model: Annotated[Path, typer.Option(help="The SFT model directory.")],
    data: Annotated[Path, typer.Option(help="The `tokenpo demo data` directory.")],
    out_dir: Annotated[Path, typer.Option("--out", help="The pairs directory.")],
    limit: Annotated[int | None, typer.Option(min=1, help="Training messages used.")] = None,
    negatives: Annotated[int, typer.Option(min=1, help="Negatives per message.")] = 2,
    max_new_tokens: MaxNewTokens = 128,
    seed: Annotated[int, typer.Option()] = 0,
    device: DeviceOption = "auto",
) -> None:
    """Confusion-aware pairs from the SFT model's errors, prepared with reference log-probs."""
    from tokenpo.demo.stages import PairsOptions, make_pairs

    options = PairsOptions(
        limit=limit,
        negatives=negatives,
        max_new_tokens=max_new_tokens,
        seed=seed,
        device=_device(device),
    )
    summary = make_pairs(model, data, out_dir, options, log=note)
    out.print(f"pairs: {summary['train']} train, {summary['val']} validation")


@app.command("train-method")
def train_method_command(
    name: Annotated[str, typer.Argument(help="A method of tokenpo.demo.METHODS.")],
    model: Annotated[Path, typer.Option(help="The SFT model directory.")],
    data: Annotated[Path, typer.Option(help="The `tokenpo demo data` directory.")],
    pairs: Annotated[Path, typer.Option(help="The `tokenpo demo negatives` directory.")],
    out_dir: Annotated[Path, typer.Option("--out", help="The run directory.")],
    seed: Annotated[int, typer.Option()] = 0,
    steps: Annotated[int, typer.Option(min=1)] = 60,
    batch_size: Annotated[int, typer.Option(min=1)] = 16,
    val_every: Annotated[int, typer.Option(min=1)] = 30,
    device: DeviceOption = "auto",
) -> None:
    """Train one method from the SFT model on the pairs (resumes its last checkpoint)."""
    from tokenpo.demo.methods import TrainSettings
    from tokenpo.demo.stages import train_method

    settings = TrainSettings(
        model=model,
        shards=pairs / "train",
        val_shards=pairs / "val",
        tokenizer=data / "tokenizer" / "tokenizer.json",
        steps=steps,
        batch_size=batch_size,
        val_every=val_every,
        device=_device(device),
    )
    started = time.perf_counter()
    result = train_method(name, settings, out_dir=out_dir, seed=seed)
    out.print(f"{name}: {result.steps} steps in {time.perf_counter() - started:.1f} s")


@app.command("report")
def report_command(
    workdir: Annotated[Path, typer.Argument(help="The demo's workdir.")],
) -> None:
    """Aggregate the evals over seeds: a table, results JSON, a bar chart and curves."""
    from tokenpo.demo.report import collect_report

    results = collect_report(workdir)
    _plot_joint_f1(results["summaries"], workdir / "report" / "joint_f1.png")
    _print_report(results)


def _plot_joint_f1(summaries: dict[str, dict[str, dict[str, float | None]]], path: Path) -> None:
    """A PNG of two bar charts with ± sample std error bars: each model's mean joint
    micro-F1, and each trained model's change over the SFT model in points, where the methods
    differ."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    models = list(summaries)
    means = [summaries[model]["joint_f1"]["mean"] or 0.0 for model in models]
    stds = [summaries[model]["joint_f1"]["std"] or 0.0 for model in models]
    width = max(4.0, 0.8 * len(models) + 1)
    figure = Figure(figsize=(width, 6.5), layout="constrained")
    FigureCanvasAgg(figure)
    absolute, change = figure.subplots(2, 1)
    absolute.bar(models, means, yerr=stds, capsize=4, color="tab:blue")
    absolute.set_ylabel("joint micro-F1 (test)")
    # From zero, but no higher than the tallest bar needs: small F1s stay comparable.
    top = max((mean + std for mean, std in zip(means, stds, strict=True)), default=0.0)
    absolute.set_ylim(0, min(1.0, 1.15 * top) if top > 0 else 1.0)
    baseline = summaries.get("sft", {}).get("joint_f1", {}).get("mean")
    trained = [index for index, model in enumerate(models) if model != "sft"]
    if baseline is not None and trained:
        change.bar(
            [models[index] for index in trained],
            [100 * (means[index] - baseline) for index in trained],
            yerr=[100 * stds[index] for index in trained],
            capsize=4,
            color="tab:green",
        )
        change.axhline(0, color="black", linewidth=0.8)
        change.set_ylabel("joint F1 change over SFT (points)")
    else:
        change.set_axis_off()
    for axes in (absolute, change):
        axes.tick_params(axis="x", labelrotation=30)
    figure.savefig(path, dpi=120)


def _cell(item: dict[str, float | None], style: str = ".3f") -> str:
    """``mean`` in ``style`` (a format spec; ``%`` shows a change in percent), with the
    sample std below it when several seeds give it (``±0.000`` too, so a cell over seeds
    never reads as one seed's value): narrow enough for an 80-column terminal."""
    mean, std, seeds = item.get("mean"), item.get("std"), item.get("n") or 0
    if mean is None:
        return "—"
    if style == "%":
        return f"{100 * mean:+.1f}%"
    return f"{mean:{style}}" if seeds < 2 or std is None else f"{mean:{style}}\n±{std:.3f}"


_COLUMNS = {
    "joint_f1": "joint",
    "code_f1": "code",
    "subcode_f1": "subcode",
    "span_f1": "span",
    "held_out_recall": "held-out",
    "json_validity": "JSON",
    "chosen_drift": "drift",
}
"""The report table's metrics (:data:`tokenpo.demo.report.METRICS`) and their headings."""


def _print_report(results: dict[str, object]) -> None:
    summaries = results["summaries"]
    assert isinstance(summaries, dict)
    table = Table(
        title="tokenpo demo: test split",
        caption="micro-F1 (joint, code, subcode, span), exact recall of held-out spans, "
        "JSON validity, chosen log-prob drift (nats), joint F1 change over SFT; "
        "mean ± sample std over seeds",
        box=box.SIMPLE_HEAD,
        padding=(0, 0),
        pad_edge=False,
    )
    table.add_column("model", no_wrap=True)
    for column in (*_COLUMNS.values(), "vs SFT"):
        table.add_column(column, justify="right", no_wrap=True)
    for model, row in summaries.items():
        cells = [_cell(row[m], "+.3f" if m == "chosen_drift" else ".3f") for m in _COLUMNS]
        change = row.get("relative_joint_f1", {"mean": None})
        table.add_row(model, *cells, _cell(change, "%"))
    out.print(table)
