"""Checkpoints a killed run can resume from, written so a crash never leaves a bad one behind.

Layout of ``RUN_DIR/checkpoints/``::

    step-000012/          model and optimizer, sharded (torch.distributed.checkpoint),
                          plus trainer-rank<R>.pt: step, scheduler, sampler, RNG of each rank
    latest                the name of the newest complete checkpoint

Every rank writes into ``step-N.partial``; after a barrier rank 0 renames it to ``step-N`` and
only then moves ``latest`` (temporary file + rename). A crash before that leaves ``latest`` on
the previous checkpoint. A step is saved once: the directory ``latest`` names is never written
over. The last ``keep`` checkpoints are kept.
"""

from __future__ import annotations

import re
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.checkpoint.state_dict_loader import load as load_sharded
from torch.distributed.checkpoint.state_dict_saver import save as save_sharded

from tokenpo.exceptions import InputError
from tokenpo.train.distributed import World

__all__ = [
    "Checkpointer",
    "complete_checkpoints",
    "latest_checkpoint",
    "restore_rng",
    "rng_state",
    "single_process_quiet",
]

_STEP_DIR = re.compile(r"^step-(\d{6,})$")


@dataclass(frozen=True, slots=True)
class Checkpointer:
    """Saves and restores training state under ``directory``."""

    directory: Path
    keep: int
    world: World

    def save(
        self,
        step: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        trainer_state: dict[str, Any],
    ) -> Path:
        """Writes checkpoint ``step``: the sharded weights of ``model`` (every trained module
        under one root), its optimizer, and this rank's ``trainer_state`` (plain Python objects
        and CPU tensors). Does nothing when ``latest`` already names step ``step``: the run
        resumed from it, or stopped early right after a periodic save."""
        final = self.directory / f"step-{step:06d}"
        if self.latest() == final:
            return final
        partial = final.with_name(final.name + ".partial")
        if self.world.is_main:
            shutil.rmtree(partial, ignore_errors=True)
        self._barrier()
        with single_process_quiet():
            save_sharded(
                _sharded_state(model, optimizer),
                checkpoint_id=partial,
                no_dist=not self.world.distributed,
            )
        torch.save(trainer_state, partial / f"trainer-rank{self.world.rank}.pt")
        self._barrier()
        if self.world.is_main:
            # Not the checkpoint ``latest`` names (see above): left by a run killed before it
            # moved ``latest``, so deleting it first cannot leave ``latest`` dangling.
            shutil.rmtree(final, ignore_errors=True)
            partial.rename(final)
            _write_atomically(self.directory / "latest", final.name)
            self._prune(final)
        self._barrier()
        return final

    def latest(self) -> Path | None:
        """The newest complete checkpoint, or ``None``."""
        return latest_checkpoint(self.directory)

    def load(
        self, path: Path, model: nn.Module, optimizer: torch.optim.Optimizer
    ) -> dict[str, Any]:
        """Restores ``model`` and ``optimizer`` from ``path``; returns this rank's trainer
        state.

        Raises:
            InputError: the checkpoint was written by a run with another number of ranks
                (raised on every rank, before any collective).
        """
        # One trainer file per rank records the world size, the same for every rank to read:
        # a rank that alone found its file missing raised while the others entered the load.
        saved = len(list(path.glob("trainer-rank*.pt")))
        if saved != self.world.world_size:
            raise InputError(
                f"{path}: written by a run of {saved} rank(s), this one has "
                f"{self.world.world_size}; resume with {saved}",
                file=str(path),
            )
        own = path / f"trainer-rank{self.world.rank}.pt"
        state = _sharded_state(model, optimizer)
        with single_process_quiet():
            load_sharded(state, checkpoint_id=path, no_dist=not self.world.distributed)
        set_state_dict(
            model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"]
        )
        trainer_state: dict[str, Any] = torch.load(own, weights_only=False)
        return trainer_state

    def _prune(self, newest: Path) -> None:
        steps = complete_checkpoints(self.directory)
        for path in steps[: max(len(steps) - self.keep, 0)]:
            if path != newest:
                shutil.rmtree(path)

    def _barrier(self) -> None:
        if self.world.distributed:
            dist.barrier()


def latest_checkpoint(directory: Path) -> Path | None:
    """The checkpoint ``directory/latest`` names, or ``None`` when there is none yet.

    Raises:
        InputError: ``latest`` names a checkpoint that does not exist.
    """
    pointer = directory / "latest"
    if not pointer.is_file():
        return None
    path = directory / pointer.read_text().strip()
    if not path.is_dir():
        raise InputError(f"{pointer} names {path.name}, which does not exist", file=str(pointer))
    return path


def complete_checkpoints(directory: Path) -> list[Path]:
    """The complete checkpoints in ``directory`` (``step-N``, not ``step-N.partial``), oldest
    first."""
    return sorted(
        (path for path in directory.iterdir() if _STEP_DIR.match(path.name)),
        key=lambda path: int(path.name.removeprefix("step-")),
    )


def rng_state(device: torch.device) -> dict[str, Any]:
    """The random states a resumed run restores: the CPU generator's, and on a GPU that of
    this rank's device only (every visible device's would touch, and create a context on,
    the other ranks' GPUs)."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return {"torch_rng": torch.get_rng_state(), "cuda_rng": cuda}


def restore_rng(state: dict[str, Any], device: torch.device) -> None:
    """Restores what :func:`rng_state` saved in ``state`` on ``device``."""
    torch.set_rng_state(state["torch_rng"])
    cuda = state["cuda_rng"]
    if isinstance(cuda, list):  # older checkpoints hold every visible device's
        cuda = cuda[device.index] if cuda else None
    if cuda is not None and device.type == "cuda":
        torch.cuda.set_rng_state(cuda, device)


def _sharded_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """``{"model": ..., "optimizer": ...}`` as DTensor-aware state dicts (each rank holds and
    writes its own shards)."""
    model_state, optimizer_state = get_state_dict(model, optimizer)
    return {"model": model_state, "optimizer": optimizer_state}


@contextmanager
def single_process_quiet() -> Iterator[None]:
    """Silences DCP's warning that it runs without a process group: that is intended."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    temporary.replace(path)
