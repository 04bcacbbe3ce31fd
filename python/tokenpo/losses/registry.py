"""Building losses by name: what the trainer's ``loss = {name, params}`` config resolves to."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Protocol

from tokenpo.losses.batch import LossOutput, PairLogps
from tokenpo.losses.config import LossConfigError
from tokenpo.losses.mixdpo import MixDPO
from tokenpo.losses.sequence import CDPO, DPO, IPO, RPO, Hinge, RobustDPO, SimPO
from tokenpo.losses.tabpo import TABPO
from tokenpo.losses.tbpo import TBPOA, TBPOQ, TBPOQConfig, ValueHead
from tokenpo.losses.token import TDPO, TIS, ConfPO

__all__ = ["Loss", "available", "build", "trainable_module"]


class Loss(Protocol):
    """A built loss: maps a batch to its loss and metrics."""

    def __call__(self, batch: PairLogps, /) -> LossOutput:
        """The batch loss and its metrics."""
        ...


# Name -> the config dataclass whose fields are the loss's parameters.
_CONFIGS: dict[str, type[Any]] = {
    "dpo": DPO,
    "cdpo": CDPO,
    "robust": RobustDPO,
    "hinge": Hinge,
    "ipo": IPO,
    "simpo": SimPO,
    "rpo": RPO,
    "tdpo": TDPO,
    "tis": TIS,
    "confpo": ConfPO,
    "tabpo": TABPO,
    "tbpo_q": TBPOQConfig,
    "tbpo_a": TBPOA,
}
_MIXDPO_PARAMS = ("base", "base_params", "threshold", "sft_weight")


def available() -> tuple[str, ...]:
    """The names :func:`build` accepts."""
    return (*_CONFIGS, "mixdpo")


def build(name: str, /, **params: Any) -> Loss:
    """Build the loss called ``name`` with ``params`` (the config fields; defaults otherwise).

    ``mixdpo`` takes ``base`` (a name, default ``"dpo"``), ``base_params`` (a mapping passed to
    the base), ``threshold`` and ``sft_weight``. ``tbpo_q`` returns an ``nn.Module`` with
    trainable parameters; see :func:`trainable_module`.

    Raises:
        LossConfigError: the name is unknown (the message lists the valid names), a parameter
            is unknown or missing (the message lists the valid ones), or a value is invalid.
    """
    if name == "mixdpo":
        return _build_mixdpo(params)
    config = _CONFIGS.get(name)
    if config is None:
        raise LossConfigError(f"unknown loss {name!r}; available: {', '.join(available())}")
    _check_params(name, _param_names(config), _required_params(config), params)
    built = config(**params)
    return TBPOQ(built) if name == "tbpo_q" else built


def trainable_module(loss: Loss) -> ValueHead | None:
    """The module that holds ``loss``'s trainable parameters, or ``None`` when it has none.

    The trainer moves it to the device (and wraps it like the model), adds its parameters to
    the optimizer and checkpoints its ``state_dict``. Only tbpo_q (alone or as mixdpo's base)
    has one: its :class:`~tokenpo.losses.tbpo.ValueHead`, which the trainer also calls inside
    the model's forward.
    """
    owner = loss.base if isinstance(loss, MixDPO) else loss
    return owner.value_head if isinstance(owner, TBPOQ) else None


def _build_mixdpo(params: dict[str, Any]) -> MixDPO:
    _check_params("mixdpo", _MIXDPO_PARAMS, (), params)
    base_name = params.pop("base", "dpo")
    base_params = params.pop("base_params", {})
    if base_name == "mixdpo":
        raise LossConfigError("mixdpo.base cannot itself be mixdpo")
    if not isinstance(base_params, Mapping):
        raise LossConfigError(f"mixdpo.base_params must be a mapping, got {base_params!r}")
    base = build(str(base_name), **base_params)
    return MixDPO(base=base, **params)  # type: ignore[arg-type]


def _param_names(config: type[Any]) -> tuple[str, ...]:
    return tuple(field.name for field in dataclasses.fields(config))


def _required_params(config: type[Any]) -> tuple[str, ...]:
    return tuple(
        field.name
        for field in dataclasses.fields(config)
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
    )


def _check_params(
    name: str, valid: tuple[str, ...], required: tuple[str, ...], params: Mapping[str, Any]
) -> None:
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise LossConfigError(
            f"{name} got unknown parameter(s) {', '.join(unknown)}; valid: {', '.join(valid)}"
        )
    missing = [param for param in required if param not in params]
    if missing:
        raise LossConfigError(f"{name} needs parameter(s) {', '.join(missing)}")
