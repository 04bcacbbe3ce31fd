"""Identities between losses: special cases that must reduce exactly to another loss."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from losses_testkit import all_losses, build_test_loss, make_batch, run
from torch.nn.functional import logsigmoid

from tokenpo.losses import PairLogps, build, trainable_module

EXACT = {"rtol": 0.0, "atol": 1e-12}


def unit_weights(batch: PairLogps) -> PairLogps:
    return dataclasses.replace(
        batch,
        chosen_weight=torch.ones_like(batch.policy_chosen),
        rejected_weight=torch.ones_like(batch.policy_rejected),
    )


def no_weights(batch: PairLogps) -> PairLogps:
    return dataclasses.replace(batch, chosen_weight=None, rejected_weight=None)


@pytest.mark.parametrize("weights", [unit_weights, no_weights], ids=["unit", "none"])
@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_tabpo_without_weights_barrier_or_length_norm_is_dpo(weights, beta: float) -> None:  # type: ignore[no-untyped-def]
    batch = weights(make_batch(pairs=5, tokens=7, seed=2))
    tabpo = build("tabpo", beta=beta, barrier_weight=0.0, length_norm=False)
    output, grads = run(tabpo, batch)
    expected, expected_grads = run(build("dpo", beta=beta), batch)
    torch.testing.assert_close(output.loss, expected.loss, **EXACT)
    for name in grads:
        torch.testing.assert_close(grads[name], expected_grads[name], **EXACT)
    torch.testing.assert_close(
        output.metrics["rewards/margins"], expected.metrics["rewards/margins"], **EXACT
    )


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_tabpo_length_norm_is_dpo_on_mean_token_logps(beta: float) -> None:
    batch = unit_weights(make_batch(pairs=5, tokens=7, seed=3))
    output, _ = run(build("tabpo", beta=beta, barrier_weight=0.0, length_norm=True), batch)
    assert batch.ref_chosen is not None
    assert batch.ref_rejected is not None

    def mean_ratio(policy: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return ((policy - ref) * mask).sum(-1) / mask.sum(-1)

    margin = mean_ratio(batch.policy_chosen, batch.ref_chosen, batch.chosen_mask) - mean_ratio(
        batch.policy_rejected, batch.ref_rejected, batch.rejected_mask
    )
    torch.testing.assert_close(output.loss, -logsigmoid(beta * margin).mean(), **EXACT)


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_tbpo_logistic_on_one_token_completions_with_a_zero_head_is_dpo(beta: float) -> None:
    # One token a side: T = 1, and a fresh tbpo_q's head is zero (w = 1), so the token pair
    # is the whole pair and the logistic loss is dpo's.
    batch = make_batch(pairs=5, tokens=3, chosen_lengths=[1] * 5, rejected_lengths=[1] * 5, seed=4)
    tbpo = build("tbpo_q", hidden_size=3, head_width=4, beta=beta, generator="logistic").double()
    output, grads = run(tbpo, batch)
    expected, expected_grads = run(build("dpo", beta=beta), batch)
    torch.testing.assert_close(output.loss, expected.loss, **EXACT)
    for name in grads:
        torch.testing.assert_close(grads[name], expected_grads[name], **EXACT)


@pytest.mark.parametrize("generator", ["sba", "logistic"])
def test_tbpo_a_at_its_reference_is_tbpo_q_with_a_zero_head(generator: str) -> None:
    # A policy equal to its reference has KL 0 at every state, and a fresh head outputs 0:
    # both weights are 1, so the two variants take the same first step.
    batch = make_batch(pairs=5, tokens=7, seed=5)
    assert batch.ref_chosen is not None
    assert batch.ref_rejected is not None
    assert batch.ref_chosen_logits is not None
    assert batch.ref_rejected_logits is not None
    batch = dataclasses.replace(
        batch,
        policy_chosen=batch.ref_chosen.clone(),
        policy_rejected=batch.ref_rejected.clone(),
        policy_chosen_logits=batch.ref_chosen_logits.clone(),
        policy_rejected_logits=batch.ref_rejected_logits.clone(),
    )
    output, grads = run(build("tbpo_a", generator=generator), batch)
    fresh = build("tbpo_q", hidden_size=3, head_width=4, generator=generator).double()
    expected, expected_grads = run(fresh, batch)
    torch.testing.assert_close(output.loss, expected.loss, **EXACT)
    for name in grads:
        torch.testing.assert_close(grads[name], expected_grads[name], **EXACT)
    assert all(grads[name].abs().sum() > 0 for name in ("policy_chosen", "policy_rejected"))


@pytest.mark.parametrize("generator", ["sba", "logistic"])
def test_tbpo_q_given_values_is_tbpo_q_given_hidden_states(generator: str) -> None:
    # The trainer applies the value head itself and passes [B, T] values: the same loss, and
    # the same gradients to the policy and to the head, as the head applied inside the loss.
    loss = build_test_loss("tbpo_q", generator=generator)
    head = trainable_module(loss)
    assert head is not None
    hidden = make_batch(pairs=5, tokens=7, seed=6)

    def loss_and_grads(values: bool) -> list[torch.Tensor]:
        policy = [
            side.clone().requires_grad_() for side in (hidden.policy_chosen, hidden.policy_rejected)
        ]
        batch = dataclasses.replace(hidden, policy_chosen=policy[0], policy_rejected=policy[1])
        if values:
            batch = dataclasses.replace(
                batch,
                chosen_hidden=None,
                rejected_hidden=None,
                chosen_value=head(hidden.chosen_hidden),
                rejected_value=head(hidden.rejected_hidden),
            )
        output = loss(batch).loss
        return [output, *torch.autograd.grad(output, [*policy, *head.parameters()])]

    for got, want in zip(loss_and_grads(values=True), loss_and_grads(values=False), strict=True):
        torch.testing.assert_close(got, want, **EXACT)


@pytest.mark.parametrize("base", [name for name in all_losses() if name != "mixdpo"])
def test_mixdpo_routing_nothing_is_its_base(base: str) -> None:
    batch = make_batch(pairs=5, tokens=7, seed=5)
    mixdpo = build_test_loss("mixdpo", base=base, base_params=_base_params(base), threshold=1.0)
    assert isinstance(mixdpo.base, object)
    output, grads = run(mixdpo, batch)
    expected, expected_grads = run(mixdpo.base, batch)  # type: ignore[attr-defined]
    torch.testing.assert_close(output.loss, expected.loss, **EXACT)
    for name in grads:
        torch.testing.assert_close(grads[name], expected_grads[name], **EXACT)
    for key, value in expected.metrics.items():
        torch.testing.assert_close(output.metrics[key], value, **EXACT)
    assert output.metrics["mixdpo/routed_share"].item() == 0.0


def test_mixdpo_routing_everything_is_sft() -> None:
    batch = make_batch(pairs=5, tokens=7, seed=6)
    output, grads = run(build("mixdpo", base="tabpo", threshold=0.0, sft_weight=0.7), batch)
    token_mean = (batch.policy_chosen * batch.chosen_mask).sum(-1) / batch.chosen_mask.sum(-1)
    torch.testing.assert_close(output.loss, -0.7 * token_mean.mean(), **EXACT)
    assert torch.all(grads["policy_rejected"] == 0)
    assert output.metrics["mixdpo/routed_share"].item() == 1.0


def _base_params(base: str) -> dict[str, object]:
    return {"hidden_size": 3} if base == "tbpo_q" else {}
