"""Confusion-aware negatives: valid, wrong in the counted fields, sampled by the mix."""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence

import pytest

from tokenpo.exceptions import ConfigError
from tokenpo.synthetic.negatives import (
    DEFAULT_MIX,
    ConfusionStats,
    Strategy,
    align,
    count_wrong_fields,
    make_negatives,
    pair_row,
    pairs_from_model_outputs,
    span_error,
    strategy_weights,
)
from tokenpo.synthetic.task import (
    SCHEMA,
    SLOTS,
    Annotation,
    Example,
    TaskData,
    completion_for,
    generate_task,
    parse_annotations,
    prompt_for,
    to_json,
)


@pytest.fixture(scope="module")
def task() -> TaskData:
    return generate_task(train=300, validation=60, test=0, seed=11)


def recount_wrong_fields(gold: Sequence[Annotation], negative: Sequence[Annotation]) -> int:
    """Negatives change one annotation in place, or drop or add one: count by position."""
    if len(gold) == len(negative):
        return sum(
            (g.code != n.code) + (g.subcode != n.subcode) + (g.span != n.span)
            for g, n in zip(gold, negative, strict=True)
        )
    dropped, added = Counter(gold) - Counter(negative), Counter(negative) - Counter(gold)
    assert dropped.total() + added.total() == 1
    return 3


def test_negatives_are_valid_json_schema_valid_and_wrong(task: TaskData):
    rng = random.Random(0)
    strategies = Counter[Strategy]()
    for example in task:
        gold = example.annotations
        negatives = make_negatives(example, ConfusionStats(), rng=rng, count=4, span_share=0.3)
        assert len({negative.text for negative in negatives}) == len(negatives) == 4
        for negative in negatives:
            strategies[negative.strategy] += 1
            assert negative.text == to_json(negative.annotations) != to_json(gold)
            assert parse_annotations(negative.text) == list(negative.annotations)
            assert all(SCHEMA.allows(item.code, item.subcode) for item in negative.annotations)
            assert negative.wrong_fields >= 1
            assert negative.wrong_fields == recount_wrong_fields(gold, negative.annotations)
            assert negative.wrong_fields == count_wrong_fields(gold, negative.annotations)
    assert set(strategies) == set(Strategy) - {Strategy.MODEL_OUTPUT}


@pytest.mark.parametrize(
    ("strategy", "wrong_fields"),
    [
        (Strategy.CODE, {1, 2}),
        (Strategy.SUBCODE, {1}),
        (Strategy.CODE_AND_SUBCODE, {2}),
        (Strategy.MISSING, {3}),
        (Strategy.EXTRA, {3}),
        (Strategy.SPAN_WRONG_WORDS, {1}),
        (Strategy.SPAN_BOUNDARY, {1}),
    ],
)
def test_each_strategy_makes_its_kind_of_error(
    task: TaskData, strategy: Strategy, wrong_fields: set[int]
):
    rng = random.Random(1)
    drawn = 0
    for example in task.train[:100]:
        for negative in make_negatives(
            example, ConfusionStats(), rng=rng, count=2, strategy_mix={strategy: 1}, span_share=0
        ):
            drawn += 1
            assert negative.strategy is strategy
            assert negative.wrong_fields in wrong_fields
            if strategy in (Strategy.SPAN_WRONG_WORDS, Strategy.SPAN_BOUNDARY):
                (changed,) = set(negative.annotations) - set(example.annotations)
                # A shifted boundary still copies message words; a wrong slot value does not.
                assert (changed.span in example.message) == (strategy is Strategy.SPAN_BOUNDARY)
    assert drawn >= 100


def test_training_negatives_keep_held_out_values_out(task: TaskData):
    values = [
        value
        for slot in ("drug", "lab_test", "insurer", "doctor", "facility")
        for value in SLOTS[slot].held_out
    ]
    held_out = re.compile("|".join(rf"(?<!\w){re.escape(value)}(?!\w)" for value in values))
    rng = random.Random(2)
    for example in task.train:
        for negative in make_negatives(example, ConfusionStats(), rng=rng, count=3, span_share=1.0):
            assert not held_out.search(negative.text), negative.text


