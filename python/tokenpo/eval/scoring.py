"""Structured-output scores: JSON and schema validity, micro-F1 at four levels, per-code F1 and
a confusion table, from gold and predicted annotation lists.

Every count is over multisets, summed over examples (micro averaging): an annotation predicted
twice where gold has it once is one true positive and one false positive. An unparseable
prediction (``None``) predicts nothing, so each of its gold annotations is a false negative.
A parseable prediction that breaks the schema is scored as it is: its annotations simply
cannot match gold ones with allowed labels.

The four levels compare annotations by a key:

======== ============================= ==========================================
level    key                           a true positive means
======== ============================= ==========================================
code     ``code``                      the right code, whatever subcode and span
subcode  ``(code, subcode)``           the right label
span     ``span``                      the exact evidence string, whatever label
joint    ``(code, subcode, span)``     all three right
======== ============================= ==========================================

At each level, with ``tp`` the summed multiset intersection, ``predicted`` and ``gold`` the
summed list lengths: precision = tp / predicted, recall = tp / gold, F1 = 2 tp / (predicted +
gold). A ratio whose denominator is 0 is 1.0 when both counts are 0 (nothing to find and
nothing claimed) and 0.0 otherwise.

Per-code F1 is the joint level restricted to one code: gold annotations whose gold code is
``c`` against predicted annotations whose predicted code is ``c``. A joint true positive has
the same code on both sides, so the per-code true positives add up to the joint ones.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tokenpo.exceptions import InputError

__all__ = [
    "ALIGNMENT_KEYS",
    "AnnotationLike",
    "Label",
    "MicroF1",
    "SchemaLike",
    "StructuredScores",
    "align",
    "score_annotations",
]

Label = tuple[str, str]
"""``(code, subcode)``."""


class AnnotationLike(Protocol):
    """What scoring reads of an annotation (``tokenpo.synthetic.task.Annotation`` is one)."""

    @property
    def code(self) -> str: ...
    @property
    def subcode(self) -> str: ...
    @property
    def span(self) -> str: ...


class SchemaLike(Protocol):
    """The code -> subcode table a prediction must respect (``tokenpo.synthetic.task.SCHEMA``)."""

    def allows(self, code: str, subcode: str) -> bool: ...


_Key = Callable[[AnnotationLike], Hashable]

_LEVELS: dict[str, _Key] = {
    "code": lambda a: a.code,
    "subcode": lambda a: (a.code, a.subcode),
    "span": lambda a: a.span,
    "joint": lambda a: (a.code, a.subcode, a.span),
}

ALIGNMENT_KEYS: tuple[_Key, ...] = (
    lambda a: (a.span, a.code, a.subcode),
    lambda a: (a.span, a.code),
    lambda a: a.span,
    lambda a: (a.code, a.subcode),
    lambda a: a.code,
)
"""How :func:`align` pairs predicted with gold annotations, tried in this order: the same
exact span (the same label first, then the same code, then any label), then, for the rest,
the same label, then the same code."""


def _ratio(numerator: int, denominator: int, other: int) -> float:
    """``numerator / denominator``; with a zero denominator, 1.0 if ``other`` is 0 too."""
    if denominator:
        return numerator / denominator
    return 1.0 if other == 0 else 0.0


@dataclass(frozen=True, slots=True)
class MicroF1:
    """Counts summed over examples, and the precision, recall and F1 they give."""

    true_positives: int
    predicted: int
    """Predicted annotations (unparseable predictions count 0)."""
    gold: int
    """Gold annotations."""

    @property
    def precision(self) -> float:
        return _ratio(self.true_positives, self.predicted, self.gold)

    @property
    def recall(self) -> float:
        return _ratio(self.true_positives, self.gold, self.predicted)

    @property
    def f1(self) -> float:
        return _ratio(2 * self.true_positives, self.predicted + self.gold, 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "true_positives": self.true_positives,
            "predicted": self.predicted,
            "gold": self.gold,
        }


@dataclass(frozen=True, slots=True)
class StructuredScores:
    """The scores of predicted annotation lists against gold ones; see the module docstring."""

    examples: int
    json_valid: int
    """Predictions that parsed at all."""
    schema_valid: int
    """Predictions that parsed and whose every annotation the schema allows."""
    code: MicroF1
    subcode: MicroF1
    span: MicroF1
    joint: MicroF1
    per_code: Mapping[str, MicroF1]
    """Joint-level scores restricted to each code seen in gold or predictions, by code."""
    confusion: Mapping[tuple[Label | None, Label | None], int]
    """``(gold label, predicted label) -> count`` over the pairs :func:`align` makes, correct
    ones included; ``None`` on the gold side is a spurious prediction, on the predicted side a
    missed gold annotation."""

    @property
    def json_validity(self) -> float:
        """Share of predictions that parsed (1.0 for no examples)."""
        return _ratio(self.json_valid, self.examples, 0)

    @property
    def schema_validity(self) -> float:
        """Share of predictions that parsed and respect the schema."""
        return _ratio(self.schema_valid, self.examples, 0)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values; the confusion table as records, most frequent first."""

        def side(label: Label | None) -> dict[str, str | None]:
            code, subcode = label if label is not None else (None, None)
            return {"code": code, "subcode": subcode}

        return {
            "examples": self.examples,
            "json_valid": self.json_valid,
            "schema_valid": self.schema_valid,
            "json_validity": self.json_validity,
            "schema_validity": self.schema_validity,
            "code": self.code.to_dict(),
            "subcode": self.subcode.to_dict(),
            "span": self.span.to_dict(),
            "joint": self.joint.to_dict(),
            "per_code": {code: scores.to_dict() for code, scores in self.per_code.items()},
            "confusion": [
                {"gold": side(gold), "predicted": side(predicted), "count": count}
                for (gold, predicted), count in self.confusion.items()
            ],
        }


