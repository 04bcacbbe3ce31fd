"""The generated pipeline file: the shipped example, and what the runner reads from it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from cli_runner import run_tokenpo
from tokenpo.demo import CUDA_PLAN, DEFAULT_PLAN, QUICK_PLAN, DemoPlan, pipeline_toml, run_name
from tokenpo.exceptions import ConfigError
from tokenpo.pipeline import load_pipeline
from tokenpo.synthetic.task import TASK_VERSION

EXAMPLE = Path(__file__).parents[2] / "examples" / "demo.toml"


def test_the_shipped_example_is_the_generated_file_for_one_seed() -> None:
    assert EXAMPLE.read_text() == pipeline_toml(DEFAULT_PLAN, workdir="runs/demo")


def test_the_runner_reads_one_stage_per_method_and_seed_and_one_eval(tmp_path: Path) -> None:
    plan = replace(QUICK_PLAN, seeds=(0, 1))
    file = tmp_path / "demo.toml"
    file.write_text(pipeline_toml(plan))
    pipeline = load_pipeline(file)
    runs = [run_name(name, seed) for seed in (0, 1) for name in plan.methods]
    names = [stage.name for stage in pipeline.stages]
    assert names == [
        "data",
        "sft",
        "negatives",
        *runs,
        "eval",
        "curves",
        "report",
    ]
    assert pipeline.workdir == tmp_path
    report = pipeline.stage("report")
    assert tmp_path / "runs" / "tabpo-s1" / "test_eval.json" in report.inputs
    evaluation = pipeline.stage("eval")
    assert evaluation.outputs == report.inputs
    models = [evaluation.run[i + 1] for i, arg in enumerate(evaluation.run) if arg == "--model"]
    assert models == ["sft/run/final", *(f"runs/{run}/final" for run in runs)]
    train = pipeline.stage("dpo-s1")
    assert train.run[:4] == ("tokenpo", "demo", "train-method", "dpo")
    assert train.outputs == (tmp_path / "runs" / "dpo-s1" / "final" / "config.json",)


def test_a_plan_with_an_unknown_method_is_refused() -> None:
    with pytest.raises(ConfigError, match="no method 'nope'"):
        DemoPlan(methods=("dpo", "nope"))


def test_the_gpu_plan_trains_a_larger_model_on_more_data(tmp_path: Path) -> None:
    file = tmp_path / "demo.toml"
    file.write_text(pipeline_toml(CUDA_PLAN))
    pipeline = load_pipeline(file)
    sft = pipeline.stage("sft").run
    size = {flag: int(sft[sft.index(flag) + 1]) for flag in ("--hidden-size", "--layers")}
    assert size["--hidden-size"] > DEFAULT_PLAN.hidden_size
    assert size["--layers"] > DEFAULT_PLAN.layers
    data = pipeline.stage("data").run
    assert int(data[data.index("--train") + 1]) > DEFAULT_PLAN.sizes.train
    for stage in pipeline.stages:
        if "--device" in stage.run:
            assert stage.run[stage.run.index("--device") + 1] == "cuda", stage.name


def test_the_data_stage_asks_for_this_task_version_and_refuses_another(tmp_path: Path) -> None:
    file = tmp_path / "demo.toml"
    file.write_text(pipeline_toml(QUICK_PLAN))
    assert load_pipeline(file).stage("data").run[-2:] == ("--task-version", str(TASK_VERSION))
    older = run_tokenpo("demo", "data", tmp_path / "data", "--task-version", str(TASK_VERSION - 1))
    assert older.returncode == 2, older.stderr
    assert "run `tokenpo demo` again" in older.stderr
    assert not (tmp_path / "data").exists()
