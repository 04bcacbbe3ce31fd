"""Random preference batches and built losses shared by the loss tests (not a test module)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import Tensor

from tokenpo.losses import LossOutput, PairLogps, available, build, trainable_module
from tokenpo.losses.registry import Loss

HIDDEN = 3
VOCAB = 5

# Parameters that make each loss exercise its whole formula in the tests: mixdpo routes some
# pairs to SFT and gives the others to tabpo (whose default τ gates some of the tokens here).
TEST_PARAMS: dict[str, dict[str, object]] = {
    "tbpo_q": {"hidden_size": HIDDEN, "head_width": 4},
    "mixdpo": {"base": "tabpo", "threshold": 0.5},
}

# Every field a loss may differentiate through; a test passes these as leaves.
GRAD_FIELDS = ("policy_chosen", "policy_rejected", "policy_chosen_logits", "policy_rejected_logits")


def all_losses() -> list[str]:
    return list(available())


def build_test_loss(name: str, dtype: torch.dtype = torch.float64, **params: object) -> Loss:
    """``name`` with :data:`TEST_PARAMS` (overridden by ``params``), its module in ``dtype``."""
    loss = build(name, **{**TEST_PARAMS.get(name, {}), **params})
    module = trainable_module(loss)
    if module is not None:
        module.to(dtype)
        # A non-zero head, so the baseline is really subtracted in the tests.
        torch.manual_seed(1)
        for parameter in module.parameters():
            torch.nn.init.normal_(parameter, std=0.3)
    return loss


def lengths_mask(lengths: Sequence[int], tokens: int) -> Tensor:
    return torch.arange(tokens) < torch.tensor(lengths).unsqueeze(-1)


def make_batch(
    *,
    pairs: int = 4,
    tokens: int = 6,
    chosen_lengths: Sequence[int] | None = None,
    rejected_lengths: Sequence[int] | None = None,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
) -> PairLogps:
    """Every field filled: log-probs in log([0.05, 0.95]), ragged lengths, weights, diffs.

    Padding holds finite garbage (-7.0), which a correct loss never reads.
    """
    generator = torch.Generator().manual_seed(seed)

    def uniform(*size: int, low: float, high: float) -> Tensor:
        return (
            low + (high - low) * torch.rand(*size, generator=generator, dtype=torch.float64)
        ).to(dtype)

    chosen_lengths = chosen_lengths or [tokens - i % 3 for i in range(pairs)]
    rejected_lengths = rejected_lengths or [tokens - (i + 1) % 3 for i in range(pairs)]
    chosen_mask = lengths_mask(chosen_lengths, tokens)
    rejected_mask = lengths_mask(rejected_lengths, tokens)

    def logps() -> Tensor:
        return uniform(pairs, tokens, low=0.05, high=0.95).log()

    def padded(value: Tensor, mask: Tensor) -> Tensor:
        return torch.where(mask, value, torch.full_like(value, -7.0))

    size = (pairs, tokens)
    return PairLogps(
        policy_chosen=padded(logps(), chosen_mask),
        policy_rejected=padded(logps(), rejected_mask),
        chosen_mask=chosen_mask,
        rejected_mask=rejected_mask,
        ref_chosen=padded(logps(), chosen_mask),
        ref_rejected=padded(logps(), rejected_mask),
        chosen_weight=uniform(*size, low=0.5, high=2.0),
        rejected_weight=uniform(*size, low=0.5, high=2.0),
        chosen_diff=torch.rand(*size, generator=generator) < 0.4,
        rejected_diff=torch.rand(*size, generator=generator) < 0.4,
        difficulty=uniform(pairs, low=0.0, high=1.0),
        policy_chosen_logits=uniform(*size, VOCAB, low=-2.0, high=2.0),
        policy_rejected_logits=uniform(*size, VOCAB, low=-2.0, high=2.0),
        ref_chosen_logits=uniform(*size, VOCAB, low=-2.0, high=2.0),
        ref_rejected_logits=uniform(*size, VOCAB, low=-2.0, high=2.0),
        chosen_hidden=uniform(*size, HIDDEN, low=-1.0, high=1.0),
        rejected_hidden=uniform(*size, HIDDEN, low=-1.0, high=1.0),
    )


def with_leaves(batch: PairLogps) -> tuple[PairLogps, list[Tensor]]:
    """A copy of ``batch`` whose differentiable fields are fresh leaves, and those leaves."""
    leaves = {name: getattr(batch, name).detach().clone().requires_grad_() for name in GRAD_FIELDS}
    return dataclasses.replace(batch, **leaves), list(leaves.values())


def run(loss: Loss, batch: PairLogps) -> tuple[LossOutput, dict[str, Tensor]]:
    """Loss output and the gradient of each differentiable field (zeros when unused)."""
    batch, leaves = with_leaves(batch)
    output = loss(batch)
    grads = torch.autograd.grad(output.loss, leaves, allow_unused=True)
    return output, {
        name: torch.zeros_like(leaf) if grad is None else grad
        for name, leaf, grad in zip(GRAD_FIELDS, leaves, grads, strict=True)
    }
