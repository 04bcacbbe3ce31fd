"""A pipeline killed mid-stage resumes at that stage; a SIGTERM reaches the running stage."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from pipeline_kit import ran, stage, write_pipeline

from tokenpo.pipeline import load_pipeline, run_pipeline

RUNNER = """
import json, sys
from tokenpo.pipeline import load_pipeline, run_pipeline
summary = run_pipeline(load_pipeline(sys.argv[1]), stage_output="stderr")
print(json.dumps(summary.to_dict()))
"""

# Sleeps until it is signalled, unless resumed.
SLOW_UNLESS_RESUMED = """
import time
if '--resume' not in sys.argv:
    pathlib.Path('started').touch()
    time.sleep(120)
"""

# Saves a checkpoint when it gets a SIGTERM, then finishes normally.
CHECKPOINTS_ON_SIGTERM = """
import signal, time
signal.signal(signal.SIGTERM, lambda *_: pathlib.Path('checkpoint').touch())
pathlib.Path('started').touch()
deadline = time.monotonic() + 120
while not pathlib.Path('checkpoint').exists() and time.monotonic() < deadline:
    time.sleep(0.05)
"""


@contextlib.contextmanager
def runner_started(path: Path, workdir: Path) -> Iterator[subprocess.Popen[str]]:
    """The pipeline running in a process group of its own, once its slow stage has started."""
    with subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            deadline = time.monotonic() + 120
            while not (workdir / "started").exists():
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "the slow stage never started"
                time.sleep(0.05)
            yield process
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # whatever is left of the group


def test_a_killed_run_resumes_at_the_stage_it_was_in(tmp_path: Path):
    path = write_pipeline(
        tmp_path,
        [
            stage("prep", outputs=("prep.txt",)),
            stage(
                "train",
                inputs=("prep.txt",),
                outputs=("model.txt",),
                code=SLOW_UNLESS_RESUMED,
                resume=["--resume"],
            ),
        ],
    )
    workdir = tmp_path / "work"
    with runner_started(path, workdir) as runner:
        os.killpg(runner.pid, signal.SIGKILL)  # the runner and its stage, as a lost node would
        runner.wait()
    state = json.loads((workdir / ".tokenpo-pipeline.json").read_text())["stages"]
    assert (state["prep"]["status"], state["train"]["status"]) == ("completed", "started")

    summary = run_pipeline(load_pipeline(path))
    assert [(result.status, result.resumed) for result in summary.stages] == [
        ("skipped", False),
        ("ran", True),
    ]
    assert summary.stages[1].reason == "the last attempt did not complete"
    assert ran(workdir) == ["prep", "train", "train --resume"]


def test_a_sigterm_reaches_the_stage_and_no_later_stage_starts(tmp_path: Path):
    path = write_pipeline(
        tmp_path,
        [
            stage("train", outputs=("model.txt",), code=CHECKPOINTS_ON_SIGTERM),
            stage("eval", inputs=("model.txt",), outputs=("eval.txt",)),
        ],
    )
    workdir = tmp_path / "work"
    with runner_started(path, workdir) as runner:
        runner.send_signal(signal.SIGTERM)  # the runner alone: it passes the signal on
        stdout, stderr = runner.communicate(timeout=120)
    assert runner.returncode == 0, stderr
    summary = json.loads(stdout)
    assert (workdir / "checkpoint").exists()
    assert summary["ok"] is False
    assert summary["stopped"] == "stopped by SIGTERM"
    assert [(s["name"], s["status"], s["reason"]) for s in summary["stages"]][1] == (
        "eval",
        "not run",
        "stopped by SIGTERM",
    )
    assert summary["stages"][0]["status"] == "ran"
    assert ran(workdir) == ["train"]
