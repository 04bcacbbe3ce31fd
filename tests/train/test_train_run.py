"""Single-process training runs: every objective end to end, the export, bad input."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_kit import TINY_GPT, losses_of, prepared, run_config
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from prep_data import empty_prepared
from tiny_models import tiny_llama_config
from tokenpo.data.collate import collate
from tokenpo.data.dataset import PairDataset
from tokenpo.exceptions import ConfigError, InputError
from tokenpo.train.config import load_config
from tokenpo.train.forward import CompletionScorer
from tokenpo.train.loop import train
from tokenpo.train.metrics import read_metrics
from tokenpo.train.ref_logps import RefLogpsOptions, compute_ref_logps


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared(tmp_path_factory.mktemp("data"))


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("dpo", {}),
        ("tabpo", {}),
        ("sft", {"weighted": True}),
        ("simpo", {}),
        ("tdpo", {}),
        ("tbpo_q", {}),
        ("tbpo_a", {}),
        ("mixdpo", {"base": "tabpo", "threshold": 0.5}),
    ],
)
def test_every_objective_trains_and_exports(
    tmp_path: Path, shards: Path, name: str, params: dict[str, object]
) -> None:
    config = load_config(run_config(tmp_path, shards, loss={"name": name, **params}))
    result = train(config)
    assert result.steps == 4
    trace = losses_of(result.run_dir)
    assert [step for step, _ in trace] == [1, 2, 3, 4]
    assert all(math.isfinite(loss) for _, loss in trace)
    records = read_metrics(result.run_dir / "metrics.jsonl")
    for key in ("lr", "grad_norm", "tokens_per_s", "peak_memory_gib", "seconds_per_step"):
        assert math.isfinite(records[-1][key]), key
    assert (result.export_dir / "model.safetensors").is_file()
    assert (result.export_dir / "tokenizer.json").is_file()
    assert (result.run_dir / "config.toml").is_file()


def test_export_gives_the_trainers_log_probs_for_a_transformers_llama(
    tmp_path: Path, shards: Path
) -> None:
    model_config = tiny_llama_config(600)
    model_config.save_pretrained(tmp_path / "llama")
    config_path = run_config(
        tmp_path,
        shards,
        model={"source": str(tmp_path / "llama" / "config.json"), "gpt": {}},
        data={"val_shards": str(shards)},
        logging={"val_every": 4},
    )
    result = train(load_config(config_path))
    # The last validation ran after the last update: the exported model must reproduce it.
    final = read_metrics(result.run_dir / "metrics.jsonl")[-1]
    exported = AutoModelForCausalLM.from_pretrained(result.export_dir).eval()
    data = PairDataset.open(shards)
    scorer = CompletionScorer(exported)
    with torch.no_grad():
        scores = scorer.score(collate(data.rows(range(len(data)))))
    assert scores.chosen.sum(-1).mean().item() == pytest.approx(final["val/logps/chosen"], abs=1e-3)


def test_activation_checkpointing_recomputes_the_forwards_dropout(
    tmp_path: Path, shards: Path
) -> None:
    """With dropout, the backward's recomputation must draw the forward's masks, or the
    gradients belong to no forward pass and the second step's loss moves."""
    tiny_llama_config(600, attention_dropout=0.5).save_pretrained(tmp_path / "llama")
    traces = []
    for checkpointing in (False, True):
        config_path = run_config(
            tmp_path / str(checkpointing),
            shards,
            model={
                "source": str(tmp_path / "llama" / "config.json"),
                "gpt": {},
                "activation_checkpointing": checkpointing,
            },
            optim={"lr": 1e-2},
            schedule={"max_steps": 2, "kind": "constant"},
        )
        traces.append(losses_of(train(load_config(config_path)).run_dir))
    plain, checkpointed = ([loss for _, loss in trace] for trace in traces)
    assert plain[0] != pytest.approx(plain[1], abs=1e-4)
    assert checkpointed == pytest.approx(plain, abs=1e-6)


