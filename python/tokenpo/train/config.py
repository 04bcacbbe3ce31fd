"""The trainer's config: ``tokenpo train --config run.toml`` as typed dataclasses.

One dataclass per TOML section, all held by :class:`TrainConfig`::

    config = load_config(Path("run.toml"), ["optim.lr=1e-4", "loss.beta=0.2"])
    save_config(config, out_dir / "config.toml")    # loads back to an equal config

Every field is checked against its annotation (:func:`tokenpo.train.config_toml.check_fields`:
an int is accepted for a float, a list for a tuple, nothing else is converted), then each
section checks its ranges in ``__post_init__``. Messages name the full key
(``optim.lr must be > 0, got -1.0``).

**None and TOML.** TOML has no null, so a field that is None is written by leaving its key out,
and a missing key loads as the field's default. That is exact only when the default is None, so a
field that accepts None but defaults to something else must say in its metadata which TOML value
stands for None (``optim.grad_clip = 0`` turns clipping off and loads as None). Without that,
:func:`config_to_toml` raises rather than write a file that would load back different.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_type_hints

from tokenpo.data.collate import Layout
from tokenpo.data.sampler import CurriculumConfig
from tokenpo.exceptions import ConfigError
from tokenpo.losses import LossConfigError
from tokenpo.train.config_toml import (
    NONE_IN_TOML,
    SPREAD,
    apply_override,
    build_section,
    check_fields,
    did_you_mean,
    field_default,
    field_names,
    quoted,
    read_toml,
    render,
    toml_table,
)
from tokenpo.train.objective import build_objective, objective_names

__all__ = [
    "CheckpointConfig",
    "CurriculumSection",
    "DataConfig",
    "LoggingConfig",
    "LossSection",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "ScheduleConfig",
    "TrainConfig",
    "config_to_toml",
    "default_config_toml",
    "load_config",
    "save_config",
]


@dataclass(kw_only=True, slots=True)
class RunConfig:
    """``[run]``: where the run writes and how it starts."""

    out_dir: str = "runs/tokenpo"
    """The directory for checkpoints, metrics.jsonl and the resolved config.toml."""
    seed: int = 0
    """Seeds the model's initialization, dropout and the sampler's shuffles."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: CUDA when it is available, else the CPU."""

    def __post_init__(self) -> None:
        check_fields(self, "run")
        _check_nonempty("run.out_dir", self.out_dir)
        _check_at_least("run.seed", self.seed, 0)


@dataclass(kw_only=True, slots=True)
class ModelConfig:
    """``[model]``: the policy, its reference and how they run."""

    source: str = "gpt"
    """gpt: the built-in GPT; else a model directory, or a config.json to initialize at random."""
    gpt: dict[str, Any] = field(default_factory=dict)
    """The built-in GPT's config fields (e.g. num_hidden_layers = 4); only with source = gpt."""
    reference: str | None = None
    """The reference model's directory; unset: a frozen copy of the initial policy."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """The dtype of the parameters."""
    mixed_precision: Literal["none", "bf16"] = "none"
    """bf16: compute forward and backward in bfloat16; none: in the parameters' dtype."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in the backward pass: less memory, more compute."""
    trust_remote_code: bool = False
    """Let transformers run code shipped with the model; only for models you trust."""

    def __post_init__(self) -> None:
        check_fields(self, "model")
        _check_nonempty("model.source", self.source)
        if self.gpt and self.source != "gpt":
            raise ConfigError(
                f"model.gpt configures the built-in GPT only, but model.source = {self.source!r}"
            )


@dataclass(kw_only=True, slots=True)
class DataConfig:
    """``[data]``: the prepared shards and how pairs become batches."""

    shards: str
    """The prepared shards directory, the output of `tokenpo prep`. Required."""
    val_shards: str | None = None
    """Prepared shards to validate on; unset: no validation."""
    batch_size: int = 16
    """Preference pairs per optimizer step, over all ranks."""
    micro_batch_size: int | None = None
    """Pairs per forward and backward on a rank, accumulated; unset: the rank's batch at once."""
    layout: Layout = "shared"
    """shared: chosen and rejected share one copy of the prompt; padded: the plain oracle."""
    row_tokens: int | None = field(default=384, metadata={NONE_IN_TOML: 0})
    """Pack pairs into rows of this many tokens, or of the longest pair when longer (shared
    layout; padded ignores it); 0: a pair per row. Packing removes padding, but under a dense
    mask attention costs the square of the row length: a few hundred suits small models."""
    use_stored_ref: bool = True
    """Use the reference log-probs `tokenpo ref-logps` stored in the shards."""
    tokenizer: str | None = None
    """The tokenizer.json to check the manifest's tokenizer hash against; unset: the model's."""

    def __post_init__(self) -> None:
        check_fields(self, "data")
        _check_nonempty("data.shards", self.shards)
        _check_at_least("data.batch_size", self.batch_size, 1)
        if self.micro_batch_size is not None:
            _check_at_least("data.micro_batch_size", self.micro_batch_size, 1)
            if self.micro_batch_size > self.batch_size:
                raise ConfigError(
                    f"data.micro_batch_size ({self.micro_batch_size}) must be <= "
                    f"data.batch_size ({self.batch_size})"
                )
        if self.row_tokens is not None:
            _check_at_least("data.row_tokens", self.row_tokens, 1)


