"""The trainer's config: ``tokenpo train --config run.toml`` as typed dataclasses.

One dataclass per TOML section, all held by :class:`TrainConfig`::

    config = load_config(Path("run.toml"), ["optim.lr=1e-4", "loss.beta=0.2"])
    save_config(config, out_dir / "config.toml")    # loads back to an equal config

Every field is checked against its annotation by one function (:func:`_checked`: an int is
accepted for a float, a list for a tuple, nothing else is converted), then each section checks
its ranges in ``__post_init__``. Messages name the full key (``optim.lr must be > 0, got -1.0``).

**None and TOML.** TOML has no null, so a field that is None is written by leaving its key out,
and a missing key loads as the field's default. That is exact only when the default is None, so a
field that accepts None but defaults to something else must say in its metadata which TOML value
stands for None (``optim.grad_clip = 0`` turns clipping off and loads as None). Without that,
:func:`config_to_toml` raises rather than write a file that would load back different.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import itertools
import math
import os
import tempfile
import textwrap
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import tomli_w

from tokenpo.data.collate import Layout
from tokenpo.data.sampler import CurriculumConfig
from tokenpo.exceptions import ConfigError
from tokenpo.losses import LossConfigError
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

_NONE_IN_TOML = "tokenpo.none_in_toml"
"""Field metadata: the TOML value that stands for None, in a field whose default is not None."""

_SPREAD = "tokenpo.spread"
"""Field metadata: this dict holds the section's keys that are not fields (``[loss]`` params)."""


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
        _check_fields(self, "run")
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
        _check_fields(self, "model")
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
    row_tokens: int | None = field(default=384, metadata={_NONE_IN_TOML: 0})
    """Pack pairs into rows of this many tokens, or of the longest pair when longer (shared
    layout; padded ignores it); 0: a pair per row. Packing removes padding, but under a dense
    mask attention costs the square of the row length: a few hundred suits small models."""
    use_stored_ref: bool = True
    """Use the reference log-probs `tokenpo ref-logps` stored in the shards."""
    tokenizer: str | None = None
    """The tokenizer.json to check the manifest's tokenizer hash against; unset: the model's."""

    def __post_init__(self) -> None:
        _check_fields(self, "data")
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
    params: dict[str, Any] = field(default_factory=dict, metadata={_SPREAD: True})
    """The loss's parameters sit here in [loss], beside name (e.g. beta = 0.1)."""

    def __post_init__(self) -> None:
        _check_fields(self, "loss")
        names = objective_names()
        if self.name not in names:
            raise ConfigError(
                f"loss.name must be one of {_quoted(names)}, got {self.name!r}"
                + _did_you_mean(self.name, names, repr)
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
    grad_clip: float | None = field(default=1.0, metadata={_NONE_IN_TOML: 0.0})
    """Clip the gradients' global norm to this before each step; 0 turns clipping off."""

    def __post_init__(self) -> None:
        _check_fields(self, "optim")
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
        _check_fields(self, "schedule")
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
        _check_fields(self, "curriculum")
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
        _check_fields(self, "checkpoint")
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
        _check_fields(self, "logging")
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
        _check_fields(self, "")
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
    tables: dict[str, Any] = {} if path is None else _read_toml(path)
    for override in overrides:
        _apply_override(tables, override)
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
        tables[section] = _toml_table(section, type(part), values)
    return _render(tables)


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
        defaults = {f.name: _default(f) for f in fields(cls)}
        values = {name: value for name, value in defaults.items() if value is not MISSING}
        tables[section] = _toml_table(section, cls, values)
    return _render(tables)


# Loading


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err}") from err
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        # The decoder's message ends with "(at line L, column C)".
        raise ConfigError(f"{path} is not valid TOML: {err}") from err


def _apply_override(tables: dict[str, Any], override: str) -> None:
    key, equals, text = override.partition("=")
    path = key.strip().split(".")
    if not equals or len(path) < 2 or not all(path):
        raise ConfigError(f"override {override!r} must look like section.key=value")
    table = tables
    for depth, part in enumerate(path[:-1]):
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            where = ".".join(path[: depth + 1])
            raise ConfigError(f"override {override!r}: {where} is not a table")
    table[path[-1]] = _parse_value(text.strip())


def _parse_value(text: str) -> Any:
    """``text`` as a TOML value, or ``text`` itself when it is not exactly one."""
    try:
        parsed = tomllib.loads(f"value = {text}")
    except tomllib.TOMLDecodeError:
        return text
    return parsed["value"] if len(parsed) == 1 else text


