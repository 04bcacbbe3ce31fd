"""The losses TRL 1.16 lacks, against plain float64 re-implementations of docs/losses.md.

Each reference below is written pair by pair and token by token from the formula (no shared
code with the library), in float64, and compared on loss and gradients.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import pytest
import torch
from losses_testkit import build_test_loss, make_batch, run, with_leaves
from torch import Tensor
from torch.nn.functional import log_softmax, logsigmoid

from tokenpo.losses import PairLogps, trainable_module

Reference = Callable[[PairLogps], Tensor]


def tokens(mask: Tensor, i: int) -> Tensor:
    return mask[i].nonzero().flatten()


def sides(batch: PairLogps, i: int) -> list[dict[str, Tensor]]:
    """Row ``i`` of each side, restricted to its completion tokens."""
    out = []
    for policy, ref, weight, mask, logits, ref_logits, hidden in (
        (
            batch.policy_chosen,
            batch.ref_chosen,
            batch.chosen_weight,
            batch.chosen_mask,
            batch.policy_chosen_logits,
            batch.ref_chosen_logits,
            batch.chosen_hidden,
        ),
        (
            batch.policy_rejected,
            batch.ref_rejected,
            batch.rejected_weight,
            batch.rejected_mask,
            batch.policy_rejected_logits,
            batch.ref_rejected_logits,
            batch.rejected_hidden,
        ),
    ):
        idx = tokens(mask, i)
        assert ref is not None
        assert weight is not None
        assert logits is not None
        assert ref_logits is not None
        assert hidden is not None
        out.append(
            {
                "logp": policy[i, idx],
                "ref": ref[i, idx],
                "weight": weight[i, idx],
                "logits": logits[i, idx],
                "ref_logits": ref_logits[i, idx],
                "hidden": hidden[i, idx],
            }
        )
    return out


def mean_over_pairs(per_pair: list[Tensor], batch: PairLogps) -> Tensor:
    weights = [1.0] * len(per_pair) if batch.pair_weight is None else batch.pair_weight.tolist()
    return sum(w * x for w, x in zip(weights, per_pair, strict=True)) / sum(weights)


def tdpo_reference(beta: float, alpha: float, stop_gradient: bool) -> Reference:
    def loss(batch: PairLogps) -> Tensor:
        per_pair = []
        for i in range(batch.batch_size):
            chosen, rejected = sides(batch, i)
            kl = []
            for side in (chosen, rejected):
                ref_logp = log_softmax(side["ref_logits"], -1)
                logp = log_softmax(side["logits"], -1)
                kl.append((ref_logp.exp() * (ref_logp - logp)).sum())
            kl_chosen = kl[0].detach() if stop_gradient else kl[0]
            delta = (chosen["logp"] - chosen["ref"]).sum() - (
                rejected["logp"] - rejected["ref"]
            ).sum()
            per_pair.append(-logsigmoid(beta * (delta + alpha * (kl_chosen - kl[1]))))
        return mean_over_pairs(per_pair, batch)

    return loss


def tis_reference(beta: float) -> Reference:
    def loss(batch: PairLogps) -> Tensor:
        per_pair = []
        for i in range(batch.batch_size):
            chosen, rejected = sides(batch, i)
            score = [(s["weight"] * (s["logp"] - s["ref"])).sum() for s in (chosen, rejected)]
            per_pair.append(-logsigmoid(beta * (score[0] - score[1])))
        return mean_over_pairs(per_pair, batch)

    return loss


def confpo_reference(beta: float, gamma: float) -> Reference:
    def critical(logp: Tensor) -> Tensor:
        prob = logp.detach().exp()
        return logp[prob < prob.mean()]

    def loss(batch: PairLogps) -> Tensor:
        per_pair = []
        for i in range(batch.batch_size):
            chosen, rejected = (critical(side["logp"]) for side in sides(batch, i))
            if len(chosen) == 0 or len(rejected) == 0:  # no score: the pair adds 0
                per_pair.append(batch.policy_chosen[i].sum() * 0.0)
                continue
            margin = beta * (chosen.mean() - rejected.mean())
            per_pair.append(-logsigmoid(margin - gamma))
        return mean_over_pairs(per_pair, batch)

    return loss


def tabpo_pair(
    chosen: dict[str, Tensor],
    rejected: dict[str, Tensor],
    *,
    beta: float,
    tau: float,
    barrier_weight: float,
    length_norm: bool,
    barrier: str,
) -> Tensor:
    """The authors' train_dpo.py loss of one pair, written out."""
    scores = []
    for side in (chosen, rejected):
        n = max(len(side["logp"]), 1)
        w = side["weight"] * n / max(float(side["weight"].sum()), 1e-6)
        denominator = n if length_norm else 1
        scores.append(((w * side["logp"]).sum() - (w * side["ref"]).sum()) / denominator)
        side["normalised_weight"] = w
    preference = -logsigmoid(beta * (scores[0] - scores[1]))
    gate = chosen["logp"].detach() < math.log(tau)
    w = chosen["normalised_weight"][gate]
    if barrier == "nll":
        per_token = -chosen["logp"][gate]
    else:
        per_token = torch.relu(chosen["ref"][gate] - chosen["logp"][gate])
    barrier_loss = (w * per_token).sum() / max(float(w.sum()), 1.0)
    return preference + barrier_weight * barrier_loss


