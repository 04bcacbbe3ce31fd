"""``python -m tokenpo.train --config run.toml [--set KEY=VALUE ...] [--resume]``.

The entry for a plain launcher, e.g. on every node of a multi-node job::

    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d \\
        --rdzv-endpoint HOST:29500 -m tokenpo.train --config run.toml

Prints one line per logged step on rank 0 (``tokenpo train`` draws a progress bar instead).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tokenpo.exceptions import TokenpoError
from tokenpo.train.config import load_config
from tokenpo.train.loop import train


class _LineReporter:
    def start(self, *, total_steps: int, first_step: int) -> None:
        print(f"training steps {first_step + 1}..{total_steps}", flush=True)

    def step(self, record: dict[str, Any]) -> None:
        print(json.dumps(record), flush=True)

    def validation(self, record: dict[str, Any]) -> None:
        print(json.dumps(record), flush=True)

    def message(self, text: str) -> None:
        print(text, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tokenpo.train", description=__doc__)
    parser.add_argument("--config", required=True, help="the run's TOML file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--resume", action="store_true", help="resume from the latest checkpoint")
    args = parser.parse_args(argv)
    overrides = [*args.set, *(["checkpoint.resume=true"] if args.resume else [])]
    try:
        train(load_config(Path(args.config), overrides), _LineReporter())
    except TokenpoError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
