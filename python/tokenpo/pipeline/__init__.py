"""Pipelines: tokenpo's stages (prep, ref-logps, train, eval, ...) scripted in one TOML file.

::

    pipeline = load_pipeline("demo.toml", {"seed": "1"})
    for stage_plan in plan(pipeline):
        print(stage_plan.stage.name, stage_plan.action, stage_plan.reason)
    summary = run_pipeline(pipeline)
    assert summary.ok, summary.failed

A stage is skipped when its outputs exist, are newer than its inputs, and its definition is
the one recorded when it last completed (see :mod:`tokenpo.pipeline.plan`); a run killed
during a stage resumes at that stage. ``tokenpo pipeline run FILE`` is the command-line face.
"""

from tokenpo.pipeline.plan import StagePlan, plan
from tokenpo.pipeline.runner import PipelineSummary, StageOutput, StageResult, run_pipeline
from tokenpo.pipeline.spec import BUILTIN_VARS, Pipeline, Stage, load_pipeline
from tokenpo.pipeline.state import StageRecord

__all__ = [
    "BUILTIN_VARS",
    "Pipeline",
    "PipelineSummary",
    "Stage",
    "StageOutput",
    "StagePlan",
    "StageRecord",
    "StageResult",
    "load_pipeline",
    "plan",
    "run_pipeline",
]
