"""Greedy completions of prompts, encoded exactly as ``tokenpo prep`` encodes them.

A conversational prompt (a list of ``{"role", "content"}`` messages) is rendered with the
chat template of ``tokenizer_config.json``, ready for the assistant's turn, and the text is
encoded with the tokenizer's special tokens; a plain-text prompt is encoded as it is. That is
what prep writes as ``prompt_ids`` (crates/tokenpo-core/src/tokenize.rs), so the model sees
at evaluation the prompts it was trained on. The template is rendered by transformers'
``apply_chat_template`` with the variables prep gives it: ``messages`` (role and content
only), ``add_generation_prompt``, ``bos_token`` ("" when the config names none) and
``eos_token`` (the EOS prep appends to completions). The text is then encoded with the
special tokens, as prep does (``apply_chat_template(tokenize=True)`` would leave them out,
which differs for tokenizers whose post-processor adds a BOS).

Known difference: transformers renders templates with ``trim_blocks`` and ``lstrip_blocks``,
prep's minijinja (so far) without, so a template whose block tags are followed by newlines
renders differently (a strict xfail in tests/eval/test_eval_generation.py tracks it).

Decoding is greedy with a KV cache: the built-in GPT's ``generate``, or transformers'
``generate`` on left-padded batches with a plain greedy configuration in place of the model's
own ``generation_config`` (which could ask for sampling, beams, penalties or suppressed
tokens). Completions stop before the first EOS and keep every special token the model emits
before it, so an output with a stray ``<|im_start|>`` is not valid JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerFast

from tokenpo.eval._inference import inference, model_device, vocabulary_size
from tokenpo.exceptions import InputError, TokenizerError
from tokenpo.models import GPT, model_family

__all__ = ["GenerationProgress", "Prompt", "PromptTokenizer", "generate_completions"]

Prompt = str | Sequence[Mapping[str, str]]
"""Plain text, or conversational messages ``[{"role": ..., "content": ...}, ...]``."""

GenerationProgress = Callable[[int, int], None]
"""Called as ``(done_prompts, total_prompts)`` before the first batch and after each."""

_EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<|im_end|>", "<eos>", "<|eot_id|>")
"""Tried in order when the config names no EOS, as prep does."""


class PromptTokenizer:
    """A tokenizer with its EOS and chat template, encoding prompts as prep does."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerFast,
        *,
        eos_token: str,
        bos_token: str = "",
        file: Path | None = None,
    ) -> None:
        eos_id = tokenizer.get_vocab().get(eos_token)
        if eos_id is None:
            raise TokenizerError(f"EOS token {eos_token!r} is not in the vocabulary")
        self.tokenizer = tokenizer
        self.eos_token = eos_token
        self.eos_token_id: int = eos_id
        """Ends a completion; generation stops before it."""
        self.bos_token = bos_token
        self.file = file
        """The ``tokenizer.json`` it was loaded from, if any."""

    @classmethod
    def load(cls, path: str | Path) -> PromptTokenizer:
        """Loads a model directory holding ``tokenizer.json`` and optionally
        ``tokenizer_config.json`` (its ``chat_template``, ``bos_token``, ``eos_token``) and
        ``chat_template.jinja`` or ``chat_template.json``, or a ``tokenizer.json`` with those
        beside it: the files prep reads.

        Raises:
            TokenizerError: no readable ``tokenizer.json``, a config that is not JSON, or no
                EOS token (the config names none and none of the usual ones is in the
                vocabulary).
        """
        path = Path(path)
        tokenizer_file = path / "tokenizer.json" if path.is_dir() else path
        config_file = tokenizer_file.with_name("tokenizer_config.json")
        if not tokenizer_file.is_file():
            raise TokenizerError(
                f"{tokenizer_file}: no tokenizer.json; give a model directory with the "
                "tokenizer the data was prepared with",
                file=str(tokenizer_file),
            )
        config = _read_config(config_file) if config_file.is_file() else {}
        build: Callable[..., PreTrainedTokenizerFast] = PreTrainedTokenizerFast
        try:
            tokenizer = build(
                tokenizer_file=str(tokenizer_file),
                chat_template=_find_chat_template(tokenizer_file.parent, config),
                pad_token=_special_token(config, "pad_token"),
            )
        except Exception as error:  # the tokenizers library raises plain Exceptions
            raise TokenizerError(
                f"{tokenizer_file}: cannot load the tokenizer: {error}", file=str(tokenizer_file)
            ) from error
        vocabulary = tokenizer.get_vocab()
        eos_token = _special_token(config, "eos_token") or next(
            (token for token in _EOS_CANDIDATES if token in vocabulary), None
        )
        if eos_token is None:
            raise TokenizerError(
                f"{tokenizer_file}: no EOS token found in tokenizer_config.json or the vocabulary",
                file=str(tokenizer_file),
            )
        try:
            return cls(
                tokenizer,
                eos_token=eos_token,
                bos_token=_special_token(config, "bos_token") or "",
                file=tokenizer_file,
            )
        except TokenizerError as error:
            raise TokenizerError(f"{tokenizer_file}: {error}", file=str(tokenizer_file)) from None

    def encode(self, prompt: Prompt, *, row: int | None = None) -> list[int]:
        """The prompt's token ids, as prep writes them in ``prompt_ids``.

        Raises:
            InputError: messages that are not ``{"role": str, "content": str}`` mappings, or a
                conversational prompt without a chat template (names ``row`` when given).
        """
        text = prompt if isinstance(prompt, str) else self.render(prompt, row=row)
        ids: list[int] = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        return ids

    def render(self, messages: Sequence[Mapping[str, str]], *, row: int | None = None) -> str:
        """The chat template applied to ``messages``, ready for the assistant's turn."""
        where = "" if row is None else f"row {row}: "
        if self.tokenizer.chat_template is None:
            raise InputError(
                f"{where}conversational prompt, but the tokenizer has no chat_template (give a "
                "model directory with tokenizer_config.json)",
                row=row,
                field="prompt",
            )
        conversation = [_message(message, where, row) for message in messages]
        rendered = self.tokenizer.apply_chat_template(
            conversation,
            add_generation_prompt=True,
            tokenize=False,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )
        return cast(str, rendered)

    def decode(self, ids: Sequence[int]) -> str:
        """The text of generated ids (cut before the EOS), special tokens included: one the
        model emits is part of its output, and leaving it out could make a broken output
        parse."""
        return cast(str, self.tokenizer.decode(list(ids), skip_special_tokens=False))

    @property
    def pad_token_id(self) -> int:
        """The tokenizer's padding token, else the EOS (padding is masked out anyway)."""
        pad = self.tokenizer.pad_token_id
        return pad if isinstance(pad, int) else self.eos_token_id


