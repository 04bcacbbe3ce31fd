"""`tokenpo.prep(engine="ray")` on a local Ray instance: the local engine's output, exactly."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tokenpo
from prep_data import (
    bad_jsonl,
    conversations,
    make_pairs,
    train_tokenizer,
    write_model_dir,
    write_rows,
)
from tokenpo import InputError, MissingDependencyError, NoPairsError, PrepOptions
from tokenpo.data import read_shard

pytestmark = [
    # Ray Data's DataContext warns, when it is made, about the defaults it sets itself.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context"),
]

# Small shards and batches, so that shards straddle blocks and blocks straddle shards.
OPTIONS = PrepOptions(shard_rows=64, batch_rows=50)


@pytest.fixture(scope="module", autouse=True)
def ray_instance() -> Iterator[None]:
    """Two workers, every Ray process on loopback, shared by the module's tests."""
    with pytest.MonkeyPatch.context() as patch:
        # Ray swaps 127.0.0.1 for the machine's routable address unless told the instance
        # is single-node. It reads this when first imported, hence the import here.
        patch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        # Workers at the default niceness (15) crawl on a machine busy with other work.
        patch.setenv("RAY_worker_niceness", "0")
        import ray

        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
        try:
            address = ray.get_runtime_context().gcs_address
            assert address.startswith("127.0.0.1:"), f"Ray is not on loopback: {address}"
            yield
        finally:
            ray.shutdown()


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    train_tokenizer().save(str(path))
    return path


def rows_by_pair_id(manifest: tokenpo.Manifest) -> list[dict[str, Any]]:
    rows = [row for shard in manifest.shards for row in read_shard(shard.path).to_pylist()]
    return sorted(rows, key=lambda row: (row["pair_id"], row["source_file"], row["source_row"]))


def assert_same_output(inputs: list[Path], tokenizer: Path, out: Path) -> tokenpo.Manifest:
    local = tokenpo.prep(inputs, tokenizer, out / "local", OPTIONS)
    distributed = tokenpo.prep(inputs, tokenizer, out / "ray", OPTIONS, engine="ray")
    assert rows_by_pair_id(distributed) == rows_by_pair_id(local)
    assert distributed.quarantine.path.read_text() == local.quarantine.path.read_text()
    assert distributed.summary == local.summary
    layout = [(shard.path.name, shard.rows, shard.sha256) for shard in local.shards]
    assert [(shard.path.name, shard.rows, shard.sha256) for shard in distributed.shards] == layout
    assert distributed.raw["difficulty_source"] == local.raw["difficulty_source"]
    assert distributed.raw["fingerprint"] == local.raw["fingerprint"]
    return distributed


def test_parquet_and_jsonl_files_give_the_local_output(tmp_path: Path, tokenizer_path: Path):
    first = make_pairs(150, seed=1, scores=True)
    first[97]["chosen"] = None
    second = make_pairs(130, seed=2, scores=True)
    # Row groups of 40 rows, each read in a task of its own: rows still count from the
    # start of their file.
    pq.write_table(pa.Table.from_pylist(first), tmp_path / "a.parquet", row_group_size=40)
    inputs = [tmp_path / "a.parquet", write_rows(second, tmp_path / "b.jsonl")]
    manifest = assert_same_output(inputs, tokenizer_path, tmp_path)
    assert manifest.pairs == 279
    [record] = [json.loads(line) for line in manifest.quarantine.path.read_text().splitlines()]
    assert (record["file"], record["row"]) == (str(inputs[0]), 97)
    assert [shard.rows for shard in manifest.shards] == [64, 64, 64, 64, 23]
    assert manifest.raw["difficulty_source"] == "score_margin"
    # Integer scores: many pairs tie on the margin, and their separations set them apart.
    rows = rows_by_pair_id(manifest)
    assert len({row["difficulty"] for row in rows}) > len({row["score_margin"] for row in rows})


def test_bad_jsonl_rows_are_quarantined_as_locally(tmp_path: Path, tokenizer_path: Path):
    path = bad_jsonl(make_pairs(120, seed=3), tmp_path / "bad.jsonl")
    # A byte order mark and blank lines: rows are still numbered by physical line.
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\n\n\n", 2))
    manifest = assert_same_output([path], tokenizer_path, tmp_path)
    records = [json.loads(line) for line in manifest.quarantine.path.read_text().splitlines()]
    assert len(records) == 8
    assert [record["row"] for record in records] == [3, 6, 7, 8, 9, 10, 11, 13]


def test_json_arrays_are_read_element_by_element_as_locally(tmp_path: Path, tokenizer_path: Path):
    rows: list[Any] = make_pairs(120, seed=5)
    rows[10] = "not a row"
    rows[70]["chosen"] = None
    array = tmp_path / "pairs.json"
    array.write_text(json.dumps(rows, indent=2))
    manifest = assert_same_output([array], tokenizer_path, tmp_path)
    records = [json.loads(line) for line in manifest.quarantine.path.read_text().splitlines()]
    assert [(record["row"], record["reason"]) for record in records] == [
        (10, "element is not a JSON object"),
        (70, "chosen is null"),
    ]
    assert manifest.pairs == 118