def _from_tables(tables: Mapping[str, Any]) -> TrainConfig:
    sections = _sections()
    for name in tables:
        if name not in sections:
            # A key written above every section header lands here: point at its section.
            owners = [f"{s}.{name}" for s, cls in sections.items() if name in _field_names(cls)]
            hint = _did_you_mean(name, sections, "[{}]".format) or (
                f". Did you mean {' or '.join(owners)}?" if owners else "."
            )
            raise ConfigError(f"unknown section [{name}]{hint} Sections: {', '.join(sections)}")
    built: dict[str, Any] = {}
    for name, cls in sections.items():
        table = tables.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{name} must be a table ([{name}]), got {table!r}")
        built[name] = _build_section(name, cls, table)
    return TrainConfig(**built)


def _build_section(section: str, cls: type[Any], table: Mapping[str, Any]) -> Any:
    names = _field_names(cls)
    spread = next((f.name for f in fields(cls) if f.metadata.get(_SPREAD)), None)
    if spread is None:
        for key in table:
            if key not in names:
                hint = _did_you_mean(key, names, f"{section}.{{}}".format) or "."
                raise ConfigError(
                    f"unknown key {section}.{key}{hint} Keys of [{section}]: {', '.join(names)}"
                )
    values = {key: value for key, value in table.items() if key in names and key != spread}
    if spread is not None:
        values[spread] = {key: value for key, value in table.items() if key not in values}
    for f in fields(cls):
        if f.name not in values and _default(f) is MISSING:
            raise ConfigError(
                f"{section}.{f.name} is required: set it in [{section}] "
                f"or override it with {section}.{f.name}=..."
            )
    return cls(**values)


# Checking


def _check_fields(config: Any, section: str) -> None:
    """Check every field of ``config`` against its annotation; store the checked value."""
    hints = get_type_hints(type(config))
    for f in fields(config):
        key = f"{section}.{f.name}" if section else f.name
        value = _checked(key, getattr(config, f.name), hints[f.name])
        if _NONE_IN_TOML in f.metadata and value == f.metadata[_NONE_IN_TOML]:
            value = None
        # object.__setattr__ also works on the frozen sampler config CurriculumSection extends.
        object.__setattr__(config, f.name, value)


def _checked(key: str, value: Any, expected: Any) -> Any:
    """``value`` if it is an ``expected`` (an annotation), an int widened to float, a list made
    a tuple; else a :class:`ConfigError` naming ``key``, what was expected and what was found."""
    origin, args = get_origin(expected), get_args(expected)
    if origin in (Union, UnionType):
        if value is None and NoneType in args:
            return None
        (inner,) = (arg for arg in args if arg is not NoneType)
        return _checked(key, value, inner)
    if origin is tuple and isinstance(value, list | tuple):
        if len(args) == len(value):
            pairs = enumerate(zip(value, args, strict=True))
            return tuple(_checked(f"{key}[{i}]", item, arg) for i, (item, arg) in pairs)
    elif origin is dict and isinstance(value, dict):
        if all(isinstance(name, str) for name in value):
            return {name: _checked(f"{key}.{name}", v, args[1]) for name, v in value.items()}
    elif origin is Literal:
        if isinstance(value, str) and value in args:
            return value
        hint = _did_you_mean(value, args, repr) if isinstance(value, str) else ""
        raise ConfigError(f"{key} must be one of {_quoted(args)}, got {value!r}{hint}")
    elif expected is Any:
        return value
    elif expected is float and isinstance(value, int | float) and not isinstance(value, bool):
        if math.isfinite(value):
            return float(value)
    # bool is an int subclass, but `seed = true` is a mistake, not 1.
    elif (
        origin is None
        and isinstance(expected, type)
        and isinstance(value, expected)
        and not (expected is int and isinstance(value, bool))
    ):
        return value
    raise ConfigError(
        f"{key} must be {_describe(expected)}, got {value!r} ({type(value).__name__})"
    )


def _describe(expected: Any) -> str:
    origin, args = get_origin(expected), get_args(expected)
    if origin in (Union, UnionType):
        return " or ".join(_describe(arg) for arg in args if arg is not NoneType)
    if origin is tuple:
        return f"a list [{', '.join(getattr(arg, '__name__', str(arg)) for arg in args)}]"
    if origin is dict:
        return "a table"
    if origin is Literal:
        return f"one of {_quoted(args)}"
    names = {
        bool: "a bool (true or false)",
        int: "an int",
        float: "a finite float",
        str: "a string",
    }
    return names.get(expected, f"a {getattr(expected, '__name__', expected)}")


