"""Gradients: gradcheck for every loss, gates that pass none, where the gradient goes."""

# ruff: noqa: RUF003

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from losses_testkit import GRAD_FIELDS, all_losses, build_test_loss, make_batch, run
from torch import Tensor

from tokenpo.losses import TBPOA, TBPOQ, PairLogps, build
from tokenpo.losses.tbpo import token_ratio_loss_and_slope

# Fields that reach the loss only through a stop-gradient, so finite differences of the full
# function would (rightly) disagree with autograd: they are held fixed in the gradcheck and
# their zero gradient is tested on its own (tdpo2's D(y_w); tbpo_a's KL weights are frozen in
# the gradcheck below).
FROZEN = {"tdpo": ("policy_chosen_logits",)}
GRADCHECK_CASES = [(name, {}) for name in all_losses()] + [
    ("tdpo", {"variant": "tdpo1"}),
    ("tabpo", {"barrier": "ref", "length_norm": False}),
    ("tbpo_a", {"generator": "logistic"}),
    ("tbpo_a", {"lam": 0.5}),
    ("tbpo_q", {"generator": "logistic"}),
    ("mixdpo", {"base": "tbpo_q", "base_params": {"hidden_size": 3, "head_width": 4}}),
]


@pytest.mark.parametrize(("name", "params"), GRADCHECK_CASES)
def test_gradcheck(name: str, params: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> None:
    loss = build_test_loss(name, **params)
    # tdpo differentiates through [B, T, V] logits: a smaller batch keeps it fast.
    batch = (
        make_batch(pairs=2, tokens=3, seed=7)
        if name == "tdpo"
        else make_batch(pairs=3, tokens=4, seed=7)
    )
    if name == "tbpo_a":
        # TBPO-A's weights are detached: freeze them at the unperturbed point.
        assert isinstance(loss, TBPOA)
        frozen = loss.log_weight(batch.sides())
        monkeypatch.setattr(TBPOA, "log_weight", lambda *_: frozen)
    # Only tdpo reads the logits; for the others their (zero) gradient is not worth the time.
    fields = [f for f in GRAD_FIELDS if "logits" not in f or name == "tdpo"]
    fields = [f for f in fields if f not in FROZEN.get(name, ()) or params]

    def loss_of(*leaves: Tensor) -> Tensor:
        return loss(dataclasses.replace(batch, **dict(zip(fields, leaves, strict=True)))).loss

    leaves = tuple(getattr(batch, field).clone().requires_grad_() for field in fields)
    assert torch.autograd.gradcheck(loss_of, leaves, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("barrier", ["nll", "ref"])
@pytest.mark.parametrize("length_norm", [True, False])
def test_gradcheck_tabpo_without_weights(barrier: str, length_norm: bool) -> None:
    # tabpo's gradient is hand-written (losses._ops.with_token_gradient), with a branch of its
    # own for unweighted batches (w̃ ≡ 1): checked here as the weighted one is above.
    loss = build("tabpo", barrier=barrier, length_norm=length_norm, tau=0.5)
    batch = dataclasses.replace(
        make_batch(pairs=3, tokens=4, seed=7), chosen_weight=None, rejected_weight=None
    )

    def loss_of(chosen: Tensor, rejected: Tensor) -> Tensor:
        return loss(dataclasses.replace(batch, policy_chosen=chosen, policy_rejected=rejected)).loss

    leaves = (
        batch.policy_chosen.clone().requires_grad_(),
        batch.policy_rejected.clone().requires_grad_(),
    )
    assert torch.autograd.gradcheck(loss_of, leaves, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize(("generator", "clamp"), [("sba", 10.0), ("sba", 0.2), ("logistic", 10.0)])
def test_gradcheck_tbpo_q_value_head(generator: str, clamp: float) -> None:
    # The head is trained by the preference loss itself, through log w (clamped).
    module = build_test_loss("tbpo_q", generator=generator, log_w_clamp=clamp)
    assert isinstance(module, TBPOQ)
    batch = make_batch(pairs=3, tokens=4, seed=8)
    names = [name for name, _ in module.named_parameters()]

    def loss_of(*parameters: Tensor) -> Tensor:
        state = dict(zip(names, parameters, strict=True))
        output = torch.func.functional_call(module, state, (batch,))
        return output.loss  # type: ignore[no-any-return]

    parameters = tuple(p.detach().clone().requires_grad_() for p in module.parameters())
    assert torch.autograd.gradcheck(loss_of, parameters, eps=1e-6, atol=1e-7)


def barrier_gradient(batch: PairLogps, **params: object) -> Tensor:
    """Gradient of the barrier term alone w.r.t. the chosen log-probs (λ=1 minus λ=0)."""
    _, with_barrier = run(build("tabpo", barrier_weight=1.0, **params), batch)
    _, without = run(build("tabpo", barrier_weight=0.0, **params), batch)
    return with_barrier["policy_chosen"] - without["policy_chosen"]


def test_tabpo_gate_passes_no_gradient_and_tokens_above_tau_get_no_barrier_gradient() -> None:
    tau = 0.5
    batch = make_batch(pairs=4, tokens=6, seed=9)
    chosen = batch.policy_chosen.clone()
    chosen[0, 0] = math.log(0.9)  # above τ: no barrier
    chosen[0, 1] = math.log(0.2)  # below τ: barrier
    batch = dataclasses.replace(batch, policy_chosen=chosen)
    grad = barrier_gradient(batch, tau=tau)
    # Expected if the gate is a constant: d/dℓ_t of Σ g w̃ (−ℓ) / max(1, Σ g w̃), mean over pairs.
    assert batch.chosen_weight is not None
    mask = batch.chosen_mask.double()
    weight = batch.chosen_weight * mask
    normalised = weight * mask.sum(-1, keepdim=True) / weight.sum(-1, keepdim=True)
    gate = mask * (chosen < math.log(tau))
    denominator = (gate * normalised).sum(-1, keepdim=True).clamp(min=1.0)
    expected = -gate * normalised / denominator / batch.batch_size
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-12)
    assert grad[0, 0] == 0.0
    assert grad[0, 1] < 0.0


def test_confpo_critical_mask_passes_no_gradient() -> None:
    batch = make_batch(pairs=4, tokens=6, seed=10)
    _, grads = run(build("confpo"), batch)
    for policy, mask, grad in (
        (batch.policy_chosen, batch.chosen_mask, grads["policy_chosen"]),
        (batch.policy_rejected, batch.rejected_mask, grads["policy_rejected"]),
    ):
        prob = policy.exp() * mask
        critical = mask & (policy.exp() < (prob.sum(-1) / mask.sum(-1)).unsqueeze(-1))
        # Only critical tokens get gradient, and all critical tokens of a row the same
        # (∂S/∂ℓ_t = 1/n): the selection itself contributes nothing.
        assert torch.all(grad[~critical] == 0)
        for row in range(batch.batch_size):
            values = grad[row][critical[row]]
            assert values.numel() > 0
            torch.testing.assert_close(values, values[:1].expand_as(values), rtol=0, atol=1e-15)


def test_tdpo2_stops_the_gradient_through_the_chosen_kl() -> None:
    batch = make_batch(pairs=3, tokens=4, seed=11)
    _, tdpo2 = run(build("tdpo"), batch)
    _, tdpo1 = run(build("tdpo", variant="tdpo1"), batch)
    assert torch.all(tdpo2["policy_chosen_logits"] == 0)
    assert torch.any(tdpo2["policy_rejected_logits"] != 0)
    assert torch.any(tdpo1["policy_chosen_logits"] != 0)


def diff_share(batch: PairLogps, grads: dict[str, Tensor]) -> float:
    assert batch.chosen_diff is not None
    assert batch.rejected_diff is not None
    diff = (
        abs(grads["policy_chosen"][batch.chosen_diff]).sum()
        + abs(grads["policy_rejected"][batch.rejected_diff]).sum()
    )
    total = abs(grads["policy_chosen"]).sum() + abs(grads["policy_rejected"]).sum()
    return float(diff / total)


@pytest.mark.parametrize("barrier_weight", [0.0, 0.5])
def test_tabpo_raising_diff_token_weights_raises_their_gradient_share(
    barrier_weight: float,
) -> None:
    batch = make_batch(pairs=6, tokens=8, seed=12)
    assert batch.chosen_diff is not None
    assert batch.rejected_diff is not None
    loss = build("tabpo", barrier_weight=barrier_weight)
    shares = []
    for diff_weight in (1.0, 1.2, 2.0):
        weighted = dataclasses.replace(
            batch,
            chosen_weight=torch.where(batch.chosen_diff, diff_weight, 1.0).double(),
            rejected_weight=torch.where(batch.rejected_diff, diff_weight, 1.0).double(),
        )
        _, grads = run(loss, weighted)
        shares.append(diff_share(weighted, grads))
    assert shares[0] < shares[1] < shares[2]


@pytest.mark.parametrize(
    ("generator", "lam"), [("sba", 0.0), ("sba", 0.5), ("sba", 1.0), ("logistic", 0.0)]
)
def test_tbpo_token_loss_grows_with_log_r_and_its_slope_matches_finite_differences(
    generator: str, lam: float
) -> None:
    # log R = β[(ρ^l − ρ^w) + log w]: a loss increasing in log R moves ρ^w up and ρ^l down.
    log_r = torch.tensor([-4.0, -1.0, 0.0, 0.5, 3.0], dtype=torch.float64)

    def loss_and_slope(x: Tensor) -> tuple[Tensor, Tensor]:
        return token_ratio_loss_and_slope(generator, x, lam=lam, scale=4.0)

    _, slope = loss_and_slope(log_r)
    assert torch.all(slope > 0)
    step = 1e-6
    finite_differences = (loss_and_slope(log_r + step)[0] - loss_and_slope(log_r - step)[0]) / (
        2 * step
    )
    torch.testing.assert_close(finite_differences, slope, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", ["tbpo_q", "tbpo_a"])
@pytest.mark.parametrize("generator", ["sba", "logistic"])
def test_tbpo_step_on_the_policy_raises_the_chosen_reward_and_lowers_the_rejected(
    name: str, generator: str
) -> None:
    loss = build_test_loss(name, generator=generator, beta=0.5)
    batch = make_batch(pairs=4, tokens=5, seed=13)
    before, grads = run(loss, batch)
    stepped = dataclasses.replace(
        batch,
        policy_chosen=batch.policy_chosen - 1e-3 * grads["policy_chosen"],
        policy_rejected=batch.policy_rejected - 1e-3 * grads["policy_rejected"],
    )
    after = loss(stepped)
    assert after.metrics["rewards/chosen"] > before.metrics["rewards/chosen"]
    assert after.metrics["rewards/rejected"] < before.metrics["rewards/rejected"]


def test_mixdpo_routed_pairs_get_no_preference_gradient() -> None:
    batch = make_batch(pairs=6, tokens=5, seed=14)
    assert batch.difficulty is not None
    _, grads = run(build("mixdpo", base="dpo", threshold=0.5), batch)
    routed = batch.difficulty >= 0.5
    assert routed.any()
    assert (~routed).any()
    assert torch.all(grads["policy_rejected"][routed] == 0)
    assert torch.all(grads["policy_rejected"][~routed].abs().sum(-1) > 0)
