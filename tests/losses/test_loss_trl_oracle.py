"""The sequence-level losses against TRL 1.16's own loss code, in float64, to 1e-6.

Oracles (TRL's code is called, not re-implemented):
- ``trl.trainer.dpo_trainer.DPOTrainer._compute_loss`` for dpo (``sigmoid``), robust, hinge,
  ipo, rpo (``["sigmoid", "sft"]`` with weights ``[1, α]``) and tabpo with unit weights, no
  barrier and ``length_norm=True`` (``sigmoid_norm``). The trainer is built without a model
  (``object.__new__``) with the attributes the method reads; a stub model returns our per-token
  log-probs where TRL's fused LM head would, and the reference sums are passed precomputed.
  The loss, its gradient and TRL's logged metrics are compared.
- ``trl.experimental.cpo.CPOTrainer.cpo_loss`` for simpo (``loss_type="simpo"``).
- cdpo: TRL >= 1.0 dropped label smoothing from ``sigmoid``, so it is checked against a plain
  float64 implementation of ``−(1−ε) log σ(βΔ) − ε log σ(−βΔ)`` written out per pair here.
"""

# ruff: noqa: RUF002

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from losses_testkit import make_batch
from torch import Tensor, nn
from trl.trainer.dpo_trainer import DPOTrainer
from trl.trainer.utils import FusedCausalLMOutput

from tokenpo.losses import PairLogps, build

TOLERANCE = {"rtol": 0.0, "atol": 1e-6}
SHARED_METRICS = (
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
)


class _FusedHeadStub(nn.Module):
    """Stands in for a model patched with TRL's fused LM head: returns fixed log-probs."""

    def __init__(self, log_probs: Tensor) -> None:
        super().__init__()
        self.log_probs = log_probs

    def forward(self, **_: Any) -> FusedCausalLMOutput:
        zeros = torch.zeros_like(self.log_probs)
        return FusedCausalLMOutput(
            log_probs=self.log_probs, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool()
        )


def trl_dpo_loss(
    batch: PairLogps, *, loss_types: list[str], beta: float, **attributes: Any
) -> tuple[Tensor, dict[str, float], Tensor, Tensor]:
    """TRL's loss, metrics, and the gradient of the loss w.r.t. each side's token log-probs."""
    chosen = batch.policy_chosen.detach().clone().requires_grad_()
    rejected = batch.policy_rejected.detach().clone().requires_grad_()
    masks = torch.cat([batch.chosen_mask, batch.rejected_mask])
    # TRL's fused head returns 0 where the label is masked.
    log_probs = torch.cat([chosen, rejected]) * masks
    assert batch.ref_chosen is not None
    assert batch.ref_rejected is not None
    trainer = object.__new__(DPOTrainer)
    settings = {
        "model": _FusedHeadStub(log_probs),
        "accelerator": SimpleNamespace(
            device=torch.device("cpu"), gather=lambda x: x, gather_for_metrics=lambda x: x
        ),
        "beta": beta,
        "loss_types": loss_types,
        "loss_weights": [1.0] * len(loss_types),
        "label_smoothing": 0.0,
        "ld_alpha": None,
        "precompute_ref_logps": True,
        "f_divergence_type": "reverse_kl",
        "use_weighting": False,
        "aux_loss_enabled": False,
        "_metrics": {"train": defaultdict(list)},
        "_total_train_tokens": 0,
        "_tp_size": 1,
        **attributes,
    }
    for name, value in settings.items():
        object.__setattr__(trainer, name, value)
    pairs, tokens = batch.policy_chosen.shape
    inputs = {
        # The completion starts after one prompt token; TRL drops the first position.
        "input_ids": torch.zeros(2 * pairs, tokens + 1, dtype=torch.long),
        "attention_mask": torch.ones(2 * pairs, tokens + 1, dtype=torch.long),
        "completion_mask": torch.cat(
            [torch.zeros(2 * pairs, 1, dtype=torch.long), masks.long()], dim=1
        ),
        "ref_chosen_logps": (batch.ref_chosen * batch.chosen_mask).sum(-1),
        "ref_rejected_logps": (batch.ref_rejected * batch.rejected_mask).sum(-1),
    }
    loss = trainer._compute_loss(trainer.model, inputs, return_outputs=False)
    grad_chosen, grad_rejected = torch.autograd.grad(loss, [chosen, rejected])
    metrics = {key: values[-1] for key, values in trainer._metrics["train"].items()}
    return loss.detach(), metrics, grad_chosen, grad_rejected


def ours(
    name: str, batch: PairLogps, **params: Any
) -> tuple[Tensor, dict[str, Tensor], Tensor, Tensor]:
    chosen = batch.policy_chosen.detach().clone().requires_grad_()
    rejected = batch.policy_rejected.detach().clone().requires_grad_()
    batch = PairLogps(
        policy_chosen=chosen,
        policy_rejected=rejected,
        chosen_mask=batch.chosen_mask,
        rejected_mask=batch.rejected_mask,
        ref_chosen=batch.ref_chosen,
        ref_rejected=batch.ref_rejected,
    )
    output = build(name, **params)(batch)
    grad_chosen, grad_rejected = torch.autograd.grad(output.loss, [chosen, rejected])
    return output.loss.detach(), output.metrics, grad_chosen, grad_rejected


