"""The error a bad loss name or parameter raises, and the checks each loss config runs.

Every loss config is a frozen ``kw_only`` dataclass; its ``__post_init__`` calls these helpers
so that a bad value fails when the loss is built, with the parameter named, not mid-training.
"""

from __future__ import annotations

import math
from collections.abc import Collection

from tokenpo.exceptions import TokenpoError

__all__ = ["LossConfigError", "check_bool", "check_choice", "check_number"]


class LossConfigError(TokenpoError, ValueError):
    """A loss name or parameter that tokenpo does not know, or a value it cannot use."""


def check_number(
    loss: str,
    field: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Check that ``value`` is a finite real number in the given range and return it.

    Raises:
        LossConfigError: naming ``loss.field``, the range and the value found.
    """
    # bool is an int subclass; `beta=True` is a typo, not a number.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LossConfigError(f"{loss}.{field} must be a number, got {value!r}")
    number = float(value)
    below = low is not None and (number <= low if low_open else number < low)
    above = high is not None and (number >= high if high_open else number > high)
    if not math.isfinite(number) or below or above:
        lo = "(-inf" if low is None else ("(" if low_open else "[") + f"{low:g}"
        hi = "inf)" if high is None else f"{high:g}" + (")" if high_open else "]")
        raise LossConfigError(f"{loss}.{field} must lie in {lo}, {hi}, got {value!r}")
    return number


def check_choice(loss: str, field: str, value: object, choices: Collection[str]) -> None:
    """Check that ``value`` is one of ``choices``.

    Raises:
        LossConfigError: naming ``loss.field`` and listing the valid choices.
    """
    if value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise LossConfigError(f"{loss}.{field} must be one of {valid}, got {value!r}")


def check_bool(loss: str, field: str, value: object) -> None:
    """Check that ``value`` is a bool (not merely truthy).

    Raises:
        LossConfigError: naming ``loss.field`` and the value found.
    """
    if not isinstance(value, bool):
        raise LossConfigError(f"{loss}.{field} must be True or False, got {value!r}")
