"""The trainer on a CUDA GPU against the same work on the CPU.

On a GPU the built-in GPT gets the compiled flex-attention kernel and a ``BlockMask``; on the
CPU, SDPA and the bool mask: the CPU is the oracle. Skipped without a GPU; run on a lent one
by ``scripts/device/check`` (``pytest -m gpu``). float32 on both sides; the GPU may round
its matrix products to TF32, hence the tolerances.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch._dynamo.utils import counters
from train_kit import losses_of, prepared, run_config

from tokenpo.data.collate import collate
from tokenpo.data.dataset import PairDataset
from tokenpo.models import GPT, GPTConfig
from tokenpo.train.config import load_config
from tokenpo.train.forward import CompletionScorer, Scores
from tokenpo.train.loop import train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
# Heads of 16 dimensions: the smallest the flex-attention kernel takes.
FLEX_GPT = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
# Heads of 8: the GPT must fall back to SDPA on the GPU.
SMALL_HEAD_GPT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4}
TOLERANCE = {"atol": 2e-3, "rtol": 2e-3}


@pytest.fixture(autouse=True)
def fresh_compile_cache() -> None:
    # Each test's models start from no compiled graphs: dynamo's limit of 8 per function
    # counts every dtype and head layout the earlier tests compiled.
    torch._dynamo.reset()
    counters.clear()


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared(tmp_path_factory.mktemp("data"), pairs=64)


@pytest.fixture(scope="module")
def data(shards: Path) -> PairDataset:
    return PairDataset.open(shards)


def _gpt(data: PairDataset, **fields: int) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=data.max_token_id() + 1, **fields))


def _scores_and_gradients(
    gpt: GPT, data: PairDataset, device: torch.device, pairs: range
) -> tuple[Scores, dict[str, torch.Tensor]]:
    batch = collate(data.rows(pairs), row_tokens=384).to(device)
    model = gpt.to(device)
    model.zero_grad()
    scores = CompletionScorer(model).score(batch)
    (scores.chosen.sum() - 0.5 * scores.rejected.sum()).backward()
    gradients = {name: p.grad.detach().cpu() for name, p in model.named_parameters()}
    return scores, gradients


@pytest.mark.parametrize(
    ("fields", "flex"), [(FLEX_GPT, True), (SMALL_HEAD_GPT, False)], ids=["flex", "sdpa"]
)
@pytest.mark.parametrize("kv_heads", [4, 2])
def test_gpu_log_probs_and_gradients_match_the_cpu(
    data: PairDataset, fields: dict[str, int], flex: bool, kv_heads: int
) -> None:
    gpt = _gpt(data, num_key_value_heads=kv_heads, **fields)
    assert gpt.runs_flex_attention_on_gpu is flex
    # Batches of different sizes: the compiled kernel sees several shapes.
    for pairs in (range(0, 16), range(16, 23), range(23, 64)):
        expected, expected_gradients = _scores_and_gradients(gpt, data, CPU, pairs)
        got, got_gradients = _scores_and_gradients(gpt, data, CUDA, pairs)
        torch.testing.assert_close(got.chosen.cpu(), expected.chosen, **TOLERANCE)
        torch.testing.assert_close(got.rejected.cpu(), expected.rejected, **TOLERANCE)
        for name, gradient in expected_gradients.items():
            torch.testing.assert_close(got_gradients[name], gradient, **TOLERANCE, msg=name)


def test_the_flex_kernel_compiles_a_few_times_for_many_batch_shapes(data: PairDataset) -> None:
    # Each batch brings its own shape and a BlockMask closing over its own bool mask; a
    # compile per batch would fill dynamo's cache and leave the unfused kernel.
    gpt = _gpt(data, **FLEX_GPT)
    for start in range(0, 60, 5):
        pairs = range(start, min(64, start + 3 + start // 3))
        _scores_and_gradients(gpt, data, CUDA, pairs)
    assert counters["stats"]["unique_graphs"] <= 4, dict(counters["stats"])


def _run_losses(directory: Path, shards: Path, **sections: dict[str, object]) -> list[float]:
    sections.setdefault("model", {}).update(source="gpt", gpt=FLEX_GPT)
    sections.setdefault("schedule", {}).update(max_steps=6)
    config = load_config(run_config(directory, shards, loss={"name": "tabpo"}, **sections))
    return [loss for _, loss in losses_of(train(config).run_dir)]


def test_a_gpu_run_follows_the_cpu_run(tmp_path: Path, shards: Path) -> None:
    expected = _run_losses(tmp_path / "cpu", shards, run={"device": "cpu"})
    got = _run_losses(tmp_path / "cuda", shards, run={"device": "cuda"})
    assert got == pytest.approx(expected, rel=1e-3, abs=1e-3)


def test_bf16_autocast_stays_near_the_float32_run(tmp_path: Path, shards: Path) -> None:
    float32 = _run_losses(tmp_path / "fp32", shards, run={"device": "cuda"})
    bf16 = _run_losses(
        tmp_path / "bf16", shards, run={"device": "cuda"}, model={"mixed_precision": "bf16"}
    )
    assert all(math.isfinite(loss) for loss in bf16)
    # Same weights and batch at step 1: only the rounding of bf16 separates the losses.
    assert bf16[0] == pytest.approx(float32[0], abs=2e-2)