def test_a_single_annotation_is_never_dropped(task: TaskData):
    rng = random.Random(3)
    singles = [example for example in task if len(example.annotations) == 1]
    assert singles
    for example in singles:
        negatives = make_negatives(
            example, ConfusionStats(), rng=rng, strategy_mix={Strategy.MISSING: 1.0}, span_share=0
        )
        assert negatives == []


def test_strategies_follow_the_mix(task: TaskData):
    examples = [example for example in task if len(example.annotations) >= 2]
    stats = ConfusionStats()
    stats.span.update({"wrong_words": 9, "boundary": 3})
    weights = strategy_weights(stats, span_share=0.2)
    assert weights[Strategy.SUBCODE] == pytest.approx(0.35 * 0.8)
    assert weights[Strategy.SPAN_WRONG_WORDS] == pytest.approx(0.2 * 10 / 14)
    rng = random.Random(4)
    draws = Counter[Strategy]()
    for index in range(4000):
        example = examples[index % len(examples)]
        (negative,) = make_negatives(example, stats, rng=rng, span_share=0.2)
        draws[negative.strategy] += 1
    for strategy, weight in weights.items():
        assert draws[strategy] / 4000 == pytest.approx(weight, abs=0.03), strategy


def test_observed_confusions_steer_the_sampling():
    example = Example(
        message="Can I take metformin with food?",
        annotations=(Annotation("medication", "general_question", "metformin"),),
        split="train",
        slot_values=("metformin",),
    )
    stats = ConfusionStats()
    stats.code["medication", "billing"] = 200
    stats.subcode["medication", "general_question", "side_effect"] = 200
    rng = random.Random(5)
    codes, subcodes = Counter[str](), Counter[str]()
    for _ in range(300):
        (code_error,) = make_negatives(
            example, stats, rng=rng, strategy_mix={Strategy.CODE: 1}, span_share=0
        )
        (subcode_error,) = make_negatives(
            example, stats, rng=rng, strategy_mix={Strategy.SUBCODE: 1}, span_share=0
        )
        codes[code_error.annotations[0].code] += 1
        subcodes[subcode_error.annotations[0].subcode] += 1
    assert codes["billing"] > 0.9 * 300
    assert subcodes["side_effect"] > 0.9 * 300
    # Add-one smoothing: unseen confusions still happen.
    assert len(codes) > 1
    assert len(subcodes) > 1
    # billing allows general_question: a code confusion keeps the subcode where it can.
    assert {code_error.annotations[0].subcode} == {"general_question"}


def test_confusion_stats_on_a_hand_made_example():
    refill = Annotation("medication", "refill_request", "my lisinopril")
    headache = Annotation("symptom", "new_symptom", "headaches")
    cancel = Annotation("scheduling", "cancel", "my appointment on May 9")
    mri = Annotation("test_results", "result_request", "the MRI")
    form = Annotation("care_coordination", "form_request", "my FMLA form")
    pairs: list[tuple[list[Annotation], list[Annotation] | None]] = [
        (
            [refill, headache],
            [
                Annotation("medication", "side_effect", "my lisinopril"),
                Annotation("billing", "general_question", "headaches since Monday"),
            ],
        ),
        ([cancel], [cancel, Annotation("billing", "payment_plan", "$50 a month")]),
        ([mri, form], [Annotation("test_results", "result_request", "the CT scan")]),
        ([refill], None),
    ]
    stats = ConfusionStats.from_predictions(pairs)
    assert stats.code == Counter({("symptom", "billing"): 1})
    assert stats.subcode == Counter({("medication", "refill_request", "side_effect"): 1})
    assert stats.span == Counter({"boundary": 1, "wrong_words": 1})
    assert stats.missing == Counter({"care_coordination": 1})
    assert stats.extra == Counter({"billing": 1})
    assert (stats.aligned, stats.unparsed) == (4, 1)
    assert (stats.label_errors, stats.span_errors) == (4, 2)
    assert stats.span_share == pytest.approx(3 / 8)
    assert [count_wrong_fields(gold, predicted or []) for gold, predicted in pairs] == [4, 3, 4, 3]
    assert stats.as_dict()["code"] == [["symptom", "billing", 1]]


