"""Structured scoring against a plain count-by-hand implementation, and hand-made cases."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenpo.eval import StructuredScores, align, score_annotations
from tokenpo.exceptions import InputError
from tokenpo.synthetic.task import SCHEMA, Annotation, parse_annotations

REFILL = Annotation("medication", "refill_request", "my lisinopril")
SIDE_EFFECT = Annotation("medication", "side_effect", "my lisinopril")
HEADACHE = Annotation("symptom", "new_symptom", "headaches since Monday")


def score(
    gold: list[list[Annotation]], predicted: list[list[Annotation] | None]
) -> StructuredScores:
    return score_annotations(gold, predicted, schema=SCHEMA)


# The oracle: lists and list.remove, no Counter.
def true_positives(gold: list[tuple[str, ...]], predicted: list[tuple[str, ...]]) -> int:
    unmatched = list(gold)
    hits = 0
    for key in predicted:
        if key in unmatched:
            unmatched.remove(key)
            hits += 1
    return hits


def f1_by_hand(tp: int, predicted: int, gold: int) -> tuple[float, float, float]:
    if predicted == gold == 0:
        return 1.0, 1.0, 1.0
    precision = tp / predicted if predicted else 0.0
    recall = tp / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


KEYS = {
    "code": lambda a: (a.code,),
    "subcode": lambda a: (a.code, a.subcode),
    "span": lambda a: (a.span,),
    "joint": lambda a: (a.code, a.subcode, a.span),
}

annotations = st.builds(
    Annotation,
    code=st.sampled_from(["medication", "symptom", "billing", "made_up"]),
    subcode=st.sampled_from(["refill_request", "side_effect", "new_symptom", "general_question"]),
    span=st.sampled_from(["my lisinopril", "a rash", "my lisinopril ran out", "$50"]),
)
examples = st.lists(
    st.tuples(
        st.lists(annotations, max_size=4),
        st.one_of(st.none(), st.lists(annotations, max_size=4)),
    ),
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(examples)
def test_micro_f1_equals_counting_by_hand(
    data: list[tuple[list[Annotation], list[Annotation] | None]],
) -> None:
    gold = [example[0] for example in data]
    predicted = [example[1] for example in data]
    scores = score(gold, predicted)
    found = [prediction or [] for prediction in predicted]
    for level, key in KEYS.items():
        tp = sum(
            true_positives([key(a) for a in g], [key(a) for a in p])
            for g, p in zip(gold, found, strict=True)
        )
        n_predicted = sum(len(p) for p in found)
        n_gold = sum(len(g) for g in gold)
        got = getattr(scores, level)
        assert (got.true_positives, got.predicted, got.gold) == (tp, n_predicted, n_gold)
        assert (got.precision, got.recall, got.f1) == pytest.approx(
            f1_by_hand(tp, n_predicted, n_gold)
        )
    codes = {a.code for example in gold + found for a in example}
    assert set(scores.per_code) == codes
    for code in codes:
        tp = sum(
            true_positives(
                [KEYS["joint"](a) for a in g if a.code == code],
                [KEYS["joint"](a) for a in p if a.code == code],
            )
            for g, p in zip(gold, found, strict=True)
        )
        assert scores.per_code[code].true_positives == tp
    assert sum(s.true_positives for s in scores.per_code.values()) == scores.joint.true_positives
    assert scores.json_valid == sum(p is not None for p in predicted)
    assert scores.schema_valid == sum(
        p is not None and all(a.code != "made_up" and SCHEMA.allows(a.code, a.subcode) for a in p)
        for p in predicted
    )
    # Every gold and every predicted annotation appears once in the confusion table.
    confusion = scores.confusion
    assert sum(n for (g, _), n in confusion.items() if g is not None) == scores.joint.gold
    assert sum(n for (_, p), n in confusion.items() if p is not None) == scores.joint.predicted
    json.dumps(scores.to_dict())


def test_a_perfect_prediction_scores_one_everywhere() -> None:
    gold = [[REFILL, HEADACHE], [SIDE_EFFECT]]
    scores = score(gold, [list(g) for g in gold])
    for level in ("code", "subcode", "span", "joint"):
        result = getattr(scores, level)
        assert (result.precision, result.recall, result.f1) == (1.0, 1.0, 1.0)
    assert scores.json_validity == scores.schema_validity == 1.0
    assert all(s.f1 == 1.0 for s in scores.per_code.values())
    assert all(g == p for g, p in scores.confusion)


def test_an_unparseable_prediction_recalls_nothing() -> None:
    scores = score([[REFILL, HEADACHE]], [parse_annotations("[{'code': ")])
    assert scores.json_validity == scores.schema_validity == 0.0
    assert (scores.joint.recall, scores.joint.precision, scores.joint.f1) == (0.0, 0.0, 0.0)
    assert (scores.joint.predicted, scores.joint.gold) == (0, 2)
    assert scores.confusion == {
        (("medication", "refill_request"), None): 1,
        (("symptom", "new_symptom"), None): 1,
    }


def test_the_right_code_with_a_wrong_subcode() -> None:
    scores = score([[REFILL, HEADACHE]], [[SIDE_EFFECT, HEADACHE]])
    assert scores.code.f1 == 1.0
    assert scores.span.f1 == 1.0
    assert scores.subcode.f1 == scores.joint.f1 == 0.5
    assert scores.per_code["medication"].f1 == 0.0
    assert scores.per_code["symptom"].f1 == 1.0
    assert scores.confusion == {
        (("medication", "refill_request"), ("medication", "side_effect")): 1,
        (("symptom", "new_symptom"), ("symptom", "new_symptom")): 1,
    }


def test_a_span_off_by_one_word() -> None:
    longer = Annotation(REFILL.code, REFILL.subcode, REFILL.span + " ran out")
    scores = score([[REFILL]], [[longer]])
    assert scores.subcode.f1 == 1.0
    assert scores.span.f1 == scores.joint.f1 == 0.0
    # Aligned by code once no span matches: a correct label on a wrong span.
    assert scores.confusion == {(("medication", "refill_request"),) * 2: 1}


def test_duplicates_count_as_a_multiset() -> None:
    scores = score([[REFILL], [REFILL, REFILL]], [[REFILL, REFILL], [REFILL]])
    assert (scores.joint.true_positives, scores.joint.predicted, scores.joint.gold) == (2, 3, 3)
    assert scores.joint.precision == scores.joint.recall == pytest.approx(2 / 3)
    label = ("medication", "refill_request")
    assert scores.confusion == {(label, label): 2, (None, label): 1, (label, None): 1}


def test_a_parseable_prediction_that_breaks_the_schema() -> None:
    text = json.dumps([{"code": "medication", "subcode": "new_symptom", "span": "my lisinopril"}])
    predicted = parse_annotations(text)
    assert predicted is not None
    scores = score([[REFILL], [HEADACHE]], [predicted, [HEADACHE]])
    assert (scores.json_valid, scores.schema_valid) == (2, 1)
    assert (scores.json_validity, scores.schema_validity) == (1.0, 0.5)
    assert scores.code.true_positives == 2
    assert scores.joint.true_positives == 1


def test_alignment_prefers_the_same_span_then_the_same_code() -> None:
    rash = Annotation("symptom", "new_symptom", "a rash")
    billed_rash = Annotation("billing", "payment_plan", "a rash")
    refill_elsewhere = Annotation("medication", "refill_request", "more pills")
    assert align([REFILL, rash], [refill_elsewhere, billed_rash]) == [
        (rash, billed_rash),  # same span, other code
        (REFILL, refill_elsewhere),  # same label, other span
    ]
    # An exact match is taken before a same-span sibling, whatever the order.
    assert align([SIDE_EFFECT, REFILL], [REFILL, SIDE_EFFECT]) == [
        (SIDE_EFFECT, SIDE_EFFECT),
        (REFILL, REFILL),
    ]


def test_confusion_counts_over_examples() -> None:
    gold = [[REFILL, HEADACHE], [REFILL], [HEADACHE]]
    predicted: list[list[Annotation] | None] = [[SIDE_EFFECT, HEADACHE], [SIDE_EFFECT], None]
    scores = score(gold, predicted)
    refill, side_effect = ("medication", "refill_request"), ("medication", "side_effect")
    new = ("symptom", "new_symptom")
    assert scores.confusion == {(refill, side_effect): 2, (new, new): 1, (new, None): 1}
    assert list(scores.confusion.values()) == [2, 1, 1]  # most frequent first
    records = scores.to_dict()["confusion"]
    assert records[0] == {
        "gold": {"code": "medication", "subcode": "refill_request"},
        "predicted": {"code": "medication", "subcode": "side_effect"},
        "count": 2,
    }


def test_nothing_to_find_and_nothing_found_is_perfect() -> None:
    scores = score([[], []], [[], []])
    assert scores.joint.f1 == 1.0
    assert score([[]], [[REFILL]]).joint.f1 == 0.0
    assert score([[REFILL]], [[]]).joint.precision == 0.0


def test_gold_and_predictions_must_pair_up() -> None:
    with pytest.raises(InputError, match="2 gold annotation lists but 1 predictions"):
        score([[REFILL], [REFILL]], [[REFILL]])
