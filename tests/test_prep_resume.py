"""A killed prep resumes to byte-identical output; output does not depend on threads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prep_data import make_pairs, train_tokenizer, write_rows

RUN_PREP = (
    "import sys, tokenpo; tokenpo.prep([sys.argv[1]], sys.argv[2], sys.argv[3],"
    " tokenpo.PrepOptions(shard_rows=1500, batch_rows=250))"
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("corpus")
    tokenizer = directory / "tokenizer.json"
    train_tokenizer().save(str(tokenizer))
    rows = make_pairs(30_000)
    rows[7]["chosen"] = None  # one quarantined row, so quarantine.jsonl is compared too
    return write_rows(rows, directory / "pairs.parquet"), tokenizer


def start_prep(corpus: tuple[Path, Path], out: Path, threads: int = 2) -> subprocess.Popen[bytes]:
    source, tokenizer = corpus
    env = {**os.environ, "RAYON_NUM_THREADS": str(threads)}
    return subprocess.Popen(
        [sys.executable, "-c", RUN_PREP, str(source), str(tokenizer), str(out)], env=env
    )


def output_files(out: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(out.iterdir()) if path.is_file()}


def wait_for(path_glob: str, out: Path, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while not list(out.glob(path_glob)):
        assert process.poll() is None, "prep finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.002)


@pytest.fixture(scope="module")
def uninterrupted(
    corpus: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("uninterrupted")
    assert start_prep(corpus, out).wait() == 0
    return output_files(out)


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", [".work-*/part-00002.json", "shard-00003.parquet"])
def test_kill_9_then_rerun_is_byte_identical(
    corpus: tuple[Path, Path], uninterrupted: dict[str, bytes], tmp_path: Path, kill_after: str
):
    process = start_prep(corpus, tmp_path)
    wait_for(kill_after, tmp_path, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "manifest.json").exists()
    assert start_prep(corpus, tmp_path).wait() == 0
    assert output_files(tmp_path) == uninterrupted
    assert not list(tmp_path.glob(".work-*"))


@pytest.mark.slow
def test_one_thread_gives_the_same_bytes(
    corpus: tuple[Path, Path], uninterrupted: dict[str, bytes], tmp_path: Path
):
    assert start_prep(corpus, tmp_path, threads=1).wait() == 0
    assert output_files(tmp_path) == uninterrupted
