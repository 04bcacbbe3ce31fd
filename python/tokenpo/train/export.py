"""Exporting the policy of any checkpoint of a run in the Hugging Face format.

A run exports its last policy to ``RUN_DIR/final``; this writes the policy of an earlier
checkpoint (or of the latest, when the run was stopped before the end)::

    tokenpo export runs/dpo --checkpoint step-000200    # -> runs/dpo/export-step-000200

One process on the CPU, whatever number of ranks wrote the checkpoint: the model is rebuilt
from the run's ``config.toml`` exactly as the trainer built it, then its weights are read
from the checkpoint (torch.distributed.checkpoint reshards them). The optimizer state and the
loss's own parameters (tbpo_q's value head) stay in the checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict
from torch.distributed.checkpoint.state_dict_loader import load as load_sharded

from tokenpo.data.dataset import PairDataset
from tokenpo.exceptions import ConfigError, InputError
from tokenpo.models import export_hf
from tokenpo.train.checkpoint import complete_checkpoints, latest_checkpoint, single_process_quiet
from tokenpo.train.config import load_config
from tokenpo.train.forward import CompletionScorer
from tokenpo.train.loop import tokenizer_files
from tokenpo.train.setup import load_model, run_tokenizer

__all__ = ["export_checkpoint"]


def export_checkpoint(
    run_dir: Path,
    *,
    checkpoint: str | None = None,
    out_dir: Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Writes the policy of a checkpoint of ``run_dir`` so that
    ``AutoModelForCausalLM.from_pretrained`` loads it, with the run's tokenizer files.

    Args:
        run_dir: a directory written by ``tokenpo train``.
        checkpoint: ``"latest"`` (also ``None``), a checkpoint's name (``"step-000012"``) or
            its step (``"12"``).
        out_dir: where to write; by default ``RUN_DIR/export-step-NNNNNN``.
        overwrite: replace ``out_dir`` if it holds anything.

    Returns:
        The directory written.

    Raises:
        InputError: ``run_dir`` has no ``config.toml``, the checkpoint does not exist (the
            message lists those that do), the run's training shards cannot be opened (they
            give the vocabulary size; relative paths in ``config.toml`` are read from the
            current directory, as the trainer read them), or the checkpoint does not fit the
            model.
        ConfigError: ``out_dir`` is not empty (without ``overwrite``), or is the run directory
            or inside its checkpoints.
    """
    run_dir = Path(run_dir)
    config_path = run_dir / "config.toml"
    if not config_path.is_file():
        raise InputError(f"{run_dir}: not a run directory (no config.toml)", file=str(config_path))
    config = load_config(config_path)
    source = _checkpoint_dir(run_dir / "checkpoints", checkpoint)
    target = Path(out_dir) if out_dir is not None else run_dir / f"export-{source.name}"
    _check_target(run_dir, target, overwrite)

    tokenizer, vocab_size = run_tokenizer(config, PairDataset.open(config.data.shards))
    model = load_model(config, config.model.source, vocab_size)
    _load_policy(source, model)
    model_config: Any = model.config
    return export_hf(
        model,
        config=model_config,
        out_dir=target,
        tokenizer_files=tokenizer_files(tokenizer),
        overwrite=overwrite,
    )


def _checkpoint_dir(directory: Path, name: str | None) -> Path:
    """The checkpoint ``name`` designates in ``directory``."""
    available = complete_checkpoints(directory) if directory.is_dir() else []
    if name is None or name == "latest":
        latest = latest_checkpoint(directory) if directory.is_dir() else None
        if latest is None:
            raise InputError(f"{directory}: no checkpoint yet", file=str(directory))
        return latest
    wanted = f"step-{int(name):06d}" if name.isdigit() else name
    for path in available:
        if path.name == wanted:
            return path
    names = ", ".join(["latest", *(path.name for path in available)]) if available else "none"
    raise InputError(
        f"{directory}: no checkpoint {name!r}; available: {names}", file=str(directory)
    )


def _check_target(run_dir: Path, out_dir: Path, overwrite: bool) -> None:
    """Refuses to write over the run itself, and over an earlier export unless asked to."""
    run, target = run_dir.resolve(), out_dir.resolve()
    if run.is_relative_to(target) or target.is_relative_to(run / "checkpoints"):
        raise ConfigError(
            f"{out_dir}: exporting there would replace the run or its checkpoints; "
            "choose another output directory"
        )
    if not overwrite and target.is_dir() and any(target.iterdir()):
        raise ConfigError(
            f"{out_dir} already exists and is not empty; pass --overwrite (overwrite=True) "
            "to replace it"
        )


def _load_policy(checkpoint: Path, model: nn.Module) -> None:
    """Reads the policy's weights from ``checkpoint`` into ``model``, under the root the
    trainer checkpointed (so the names match)."""
    trained = nn.ModuleDict({"policy": CompletionScorer(model)})
    state = {"model": get_model_state_dict(trained)}
    try:
        with single_process_quiet():
            load_sharded(state, checkpoint_id=checkpoint, no_dist=True)
    except CheckpointException as error:
        # Its str() is a traceback per rank; the causes are what a user can act on.
        causes = "; ".join(sorted({str(cause) for cause, _ in error.failures.values()}))
        raise InputError(
            f"{checkpoint}: does not fit the model the run's config.toml builds: {causes}",
            file=str(checkpoint),
        ) from None
    set_model_state_dict(trained, state["model"])
