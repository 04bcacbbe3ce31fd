"""The token diff from Python: oracles (a plain DP, difflib), Arrow layouts, errors."""

from __future__ import annotations

import difflib
import re

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tokenpo
from tokenpo import InvalidRowError, LengthMismatchError, SchemaError

tokens = st.lists(st.integers(min_value=0, max_value=5), max_size=40)


def lcs_len_dp(a: list[int], b: list[int]) -> int:
    """Textbook O(N·M) LCS length: the exact oracle."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def difflib_common_len(a: list[int], b: list[int]) -> int:
    """Tokens difflib matches: a common subsequence, so a lower bound on the LCS length."""
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    return sum(block.size for block in matcher.get_matching_blocks())


def unmasked(sequence: list[int], mask: list[int]) -> list[int]:
    return [token for token, flag in zip(sequence, mask, strict=True) if flag == 0]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(tokens, tokens), min_size=1, max_size=20))
def test_diff_batch_matches_the_dp_and_bounds_difflib(pairs: list[tuple[list[int], list[int]]]):
    chosen = pa.array([a for a, _ in pairs], pa.list_(pa.int64()))
    rejected = pa.array([b for _, b in pairs], pa.list_(pa.int64()))
    result = tokenpo.diff_batch(chosen, rejected).to_pydict()
    for row, (a, b) in enumerate(pairs):
        lcs = lcs_len_dp(a, b)
        assert result["lcs_len"][row] == lcs
        assert result["lcs_len"][row] >= difflib_common_len(a, b)
        assert result["edit_distance"][row] == len(a) + len(b) - 2 * lcs
        common = unmasked(a, result["chosen_diff"][row])
        assert common == unmasked(b, result["rejected_diff"][row])
        assert len(common) == lcs
        assert not result["unaligned"][row]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 1000), min_size=1, max_size=60, unique=True),
    st.integers(0, 10_000),
    st.integers(1001, 2000),
)
def test_one_substitution_agrees_with_difflib(sequence: list[int], at: int, new_token: int):
    """Distinct tokens and one fresh substitute: difflib's greedy matching is exact here."""
    changed = sequence.copy()
    changed[at % len(sequence)] = new_token
    result = tokenpo.diff_tokens(sequence, changed)
    assert result.lcs_len == difflib_common_len(sequence, changed) == len(sequence) - 1
    assert result.a_mask.count(1) == 1


def test_diff_tokens_reports_every_figure():
    result = tokenpo.diff_tokens([5, 6, 7, 8, 9], [5, 6, 1, 8, 9, 3])
    assert result.a_mask == [0, 0, 1, 0, 0]
    assert result.b_mask == [0, 0, 1, 0, 0, 1]
    assert (result.edit_distance, result.lcs_len, result.shared_prefix_len) == (3, 4, 2)
    assert result.unaligned is False


def test_a_pair_over_the_cap_is_unaligned_with_every_token_marked():
    result = tokenpo.diff_tokens([1, 2, 3], [4, 5, 6], max_edit_distance=5)
    assert result.unaligned
    assert result.a_mask == [1, 1, 1]
    assert result.b_mask == [1, 1, 1]
    assert (result.edit_distance, result.lcs_len) == (6, 0)
    assert not tokenpo.diff_tokens([1, 2, 3], [4, 5, 6], max_edit_distance=6).unaligned


def test_output_schema():
    batch = tokenpo.diff_batch(pa.array([[1, 2]]), pa.array([[1, 3]]))
    assert batch.schema.names == [
        "chosen_diff",
        "rejected_diff",
        "edit_distance",
        "lcs_len",
        "shared_prefix_len",
        "unaligned",
    ]
    assert batch.schema.field("chosen_diff").type == pa.list_(pa.uint8())
    assert batch.schema.field("edit_distance").type == pa.uint32()
    assert batch.schema.field("unaligned").type == pa.bool_()


PAIRS = [([1, 2, 3], [1, 3]), ([4, 5], [4, 5, 6]), ([7], [8]), ([], [9, 9]), ([1, 1], [1, 1])]


def expected_rows(pairs: list[tuple[list[int], list[int]]]) -> dict[str, list[object]]:
    chosen = pa.array([a for a, _ in pairs], pa.list_(pa.int64()))
    rejected = pa.array([b for _, b in pairs], pa.list_(pa.int64()))
    return tokenpo.diff_batch(chosen, rejected).to_pydict()


