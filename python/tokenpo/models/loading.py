"""Building the causal LM a run trains or evaluates: the built-in GPT or any transformers model."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from tokenpo.exceptions import ConfigError, InputError
from tokenpo.models.gpt import GPT, GPTConfig

__all__ = ["BUILTIN_GPT", "load_causal_lm", "model_family"]

BUILTIN_GPT = "gpt"
"""The ``source`` that selects the built-in GPT instead of a path."""


def load_causal_lm(
    source: str | Path | None,
    *,
    gpt: Mapping[str, Any] | None = None,
    vocab_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
    seed: int | None = None,
    attn_implementation: str = "sdpa",
) -> nn.Module:
    """Build a causal LM from a source, with weights in ``dtype``, on the CPU.

    Args:
        source: one of
            - ``"gpt"`` (the string) or None: the built-in GPT, randomly initialized from ``gpt``.
              A directory that happens to be called ``gpt`` is loaded when given as a ``Path``
              or as ``"./gpt"``.
            - a model directory holding ``config.json`` and weights: loaded with
              ``AutoModelForCausalLM.from_pretrained``. An exported built-in GPT is such a
              directory (a Llama on disk) and comes back as a transformers ``LlamaForCausalLM``.
            - a config file (e.g. ``config.json``): ``AutoConfig`` + ``from_config``, randomly
              initialized.
        gpt: GPTConfig fields for the built-in GPT; ignored for other sources.
        vocab_size: the tokenizer's vocabulary size, used for the built-in GPT when ``gpt``
            does not set it (and checked against it when it does).
        dtype: the weights' dtype.
        trust_remote_code: passed to transformers, for models whose code lives in the directory.
        seed: seeds the random initialization (built-in GPT and config files) without touching
            the global RNG; None draws from the global RNG.
        attn_implementation: transformers' attention backend. The default, ``"sdpa"``, accepts
            the 4D bool masks the trainer builds; ``"flex_attention"`` takes a ``BlockMask``.

    Raises:
        ConfigError: a path that does not exist, a directory without ``config.json``, a model
            type transformers does not know as a causal LM, or bad ``gpt`` options. The message
            names the path and what was expected.
        InputError: a config file that is not valid JSON.
    """
    if source is None or (isinstance(source, str) and source == BUILTIN_GPT):
        config = _builtin_config(gpt, vocab_size)
        with _seeded(seed):
            return GPT(config).to(dtype)
    path = Path(source)
    if not path.exists():
        raise ConfigError(
            f"model source {str(path)!r} does not exist; expected {BUILTIN_GPT!r}, a model "
            "directory with config.json, or a config.json file"
        )
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"model directory {str(path)!r} has no config.json; expected a Hugging Face "
                "model directory (config.json + weights), as written by save_pretrained or export"
            )
        pretrained = _transformers_call(
            path,
            AutoModelForCausalLM.from_pretrained,
            path,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            attn_implementation=attn_implementation,
        )
        return cast(nn.Module, pretrained)
    _check_json(path)
    hf_config = _transformers_call(
        path, AutoConfig.from_pretrained, path, trust_remote_code=trust_remote_code
    )
    with _seeded(seed):
        initialized = _transformers_call(
            path,
            AutoModelForCausalLM.from_config,
            hf_config,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            attn_implementation=attn_implementation,
        )
    return cast(nn.Module, initialized)


def model_family(model: nn.Module) -> Literal["gpt", "transformers"]:
    """Whether ``model`` is the built-in GPT or a transformers model (also once FSDP-wrapped,
    which keeps the class as a base).

    Raises:
        TypeError: for any other module.
    """
    if isinstance(model, GPT):
        return "gpt"
    if isinstance(model, PreTrainedModel):
        return "transformers"
    raise TypeError(f"not a causal LM tokenpo can build: {type(model).__name__}")


def _builtin_config(gpt: Mapping[str, Any] | None, vocab_size: int | None) -> GPTConfig:
    fields = dict(gpt or {})
    if vocab_size is not None:
        given = fields.setdefault("vocab_size", vocab_size)
        if given != vocab_size:
            raise ConfigError(
                f"gpt.vocab_size ({given}) differs from the tokenizer's vocabulary size "
                f"({vocab_size}); leave gpt.vocab_size out to use the tokenizer's"
            )
    return GPTConfig.from_dict(fields)


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Within the block, torch's CPU RNG starts from ``seed``; its state is restored on exit."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


def _check_json(path: Path) -> None:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(
            f"model config {str(path)!r} is not a readable JSON file: {error}", file=str(path)
        ) from None


def _transformers_call(path: Path, function: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a transformers loader; its errors (an unknown model type, a config that is not a
    causal LM's, missing weights) become a ConfigError naming ``path``, with its message."""
    try:
        return function(*args, **kwargs)
    except (ValueError, KeyError, OSError) as error:
        raise ConfigError(
            f"cannot load a causal LM from {str(path)!r}: expected a config whose model_type "
            "transformers knows as a causal LM (llama, qwen2, gpt2, ...) and, in a directory, "
            f"its weights; transformers says: {error}"
        ) from error
