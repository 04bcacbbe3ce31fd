"""The embedded task: generation invariants, splits, held-out values, the JSON format."""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenpo.exceptions import ConfigError
from tokenpo.synthetic.task import (
    HELD_OUT_SPAN_SHARE,
    INSTRUCTION,
    SCHEMA,
    SLOTS,
    TEMPLATES,
    Annotation,
    TaskData,
    completion_for,
    generate_task,
    parse_annotations,
    prompt_for,
    to_json,
    write_split,
)
from tokenpo.synthetic.vocabulary import CLOSERS, CONNECTORS, FILLERS, OPENERS, whole_words


@pytest.fixture(scope="module")
def task() -> TaskData:
    return generate_task(train=400, validation=120, test=120, seed=3)


def held_out_pattern(slots: list[str]) -> re.Pattern[str]:
    """The held-out values of ``slots`` as whole words, in any case."""
    values = [value for slot in slots for value in SLOTS[slot].held_out]
    return re.compile(whole_words(values).pattern, re.IGNORECASE)


def test_the_same_seed_gives_the_same_data(task: TaskData):
    assert generate_task(train=400, validation=120, test=120, seed=3) == task
    other = generate_task(train=400, validation=120, test=120, seed=4)
    assert [example.message for example in other.train] != [e.message for e in task.train]


def test_splits_have_their_sizes_and_no_message_twice(task: TaskData):
    assert (len(task.train), len(task.validation), len(task.test)) == (400, 120, 120)
    for name in ("train", "validation", "test"):
        assert {example.split for example in task.split(name)} == {name}
    messages = [example.message for example in task]
    assert len(set(messages)) == len(messages)


def test_training_messages_use_training_slot_values_only(task: TaskData):
    train_values = {value for slot in SLOTS.values() for value in slot.train}
    for example in task.train:
        assert set(example.slot_values) <= train_values
    held_out = held_out_pattern(list(SLOTS))
    assert not [m.group() for e in task.train if (m := held_out.search(e.message))]


def test_no_held_out_value_occurs_as_whole_words_in_training_text():
    """In a template or fixed sentence with one slot filled by each training value (the
    other slots left out), or inside a training value."""
    held_out = held_out_pattern(list(SLOTS))
    sentences = [t.replace("[", "").replace("]", "") for ts in TEMPLATES.values() for t in ts]
    sentences += [*OPENERS, *FILLERS, *CLOSERS, *CONNECTORS]
    texts = [value for slot in SLOTS.values() for value in slot.train]
    for sentence in sentences:
        names = [name for _, name, _, _ in string.Formatter().parse(sentence) if name]
        blank = dict.fromkeys(names, "…")
        texts.append(sentence.format_map(blank))
        texts += [
            sentence.format_map({**blank, name: value})
            for name in set(names)
            for value in SLOTS[name].train
        ]
    assert not [(m.group(), text) for text in texts if (m := held_out.search(text))]


def test_a_share_of_evaluated_spans_hold_held_out_values(task: TaskData):
    any_held_out = held_out_pattern(list(SLOTS))
    distinctive = held_out_pattern(["drug", "lab_test", "insurer", "doctor", "facility"])
    flags = []
    for example in task.validation + task.test:
        for annotation, held_out in zip(example.annotations, example.held_out_spans, strict=True):
            flags.append(held_out)
            if held_out:
                assert any_held_out.search(annotation.span), (annotation, example.message)
            else:
                assert not distinctive.search(annotation.span), (annotation, example.message)
    share = sum(flags) / len(flags)
    assert abs(share - HELD_OUT_SPAN_SHARE) < 0.06, share
    assert not [e for e in task.train if any(e.held_out_spans)]


def test_spans_are_short_and_copied_verbatim(task: TaskData):
    for example in task:
        for annotation in example.annotations:
            assert annotation.span in example.message
            assert 1 <= len(annotation.span.split()) <= 6
            assert annotation.span == annotation.span.strip()


def test_annotations_are_schema_valid_one_to_four_per_message(task: TaskData):
    counts = Counter(len(example.annotations) for example in task)
    assert set(counts) == {1, 2, 3, 4}
    for example in task:
        assert all(SCHEMA.allows(item.code, item.subcode) for item in example.annotations)
    labels = {(item.code, item.subcode) for example in task for item in example.annotations}
    assert labels == set(TEMPLATES)


def test_the_schema_has_confusable_siblings_and_shared_subcodes():
    assert len(SCHEMA.codes) == 6
    assert all(3 <= len(SCHEMA.subcodes(code)) <= 4 for code in SCHEMA.codes)
    assert SCHEMA.allows("symptom", "worsening_symptom")
    assert not SCHEMA.allows("symptom", "refill_request")
    assert not SCHEMA.allows("unknown", "follow_up")
    assert SCHEMA.subcodes("unknown") == ()
    shared = Counter(subcode for code in SCHEMA.codes for subcode in SCHEMA.subcodes(code))
    assert shared["follow_up"] == 3
    assert set(TEMPLATES) == {(c, s) for c in SCHEMA.codes for s in SCHEMA.subcodes(c)}
    for templates in TEMPLATES.values():
        for template in templates:
            assert re.search(r"\[[^\]]*\{\w+\}[^\]]*\]", template), template


