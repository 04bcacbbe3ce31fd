"""Pipeline files of tiny `python -c` stages that log their runs, for the pipeline tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import tomli_w

RAN_LOG = "ran.log"
"""Each stage appends a line to this file in the workdir: its name, then its arguments."""


def stage(
    name: str,
    *,
    inputs: tuple[str, ...] = (),
    outputs: tuple[str, ...] = (),
    code: str = "",
    content: str = "x",
    **keys: Any,
) -> dict[str, Any]:
    """A ``[[stage]]`` that logs its run, runs ``code``, then writes ``content`` to its outputs."""
    lines = [
        "import pathlib, sys",
        f"with open({RAN_LOG!r}, 'a') as log:",
        f"    log.write(' '.join([{name!r}, *sys.argv[1:]]) + '\\n')",
        code,
        *(
            f"p = pathlib.Path({output!r}); p.parent.mkdir(parents=True, exist_ok=True); "
            f"p.write_text({content!r})"
            for output in outputs
        ),
    ]
    return {
        "name": name,
        "run": ["python", "-c", "\n".join(lines)],
        "inputs": list(inputs),
        "outputs": list(outputs),
        **keys,
    }


def write_pipeline(
    directory: Path,
    stages: list[dict[str, Any]],
    *,
    variables: dict[str, Any] | None = None,
    workdir: str = "work",
) -> Path:
    """``directory/pipeline.toml`` running ``stages`` in ``directory/workdir``."""
    directory.mkdir(parents=True, exist_ok=True)
    document: dict[str, Any] = {"pipeline": {"name": "test", "workdir": workdir}}
    if variables:
        document["vars"] = variables
    document["stage"] = stages
    path = directory / "pipeline.toml"
    path.write_text(tomli_w.dumps(document))
    return path


def ran(workdir: Path) -> list[str]:
    """The lines of the workdir's run log, oldest first; empty when no stage ran."""
    log = workdir / RAN_LOG
    return log.read_text().splitlines() if log.exists() else []


def clear_log(workdir: Path) -> None:
    (workdir / RAN_LOG).unlink(missing_ok=True)


def make_newer(path: Path, than: Path) -> None:
    """Set ``path``'s mtime a second past ``than``'s, as an edit after ``than`` was written."""
    later = than.stat().st_mtime_ns + 1_000_000_000
    os.utime(path, ns=(later, later))
