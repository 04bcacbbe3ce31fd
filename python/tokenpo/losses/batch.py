"""What every loss takes and returns: a batch of preference pairs as per-token tensors.

A batch holds ``B`` pairs. The chosen side is padded to ``T_w`` completion tokens and the
rejected side to ``T_l`` (the collator usually pads both to one ``T``). Prompt tokens are not
in these tensors. Padding entries may hold any *finite* value: losses multiply them by 0.
Shapes are checked when a :class:`PairLogps` is built; values are not, so building one never
synchronises with the GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from tokenpo.exceptions import InputError

__all__ = ["LossOutput", "PairLogps", "Side", "float_mask"]

SideName = Literal["chosen", "rejected"]
Part = Literal["ref", "weight", "diff", "policy_logits", "ref_logits", "hidden", "value"]

# The PairLogps field behind each part of a side, chosen then rejected.
_FIELD_OF_PART: dict[Part, tuple[str, str]] = {
    "ref": ("ref_chosen", "ref_rejected"),
    "weight": ("chosen_weight", "rejected_weight"),
    "diff": ("chosen_diff", "rejected_diff"),
    "policy_logits": ("policy_chosen_logits", "policy_rejected_logits"),
    "ref_logits": ("ref_chosen_logits", "ref_rejected_logits"),
    "hidden": ("chosen_hidden", "rejected_hidden"),
    "value": ("chosen_value", "rejected_value"),
}


@dataclass(frozen=True, kw_only=True, slots=True)
class PairLogps:
    """Per-token log-probabilities and masks of ``B`` preference pairs.

    Every optional field comes in a chosen/rejected couple: give both or neither. Losses say
    which optional fields they need and raise :class:`~tokenpo.exceptions.InputError` naming
    the field when one is missing.

    Raises:
        InputError: a tensor has the wrong rank, shape, dtype or device (the message names
            the field and gives the expected and the found shape).
    """

    policy_chosen: Tensor
    """Policy log-prob of each chosen completion token, ``[B, T_w]``, floating."""
    policy_rejected: Tensor
    """Policy log-prob of each rejected completion token, ``[B, T_l]``, floating."""
    chosen_mask: Tensor
    """``True`` on real chosen completion tokens, ``False`` on padding, ``[B, T_w]``, bool."""
    rejected_mask: Tensor
    """``True`` on real rejected completion tokens, ``False`` on padding, ``[B, T_l]``, bool."""
    ref_chosen: Tensor | None = None
    """Reference log-prob of each chosen token, ``[B, T_w]``; reference-free losses skip it."""
    ref_rejected: Tensor | None = None
    """Reference log-prob of each rejected token, ``[B, T_l]``."""
    chosen_weight: Tensor | None = None
    """Token importance of the chosen side from prep (mean 1 over the completion), ``[B, T_w]``."""
    rejected_weight: Tensor | None = None
    """Token importance of the rejected side from prep, ``[B, T_l]``."""
    chosen_diff: Tensor | None = None
    """``True`` where a chosen token lies outside the LCS with the rejected one, ``[B, T_w]``."""
    rejected_diff: Tensor | None = None
    """``True`` where a rejected token lies outside the LCS with the chosen one, ``[B, T_l]``."""
    difficulty: Tensor | None = None
    """Pair difficulty in ``[0, 1]`` from prep (0 easy, 1 hard), ``[B]``; used by mixdpo."""
    pair_weight: Tensor | None = None
    """Non-negative weight of each pair in the batch average, ``[B]``; ``None`` means 1."""
    policy_chosen_logits: Tensor | None = None
    """Policy logits (or log-softmax) over the vocabulary at each chosen token, ``[B, T_w, V]``."""
    policy_rejected_logits: Tensor | None = None
    """Policy logits (or log-softmax) at each rejected token, ``[B, T_l, V]``."""
    ref_chosen_logits: Tensor | None = None
    """Reference logits (or log-softmax) at each chosen token, ``[B, T_w, V]``; tdpo needs it."""
    ref_rejected_logits: Tensor | None = None
    """Reference logits (or log-softmax) at each rejected token, ``[B, T_l, V]``."""
    chosen_hidden: Tensor | None = None
    """Policy last hidden state at each chosen token, ``[B, T_w, H]``; tbpo_q needs it."""
    rejected_hidden: Tensor | None = None
    """Policy last hidden state at each rejected token, ``[B, T_l, H]``."""
    chosen_value: Tensor | None = None
    """tbpo_q's baseline ``V_φ(h_t)`` at each chosen token, ``[B, T_w]``, from its value head
    applied by the caller (the trainer does, inside the model's forward); tbpo_q then leaves
    ``chosen_hidden`` unread."""
    rejected_value: Tensor | None = None
    """tbpo_q's baseline at each rejected token, ``[B, T_l]``."""

    def __post_init__(self) -> None:
        _check_shapes(self)

    @property
    def batch_size(self) -> int:
        """``B``, the number of pairs."""
        return self.policy_chosen.shape[0]

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype losses compute in: float32 at least, float64 stays float64."""
        return torch.promote_types(self.policy_chosen.dtype, torch.float32)

    def side(self, name: SideName) -> Side:
        """The chosen or the rejected half of the batch, floats cast to :attr:`compute_dtype`."""
        index = 0 if name == "chosen" else 1
        dtype = self.compute_dtype

        def part(which: Part) -> Tensor | None:
            value: Tensor | None = getattr(self, _FIELD_OF_PART[which][index])
            if value is None or not value.is_floating_point() or which == "hidden":
                return value
            return value.to(dtype)

        policy = self.policy_chosen if name == "chosen" else self.policy_rejected
        mask = self.chosen_mask if name == "chosen" else self.rejected_mask
        return Side(
            name=name,
            policy=policy.to(dtype),
            mask=mask,
            mask_float=float_mask(mask, dtype),
            ref=part("ref"),
            weight=part("weight"),
            diff=part("diff"),
            policy_logits=part("policy_logits"),
            ref_logits=part("ref_logits"),
            hidden=part("hidden"),
            value=part("value"),
        )

    def sides(self) -> tuple[Side, Side]:
        """``(chosen, rejected)``, see :meth:`side`."""
        return self.side("chosen"), self.side("rejected")


@dataclass(frozen=True, kw_only=True, slots=True)
class Side:
    """One side (chosen or rejected) of a :class:`PairLogps`, for code that treats both alike."""

    name: SideName
    """Which side this is."""
    policy: Tensor
    """Policy token log-probs, ``[B, T]``."""
    mask: Tensor
    """Completion-token mask, ``[B, T]``, bool."""
    mask_float: Tensor
    """The same mask as 0/1 in the compute dtype: masked sums multiply by it (much cheaper than
    ``torch.where`` on CPU), so padding entries must be finite."""
    ref: Tensor | None
    """Reference token log-probs, ``[B, T]``."""
    weight: Tensor | None
    """Token importance weights, ``[B, T]``."""
    diff: Tensor | None
    """Diff mask, ``[B, T]``, bool."""
    policy_logits: Tensor | None
    """Policy logits over the vocabulary, ``[B, T, V]``."""
    ref_logits: Tensor | None
    """Reference logits over the vocabulary, ``[B, T, V]``."""
    hidden: Tensor | None
    """Policy last hidden states, ``[B, T, H]``, in their own dtype."""
    value: Tensor | None
    """tbpo_q's value-head baseline, ``[B, T]``."""

    def need(self, part: Part, *, by: str) -> Tensor:
        """The optional ``part`` of this side.

        Raises:
            InputError: it is ``None``; the message names the :class:`PairLogps` field and the
                loss ``by`` that needs it.
        """
        value: Tensor | None = getattr(self, part)
        if value is None:
            field = _FIELD_OF_PART[part][0 if self.name == "chosen" else 1]
            raise InputError(f"{by} needs PairLogps.{field}, which is None", field=field)
        return value


@dataclass(frozen=True, kw_only=True, slots=True)
class LossOutput:
    """What a loss returns."""

    loss: Tensor
    """The scalar to call ``backward()`` on, in :attr:`PairLogps.compute_dtype`."""
    metrics: dict[str, Tensor]
    """Detached scalars to log, keyed like TRL's (``rewards/chosen``, ``logps/rejected``, ...)."""


def float_mask(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """A bool mask as 0/1 in ``dtype``, through a ``uint8`` view of the same bytes.

    On CPU, converting from ``uint8`` is vectorised and converting from ``bool`` is not: at
    ``[64, 512]`` the view makes it about four times faster, with the same values.
    """
    return mask.view(torch.uint8).to(dtype)


def _check_shapes(batch: PairLogps) -> None:
    """Check ranks, shapes, dtypes and devices of every field against ``policy_*``."""
    chosen, rejected = batch.policy_chosen, batch.policy_rejected
    _check_tensor("policy_chosen", chosen, rank=2, kind="float")
    _check_tensor("policy_rejected", rejected, rank=2, kind="float")
    size = chosen.shape[0]
    if rejected.shape[0] != size:
        raise _shape_error("policy_rejected", [size, "T_l"], rejected, "B as policy_chosen")
    device = chosen.device
    for name, expected, kind in _expected_shapes(batch):
        value: Tensor | None = getattr(batch, name)
        if value is None:
            continue
        _check_tensor(name, value, rank=len(expected), kind=kind)
        if value.device != device:
            raise InputError(
                f"PairLogps.{name} is on {value.device}, policy_chosen on {device}", field=name
            )
        if any(e is not None and e != f for e, f in zip(expected, value.shape, strict=True)):
            labels: list[int | str] = ["*" if e is None else e for e in expected]
            raise _shape_error(name, labels, value, "B and T from policy_chosen/policy_rejected")
    for first, second in _FIELD_OF_PART.values():
        if (getattr(batch, first) is None) != (getattr(batch, second) is None):
            given, missing = (
                (first, second) if getattr(batch, first) is not None else (second, first)
            )
            raise InputError(
                f"PairLogps.{given} is given but {missing} is None; give both or neither",
                field=missing,
            )
    # The vocabulary (and hidden) size must agree across policy, reference and sides.
    _check_same_last_dim(batch, "policy_chosen_logits", "ref_chosen_logits")
    _check_same_last_dim(batch, "policy_rejected_logits", "ref_rejected_logits")
    _check_same_last_dim(batch, "policy_chosen_logits", "policy_rejected_logits")
    _check_same_last_dim(batch, "chosen_hidden", "rejected_hidden")


def _expected_shapes(batch: PairLogps) -> list[tuple[str, list[int | None], str]]:
    """Each optional field with its expected shape (``None``: any size) and dtype kind."""
    size, t_w = batch.policy_chosen.shape
    t_l = batch.policy_rejected.shape[1]
    # Field pattern, trailing dimensions (None: any size) and dtype kind.
    per_side: list[tuple[str, list[int | None], str]] = [
        ("{}_mask", [], "bool"),
        ("ref_{}", [], "float"),
        ("{}_weight", [], "float"),
        ("{}_diff", [], "bool"),
        ("policy_{}_logits", [None], "float"),
        ("ref_{}_logits", [None], "float"),
        ("{}_hidden", [None], "float"),
        ("{}_value", [], "float"),
    ]
    shapes: list[tuple[str, list[int | None], str]] = []
    for pattern, tail, kind in per_side:
        shapes.append((pattern.format("chosen"), [size, t_w, *tail], kind))
        shapes.append((pattern.format("rejected"), [size, t_l, *tail], kind))
    shapes.append(("difficulty", [size], "float"))
    shapes.append(("pair_weight", [size], "float"))
    return shapes


def _check_tensor(name: str, value: object, *, rank: int, kind: str) -> None:
    if not isinstance(value, Tensor):
        raise InputError(f"PairLogps.{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dim() != rank:
        raise InputError(
            f"PairLogps.{name} must have {rank} dimensions, found shape {list(value.shape)}",
            field=name,
        )
    if kind == "bool" and value.dtype != torch.bool:
        raise InputError(f"PairLogps.{name} must be bool, found {value.dtype}", field=name)
    if kind == "float" and not value.is_floating_point():
        raise InputError(f"PairLogps.{name} must be floating, found {value.dtype}", field=name)


def _check_same_last_dim(batch: PairLogps, first: str, second: str) -> None:
    a: Tensor | None = getattr(batch, first)
    b: Tensor | None = getattr(batch, second)
    if a is not None and b is not None and a.shape[-1] != b.shape[-1]:
        raise InputError(
            f"PairLogps.{second}: expected last dimension {a.shape[-1]} (as {first}), "
            f"found shape {list(b.shape)}",
            field=second,
        )


def _shape_error(name: str, expected: list[int | str], found: Tensor, why: str) -> InputError:
    return InputError(
        f"PairLogps.{name}: expected shape {expected} ({why}), found {list(found.shape)}",
        field=name,
    )
