"""`tokenpo demo`: the TAB-PO authors' pipeline in miniature on the embedded task.

data (:mod:`~tokenpo.demo.data`) → SFT to a target F1, confusion-aware pairs and one run per
method (:mod:`~tokenpo.demo.stages`, :data:`METHODS`) → eval and report
(:mod:`~tokenpo.demo.report`), written as a pipeline file by :func:`pipeline_toml`.

The stages that train and generate live in :mod:`tokenpo.demo.stages`, imported on its own
so that the light stages (data, report) start without loading torch.
"""

from tokenpo.demo.data import DataSizes, make_data, sft_pair_rows
from tokenpo.demo.methods import (
    METHODS,
    Method,
    TrainSettings,
    method,
    method_names,
    method_overrides,
)
from tokenpo.demo.pipeline import (
    CUDA_PLAN,
    DEFAULT_PLAN,
    QUICK_PLAN,
    DemoPlan,
    pipeline_toml,
    run_name,
)
from tokenpo.demo.report import Summary, aggregate, collect_report, relative_change

__all__ = [
    "CUDA_PLAN",
    "DEFAULT_PLAN",
    "METHODS",
    "QUICK_PLAN",
    "DataSizes",
    "DemoPlan",
    "Method",
    "Summary",
    "TrainSettings",
    "aggregate",
    "collect_report",
    "make_data",
    "method",
    "method_names",
    "method_overrides",
    "pipeline_toml",
    "relative_change",
    "run_name",
    "sft_pair_rows",
]
