"""Test data for prep: synthetic annotation pairs, written in each input format."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
from tokenizers import Tokenizer

from tokenpo.synthetic import example_corpus, train_bpe_tokenizer

SUBCODES = {
    "medication": ["refill_request", "side_effect", "dosage_question"],
    "symptom": ["new_symptom", "worsening_symptom", "resolved_symptom"],
}
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def make_pairs(n: int, seed: int = 0, scores: bool = False) -> list[dict[str, Any]]:
    """Annotation pairs whose rejected side confuses one subcode with a sibling."""
    rng = random.Random(seed)
    rows = []
    for index in range(n):
        code = rng.choice(sorted(SUBCODES))
        subcode, wrong = rng.sample(SUBCODES[code], 2)
        span = rng.choice(["my lisinopril", "a headache since Monday", "a rash", "nausea"])
        prompt = f"Message {index}: I need help with {span}."
        chosen = json.dumps([{"code": code, "subcode": subcode, "span": span}])
        rejected = json.dumps([{"code": code, "subcode": wrong, "span": span}])
        row: dict[str, Any] = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
        if scores:
            row["score_chosen"] = float(rng.randint(5, 10))
            row["score_rejected"] = float(rng.randint(0, 4))
        rows.append(row)
    return rows


def bad_jsonl(rows: list[dict[str, Any]], path: Path) -> Path:
    """A JSONL file of ``rows`` (at least two) around eight bad lines, rows 1-7 and 9,
    each set aside for another reason; line 8 is ``rows[1]``."""
    lines = [
        json.dumps(rows[0]),
        json.dumps({"prompt": "p", "chosen": None, "rejected": "x"}),
        json.dumps({"prompt": "p", "rejected": "x"}),
        json.dumps({"prompt": "p", "chosen": 5, "rejected": "x"}),
        json.dumps({"prompt": "p", "chosen": "", "rejected": "x"}),
        json.dumps({"prompt": "p", "chosen": "same", "rejected": "same"}),
        json.dumps({"prompt": "p", "chosen": [{"role": 1}], "rejected": [{"role": 1}]}),
        "{not json",
        json.dumps(rows[1]),
    ]
    tail = "".join(json.dumps(row) + "\n" for row in rows[2:])
    path.write_bytes(
        "\n".join(lines).encode() + b"\n" + b'{"chosen": "\xff\xfe"}\n' + tail.encode()
    )
    return path


def conversations(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` in the conversational format, without a prompt column: the prompt is the
    messages chosen and rejected share."""
    pairs = []
    for row in rows:
        user = {"role": "user", "content": row["prompt"]}
        pairs.append(
            {
                "chosen": [user, {"role": "assistant", "content": row["chosen"]}],
                "rejected": [user, {"role": "assistant", "content": row["rejected"]}],
            }
        )
    return pairs


def write_rows(rows: list[dict[str, Any]], path: Path) -> Path:
    """Writes rows as parquet, Arrow IPC or JSONL, by the path's suffix."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        feather.write_feather(pa.Table.from_pylist(rows), path)
    return path


def train_tokenizer() -> Tokenizer:
    """A byte-level BPE with ChatML markers, trained on the example corpus."""
    texts = example_corpus() + [row["prompt"] for row in make_pairs(50)]
    tokenizer = train_bpe_tokenizer(texts)
    tokenizer.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    return tokenizer


def write_model_dir(directory: Path) -> Path:
    """A model directory: tokenizer.json plus a tokenizer_config.json with a chat template."""
    directory.mkdir(parents=True, exist_ok=True)
    train_tokenizer().save(str(directory / "tokenizer.json"))
    config = {"chat_template": CHAT_TEMPLATE, "eos_token": "<|im_end|>", "bos_token": None}
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return directory


def empty_prepared(prepared: Path, out: Path) -> Path:
    """A prepared directory at ``out`` with the manifest of ``prepared`` and no shards, as an
    older prep could leave (prep now refuses to finish without a pair)."""
    manifest = json.loads((prepared / "manifest.json").read_text())
    manifest["shards"] = []
    out.mkdir(parents=True)
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out
