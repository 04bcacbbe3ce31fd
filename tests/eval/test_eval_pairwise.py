"""Pairwise accuracy against each sequence run alone through the models, with a reference
model and with stored reference log-probs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from eval_kit import save_llama, tiny_gpt
from torch import nn
from transformers import LlamaForCausalLM

import tokenpo
from prep_data import empty_prepared, make_pairs, write_model_dir, write_rows
from tokenpo.data.dataset import PairDataset
from tokenpo.eval import PairwiseScores, pairwise_accuracy
from tokenpo.eval.pairwise import TIE_TOLERANCE
from tokenpo.exceptions import ConfigError, InputError
from tokenpo.train.ref_logps import RefLogpsOptions, compute_ref_logps

PAIRS = 13


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A prepared directory, a policy and a reference directory for its tokenizer."""
    root = tmp_path_factory.mktemp("pairwise")
    tokenizer_dir = write_model_dir(root / "tokenizer")
    source = write_rows(make_pairs(PAIRS, seed=4), root / "pairs.parquet")
    tokenpo.prep([source], tokenizer_dir, root / "prepared", tokenpo.PrepOptions(shard_rows=5))
    policy = save_llama(root / "policy", tokenizer_dir, seed=1)
    reference = save_llama(root / "reference", tokenizer_dir, seed=2)
    return root / "prepared", policy, reference


