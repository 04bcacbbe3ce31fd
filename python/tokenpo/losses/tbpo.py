# ruff: noqa: RUF002 -- formulas use the math notation of docs/losses.md
"""TBPO: token-level Bradley-Terry preference optimisation by Bregman ratio matching.

From the paper (Nguyen et al., "TokenRatio", arXiv 2605.12288: §4 and the appendix
"Implementation Details"). The chosen and the rejected completion are compared token by
token at the same position ``t ≤ T = min(|y_w|, |y_l|)``, with ``ρ = log π − log π_ref``::

    log R_t = β [(ρ^l_t − ρ^w_t) + log w_t]
    loss    = (1/T) Σ_{t≤T} ℓ_h(R_t),    ℓ_h(R) = h'(R) R − h(R) − h'(1/R)

``w_t`` corrects for comparing two tokens after two different prefixes; it depends on the
states only. TBPO-A estimates it from the policy, TBPO-Q learns it. Generators ``h``:

- ``sba`` (the paper's; λ ≥ 0, s > 0): ``h(R) = (R^{1+λ} − R) / (s λ (λ+1))``, so
  ``ℓ = R^{1+λ} / (s(1+λ)) − expm1(−λ log R) / (s λ) − 1 / (s(1+λ))``; at ``λ = 0`` it is
  ``(R + log R − 1) / s``. ``λ = 0, s = 1`` is KLIEP, ``λ = 1, s = 1`` is LSIF.
- ``logistic``: ``ℓ = log(1 + R)``, dpo's loss per token pair (half of ℓ_h for logistic
  regression's generator: the same minimiser, at dpo's scale).

``log R_t`` is clamped to ``[−ratio_clamp, ratio_clamp]`` before ``exp``, as in the authors'
code; beyond it a token pair gives no gradient.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from tokenpo.exceptions import InputError
from tokenpo.losses._base import PairLoss, PairTerms, finish, side_stats
from tokenpo.losses._ops import TokenSlopes, with_token_gradient
from tokenpo.losses.batch import LossOutput, PairLogps, Side
from tokenpo.losses.config import LossConfigError, check_choice, check_number
from tokenpo.losses.token import token_kl

__all__ = [
    "TBPOA",
    "TBPOQ",
    "Generator",
    "TBPOQConfig",
    "ValueHead",
    "token_ratio_loss_and_slope",
]

Generator = Literal["sba", "logistic"]
_GENERATORS: tuple[Generator, ...] = ("sba", "logistic")
# exp((1 + λ) · ratio_clamp) must stay finite in float32 (about e^88).
_EXP_LIMIT = 80.0


def token_ratio_loss_and_slope(
    generator: Generator, log_ratio: Tensor, *, lam: float, scale: float
) -> tuple[Tensor, Tensor]:
    """``ℓ_h`` and ``dℓ_h/d log R`` elementwise at ``log R = log_ratio`` (already clamped;
    see the module docstring), with one ``exp`` per term."""
    if generator == "logistic":
        return nn.functional.softplus(log_ratio), torch.sigmoid(log_ratio)
    if lam == 0.0:
        ratio = torch.exp(log_ratio)
        loss = (ratio + log_ratio).sub_(1.0).div_(scale)
        return loss, ratio.add_(1.0).div_(scale)
    grown = torch.exp((1.0 + lam) * log_ratio)
    shrunk = torch.exp(-lam * log_ratio)
    loss = (
        grown / (scale * (1.0 + lam)) - (shrunk - 1.0) / (scale * lam) - 1.0 / (scale * (1.0 + lam))
    )
    return loss, (grown + shrunk) / scale


@dataclass(frozen=True, slots=True)
class LogWeight:
    """``log w_t`` on the paired positions, ``[B, W]``, without gradient; for a learned
    weight, also the baselines ``(b^w, b^l)`` it came from (``[B, T_w]``, ``[B, T_l]``, with
    gradient) and its clamp's gradient gate (:func:`within`), ``[B, W]``."""

    value: Tensor
    baselines: tuple[Tensor, Tensor] | None = None
    open: Tensor | None = None


def paired_width(chosen: Side, rejected: Side) -> int:
    """``W``, the token width the two sides share: positions ``t < W`` hold the pairs."""
    return min(chosen.mask.shape[-1], rejected.mask.shape[-1])


def within(values: Tensor, bound: float) -> Tensor:
    """1.0 where ``|values| ≤ bound``, else 0.0: the gradient gate of a clamp to ``±bound``.

    Written as floats directly: on CPU a ``bool`` result and its use cost several times more
    than the comparison itself."""
    return torch.le(values.abs(), bound, out=torch.empty_like(values))


