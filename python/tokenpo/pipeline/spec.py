"""Pipeline files: TOML that lists tokenpo's stages, loaded and checked into a :class:`Pipeline`.

A pipeline file::

    [pipeline]
    name = "demo"                 # default: the file's stem
    workdir = "runs/demo"         # relative to the file's directory; default: that directory

    [vars]                        # {name} in run, resume, inputs and outputs
    seed = "0"

    [[stage]]
    name = "train"
    run = ["tokenpo", "train", "--config", "run.toml", "--set", "run.seed={seed}"]
    resume = ["--resume"]         # appended when re-running after an incomplete attempt
    inputs = ["shards/manifest.json", "run.toml"]
    outputs = ["run/final/config.json"]

**Substitution.** ``{name}`` is replaced by a var's value; the built-in vars are ``workdir`` (the
absolute working directory) and ``pipeline_dir`` (the file's directory). Vars may use other vars,
and ``workdir`` may use vars. Only braces around a name substitute, so ``python -c`` code with
dict literals needs no escaping; ``{{name}}`` writes a literal ``{name}``.

Inputs and outputs are paths relative to the working directory, where each stage runs.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from tokenpo.exceptions import ConfigError

__all__ = ["BUILTIN_VARS", "Pipeline", "Stage", "load_pipeline"]

BUILTIN_VARS = ("workdir", "pipeline_dir")
"""Vars every pipeline has; set by tokenpo, not in ``[vars]`` or with ``--var``."""

_TOP_KEYS = ("pipeline", "vars", "stage")
_PIPELINE_KEYS = ("name", "workdir")
_STAGE_KEYS = ("name", "run", "resume", "inputs", "outputs")
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_VAR_NAME = re.compile(_NAME)
# {{name}} first, so that it is read as an escape rather than as braces around {name}.
_PLACEHOLDER = re.compile(r"\{\{(" + _NAME + r")\}\}|\{(" + _NAME + r")\}")
_NO_VARS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, kw_only=True, slots=True)
class Stage:
    """One ``[[stage]]``, its vars substituted."""

    name: str
    """Unique within the pipeline; what ``--from`` and ``--only`` name."""
    run: tuple[str, ...]
    """The command as written: its first element is ``tokenpo``, ``python`` or a program."""
    resume: tuple[str, ...]
    """Appended to ``run`` when the stage re-runs after an attempt that did not complete."""
    inputs: tuple[Path, ...]
    """Absolute files or directories the stage reads; a newer one makes the stage re-run."""
    outputs: tuple[Path, ...]
    """Absolute paths that exist only once the stage has completed."""

    @property
    def definition(self) -> str:
        """A hash of ``run``, ``inputs`` and ``outputs``: a change to any makes the stage re-run.

        ``resume`` is left out: how to resume does not change what the stage produces.
        """
        text = json.dumps(
            {
                "run": list(self.run),
                "inputs": [str(path) for path in self.inputs],
                "outputs": [str(path) for path in self.outputs],
            },
            sort_keys=True,
        )
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, kw_only=True, slots=True)
class Pipeline:
    """A loaded pipeline file: its stages in order, every var resolved."""

    name: str
    """``[pipeline] name``, or the file's stem."""
    file: Path
    """The pipeline file, absolute."""
    workdir: Path
    """Where stages run and the state file lives; absolute, created when the pipeline runs."""
    vars: Mapping[str, str]
    """Every var's value after substitution and ``--var`` overrides, built-ins included."""
    stages: tuple[Stage, ...]
    """In the file's order, which is the order they run in."""

    @property
    def state_file(self) -> Path:
        """``{workdir}/.tokenpo-pipeline.json``: which stages completed, with what definition."""
        return self.workdir / ".tokenpo-pipeline.json"

    def shown(self, path: Path) -> str:
        """``path`` as messages show it: relative to the workdir when inside it."""
        inside = path.is_relative_to(self.workdir)
        return str(path.relative_to(self.workdir)) if inside else str(path)

    def stage(self, name: str) -> Stage:
        """The stage called ``name``; a :class:`ConfigError` listing the stages if none is."""
        for stage in self.stages:
            if stage.name == name:
                return stage
        names = [stage.name for stage in self.stages]
        raise ConfigError(
            f"{self.file}: no stage {name!r}{_did_you_mean(name, names)}; "
            f"stages: {', '.join(names)}"
        )