def test_a_run_without_pairs_stops_as_locally(tmp_path: Path, tokenizer_path: Path):
    source = tmp_path / "bad.jsonl"
    source.write_text('{"prompt": "p", "chosen": null, "rejected": "x"}\n{"chosen": 1}\n')
    with pytest.raises(NoPairsError, match="all 2 rows read") as raised:
        tokenpo.prep([source], tokenizer_path, tmp_path / "o", engine="ray")
    with pytest.raises(NoPairsError) as locally:
        tokenpo.prep([source], tokenizer_path, tmp_path / "local")
    assert str(raised.value).replace("/o/", "/local/") == str(locally.value)
    assert len(Path(raised.value.quarantine).read_text().splitlines()) == 2


def test_conversations_with_bad_rows_give_the_local_output(tmp_path: Path):
    model = write_model_dir(tmp_path / "model")
    pairs = conversations(make_pairs(140, seed=4))
    pairs[3]["chosen"] = None
    pairs[50]["rejected"] = pairs[50]["chosen"]  # identical after tokenization
    pairs[90]["chosen"] = pairs[90]["chosen"][:1]  # nothing left after the shared prompt
    manifest = assert_same_output([write_rows(pairs, tmp_path / "c.parquet")], model, tmp_path)
    assert manifest.raw["tokenizer"]["chat_template"] is True
    assert sum(manifest.summary["quarantined"].values()) == 3


@given(block_pairs=st.lists(st.integers(0, 300), max_size=12), shard_rows=st.integers(1, 200))
def test_shards_take_the_blocks_pairs_in_input_order(block_pairs: list[int], shard_rows: int):
    from tokenpo.prep_ray.engine import _shard_slices

    shards = _shard_slices(block_pairs, shard_rows)
    taken = [
        (block, row)
        for shard in shards
        for block, start, stop in shard
        for row in range(start, stop)
    ]
    assert taken == [
        (block, row) for block, pairs in enumerate(block_pairs) for row in range(pairs)
    ]
    total = sum(block_pairs)
    full, rest = divmod(total, shard_rows)
    sizes = [sum(stop - start for _, start, stop in shard) for shard in shards]
    assert sizes == [shard_rows] * full + [rest] * (rest > 0)


def test_a_finished_run_is_not_redone(tmp_path: Path, tokenizer_path: Path):
    source = write_rows(make_pairs(20), tmp_path / "p.parquet")
    first = tokenpo.prep([source], tokenizer_path, tmp_path / "o", engine="ray")
    times = [shard.path.stat().st_mtime_ns for shard in first.shards]
    again = tokenpo.prep([source], tokenizer_path, tmp_path / "o", engine="ray")
    assert [shard.path.stat().st_mtime_ns for shard in again.shards] == times


def test_file_level_problems_stop_before_any_row_is_read(tmp_path: Path, tokenizer_path: Path):
    good = write_rows(make_pairs(5), tmp_path / "good.parquet")
    wrong = write_rows([{"question": "q", "answer": "a"}], tmp_path / "wrong.parquet")
    with pytest.raises(InputError, match=r"wrong\.parquet: required column 'chosen' missing"):
        tokenpo.prep([good, wrong], tokenizer_path, tmp_path / "o", engine="ray")
    assert not (tmp_path / "o").exists()


def run_cli(
    *args: str | Path, env: dict[str, str], setup: str = "pass"
) -> subprocess.CompletedProcess[str]:
    """`tokenpo ARGS...` in a fresh interpreter, after the Python statement ``setup``."""
    argv = [str(arg) for arg in args]
    code = f"import sys; {setup}; from tokenpo_cli.app import main; sys.argv[1:] = {argv}; main()"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )


def test_the_command_runs_on_the_cluster_at_the_address_given(tmp_path: Path, tokenizer_path: Path):
    import ray

    source = write_rows(make_pairs(30), tmp_path / "p.parquet")
    address = ray.get_runtime_context().gcs_address
    # The fixture's instance: loopback, and the token it was started with.
    env = {
        "PATH": "/usr/bin:/bin",
        "COLUMNS": "200",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_AUTH_MODE": "token",
    }
    result = run_cli(
        "prep", source, "-t", tokenizer_path, "-o", tmp_path / "o",
        "--engine", "ray", "--ray-address", address, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert tokenpo.Manifest.read(tmp_path / "o").pairs == 30


def test_without_ray_the_command_says_how_to_install_it(tmp_path: Path, tokenizer_path: Path):
    source = write_rows(make_pairs(3), tmp_path / "p.parquet")
    result = run_cli(
        "prep", source, "-t", tokenizer_path, "-o", tmp_path / "o", "--engine", "ray",
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200"},
        setup="sys.modules['ray'] = None",
    )  # fmt: skip
    assert result.returncode == 1
    assert "pip install 'tokenpo[ray]'" in result.stderr


def test_without_ray_the_error_says_how_to_install_it(
    tmp_path: Path, tokenizer_path: Path, monkeypatch: pytest.MonkeyPatch
):
    for name in [name for name in sys.modules if name.startswith("tokenpo.prep_ray")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ray", None)
    source = write_rows(make_pairs(3), tmp_path / "p.parquet")
    with pytest.raises(MissingDependencyError, match=r"pip install 'tokenpo\[ray\]'"):
        tokenpo.prep([source], tokenizer_path, tmp_path / "o", engine="ray")
