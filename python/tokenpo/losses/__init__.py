"""The loss library: DPO's family and the token-level losses, as pure functions of tensors.

Build a loss by name and call it on a :class:`PairLogps`::

    loss_fn = tokenpo.losses.build("tabpo", beta=0.5)
    out = loss_fn(batch)            # LossOutput(loss=..., metrics={...})
    out.loss.backward()

Every formula, its source and how it is tested: ``docs/losses.md``.
"""

from tokenpo.losses.batch import LossOutput, PairLogps, Side
from tokenpo.losses.config import LossConfigError
from tokenpo.losses.mixdpo import MixDPO
from tokenpo.losses.registry import Loss, available, build, trainable_module
from tokenpo.losses.sequence import CDPO, DPO, IPO, RPO, Hinge, RobustDPO, SimPO
from tokenpo.losses.tabpo import TABPO
from tokenpo.losses.tbpo import TBPOA, TBPOQ, TBPOQConfig, ValueHead
from tokenpo.losses.token import TDPO, TIS, ConfPO

__all__ = [
    "CDPO",
    "DPO",
    "IPO",
    "RPO",
    "TABPO",
    "TBPOA",
    "TBPOQ",
    "TDPO",
    "TIS",
    "ConfPO",
    "Hinge",
    "Loss",
    "LossConfigError",
    "LossOutput",
    "MixDPO",
    "PairLogps",
    "RobustDPO",
    "Side",
    "SimPO",
    "TBPOQConfig",
    "ValueHead",
    "available",
    "build",
    "trainable_module",
]
