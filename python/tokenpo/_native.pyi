"""Type stubs of the native extension ``tokenpo._native`` (built from crates/tokenpo-py)."""

from collections.abc import Callable, Sequence

import pyarrow as pa

__version__: str
DEFAULT_MAX_EDIT_DISTANCE: int

class TokenDiff:
    """The diff of one pair of token sequences."""

    @property
    def a_mask(self) -> list[int]:
        """One int per token of ``a``: 1 where it lies outside the longest common subsequence."""
    @property
    def b_mask(self) -> list[int]:
        """One int per token of ``b``: 1 where it lies outside the longest common subsequence."""
    @property
    def edit_distance(self) -> int:
        """Insertions plus deletions turning ``a`` into ``b`` (``len(a) + len(b)`` if unaligned)."""
    @property
    def lcs_len(self) -> int:
        """Length of the longest common subsequence (0 if unaligned)."""
    @property
    def shared_prefix_len(self) -> int:
        """Number of leading tokens both sequences share."""
    @property
    def unaligned(self) -> bool:
        """The edit distance exceeded ``max_edit_distance``; every token is marked."""

def diff_tokens(
    a: Sequence[int], b: Sequence[int], *, max_edit_distance: int = ...
) -> TokenDiff: ...
def diff_batch(
    chosen: pa.Array | pa.ChunkedArray,
    rejected: pa.Array | pa.ChunkedArray,
    *,
    max_edit_distance: int = ...,
) -> pa.RecordBatch: ...
def prep(
    inputs: list[str],
    tokenizer: str,
    out: str,
    config_json: str,
    progress: Callable[[str, int, int, int], None] | None = None,
) -> str: ...
def importance_preset(name: str) -> str: ...
def token_class_name(token_class: int, importance_json: str) -> str: ...
