"""Generation: prompts encoded as prep encodes them; cached batched greedy decoding against a
plain loop without cache, for the built-in GPT and a transformers Llama."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from eval_kit import greedy_without_cache, tiny_gpt, tiny_llama
from torch import nn

import tokenpo
from prep_data import write_model_dir, write_rows
from tokenpo.data.shards import read_shard
from tokenpo.eval import PromptTokenizer, generate_completions
from tokenpo.exceptions import InputError, TokenizerError
from tokenpo.synthetic.task import parse_annotations

PROMPTS: list[Any] = [
    [{"role": "user", "content": "Annotate: can you send a refill of my lisinopril?"}],
    [
        {"role": "system", "content": "You annotate patient messages."},
        {"role": "user", "content": "I have had a headache since Monday."},
    ],
    [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "[]"},
        {"role": "user", "content": "Also a rash and nausea, and please move my appointment."},
    ],
]
STEPS = 12


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("model"))


def build(family: str, vocab_size: int) -> nn.Module:
    return tiny_gpt(vocab_size, seed=3) if family == "gpt" else tiny_llama(vocab_size, seed=3)


def prepared_prompt_ids(
    prompts: list[Any], tokenizer_dir: Path, directory: Path
) -> dict[str, list[int]]:
    """The prompt_ids prep writes for ``prompts``, by pair id."""
    conversational = not isinstance(prompts[0], str)
    rows = [
        {
            "id": f"row-{index}",
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": "[1]"}] if conversational else "[1]",
            "rejected": [{"role": "assistant", "content": "[2]"}] if conversational else "[2]",
        }
        for index, prompt in enumerate(prompts)
    ]
    source = write_rows(rows, directory / "pairs.jsonl")
    manifest = tokenpo.prep([source], tokenizer_dir, directory / "prepared")
    assert manifest.pairs == len(prompts)
    return {
        row["pair_id"]: row["prompt_ids"]
        for shard in manifest.shards
        for row in read_shard(shard.path).to_pylist()
    }


@pytest.mark.parametrize(
    "prompts",
    [PROMPTS, ["Message 0: I need help with my lisinopril.", "a rash"]],
    ids=["conversational", "text"],
)
def test_prompt_ids_equal_the_ones_prep_writes(
    prompts: list[Any], model_dir: Path, tmp_path: Path
) -> None:
    expected = prepared_prompt_ids(prompts, model_dir, tmp_path)
    tokenizer = PromptTokenizer.load(model_dir)
    got = {f"row-{index}": tokenizer.encode(prompt) for index, prompt in enumerate(prompts)}
    assert got == expected


def test_prompt_ids_equal_prep_for_a_template_that_relies_on_trim_blocks(
    model_dir: Path, tmp_path: Path
) -> None:
    directory = tmp_path / "model"
    shutil.copytree(model_dir, directory)
    config = json.loads((directory / "tokenizer_config.json").read_text())
    config["chat_template"] = (
        "{% for message in messages %}\n"
        "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}\n"
        "{% endfor %}\n"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    expected = prepared_prompt_ids(PROMPTS, directory, tmp_path)
    tokenizer = PromptTokenizer.load(directory)
    assert {f"row-{i}": tokenizer.encode(p) for i, p in enumerate(PROMPTS)} == expected


@pytest.mark.parametrize("name", ["chat_template.jinja", "chat_template.json"])
def test_prompt_ids_equal_prep_with_the_template_in_its_own_file(
    name: str, model_dir: Path, tmp_path: Path
) -> None:
    directory = tmp_path / "model"
    shutil.copytree(model_dir, directory)
    config = json.loads((directory / "tokenizer_config.json").read_text())
    template = config.pop("chat_template")
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    text = template if name.endswith(".jinja") else json.dumps({"chat_template": template})
    (directory / name).write_text(text)
    expected = prepared_prompt_ids(PROMPTS, directory, tmp_path)
    tokenizer = PromptTokenizer.load(directory)
    assert {f"row-{i}": tokenizer.encode(p) for i, p in enumerate(PROMPTS)} == expected


@pytest.mark.parametrize("family", ["gpt", "transformers"])
def test_completions_equal_a_greedy_loop_without_cache(family: str, model_dir: Path) -> None:
    tokenizer = PromptTokenizer.load(model_dir)
    model = build(family, len(tokenizer.tokenizer))
    expected = [
        greedy_without_cache(model, tokenizer.encode(prompt), STEPS, tokenizer.eos_token_id)
        for prompt in PROMPTS
    ]
    assert len({token for row in expected for token in row}) > STEPS  # not one repeated token
    progress: list[tuple[int, int]] = []
    got = generate_completions(
        model,
        model_dir,
        PROMPTS,
        max_new_tokens=STEPS,
        batch_size=2,
        progress=lambda done, total: progress.append((done, total)),
    )
    assert got == [tokenizer.decode(ids) for ids in expected]
    assert all(isinstance(text, str) and text for text in got)
    assert progress == [(0, 3), (2, 3), (3, 3)]
    assert not model.training


@pytest.mark.parametrize("family", ["gpt", "transformers"])
def test_completions_stop_before_the_first_eos(
    family: str, model_dir: Path, tmp_path: Path
) -> None:
    tokenizer = PromptTokenizer.load(model_dir)
    model = build(family, len(tokenizer.tokenizer))
    never = -1
    full = [
        greedy_without_cache(model, tokenizer.encode(prompt), STEPS, never) for prompt in PROMPTS
    ]
    # Make EOS a token that the first prompt's completion produces third.
    eos = full[0][2]
    assert eos not in full[0][:2]
    directory = tmp_path / "model"
    shutil.copytree(model_dir, directory)
    config = json.loads((directory / "tokenizer_config.json").read_text())
    config["eos_token"] = tokenizer.tokenizer.convert_ids_to_tokens(eos)
    (directory / "tokenizer_config.json").write_text(json.dumps(config))

    got = generate_completions(model, directory, PROMPTS, max_new_tokens=STEPS, batch_size=3)
    cut = [row[: row.index(eos)] if eos in row else row for row in full]
    assert got == [tokenizer.decode(ids) for ids in cut]
    assert got[0] == tokenizer.decode(full[0][:2])


def test_no_tokenizer_json(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match=r"no tokenizer\.json"):
        PromptTokenizer.load(tmp_path)


def test_a_conversational_prompt_needs_a_chat_template(model_dir: Path, tmp_path: Path) -> None:
    shutil.copy(model_dir / "tokenizer.json", tmp_path / "tokenizer.json")
    tokenizer = PromptTokenizer.load(tmp_path)
    assert tokenizer.encode("plain text is fine")
    with pytest.raises(InputError, match="row 4: conversational prompt, but the tokenizer has no"):
        tokenizer.encode(PROMPTS[0], row=4)


def test_bad_messages_and_tokens_outside_the_vocabulary(model_dir: Path) -> None:
    tokenizer = PromptTokenizer.load(model_dir)
    with pytest.raises(InputError, match="needs string 'role' and 'content'"):
        tokenizer.encode([{"role": "user", "text": "hi"}])
    small = tiny_gpt(vocab_size=100)
    with pytest.raises(InputError, match=r"outside the model's vocabulary \[0, 100\)"):
        generate_completions(small, tokenizer, PROMPTS, max_new_tokens=2, batch_size=2)


def test_the_models_generation_config_does_not_change_greedy_decoding(model_dir: Path) -> None:
    tokenizer = PromptTokenizer.load(model_dir)
    model = build("transformers", len(tokenizer.tokenizer))
    expected = [
        greedy_without_cache(model, tokenizer.encode(prompt), STEPS, tokenizer.eos_token_id)
        for prompt in PROMPTS
    ]
    # A saved generation_config.json may ask for all of these; greedy decoding ignores them.
    own = model.generation_config
    own.num_beams = 3
    own.repetition_penalty = 5.0
    own.no_repeat_ngram_size = 1
    own.min_new_tokens = STEPS
    own.suppress_tokens = [expected[0][0]]
    own.bad_words_ids = [[expected[1][0]]]
    got = generate_completions(model, tokenizer, PROMPTS, max_new_tokens=STEPS, batch_size=2)
    assert got == [tokenizer.decode(ids) for ids in expected]
    assert model.generation_config is own
    assert (own.num_beams, own.repetition_penalty) == (3, 5.0)


def test_a_special_token_the_model_emits_stays_in_the_completion(model_dir: Path) -> None:
    tokenizer = PromptTokenizer.load(model_dir)
    im_start = tokenizer.tokenizer.convert_tokens_to_ids("<|im_start|>")
    broken = tokenizer.decode(
        [*tokenizer.tokenizer.encode("[]", add_special_tokens=False), im_start]
    )
    assert broken == "[]<|im_start|>"
    assert parse_annotations(broken) is None


@pytest.mark.parametrize("family", ["gpt", "transformers"])
def test_completions_keep_special_tokens_before_the_eos(
    family: str, model_dir: Path, tmp_path: Path
) -> None:
    tokenizer = PromptTokenizer.load(model_dir)
    model = build(family, len(tokenizer.tokenizer))
    full = [
        greedy_without_cache(model, tokenizer.encode(prompt), STEPS, tokenizer.eos_token_id)
        for prompt in PROMPTS
    ]
    # Mark a token the first completion emits (and no prompt holds) as a special token.
    prompt_ids = {token for prompt in PROMPTS for token in tokenizer.encode(prompt)}
    special = next(token for token in full[0] if token not in prompt_ids)
    directory = tmp_path / "model"
    shutil.copytree(model_dir, directory)
    spec = json.loads((directory / "tokenizer.json").read_text())
    spec["added_tokens"].append(
        {
            "id": special,
            "content": tokenizer.tokenizer.convert_ids_to_tokens(special),
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
    )
    (directory / "tokenizer.json").write_text(json.dumps(spec))
    marked = PromptTokenizer.load(directory)
    assert marked.tokenizer.decode([special], skip_special_tokens=True) == ""
    assert [marked.encode(prompt) for prompt in PROMPTS] == [tokenizer.encode(p) for p in PROMPTS]

    got = generate_completions(model, directory, PROMPTS, max_new_tokens=STEPS, batch_size=2)
    # The text of every generated token, as the tokenizer without the mark decodes it.
    assert got == [tokenizer.tokenizer.decode(ids) for ids in full]
