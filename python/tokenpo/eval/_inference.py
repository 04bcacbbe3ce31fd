"""Running a model for evaluation: eval mode and no autograd, the caller's mode put back."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["inference", "model_device", "vocabulary_size"]


@contextlib.contextmanager
def inference(*models: nn.Module) -> Iterator[None]:
    """Within the block the models are in eval mode (no dropout) and autograd is off; each
    model's train/eval mode is restored on exit."""
    modes = [model.training for model in models]
    try:
        for model in models:
            model.eval()
        with torch.no_grad():
            yield
    finally:
        for model, training in zip(models, modes, strict=True):
            model.train(training)


def model_device(model: nn.Module) -> torch.device:
    """Where the model's weights are (its first parameter's device)."""
    return next(model.parameters()).device


def vocabulary_size(model: nn.Module) -> int:
    """Rows of the model's input embedding: token ids must lie below this."""
    embedding = model.get_input_embeddings()  # type: ignore[operator]
    return int(embedding.num_embeddings)
