# ruff: noqa: RUF001, RUF002 -- formulas use the math notation of docs/losses.md
"""TBPO: token-level Bradley-Terry preference optimisation by Bregman ratio matching.

RECONSTRUCTION from the abstract of Nguyen et al., arXiv 2605.12288 (the full text was not
available to us); every choice the abstract leaves open is a parameter or documented in
``docs/losses.md`` § "TBPO". Per-token score ``z_t = β ρ_t − b_t``, side scores
``Z_w = Σ_t m^w_t z^w_t`` and ``Z_l = Σ_t m^l_t z^l_t``, and a loss ``φ`` from a Bregman
generator:

- ``logistic``: ``−log σ(Z_w − Z_l)``; with ``b ≡ 0`` exactly dpo.
- ``lsif`` (``f(t) = (t−1)²/2``): ``½ exp(2 clamp(Z_l)) − exp(clamp(Z_w))``.
- ``ukl`` (``f(t) = t log t − t``): ``exp(clamp(Z_l)) − clamp(Z_w)``.

``clamp`` limits the log-ratios to ``[−ratio_clamp, ratio_clamp]`` so ``exp`` cannot overflow;
beyond it the ratio loss gives no gradient (the logistic one is not clamped).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable

from tokenpo.exceptions import InputError
from tokenpo.losses._base import PairLoss, PairTerms, SideStats, finish, side_stats
from tokenpo.losses._ops import logistic_loss
from tokenpo.losses.batch import LossOutput, PairLogps, Side
from tokenpo.losses.config import LossConfigError, check_choice, check_number

__all__ = ["TBPOA", "TBPOQ", "Generator", "TBPOQConfig", "ValueHead", "bregman_loss"]

Generator = Literal["logistic", "lsif", "ukl"]
_GENERATORS: tuple[Generator, ...] = ("logistic", "lsif", "ukl")


def bregman_loss(
    generator: Generator, chosen: Tensor, rejected: Tensor, *, ratio_clamp: float
) -> Tensor:
    """``φ(Z_w, Z_l)`` of each pair for the given generator (see the module docstring)."""
    if generator == "logistic":
        return logistic_loss(chosen - rejected)
    chosen = chosen.clamp(-ratio_clamp, ratio_clamp)
    rejected = rejected.clamp(-ratio_clamp, ratio_clamp)
    if generator == "lsif":
        return 0.5 * torch.exp(2.0 * rejected) - torch.exp(chosen)
    return torch.exp(rejected) - chosen


@dataclass(frozen=True, kw_only=True, slots=True)
class _TBPOParams:
    """Parameters shared by TBPO-A and TBPO-Q."""

    name: ClassVar[str]
    beta: float = 0.1
    """β > 0 in ``z_t = β ρ_t − b_t``."""
    generator: Generator = "logistic"
    """The Bregman generator: ``logistic`` (dpo-like), ``lsif`` or ``ukl``."""
    ratio_clamp: float = 5.0
    """Bound on ``|Z|`` inside ``exp`` for ``lsif`` and ``ukl``, > 0."""

    def __post_init__(self) -> None:
        check_number(self.name, "beta", self.beta, low=0.0, low_open=True)
        check_choice(self.name, "generator", self.generator, _GENERATORS)
        check_number(self.name, "ratio_clamp", self.ratio_clamp, low=0.0, low_open=True)
        self.check_params()

    def check_params(self) -> None:
        """Validate the parameters a subclass adds; none by default."""

    def sides_and_stats(
        self, batch: PairLogps
    ) -> tuple[tuple[Side, Side], tuple[SideStats, SideStats]]:
        """The two sides and their sums (reference required)."""
        sides = batch.sides()
        return sides, (side_stats(sides[0], by=self.name), side_stats(sides[1], by=self.name))

    def pair_terms(
        self,
        sides: tuple[Side, Side],
        stats: tuple[SideStats, SideStats],
        scores: tuple[Tensor, Tensor],
        *,
        metrics: dict[str, Tensor],
        batch_term: Tensor | None = None,
    ) -> PairTerms:
        """Apply the generator to the side scores ``(Z_w, Z_l)``."""
        return PairTerms(
            per_pair=bregman_loss(self.generator, *scores, ratio_clamp=self.ratio_clamp),
            chosen_reward=scores[0].detach(),
            rejected_reward=scores[1].detach(),
            chosen=stats[0],
            rejected=stats[1],
            sides=sides,
            batch_term=batch_term,
            metrics=metrics,
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class TBPOA(_TBPOParams, PairLoss):
    """TBPO-A (arXiv 2605.12288, RECONSTRUCTION): no learned baseline; advantage normalisation.

    ``z_t = β (ρ_t − μ) / max(σ, std_floor)`` with ``μ``, ``σ`` the mean and (population)
    standard deviation of ``ρ`` over every completion token of the batch, both sides, detached.
    Since ``μ`` and ``σ`` are constants, ``Z = β (Σ_t m ρ − μ n) / max(σ, std_floor)`` from
    sequence sums. The floor keeps the normalisation from amplifying: a policy equal to its
    reference has ``σ = 0``, and ``σ + 1e-6`` there scaled the first step's gradient by 10⁶.
    Needs the reference log-probs.
    """

    name: ClassVar[str] = "tbpo_a"
    std_floor: float = 1.0
    """The smallest divisor (nats) > 0: below it the advantages are only centred."""

    def check_params(self) -> None:
        check_number(self.name, "std_floor", self.std_floor, low=0.0, low_open=True)

    def terms(self, batch: PairLogps, /) -> PairTerms:
        sides, stats = self.sides_and_stats(batch)
        mean, std = self.token_mean_std(sides, stats)
        scale = self.beta / std.clamp(min=self.std_floor)
        chosen, rejected = ((side.log_ratio - mean * side.count) * scale for side in stats)
        return self.pair_terms(
            sides, stats, (chosen, rejected), metrics={"tbpo/mean": mean, "tbpo/std": std}
        )

    def token_mean_std(
        self, sides: tuple[Side, Side], stats: tuple[SideStats, SideStats]
    ) -> tuple[Tensor, Tensor]:
        """Mean and population std of ``ρ`` over the completion tokens of both sides.

        The mean comes from the sequence sums already computed; the second pass around it
        avoids the cancellation of ``E[x²] − E[x]²``.
        """
        with torch.no_grad():
            count = (stats[0].count.sum() + stats[1].count.sum()).clamp(min=1.0)
            mean_ratio = (stats[0].log_ratio.sum() + stats[1].log_ratio.sum()) / count
            squares = mean_ratio.new_zeros(())
            for side in sides:
                centred = side.policy - side.need("ref", by=self.name)
                centred = centred.sub_(mean_ratio).mul_(side.mask_float).reshape(-1)
                squares += torch.dot(centred, centred)
            return mean_ratio, (squares / count).sqrt()


@dataclass(frozen=True, kw_only=True, slots=True)
class TBPOQConfig(_TBPOParams):
    """Parameters of :class:`TBPOQ`."""

    name: ClassVar[str] = "tbpo_q"
    hidden_size: int
    """``H``, the size of the policy's last hidden state (the value head's input)."""
    value_weight: float = 0.1
    """Weight ≥ 0 of the value head's regression loss."""

    def check_params(self) -> None:
        size = self.hidden_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise LossConfigError(f"{self.name}.hidden_size must be a positive int, got {size!r}")
        check_number(self.name, "value_weight", self.value_weight, low=0.0)