@dataclass(kw_only=True, slots=True)
class LossSection:
    """``[loss]``: the objective, built with :func:`tokenpo.losses.build` (or ``sft``)."""

    name: str = "dpo"
    """A name from tokenpo.losses.available(), or sft (supervised; its one option: weighted)."""
    params: dict[str, Any] = field(default_factory=dict, metadata={SPREAD: True})
    """The loss's parameters sit here in [loss], beside name (e.g. beta = 0.1)."""

    def __post_init__(self) -> None:
        check_fields(self, "loss")
        names = objective_names()
        if self.name not in names:
            raise ConfigError(
                f"loss.name must be one of {quoted(names)}, got {self.name!r}"
                + did_you_mean(self.name, names, repr)
            )
        try:
            # A stand-in hidden size: the trainer passes the model's to tbpo_q.
            build_objective(self.name, self.params, hidden_size=1)
        except LossConfigError as err:
            raise ConfigError(f"loss: {err}") from err


@dataclass(kw_only=True, slots=True)
class OptimConfig:
    """``[optim]``: AdamW."""

    lr: float = 5e-5
    """The peak learning rate, reached at the end of warmup."""
    weight_decay: float = 0.0
    """Decoupled weight decay."""
    betas: tuple[float, float] = (0.9, 0.95)
    """The decay rates of the first and second moment estimates."""
    eps: float = 1e-8
    """Added to the denominator for numerical stability."""
    grad_clip: float | None = field(default=1.0, metadata={NONE_IN_TOML: 0.0})
    """Clip the gradients' global norm to this before each step; 0 turns clipping off."""

    def __post_init__(self) -> None:
        check_fields(self, "optim")
        _check_above("optim.lr", self.lr, 0)
        _check_at_least("optim.weight_decay", self.weight_decay, 0)
        for index, beta in enumerate(self.betas):
            if not 0 <= beta < 1:
                raise ConfigError(f"optim.betas[{index}] must lie in [0, 1), got {beta}")
        _check_above("optim.eps", self.eps, 0)
        if self.grad_clip is not None:
            _check_above("optim.grad_clip", self.grad_clip, 0)


@dataclass(kw_only=True, slots=True)
class ScheduleConfig:
    """``[schedule]``: the learning rate over the run, and its length."""

    kind: Literal["constant", "linear", "cosine"] = "cosine"
    """The shape after warmup: constant, or a linear or cosine decay to min_lr_ratio * lr."""
    warmup_steps: int = 0
    """Optimizer steps of linear warmup to lr."""
    max_steps: int | None = None
    """Optimizer steps in all; unset: epochs passes over the data."""
    epochs: int = 1
    """Passes over the data, when max_steps is unset."""
    min_lr_ratio: float = 0.1
    """The learning rate at the end of a decay, as a fraction of lr."""

    def __post_init__(self) -> None:
        check_fields(self, "schedule")
        _check_at_least("schedule.warmup_steps", self.warmup_steps, 0)
        if self.max_steps is not None:
            _check_at_least("schedule.max_steps", self.max_steps, 1)
            if self.warmup_steps > self.max_steps:
                raise ConfigError(
                    f"schedule.warmup_steps ({self.warmup_steps}) must be <= "
                    f"schedule.max_steps ({self.max_steps})"
                )
        _check_at_least("schedule.epochs", self.epochs, 1)
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"schedule.min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")


# A subclass rather than a copy of the sampler's fields: the sampler takes it as it is.
@dataclass(kw_only=True, slots=True, frozen=True)
class CurriculumSection(CurriculumConfig):
    """``[curriculum]``: the sampler's pacing (:class:`~tokenpo.data.sampler.CurriculumConfig`)."""

    column: str = "difficulty"
    """The shard column that orders pairs from easy (low) to hard (high)."""

    def __post_init__(self) -> None:
        check_fields(self, "curriculum")
        _check_nonempty("curriculum.column", self.column)
        # Not super(): slots=True makes a new class, which breaks its zero-argument form.
        try:
            CurriculumConfig.__post_init__(self)
        except ConfigError as err:
            # The sampler's messages start with the field's name.
            raise ConfigError(f"curriculum.{err}") from err


@dataclass(kw_only=True, slots=True)
class CheckpointConfig:
    """``[checkpoint]``: saving and resuming."""

    every: int = 0
    """Save every this many optimizer steps; 0: only at the end."""
    keep: int = 2
    """How many of the newest checkpoints to keep; older ones are deleted."""
    resume: bool = False
    """Resume from the newest checkpoint in run.out_dir, when there is one."""

    def __post_init__(self) -> None:
        check_fields(self, "checkpoint")
        _check_at_least("checkpoint.every", self.every, 0)
        _check_at_least("checkpoint.keep", self.keep, 1)