def score_annotations(
    gold: Sequence[Sequence[AnnotationLike]],
    predicted: Sequence[Sequence[AnnotationLike] | None],
    *,
    schema: SchemaLike,
) -> StructuredScores:
    """Scores ``predicted[i]`` (``None``: unparseable) against ``gold[i]`` for every example.

    Raises:
        InputError: ``gold`` and ``predicted`` have different lengths.
    """
    if len(gold) != len(predicted):
        raise InputError(
            f"{len(gold)} gold annotation lists but {len(predicted)} predictions",
            field="predicted",
        )
    found = [[] if prediction is None else prediction for prediction in predicted]
    levels = {name: _micro(gold, found, key) for name, key in _LEVELS.items()}
    codes = sorted({a.code for annotations in (*gold, *found) for a in annotations})
    per_code = {
        code: _micro(
            [[a for a in annotations if a.code == code] for annotations in gold],
            [[a for a in annotations if a.code == code] for annotations in found],
            _LEVELS["joint"],
        )
        for code in codes
    }
    confusion: Counter[tuple[Label | None, Label | None]] = Counter()
    for gold_annotations, predicted_annotations in zip(gold, found, strict=True):
        confusion.update(
            (_label(g), _label(p)) for g, p in align(gold_annotations, predicted_annotations)
        )
    return StructuredScores(
        examples=len(gold),
        json_valid=sum(prediction is not None for prediction in predicted),
        schema_valid=sum(
            prediction is not None and all(schema.allows(a.code, a.subcode) for a in prediction)
            for prediction in predicted
        ),
        code=levels["code"],
        subcode=levels["subcode"],
        span=levels["span"],
        joint=levels["joint"],
        per_code=per_code,
        confusion=dict(confusion.most_common()),
    )


def align(
    gold: Sequence[AnnotationLike], predicted: Sequence[AnnotationLike]
) -> list[tuple[AnnotationLike | None, AnnotationLike | None]]:
    """Pairs one example's predicted annotations with its gold ones.

    For each key of :data:`ALIGNMENT_KEYS` in turn, each still unpaired gold annotation (in
    order) takes the first still unpaired prediction with the same key. Then every unpaired
    gold annotation is paired with ``None`` (missed) and every unpaired prediction with
    ``None`` (spurious). Returns ``(gold, predicted)`` pairs: the aligned ones in the order
    they were made, then the missed, then the spurious.
    """
    gold_left = list(range(len(gold)))
    predicted_left = list(range(len(predicted)))
    pairs: list[tuple[AnnotationLike | None, AnnotationLike | None]] = []
    for key in ALIGNMENT_KEYS:
        for g in list(gold_left):
            target = key(gold[g])
            match = next((p for p in predicted_left if key(predicted[p]) == target), None)
            if match is not None:
                pairs.append((gold[g], predicted[match]))
                gold_left.remove(g)
                predicted_left.remove(match)
    pairs += [(gold[g], None) for g in gold_left]
    pairs += [(None, predicted[p]) for p in predicted_left]
    return pairs


def _micro(
    gold: Iterable[Sequence[AnnotationLike]],
    predicted: Iterable[Sequence[AnnotationLike]],
    key: _Key,
) -> MicroF1:
    true_positives = gold_count = predicted_count = 0
    for gold_annotations, predicted_annotations in zip(gold, predicted, strict=True):
        gold_keys = Counter(key(a) for a in gold_annotations)
        predicted_keys = Counter(key(a) for a in predicted_annotations)
        true_positives += (gold_keys & predicted_keys).total()
        gold_count += len(gold_annotations)
        predicted_count += len(predicted_annotations)
    return MicroF1(true_positives=true_positives, predicted=predicted_count, gold=gold_count)


def _label(annotation: AnnotationLike | None) -> Label | None:
    return None if annotation is None else (annotation.code, annotation.subcode)