def load_pipeline(path: str | os.PathLike[str], vars: Mapping[str, str] = _NO_VARS) -> Pipeline:
    """Read and check a pipeline file; ``vars`` override values of its ``[vars]``.

    Raises:
        ConfigError: the file cannot be read, is not TOML, has an unknown key, a stage without
            ``run``, two stages of one name, or a ``{var}`` that is not defined. The message names
            the file, the stage and the key.
    """
    file = Path(path).absolute()
    try:
        document = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{file}: cannot read the pipeline file: {error.strerror}") from error
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{file}: not valid TOML: {error}") from error
    _check_keys(file, "the top level", document, _TOP_KEYS)
    header = _table(file, document, "pipeline")
    _check_keys(file, "[pipeline]", header, _PIPELINE_KEYS)
    name = _string(file, "[pipeline] name", header.get("name", file.stem))
    workdir_template = _string(file, "[pipeline] workdir", header.get("workdir", "."))
    values = _declared_vars(file, _table(file, document, "vars"), vars)
    resolver = _Resolver(file, values, workdir_template)
    resolved = {var: resolver.value(var) for var in [*values, *BUILTIN_VARS]}
    stages = _stages(file, document.get("stage", []), resolver)
    return Pipeline(
        name=name,
        file=file,
        workdir=Path(resolved["workdir"]),
        vars=MappingProxyType(resolved),
        stages=stages,
    )


def _declared_vars(
    file: Path, table: Mapping[str, Any], overrides: Mapping[str, str]
) -> dict[str, str]:
    """``[vars]`` as strings, with the overrides applied."""
    values = {}
    for key, value in table.items():
        where = f"[vars] {key}"
        if not _VAR_NAME.fullmatch(key):
            raise ConfigError(f"{file}: {where}: a var name is letters, digits and _")
        if key in BUILTIN_VARS:
            raise ConfigError(f"{file}: {where}: {key} is built in and cannot be set in [vars]")
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ConfigError(f"{file}: {where} must be a string or a number, got {value!r}")
        values[key] = str(value)
    for key, value in overrides.items():
        if key not in values:
            known = ", ".join(values) or "none"
            raise ConfigError(
                f"--var {key}: no var {key!r} in [vars] of {file}"
                f"{_did_you_mean(key, values)}; vars: {known}"
            )
        values[key] = value
    return values


class _Resolver:
    """Substitutes ``{name}`` with vars that may themselves hold ``{name}``, refusing cycles."""

    def __init__(self, file: Path, templates: Mapping[str, str], workdir: str) -> None:
        self._file = file
        self._templates = {**templates, "workdir": workdir, "pipeline_dir": ""}
        # Taken as it is: a directory name with braces in it is no placeholder.
        self._values = {"pipeline_dir": str(file.parent)}
        self._resolving: list[str] = []

    def value(self, name: str) -> str:
        if name in self._values:
            return self._values[name]
        if name in self._resolving:
            cycle = " -> ".join([*self._resolving[self._resolving.index(name) :], name])
            raise ConfigError(f"{self._file}: [vars]: the vars refer to each other: {cycle}")
        self._resolving.append(name)
        where = "[pipeline] workdir" if name == "workdir" else f"[vars] {name}"
        value = self.substitute(self._templates[name], where)
        if name == "workdir":
            value = os.path.normpath(self._file.parent / value)
        self._resolving.pop()
        self._values[name] = value
        return value

    def substitute(self, text: str, where: str) -> str:
        """``text`` with each ``{name}`` replaced; ``where`` names the key for errors."""

        def replace(match: re.Match[str]) -> str:
            escaped, name = match.groups()
            if escaped is not None:
                return f"{{{escaped}}}"
            if name not in self._templates:
                known = ", ".join(sorted(self._templates))
                raise ConfigError(
                    f"{self._file}: {where}: unknown var {{{name}}}"
                    f"{_did_you_mean(name, self._templates, '{{{}}}'.format)}; vars: {known} "
                    f"(write {{{{{name}}}}} for a literal {{{name}}})"
                )
            return self.value(name)

        return _PLACEHOLDER.sub(replace, text)


