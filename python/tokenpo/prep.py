"""`tokenpo.prep`: raw preference pairs in, prepared shards out (the Rust pipeline).

Reads parquet, Arrow IPC and JSONL files (TRL's standard or conversational format),
tokenizes prompt and completions separately, diffs the completions, weighs each token,
ranks pair difficulty, and writes shards, ``quarantine.jsonl`` and ``manifest.json``.
A killed run re-run with the same arguments resumes and ends byte-identical.

Two engines run the same Rust kernel and write the same output: ``local`` (every core of
this machine, streaming) and ``ray`` (a Ray cluster, through Ray Data; the ``ray`` extra).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tokenpo import _native
from tokenpo.exceptions import ConfigError, InputError, MissingDependencyError

__all__ = [
    "ENGINES",
    "IMPORTANCE_PRESETS",
    "Manifest",
    "PrepOptions",
    "ProgressCallback",
    "ShardInfo",
    "prep",
    "token_class_name",
]

IMPORTANCE_PRESETS = ("default", "tabpo_authors")
"""Named importance coefficient sets: ``default`` (values weigh most, scaffolding least)
and ``tabpo_authors`` (the TAB-PO authors' class weights)."""

ENGINES = ("local", "ray")
"""Where prep runs: ``local`` (this machine's cores) or ``ray`` (a Ray cluster)."""

Engine = Literal["local", "ray"]

ProgressCallback = Callable[[str, int, int, int], None]
"""Called as ``(kind, a, b, c)``: ``("tokenized", rows, pairs, quarantined)`` during the
first pass, ``("written", shards, total, 0)`` during the second."""


@dataclass(kw_only=True, slots=True)
class PrepOptions:
    """How `prep` reads, cuts, weighs and writes. Every field has a sensible default."""

    column_map: dict[str, str] = field(default_factory=dict)
    """Canonical column (prompt, chosen, rejected, score_chosen, score_rejected, id) to
    the name it has in the input files."""
    eos_token: str | None = None
    """EOS token appended to completions; default: the tokenizer config's."""
    max_len: int | None = None
    """Most tokens of prompt + the longer completion; ``None``: no limit."""
    max_prompt_len: int | None = None
    """Most prompt tokens kept when truncating; default: half of ``max_len``."""
    drop_over_length: bool = False
    """Quarantine pairs over ``max_len`` instead of truncating them."""
    shard_rows: int = 100_000
    """Pairs per shard."""
    batch_rows: int = 4096
    """Rows processed together; bounds memory."""
    format: Literal["parquet", "ipc"] = "parquet"
    """Shard format: zstd parquet, or uncompressed Arrow IPC (memory-mappable)."""
    importance: str = "default"
    """Importance preset, one of `IMPORTANCE_PRESETS`."""
    importance_overrides: dict[str, Any] = field(default_factory=dict)
    """Coefficients replacing the preset's, e.g. ``{"diff_factor": 2.0}``."""
    max_edit_distance: int = _native.DEFAULT_MAX_EDIT_DISTANCE
    """Edit distance beyond which a pair is unaligned (every token in the diff)."""

    def __post_init__(self) -> None:
        least = {
            "max_len": 2,
            "max_prompt_len": 0,
            "shard_rows": 1,
            "batch_rows": 1,
            "max_edit_distance": 0,
        }
        for name, minimum in least.items():
            value = getattr(self, name)
            if value is not None and value < minimum:
                raise ConfigError(f"{name}: must be at least {minimum}, got {value}")
        if self.max_prompt_len is not None and self.max_len is None:
            raise ConfigError("max_prompt_len: needs max_len")
        if self.drop_over_length and self.max_len is None:
            raise ConfigError("drop_over_length: needs max_len (the length pairs are cut to)")
        if self.importance not in IMPORTANCE_PRESETS:
            raise ConfigError(
                f"importance: unknown preset {self.importance!r}; "
                f"choose one of {', '.join(IMPORTANCE_PRESETS)}"
            )
        if self.format not in ("parquet", "ipc"):
            raise ConfigError(f"format: must be 'parquet' or 'ipc', got {self.format!r}")

    def to_native(self) -> str:
        """The JSON the Rust `PrepConfig` reads."""
        limit = None
        if self.max_len is not None:
            prompt_len = (
                self.max_prompt_len if self.max_prompt_len is not None else self.max_len // 2
            )
            limit = {
                "max_len": self.max_len,
                "max_prompt_len": prompt_len,
                "drop_over_length": self.drop_over_length,
            }
        importance = json.loads(_native.importance_preset(self.importance))
        importance.update(self.importance_overrides)
        return json.dumps(
            {
                "column_map": self.column_map,
                "eos_token": self.eos_token,
                "limit": limit,
                "shard_rows": self.shard_rows,
                "batch_rows": self.batch_rows,
                "format": self.format,
                "importance": importance,
                "max_edit_distance": self.max_edit_distance,
            }
        )


@dataclass(frozen=True, slots=True)
class ShardInfo:
    """One output file of a prep run."""

    path: Path
    """Absolute path."""
    rows: int
    """Rows it holds."""
    bytes: int
    """Size on disk."""
    sha256: str
    """Checksum."""


@dataclass(frozen=True, slots=True)
class Manifest:
    """The manifest of a prepared directory (``manifest.json``)."""

    directory: Path
    """The prepared directory."""
    shards: list[ShardInfo]
    """The shards, in order."""
    quarantine: ShardInfo
    """``quarantine.jsonl``."""
    summary: dict[str, Any]
    """Corpus statistics: rows read, pairs, quarantine reasons, mean lengths, ..."""
    raw: dict[str, Any]
    """The whole manifest as read: schema version, tokenizer, config, inputs, ..."""

    @property
    def pairs(self) -> int:
        """Pairs written."""
        return int(self.summary["pairs"])

    @property
    def importance(self) -> dict[str, Any]:
        """The importance coefficients of the run."""
        return dict(self.raw["config"]["importance"])

    @classmethod
    def from_json(cls, directory: Path, text: str) -> Manifest:
        """Parses a manifest written for ``directory``."""
        raw = json.loads(text)

        def shard(record: dict[str, Any]) -> ShardInfo:
            return ShardInfo(
                path=directory / record["path"],
                rows=record["rows"],
                bytes=record["bytes"],
                sha256=record["sha256"],
            )

        return cls(
            directory=directory,
            shards=[shard(record) for record in raw["shards"]],
            quarantine=shard(raw["quarantine"]),
            summary=raw["summary"],
            raw=raw,
        )

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        """Reads ``directory/manifest.json``."""
        path = directory / "manifest.json"
        if not path.is_file():
            raise InputError(f"{directory}: no manifest.json; is it a prep output?", file=str(path))
        return cls.from_json(directory, path.read_text())


def prep(
    inputs: Sequence[str | Path],
    tokenizer: str | Path,
    out: str | Path,
    options: PrepOptions | None = None,
    progress: ProgressCallback | None = None,
    *,
    engine: Engine = "local",
    ray_address: str | None = None,
) -> Manifest:
    """Prepare raw pair files (paths or globs) into shards in ``out``.

    ``engine="ray"`` runs on the Ray cluster at ``ray_address`` (``HOST:6379``; default: the
    session already open, else ``RAY_ADDRESS``, else a new local instance). Both engines
    write the same shards, quarantine file and manifest.

    Raises:
        InputError: an input file or the tokenizer cannot be used (names the file), or an
            input lies inside ``out``.
        NoPairsError: no pair to write: the inputs hold no rows, or every row was set aside
            (``quarantine.jsonl`` is written all the same, with each row's reason).
        ConfigError: an option is out of range (names the option), or a shard would hold
            more tokens in one column than Arrow's 32-bit list offsets address.
        MissingDependencyError: ``engine="ray"`` without Ray installed.
    """
    options = options or PrepOptions()
    out_dir = Path(out)
    paths = [str(path) for path in inputs]
    if engine not in ENGINES:
        raise ConfigError(f"engine: must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "local":
        if ray_address is not None:
            raise ConfigError("ray_address: only used with engine='ray'")
        text = _native.prep(paths, str(tokenizer), str(out_dir), options.to_native(), progress)
    else:
        prep_on_ray = _ray_engine()
        text = prep_on_ray(
            paths, str(tokenizer), out_dir, options.to_native(), progress, ray_address
        )
    return Manifest.from_json(out_dir, text)


def _ray_engine() -> Callable[
    [list[str], str, Path, str, ProgressCallback | None, str | None], str
]:
    """The Ray engine, imported only when asked for: Ray is an optional dependency."""
    try:
        from tokenpo.prep_ray import prep_on_ray
    except ImportError as error:
        raise MissingDependencyError(
            f"engine 'ray' needs Ray, which cannot be imported ({error}); "
            "install it with: pip install 'tokenpo[ray]'"
        ) from error
    return prep_on_ray


def token_class_name(token_class: int, importance: dict[str, Any]) -> str:
    """Readable name of a token class of the ``*_class`` columns: ``text``, ``scaffolding``,
    ``key``, ``value`` or ``value:<key>``, for a run's importance coefficients (the names
    come from the Rust classifier, so the two never disagree)."""
    return _native.token_class_name(token_class, json.dumps(importance))
