"""run_pipeline and plan: order, the skip rule, failures, resuming, selection."""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

import pytest
from pipeline_kit import clear_log, make_newer, ran, stage, write_pipeline

from tokenpo.exceptions import ConfigError, TokenpoError
from tokenpo.pipeline import StagePlan, StageResult, load_pipeline, plan, run_pipeline


def chain(tmp_path: Path) -> Path:
    """a -> b -> c, each reading the one before; a reads source.txt beside the pipeline."""
    (tmp_path / "source.txt").write_text("pairs")
    return write_pipeline(
        tmp_path,
        [
            stage("a", inputs=("{pipeline_dir}/source.txt",), outputs=("a/out.txt",)),
            stage("b", inputs=("a/out.txt",), outputs=("b.txt",)),
            stage("c", inputs=("b.txt",), outputs=("c.txt",)),
        ],
    )


def statuses(summary_stages: tuple[StageResult, ...]) -> dict[str, tuple[str, str]]:
    return {result.name: (result.status, result.reason) for result in summary_stages}


def test_stages_run_in_order_then_a_rerun_skips_them_all(tmp_path: Path):
    pipeline = load_pipeline(chain(tmp_path))
    summary = run_pipeline(pipeline)
    assert summary.ok
    assert ran(pipeline.workdir) == ["a", "b", "c"]
    assert statuses(summary.stages) == {
        "a": ("ran", "output missing: a/out.txt"),
        "b": ("ran", "input from a, which runs: a/out.txt"),
        "c": ("ran", "input from b, which runs: b.txt"),
    }
    assert all(result.seconds is not None and result.exit_code == 0 for result in summary.stages)

    clear_log(pipeline.workdir)
    again = run_pipeline(load_pipeline(pipeline.file))
    assert ran(pipeline.workdir) == []
    assert statuses(again.stages) == dict.fromkeys("abc", ("skipped", "up to date"))
    assert all(result.seconds is None for result in again.stages)


def test_the_state_file_records_each_completed_stage(tmp_path: Path):
    pipeline = load_pipeline(chain(tmp_path))
    run_pipeline(pipeline)
    state = json.loads(pipeline.state_file.read_text())
    assert state["format"] == 1
    assert state["pipeline"] == "test"
    assert list(state["stages"]) == ["a", "b", "c"]
    record = state["stages"]["b"]
    assert record["status"] == "completed"
    assert record["definition"] == pipeline.stage("b").definition
    assert record["command"] == list(pipeline.stage("b").run)
    assert record["exit_code"] == 0
    assert record["finished_at"] >= record["started_at"]


def test_a_newer_input_reruns_its_stage_and_those_downstream(tmp_path: Path):
    pipeline = load_pipeline(chain(tmp_path))
    run_pipeline(pipeline)
    clear_log(pipeline.workdir)
    make_newer(pipeline.workdir / "a" / "out.txt", than=pipeline.workdir / "b.txt")

    plans = {p.stage.name: (p.action, p.reason) for p in plan(pipeline)}
    assert plans == {
        "a": ("skip", "up to date"),
        "b": ("run", "input newer: a/out.txt"),
        "c": ("run", "input from b, which runs: b.txt"),
    }
    run_pipeline(pipeline)
    assert ran(pipeline.workdir) == ["b", "c"]


def test_a_directory_input_counts_as_its_newest_file(tmp_path: Path):
    path = write_pipeline(
        tmp_path, [stage("read", inputs=("data",), outputs=("out.txt",))], workdir="."
    )
    (tmp_path / "data" / "deep").mkdir(parents=True)
    (tmp_path / "data" / "deep" / "part.txt").write_text("1")
    pipeline = load_pipeline(path)
    run_pipeline(pipeline)
    assert plan(pipeline)[0].reason == "up to date"
    make_newer(tmp_path / "data" / "deep" / "part.txt", than=tmp_path / "out.txt")
    assert plan(pipeline)[0].reason == "input newer: data"