def test_alignment_prefers_identical_then_overlapping_then_position():
    a = Annotation("medication", "refill_request", "my lisinopril")
    b = Annotation("symptom", "new_symptom", "headaches")
    moved = Annotation("symptom", "worsening_symptom", "bad headaches")
    other = Annotation("billing", "charge_dispute", "$50")
    alignment = align([a, b], [moved, a])
    assert alignment.matched == ((a, a), (b, moved))
    alignment = align([a, b], [other])
    assert alignment.matched == ((a, other),)
    assert alignment.missing == (b,)
    assert count_wrong_fields([a, b], [b, a]) == 0


@pytest.mark.parametrize(
    ("gold", "predicted", "kind"),
    [
        ("my lisinopril", "my lisinopril", None),
        ("my lisinopril", "lisinopril", "boundary"),
        ("pain in my knee", "in my knee today", "boundary"),
        ("the MRI", "the CT scan", "wrong_words"),
        ("metformin", "metoprolol", "wrong_words"),
    ],
)
def test_span_errors_are_classified(gold: str, predicted: str, kind: str | None):
    assert span_error(gold, predicted) == kind


def test_model_outputs_keep_only_valid_wrong_answers(task: TaskData):
    example = task.train[0]
    gold = list(example.annotations)
    wrong = [Annotation(gold[0].code, gold[0].code, gold[0].span), *gold[1:]]
    confused = [
        Annotation(
            gold[0].code,
            next(s for s in SCHEMA.subcodes(gold[0].code) if s != gold[0].subcode),
            gold[0].span,
        ),
        *gold[1:],
    ]
    outputs = [
        to_json(gold),
        to_json(gold).replace(", ", ","),
        to_json(gold)[:-1],
        to_json(wrong),
        to_json(confused).replace(", ", ",  "),
        to_json(list(reversed(gold))),
    ]
    pairs = pairs_from_model_outputs([example] * len(outputs), outputs)
    assert [(pair_example, negative.text) for pair_example, negative in pairs] == [
        (example, to_json(confused))
    ]
    assert pairs[0][1].strategy is Strategy.MODEL_OUTPUT
    assert pairs[0][1].wrong_fields == 1
    with pytest.raises(ConfigError, match="1 examples but 2 outputs"):
        pairs_from_model_outputs([example], ["[]", "[]"])


def test_pair_rows_are_conversational_with_scores(task: TaskData):
    example = task.train[0]
    (negative,) = make_negatives(example, ConfusionStats(), rng=random.Random(6))
    row = pair_row(example, negative)
    assert row["prompt"] == prompt_for(example.message)
    assert row["chosen"] == completion_for(example.annotations)
    assert row["rejected"] == [{"role": "assistant", "content": negative.text}]
    assert (row["score_chosen"], row["score_rejected"]) == (0.0, -negative.wrong_fields)
    assert row["strategy"] == negative.strategy.value


def test_sampling_is_deterministic_and_checks_its_arguments(task: TaskData):
    def draw() -> list[str]:
        rng = random.Random(7)
        return [
            n.text for e in task.train[:50] for n in make_negatives(e, ConfusionStats(), rng=rng)
        ]

    assert draw() == draw()
    assert sum(strategy_weights(ConfusionStats()).values()) == pytest.approx(1.0)
    assert strategy_weights(ConfusionStats(), DEFAULT_MIX)[Strategy.CODE] == pytest.approx(0.125)
    with pytest.raises(ConfigError, match=r"span_share must be in \[0, 1\], got 1.5"):
        strategy_weights(ConfusionStats(), span_share=1.5)
    with pytest.raises(ConfigError, match="strategy_mix weights must be >= 0"):
        strategy_weights(ConfusionStats(), {Strategy.CODE: -1.0})
    with pytest.raises(ConfigError, match="count must be >= 0, got -1"):
        make_negatives(task.train[0], ConfusionStats(), rng=random.Random(0), count=-1)
