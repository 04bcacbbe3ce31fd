"""Confusion-aware negatives: the gold annotation perturbed by the errors a model makes.

This follows the TAB-PO authors' pipeline (their ``prepare_dpo_data.py``): a fine-tuned model
annotates held-in messages, its confusions are tabulated against the gold
(:class:`ConfusionStats`), and each negative applies one error strategy to the gold,
sampling the wrong label by how often the model made that confusion. Counts get add-one
smoothing, so a confusion never observed stays possible. Every negative keeps its codes and
subcodes schema-valid and differs from the gold in 1-3 fields (one annotation, or 3 fields
for a dropped or added annotation): the 1-3 token differences token-level preference
optimization is about.

Alignment (:func:`align`), used both to tabulate a model's errors and to count wrong
fields: first identical annotations are paired (as multisets); then the remaining gold and
predicted annotations are paired greedily by span word overlap (the share of common
lowercase words, ties broken by the closer list position); what still remains is paired in
list order (annotations follow the message order). Gold left over is *missing*, predictions
left over are *extra*.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Literal

from tokenpo.exceptions import ConfigError
from tokenpo.synthetic.task import (
    SCHEMA,
    SLOTS,
    Annotation,
    Example,
    completion_for,
    parse_annotations,
    prompt_for,
    to_json,
)

__all__ = [
    "DEFAULT_MIX",
    "Alignment",
    "ConfusionStats",
    "Negative",
    "SpanError",
    "Strategy",
    "align",
    "count_wrong_fields",
    "make_negatives",
    "pair_row",
    "pairs_from_model_outputs",
    "span_error",
    "strategy_weights",
]

SpanError = Literal["wrong_words", "boundary"]
"""``boundary``: one span's words are a contiguous part of the other's, or a suffix of one
is a prefix of the other (a shifted window); ``wrong_words``: any other span difference."""

_MISSED_OR_ADDED = 3
"""Wrong fields counted for a missing or an extra annotation."""


class Strategy(StrEnum):
    """How a negative differs from the gold."""

    CODE = "code_confusion"
    """One annotation's code, sampled by the observed code confusions; its subcode is kept
    where the new code allows it, else drawn uniformly from the new code's subcodes."""
    SUBCODE = "subcode_confusion"
    """One annotation's subcode, a sibling sampled by the observed subcode confusions."""
    CODE_AND_SUBCODE = "code_and_subcode_confusion"
    """A code confusion, then a subcode confusion within the new code: both fields wrong."""
    MISSING = "missing_annotation"
    """One annotation dropped (messages with two or more), by the observed missing codes."""
    EXTRA = "extra_annotation"
    """A spurious annotation on 1-4 message words, its code by the observed extra codes."""
    SPAN_WRONG_WORDS = "span_wrong_words"
    """One span's slot value replaced by another value of the same slot."""
    SPAN_BOUNDARY = "span_boundary"
    """One span extended or trimmed by a word at either end."""
    MODEL_OUTPUT = "model_output"
    """A model's own wrong output (:func:`pairs_from_model_outputs`)."""


DEFAULT_MIX: Mapping[Strategy, float] = MappingProxyType(
    {
        Strategy.CODE: 0.25,
        Strategy.SUBCODE: 0.35,
        Strategy.CODE_AND_SUBCODE: 0.20,
        Strategy.MISSING: 0.08,
        Strategy.EXTRA: 0.12,
    }
)
"""The TAB-PO authors' strategy weights for label errors; see :func:`strategy_weights` for
how span errors are mixed in."""


@dataclass(frozen=True, slots=True)
class Alignment:
    """Gold and predicted annotations paired by :func:`align`."""

    matched: tuple[tuple[Annotation, Annotation], ...]
    """(gold, predicted) pairs."""
    missing: tuple[Annotation, ...]
    """Gold annotations with no prediction."""
    extra: tuple[Annotation, ...]
    """Predictions with no gold annotation."""


def _words(span: str) -> set[str]:
    return set(span.lower().split())