def tabpo_reference(**params: object) -> Reference:
    def loss(batch: PairLogps) -> Tensor:
        per_pair = [tabpo_pair(*sides(batch, i), **params) for i in range(batch.batch_size)]  # type: ignore[arg-type]
        return mean_over_pairs(per_pair, batch)

    return loss


def generator_h(generator: str, lam: float, scale: float) -> Callable[[Tensor], Tensor]:
    """The Bregman generator ``h`` itself (the loss is derived from it below)."""
    if generator == "logistic":  # logistic regression's h; tbpo's loss is half of its loss
        return lambda r: 0.5 * (r * torch.log(r) - (1 + r) * torch.log(1 + r))
    if lam == 0.0:
        return lambda r: r * torch.log(r) / scale
    return lambda r: (r ** (1 + lam) - r) / (scale * lam * (lam + 1))


def bregman_token_loss(h: Callable[[Tensor], Tensor], log_r: Tensor) -> Tensor:
    """The paper's ``h'(R) R - h(R) - h'(1/R)``, with ``h'`` by automatic differentiation."""
    dh = torch.func.grad(h)
    r = torch.exp(log_r.clamp(-30, 30))
    return dh(r) * r - h(r) - dh(1 / r)


def tbpo_pair(
    chosen: dict[str, Tensor],
    rejected: dict[str, Tensor],
    log_w: Callable[[int], Tensor],
    *,
    beta: float,
    h: Callable[[Tensor], Tensor],
) -> Tensor:
    """``(1/T) Σ_t loss(R_t)`` over the first ``T = min(|y_w|, |y_l|)`` positions."""
    terms = []
    for t in range(min(len(chosen["logp"]), len(rejected["logp"]))):
        rho_w = chosen["logp"][t] - chosen["ref"][t]
        rho_l = rejected["logp"][t] - rejected["ref"][t]
        terms.append(bregman_token_loss(h, beta * (rho_l - rho_w + log_w(t))))
    return torch.stack(terms).mean()


def state_kl(side: dict[str, Tensor], t: int) -> Tensor:
    """``KL(π_ref(·|s_t) ‖ π(·|s_t))`` at token ``t`` from the two logit rows, detached."""
    ref_logp = log_softmax(side["ref_logits"][t], -1)
    logp = log_softmax(side["logits"][t], -1)
    return (ref_logp.exp() * (ref_logp - logp)).sum().detach()


