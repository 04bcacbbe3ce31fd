"""Building what a run trains: data, policy, reference, objective, optimizer and schedule.

Every rank builds the same things from the same seed; FSDP2 then shards them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.distributed.fsdp import fully_shard

from tokenpo.data.dataset import PairDataset, file_sha256
from tokenpo.data.sampler import CurriculumSampler
from tokenpo.exceptions import ConfigError, InputError
from tokenpo.losses import ValueHead
from tokenpo.models import load_causal_lm
from tokenpo.train.config import TrainConfig
from tokenpo.train.distributed import World, shard_model
from tokenpo.train.forward import CompletionScorer
from tokenpo.train.objective import Objective, build_objective
from tokenpo.train.schedule import lr_factor

__all__ = ["Components", "build_components", "load_model", "run_tokenizer", "tokenizer_file"]


@dataclass(frozen=True, slots=True)
class Components:
    """Everything the loop works with."""

    train_data: PairDataset
    val_data: PairDataset | None
    policy: CompletionScorer
    reference: CompletionScorer | None
    """A frozen live reference, or ``None`` when stored log-probs (or none) are used."""
    objective: Objective
    trained: nn.Module
    """The policy and the loss's own parameters under one root: what is checkpointed."""
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    sampler: CurriculumSampler
    total_steps: int
    tokenizer: Path | None
    """The tokenizer.json the data was prepared with (copied into exports)."""


def tokenizer_file(config: TrainConfig) -> Path | None:
    """The model's tokenizer: ``data.tokenizer``, else ``tokenizer.json`` in the model
    directory, else ``None`` (a model built from scratch takes the data's tokenizer)."""
    if config.data.tokenizer is not None:
        path = Path(config.data.tokenizer)
        if not path.is_file():
            raise InputError(f"{path}: data.tokenizer does not exist", file=str(path))
        return path
    candidate = Path(config.model.source) / "tokenizer.json"
    return candidate if candidate.is_file() else None


def build_components(config: TrainConfig, world: World) -> Components:
    """Opens the data and builds the models, objective, optimizer and schedule."""
    model_tokenizer = tokenizer_file(config)
    expected_hash = None if model_tokenizer is None else file_sha256(model_tokenizer)
    train_data = PairDataset.open(config.data.shards, tokenizer_sha256=expected_hash)
    val_data = (
        None
        if config.data.val_shards is None
        else PairDataset.open(config.data.val_shards, tokenizer_sha256=expected_hash)
    )
    tokenizer, vocab_size = run_tokenizer(config, train_data)

    model = load_model(config, config.model.source, vocab_size)
    model_config: Any = model.config
    hidden_size = int(model_config.hidden_size)
    objective = build_objective(config.loss.name, config.loss.params, hidden_size=hidden_size)
    stored_ref = config.data.use_stored_ref and train_data.has_ref_logps
    live_reference = objective.needs_reference and (objective.needs_logits or not stored_ref)
    if (
        objective.needs_reference
        and not live_reference
        and val_data is not None
        and not val_data.has_ref_logps
    ):
        raise InputError(
            f"{config.data.val_shards}: the training shards carry reference log-probs but the "
            "validation shards do not; run `tokenpo ref-logps` on them too",
            file=str(config.data.val_shards),
        )
    reference = None
    if live_reference:
        reference_model = load_model(
            config, config.model.reference or config.model.source, vocab_size
        )
        reference_model.requires_grad_(False).eval()
        reference = CompletionScorer(reference_model)
    if config.model.activation_checkpointing:
        _checkpoint_blocks(model)
    policy = CompletionScorer(model)
    trained = nn.ModuleDict({"policy": policy})
    if objective.value_head is not None:
        trained["value_head"] = objective.value_head
    _place(config, world, policy, reference, objective.value_head)

    sampler = _sampler(config, world, train_data)
    total_steps = config.schedule.max_steps or config.schedule.epochs * len(sampler)
    optimizer = _optimizer(config, trained)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lr_factor(
            config.schedule.kind,
            warmup_steps=config.schedule.warmup_steps,
            total_steps=total_steps,
            min_lr_ratio=config.schedule.min_lr_ratio,
        ),
    )
    return Components(
        train_data=train_data,
        val_data=val_data,
        policy=policy,
        reference=reference,
        objective=objective,
        trained=trained,
        optimizer=optimizer,
        scheduler=scheduler,
        sampler=sampler,
        total_steps=total_steps,
        tokenizer=tokenizer,
    )