def align(gold: Sequence[Annotation], predicted: Sequence[Annotation]) -> Alignment:
    """Pairs predicted with gold annotations: identical ones, then by span word overlap,
    then in list order (see the module docstring)."""
    gold_left = list(range(len(gold)))
    predicted_left = list(range(len(predicted)))
    pairs: list[tuple[int, int]] = []

    def pair(g: int, p: int) -> None:
        pairs.append((g, p))
        gold_left.remove(g)
        predicted_left.remove(p)

    for g in list(gold_left):
        same = [p for p in predicted_left if predicted[p] == gold[g]]
        if same:
            pair(g, same[0])
    by_overlap = []
    for g in gold_left:
        for p in predicted_left:
            gold_words, predicted_words = _words(gold[g].span), _words(predicted[p].span)
            if common := len(gold_words & predicted_words):
                share = common / max(len(gold_words), len(predicted_words))
                by_overlap.append((-share, abs(g - p), g, p))
    for _, _, g, p in sorted(by_overlap):
        if g in gold_left and p in predicted_left:
            pair(g, p)
    for g, p in list(zip(gold_left, predicted_left, strict=False)):
        pair(g, p)
    return Alignment(
        matched=tuple((gold[g], predicted[p]) for g, p in sorted(pairs)),
        missing=tuple(gold[g] for g in gold_left),
        extra=tuple(predicted[p] for p in predicted_left),
    )


def _field_errors(gold: Annotation, predicted: Annotation) -> int:
    return sum(
        [
            gold.code != predicted.code,
            gold.subcode != predicted.subcode,
            gold.span != predicted.span,
        ]
    )


def count_wrong_fields(gold: Sequence[Annotation], predicted: Sequence[Annotation]) -> int:
    """Wrong code, subcode and span fields of the aligned pairs, plus 3 for each missing or
    extra annotation; 0 exactly when ``predicted`` is a reordering of ``gold``."""
    alignment = align(gold, predicted)
    return sum(_field_errors(*pair) for pair in alignment.matched) + _MISSED_OR_ADDED * (
        len(alignment.missing) + len(alignment.extra)
    )


def span_error(gold: str, predicted: str) -> SpanError | None:
    """How a predicted span differs from the gold span, ``None`` when they are equal."""
    if gold == predicted:
        return None
    a, b = gold.split(), predicted.split()
    for short, long in ((a, b), (b, a)):
        if any(long[start : start + len(short)] == short for start in range(len(long))):
            return "boundary"
    for size in range(1, min(len(a), len(b))):
        if a[-size:] == b[:size] or b[-size:] == a[:size]:
            return "boundary"
    return "wrong_words"