def tbpo_a_reference(
    beta: float = 0.1, generator: str = "sba", lam: float = 0.0, scale: float = 4.0
) -> Reference:
    def loss(batch: PairLogps) -> Tensor:
        per_pair = []
        for i in range(batch.batch_size):
            chosen, rejected = sides(batch, i)

            def log_w(t: int, chosen: dict[str, Tensor] = chosen, rejected=rejected) -> Tensor:  # type: ignore[no-untyped-def]
                return state_kl(rejected, t) - state_kl(chosen, t)

            h = generator_h(generator, lam, scale)
            per_pair.append(tbpo_pair(chosen, rejected, log_w, beta=beta, h=h))
        return mean_over_pairs(per_pair, batch)

    return loss


def tbpo_q_reference(
    head: torch.nn.Module, beta: float, generator: str, lam: float, clamp: float
) -> Reference:
    def baseline(hidden: Tensor) -> Tensor:
        features = torch.relu(hidden @ head.hidden.weight.T + head.hidden.bias)
        return features @ head.out.weight[0] + head.out.bias[0]

    def loss(batch: PairLogps) -> Tensor:
        per_pair = []
        for i in range(batch.batch_size):
            chosen, rejected = sides(batch, i)
            b_w, b_l = baseline(chosen["hidden"]), baseline(rejected["hidden"])

            def log_w(t: int, b_w: Tensor = b_w, b_l: Tensor = b_l) -> Tensor:
                return (b_l[t] - b_w[t]).clamp(-clamp, clamp)

            h = generator_h(generator, lam, 4.0)
            per_pair.append(tbpo_pair(chosen, rejected, log_w, beta=beta, h=h))
        return mean_over_pairs(per_pair, batch)

    return loss


def mixdpo_reference(threshold: float, sft_weight: float, **tabpo_params: object) -> Reference:
    def loss(batch: PairLogps) -> Tensor:
        assert batch.difficulty is not None
        per_pair = []
        for i in range(batch.batch_size):
            chosen, rejected = sides(batch, i)
            if batch.difficulty[i] >= threshold:
                per_pair.append(-sft_weight * chosen["logp"].mean())
            else:
                per_pair.append(tabpo_pair(chosen, rejected, **tabpo_params))  # type: ignore[arg-type]
        return mean_over_pairs(per_pair, batch)

    return loss


TABPO_DEFAULTS = {
    "beta": 0.5,
    "tau": 0.66,
    "barrier_weight": 0.5,
    "length_norm": True,
    "barrier": "nll",
}

CASES: list[tuple[str, dict[str, object], Reference]] = [
    ("tdpo", {}, tdpo_reference(0.1, 0.5, stop_gradient=True)),
    ("tdpo", {"variant": "tdpo1", "beta": 0.5}, tdpo_reference(0.5, 1.0, stop_gradient=False)),
    ("tdpo", {"alpha": 0.2, "beta": 0.3}, tdpo_reference(0.3, 0.2, stop_gradient=True)),
    ("tis", {"beta": 0.4}, tis_reference(0.4)),
    ("confpo", {}, confpo_reference(2.0, 1.0)),
    ("confpo", {"beta": 1.0, "gamma": 0.2}, confpo_reference(1.0, 0.2)),
    ("tabpo", {}, tabpo_reference(**TABPO_DEFAULTS)),
    (
        "tabpo",
        {"beta": 0.2, "tau": 0.4, "barrier_weight": 1.5, "length_norm": False},
        tabpo_reference(
            **{
                **TABPO_DEFAULTS,
                "beta": 0.2,
                "tau": 0.4,
                "barrier_weight": 1.5,
                "length_norm": False,
            }
        ),
    ),
    ("tabpo", {"barrier": "ref"}, tabpo_reference(**{**TABPO_DEFAULTS, "barrier": "ref"})),
    ("tbpo_a", {}, tbpo_a_reference()),
    ("tbpo_a", {"generator": "logistic", "beta": 0.5}, tbpo_a_reference(0.5, "logistic")),
    ("tbpo_a", {"lam": 0.5, "beta": 0.5}, tbpo_a_reference(0.5, lam=0.5)),
    ("tbpo_a", {"lam": 1.0, "scale": 1.0}, tbpo_a_reference(lam=1.0, scale=1.0)),
    (
        "mixdpo",
        {"base": "tabpo", "base_params": {}, "threshold": 0.5, "sft_weight": 0.7},
        mixdpo_reference(0.5, 0.7, **TABPO_DEFAULTS),
    ),
]