class ValueHead(nn.Linear):
    """``V_φ``: the *detached* last hidden state ``[..., H]`` to the baseline ``b_t`` ``[...]``.

    Detached, so that the value regression trains this head and never the policy. Zero at
    the start. The trainer calls it inside the model's forward, at the real completion tokens
    only, and hands the loss ``[B, T]`` values (:attr:`PairLogps.chosen_value`): its cost is
    then ``H`` per token next to the LM head's ``H·V``, and no ``[B, T, H]`` copy is made.
    """

    def __init__(self, hidden_size: int) -> None:
        super().__init__(hidden_size, 1)
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, hidden: Tensor) -> Tensor:
        """``V_φ(sg(h))`` in the head's dtype, with gradient to ``φ`` only."""
        return super().forward(hidden.detach().to(self.weight.dtype)).squeeze(-1)


class TBPOQ(nn.Module):
    """TBPO-Q (arXiv 2605.12288, RECONSTRUCTION): a learned state baseline ``b_t = V_φ(h_t)``.

    ``V_φ`` (:class:`ValueHead`) is a linear head on the detached last hidden state, trained
    jointly by regressing to ``sg(β ρ_t)`` (MSE over every completion token, times
    ``value_weight``), so ``z_t`` is an advantage estimate. The baseline enters ``z`` detached:
    only the regression trains the head, which otherwise could separate the pair on its own
    and starve the policy of gradient. The head starts at zero, so the first step is dpo plus
    the regression.

    This loss has parameters: the trainer moves its :attr:`value_head` to the device, adds
    its parameters to the optimizer and saves its ``state_dict``
    (:func:`tokenpo.losses.trainable_module` finds it). Needs the reference log-probs and
    either ``chosen_value``/``rejected_value`` (the head applied by the caller, as the trainer
    does) or ``chosen_hidden``/``rejected_hidden`` (the head applied here).
    """

    name: ClassVar[str] = "tbpo_q"

    def __init__(self, config: TBPOQConfig) -> None:
        super().__init__()
        self.config = config
        """The loss parameters."""
        self.value_head = ValueHead(config.hidden_size)
        """``V_φ``: hidden state to baseline."""

    def baseline(self, side: Side) -> Tensor:
        """``b_t``, ``[B, T]``, in the side's compute dtype (with gradient to ``φ``): the given
        values, else the head applied to the given hidden states."""
        if side.value is not None:
            return side.value
        if side.hidden is None:
            field = f"{side.name}_value"
            raise InputError(
                f"{self.name} needs PairLogps.{field} or {side.name}_hidden", field=field
            )
        value: Tensor = self.value_head(side.hidden)
        return value.to(side.policy.dtype)

    def terms(self, batch: PairLogps, /) -> PairTerms:
        """Per-pair loss with the value regression as the batch term.

        One pass per side makes the residuals ``r_t = m_t (b_t − sg(β ρ_t))`` the regression
        squares; they also give the side score, since ``Σ_t m_t b_t = Σ_t r_t + β Σ_t m_t ρ_t``:
        ``Z = β Σ m ρ − sg(Σ m b) = −sg(Σ_t r_t)`` in value, with the gradient of ``β Σ m ρ``.
        """
        config = self.config
        sides, stats = config.sides_and_stats(batch)
        # The token log-ratios once per side, for the residual and the diff-margin metric.
        ratios = [side.policy.detach() - side.need("ref", by=self.name) for side in sides]
        stats = (
            dataclasses.replace(stats[0], token_log_ratio=ratios[0]),
            dataclasses.replace(stats[1], token_log_ratio=ratios[1]),
        )
        chosen_residual, rejected_residual, squares = _Residuals.apply(
            self.baseline(sides[0]),
            self.baseline(sides[1]),
            *ratios,
            sides[0].mask_float,
            sides[1].mask_float,
            config.beta,
        )
        chosen, rejected = (
            scaled - (scaled.detach() + residual.sum(-1))
            for scaled, residual in (
                (config.beta * stats[0].log_ratio, chosen_residual),
                (config.beta * stats[1].log_ratio, rejected_residual),
            )
        )
        tokens = (stats[0].count.sum() + stats[1].count.sum()).clamp(min=1.0)
        value_mse = squares / tokens
        return config.pair_terms(
            sides,
            stats,
            (chosen, rejected),
            metrics={"tbpo/value_mse": value_mse.detach()},
            batch_term=config.value_weight * value_mse,
        )

    def forward(self, batch: PairLogps) -> LossOutput:
        """The batch loss (preference plus value regression) and its metrics."""
        return finish(self.terms(batch), batch)


