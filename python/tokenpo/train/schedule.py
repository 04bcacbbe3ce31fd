"""Learning-rate schedules: linear warm-up, then constant, linear or cosine decay to a floor."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

__all__ = ["lr_factor"]


def lr_factor(
    kind: Literal["constant", "linear", "cosine"],
    *,
    warmup_steps: int,
    total_steps: int,
    min_lr_ratio: float,
) -> Callable[[int], float]:
    """The multiplier of the base learning rate at each step (for ``LambdaLR``): rises
    linearly over ``warmup_steps``, then stays (``constant``) or decays to ``min_lr_ratio``
    at ``total_steps`` (``linear``, ``cosine``)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if kind == "constant":
            return 1.0
        progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
        shape = 1.0 - progress if kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
        return min_lr_ratio + (1.0 - min_lr_ratio) * shape

    return factor