def cpo_trainer_class() -> type:
    """TRL's CPOTrainer, imported without its warning that ``trl.experimental`` is unstable."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="You are importing from 'trl.experimental'")
        from trl.experimental.cpo import CPOTrainer
    return CPOTrainer


# Batches with ragged lengths and margins of both signs; seed 3 has large log-ratios.
BATCHES = [make_batch(pairs=6, tokens=9, seed=seed) for seed in (0, 3)]

CASES = [
    ("dpo", {"beta": 0.1}, {"loss_types": ["sigmoid"], "beta": 0.1}),
    ("dpo", {"beta": 2.0}, {"loss_types": ["sigmoid"], "beta": 2.0}),
    (
        "robust",
        {"beta": 0.3, "label_smoothing": 0.2},
        {"loss_types": ["robust"], "beta": 0.3, "label_smoothing": 0.2},
    ),
    ("hinge", {"beta": 0.5}, {"loss_types": ["hinge"], "beta": 0.5}),
    ("ipo", {"beta": 0.1}, {"loss_types": ["ipo"], "beta": 0.1}),
    ("ipo", {"beta": 1.0}, {"loss_types": ["ipo"], "beta": 1.0}),
    (
        "rpo",
        {"beta": 0.1, "alpha": 0.7},
        {"loss_types": ["sigmoid", "sft"], "loss_weights": [1.0, 0.7], "beta": 0.1},
    ),
    (
        "tabpo",
        {"beta": 0.5, "barrier_weight": 0.0, "length_norm": True},
        {"loss_types": ["sigmoid_norm"], "beta": 0.5},
    ),
]


@pytest.mark.parametrize("batch", BATCHES, ids=["seed0", "seed3"])
@pytest.mark.parametrize(("name", "params", "trl_settings"), CASES)
def test_matches_trl_dpo_trainer(
    name: str, params: dict[str, Any], trl_settings: dict[str, Any], batch: PairLogps
) -> None:
    loss, metrics, grad_chosen, grad_rejected = ours(name, batch, **params)
    trl_loss, trl_metrics, trl_grad_chosen, trl_grad_rejected = trl_dpo_loss(batch, **trl_settings)
    torch.testing.assert_close(loss, trl_loss, **TOLERANCE)
    torch.testing.assert_close(grad_chosen, trl_grad_chosen, **TOLERANCE)
    torch.testing.assert_close(grad_rejected, trl_grad_rejected, **TOLERANCE)
    # tabpo's length-normalised scores are not TRL's summed rewards; the rest log the same.
    for key in SHARED_METRICS if name != "tabpo" else ("logps/chosen", "logps/rejected"):
        assert metrics[key].item() == pytest.approx(trl_metrics[key], abs=1e-6), key


@pytest.mark.parametrize("batch", BATCHES, ids=["seed0", "seed3"])
@pytest.mark.parametrize(("beta", "gamma"), [(2.0, 1.0), (2.5, 0.3)])
def test_simpo_matches_trl_cpo_loss(batch: PairLogps, beta: float, gamma: float) -> None:
    loss, metrics, _, _ = ours("simpo", batch, beta=beta, gamma=gamma)
    cpo = object.__new__(cpo_trainer_class())
    settings = {
        "alpha": 0.0,
        "beta": beta,
        "loss_type": "simpo",
        "simpo_gamma": gamma,
        "label_smoothing": 0.0,
        "accelerator": SimpleNamespace(device=torch.device("cpu")),
    }
    for key, value in settings.items():
        object.__setattr__(cpo, key, value)
    chosen_mean = (batch.policy_chosen * batch.chosen_mask).sum(-1) / batch.chosen_mask.sum(-1)
    rejected_mean = (batch.policy_rejected * batch.rejected_mask).sum(-1) / batch.rejected_mask.sum(
        -1
    )
    losses, chosen_rewards, rejected_rewards = cpo.cpo_loss(chosen_mean, rejected_mean)
    torch.testing.assert_close(loss, losses.mean(), **TOLERANCE)
    assert metrics["rewards/chosen"].item() == pytest.approx(chosen_rewards.mean().item(), abs=1e-6)
    assert metrics["rewards/rejected"].item() == pytest.approx(
        rejected_rewards.mean().item(), abs=1e-6
    )


@pytest.mark.parametrize("batch", BATCHES, ids=["seed0", "seed3"])
@pytest.mark.parametrize(("beta", "eps"), [(0.1, 0.1), (0.5, 0.25), (1.0, 0.0)])
def test_cdpo_matches_plain_formula(batch: PairLogps, beta: float, eps: float) -> None:
    loss, _, _, _ = ours("cdpo", batch, beta=beta, label_smoothing=eps)
    assert batch.ref_chosen is not None
    assert batch.ref_rejected is not None
    expected = []
    for i in range(batch.batch_size):
        chosen_tokens = batch.chosen_mask[i].nonzero().flatten().tolist()
        rejected_tokens = batch.rejected_mask[i].nonzero().flatten().tolist()
        c = sum(float(batch.policy_chosen[i, t] - batch.ref_chosen[i, t]) for t in chosen_tokens)
        r = sum(
            float(batch.policy_rejected[i, t] - batch.ref_rejected[i, t]) for t in rejected_tokens
        )
        x = beta * (c - r)
        log_sigmoid = -math.log1p(math.exp(-x))
        log_sigmoid_neg = -math.log1p(math.exp(x))
        expected.append(-(1 - eps) * log_sigmoid - eps * log_sigmoid_neg)
    assert loss.item() == pytest.approx(sum(expected) / len(expected), abs=1e-9)
