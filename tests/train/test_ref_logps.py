"""`tokenpo ref-logps`: stored reference log-probs against each sequence run alone; shard
format, metadata and manifest kept consistent; resume; errors that leave the shards as
they were."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from transformers import LlamaForCausalLM

import tokenpo
from cli_runner import run_tokenpo
from prep_data import make_pairs, train_tokenizer, write_rows
from tiny_models import tiny_llama_config
from tokenpo.data.dataset import PairDataset, file_sha256
from tokenpo.data.shards import read_shard
from tokenpo.exceptions import ConfigError, InputError, TokenizerError
from tokenpo.train.ref_logps import REF_MODEL_KEY, RefLogpsOptions, compute_ref_logps

FORMATS = ("parquet", "ipc")
PAIRS = 23
SHARD_ROWS = 10
CPU = RefLogpsOptions(device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Raw pairs and the tokenizer they are prepared with."""
    directory = tmp_path_factory.mktemp("corpus")
    tokenizer = directory / "tokenizer.json"
    train_tokenizer().save(str(tokenizer))
    return write_rows(make_pairs(PAIRS), directory / "pairs.parquet"), tokenizer


def save_llama(directory: Path, *, vocab_size: int, seed: int, tokenizer: Path | None) -> Path:
    """A tiny Llama saved with save_pretrained, with ``tokenizer`` copied beside it."""
    config = tiny_llama_config(vocab_size, max_position_embeddings=256)
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(directory)
    if tokenizer is not None:
        shutil.copy(tokenizer, directory / "tokenizer.json")
    return directory