class _Residuals(torch.autograd.Function):
    """Both sides' ``r = m (b − β ρ)`` and the total ``Σ r²``; the gradient is one op per side,
    ``2 g r``. One node for both sides: at ``B·T = 32k`` on CPU a node's own cost is about
    that of a pass, and autograd's graph of the same formula runs three passes per side."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        chosen_baseline: Tensor,
        rejected_baseline: Tensor,
        chosen_ratio: Tensor,
        rejected_ratio: Tensor,
        chosen_mask: Tensor,
        rejected_mask: Tensor,
        beta: float,
    ) -> tuple[Tensor, Tensor, Tensor]:
        residuals = [
            torch.add(baseline, ratio, alpha=-beta).mul_(mask)
            for baseline, ratio, mask in (
                (chosen_baseline, chosen_ratio, chosen_mask),
                (rejected_baseline, rejected_ratio, rejected_mask),
            )
        ]
        squares = sum(torch.dot(r.flatten(), r.flatten()) for r in residuals)
        ctx.save_for_backward(*residuals)
        ctx.mark_non_differentiable(*residuals)
        ctx.set_materialize_grads(False)  # no zero gradients for the residuals
        return residuals[0], residuals[1], torch.as_tensor(squares)

    @staticmethod
    @once_differentiable
    def backward(
        ctx: FunctionCtx, _chosen: None, _rejected: None, grad_squares: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        if grad_squares is None:  # the squares did not reach the loss
            return (None,) * 7
        chosen, rejected = ctx.saved_tensors  # type: ignore[attr-defined]
        chosen_needed, rejected_needed = ctx.needs_input_grad[:2]  # type: ignore[attr-defined]
        scale = 2.0 * grad_squares
        return (
            chosen * scale if chosen_needed else None,
            rejected * scale if rejected_needed else None,
            *(None,) * 5,
        )
