"""tokenpo: token-level preference optimization for token-critical structured generation."""

from tokenpo._native import __version__
from tokenpo.diff import DEFAULT_MAX_EDIT_DISTANCE, TokenDiff, diff_batch, diff_tokens
from tokenpo.exceptions import (
    ConfigError,
    InputError,
    InvalidRowError,
    LengthMismatchError,
    MissingDependencyError,
    NoPairsError,
    SchemaError,
    TokenizerError,
    TokenpoError,
)
from tokenpo.prep import Manifest, PrepOptions, prep
from tokenpo.stats import PairStats, compute_stats

__all__ = [
    "DEFAULT_MAX_EDIT_DISTANCE",
    "ConfigError",
    "InputError",
    "InvalidRowError",
    "LengthMismatchError",
    "Manifest",
    "MissingDependencyError",
    "NoPairsError",
    "PairStats",
    "PrepOptions",
    "SchemaError",
    "TokenDiff",
    "TokenizerError",
    "TokenpoError",
    "__version__",
    "compute_stats",
    "diff_batch",
    "diff_tokens",
    "prep",
]