def generate_completions(
    model: nn.Module,
    tokenizer: str | Path | PromptTokenizer,
    prompts: Sequence[Prompt],
    *,
    max_new_tokens: int,
    batch_size: int,
    progress: GenerationProgress | None = None,
) -> list[str]:
    """The greedy completion of each prompt, as text, in the order of ``prompts``.

    Args:
        model: the built-in GPT or a transformers causal LM, on the device to run on.
        tokenizer: a model directory (or ``tokenizer.json``) as :meth:`PromptTokenizer.load`
            reads it, or a loaded :class:`PromptTokenizer`.
        prompts: conversational messages (or plain text), one prompt per completion.
        max_new_tokens: the most tokens generated per prompt; a completion is cut there when
            no EOS came first.
        batch_size: prompts decoded together. Prompts are batched by length, longest first,
            which keeps left padding small.
        progress: told how many prompts are done.

    Raises:
        InputError: a prompt that cannot be encoded, is empty once encoded, or holds a token
            outside the model's vocabulary; ``max_new_tokens`` < 0 or ``batch_size`` < 1.
        TokenizerError: the tokenizer cannot be loaded.
    """
    if max_new_tokens < 0:
        raise InputError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    prompt_tokenizer = (
        tokenizer if isinstance(tokenizer, PromptTokenizer) else PromptTokenizer.load(tokenizer)
    )
    encoded = [prompt_tokenizer.encode(prompt, row=row) for row, prompt in enumerate(prompts)]
    _check_ids(encoded, vocabulary_size(model))
    order = sorted(range(len(encoded)), key=lambda row: -len(encoded[row]))
    completions: list[list[int]] = [[] for _ in encoded]
    if progress is not None:
        progress(0, len(encoded))
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = [encoded[row] for row in rows]
        generated = _greedy(model, batch, prompt_tokenizer, max_new_tokens)
        for row, completion in zip(rows, generated, strict=True):
            completions[row] = completion
        if progress is not None:
            progress(min(start + batch_size, len(order)), len(order))
    return [prompt_tokenizer.decode(completion) for completion in completions]