def test_slot_values_are_split_every_fifth_held_out():
    for name, values in SLOTS.items():
        assert len(values.all) >= 18, name
        assert not set(values.train) & set(values.held_out)
        assert len(values.held_out) == (len(values.all) - len(values.generated)) // 5


def test_generated_values_are_new_training_values():
    real = {value for values in SLOTS.values() for value in values.train + values.held_out}
    real -= {value for values in SLOTS.values() for value in values.generated}
    named = [name for name, values in SLOTS.items() if values.generated]
    assert {"drug", "doctor", "patient", "amount", "date"} <= set(named)
    for name in named:
        values = SLOTS[name]
        assert len(set(values.generated)) == len(values.generated) >= 100, name
        assert values.train[-len(values.generated) :] == values.generated
        assert not set(values.generated) & real, name
    # Pseudo-word names hold no held-out value, so none reaches training text inside one.
    held_out = held_out_pattern(list(SLOTS))
    for name in ("drug", "doctor", "patient"):
        assert not [value for value in SLOTS[name].generated if held_out.search(value)], name


def test_generated_values_make_most_training_slot_values_rare(task: TaskData):
    """Memorizing slot values cannot fit the training spans: most occur once or twice."""
    generated = {value for values in SLOTS.values() for value in values.generated}
    uses = Counter(value for example in task.train for value in example.slot_values)
    rare = sum(count for value, count in uses.items() if value in generated and count <= 2)
    assert rare / sum(uses.values()) > 0.3


def test_to_json_is_the_canonical_form():
    annotations = [Annotation("medication", "refill_request", "my lisinopril")]
    assert to_json(annotations) == (
        '[{"code": "medication", "subcode": "refill_request", "span": "my lisinopril"}]'
    )


annotation_lists = st.lists(st.builds(Annotation, st.text(), st.text(), st.text()), max_size=5)


@given(annotation_lists)
def test_parse_inverts_to_json(annotations: list[Annotation]):
    assert parse_annotations(to_json(annotations)) == annotations


@given(annotation_lists, st.randoms(use_true_random=False))
def test_parse_ignores_key_order_and_whitespace(annotations: list[Annotation], rng):
    objects = []
    for item in annotations:
        keys = ["code", "subcode", "span"]
        rng.shuffle(keys)
        objects.append({key: getattr(item, key) for key in keys})
    text = json.dumps(objects, indent=rng.choice([None, 2]), separators=(" ,", " :  "))
    assert parse_annotations(f"\n {text}\t") == annotations


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        '[{"code": "a", "subcode": "b", "span": "c"}',
        '[{"code": "a", "subcode": "b", "span": "c"}] trailing',
        '{"code": "a", "subcode": "b", "span": "c"}',
        "null",
        '"[]"',
        "[1]",
        "[[]]",
        '[{"code": "a", "subcode": "b"}]',
        '[{"code": "a", "subcode": "b", "span": "c", "note": "d"}]',
        '[{"Code": "a", "Sub-code": "b", "Span": "c"}]',
        '[{"code": 1, "subcode": "b", "span": "c"}]',
        '[{"code": "a", "subcode": null, "span": "c"}]',
        '[{"code": "a", "subcode": "b", "span": ["c"]}]',
        '[{"code": "a", "subcode": "b", "span": "c", "span": "d"}]',
        '[{"code": "a", "subcode": "b", "span": "c"}, 3]',
    ],
)
def test_malformed_outputs_do_not_parse(text: str):
    assert parse_annotations(text) is None


def test_an_empty_list_parses_as_no_annotations():
    assert parse_annotations("[]") == []


def test_prompt_and_completion_are_conversational():
    assert prompt_for("Hi, my knee hurts.") == [
        {"role": "user", "content": f"{INSTRUCTION}\nHi, my knee hurts."}
    ]
    annotations = [Annotation("symptom", "new_symptom", "my knee")]
    assert completion_for(annotations) == [{"role": "assistant", "content": to_json(annotations)}]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_written_splits_hold_prompt_chosen_message_and_gold(
    tmp_path: Path, task: TaskData, suffix: str
):
    path = write_split(task, "validation", tmp_path / f"validation{suffix}")
    if suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines()]
    else:
        rows = pq.read_table(path).to_pylist()
    assert len(rows) == len(task.validation)
    for row, example in zip(rows, task.validation, strict=True):
        assert row["prompt"] == prompt_for(example.message)
        assert row["chosen"] == completion_for(example.annotations)
        assert row["message"] == example.message
        assert parse_annotations(row["gold"]) == list(example.annotations)


def test_bad_arguments_name_themselves(tmp_path: Path, task: TaskData):
    with pytest.raises(ConfigError, match="validation must be >= 0, got -1"):
        generate_task(train=1, validation=-1, test=0, seed=0)
    with pytest.raises(ConfigError, match=r"path must end in \.jsonl or \.parquet"):
        write_split(task, "train", tmp_path / "rows.csv")