def test_changing_a_var_reruns_the_stages_that_use_it(tmp_path: Path):
    path = write_pipeline(
        tmp_path,
        [
            stage("seeded", outputs=("seeded.txt",), content="seed {seed}"),
            stage("other", outputs=("other.txt",)),
            stage("after", inputs=("seeded.txt",), outputs=("after.txt",)),
        ],
        variables={"seed": 0},
    )
    run_pipeline(load_pipeline(path))
    workdir = tmp_path / "work"
    assert (workdir / "seeded.txt").read_text() == "seed 0"
    clear_log(workdir)

    summary = run_pipeline(load_pipeline(path, {"seed": "7"}))
    assert (workdir / "seeded.txt").read_text() == "seed 7"
    assert ran(workdir) == ["seeded", "after"]
    assert statuses(summary.stages) == {
        "seeded": ("ran", "definition changed"),
        "other": ("skipped", "up to date"),
        "after": ("ran", "input from seeded, which runs: seeded.txt"),
    }


def test_a_failing_stage_stops_the_run(tmp_path: Path):
    path = write_pipeline(
        tmp_path,
        [
            stage("a", outputs=("a.txt",)),
            stage("b", outputs=("b.txt",), code="sys.exit(3)"),
            stage("c", outputs=("c.txt",)),
        ],
    )
    pipeline = load_pipeline(path)
    summary = run_pipeline(pipeline)
    assert not summary.ok
    assert summary.failed is not None
    assert summary.failed.name == "b"
    assert summary.failed.exit_code == 3
    assert summary.failed.error == "exited with code 3"
    assert statuses(summary.stages)["c"] == ("not run", "b failed")
    assert ran(pipeline.workdir) == ["a", "b"]
    state = json.loads(pipeline.state_file.read_text())["stages"]
    assert (state["b"]["status"], state["b"]["exit_code"]) == ("failed", 3)
    assert "c" not in state


def test_a_stage_that_exits_0_without_its_outputs_fails(tmp_path: Path):
    path = write_pipeline(
        tmp_path,
        [
            # Writes made.txt only, though it declares both.
            {
                **stage("lazy", code="pathlib.Path('made.txt').write_text('x')"),
                "outputs": ["made.txt", "forgotten.txt"],
            },
            stage("next", outputs=("next.txt",)),
        ],
    )
    summary = run_pipeline(load_pipeline(path))
    assert summary.failed is not None
    assert summary.failed.exit_code == 0
    assert summary.failed.error == "stage lazy exited 0 but did not produce forgotten.txt"
    assert statuses(summary.stages)["next"] == ("not run", "lazy failed")


def test_an_interrupted_stage_reruns_with_its_resume_arguments(tmp_path: Path):
    # Fails the first time (as if killed), leaving a marker; succeeds when run again.
    flaky = "if not pathlib.Path('marker').exists(): pathlib.Path('marker').touch(); sys.exit(1)"
    path = write_pipeline(
        tmp_path,
        [
            stage("prep", outputs=("prep.txt",)),
            stage(
                "train",
                inputs=("prep.txt",),
                outputs=("model.txt",),
                code=flaky,
                resume=["--resume", "--from-step={step}"],
            ),
        ],
        variables={"step": "last"},
    )
    pipeline = load_pipeline(path)
    assert run_pipeline(pipeline).failed is not None
    assert plan(pipeline)[1].reason == "the last attempt did not complete"
    assert plan(pipeline)[1].resume

    summary = run_pipeline(pipeline)
    assert summary.ok
    assert ran(pipeline.workdir) == ["prep", "train", "train --resume --from-step=last"]
    assert summary.stages[0].status == "skipped"
    assert summary.stages[1].resumed
    assert summary.stages[1].command[-2:] == ("--resume", "--from-step=last")

    clear_log(pipeline.workdir)
    forced = run_pipeline(pipeline, force=True, only="train")
    assert ran(pipeline.workdir) == ["train"], "a completed stage runs afresh, not resumed"
    assert not forced.stages[1].resumed


def test_resume_arguments_are_not_used_when_the_definition_changed(tmp_path: Path):
    path = write_pipeline(
        tmp_path,
        [stage("train", outputs=("model.txt",), code="sys.exit(int('{fail}'))", resume=["-r"])],
        variables={"fail": 1},
    )
    assert run_pipeline(load_pipeline(path)).failed is not None
    pipeline = load_pipeline(path, {"fail": "0"})
    assert not plan(pipeline)[0].resume
    run_pipeline(pipeline)
    assert ran(pipeline.workdir) == ["train", "train"]


