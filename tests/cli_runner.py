"""Running the `tokenpo` command in a subprocess, as a user would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_tokenpo(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """`tokenpo ARGS...` with a wide terminal; never raises on a non-zero exit."""
    return subprocess.run(
        [sys.executable, "-m", "tokenpo_cli", *map(str, args)],
        capture_output=True,
        text=True,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
        check=False,
    )
