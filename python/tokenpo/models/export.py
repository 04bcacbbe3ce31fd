"""Writing a model as a Hugging Face directory: config.json, model.safetensors, tokenizer files."""

from __future__ import annotations

import copy
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor, nn
from torch.distributed.tensor import DTensor
from transformers import AutoModelForCausalLM, PretrainedConfig

from tokenpo.exceptions import ConfigError, InputError
from tokenpo.models.gpt_config import GPTConfig

__all__ = ["export_hf"]

_WEIGHTS = "model.safetensors"
_CONFIG = "config.json"


def export_hf(
    model_or_state: nn.Module | Mapping[str, object],
    *,
    config: GPTConfig | PretrainedConfig,
    out_dir: Path,
    tokenizer_files: Sequence[Path] = (),
    overwrite: bool = False,
) -> Path:
    """Write a model so that ``AutoModelForCausalLM.from_pretrained(out_dir)`` loads it.

    The directory appears complete or not at all: everything is written into a hidden sibling
    directory that is renamed into place at the end, and removed if anything fails.

    Args:
        model_or_state: the model, or its full state dict (unsharded tensors, e.g. from
            ``get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
            cpu_offload=True))`` on every rank, exported from rank 0).
        config: a :class:`GPTConfig` (written as the equivalent ``LlamaConfig``) or the
            transformers model's config. The caller's config object is not modified.
        out_dir: the directory to create.
        tokenizer_files: files copied next to the weights under their own names, e.g.
            ``tokenizer.json`` and ``tokenizer_config.json``.
        overwrite: replace ``out_dir`` if it exists and is not empty.

    Returns:
        ``out_dir``.

    Raises:
        ConfigError: ``out_dir`` is a file or a non-empty directory (without ``overwrite``), or a
            tokenizer file is missing or clashes with the files written here.
        InputError: the state dict does not fit ``config``: missing or unexpected keys, wrong
            shapes, or sharded tensors. Tied weights are not an error: the output embedding is
            left out when ``tie_word_embeddings`` is set, as transformers does.
    """
    out_dir = Path(out_dir)
    hf_config = config.to_llama_config() if isinstance(config, GPTConfig) else copy.deepcopy(config)
    if hasattr(hf_config, "use_cache"):
        # The trainer turns the generation cache off; the exported model is for inference.
        hf_config.use_cache = True
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    tensors = _weights_to_save(state, hf_config)
    dtypes = {tensor.dtype for tensor in tensors.values() if tensor.is_floating_point()}
    if len(dtypes) == 1:
        hf_config.dtype = dtypes.pop()
    tokenizer_paths = _checked_tokenizer_files(tokenizer_files)
    _check_target(out_dir, overwrite)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = out_dir.parent / f".{out_dir.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        partial.mkdir()
        hf_config.save_pretrained(partial)
        save_file(tensors, partial / _WEIGHTS, metadata={"format": "pt"})
        for path in tokenizer_paths:
            shutil.copy2(path, partial / path.name)
        _move_into_place(partial, out_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out_dir


def _weights_to_save(state: Mapping[str, object], config: PretrainedConfig) -> dict[str, Tensor]:
    """The state's tensors on the CPU, checked against the model ``config`` describes, with tied
    aliases (keys naming a parameter another key already holds) left out."""
    build: Callable[[PretrainedConfig], nn.Module] = AutoModelForCausalLM.from_config
    with torch.device("meta"):
        reference = build(copy.deepcopy(config))
    expected = {name: tensor.shape for name, tensor in reference.state_dict().items()}
    every_name = {name for name, _ in reference.named_parameters(remove_duplicate=False)}
    aliases = every_name - {name for name, _ in reference.named_parameters()}

    where = "model_or_state"
    missing = sorted(expected.keys() - aliases - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    if missing or unexpected:
        raise InputError(
            f"the state dict does not fit a {type(reference).__name__} of this config: "
            f"missing {_some(missing)}, unexpected {_some(unexpected)}",
            field=where,
        )
    tensors: dict[str, Tensor] = {}
    for name, tensor in state.items():
        if name in aliases:
            continue
        if isinstance(tensor, DTensor):
            raise InputError(
                f"{name} is a sharded DTensor; export a full state dict "
                "(get_model_state_dict with StateDictOptions(full_state_dict=True))",
                field=where,
            )
        if not isinstance(tensor, Tensor) or tensor.shape != expected[name]:
            found = list(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
            raise InputError(
                f"{name} should be a tensor of shape {list(expected[name])}, got {found}",
                field=where,
            )
        tensors[name] = tensor.detach().to("cpu").contiguous()
    return tensors


def _some(names: list[str]) -> str:
    if not names:
        return "none"
    shown = ", ".join(names[:5])
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _checked_tokenizer_files(files: Sequence[Path]) -> list[Path]:
    paths = [Path(file) for file in files]
    names: set[str] = set()
    for path in paths:
        if not path.is_file():
            raise ConfigError(f"tokenizer file {str(path)!r} does not exist or is not a file")
        if path.name in (_CONFIG, _WEIGHTS) or path.name in names:
            raise ConfigError(
                f"tokenizer file {str(path)!r} would overwrite another file of the export "
                f"({path.name})"
            )
        names.add(path.name)
    return paths


def _check_target(out_dir: Path, overwrite: bool) -> None:
    if out_dir.is_file():
        raise ConfigError(f"export directory {str(out_dir)!r} is a file")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise ConfigError(
            f"export directory {str(out_dir)!r} is not empty; pass overwrite=True to replace it"
        )


def _move_into_place(partial: Path, out_dir: Path) -> None:
    """Rename ``partial`` to ``out_dir``; an existing ``out_dir`` is moved aside first and
    removed only once the new directory is in place."""
    if not out_dir.exists():
        partial.rename(out_dir)
        return
    previous = out_dir.parent / f".{out_dir.name}.previous-{uuid.uuid4().hex[:8]}"
    out_dir.rename(previous)
    try:
        partial.rename(out_dir)
    except BaseException:
        previous.rename(out_dir)
        raise
    shutil.rmtree(previous)
