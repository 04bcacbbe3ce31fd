"""Checkpoints: one save per step, their order, the ranks that wrote them, RNG, early stops."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from torch import nn
from train_kit import prepared, run_config

from tokenpo.exceptions import InputError
from tokenpo.train.checkpoint import Checkpointer, complete_checkpoints, restore_rng, rng_state
from tokenpo.train.config import load_config
from tokenpo.train.distributed import World
from tokenpo.train.loop import train
from tokenpo.train.metrics import read_metrics

CPU = torch.device("cpu")


def cpu_rank(rank: int, world_size: int) -> World:
    return World(rank=rank, world_size=world_size, local_rank=rank, device=CPU)


def model_and_optimizer() -> tuple[nn.Module, torch.optim.Optimizer]:
    model = nn.Linear(3, 2)
    return model, torch.optim.AdamW(model.parameters())


def test_checkpoints_are_ordered_by_step_number(tmp_path: Path) -> None:
    for name in ("step-1000000", "step-999999", "step-000012", "step-000013.partial"):
        (tmp_path / name).mkdir()
    names = [path.name for path in complete_checkpoints(tmp_path)]
    assert names == ["step-000012", "step-999999", "step-1000000"]


def test_a_step_already_saved_is_not_written_again(tmp_path: Path) -> None:
    # Writing it again deleted the directory ``latest`` names before renaming the new one.
    checkpointer = Checkpointer(tmp_path, keep=2, world=cpu_rank(0, 1))
    model, optimizer = model_and_optimizer()
    first = checkpointer.save(3, model, optimizer, {"step": 3})
    (first / "sentinel").touch()
    assert checkpointer.save(3, model, optimizer, {"step": 3}) == first
    assert (first / "sentinel").is_file()
    assert checkpointer.latest() == first


@pytest.mark.parametrize(("saved", "resumed"), [(1, 2), (2, 1)])
def test_resuming_with_another_number_of_ranks_fails_on_every_rank(
    tmp_path: Path, saved: int, resumed: int
) -> None:
    model, optimizer = model_and_optimizer()
    path = Checkpointer(tmp_path, keep=2, world=cpu_rank(0, 1)).save(3, model, optimizer, {})
    for rank in range(1, saved):
        shutil.copy(path / "trainer-rank0.pt", path / f"trainer-rank{rank}.pt")
    message = rf"written by a run of {saved} rank\(s\), this one has {resumed}; resume with {saved}"
    for rank in range(resumed):
        checkpointer = Checkpointer(tmp_path, keep=2, world=cpu_rank(rank, resumed))
        with pytest.raises(InputError, match=message):
            checkpointer.load(path, model, optimizer)


def test_only_the_rank_s_own_gpu_rng_is_saved_and_restored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def every_device(*args: object) -> None:
        raise AssertionError("touched every visible GPU")

    restored: list[tuple[list[int], torch.device]] = []
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", every_device)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", every_device)
    monkeypatch.setattr(
        torch.cuda, "get_rng_state", lambda device: torch.tensor([device.index], dtype=torch.uint8)
    )
    monkeypatch.setattr(
        torch.cuda, "set_rng_state", lambda state, device: restored.append((state.tolist(), device))
    )
    device = torch.device("cuda", 1)
    restore_rng(rng_state(device), device)
    old = {"torch_rng": torch.get_rng_state(), "cuda_rng": [torch.tensor([7]), torch.tensor([8])]}
    restore_rng(old, device)
    assert restored == [([1], device), ([8], device)]


def test_a_run_stopped_early_and_killed_while_exporting_resumes_to_the_export(
    tmp_path: Path,
) -> None:
    shards = prepared(tmp_path / "data", pairs=16)
    sections = {
        "data": {"val_shards": str(shards)},
        # The validation loss falls, so the second validation stops the run at step 2.
        "logging": {"val_every": 1, "early_stop_metric": "loss", "patience": 1},
        "schedule": {"max_steps": 8},
        "checkpoint": {"every": 2},
    }
    first = train(load_config(run_config(tmp_path, shards, **sections)))
    assert (first.steps, first.stopped_early) == (2, True)
    records = read_metrics(first.run_dir / "metrics.jsonl")
    shutil.rmtree(first.export_dir)
    sections["checkpoint"]["resume"] = True
    resumed = train(load_config(run_config(tmp_path, shards, **sections)))
    assert (resumed.steps, resumed.stopped_early) == (2, True)
    assert resumed.last_metrics == first.last_metrics
    assert read_metrics(first.run_dir / "metrics.jsonl") == records
    assert (resumed.export_dir / "model.safetensors").is_file()
