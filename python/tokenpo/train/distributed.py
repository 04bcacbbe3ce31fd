"""Process group set-up and FSDP2 sharding.

Run under ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``)
or as a single plain process: without those variables the world is one rank and no process
group is created. NCCL on GPU, gloo on CPU.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

from tokenpo.exceptions import ConfigError

__all__ = ["World", "all_reduce_mean", "shard_model", "world"]


@dataclass(frozen=True, slots=True)
class World:
    """Who this process is."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that prints and writes metrics."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether a process group is in use."""
        return self.world_size > 1


@contextmanager
def world(device: Literal["auto", "cpu", "cuda"] = "auto") -> Iterator[World]:
    """Joins the process group torchrun describes (if any) and leaves it on exit.

    Whatever used the group (an FSDP model) must be out of reach by the end of the ``with``
    block: on leaving, garbage is collected before the group is destroyed. FSDP's gloo work
    freed only at interpreter exit, after the group is gone, aborted a rank about one exit in
    eight ("terminate called without an active exception").
    """
    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device is 'cuda' but no CUDA device is available")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        target = torch.device("cuda", local_rank)
    else:
        target = torch.device("cpu")
    joined = world_size > 1 and not dist.is_initialized()
    if joined:
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo", device_id=target if use_cuda else None
        )
    try:
        yield World(rank=rank, world_size=world_size, local_rank=local_rank, device=target)
    finally:
        if joined:
            gc.collect()
            dist.destroy_process_group()


def shard_model(
    root: nn.Module,
    blocks: nn.ModuleList,
    *,
    mixed_precision: Literal["none", "bf16"],
    backend: str | None,
) -> None:
    """FSDP2: ``fully_shard`` each block bottom-up, then ``root`` (which then owns the
    remaining parameters: embeddings, final norm, head).

    On gloo, gradient reduction is forced to sums with an explicit division: gloo's
    reduce-scatter has no native average, and FSDP2 silently summed instead of averaging
    (pytorch#162338).

    Raises:
        ConfigError: there are no blocks to shard.
    """
    if len(blocks) == 0:
        raise ConfigError("the model has no decoder blocks to shard (model.get_decoder().layers)")
    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if mixed_precision == "bf16"
        else MixedPrecisionPolicy()
    )
    for block in blocks:
        fully_shard(block, mp_policy=policy)
    fully_shard(root, mp_policy=policy)
    if backend == "gloo":
        for module in root.modules():
            if isinstance(module, FSDPModule):
                module.set_force_sum_reduction_for_comms(True)


def all_reduce_mean(values: dict[str, float], world_: World) -> dict[str, float]:
    """The mean of each value over the ranks (one collective for all of them)."""
    if not world_.distributed or not values:
        return values
    names = sorted(values)
    stacked = torch.tensor([values[name] for name in names], dtype=torch.float64)
    stacked = stacked.to(world_.device)
    dist.all_reduce(stacked)
    totals = stacked.cpu().tolist()
    return {name: total / world_.world_size for name, total in zip(names, totals, strict=True)}