@pytest.fixture(scope="module")
def stored(setup: tuple[Path, Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the prepared pairs with the reference's log-probs stored by ref-logps."""
    prepared, _, reference_dir = setup
    directory = tmp_path_factory.mktemp("stored") / "prepared"
    shutil.copytree(prepared, directory)
    compute_ref_logps(directory, reference_dir, RefLogpsOptions(device="cpu", batch_size=3))
    return directory


def load(directory: Path) -> LlamaForCausalLM:
    return LlamaForCausalLM.from_pretrained(directory).eval()


def sequence_logp(model: nn.Module, prompt: list[int], completion: list[int]) -> float:
    """Summed log-prob of ``completion`` after ``prompt``, run as one plain sequence."""
    with torch.no_grad():
        logps = model(torch.tensor([prompt + completion])).logits[0].double().log_softmax(-1)
    positions = torch.arange(len(prompt) - 1, len(prompt) + len(completion) - 1)
    return float(logps[positions, torch.tensor(completion)].sum())


def by_hand(policy: nn.Module, reference: nn.Module, prepared: Path) -> PairwiseScores:
    table = PairDataset.open(prepared).table.to_pylist()
    correct = ties = 0
    chosen_logps, rejected_logps, margins = [], [], []
    for row in table:
        logp = {
            (name, side): sequence_logp(model, row["prompt_ids"], row[f"{side}_ids"])
            for name, model in (("policy", policy), ("reference", reference))
            for side in ("chosen", "rejected")
        }
        margin = (logp["policy", "chosen"] - logp["reference", "chosen"]) - (
            logp["policy", "rejected"] - logp["reference", "rejected"]
        )
        correct += margin > TIE_TOLERANCE
        ties += abs(margin) <= TIE_TOLERANCE
        chosen_logps.append(logp["policy", "chosen"])
        rejected_logps.append(logp["policy", "rejected"])
        margins.append(margin)
    return PairwiseScores(
        pairs=len(table),
        correct=correct,
        ties=ties,
        mean_chosen_logps=sum(chosen_logps) / len(table),
        mean_rejected_logps=sum(rejected_logps) / len(table),
        mean_reward_margin=sum(margins) / len(table),
        reference="model",
    )


def assert_close(got: PairwiseScores, expected: PairwiseScores) -> None:
    assert (got.pairs, got.correct, got.ties) == (expected.pairs, expected.correct, expected.ties)
    assert got.mean_chosen_logps == pytest.approx(expected.mean_chosen_logps, abs=1e-4)
    assert got.mean_rejected_logps == pytest.approx(expected.mean_rejected_logps, abs=1e-4)
    assert got.mean_reward_margin == pytest.approx(expected.mean_reward_margin, abs=1e-4)


def test_accuracy_equals_each_sequence_run_alone(setup: tuple[Path, Path, Path]) -> None:
    prepared, policy_dir, reference_dir = setup
    policy, reference = load(policy_dir), load(reference_dir)
    expected = by_hand(policy, reference, prepared)
    assert 0 < expected.correct < PAIRS  # neither all right nor all wrong: the test can tell
    progress: list[tuple[int, int]] = []
    got = pairwise_accuracy(
        policy,
        prepared,
        reference=reference,
        batch_size=4,
        progress=lambda done, total: progress.append((done, total)),
    )
    assert_close(got, expected)
    assert got.accuracy == expected.correct / PAIRS
    assert got.reference == "model"
    assert progress == [(0, PAIRS), (4, PAIRS), (8, PAIRS), (12, PAIRS), (13, PAIRS)]


def test_stored_reference_logps_give_the_reference_models_scores(
    setup: tuple[Path, Path, Path], stored: Path
) -> None:
    prepared, policy_dir, reference_dir = setup
    policy, reference = load(policy_dir), load(reference_dir)
    from_columns = pairwise_accuracy(policy, stored, batch_size=5)
    from_model = pairwise_accuracy(policy, prepared, reference=reference, batch_size=5)
    assert from_columns.reference == "stored"
    assert_close(from_columns, from_model)
    # An explicit reference model wins over the stored columns.
    itself = pairwise_accuracy(policy, stored, reference=policy)
    assert (itself.reference, itself.correct, itself.ties) == ("model", 0, PAIRS)
    assert itself.mean_reward_margin == 0.0


def test_the_builtin_gpt_as_policy(setup: tuple[Path, Path, Path]) -> None:
    prepared, _, reference_dir = setup
    reference = load(reference_dir)
    policy = tiny_gpt(reference.config.vocab_size, seed=5)
    assert_close(
        pairwise_accuracy(policy, prepared, reference=reference),
        by_hand(policy, reference, prepared),
    )


def test_a_reference_is_required_without_stored_logps(setup: tuple[Path, Path, Path]) -> None:
    prepared, policy_dir, _ = setup
    with pytest.raises(ConfigError, match="the pairs hold no reference log-probs; pass a refer"):
        pairwise_accuracy(load(policy_dir), prepared)


def test_a_vocabulary_too_small_for_the_pairs(setup: tuple[Path, Path, Path]) -> None:
    prepared, policy_dir, _ = setup
    with pytest.raises(InputError, match=r"outside the reference's vocabulary \[0, 50\)"):
        pairwise_accuracy(load(policy_dir), prepared, reference=tiny_gpt(50))


def test_a_policy_equal_to_its_stored_reference_gives_only_ties(
    setup: tuple[Path, Path, Path], stored: Path
) -> None:
    _, _, reference_dir = setup
    # Batched differently from ref-logps, the same model's sums differ by float noise.
    for batch_size in (1, 5, PAIRS):
        scores = pairwise_accuracy(load(reference_dir), stored, batch_size=batch_size)
        assert (scores.correct, scores.ties) == (0, PAIRS), batch_size


def test_no_pairs_to_score(setup: tuple[Path, Path, Path], tmp_path: Path) -> None:
    prepared, policy_dir, reference_dir = setup
    dataset = PairDataset.open(prepared)
    empty = PairDataset(dataset.manifest, dataset.table.slice(0, 0))
    with pytest.raises(InputError, match=f"{prepared}: no pairs to score"):
        pairwise_accuracy(load(policy_dir), empty, reference=load(reference_dir))
    empty_dir = empty_prepared(prepared, tmp_path / "prepared")
    with pytest.raises(InputError, match="prepared: the prepared directory holds no pairs"):
        pairwise_accuracy(load(policy_dir), empty_dir, reference=load(reference_dir))


def test_a_negative_tie_tolerance(setup: tuple[Path, Path, Path]) -> None:
    prepared, policy_dir, _ = setup
    with pytest.raises(ConfigError, match="tie_tolerance: must be at least 0, got -1"):
        pairwise_accuracy(load(policy_dir), prepared, tie_tolerance=-1)