@dataclass(kw_only=True, slots=True)
class LoggingConfig:
    """``[logging]``: metrics, validation and early stopping."""

    every: int = 1
    """Log the training metrics every this many optimizer steps."""
    val_every: int = 0
    """Validate on data.val_shards every this many optimizer steps; 0: never."""
    early_stop_metric: str | None = None
    """Stop when this validation metric stops improving; unset: never stop early."""
    early_stop_mode: Literal["max", "min"] = "max"
    """max: higher is better; min: lower is better."""
    patience: int = 3
    """Validations without improvement before stopping early."""

    def __post_init__(self) -> None:
        check_fields(self, "logging")
        _check_at_least("logging.every", self.every, 1)
        _check_at_least("logging.val_every", self.val_every, 0)
        _check_at_least("logging.patience", self.patience, 1)
        if self.early_stop_metric is not None:
            _check_nonempty("logging.early_stop_metric", self.early_stop_metric)
            if self.val_every == 0:
                raise ConfigError("logging.early_stop_metric needs logging.val_every > 0")


@dataclass(kw_only=True, slots=True)
class TrainConfig:
    """Everything ``tokenpo train`` reads: one field per TOML section."""

    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig
    loss: LossSection = field(default_factory=LossSection)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    curriculum: CurriculumSection = field(default_factory=CurriculumSection)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def __post_init__(self) -> None:
        check_fields(self, "")
        if self.logging.val_every and self.data.val_shards is None:
            raise ConfigError(f"logging.val_every = {self.logging.val_every} needs data.val_shards")


def load_config(path: Path | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """The config in the TOML file ``path`` (None: the defaults), with ``overrides`` applied.

    An override is ``section.key=value`` (deeper keys reach into tables:
    ``model.gpt.num_hidden_layers=4``). The value is read as a TOML value (``0.2``, ``true``,
    ``[0.9, 0.99]``, ``"a b"``); text that is not one is taken as a string (``./model``).
    Keys that are not set keep their defaults.

    Raises:
        ConfigError: the file is missing or is not TOML (the message has the line), a section or
            key is unknown (with the valid ones and the closest match), a required key is
            missing, or a value has the wrong type or is out of range (naming the key).
    """
    tables: dict[str, Any] = {} if path is None else read_toml(path)
    for override in overrides:
        apply_override(tables, override)
    return _from_tables(tables)


def config_to_toml(config: TrainConfig) -> str:
    """``config`` as TOML, a comment above each key; :func:`load_config` reads it back equal.

    Raises:
        ConfigError: a value is None where TOML cannot say so (inside ``model.gpt`` or the loss
            parameters): writing it would load back as something else.
    """
    tables = {}
    for section in _sections():
        part = getattr(config, section)
        values = {f.name: getattr(part, f.name) for f in fields(part)}
        tables[section] = toml_table(section, type(part), values)
    return render(_sections(), tables)


def save_config(config: TrainConfig, path: Path) -> None:
    """Write ``config`` to ``path`` as TOML, atomically: a reader sees the old file or the new."""
    text = config_to_toml(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        Path(temp_name).replace(path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def default_config_toml() -> str:
    """The defaults as TOML, for ``tokenpo train --print-config``: fill in ``data.shards``.

    Keys without a default (``data.shards``) or unset by default are commented out, showing the
    type they take, so the text is valid TOML as it is.
    """
    tables = {}
    for section, cls in _sections().items():
        defaults = {f.name: field_default(f) for f in fields(cls)}
        values = {name: value for name, value in defaults.items() if value is not MISSING}
        tables[section] = toml_table(section, cls, values)
    return render(_sections(), tables)


def _from_tables(tables: Mapping[str, Any]) -> TrainConfig:
    sections = _sections()
    for name in tables:
        if name not in sections:
            # A key written above every section header lands here: point at its section.
            owners = [f"{s}.{name}" for s, cls in sections.items() if name in field_names(cls)]
            hint = did_you_mean(name, sections, "[{}]".format) or (
                f". Did you mean {' or '.join(owners)}?" if owners else "."
            )
            raise ConfigError(f"unknown section [{name}]{hint} Sections: {', '.join(sections)}")
    built: dict[str, Any] = {}
    for name, cls in sections.items():
        table = tables.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{name} must be a table ([{name}]), got {table!r}")
        built[name] = build_section(name, cls, table)
    return TrainConfig(**built)


def _check_at_least(key: str, value: float, low: float) -> None:
    if value < low:
        raise ConfigError(f"{key} must be >= {low}, got {value}")


def _check_above(key: str, value: float, low: float) -> None:
    if value <= low:
        raise ConfigError(f"{key} must be > {low}, got {value}")


def _check_nonempty(key: str, value: str) -> None:
    if not value:
        raise ConfigError(f"{key} must not be empty")


def _sections() -> dict[str, type]:
    hints = get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in fields(TrainConfig)}