@dataclass(frozen=True, kw_only=True, slots=True)
class _TBPOParams:
    """Parameters shared by TBPO-A and TBPO-Q; the defaults are the paper's."""

    name: ClassVar[str]
    beta: float = 0.1
    """β > 0 in ``log R_t``."""
    generator: Generator = "sba"
    """The Bregman generator: ``sba`` (the paper's) or ``logistic`` (dpo per token)."""
    lam: float = 0.0
    """SBA's λ in [0, 1]: 0 weighs every token pair alike, larger λ the uncertain ones."""
    scale: float = 4.0
    """SBA's s > 0, a divisor of the loss."""
    ratio_clamp: float = 30.0
    """Bound on ``|log R_t|`` inside ``exp``, > 0."""

    def __post_init__(self) -> None:
        check_number(self.name, "beta", self.beta, low=0.0, low_open=True)
        check_choice(self.name, "generator", self.generator, _GENERATORS)
        check_number(self.name, "lam", self.lam, low=0.0, high=1.0)
        check_number(self.name, "scale", self.scale, low=0.0, low_open=True)
        check_number(self.name, "ratio_clamp", self.ratio_clamp, low=0.0, low_open=True)
        if (1.0 + self.lam) * self.ratio_clamp > _EXP_LIMIT:
            raise LossConfigError(
                f"{self.name}: (1 + lam) * ratio_clamp must be <= {_EXP_LIMIT:g} so that exp "
                f"stays finite, got {(1.0 + self.lam) * self.ratio_clamp:g}"
            )
        self.check_params()

    def check_params(self) -> None:
        """Validate the parameters a subclass adds; none by default."""

    def terms_for(self, sides: tuple[Side, Side], log_weight: LogWeight) -> PairTerms:
        """Per-pair ``(1/T) Σ_t ℓ_h(R_t)`` with ``log w_t = log_weight`` on the paired
        positions; the implicit rewards are dpo's ``β Σ_t ρ_t`` of each side; the metric
        ``tbpo/log_w`` is the mean ``|log w_t|``.

        Computed off the graph and attached to it through its gradient
        (:func:`~tokenpo.losses._ops.with_token_gradient`)."""
        chosen, rejected = sides
        width = paired_width(chosen, rejected)
        with torch.no_grad():
            # The token log-ratios once per side, for the loss and the diff-margin metric.
            chosen_ratio, rejected_ratio = (
                side.policy - side.need("ref", by=self.name) for side in sides
            )
            stats = (
                dataclasses.replace(
                    side_stats(chosen, by=self.name, grad=False), token_log_ratio=chosen_ratio
                ),
                dataclasses.replace(
                    side_stats(rejected, by=self.name, grad=False), token_log_ratio=rejected_ratio
                ),
            )
            log_r = rejected_ratio[:, :width] - chosen_ratio[:, :width]
            log_r.add_(log_weight.value).mul_(self.beta)
            bound = self.ratio_clamp
            inside = within(log_r, bound)
            log_r.clamp_(-bound, bound)
            token_loss, slope = token_ratio_loss_and_slope(
                self.generator, log_r, lam=self.lam, scale=self.scale
            )
            paired_float = chosen.mask_float[:, :width] * rejected.mask_float[:, :width]
            count = paired_float.sum(-1).clamp_(min=1.0)
            per_pair = torch.linalg.vecdot(token_loss, paired_float) / count
            mean_log_w = torch.linalg.vecdot(log_weight.value.abs(), paired_float) / count
            # d loss_i / d log R_t, where log R_t = beta [(rho^l - rho^w) + log w].
            token_slope = slope.mul_(paired_float).mul_(inside).mul_(self.beta / count[:, None])
            inputs, slopes = _token_inputs(sides, log_weight, token_slope)
        per_pair = with_token_gradient(per_pair, inputs, slopes)
        return PairTerms(
            per_pair=per_pair,
            chosen_reward=self.beta * stats[0].log_ratio,
            rejected_reward=self.beta * stats[1].log_ratio,
            chosen=stats[0],
            rejected=stats[1],
            sides=sides,
            metrics={"tbpo/log_w": mean_log_w},
        )


def _token_inputs(
    sides: tuple[Side, Side], log_weight: LogWeight, token_slope: Tensor
) -> tuple[list[Tensor], list[TokenSlopes]]:
    """What TBPO's per-pair loss is attached to, and how: with ``s_t = ∂L_i/∂log R_t``,
    ``∂L_i/∂ℓ^w_t = −s_t`` and ``∂L_i/∂ℓ^l_t = s_t``, and the same for a learned weight's
    baselines ``b^w``, ``b^l`` where their clamp is open."""
    ones = token_slope.new_ones(token_slope.shape[0])
    signs = (-ones, ones)
    attached = [
        (side.policy, _widened(token_slope, side), sign)
        for side, sign in zip(sides, signs, strict=True)
    ]
    if log_weight.baselines is not None:
        gated = token_slope if log_weight.open is None else token_slope * log_weight.open
        attached += [
            (baseline, _widened(gated, side), sign)
            for baseline, side, sign in zip(log_weight.baselines, sides, signs, strict=True)
        ]
    inputs = [target for target, _, _ in attached]
    return inputs, [TokenSlopes((row,), (sign,)) for _, row, sign in attached]


def _widened(row: Tensor, side: Side) -> Tensor:
    """``row`` ``[B, W]`` zero-padded to the width of ``side``."""
    extra = side.mask.shape[-1] - row.shape[-1]
    return nn.functional.pad(row, (0, extra)) if extra else row


