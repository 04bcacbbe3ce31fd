"""Turning pairs into one forward pass: prefix sharing, packing, and the padded oracle.

Layout ``shared`` (the default) writes each pair once: its prompt and the completion prefix
both sides share, then the chosen suffix, then the rejected suffix. The rejected suffix may not
see the chosen one, and its position ids continue from the shared prefix, so every token gets
exactly the context it has in its own sequence. With ``row_tokens`` several pairs are packed
into one row; the attention mask keeps them apart. For a pair with prompt ``p``, completions
``c`` and ``r`` and shared prefix ``s`` this costs ``p + c + r - s`` tokens where padded rows
cost ``2p + c + r`` plus padding.

Layout ``padded`` is the plain way and the oracle: chosen and rejected as separate
right-padded rows (prompt + completion), with the ordinary causal mask.

Either way the batch says, for every completion token, which flat position of the model's
output predicts it (``chosen_index``/``rejected_index``): per-token log-probs come back in the
``[B, T]`` layout :class:`tokenpo.losses.PairLogps` expects.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from tokenpo.data.dataset import PairRows, Ragged
from tokenpo.exceptions import InputError

__all__ = ["Layout", "PackedBatch", "collate"]

Layout = Literal["shared", "padded"]


@dataclass(frozen=True, kw_only=True, slots=True)
class PackedBatch:
    """Model inputs for ``B`` pairs in ``R`` rows of ``L`` tokens, and their targets."""

    input_ids: Tensor
    """``[R, L]`` int64; padding holds token 0."""
    position_ids: Tensor
    """``[R, L]`` int64."""
    attention_mask: Tensor | None
    """``[R, 1, L, L]`` bool, ``True`` where a query may attend a key; ``None``: causal."""
    chosen_index: Tensor
    """``[B, T]`` int64: the flat position (``row * L + column``) whose output predicts each
    chosen token; 0 on padding."""
    rejected_index: Tensor
    """``[B, T]`` int64, the same for the rejected tokens."""
    chosen_ids: Tensor
    """``[B, T]`` int64 chosen completion tokens; 0 on padding."""
    rejected_ids: Tensor
    """``[B, T]`` int64 rejected completion tokens."""
    chosen_mask: Tensor
    """``[B, T]`` bool, real chosen tokens."""
    rejected_mask: Tensor
    """``[B, T]`` bool, real rejected tokens."""
    chosen_weight: Tensor
    """``[B, T]`` float32 importance weights from prep; 0 on padding."""
    rejected_weight: Tensor
    """``[B, T]`` float32."""
    chosen_diff: Tensor
    """``[B, T]`` bool, chosen tokens outside the LCS."""
    rejected_diff: Tensor
    """``[B, T]`` bool."""
    difficulty: Tensor
    """``[B]`` float32."""
    ref_chosen: Tensor | None
    """``[B, T]`` float32 stored reference log-probs, when the shards have them."""
    ref_rejected: Tensor | None
    """``[B, T]`` float32."""
    tokens: int
    """Real (non-padding) tokens in ``input_ids``."""

    @property
    def pairs(self) -> int:
        """``B``."""
        return int(self.chosen_ids.shape[0])

    def to(self, device: torch.device | str) -> PackedBatch:
        """The same batch with every tensor on ``device``."""
        moved: dict[str, Any] = {
            item.name: value.to(device, non_blocking=True)
            for item in fields(self)
            if isinstance(value := getattr(self, item.name), Tensor)
        }
        return replace(self, **moved)


def collate(
    rows: PairRows, *, layout: Layout = "shared", row_tokens: int | None = None
) -> PackedBatch:
    """Lay out ``rows`` for one forward pass.

    ``row_tokens`` packs pairs into rows of that many tokens, first fit, longest first
    (``shared`` layout only; rows are at least as long as the longest pair, so one longer
    than ``row_tokens`` is packed with others into rows of its length); ``None`` gives each
    pair its own row.

    Raises:
        InputError: a pair has an empty prompt (its first completion token would have no
            context), or ``row_tokens`` is set with the padded layout.
    """
    for index, length in enumerate(rows.prompt_ids.lengths):
        if length == 0:
            raise InputError(
                f"pair {rows.pair_id[index]!r} has an empty prompt: its first completion token "
                "has no context to be predicted from",
                field="prompt_ids",
            )
    if layout == "padded":
        if row_tokens is not None:
            raise InputError("row_tokens packs pairs in the shared layout only")
        inputs, chosen_index, rejected_index = _padded_inputs(rows)
    else:
        inputs, chosen_index, rejected_index = _shared_inputs(rows, row_tokens)
    targets = _Targets(rows)
    return PackedBatch(
        input_ids=torch.from_numpy(inputs.ids),
        position_ids=torch.from_numpy(inputs.positions),
        attention_mask=inputs.attention_mask(),
        chosen_index=torch.from_numpy(chosen_index),
        rejected_index=torch.from_numpy(rejected_index),
        chosen_ids=targets.pad(rows.chosen_ids, np.int64),
        rejected_ids=targets.pad(rows.rejected_ids, np.int64),
        chosen_mask=targets.mask(rows.chosen_ids),
        rejected_mask=targets.mask(rows.rejected_ids),
        chosen_weight=targets.pad(rows.chosen_weight, np.float32),
        rejected_weight=targets.pad(rows.rejected_weight, np.float32),
        chosen_diff=targets.pad(rows.chosen_diff, np.bool_),
        rejected_diff=targets.pad(rows.rejected_diff, np.bool_),
        difficulty=torch.from_numpy(np.ascontiguousarray(rows.difficulty, dtype=np.float32)),
        ref_chosen=None if rows.ref_chosen is None else targets.pad(rows.ref_chosen, np.float32),
        ref_rejected=(
            None if rows.ref_rejected is None else targets.pad(rows.ref_rejected, np.float32)
        ),
        tokens=inputs.tokens,
    )


class _Targets:
    """Pads per-completion-token columns to ``[B, T]``, ``T`` the longest completion."""

    def __init__(self, rows: PairRows) -> None:
        self.width = _width(rows)

    def pad(self, column: Ragged, dtype: type[np.generic]) -> Tensor:
        lengths = column.lengths
        out = np.zeros((len(lengths), self.width), dtype=dtype)
        out[_row_mask(lengths, self.width)] = column.values
        return torch.from_numpy(out)

    def mask(self, column: Ragged) -> Tensor:
        return torch.from_numpy(_row_mask(column.lengths, self.width))


def _row_mask(lengths: np.ndarray, width: int) -> np.ndarray:
    """``[B, width]`` bool, the first ``lengths[b]`` entries of row ``b`` set."""
    return np.arange(width)[None, :] < lengths[:, None]


class _Rows:
    """Input rows under construction, with what each token may attend.

    Token ``i`` may attend key ``j <= i`` in its own pair (``j >= pair_start[i]``) that lies in
    the shared part (``j < shared_end[i]``) or in its own branch (``j >= branch_start[i]``).
    Padding points all three at itself, so it attends only itself (no all-masked row, no NaN).
    """

    def __init__(self, rows: int, length: int, *, causal_only: bool) -> None:
        self.ids = np.zeros((rows, length), dtype=np.int64)
        self.positions = np.zeros((rows, length), dtype=np.int64)
        self.causal_only = causal_only
        self.tokens = 0
        columns = np.broadcast_to(np.arange(length), (rows, length))
        self.pair_start = columns.copy()
        self.shared_end = columns.copy()
        self.branch_start = columns.copy()

    @property
    def length(self) -> int:
        return int(self.ids.shape[1])

    def attention_mask(self) -> Tensor | None:
        if self.causal_only:
            return None
        key = torch.arange(self.length)
        pair_start, shared_end, branch_start = (
            torch.from_numpy(array)[:, :, None]
            for array in (self.pair_start, self.shared_end, self.branch_start)
        )
        query = key[:, None]
        visible = (
            (key <= query) & (key >= pair_start) & ((key < shared_end) | (key >= branch_start))
        )
        return visible[:, None]


def _padded_inputs(rows: PairRows) -> tuple[_Rows, np.ndarray, np.ndarray]:
    prompts, chosen, rejected = rows.prompt_ids, rows.chosen_ids, rows.rejected_ids
    lengths = prompts.lengths[:, None] + np.stack([chosen.lengths, rejected.lengths], axis=1)
    inputs = _Rows(2 * len(rows), int(lengths.max()), causal_only=True)
    inputs.positions[:] = np.arange(inputs.length)
    indices = []
    for side, completions in enumerate((chosen, rejected)):
        index = np.zeros((len(rows), _width(rows)), dtype=np.int64)
        for pair in range(len(rows)):
            row = 2 * pair + side
            prompt, completion = prompts.row(pair), completions.row(pair)
            p, c = len(prompt), len(completion)
            inputs.ids[row, :p] = prompt
            inputs.ids[row, p : p + c] = completion
            inputs.tokens += p + c
            index[pair, :c] = row * inputs.length + np.arange(p - 1, p + c - 1)
        indices.append(index)
    return inputs, indices[0], indices[1]


@dataclass(frozen=True, slots=True)
class _PairShape:
    prompt: int
    chosen: int
    rejected: int
    shared: int
    """Completion prefix shared by both sides, at most the shorter completion."""

    @property
    def tokens(self) -> int:
        return self.prompt + self.chosen + self.rejected - self.shared


def _shared_inputs(rows: PairRows, row_tokens: int | None) -> tuple[_Rows, np.ndarray, np.ndarray]:
    shapes = [
        _PairShape(
            prompt=int(rows.prompt_ids.lengths[pair]),
            chosen=int(rows.chosen_ids.lengths[pair]),
            rejected=int(rows.rejected_ids.lengths[pair]),
            shared=int(
                min(
                    rows.shared_prefix_len[pair],
                    rows.chosen_ids.lengths[pair],
                    rows.rejected_ids.lengths[pair],
                )
            ),
        )
        for pair in range(len(rows))
    ]
    placements, row_lengths = _pack([shape.tokens for shape in shapes], row_tokens)
    inputs = _Rows(len(row_lengths), max(row_lengths), causal_only=False)
    width = _width(rows)
    chosen_index = np.zeros((len(rows), width), dtype=np.int64)
    rejected_index = np.zeros((len(rows), width), dtype=np.int64)
    for pair, (shape, (row, start)) in enumerate(zip(shapes, placements, strict=True)):
        _place_pair(inputs, rows, pair, shape, row, start)
        flat_start = row * inputs.length + start
        p, c, s = shape.prompt, shape.chosen, shape.shared
        chosen_index[pair, :c] = flat_start + np.arange(p - 1, p + c - 1)
        # Rejected token j is predicted at logical position q = p + j - 1; past the shared
        # prefix, the rejected suffix sits after the chosen one, c - s tokens further on.
        logical = np.arange(p - 1, p + shape.rejected - 1)
        rejected_index[pair, : shape.rejected] = (
            flat_start + logical + np.where(logical < p + s, 0, c - s)
        )
    return inputs, chosen_index, rejected_index


def _place_pair(
    inputs: _Rows, rows: PairRows, pair: int, shape: _PairShape, row: int, start: int
) -> None:
    p, c, r, s = shape.prompt, shape.chosen, shape.rejected, shape.shared
    shared_end, rejected_start, end = start + p + s, start + p + c, start + shape.tokens
    ids, positions = inputs.ids[row], inputs.positions[row]
    ids[start : start + p] = rows.prompt_ids.row(pair)
    ids[start + p : rejected_start] = rows.chosen_ids.row(pair)
    ids[rejected_start:end] = rows.rejected_ids.row(pair)[s:]
    positions[start:rejected_start] = np.arange(p + c)
    positions[rejected_start:end] = np.arange(p + s, p + r)
    inputs.pair_start[row, start:end] = start
    inputs.shared_end[row, start:end] = shared_end
    inputs.branch_start[row, start:shared_end] = start
    inputs.branch_start[row, shared_end:rejected_start] = shared_end
    inputs.branch_start[row, rejected_start:end] = rejected_start
    inputs.tokens += shape.tokens


def _pack(lengths: list[int], row_tokens: int | None) -> tuple[list[tuple[int, int]], list[int]]:
    """Places segments in rows: first fit, longest first, in rows of ``row_tokens`` tokens or
    of the longest segment when that is longer (``None``: a segment per row, in order).
    Returns each segment's ``(row, start)`` and each row's length.

    Rows are padded to the longest one anyway, so filling them up to it costs nothing; the
    sort only decides where each segment goes, the batch keeps its order of pairs.
    """
    if row_tokens is None:
        starts = [(row, 0) for row in range(len(lengths))]
        return starts, list(lengths)
    budget = max(row_tokens, *lengths) if lengths else row_tokens
    placements = [(0, 0)] * len(lengths)
    row_lengths: list[int] = []
    for segment in sorted(range(len(lengths)), key=lambda index: -lengths[index]):
        length = lengths[segment]
        row = next((row for row, used in enumerate(row_lengths) if used + length <= budget), None)
        if row is None:
            row = len(row_lengths)
            row_lengths.append(0)
        placements[segment] = (row, row_lengths[row])
        row_lengths[row] += length
    return placements, row_lengths


def _width(rows: PairRows) -> int:
    return int(max(rows.chosen_ids.lengths.max(), rows.rejected_ids.lengths.max()))