@dataclass(kw_only=True, slots=True)
class ConfusionStats:
    """A model's errors against the gold, tabulated over aligned annotations."""

    code: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(gold code, predicted code) of aligned annotations whose codes differ."""
    subcode: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    """(code, gold subcode, predicted subcode) of aligned annotations with the right code."""
    span: Counter[SpanError] = field(default_factory=Counter)
    """Aligned annotations whose span differs, by :data:`SpanError` kind."""
    missing: Counter[str] = field(default_factory=Counter)
    """Gold annotations left unaligned, by code."""
    extra: Counter[str] = field(default_factory=Counter)
    """Predicted annotations left unaligned, by code."""
    aligned: int = 0
    """Aligned (gold, predicted) pairs."""
    unparsed: int = 0
    """Predictions that did not parse (passed as ``None``)."""

    @classmethod
    def from_predictions(
        cls, pairs: Iterable[tuple[Sequence[Annotation], Sequence[Annotation] | None]]
    ) -> ConfusionStats:
        """Tabulates (gold, predicted) annotation lists; ``None`` counts as unparsed."""
        stats = cls()
        for gold, predicted in pairs:
            if predicted is None:
                stats.unparsed += 1
                continue
            alignment = align(gold, predicted)
            stats.aligned += len(alignment.matched)
            for gold_item, predicted_item in alignment.matched:
                if gold_item.code != predicted_item.code:
                    stats.code[gold_item.code, predicted_item.code] += 1
                elif gold_item.subcode != predicted_item.subcode:
                    stats.subcode[gold_item.code, gold_item.subcode, predicted_item.subcode] += 1
                if kind := span_error(gold_item.span, predicted_item.span):
                    stats.span[kind] += 1
            stats.missing.update(item.code for item in alignment.missing)
            stats.extra.update(item.code for item in alignment.extra)
        return stats

    @classmethod
    def from_outputs(cls, examples: Sequence[Example], outputs: Sequence[str]) -> ConfusionStats:
        """Tabulates a model's raw outputs against the examples' gold annotations."""
        if len(examples) != len(outputs):
            raise ConfigError(f"{len(examples)} examples but {len(outputs)} outputs")
        return cls.from_predictions(
            (example.annotations, parse_annotations(output))
            for example, output in zip(examples, outputs, strict=True)
        )

    @property
    def label_errors(self) -> int:
        """Code and subcode confusions plus missing and extra annotations."""
        counters: list[Counter[Any]] = [self.code, self.subcode, self.missing, self.extra]
        return sum(counter.total() for counter in counters)

    @property
    def span_errors(self) -> int:
        """Aligned annotations with a wrong span."""
        return self.span.total()

    @property
    def span_share(self) -> float:
        """Share of span errors among all errors, add-one smoothed: 1/2 with no errors."""
        return (self.span_errors + 1) / (self.span_errors + self.label_errors + 2)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary, most frequent confusions first."""
        return {
            "aligned": self.aligned,
            "unparsed": self.unparsed,
            "code": [[*key, count] for key, count in self.code.most_common()],
            "subcode": [[*key, count] for key, count in self.subcode.most_common()],
            "span": dict(self.span.most_common()),
            "missing": dict(self.missing.most_common()),
            "extra": dict(self.extra.most_common()),
        }


@dataclass(frozen=True, slots=True)
class Negative:
    """A rejected annotation for a pair."""

    text: str
    """The :func:`~tokenpo.synthetic.task.to_json` text."""
    annotations: tuple[Annotation, ...]
    strategy: Strategy
    wrong_fields: int
    """:func:`count_wrong_fields` against the gold; >= 1."""


def strategy_weights(
    stats: ConfusionStats,
    strategy_mix: Mapping[Strategy, float] = DEFAULT_MIX,
    span_share: float | None = None,
) -> dict[Strategy, float]:
    """The probability of each strategy.

    ``strategy_mix`` is normalised and scaled by ``1 - span_share``; ``span_share`` (by
    default ``stats.span_share``) goes to the two span strategies, split by the add-one
    smoothed counts of ``stats.span``. With the default mix and no span errors observed
    in 100 label errors, span errors get (0 + 1) / 102, about 1%.
    """
    share = stats.span_share if span_share is None else span_share
    if not 0.0 <= share <= 1.0:
        raise ConfigError(f"span_share must be in [0, 1], got {share}")
    total = sum(strategy_mix.values())
    if any(weight < 0 for weight in strategy_mix.values()) or total <= 0:
        raise ConfigError(f"strategy_mix weights must be >= 0 with a positive sum: {strategy_mix}")
    weights = {strategy: (1 - share) * weight / total for strategy, weight in strategy_mix.items()}
    kinds: dict[SpanError, Strategy] = {
        "wrong_words": Strategy.SPAN_WRONG_WORDS,
        "boundary": Strategy.SPAN_BOUNDARY,
    }
    smoothed = {kind: stats.span[kind] + 1 for kind in kinds}
    for kind, strategy in kinds.items():
        weights[strategy] = weights.get(strategy, 0.0) + share * smoothed[kind] / sum(
            smoothed.values()
        )
    return weights


def _sample(rng: random.Random, counts: Mapping[str, int]) -> str:
    """A key drawn with probability proportional to its count plus one."""
    keys = list(counts)
    return rng.choices(keys, weights=[counts[key] + 1 for key in keys])[0]


