"""The demo's methods, in one table, and the trainer overrides each one becomes.

Every method trains from the SFT model on the confusion-aware pairs with the reference
log-probs stored by ``tokenpo ref-logps``, for the same number of steps.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from tokenpo.data.sampler import Pacing
from tokenpo.exceptions import ConfigError

__all__ = ["METHODS", "Method", "TrainSettings", "method", "method_names", "method_overrides"]

_AUTHORS_TABPO = MappingProxyType({"beta": 0.5, "tau": 0.66, "barrier_weight": 0.5})


@dataclass(frozen=True, kw_only=True, slots=True)
class Method:
    """One row of the comparison."""

    name: str
    """The name in the table, the stage names and the run directories."""
    loss: str
    """``loss.name`` of the trainer."""
    params: Mapping[str, Any] = field(default_factory=dict)
    """The loss's parameters (``loss.<key>``)."""
    lr: float = 5e-5
    """The peak learning rate (the issue's probe: 2e-5 to 5e-5 for the DPO family)."""
    pacing: Pacing = "none"
    """The curriculum's pacing (``curriculum.pacing``)."""
    description: str = ""
    """One line for ``--help`` and the README."""


METHODS: tuple[Method, ...] = (
    Method(name="dpo", loss="dpo", params={"beta": 0.1}, description="DPO (sigmoid)"),
    Method(
        name="tabpo",
        loss="tabpo",
        params=dict(_AUTHORS_TABPO),
        description="TAB-PO, the authors' defaults (beta 0.5, tau 0.66, barrier 0.5)",
    ),
    Method(
        name="tbpo_a",
        loss="tbpo_a",
        description="TBPO-A, the paper's defaults (K3 state weights)",
    ),
    Method(
        name="tbpo_q",
        loss="tbpo_q",
        description="TBPO-Q, the paper's defaults (learned baseline)",
    ),
    Method(
        name="mixdpo",
        loss="mixdpo",
        params={"base": "dpo"},
        description="MixDPO: hard pairs routed to SFT, base dpo",
    ),
    Method(
        name="tabpo_cr",
        loss="mixdpo",
        params={"base": "tabpo", "base_params": dict(_AUTHORS_TABPO)},
        pacing="linear",
        description="TAB-PO + linear curriculum + MixDPO routing",
    ),
    Method(name="sft_continued", loss="sft", description="control: SFT continued on the gold"),
    Method(name="rpo", loss="rpo", description="control: DPO + NLL on the chosen"),
)
"""Every method the demo compares, in the report's order."""


def method_names() -> tuple[str, ...]:
    """The names of :data:`METHODS`, in order."""
    return tuple(item.name for item in METHODS)


def method(name: str) -> Method:
    """The method called ``name``; a :class:`ConfigError` listing the names if none is."""
    for item in METHODS:
        if item.name == name:
            return item
    raise ConfigError(f"method: no method {name!r}; methods: {', '.join(method_names())}")


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainSettings:
    """What every method's run shares."""

    model: Path
    """The SFT model directory (``RUN_DIR/final``): the policy's start and the reference."""
    shards: Path
    """Prepared training pairs with stored reference log-probs."""
    val_shards: Path | None
    """Prepared validation pairs (chosen log-prob drift); None: no validation."""
    tokenizer: Path
    """The task's ``tokenizer.json``."""
    steps: int = 60
    """Optimizer steps."""
    batch_size: int = 16
    """Pairs per step."""
    val_every: int = 30
    """Validate every this many steps."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``run.device``."""

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "val_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")


def _toml_value(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{key} = {_toml_value(item)}" for key, item in value.items()) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def method_overrides(
    item: Method, settings: TrainSettings, *, out_dir: Path, seed: int
) -> list[str]:
    """The ``--set`` overrides of ``tokenpo train`` that run ``item`` (no config file)."""
    overrides = {
        "run.out_dir": str(out_dir),
        "run.seed": seed,
        "run.device": settings.device,
        "model.source": str(settings.model),
        "model.reference": str(settings.model),
        "data.shards": str(settings.shards),
        "data.batch_size": settings.batch_size,
        "data.use_stored_ref": item.loss != "sft",
        "data.tokenizer": str(settings.tokenizer),
        "loss.name": item.loss,
        **{f"loss.{key}": value for key, value in item.params.items()},
        "optim.lr": item.lr,
        "schedule.kind": "constant",
        "schedule.max_steps": settings.steps,
        "curriculum.pacing": item.pacing,
        "checkpoint.resume": True,
        "logging.val_every": settings.val_every if settings.val_shards is not None else 0,
    }
    if settings.val_shards is not None:
        overrides["data.val_shards"] = str(settings.val_shards)
    return [f"{key}={_toml_value(value)}" for key, value in overrides.items()]
