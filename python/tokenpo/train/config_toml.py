"""Typed dataclass sections to and from TOML tables, for the trainer's config.

Reading: a TOML file and ``section.key=value`` overrides into tables; a section dataclass built
from its table (unknown keys refused with the closest valid one, required keys asked for).
Checking: every field against its annotation (:func:`check_fields`: an int is accepted for a
float, a list for a tuple, nothing else is converted; messages name the full key). Writing:
tables back to TOML text, each key under its field's docstring as a comment.

Field metadata this module reads: :data:`NONE_IN_TOML` and :data:`SPREAD`.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import itertools
import math
import textwrap
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import MISSING, Field, fields, is_dataclass
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import tomli_w

from tokenpo.exceptions import ConfigError

__all__ = [
    "NONE_IN_TOML",
    "SPREAD",
    "apply_override",
    "build_section",
    "check_fields",
    "did_you_mean",
    "field_default",
    "field_docs",
    "field_names",
    "quoted",
    "read_toml",
    "render",
    "toml_table",
]

NONE_IN_TOML = "tokenpo.none_in_toml"
"""Field metadata: the TOML value that stands for None, in a field whose default is not None."""

SPREAD = "tokenpo.spread"
"""Field metadata: this dict holds the section's keys that are not fields (``[loss]`` params)."""


def read_toml(path: Path) -> dict[str, Any]:
    """The tables of the TOML file ``path``; a missing, unreadable or invalid file is a
    :class:`ConfigError` (an invalid one with its line and column)."""
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


def apply_override(tables: dict[str, Any], override: str) -> None:
    """Sets ``section.key=value`` (deeper keys reach into tables) in ``tables``; the value is
    read as TOML, else kept as the string it is."""
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


def build_section(section: str, cls: type[Any], table: Mapping[str, Any]) -> Any:
    """``cls`` built from its ``table`` of section ``section``: unknown keys refused (unless
    a :data:`SPREAD` field takes them), required keys asked for."""
    names = field_names(cls)
    spread = next((f.name for f in fields(cls) if f.metadata.get(SPREAD)), None)
    if spread is None:
        for key in table:
            if key not in names:
                hint = did_you_mean(key, names, f"{section}.{{}}".format) or "."
                raise ConfigError(
                    f"unknown key {section}.{key}{hint} Keys of [{section}]: {', '.join(names)}"
                )
    values = {key: value for key, value in table.items() if key in names and key != spread}
    if spread is not None:
        values[spread] = {key: value for key, value in table.items() if key not in values}
    for f in fields(cls):
        if f.name not in values and field_default(f) is MISSING:
            raise ConfigError(
                f"{section}.{f.name} is required: set it in [{section}] "
                f"or override it with {section}.{f.name}=..."
            )
    return cls(**values)


def check_fields(config: Any, section: str) -> None:
    """Check every field of ``config`` against its annotation; store the checked value."""
    hints = get_type_hints(type(config))
    for f in fields(config):
        key = f"{section}.{f.name}" if section else f.name
        value = _checked(key, getattr(config, f.name), hints[f.name])
        if NONE_IN_TOML in f.metadata and value == f.metadata[NONE_IN_TOML]:
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
        hint = did_you_mean(value, args, repr) if isinstance(value, str) else ""
        raise ConfigError(f"{key} must be one of {quoted(args)}, got {value!r}{hint}")
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
        return f"one of {quoted(args)}"
    names = {
        bool: "a bool (true or false)",
        int: "an int",
        float: "a finite float",
        str: "a string",
    }
    return names.get(expected, f"a {getattr(expected, '__name__', expected)}")


def did_you_mean(name: str, valid: Iterable[str], show: Callable[[str], str]) -> str:
    """``". Did you mean X?"`` with the closest of ``valid`` shown by ``show``, or ``""``."""
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f". Did you mean {show(close[0])}?" if close else ""


def quoted(values: Sequence[Any]) -> str:
    """The reprs of ``values``, comma-separated, for messages."""
    return ", ".join(repr(value) for value in values)


def toml_table(section: str, cls: type[Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """The TOML table of one section from its field values: None left out (or spelled as the
    field's metadata says), the spread field's items moved up into the table."""
    table: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in values:
            continue
        value = values[f.name]
        if value is None:
            if NONE_IN_TOML in f.metadata:
                table[f.name] = f.metadata[NONE_IN_TOML]
            elif f.default is not None:
                raise ConfigError(f"{section}.{f.name} is None, which TOML cannot hold")
        elif f.metadata.get(SPREAD):
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


def render(sections: Mapping[str, type], tables: Mapping[str, Mapping[str, Any]]) -> str:
    """TOML text of the sections, each key under its docstring as a comment.

    Fields missing from a table are written commented out (``# key = <an int>``); tables
    (``[model.gpt]``) follow the section's plain keys, as TOML requires.
    """
    out = ["# tokenpo train config. Override any key with section.key=value (a TOML value)."]
    for section, cls in sections.items():
        table, docs, hints = tables[section], field_docs(cls), get_type_hints(cls)
        lines, subtables = [f"[{section}]"], []
        for f in fields(cls):
            comment = [f"# {line}" for line in textwrap.wrap(docs.get(f.name, ""), 98)]
            if f.metadata.get(SPREAD):
                lines += comment
            elif f.name not in table:
                lines += [*comment, f"# {f.name} = <{_describe(hints[f.name])}>"]
            elif isinstance(table[f.name], Mapping):
                subtables += ["", *comment, _dump(section, f.name, table[f.name])]
            else:
                lines += [*comment, _dump(section, f.name, table[f.name])]
        for key, value in table.items():
            if key in field_names(cls):
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


def field_names(cls: type[Any]) -> tuple[str, ...]:
    """The field names of the dataclass ``cls``, in order."""
    return tuple(f.name for f in fields(cls))


def field_default(f: Field[Any]) -> Any:
    """The default of field ``f`` (its factory called), or ``MISSING``."""
    if f.default_factory is not MISSING:
        return f.default_factory()
    return f.default


def field_docs(cls: type[Any]) -> dict[str, str]:
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