def _confused_code(code: str, stats: ConfusionStats, rng: random.Random) -> str:
    others = [other for other in SCHEMA.codes if other != code]
    return _sample(rng, {other: stats.code[code, other] for other in others})


def _confused_subcode(code: str, subcode: str, stats: ConfusionStats, rng: random.Random) -> str:
    siblings = [other for other in SCHEMA.subcodes(code) if other != subcode]
    return _sample(rng, {other: stats.subcode[code, subcode, other] for other in siblings})


def _label_error(
    annotation: Annotation, strategy: Strategy, stats: ConfusionStats, rng: random.Random
) -> Annotation:
    code, subcode = annotation.code, annotation.subcode
    if strategy in (Strategy.CODE, Strategy.CODE_AND_SUBCODE):
        code = _confused_code(code, stats, rng)
        if not SCHEMA.allows(code, subcode):
            subcode = rng.choice(SCHEMA.subcodes(code))
    if strategy in (Strategy.SUBCODE, Strategy.CODE_AND_SUBCODE):
        subcode = _confused_subcode(code, subcode, stats, rng)
    return Annotation(code, subcode, annotation.span)


_SLOT_OF_VALUE = {value: name for name, values in SLOTS.items() for value in values.all}
_SLOT_VALUE = re.compile(
    "|".join(
        rf"(?<!\w){re.escape(value)}(?!\w)"
        for value in sorted(_SLOT_OF_VALUE, key=len, reverse=True)
    )
)
_PUNCTUATION = ".,!?;:"


def _wrong_words(span: str, train: bool, rng: random.Random) -> str | None:
    """``span`` with its longest slot value replaced by another value of that slot (a
    training value for a training example, so held-out values stay out of training)."""
    found = list(_SLOT_VALUE.finditer(span))
    if not found:
        return None
    match = max(found, key=lambda match: len(match.group()))
    slot = SLOTS[_SLOT_OF_VALUE[match.group()]]
    others = [other for other in (slot.train if train else slot.all) if other != match.group()]
    return span[: match.start()] + rng.choice(others) + span[match.end() :]


def _shifted_boundary(span: str, message: str, rng: random.Random) -> str | None:
    """``span`` grown by the neighbouring message word on one side, or shrunk by a word."""
    start = message.find(span)
    if start < 0:
        return None
    end = start + len(span)
    options = []
    if " " in span:
        options += [span.split(" ", 1)[1], span.rsplit(" ", 1)[0]]
    before = re.search(r"(\S+) $", message[:start])
    if before and not any(char in _PUNCTUATION for char in before.group(1)):
        options.append(message[before.start(1) : end])
    after = re.match(r" (\S+)", message[end:])
    if after and not any(char in _PUNCTUATION for char in after.group(1)):
        options.append(message[start : end + after.end(1)])
    return rng.choice(options) if options else None


def _extra(example: Example, stats: ConfusionStats, rng: random.Random) -> list[Annotation] | None:
    """The gold plus a spurious annotation on 1-4 message words, inserted in message order
    (``None`` if it repeats a gold annotation)."""
    words = list(re.finditer(r"\S+", example.message))
    first = rng.randrange(len(words))
    last = min(len(words), first + rng.randint(1, 4)) - 1
    span = example.message[words[first].start() : words[last].end()].strip(_PUNCTUATION)
    code = _sample(rng, {code: stats.extra[code] for code in SCHEMA.codes})
    extra = Annotation(code, rng.choice(SCHEMA.subcodes(code)), span or words[first].group())
    if extra in example.annotations:
        return None
    position = sum(
        example.message.find(item.span) < words[first].start() for item in example.annotations
    )
    annotations = list(example.annotations)
    annotations.insert(position, extra)
    return annotations


