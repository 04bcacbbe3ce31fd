"""The training loop, top to bottom.

One process, or several under torchrun (FSDP2; NCCL on GPU, gloo on CPU)::

    tokenpo train --config run.toml                       # one process
    tokenpo train --config run.toml --nproc-per-node 2    # starts torchrun's agent itself
    torchrun --nproc-per-node 2 -m tokenpo.train --config run.toml

Each step: this rank's pairs from the curriculum sampler → micro-batches → collate (prefix
sharing) → policy and reference log-probs → loss → backward; then clip, AdamW, schedule.
Metrics go to ``RUN_DIR/metrics.jsonl`` on rank 0 and to the reporter; checkpoints to
``RUN_DIR/checkpoints``; at the end the policy is exported in the Hugging Face format to
``RUN_DIR/final``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.tensor import DTensor

from tokenpo.exceptions import ConfigError
from tokenpo.models import export_hf
from tokenpo.train.checkpoint import Checkpointer, restore_rng, rng_state
from tokenpo.train.config import TrainConfig, save_config
from tokenpo.train.distributed import World, world
from tokenpo.train.metrics import MetricsLog, peak_memory_gib
from tokenpo.train.setup import Components, build_components
from tokenpo.train.step import PassTotals, pass_metrics, run_pairs

__all__ = ["Reporter", "TrainResult", "tokenizer_files", "train"]


class Reporter(Protocol):
    """Receives progress on rank 0 (the CLI draws a progress bar from it)."""

    def start(self, *, total_steps: int, first_step: int) -> None:
        """Training starts (``first_step > 0`` after a resume)."""

    def step(self, record: dict[str, Any]) -> None:
        """A logged training step (the ``metrics.jsonl`` record)."""

    def validation(self, record: dict[str, Any]) -> None:
        """A validation result."""

    def message(self, text: str) -> None:
        """Something worth a line: resumed, checkpoint written, stopped early, exported."""


@dataclass(frozen=True, slots=True)
class TrainResult:
    """How a run ended."""

    run_dir: Path
    steps: int
    """Optimizer steps completed."""
    export_dir: Path
    stopped_early: bool
    last_metrics: dict[str, float]
    is_main: bool
    """Whether this process is rank 0 (the one that reports)."""


def train(config: TrainConfig, reporter: Reporter | None = None) -> TrainResult:
    """Trains as ``config`` says, resuming from the latest checkpoint when asked.

    Raises:
        ConfigError, InputError: the config, the data or the output directory cannot be
            used (nothing is written over).
    """
    with world(config.run.device) as this:
        return _train_in(this, config, reporter)


def _train_in(this: World, config: TrainConfig, reporter: Reporter | None) -> TrainResult:
    """The run itself. The model, optimizer and FSDP state live in this frame only, so they
    are freed when it returns, before ``world`` leaves the process group."""
    torch.manual_seed(config.run.seed)
    run_dir = _prepare_run_dir(config, this)
    components = build_components(config, this)
    return _Loop(config, this, components, run_dir, reporter).run()


def _prepare_run_dir(config: TrainConfig, this: World) -> Path:
    run_dir = Path(config.run.out_dir)
    has_run = (run_dir / "checkpoints" / "latest").exists() or (run_dir / "final").exists()
    if has_run and not config.checkpoint.resume:
        raise ConfigError(
            f"{run_dir} already holds a run; resume it (--resume) or choose another run.out_dir"
        )
    try:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"run.out_dir {run_dir} cannot be written: {error.strerror}") from error
    if this.is_main:
        save_config(config, run_dir / "config.toml")
    return run_dir


class _Loop:
    def __init__(
        self,
        config: TrainConfig,
        this: World,
        parts: Components,
        run_dir: Path,
        reporter: Reporter | None,
    ) -> None:
        self.config, self.world, self.parts, self.run_dir = config, this, parts, run_dir
        self.reporter = reporter if this.is_main else None
        self.checkpointer = Checkpointer(run_dir / "checkpoints", config.checkpoint.keep, this)
        self.step = 0
        self.stopped_early = False
        self.best: float | None = None
        self.stale_validations = 0
        self.initial_val: dict[str, float] = {}
        self.last: dict[str, float] = {}

    def run(self) -> TrainResult:
        resumed = self._resume()
        # Rank 0 alone owns the log: every rank rewriting it on resume raced, one rank reading
        # the file while another had just truncated it, and lost records.
        self.metrics = (
            MetricsLog(self.run_dir / "metrics.jsonl", resume_step=resumed)
            if self.world.is_main
            else None
        )
        if self.reporter:
            self.reporter.start(total_steps=self.parts.total_steps, first_step=self.step)
        if self.parts.val_data is not None and not self.initial_val:
            self.initial_val = self._validate()
        batches = iter(self.parts.sampler)
        while self.step < self.parts.total_steps and not self.stopped_early:
            record = self._train_step(next(batches))
            self.step += 1
            if self.step % self.config.logging.every == 0 or self.step == self.parts.total_steps:
                self._log(record)
            self.stopped_early = self._maybe_validate()
            every = self.config.checkpoint.every
            if every and self.step % every == 0 and self.step < self.parts.total_steps:
                self._save()
        self._save()
        export_dir = self._export()
        return TrainResult(
            run_dir=self.run_dir,
            steps=self.step,
            export_dir=export_dir,
            stopped_early=self.stopped_early,
            last_metrics=self.last,
            is_main=self.world.is_main,
        )

    def _train_step(self, indices: np.ndarray) -> dict[str, float]:
        parts, config = self.parts, self.config
        started = time.perf_counter()
        parts.policy.train()
        totals = run_pairs(
            indices,
            data=parts.train_data,
            data_config=config.data,
            policy=parts.policy,
            reference=parts.reference,
            objective=parts.objective,
            world=self.world,
            backward=True,
            autocast=self._autocast,
        )
        grad_norm = self._clip_gradients()
        parts.optimizer.step()
        parts.optimizer.zero_grad(set_to_none=True)
        learning_rate = float(parts.scheduler.get_last_lr()[0])
        parts.scheduler.step()
        seconds = time.perf_counter() - started
        record = pass_metrics(
            {
                **totals.rank_values(),
                "tokens_per_s": totals.sequence_tokens / seconds,
                "input_tokens_per_s": totals.input_tokens / seconds,
            },
            self.world,
        )
        # Means over ranks of per-rank rates; the run's rates are the sums.
        record["tokens_per_s"] *= self.world.world_size
        record["input_tokens_per_s"] *= self.world.world_size
        record.update(
            lr=learning_rate,
            grad_norm=grad_norm,
            seconds_per_step=seconds,
            peak_memory_gib=peak_memory_gib(self.world.device),
            competence=parts.sampler.competence(self.step % len(parts.sampler)),
        )
        return record

    @property
    def _autocast(self) -> bool:
        return self.config.model.mixed_precision == "bf16" and not self.world.distributed

    def _clip_gradients(self) -> float:
        parameters = [p for p in self.parts.trained.parameters() if p.grad is not None]
        limit = self.config.optim.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(
            parameters, limit if limit is not None else float("inf")
        )
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()
        return float(norm)

    def _log(self, record: dict[str, float]) -> None:
        self.last = record
        if self.metrics is not None:
            self.metrics.write({"step": self.step, **record})
        if self.reporter:
            self.reporter.step({"step": self.step, **record})

    def _maybe_validate(self) -> bool:
        """Validates when due; returns whether to stop early."""
        every = self.config.logging.val_every
        if not every or self.parts.val_data is None or self.step % every:
            return False
        values = self._validate()
        record = {f"val/{name}": value for name, value in values.items()}
        for name in ("logps/chosen", "logps/rejected"):
            if name in values and name in self.initial_val:
                record[f"val/{name}_drift"] = values[name] - self.initial_val[name]
        if self.metrics is not None:
            self.metrics.write({"step": self.step, **record})
        if self.reporter:
            self.reporter.validation({"step": self.step, **record})
        return self._should_stop(record)

    def _validate(self) -> dict[str, float]:
        """Loss metrics on the validation pairs, split evenly over the ranks (up to
        ``world_size - 1`` trailing pairs are left out so every rank runs the same batches)."""
        parts, data = self.parts, self.parts.val_data
        assert data is not None
        share = len(data) // self.world.world_size
        indices = np.arange(self.world.rank * share, (self.world.rank + 1) * share)
        parts.policy.eval()
        totals = PassTotals()
        batch = self.config.data.batch_size // self.world.world_size
        for start in range(0, share, batch):
            part = run_pairs(
                indices[start : start + batch],
                data=data,
                data_config=self.config.data,
                policy=parts.policy,
                reference=parts.reference,
                objective=parts.objective,
                world=self.world,
                backward=False,
                autocast=self._autocast,
            )
            totals.add(part)
        return pass_metrics(totals.rank_values(), self.world)

    def _should_stop(self, record: dict[str, float]) -> bool:
        name = self.config.logging.early_stop_metric
        if name is None:
            return False
        key = name if name.startswith("val/") else f"val/{name}"
        if key not in record:
            raise ConfigError(
                f"logging.early_stop_metric {name!r} is not a validation metric; "
                f"available: {', '.join(sorted(record))}"
            )
        value = record[key] if self.config.logging.early_stop_mode == "max" else -record[key]
        if self.best is None or value > self.best:
            self.best, self.stale_validations = value, 0
            return False
        self.stale_validations += 1
        stop = self.stale_validations >= self.config.logging.patience
        if stop and self.reporter:
            self.reporter.message(f"stopping early at step {self.step}: {key} stopped improving")
        return stop

    def _trainer_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "sampler": self.parts.sampler.state_dict(),
            "scheduler": self.parts.scheduler.state_dict(),
            **rng_state(self.world.device),
            "early_stop": {"best": self.best, "stale": self.stale_validations},
            # A run killed while exporting after an early stop resumes straight to the export.
            "stopped_early": self.stopped_early,
            "initial_val": self.initial_val,
            "last_metrics": self.last,
        }

    def _save(self) -> None:
        path = self.checkpointer.save(
            self.step, self.parts.trained, self.parts.optimizer, self._trainer_state()
        )
        if self.reporter:
            self.reporter.message(f"checkpoint {path}")

    def _resume(self) -> int | None:
        """Loads the latest checkpoint when asked to; returns its step."""
        if not self.config.checkpoint.resume:
            return None
        latest = self.checkpointer.latest()
        if latest is None:
            return None
        state = self.checkpointer.load(latest, self.parts.trained, self.parts.optimizer)
        self.step = int(state["step"])
        self.parts.sampler.load_state_dict(state["sampler"])
        self.parts.scheduler.load_state_dict(state["scheduler"])
        restore_rng(state, self.world.device)
        self.best = state["early_stop"]["best"]
        self.stale_validations = int(state["early_stop"]["stale"])
        self.stopped_early = bool(state.get("stopped_early", False))
        self.initial_val = dict(state["initial_val"])
        self.last = dict(state.get("last_metrics", {}))
        if self.reporter:
            self.reporter.message(f"resumed from {latest} at step {self.step}")
        return self.step

    def _export(self) -> Path:
        """Writes the policy in the Hugging Face format to ``RUN_DIR/final`` (rank 0 writes;
        every rank takes part in gathering the sharded weights)."""
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        # Gathered through the FSDP root (the scorer), which owns the embedding and head.
        state: dict[str, torch.Tensor] = {
            name.removeprefix("model."): value  # type: ignore[misc]
            for name, value in get_model_state_dict(self.parts.policy, options=options).items()
        }
        target = self.run_dir / "final"
        if self.world.is_main:
            tokenizer = self.parts.tokenizer
            model_config: Any = self.parts.policy.model.config
            export_hf(
                state,
                config=model_config,
                out_dir=target,
                tokenizer_files=tokenizer_files(tokenizer),
                overwrite=True,
            )
            if self.reporter:
                self.reporter.message(f"exported the policy to {target}")
        return target


def tokenizer_files(tokenizer: Path | None) -> list[Path]:
    """The files an export copies: ``tokenizer`` and the ``tokenizer_config.json`` beside it."""
    if tokenizer is None:
        return []
    config = tokenizer.with_name("tokenizer_config.json")
    return [tokenizer, *([config] if config.is_file() else [])]
