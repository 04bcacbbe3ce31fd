"""Tiny models and model directories shared by the tests of tokenpo.eval."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer
from torch import nn
from transformers import LlamaForCausalLM

import tokenpo
from prep_data import make_pairs, write_rows
from tiny_models import tiny_llama_config
from tokenpo.models import GPT, GPTConfig
from tokenpo.synthetic.task import generate_task, train_task_tokenizer, write_split

TEST_ROWS = 3
"""Rows of the test split :func:`eval_files` writes."""
HELD_OUT_PAIRS = 6
"""Pairs of the prepared directory :func:`eval_files` writes."""


def tiny_gpt(vocab_size: int, seed: int = 0) -> GPT:
    """A built-in GPT with wide random weights, so greedy tokens vary from step to step."""
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=vocab_size, hidden_size=32, initializer_range=0.2)
    return GPT.from_config(config).eval()


def tiny_llama(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    config = tiny_llama_config(vocab_size, max_position_embeddings=512, initializer_range=0.2)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def save_llama(directory: Path, tokenizer_dir: Path, *, seed: int) -> Path:
    """A tiny Llama saved with save_pretrained, the tokenizer files of ``tokenizer_dir``
    beside it, the way a trainer export looks."""
    vocab_size = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json")).get_vocab_size()
    model = tiny_llama(vocab_size, seed=seed)
    model.save_pretrained(directory)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (directory / name).write_bytes((tokenizer_dir / name).read_bytes())
    return directory


def greedy_without_cache(model: nn.Module, prompt: list[int], steps: int, eos: int) -> list[int]:
    """The oracle: one prompt alone, the whole sequence re-run at every step, stopping
    before the first EOS."""
    sequence = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            token = int(model(torch.tensor([sequence])).logits[0, -1].argmax())
            if token == eos:
                break
            sequence.append(token)
    return sequence[len(prompt) :]


def eval_files(root: Path) -> dict[str, Path]:
    """What ``tokenpo eval`` reads, under ``root``: a model and a reference directory for
    the task's tokenizer, the task's test split (JSONL) and held-out prepared pairs."""
    task = generate_task(train=40, validation=0, test=TEST_ROWS, seed=0)
    tokenizer_dir = train_task_tokenizer(task, root / "tokenizer", vocab_size=300)
    source = write_rows(make_pairs(HELD_OUT_PAIRS), root / "pairs.jsonl")
    tokenpo.prep([source], tokenizer_dir, root / "prepared")
    return {
        "tokenizer": tokenizer_dir,
        "model": save_llama(root / "model", tokenizer_dir, seed=0),
        "reference": save_llama(root / "reference", tokenizer_dir, seed=1),
        "data": write_split(task, "test", root / "test.jsonl"),
        "pairs": root / "prepared",
    }
