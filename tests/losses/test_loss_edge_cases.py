"""Edge cases every loss must survive: one token, empty rows, extreme log-probs, bf16."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from losses_testkit import all_losses, build_test_loss, make_batch, run
from torch import Tensor

from tokenpo.losses import PairLogps

LOSSES = all_losses()


def assert_finite(loss: Tensor, grads: dict[str, Tensor]) -> None:
    assert torch.isfinite(loss).all()
    for name, grad in grads.items():
        assert torch.isfinite(grad).all(), name


def rows(batch: PairLogps, keep: slice) -> PairLogps:
    """The pairs ``keep`` of ``batch``: every tensor field sliced on its first dimension."""
    values = {
        field: None if getattr(batch, field) is None else getattr(batch, field)[keep]
        for field in batch.__dataclass_fields__
    }
    return PairLogps(**values)


def mask_rows(batch: PairLogps, row: int, *, chosen: bool, rejected: bool) -> PairLogps:
    chosen_mask, rejected_mask = batch.chosen_mask.clone(), batch.rejected_mask.clone()
    if chosen:
        chosen_mask[row] = False
    if rejected:
        rejected_mask[row] = False
    return dataclasses.replace(batch, chosen_mask=chosen_mask, rejected_mask=rejected_mask)


@pytest.mark.parametrize("name", LOSSES)
def test_one_token_completions(name: str) -> None:
    batch = make_batch(pairs=3, tokens=4, chosen_lengths=[1, 1, 1], rejected_lengths=[1, 1, 1])
    output, grads = run(build_test_loss(name), batch)
    assert_finite(output.loss, grads)
    assert output.metrics["pairs/valid_share"].item() == 1.0


@pytest.mark.parametrize("name", LOSSES)
def test_all_masked_row_contributes_nothing(name: str) -> None:
    batch = make_batch(pairs=4, tokens=5, seed=3)
    loss = build_test_loss(name)
    emptied = mask_rows(batch, 0, chosen=True, rejected=True)
    output, grads = run(loss, emptied)
    assert_finite(output.loss, grads)
    expected, _ = run(loss, rows(batch, slice(1, None)))
    torch.testing.assert_close(output.loss, expected.loss, rtol=0, atol=1e-12)
    for grad in grads.values():
        assert torch.all(grad[0] == 0)
    for key in ("rewards/margins", "logps/chosen"):
        torch.testing.assert_close(output.metrics[key], expected.metrics[key], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", LOSSES)
def test_pair_with_one_empty_side_is_skipped_without_nan(name: str) -> None:
    batch = mask_rows(make_batch(pairs=4, tokens=5, seed=4), 1, chosen=False, rejected=True)
    output, grads = run(build_test_loss(name), batch)
    assert_finite(output.loss, grads)
    assert torch.all(grads["policy_chosen"][1] == 0)
    assert output.metrics["pairs/valid_share"].item() == 0.75


@pytest.mark.parametrize("name", LOSSES)
def test_fully_masked_batch_gives_zero_loss_and_zero_gradient(name: str) -> None:
    batch = make_batch(pairs=2, tokens=3)
    batch = dataclasses.replace(
        batch,
        chosen_mask=torch.zeros_like(batch.chosen_mask),
        rejected_mask=torch.zeros_like(batch.rejected_mask),
    )
    output, grads = run(build_test_loss(name), batch)
    assert output.loss.item() == 0.0
    assert_finite(output.loss, grads)
    assert all(torch.all(grad == 0) for grad in grads.values())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", LOSSES)
def test_log_probs_of_minus_1e4_do_not_overflow(name: str, dtype: torch.dtype) -> None:
    batch = make_batch(pairs=4, tokens=6, seed=5, dtype=dtype)
    extreme = torch.full_like(batch.policy_chosen, -1e4)
    batch = dataclasses.replace(
        batch,
        policy_chosen=torch.where(torch.arange(4).unsqueeze(-1) < 2, extreme, batch.policy_chosen),
        ref_rejected=torch.where(torch.arange(4).unsqueeze(-1) == 1, extreme, batch.ref_rejected),
        policy_rejected=torch.where(
            torch.arange(4).unsqueeze(-1) == 3, extreme, batch.policy_rejected
        ),
    )
    output, grads = run(build_test_loss(name, dtype=dtype), batch)
    assert output.loss.dtype == dtype
    assert_finite(output.loss, grads)
    assert all(torch.isfinite(value).all() for value in output.metrics.values())


@pytest.mark.parametrize("name", LOSSES)
def test_bf16_inputs_are_computed_in_float32(name: str) -> None:
    bf16 = make_batch(pairs=4, tokens=6, seed=6, dtype=torch.bfloat16)
    # The same (already rounded) values in float32: the loss must not depend on the input dtype.
    as_float32 = PairLogps(
        **{
            field: value.float()
            if isinstance(value, Tensor) and value.is_floating_point()
            else value
            for field, value in ((f, getattr(bf16, f)) for f in bf16.__dataclass_fields__)
        }
    )
    loss = build_test_loss(name, dtype=torch.float32)
    output, grads = run(loss, bf16)
    expected, expected_grads = run(loss, as_float32)
    assert output.loss.dtype == torch.float32
    torch.testing.assert_close(output.loss, expected.loss, rtol=1e-6, atol=1e-6)
    assert_finite(output.loss, grads)
    for field, grad in grads.items():
        assert grad.dtype == torch.bfloat16
        torch.testing.assert_close(grad, expected_grads[field].bfloat16(), rtol=1e-2, atol=1e-3)
    assert all(value.dtype == torch.float32 for value in output.metrics.values())