def _stages(file: Path, tables: object, resolver: _Resolver) -> tuple[Stage, ...]:
    if not isinstance(tables, list) or not all(isinstance(table, dict) for table in tables):
        raise ConfigError(f"{file}: stage must be an array of tables ([[stage]])")
    if not tables:
        raise ConfigError(f"{file}: no stages: add at least one [[stage]]")
    positions: dict[str, int] = {}
    stages = []
    for position, table in enumerate(tables, start=1):
        stages.append(_stage(file, position, table, resolver, positions))
    return tuple(stages)


def _stage(
    file: Path,
    position: int,
    table: Mapping[str, Any],
    resolver: _Resolver,
    positions: dict[str, int],
) -> Stage:
    """The stage at ``position`` (from 1); ``positions`` holds the earlier stages' names."""
    label = f"[[stage]] #{position}"
    if "name" not in table:
        raise ConfigError(f"{file}: {label}: name is required")
    name = _string(file, f"{label} name", table["name"])
    if not name:
        raise ConfigError(f"{file}: {label}: name must not be empty")
    if name in positions:
        raise ConfigError(
            f"{file}: {label}: name: {name!r} is already the name of "
            f"[[stage]] #{positions[name]}; stage names must be unique"
        )
    positions[name] = position
    label = f"stage {name!r}"
    _check_keys(file, label, table, _STAGE_KEYS)
    if "run" not in table:
        raise ConfigError(f"{file}: {label}: run is required (the command, as a list)")

    def strings(key: str) -> tuple[str, ...]:
        items = _strings(file, f"{label}: {key}", table.get(key, []))
        return tuple(
            resolver.substitute(item, f"{label}: {key}[{position}]")
            for position, item in enumerate(items)
        )

    run = strings("run")
    if not run or not run[0]:
        raise ConfigError(f"{file}: {label}: run must name a command")
    workdir = Path(resolver.value("workdir"))
    return Stage(
        name=name,
        run=run,
        resume=strings("resume"),
        inputs=tuple(_path(workdir, item) for item in strings("inputs")),
        outputs=tuple(_path(workdir, item) for item in strings("outputs")),
    )


def _path(workdir: Path, text: str) -> Path:
    # Lexically normalized, so that "shards/../shards/x" and "shards/x" compare equal.
    return Path(os.path.normpath(workdir / text))


def _table(file: Path, document: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    table = document.get(key, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{file}: {key} must be a table ([{key}]), got {table!r}")
    return table


def _check_keys(file: Path, where: str, table: Mapping[str, Any], allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    for key in table:
        if key not in allowed:
            raise ConfigError(
                f"{file}: {where}: unknown key {key!r}{_did_you_mean(key, allowed)}; "
                f"allowed: {', '.join(allowed)}"
            )


def _string(file: Path, where: str, value: object) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{file}: {where} must be a string, got {value!r}")
    return value


def _strings(file: Path, where: str, value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{file}: {where} must be a list of strings, got {value!r}")
    return value


def _did_you_mean(word: str, choices: Iterable[str], show: Callable[[str], str] = repr) -> str:
    matches = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {show(matches[0])}?)" if matches else ""