@pytest.fixture(scope="module")
def models(corpus: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two reference models with different weights, both for the corpus' tokenizer."""
    tokenizer = corpus[1]
    vocab_size = train_tokenizer().get_vocab_size(with_added_tokens=True)
    return [
        save_llama(
            tmp_path_factory.mktemp(f"model{seed}"),
            vocab_size=vocab_size + 3,
            seed=seed,
            tokenizer=tokenizer,
        )
        for seed in (0, 1)
    ]


def prepare(corpus: tuple[Path, Path], out: Path, fmt: str) -> Path:
    source, tokenizer = corpus
    options = tokenpo.PrepOptions(format=fmt, shard_rows=SHARD_ROWS)  # type: ignore[arg-type]
    tokenpo.prep([source], tokenizer, out, options)
    return out


def files_of(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and modification time."""
    return {
        path.name: (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(directory.iterdir())
    }


def shard_paths(directory: Path) -> list[Path]:
    return sorted(path for path in directory.iterdir() if path.name.startswith("shard-"))


def alone_logps(model: LlamaForCausalLM, prompt: list[int], completion: list[int]) -> list[float]:
    """Log-prob of each completion token, prompt + completion run as one plain sequence."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logps = model(input_ids=ids).logits.log_softmax(-1)[0]
    positions = torch.arange(len(prompt) - 1, len(prompt) + len(completion) - 1)
    return logps[positions, torch.tensor(completion)].tolist()


@pytest.mark.parametrize("fmt", FORMATS)
def test_stored_logps_equal_each_sequence_run_alone(
    corpus: tuple[Path, Path], models: list[Path], tmp_path: Path, fmt: str
):
    shards = prepare(corpus, tmp_path / "shards", fmt)
    result = compute_ref_logps(shards, models[0], CPU)
    assert (result.shards_written, result.shards_skipped, result.pairs_scored) == (3, 0, PAIRS)
    model = LlamaForCausalLM.from_pretrained(models[0]).eval()
    rows = [row for path in shard_paths(shards) for row in read_shard(path).to_pylist()]
    assert len(rows) == PAIRS
    for row in rows:
        for side in ("chosen", "rejected"):
            stored = row[f"ref_{side}_logps"]
            assert len(stored) == len(row[f"{side}_ids"])
            expected = alone_logps(model, row["prompt_ids"], row[f"{side}_ids"])
            assert stored == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("fmt", FORMATS)
def test_shards_keep_format_columns_and_metadata_and_the_manifest_matches_them(
    corpus: tuple[Path, Path], models: list[Path], tmp_path: Path, fmt: str
):
    shards = prepare(corpus, tmp_path / "shards", fmt)
    before = {path.name: read_shard(path) for path in shard_paths(shards)}
    compute_ref_logps(shards, models[0], CPU)

    manifest = json.loads((shards / "manifest.json").read_text())
    assert manifest["reference"] == {
        "model": str(models[0]),
        "sha256": manifest["reference"]["sha256"],
        "dtype": "float32",
    }
    for record in manifest["shards"]:
        path = shards / record["path"]
        assert record["bytes"] == path.stat().st_size
        assert record["sha256"] == file_sha256(path)
    assert sorted(path.name for path in shards.iterdir() if path.suffix == ".tmp") == []

    for path in shard_paths(shards):
        original, table = before[path.name], read_shard(path)
        assert table.column_names == [
            *original.column_names,
            "ref_chosen_logps",
            "ref_rejected_logps",
        ]
        assert table.select(original.column_names).equals(original)
        assert table.schema.field("ref_chosen_logps").type == pa.list_(pa.float32())
        metadata = table.schema.metadata
        for key in (b"tokenpo.fingerprint", b"tokenpo.schema_version"):
            assert metadata[key] == original.schema.metadata[key]
        assert json.loads(metadata[REF_MODEL_KEY.encode()])["dtype"] == "float32"
        if fmt == "parquet":
            column = pq.ParquetFile(path).metadata.row_group(0).column(0)
            assert column.compression == "ZSTD"
        else:
            with pa.memory_map(str(path)) as source:
                assert pa.ipc.open_file(source).num_record_batches >= 1

    data = PairDataset.open(shards, tokenizer_sha256=file_sha256(corpus[1]))
    assert data.has_ref_logps
    rows = data.rows(data.column("difficulty").argsort()[:5])
    assert rows.ref_chosen is not None
    assert (rows.ref_chosen.lengths == rows.chosen_ids.lengths).all()
    assert (rows.ref_chosen.values < 0).all()


def test_a_rerun_skips_and_another_model_recomputes(
    corpus: tuple[Path, Path], models: list[Path], tmp_path: Path
):
    shards = prepare(corpus, tmp_path / "shards", "ipc")
    compute_ref_logps(shards, models[0], CPU)
    done = files_of(shards)

    again = compute_ref_logps(shards, models[0], CPU)
    assert (again.shards_written, again.shards_skipped, again.pairs_scored) == (0, 3, 0)
    assert files_of(shards) == done

    other = compute_ref_logps(shards, models[1], CPU)
    assert (other.shards_written, other.shards_skipped) == (3, 0)
    assert other.reference["sha256"] != again.reference["sha256"]
    for path in shard_paths(shards):
        assert path.read_bytes() != done[path.name][0]
    manifest = json.loads((shards / "manifest.json").read_text())
    assert manifest["reference"]["model"] == str(models[1])
    assert [record["sha256"] for record in manifest["shards"]] == [
        file_sha256(path) for path in shard_paths(shards)
    ]


def test_a_killed_run_resumes_at_the_shard_it_stopped_in(
    corpus: tuple[Path, Path], models: list[Path], tmp_path: Path
):
    shards = prepare(corpus, tmp_path / "shards", "parquet")
    prepared = files_of(shards)

    def stop_in_the_second_shard(done: int, total: int) -> None:
        if done > SHARD_ROWS:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compute_ref_logps(shards, models[0], CPU, stop_in_the_second_shard)
    interrupted = files_of(shards)
    first, second = shard_paths(shards)[:2]
    assert interrupted[first.name] != prepared[first.name]
    assert interrupted[second.name] == prepared[second.name]
    assert interrupted["manifest.json"] == prepared["manifest.json"]
    assert not list(shards.glob("*.tmp"))

    resumed = compute_ref_logps(shards, models[0], CPU)
    assert (resumed.shards_written, resumed.shards_skipped) == (2, 1)
    assert files_of(shards)[first.name] == interrupted[first.name]
    assert PairDataset.open(shards).has_ref_logps


def test_a_config_file_reference_is_seeded_and_recorded(
    corpus: tuple[Path, Path], models: list[Path], tmp_path: Path
):
    shards = prepare(corpus, tmp_path / "shards", "ipc")
    config = models[0] / "config.json"
    first = compute_ref_logps(shards, config, RefLogpsOptions(device="cpu", seed=3))
    assert first.reference == {
        "model": str(config),
        "sha256": file_sha256(config),
        "dtype": "float32",
        "seed": 3,
    }
    values = read_shard(shard_paths(shards)[0]).column("ref_chosen_logps").to_pylist()
    reseeded = compute_ref_logps(shards, config, RefLogpsOptions(device="cpu", seed=4))
    assert reseeded.shards_written == 3
    assert read_shard(shard_paths(shards)[0]).column("ref_chosen_logps").to_pylist() != values


def assert_nothing_written(shards: Path, before: dict[str, tuple[bytes, int]]) -> None:
    assert files_of(shards) == before


def test_no_manifest(models: list[Path], tmp_path: Path):
    with pytest.raises(InputError, match=r"no manifest\.json; is it a prep output\?"):
        compute_ref_logps(tmp_path, models[0], CPU)


def test_a_vocabulary_smaller_than_the_token_ids_names_both(
    corpus: tuple[Path, Path], tmp_path: Path
):
    shards = prepare(corpus, tmp_path / "shards", "parquet")
    before = files_of(shards)
    largest = PairDataset.open(shards).max_token_id()
    small = save_llama(tmp_path / "small", vocab_size=largest, seed=0, tokenizer=corpus[1])
    with pytest.raises(InputError) as raised:
        compute_ref_logps(shards, small, CPU)
    message = str(raised.value)
    assert f"has a vocabulary of {largest} tokens" in message
    assert f"the shards hold token id {largest}" in message
    assert_nothing_written(shards, before)


def test_a_model_with_another_tokenizer_is_refused(corpus: tuple[Path, Path], tmp_path: Path):
    shards = prepare(corpus, tmp_path / "shards", "ipc")
    before = files_of(shards)
    other_tokenizer = tmp_path / "other.json"
    tokenizer: dict[str, Any] = json.loads(corpus[1].read_text())
    tokenizer["added_tokens"] = tokenizer["added_tokens"][:-1]
    other_tokenizer.write_text(json.dumps(tokenizer))
    model = save_llama(tmp_path / "model", vocab_size=600, seed=0, tokenizer=other_tokenizer)
    with pytest.raises(TokenizerError) as raised:
        compute_ref_logps(shards, model, CPU)
    message = str(raised.value)
    assert message.startswith(f"{model / 'tokenizer.json'}: the reference model's tokenizer")
    assert f"not the one the shards were prepared with ({corpus[1]}, sha256" in message
    assert raised.value.file == str(model / "tokenizer.json")
    assert_nothing_written(shards, before)


def test_the_builtin_gpt_or_a_missing_path_is_not_a_reference(
    corpus: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    shards = prepare(corpus, tmp_path / "shards", "ipc")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        ConfigError, match=r"reference model 'gpt' does not exist; expected a model"
    ):
        compute_ref_logps(shards, "gpt", CPU)


def test_bad_options_name_the_field():
    with pytest.raises(ConfigError, match="batch_size: must be at least 1, got 0"):
        RefLogpsOptions(batch_size=0)
    with pytest.raises(ConfigError, match="dtype: must be 'float32' or 'bfloat16'"):
        RefLogpsOptions(dtype="float16")  # type: ignore[arg-type]


def test_the_command_prints_a_summary(
    corpus: tuple[Path, Path], models: list[Path], tmp_path: Path
):
    shards = prepare(corpus, tmp_path / "shards", "ipc")
    result = run_tokenpo("ref-logps", shards, "--model", models[0], "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "3 shard(s) written, 0 already done; 23 pairs scored" in result.stdout
    assert PairDataset.open(shards).has_ref_logps


@pytest.mark.slow
def test_two_ranks_share_the_shards_and_store_what_one_process_does(
    corpus: tuple[Path, Path], models: list[Path], tmp_path: Path
):
    alone = prepare(corpus, tmp_path / "alone", "parquet")
    compute_ref_logps(alone, models[0], CPU)
    shards = prepare(corpus, tmp_path / "shards", "parquet")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
               "2", "-m", "tokenpo_cli", "ref-logps", str(shards), "--model", str(models[0]),
               "--device", "cpu", "--batch-size", "4"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "3 shard(s) written, 0 already done; 23 pairs scored" in result.stdout

    manifest = json.loads((shards / "manifest.json").read_text())
    assert [record["sha256"] for record in manifest["shards"]] == [
        file_sha256(path) for path in shard_paths(shards)
    ]
    for ours, theirs in zip(shard_paths(shards), shard_paths(alone), strict=True):
        for name in ("ref_chosen_logps", "ref_rejected_logps"):
            stored = read_shard(ours).column(name).combine_chunks().flatten().to_pylist()
            expected = read_shard(theirs).column(name).combine_chunks().flatten().to_pylist()
            assert stored == pytest.approx(expected, abs=1e-6)