@pytest.mark.parametrize("with_pair_weight", [False, True], ids=["unweighted", "pair_weight"])
@pytest.mark.parametrize(
    ("name", "params", "reference"), CASES, ids=lambda x: x if isinstance(x, str) else ""
)
def test_matches_reference(
    name: str, params: dict[str, object], reference: Reference, with_pair_weight: bool
) -> None:
    batch = make_batch(pairs=5, tokens=7, seed=11)
    if with_pair_weight:
        batch = dataclasses.replace(
            batch, pair_weight=torch.tensor([0.5, 2.0, 1.0, 0.0, 1.5], dtype=torch.float64)
        )
    assert_matches(build_test_loss(name, **params), reference, batch)


def test_confpo_pair_with_a_side_without_critical_tokens_adds_nothing() -> None:
    # A one-token side has no token below its own mean: pair 1's chosen, pair 3's rejected.
    batch = make_batch(
        pairs=4, tokens=6, chosen_lengths=[6, 1, 5, 4], rejected_lengths=[5, 6, 3, 1], seed=9
    )
    output, grads = run(build_test_loss("confpo"), batch)
    assert_matches(build_test_loss("confpo"), confpo_reference(2.0, 1.0), batch)
    for side in ("policy_chosen", "policy_rejected"):
        assert torch.all(grads[side][[1, 3]] == 0)
        assert torch.all(grads[side][[0, 2]].abs().sum(-1) > 0)
    assert float(output.loss.detach()) > 0


@pytest.mark.parametrize(
    ("generator", "lam", "clamp"), [("sba", 0.0, 10.0), ("sba", 0.5, 0.2), ("logistic", 0.0, 10.0)]
)
def test_tbpo_q_matches_reference(generator: str, lam: float, clamp: float) -> None:
    """Loss and policy gradients; a small clamp bounds some of the head's ``log w``."""
    params = {"generator": generator, "lam": lam, "log_w_clamp": clamp, "beta": 0.5}
    loss = build_test_loss("tbpo_q", **params)
    head = trainable_module(loss)
    assert head is not None
    batch = make_batch(pairs=5, tokens=7, seed=12)
    reference = tbpo_q_reference(head, 0.5, generator, lam, clamp)
    assert_matches(loss, reference, batch)
    # The head is trained by the same loss.
    head.zero_grad()
    loss(batch).loss.backward()
    got = [parameter.grad.clone() for parameter in head.parameters()]  # type: ignore[union-attr]
    head.zero_grad()
    reference(batch).backward()
    for parameter, grad in zip(head.parameters(), got, strict=True):
        assert parameter.grad is not None
        torch.testing.assert_close(grad, parameter.grad, rtol=0, atol=1e-10)
    assert any(grad.abs().sum() > 0 for grad in got)


def assert_matches(
    loss: Callable[[PairLogps], object], reference: Reference, batch: PairLogps
) -> None:
    output, grads = run(loss, batch)  # type: ignore[arg-type]
    expected_batch, leaves = with_leaves(batch)
    expected = reference(expected_batch)
    expected_grads = torch.autograd.grad(expected, leaves, allow_unused=True)
    torch.testing.assert_close(output.loss, expected.detach(), rtol=0, atol=1e-10)
    for (name, grad), expected_grad in zip(grads.items(), expected_grads, strict=True):
        want = torch.zeros_like(grad) if expected_grad is None else expected_grad
        torch.testing.assert_close(grad, want, rtol=0, atol=1e-10, msg=name)
