"""Shared fixtures: a real BPE tokenizer trained here and saved as tokenizer.json."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenpo.synthetic import example_corpus, train_bpe_tokenizer


@pytest.fixture(scope="session")
def tokenizer_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    train_bpe_tokenizer(example_corpus()).save(str(path))
    return path
