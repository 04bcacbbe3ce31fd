"""A built-in preference pair and a BPE tokenizer trained on the spot, with no download.

The pair is a patient message annotated as a JSON list of ``{"code", "subcode", "span"}``;
the rejected annotation confuses one subcode with its sibling, the 1-3 token difference
that token-level preference optimization is about.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

__all__ = ["EXAMPLE_PAIR", "ExamplePair", "example_corpus", "train_bpe_tokenizer"]

_CODES: dict[str, list[str]] = {
    "medication": ["refill_request", "side_effect", "dosage_question"],
    "symptom": ["new_symptom", "worsening_symptom", "resolved_symptom"],
    "scheduling": ["new_appointment", "reschedule", "cancel"],
}
_DRUGS = ["lisinopril", "metformin", "atorvastatin", "albuterol", "sertraline", "amoxicillin"]
_SYMPTOMS = ["headache", "dizziness", "a rash", "nausea", "chest tightness", "a cough"]
_TIMES = ["since Monday", "for two days", "this morning", "all week", "since last night"]


@dataclass(frozen=True, slots=True)
class ExamplePair:
    """A preference pair as text."""

    prompt: str
    """The message to annotate."""
    chosen: str
    """The gold annotation."""
    rejected: str
    """The annotation with one confused subcode."""


def _annotation(code: str, subcode: str, span: str) -> str:
    return json.dumps([{"code": code, "subcode": subcode, "span": span}])


def _message(rng: random.Random) -> tuple[str, str, str, str]:
    drug, symptom, time = rng.choice(_DRUGS), rng.choice(_SYMPTOMS), rng.choice(_TIMES)
    code = rng.choice(sorted(_CODES))
    subcode = rng.choice(_CODES[code])
    span = {"medication": f"my {drug}", "symptom": f"{symptom} {time}"}.get(code, "appointment")
    message = f"Hi, I have had {symptom} {time} and need help with my {drug} and my appointment."
    return message, code, subcode, span


def example_corpus(n_messages: int = 400, seed: int = 0) -> list[str]:
    """Messages and their annotations, enough text to train a small BPE tokenizer."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n_messages):
        message, code, subcode, span = _message(rng)
        texts += [message, _annotation(code, subcode, span)]
    return texts


def train_bpe_tokenizer(texts: list[str], vocab_size: int = 512) -> Tokenizer:
    """A byte-level BPE tokenizer trained on ``texts`` (deterministic for the same input)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


EXAMPLE_PAIR = ExamplePair(
    prompt="Hi, my lisinopril ran out and I have had a headache since Monday. Can you send more?",
    chosen=json.dumps(
        [
            {"code": "medication", "subcode": "refill_request", "span": "my lisinopril ran out"},
            {"code": "symptom", "subcode": "new_symptom", "span": "a headache since Monday"},
        ]
    ),
    rejected=json.dumps(
        [
            {"code": "medication", "subcode": "refill_request", "span": "my lisinopril ran out"},
            {"code": "symptom", "subcode": "worsening_symptom", "span": "a headache since Monday"},
        ]
    ),
)
