"""The curves of training runs, read from their ``metrics.jsonl``, ready to draw.

``tokenpo plot runs/dpo runs/tabpo --out curves.png`` draws them (matplotlib stays in the
CLI); the same in Python::

    runs = read_runs([Path("runs/dpo"), Path("runs/tabpo")])
    for metric in plotted_metrics(runs, ["loss", "val/loss"]):
        for run in runs:
            if metric in run.series:
                steps, values = run.series[metric].steps, smooth(run.series[metric].values, 5)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tokenpo.exceptions import ConfigError, InputError
from tokenpo.train.metrics import read_metrics

__all__ = [
    "DEFAULT_METRICS",
    "RunCurves",
    "Series",
    "plotted_metrics",
    "read_curves",
    "read_runs",
    "smooth",
]

DEFAULT_METRICS = (
    "loss",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
    "lr",
    "val/loss",
    "val/rewards/accuracies",
    "val/logps/chosen_drift",
)
"""What is drawn when no metric is named (those no run logged are left out)."""


@dataclass(frozen=True, slots=True)
class Series:
    """One metric of one run."""

    steps: np.ndarray
    """Optimizer steps, int64 ``[N]``, in the order logged."""
    values: np.ndarray
    """float64 ``[N]``."""


@dataclass(frozen=True, slots=True)
class RunCurves:
    """Every metric a run logged."""

    directory: Path
    label: str
    """The run directory's name, unless another was given."""
    series: dict[str, Series]
    """Metric name (``loss``, ``val/loss``, ...) to its series."""


def read_curves(run_dir: Path, *, label: str | None = None) -> RunCurves:
    """The series of each numeric metric in ``run_dir/metrics.jsonl``.

    Raises:
        InputError: ``run_dir`` has no ``metrics.jsonl``.
    """
    run_dir = Path(run_dir)
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise InputError(
            f"{run_dir}: no metrics.jsonl; expected a directory written by `tokenpo train`",
            file=str(run_dir),
        )
    points: dict[str, tuple[list[int], list[float]]] = {}
    for record in read_metrics(path):
        step = record.get("step")
        if not isinstance(step, int):
            continue
        for name, value in record.items():
            if name == "step" or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            steps, values = points.setdefault(name, ([], []))
            steps.append(step)
            values.append(float(value))
    series = {
        name: Series(np.array(steps, dtype=np.int64), np.array(values, dtype=np.float64))
        for name, (steps, values) in points.items()
    }
    return RunCurves(directory=run_dir, label=label or _name(run_dir), series=series)


def read_runs(run_dirs: Sequence[Path], labels: Sequence[str] = ()) -> list[RunCurves]:
    """:func:`read_curves` of each run, labelled by ``labels`` or else by directory name (by
    the path as given where two runs share a name).

    Raises:
        ConfigError: ``labels`` are given but not one per run.
        InputError: a run has no ``metrics.jsonl``.
    """
    if labels and len(labels) != len(run_dirs):
        raise ConfigError(
            f"{len(labels)} label(s) for {len(run_dirs)} run(s); give one label per run or none"
        )
    names = [_name(Path(run_dir)) for run_dir in run_dirs]
    shared = {name for name in names if names.count(name) > 1}
    return [
        read_curves(
            Path(run_dir),
            label=labels[index] if labels else str(run_dir) if name in shared else name,
        )
        for index, (run_dir, name) in enumerate(zip(run_dirs, names, strict=True))
    ]


def plotted_metrics(runs: Sequence[RunCurves], requested: Sequence[str] = ()) -> list[str]:
    """The metrics to draw: ``requested`` (in that order), or those of
    :data:`DEFAULT_METRICS` that some run logged.

    Raises:
        ConfigError: a requested metric is in no run (the message lists those that are), or
            there is nothing to draw.
    """
    available = sorted({name for run in runs for name in run.series})
    unknown = [name for name in requested if name not in available]
    if unknown:
        raise ConfigError(
            f"no run logged {', '.join(map(repr, unknown))}; "
            f"available metrics: {', '.join(available) or 'none'}"
        )
    chosen = list(dict.fromkeys(requested)) or [
        name for name in DEFAULT_METRICS if name in available
    ]
    if not chosen:
        directories = ", ".join(str(run.directory) for run in runs)
        raise ConfigError(
            f"nothing to draw: {directories} logged none of {', '.join(DEFAULT_METRICS)}; "
            f"name metrics to draw from: {', '.join(available) or 'none'}"
        )
    return chosen


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """The trailing moving average of ``values`` over ``window`` points (fewer at the start,
    so the curve keeps its first point); ``window`` 1 returns the values as they are.
    Non-finite values (a diverged loss) are left out of the averages rather than spreading
    to every later point; a window holding none but those is NaN.

    Raises:
        ConfigError: ``window`` is below 1.
    """
    if window < 1:
        raise ConfigError(f"the smoothing window must be at least 1, got {window}")
    values = np.asarray(values, dtype=np.float64)
    if window == 1 or not len(values):
        return values
    finite = np.isfinite(values)
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, values, 0.0))])
    counts = np.concatenate([[0], np.cumsum(finite)])
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    in_window = counts[ends] - counts[starts]
    with np.errstate(invalid="ignore", divide="ignore"):
        averages: np.ndarray = (sums[ends] - sums[starts]) / in_window
    return np.where(in_window > 0, averages, np.nan)


def _name(run_dir: Path) -> str:
    """The directory's name, also for ``.`` and paths ending in ``..``."""
    return run_dir.name if run_dir.name not in ("", ".", "..") else run_dir.resolve().name
