"""The exceptions tokenpo raises, one hierarchy under :class:`TokenpoError`.

The native extension raises these same classes (it looks them up here), so
``except tokenpo.exceptions.InputError`` catches bad input from Rust and Python alike.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "InputError",
    "InvalidRowError",
    "LengthMismatchError",
    "MissingDependencyError",
    "NoPairsError",
    "SchemaError",
    "TokenizerError",
    "TokenpoError",
]


class TokenpoError(Exception):
    """Base class of every error tokenpo raises on purpose."""


class ConfigError(TokenpoError, ValueError):
    """An option is out of range or inconsistent with another; the message names it."""


class MissingDependencyError(TokenpoError, ImportError):
    """An optional dependency that the asked-for feature needs is not installed; the
    message says which extra to install."""


class InputError(TokenpoError, ValueError):
    """Input data that tokenpo cannot use. Says where: the file, row and field, when known."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.file = file
        """The input file, when the data came from one."""
        self.row = row
        """The row at fault, counted from 0 across all chunks."""
        self.field = field
        """The column or argument at fault."""


class InvalidRowError(InputError):
    """One row holds a value that cannot be used: a null, a negative token id, ..."""


class SchemaError(InputError):
    """A column is missing or has a type tokenpo does not accept."""


class LengthMismatchError(InputError):
    """Two columns that must be row-aligned have different lengths."""


class TokenizerError(InputError):
    """The tokenizer.json or model directory cannot be loaded or used."""


class NoPairsError(InputError):
    """``prep`` found no pair to write: the inputs hold no rows, or every row was set aside.
    The rows set aside, each with its reason, are in the quarantine file all the same."""

    def __init__(self, message: str, *, rows_read: int, quarantine: str) -> None:
        super().__init__(message)
        self.rows_read = rows_read
        """Rows read from the inputs, every one of them quarantined."""
        self.quarantine = quarantine
        """The quarantine file, which lists each row with its reason."""