def _check_at_least(key: str, value: float, low: float) -> None:
    if value < low:
        raise ConfigError(f"{key} must be >= {low}, got {value}")


def _check_above(key: str, value: float, low: float) -> None:
    if value <= low:
        raise ConfigError(f"{key} must be > {low}, got {value}")


def _check_nonempty(key: str, value: str) -> None:
    if not value:
        raise ConfigError(f"{key} must not be empty")


def _did_you_mean(name: str, valid: Iterable[str], show: Callable[[str], str]) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f". Did you mean {show(close[0])}?" if close else ""


def _quoted(values: Sequence[Any]) -> str:
    return ", ".join(repr(value) for value in values)


# Writing


def _toml_table(section: str, cls: type[Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """The TOML table of one section from its field values: None left out (or spelled as the
    field's metadata says), the spread field's items moved up into the table."""
    table: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in values:
            continue
        value = values[f.name]
        if value is None:
            if _NONE_IN_TOML in f.metadata:
                table[f.name] = f.metadata[_NONE_IN_TOML]
            elif f.default is not None:
                raise ConfigError(f"{section}.{f.name} is None, which TOML cannot hold")
        elif f.metadata.get(_SPREAD):
            table.update(_writable(section, value))
        else:
            table[f.name] = _writable(f"{section}.{f.name}", value)
    return table


def _writable(key: str, value: Any) -> Any:
    if value is None:
        raise ConfigError(f"{key} is None, which TOML cannot hold; leave it out instead")
    if isinstance(value, Mapping):
        return {name: _writable(f"{key}.{name}", item) for name, item in value.items()}
    if isinstance(value, list | tuple):
        return [_writable(f"{key}[{i}]", item) for i, item in enumerate(value)]
    return value


def _render(tables: Mapping[str, Mapping[str, Any]]) -> str:
    """TOML text of the sections, each key under its docstring as a comment.

    Fields missing from a table are written commented out (``# key = <an int>``); tables
    (``[model.gpt]``) follow the section's plain keys, as TOML requires.
    """
    out = ["# tokenpo train config. Override any key with section.key=value (a TOML value)."]
    for section, cls in _sections().items():
        table, docs, hints = tables[section], _field_docs(cls), get_type_hints(cls)
        lines, subtables = [f"[{section}]"], []
        for f in fields(cls):
            comment = [f"# {line}" for line in textwrap.wrap(docs.get(f.name, ""), 98)]
            if f.metadata.get(_SPREAD):
                lines += comment
            elif f.name not in table:
                lines += [*comment, f"# {f.name} = <{_describe(hints[f.name])}>"]
            elif isinstance(table[f.name], Mapping):
                subtables += ["", *comment, _dump(section, f.name, table[f.name])]
            else:
                lines += [*comment, _dump(section, f.name, table[f.name])]
        for key, value in table.items():
            if key in _field_names(cls):
                continue
            if isinstance(value, Mapping):
                subtables += ["", _dump(section, key, value)]
            else:
                lines.append(_dump(section, key, value))
        out += ["", *lines, *subtables]
    return "\n".join(out) + "\n"


def _dump(section: str, key: str, value: Any) -> str:
    """``key = value``, or for a table ``[section.key]`` and its contents."""
    if isinstance(value, Mapping):
        return tomli_w.dumps({section: {key: value}}).rstrip("\n")
    text = tomli_w.dumps({key: value}).rstrip("\n")
    if isinstance(value, list) and value and not any(isinstance(v, list | Mapping) for v in value):
        # tomli_w puts each array item on its own line; a flat list reads better on one.
        head, *items, _ = text.split("\n")
        text = head + ", ".join(item.strip().rstrip(",") for item in items) + "]"
    return text


# Introspection


def _sections() -> dict[str, type]:
    hints = get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in fields(TrainConfig)}


def _field_names(cls: type[Any]) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def _default(f: Field[Any]) -> Any:
    if f.default_factory is not MISSING:
        return f.default_factory()
    return f.default


def _field_docs(cls: type[Any]) -> dict[str, str]:
    """The docstring under each field of ``cls`` and its dataclass bases, one paragraph each."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):  # no source installed: no comments
            continue
        (class_def,) = ast.parse(source).body
        body = class_def.body if isinstance(class_def, ast.ClassDef) else []
        for statement, following in itertools.pairwise(body):
            if (
                isinstance(statement, ast.AnnAssign)
                and isinstance(statement.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[statement.target.id] = " ".join(following.value.value.split())
    return docs