def _greedy(
    model: nn.Module, prompts: list[list[int]], tokenizer: PromptTokenizer, max_new_tokens: int
) -> list[list[int]]:
    """New tokens of each prompt, before the first EOS."""
    if model_family(model) == "gpt":
        return cast(GPT, model).generate(
            prompts, max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id
        )
    if max_new_tokens == 0:
        return [[] for _ in prompts]
    width = max(len(prompt) for prompt in prompts)
    input_ids = torch.full((len(prompts), width), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt) :] = torch.tensor(prompt)
        attention_mask[row, width - len(prompt) :] = 1
    device = model_device(model)
    configure: Callable[..., GenerationConfig] = GenerationConfig  # untyped in transformers
    greedy = configure(
        do_sample=False,
        num_beams=1,
        max_new_tokens=max_new_tokens,
        min_new_tokens=0,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        use_cache=True,  # whatever the config says: a model saved mid-training may say no
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    # generate() fills every field a passed config leaves unset from model.generation_config,
    # so that one is swapped for the greedy config during the call.
    language_model = cast(PreTrainedModel, model)
    own_config = language_model.generation_config
    language_model.generation_config = greedy
    try:
        with inference(model):
            sequences = language_model.generate(  # type: ignore[operator]
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                generation_config=greedy,
            )
    finally:
        language_model.generation_config = own_config
    # Rows that stopped early are padded after their EOS: the cut leaves padding out.
    new_tokens: list[list[int]] = sequences[:, width:].tolist()
    eos = tokenizer.eos_token_id
    return [row[: row.index(eos)] if eos in row else row for row in new_tokens]


def _check_ids(prompts: list[list[int]], vocab_size: int) -> None:
    for row, ids in enumerate(prompts):
        if not ids:
            raise InputError(f"row {row}: the prompt encodes to no tokens", row=row, field="prompt")
        largest = max(ids)
        if largest >= vocab_size:
            raise InputError(
                f"row {row}: the prompt holds token {largest}, outside the model's vocabulary "
                f"[0, {vocab_size}); is the tokenizer the model's?",
                row=row,
                field="prompt",
            )


def _message(message: Mapping[str, str], where: str, row: int | None) -> dict[str, str]:
    """A message as prep reads it: its role and content, both strings."""
    if not isinstance(message, Mapping):
        raise InputError(
            f"{where}a prompt message must be a {{'role', 'content'}} object, got "
            f"{type(message).__name__}",
            row=row,
            field="prompt",
        )
    role, content = message.get("role"), message.get("content")
    if not isinstance(role, str) or not isinstance(content, str):
        raise InputError(
            f"{where}a prompt message needs string 'role' and 'content', got {dict(message)!r}",
            row=row,
            field="prompt",
        )
    return {"role": role, "content": content}


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TokenizerError(f"{path}: not a readable JSON file: {error}", file=str(path)) from None
    if not isinstance(config, dict):
        raise TokenizerError(f"{path}: not a JSON object", file=str(path))
    return config


def _find_chat_template(directory: Path, config: Mapping[str, Any]) -> str | None:
    """The chat template where transformers (and prep) look for it: ``chat_template.jinja``,
    else the config's, else ``chat_template.json``'s."""
    jinja = directory / "chat_template.jinja"
    if jinja.is_file():
        try:
            return jinja.read_text()
        except (OSError, UnicodeDecodeError) as error:
            raise TokenizerError(f"{jinja}: not readable: {error}", file=str(jinja)) from None
    from_config = _chat_template(config)
    processor = directory / "chat_template.json"
    if from_config is None and processor.is_file():
        return _chat_template(_read_config(processor))
    return from_config


def _chat_template(config: Mapping[str, Any]) -> str | None:
    """The default chat template: a string, or the one named "default" in a list of named
    ones (as prep picks it)."""
    template = config.get("chat_template")
    if isinstance(template, str):
        return template
    if isinstance(template, list):
        for entry in template:
            if isinstance(entry, dict) and entry.get("name") == "default":
                source = entry.get("template")
                return source if isinstance(source, str) else None
    return None


def _special_token(config: Mapping[str, Any], key: str) -> str | None:
    """A special token of the config: a string or ``{"content": ...}``."""
    token = config.get(key)
    if isinstance(token, dict):
        token = token.get("content")
    return token if isinstance(token, str) else None