def _perturbed(
    example: Example, strategy: Strategy, stats: ConfusionStats, rng: random.Random
) -> list[Annotation] | None:
    """The gold with one error of ``strategy``, or ``None`` where it does not apply."""
    annotations = list(example.annotations)
    if strategy is Strategy.EXTRA:
        return _extra(example, stats, rng)
    if strategy is Strategy.MISSING:
        if len(annotations) < 2:
            return None
        counts = {str(index): stats.missing[item.code] for index, item in enumerate(annotations)}
        del annotations[int(_sample(rng, counts))]
        return annotations
    index = rng.randrange(len(annotations))
    annotation = annotations[index]
    if strategy in (Strategy.SPAN_WRONG_WORDS, Strategy.SPAN_BOUNDARY):
        span = (
            _wrong_words(annotation.span, example.split == "train", rng)
            if strategy is Strategy.SPAN_WRONG_WORDS
            else _shifted_boundary(annotation.span, example.message, rng)
        )
        if span is None:
            return None
        annotations[index] = Annotation(annotation.code, annotation.subcode, span)
    else:
        annotations[index] = _label_error(annotation, strategy, stats, rng)
    return annotations


def make_negatives(
    example: Example,
    stats: ConfusionStats,
    *,
    rng: random.Random,
    count: int = 1,
    strategy_mix: Mapping[Strategy, float] = DEFAULT_MIX,
    span_share: float | None = None,
    max_attempts: int = 20,
) -> list[Negative]:
    """Up to ``count`` distinct negatives of ``example``'s gold annotation.

    Each draws a strategy from :func:`strategy_weights` and applies it; a strategy that does
    not apply (a missing annotation in a one-annotation message) or a result already drawn
    is drawn again, at most ``max_attempts`` times per negative.
    """
    if count < 0:
        raise ConfigError(f"count must be >= 0, got {count}")
    weights = strategy_weights(stats, strategy_mix, span_share)
    strategies, probabilities = list(weights), list(weights.values())
    gold = example.annotations
    seen = {to_json(gold)}
    negatives: list[Negative] = []
    for _ in range(count * max_attempts):
        if len(negatives) == count:
            break
        strategy = rng.choices(strategies, weights=probabilities)[0]
        annotations = _perturbed(example, strategy, stats, rng)
        if annotations is None or to_json(annotations) in seen:
            continue
        wrong_fields = count_wrong_fields(gold, annotations)
        if wrong_fields == 0:
            continue
        seen.add(to_json(annotations))
        negatives.append(Negative(to_json(annotations), tuple(annotations), strategy, wrong_fields))
    return negatives


def pairs_from_model_outputs(
    examples: Sequence[Example], outputs: Sequence[str]
) -> list[tuple[Example, Negative]]:
    """A model's own wrong outputs as extra negatives: those that parse, whose codes and
    subcodes the schema allows, and that differ from the gold. The negative's text is the
    canonical :func:`~tokenpo.synthetic.task.to_json` of the parsed output, so a pair differs
    only where the model was wrong, not in its whitespace."""
    if len(examples) != len(outputs):
        raise ConfigError(f"{len(examples)} examples but {len(outputs)} outputs")
    pairs = []
    for example, output in zip(examples, outputs, strict=True):
        parsed = parse_annotations(output)
        if parsed is None or not all(SCHEMA.allows(item.code, item.subcode) for item in parsed):
            continue
        wrong_fields = count_wrong_fields(example.annotations, parsed)
        if wrong_fields:
            negative = Negative(to_json(parsed), tuple(parsed), Strategy.MODEL_OUTPUT, wrong_fields)
            pairs.append((example, negative))
    return pairs


def pair_row(example: Example, negative: Negative) -> dict[str, Any]:
    """A conversational preference row for ``tokenpo prep``: ``prompt``, ``chosen`` (the
    gold), ``rejected``, ``score_chosen`` 0 and ``score_rejected`` minus the wrong fields,
    plus ``message``, ``gold`` and ``strategy`` (ignored by prep)."""
    return {
        "prompt": prompt_for(example.message),
        "chosen": completion_for(example.annotations),
        "rejected": completion_for(negative.annotations),
        "score_chosen": 0.0,
        "score_rejected": -float(negative.wrong_fields),
        "message": example.message,
        "gold": to_json(example.annotations),
        "strategy": str(negative.strategy),
    }
