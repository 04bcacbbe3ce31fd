"""Checkpoints a killed run can resume from, written so a crash never leaves a bad one behind.

Layout of ``RUN_DIR/checkpoints/``::

    step-000012/          model and optimizer, sharded (torch.distributed.checkpoint),
                          plus trainer-rank<R>.pt: step, scheduler, sampler, RNG of each rank
    latest                the name of the newest complete checkpoint

Every rank writes into ``step-N.partial``; after a barrier rank 0 renames it to ``step-N`` and
only then moves ``latest`` (temporary file + rename). A crash before that leaves ``latest`` on
the previous checkpoint. The last ``keep`` checkpoints are kept.
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

__all__ = ["Checkpointer", "complete_checkpoints", "latest_checkpoint", "single_process_quiet"]

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
        and CPU tensors)."""
        final = self.directory / f"step-{step:06d}"
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
            InputError: the checkpoint was written by a run with another number of ranks.
        """
        own = path / f"trainer-rank{self.world.rank}.pt"
        if not own.is_file() or (path / f"trainer-rank{self.world.world_size}.pt").exists():
            raise InputError(
                f"{path}: written by a run with a number of ranks other than "
                f"{self.world.world_size}",
                file=str(path),
            )
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
        key=lambda path: path.name,
    )


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