def test_a_run_directory_is_never_overwritten(tmp_path: Path, shards: Path) -> None:
    config = load_config(run_config(tmp_path, shards))
    train(config)
    metrics = (tmp_path / "run" / "metrics.jsonl").read_bytes()
    with pytest.raises(ConfigError, match="already holds a run; resume it"):
        train(config)
    assert (tmp_path / "run" / "metrics.jsonl").read_bytes() == metrics


def test_missing_manifest_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    config = load_config(run_config(tmp_path, tmp_path / "empty"))
    with pytest.raises(InputError, match=r"no manifest\.json; is it a prep output"):
        train(config)


def test_tokenizer_mismatch_is_a_clear_error(tmp_path: Path, shards: Path) -> None:
    other = tmp_path / "other.json"
    other.write_text(
        (shards.parent / "tokenizer.json").read_text().replace('"<|im_end|>"', '"<|x|>"')
    )
    config = load_config(run_config(tmp_path, shards, data={"tokenizer": str(other)}))
    with pytest.raises(InputError, match="tokenized with another tokenizer"):
        train(config)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_an_empty_dataset_is_a_clear_error(tmp_path: Path, shards: Path) -> None:
    empty = empty_prepared(shards, tmp_path / "shards")
    config = load_config(run_config(tmp_path, empty))
    with pytest.raises(InputError, match="holds no pairs"):
        train(config)


def test_an_unwritable_output_directory_is_a_clear_error(tmp_path: Path, shards: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    config = load_config(run_config(tmp_path, shards, run={"out_dir": str(blocker / "run")}))
    with pytest.raises(ConfigError, match="cannot be written"):
        train(config)


def test_the_built_in_gpt_size_comes_from_the_config(tmp_path: Path, shards: Path) -> None:
    config = load_config(
        run_config(tmp_path, shards, model={"gpt": {**TINY_GPT, "hidden_size": 16}})
    )
    result = train(config)
    exported = AutoModelForCausalLM.from_pretrained(result.export_dir)
    assert exported.config.hidden_size == 16


def test_stored_reference_log_probs_give_the_losses_of_a_live_reference(tmp_path: Path) -> None:
    shards = prepared(tmp_path / "data")
    torch.manual_seed(0)
    model_dir = tmp_path / "llama"
    LlamaForCausalLM(tiny_llama_config(600)).save_pretrained(model_dir)
    compute_ref_logps(shards, model_dir, RefLogpsOptions(batch_size=8))
    traces = []
    for use_stored in (False, True):
        run = tmp_path / f"stored-{use_stored}"
        config_path = run_config(
            run,
            shards,
            model={"source": str(model_dir), "gpt": {}},
            loss={"name": "tabpo"},
            data={"use_stored_ref": use_stored, "micro_batch_size": 4},
        )
        traces.append(losses_of(train(load_config(config_path)).run_dir))
    assert [step for step, _ in traces[1]] == [1, 2, 3, 4]
    for (_, live), (_, stored) in zip(*traces, strict=True):
        assert stored == pytest.approx(live, abs=1e-5)


def test_bf16_mixed_precision_trains_on_one_process(tmp_path: Path, shards: Path) -> None:
    config = load_config(
        run_config(tmp_path, shards, model={"mixed_precision": "bf16"}, loss={"name": "tabpo"})
    )
    result = train(config)
    losses = [loss for _, loss in losses_of(result.run_dir)]
    assert len(losses) == 4
    assert all(math.isfinite(loss) for loss in losses)
    # The first loss is log 2 plus the barrier, as in float32, up to bf16 rounding.
    float32 = train(load_config(run_config(tmp_path / "f32", shards, loss={"name": "tabpo"})))
    assert losses[0] == pytest.approx(losses_of(float32.run_dir)[0][1], rel=0.02)


def test_printed_config_redirected_to_a_file_loads(tmp_path: Path, shards: Path) -> None:
    # A narrow terminal width must not wrap the long comment lines into invalid TOML.
    printed = subprocess.run(
        [sys.executable, "-m", "tokenpo_cli", "train", "--print-config"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "40"},
        check=True,
    ).stdout
    path = tmp_path / "run.toml"
    path.write_text(printed.replace("# shards = <a string>", f'shards = "{shards}"'))
    assert load_config(path).data.shards == str(shards)
