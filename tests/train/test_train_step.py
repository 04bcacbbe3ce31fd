"""One training pass: the loss of a batch whatever its micro-batches, and its precision."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from train_kit import (
    TINY_GPT,
    assert_same_trace,
    losses_of,
    prepared,
    run_config,
    with_empty_rejected,
)

from tokenpo.data.dataset import PairDataset
from tokenpo.models import GPT, GPTConfig
from tokenpo.train.config import DataConfig, load_config
from tokenpo.train.distributed import World
from tokenpo.train.forward import CompletionScorer
from tokenpo.train.loop import train
from tokenpo.train.objective import build_objective
from tokenpo.train.step import run_pairs

ONE_CPU = World(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared(tmp_path_factory.mktemp("data"), pairs=16)


def test_pairs_without_a_rejected_side_weigh_the_same_in_any_micro_batch_size(
    tmp_path: Path, shards: Path
) -> None:
    # Each step's batch holds some of them: a micro-batch's own mean over its valid pairs,
    # weighted by its share of all pairs, gave the loss another value per micro-batch size.
    data = with_empty_rejected(shards, tmp_path / "data", rows=[0, 3, 4, 9, 13])
    run_dirs = []
    for micro in (1, 3, 8):
        run = tmp_path / f"micro-{micro}"
        config = run_config(run, data, data={"micro_batch_size": micro}, schedule={"max_steps": 2})
        run_dirs.append(train(load_config(config)).run_dir)
    whole = load_file(run_dirs[-1] / "final" / "model.safetensors")
    for run_dir in run_dirs[:-1]:
        assert_same_trace(losses_of(run_dir), losses_of(run_dirs[-1]))
        weights = load_file(run_dir / "final" / "model.safetensors")
        for name, value in whole.items():
            torch.testing.assert_close(weights[name], value, atol=1e-5, rtol=1e-4, msg=name)


def test_the_loss_runs_in_float32_under_bf16_autocast(shards: Path) -> None:
    # Policy and reference are the same model, so tdpo's KL is 0; computed from float32
    # logits in bfloat16 (autocast covers the einsum) it came out near 0.04 per token.
    data = PairDataset.open(shards)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=data.max_token_id() + 1, **TINY_GPT))
    totals = run_pairs(
        np.arange(8),
        data=data,
        data_config=DataConfig(shards=str(shards), batch_size=8),
        policy=CompletionScorer(model),
        reference=CompletionScorer(copy.deepcopy(model)),
        objective=build_objective("tdpo", {}, hidden_size=32),
        world=ONE_CPU,
        backward=False,
        autocast=True,
    )
    metrics = totals.rank_values()
    assert abs(metrics["kl/chosen"]) < 1e-4
    assert abs(metrics["kl/rejected"]) < 1e-4
