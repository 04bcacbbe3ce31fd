"""The token diff between chosen and rejected completions (Myers, in Rust).

A token is *in the diff* when it lies outside a longest common subsequence of the two
completions. Pairs whose edit distance exceeds ``max_edit_distance`` are reported as
``unaligned`` with every token marked, which bounds the cost on unrelated completions.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from tokenpo import _native
from tokenpo._native import DEFAULT_MAX_EDIT_DISTANCE, TokenDiff

__all__ = ["DEFAULT_MAX_EDIT_DISTANCE", "TokenDiff", "diff_batch", "diff_tokens"]


def diff_tokens(
    a: Sequence[int], b: Sequence[int], *, max_edit_distance: int = DEFAULT_MAX_EDIT_DISTANCE
) -> TokenDiff:
    """Diff two sequences of token ids.

    Raises:
        InvalidRowError: a token id is negative (the message gives its position).
    """
    return _native.diff_tokens(a, b, max_edit_distance=max_edit_distance)


def diff_batch(
    chosen: pa.Array | pa.ChunkedArray,
    rejected: pa.Array | pa.ChunkedArray,
    *,
    max_edit_distance: int = DEFAULT_MAX_EDIT_DISTANCE,
) -> pa.RecordBatch:
    """Diff row ``i`` of ``chosen`` against row ``i`` of ``rejected``, for every row.

    Both columns hold token ids as ``list`` or ``large_list`` of ``int32``, ``uint32`` or
    ``int64``, as an Array or a ChunkedArray (sliced or not). They cross into Rust through
    the Arrow C data interface without a copy; rows run in parallel on all cores with the
    GIL released.

    Returns:
        A record batch with one row per pair: ``chosen_diff`` and ``rejected_diff``
        (``list<uint8>``, 1 outside the LCS), ``edit_distance``, ``lcs_len``,
        ``shared_prefix_len`` (``uint32``) and ``unaligned`` (``bool``).

    Raises:
        InvalidRowError: a row is null or holds a null or negative token id.
        SchemaError: a column is not a list of integer token ids.
        LengthMismatchError: the columns have different lengths.
    """
    return _native.diff_batch(chosen, rejected, max_edit_distance=max_edit_distance)
