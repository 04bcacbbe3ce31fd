"""tokenpo: token-level preference optimization for token-critical structured generation."""

from tokenpo._native import __version__
from tokenpo.diff import DEFAULT_MAX_EDIT_DISTANCE, TokenDiff, diff_batch, diff_tokens
from tokenpo.exceptions import (
    InputError,
    InvalidRowError,
    LengthMismatchError,
    SchemaError,
    TokenpoError,
)

__all__ = [
    "DEFAULT_MAX_EDIT_DISTANCE",
    "InputError",
    "InvalidRowError",
    "LengthMismatchError",
    "SchemaError",
    "TokenDiff",
    "TokenpoError",
    "__version__",
    "diff_batch",
    "diff_tokens",
]