@pytest.mark.parametrize(
    "list_type",
    [
        pa.list_(pa.int32()),
        pa.list_(pa.uint32()),
        pa.list_(pa.int64()),
        pa.large_list(pa.int32()),
        pa.large_list(pa.uint32()),
        pa.large_list(pa.int64()),
    ],
)
def test_every_supported_list_type_gives_the_same_rows(list_type: pa.DataType):
    chosen = pa.array([a for a, _ in PAIRS], list_type)
    rejected = pa.array([b for _, b in PAIRS], list_type)
    assert tokenpo.diff_batch(chosen, rejected).to_pydict() == expected_rows(PAIRS)


def test_mixed_id_types_on_the_two_sides():
    chosen = pa.array([a for a, _ in PAIRS], pa.list_(pa.int32()))
    rejected = pa.array([b for _, b in PAIRS], pa.large_list(pa.uint32()))
    assert tokenpo.diff_batch(chosen, rejected).to_pydict() == expected_rows(PAIRS)


def test_chunked_arrays_with_different_chunk_boundaries():
    chosen = pa.chunked_array(
        [
            pa.array([a for a, _ in PAIRS[:2]]),
            pa.array([a for a, _ in PAIRS[2:]], pa.list_(pa.int64())),
        ]
    )
    rejected = pa.chunked_array(
        [pa.array([b for _, b in PAIRS[:4]]), pa.array([b for _, b in PAIRS[4:]])]
    )
    assert tokenpo.diff_batch(chosen, rejected).to_pydict() == expected_rows(PAIRS)


def test_sliced_arrays_with_non_zero_offsets():
    padded = [([99], [98])] * 3 + PAIRS + [([97], [96])] * 2
    chosen = pa.array([a for a, _ in padded]).slice(3, len(PAIRS))
    rejected = pa.array([b for _, b in padded]).slice(3, len(PAIRS))
    assert chosen.offset == 3
    assert tokenpo.diff_batch(chosen, rejected).to_pydict() == expected_rows(PAIRS)


def test_a_sliced_child_array_with_nulls_outside_the_rows_is_fine():
    values = pa.array([None, 1, 2, 3, None], pa.int32())
    chosen = pa.ListArray.from_arrays(pa.array([1, 4], pa.int32()), values)
    rejected = pa.array([[1, 3]], pa.list_(pa.int32()))
    assert tokenpo.diff_batch(chosen, rejected).column("lcs_len").to_pylist() == [2]


def test_empty_input_gives_an_empty_batch():
    empty = pa.array([], pa.list_(pa.int32()))
    assert tokenpo.diff_batch(empty, empty).num_rows == 0
    no_chunks = pa.chunked_array([], pa.list_(pa.int32()))
    assert tokenpo.diff_batch(no_chunks, no_chunks).num_rows == 0


def test_a_null_row_names_the_row_and_field():
    chosen = pa.chunked_array([pa.array([[1]]), pa.array([[2], None])])
    with pytest.raises(InvalidRowError, match=re.escape("row 2, field 'chosen': is null")) as info:
        tokenpo.diff_batch(chosen, pa.array([[1], [2], [3]]))
    assert (info.value.row, info.value.field) == (2, "chosen")


def test_a_negative_id_names_the_row_field_and_position():
    rejected = pa.array([[1], [2, 3, -7]], pa.list_(pa.int32()))
    message = "row 1, field 'rejected': token id -7 at position 2 is negative"
    with pytest.raises(InvalidRowError, match=re.escape(message)):
        tokenpo.diff_batch(pa.array([[1], [2]]), rejected)


def test_a_null_token_names_the_row_and_position():
    chosen = pa.array([[1, 2], [3, None]], pa.list_(pa.int64()))
    with pytest.raises(
        InvalidRowError, match=re.escape("row 1, field 'chosen': token at position 1 is null")
    ):
        tokenpo.diff_batch(chosen, pa.array([[1], [2]]))


def test_arrays_of_different_lengths():
    with pytest.raises(LengthMismatchError, match="'chosen' has 2 rows but 'rejected' has 1"):
        tokenpo.diff_batch(pa.array([[1], [2]]), pa.array([[1]]))


def test_a_column_that_is_not_token_lists():
    with pytest.raises(SchemaError, match="field 'chosen': expected a list or large_list of int32"):
        tokenpo.diff_batch(pa.array([["a"]]), pa.array([[1]]))
    with pytest.raises(SchemaError, match="field 'rejected'"):
        tokenpo.diff_batch(pa.array([[1]]), pa.array([1.5]))


def test_diff_tokens_rejects_negative_ids():
    with pytest.raises(InvalidRowError, match=re.escape("field 'b': token id -3 at position 1")):
        tokenpo.diff_tokens([1, 2], [2, -3])


def test_errors_are_tokenpo_and_value_errors():
    with pytest.raises(ValueError, match="negative"):
        tokenpo.diff_tokens([-1], [])
    assert issubclass(InvalidRowError, tokenpo.TokenpoError)