@dataclass(frozen=True, kw_only=True, slots=True)
class TBPOA(_TBPOParams, PairLoss):
    """TBPO-A (arXiv 2605.12288): ``S = A_ref``, no learned parameters.

    ``log w_t = KL(s^l_t) − KL(s^w_t)`` with ``KL(s) = D_KL(π_ref(·|s) ‖ π_θ(·|s))`` over the
    full vocabulary, as in the authors' code; the paper's K3 estimator is an unbiased
    estimate of the same quantity from samples of ``π_ref``, which stored data do not hold
    (the completion's own token in their place overestimates it without bound). ``w_t`` is a
    plug-in estimate, held constant (detached); at the reference, ``w_t = 1``. Needs the
    reference log-probs and the policy and reference logits (a live reference, as tdpo).
    """

    name: ClassVar[str] = "tbpo_a"

    def terms(self, batch: PairLogps, /) -> PairTerms:
        sides = batch.sides()
        return self.terms_for(sides, LogWeight(self.log_weight(sides)))

    def log_weight(self, sides: tuple[Side, Side]) -> Tensor:
        """``log w_t = KL(s^l_t) − KL(s^w_t)`` on the paired positions, detached, ``[B, T]``."""
        width = paired_width(*sides)
        with torch.no_grad():
            chosen, rejected = (token_kl(side, by=self.name)[:, :width] for side in sides)
        return rejected - chosen


@dataclass(frozen=True, kw_only=True, slots=True)
class TBPOQConfig(_TBPOParams):
    """Parameters of :class:`TBPOQ`; the defaults are the paper's."""

    name: ClassVar[str] = "tbpo_q"
    hidden_size: int
    """``H``, the size of the policy's last hidden state (the head's input)."""
    head_width: int = 1024
    """Width of the baseline head's hidden layer."""
    head_lr: float = 1e-3
    """The baseline head's own learning rate (its AdamW parameter group)."""
    log_w_clamp: float = 10.0
    """Bound on ``|log w_t|``, > 0 (the authors' code): the head cannot explain a pair away."""

    def check_params(self) -> None:
        for field, value in (("hidden_size", self.hidden_size), ("head_width", self.head_width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LossConfigError(f"{self.name}.{field} must be a positive int, got {value!r}")
        check_number(self.name, "head_lr", self.head_lr, low=0.0, low_open=True)
        check_number(self.name, "log_w_clamp", self.log_w_clamp, low=0.0, low_open=True)


class ValueHead(nn.Module):
    """``b_φ``: the *detached* last hidden state ``[..., H]`` to ``log Z`` of the state ``[...]``
    (the soft value over β), a one-hidden-layer MLP as in the paper.

    Detached, so that the head never trains the policy. Its output layer starts at zero, so
    ``w_t = 1`` at the first step. The trainer calls it inside the model's forward at the
    real completion tokens only and hands the loss ``[B, T]`` values
    (:attr:`PairLogps.chosen_value`): no ``[B, T, H]`` copy is made.
    """

    def __init__(self, hidden_size: int, width: int = 1024, lr: float = 1e-3) -> None:
        super().__init__()
        self.lr = lr
        """The head's own learning rate: the trainer gives it an AdamW parameter group."""
        self.hidden = nn.Linear(hidden_size, width)
        self.out = nn.Linear(width, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, hidden: Tensor) -> Tensor:
        """``b_φ(sg(h))`` in the head's dtype, with gradient to ``φ`` only."""
        features = torch.relu(self.hidden(hidden.detach().to(self.out.weight.dtype)))
        value: Tensor = self.out(features)
        return value.squeeze(-1)


class TBPOQ(nn.Module):
    """TBPO-Q (arXiv 2605.12288): ``S = Q_ref``, a learned state baseline.

    ``log w_t = b_φ(s^l_t) − b_φ(s^w_t)``, clamped to ``±log_w_clamp``, with ``b_φ`` the
    :class:`ValueHead`. As in the authors' code, the head is trained by this same loss, with
    its own learning rate (``head_lr``; the trainer gives it its own parameter group).

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
        self.value_head = ValueHead(config.hidden_size, config.head_width, config.head_lr)
        """``b_φ``: hidden state to ``log Z``."""

    def baseline(self, side: Side) -> Tensor:
        """``b_φ`` at each token of ``side``, ``[B, T]``, in the side's compute dtype (with
        gradient to ``φ``): the given values, else the head applied to the hidden states."""
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
        """Per-pair loss; the head's gradient comes through ``log w``."""
        config = self.config
        sides = batch.sides()
        width = paired_width(*sides)
        baselines = (self.baseline(sides[0]), self.baseline(sides[1]))
        with torch.no_grad():
            raw = baselines[1][:, :width] - baselines[0][:, :width]
            bound = config.log_w_clamp
            log_weight = LogWeight(raw.clamp(-bound, bound), baselines, within(raw, bound))
        return config.terms_for(sides, log_weight)

    def forward(self, batch: PairLogps) -> LossOutput:
        """The batch loss and its metrics."""
        return finish(self.terms(batch), batch)