def run_tokenizer(config: TrainConfig, train_data: PairDataset) -> tuple[Path | None, int]:
    """The tokenizer.json a run exports with (:func:`tokenizer_file`, else the one
    ``train_data`` was prepared with, if it still exists) and the vocabulary size a built-in GPT
    gets: the tokenizer's, or more when the data holds larger token ids."""
    data_tokenizer = Path(train_data.manifest.raw["tokenizer"]["path"])
    tokenizer = tokenizer_file(config) or (data_tokenizer if data_tokenizer.is_file() else None)
    return tokenizer, _vocab_size(tokenizer, train_data)


def _vocab_size(tokenizer: Path | None, data: PairDataset) -> int:
    needed = data.max_token_id() + 1
    if tokenizer is None:
        return needed
    return max(Tokenizer.from_file(str(tokenizer)).get_vocab_size(with_added_tokens=True), needed)


def load_model(config: TrainConfig, source: str, vocab_size: int) -> nn.Module:
    """The causal LM at ``source`` as a run of ``config`` starts from: its dtype, its seed for
    random weights, no generation cache."""
    dtype = torch.bfloat16 if config.model.dtype == "bfloat16" else torch.float32
    # Same seed on every rank: each builds the same initial weights before sharding.
    model = load_causal_lm(
        source,
        gpt=config.model.gpt,
        vocab_size=vocab_size,
        dtype=dtype,
        trust_remote_code=config.model.trust_remote_code,
        seed=config.run.seed,
    )
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False
    return model


def _blocks(model: nn.Module) -> nn.ModuleList:
    layers = getattr(model.get_decoder(), "layers", None)  # type: ignore[operator]
    if not isinstance(layers, nn.ModuleList):
        raise ConfigError(
            f"{type(model).__name__}: no decoder blocks at get_decoder().layers to shard"
        )
    return layers


def _checkpoint_blocks(model: nn.Module) -> None:
    """Recomputes each block's activations in the backward pass instead of storing them.

    The RNG state is kept so that the recomputation draws the forward's dropout masks: a
    model's dropout may be functional (a Llama's attention_dropout), invisible to a search
    for ``nn.Dropout``, and the state is small beside a block's activations."""
    blocks = _blocks(model)
    for index, block in enumerate(blocks):
        blocks[index] = checkpoint_wrapper(block, preserve_rng_state=True)


def _place(
    config: TrainConfig,
    world: World,
    policy: CompletionScorer,
    reference: CompletionScorer | None,
    value_head: ValueHead | None,
) -> None:
    """Moves everything to the device and, with several ranks, shards it with FSDP2."""
    for module in (policy, reference, value_head):
        if module is not None:
            module.to(world.device)
    if not world.distributed:
        return
    backend = "nccl" if world.device.type == "cuda" else "gloo"
    for scorer in (policy, reference):
        if scorer is not None:
            shard_model(
                scorer,
                _blocks(scorer.model),
                mixed_precision=config.model.mixed_precision,
                backend=backend,
            )
    if value_head is not None:
        fully_shard(value_head)


def _sampler(config: TrainConfig, world: World, data: PairDataset) -> CurriculumSampler:
    steps_per_epoch = len(data) // config.data.batch_size
    epochs = config.schedule.epochs
    if config.schedule.max_steps is not None and steps_per_epoch:
        epochs = math.ceil(config.schedule.max_steps / steps_per_epoch)
    return CurriculumSampler(
        data.column(config.curriculum.column),
        config.curriculum,
        batch_size=config.data.batch_size,
        world_size=world.world_size,
        rank=world.rank,
        seed=config.run.seed,
        epochs=epochs,
    )


def _optimizer(config: TrainConfig, trained: nn.ModuleDict) -> torch.optim.Optimizer:
    """AdamW; norms and biases (1-D parameters) are not decayed; a loss's value head gets its
    own learning rate."""
    parameters = [p for p in trained["policy"].parameters() if p.requires_grad]
    groups: list[dict[str, Any]] = [
        {
            "params": [p for p in parameters if p.ndim >= 2],
            "weight_decay": config.optim.weight_decay,
        },
        {"params": [p for p in parameters if p.ndim < 2], "weight_decay": 0.0},
    ]
    if "value_head" in trained:
        head = trained["value_head"]
        groups.append({"params": list(head.parameters()), "lr": head.lr})
    return torch.optim.AdamW(
        groups, lr=config.optim.lr, betas=config.optim.betas, eps=config.optim.eps
    )
