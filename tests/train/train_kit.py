"""Prepared pairs, tiny model configs and run configs for the trainer tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.feather as feather
import tomli_w

import tokenpo
from prep_data import make_pairs, train_tokenizer, write_rows
from tokenpo.data.shards import read_shard
from tokenpo.train.metrics import read_metrics

TINY_GPT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4}


def prepared(directory: Path, *, pairs: int = 48, seed: int = 0, fmt: str = "ipc") -> Path:
    """``directory/shards`` (and its tokenizer at ``directory/tokenizer.json``)."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = directory / "tokenizer.json"
    if not tokenizer.exists():
        train_tokenizer().save(str(tokenizer))
    raw = write_rows(make_pairs(pairs, seed=seed, scores=True), directory / f"raw-{seed}.jsonl")
    out = directory / f"shards-{seed}"
    tokenpo.prep([raw], tokenizer, out, tokenpo.PrepOptions(format=fmt, shard_rows=20))  # type: ignore[arg-type]
    return out


def with_empty_rejected(shards: Path, out: Path, rows: list[int]) -> Path:
    """A copy of the IPC ``shards`` at ``out`` where pairs ``rows`` of the first shard have an
    empty rejected completion (prep never writes one): every loss but sft leaves them out."""
    shutil.copytree(shards, out)
    shard = sorted(out.glob("shard-*"))[0]
    table = read_shard(shard)
    emptied = {
        "rejected_ids": [],
        "rejected_weight": [],
        "rejected_diff": [],
        "shared_prefix_len": 0,
    }
    for name, empty in emptied.items():
        values = table.column(name).to_pylist()
        for row in rows:
            values[row] = empty
        index = table.schema.get_field_index(name)
        column = pa.array(values, type=table.schema.field(name).type)
        table = table.set_column(index, table.schema.field(name), column)
    # The shard is memory-mapped: write beside it, then replace it.
    feather.write_feather(table, shard.with_suffix(".tmp"), compression="uncompressed")
    shard.with_suffix(".tmp").replace(shard)
    return out


def run_config(directory: Path, shards: Path, **sections: dict[str, Any]) -> Path:
    """A run.toml training the tiny built-in GPT on ``shards``; ``sections`` override."""
    config: dict[str, Any] = {
        "run": {"out_dir": str(directory / "run")},
        "model": {"source": "gpt", "gpt": TINY_GPT},
        "data": {"shards": str(shards), "batch_size": 8},
        "loss": {"name": "dpo"},
        "schedule": {"max_steps": 4, "kind": "constant"},
    }
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "run.toml"
    path.write_text(tomli_w.dumps(config))
    return path


def losses_of(run_dir: Path) -> list[tuple[int, float]]:
    """``(step, loss)`` of each training record of a run."""
    return [
        (record["step"], record["loss"])
        for record in read_metrics(run_dir / "metrics.jsonl")
        if "loss" in record
    ]


def assert_same_trace(trace: list[tuple[int, float]], expected: list[tuple[int, float]]) -> None:
    """Same steps, and losses equal to 1e-6."""
    assert [step for step, _ in trace] == [step for step, _ in expected]
    for (step, loss), (_, expected_loss) in zip(trace, expected, strict=True):
        assert abs(loss - expected_loss) <= 1e-6, f"step {step}: {loss} != {expected_loss}"


def launch(*launcher: str, config: Path, overrides: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    """Starts ``torchrun LAUNCHER... -m tokenpo.train --config CONFIG`` in its own session
    (so a test can kill the whole process group)."""
    command = [sys.executable, "-m", "torch.distributed.run", *launcher]
    command += ["-m", "tokenpo.train", "--config", str(config)]
    for override in overrides:
        command += ["--set", override]
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(),
        start_new_session=True,
    )


def finish(process: subprocess.Popen[str]) -> str:
    """Waits for ``process``; its output, after checking it succeeded."""
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-4000:]
    return output


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process below it (torchrun starts its workers in sessions
    of their own, so killing the agent's process group would leave them running)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    doomed, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        doomed.append(current)
        frontier.extend(children.get(current, []))
    for victim in doomed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return env