def test_from_only_and_force_select_stages(tmp_path: Path):
    pipeline = load_pipeline(chain(tmp_path))
    run_pipeline(pipeline)
    clear_log(pipeline.workdir)

    summary = run_pipeline(pipeline, from_stage="b")
    assert ran(pipeline.workdir) == []
    assert statuses(summary.stages) == {
        "a": ("skipped", "not selected"),
        "b": ("skipped", "up to date"),
        "c": ("skipped", "up to date"),
    }
    run_pipeline(pipeline, from_stage="b", force=True)
    assert ran(pipeline.workdir) == ["b", "c"]
    clear_log(pipeline.workdir)
    summary = run_pipeline(pipeline, only="b", force=True)
    assert ran(pipeline.workdir) == ["b"]
    assert statuses(summary.stages)["b"] == ("ran", "forced")
    assert statuses(summary.stages)["c"] == ("skipped", "not selected")
    clear_log(pipeline.workdir)
    run_pipeline(pipeline, force=True)
    assert ran(pipeline.workdir) == ["a", "b", "c"]


def test_a_stage_name_that_does_not_exist_is_refused(tmp_path: Path):
    pipeline = load_pipeline(chain(tmp_path))
    with pytest.raises(ConfigError, match=r"no stage 'bb' \(did you mean 'b'\?\); stages: a, b, c"):
        run_pipeline(pipeline, only="bb")
    assert not pipeline.workdir.exists()
    with pytest.raises(ConfigError, match="give --from or --only, not both"):
        plan(pipeline, from_stage="a", only="b")


def test_an_input_nobody_makes_fails_the_stage_before_it_starts(tmp_path: Path):
    path = write_pipeline(tmp_path, [stage("a", inputs=("missing.txt",), outputs=("a.txt",))])
    pipeline = load_pipeline(path)
    assert plan(pipeline)[0].reason == "input missing: missing.txt"
    summary = run_pipeline(pipeline)
    assert summary.failed is not None
    assert summary.failed.error == "input missing: missing.txt"
    assert summary.failed.exit_code is None
    assert ran(pipeline.workdir) == []


def test_a_stage_without_outputs_always_runs(tmp_path: Path):
    pipeline = load_pipeline(write_pipeline(tmp_path, [stage("report")]))
    run_pipeline(pipeline)
    summary = run_pipeline(pipeline)
    assert statuses(summary.stages) == {"report": ("ran", "no outputs declared")}
    assert ran(pipeline.workdir) == ["report", "report"]


def test_a_command_not_on_path_fails_with_its_name(tmp_path: Path):
    path = write_pipeline(tmp_path, [{"name": "x", "run": ["no-such-command-tokenpo"]}])
    summary = run_pipeline(load_pipeline(path))
    assert summary.failed is not None
    assert summary.failed.error == "no-such-command-tokenpo: command not found on PATH"


def test_captured_output_comes_back_only_when_the_stage_fails(tmp_path: Path):
    path = write_pipeline(
        tmp_path,
        [
            stage("chatty", outputs=("a.txt",), code="print('all fine')"),
            stage("broken", code="print('out'); print('why', file=sys.stderr); sys.exit(2)"),
        ],
    )
    summary = run_pipeline(load_pipeline(path), stage_output="capture")
    assert summary.stages[0].output is None
    assert summary.stages[1].output == "out\nwhy"


def test_callbacks_see_each_stage_in_order(tmp_path: Path):
    pipeline = load_pipeline(chain(tmp_path))
    run_pipeline(pipeline, only="a")
    events: list[str] = []

    def started(stage_plan: StagePlan) -> None:
        events.append(f"start {stage_plan.stage.name}")

    def ended(result: StageResult) -> None:
        events.append(f"end {result.name} {result.status}")

    run_pipeline(pipeline, on_stage_start=started, on_stage_end=ended)
    assert events == ["end a skipped", "start b", "end b ran", "start c", "end c ran"]


def test_a_second_run_in_the_same_workdir_is_refused(tmp_path: Path):
    pipeline = load_pipeline(chain(tmp_path))
    pipeline.workdir.mkdir()
    with (pipeline.workdir / ".tokenpo-pipeline.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(TokenpoError, match="another pipeline run is using"):
            run_pipeline(pipeline)
    assert run_pipeline(pipeline).ok
