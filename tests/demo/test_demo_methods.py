"""The methods table becomes valid trainer configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenpo.demo import METHODS, TrainSettings, method, method_names, method_overrides
from tokenpo.exceptions import ConfigError
from tokenpo.train.config import load_config


def _settings(val_shards: Path | None = Path("pairs/val")) -> TrainSettings:
    return TrainSettings(
        model=Path("sft/run/final"),
        shards=Path("pairs/train"),
        val_shards=val_shards,
        tokenizer=Path("data/tokenizer/tokenizer.json"),
        steps=7,
        batch_size=4,
        val_every=2,
        device="cpu",
    )


@pytest.mark.parametrize("name", method_names())
def test_every_method_gives_a_valid_config(name: str) -> None:
    item = method(name)
    config = load_config(None, method_overrides(item, _settings(), out_dir=Path("r"), seed=3))
    assert config.loss.name == item.loss
    assert config.run.seed == 3
    assert config.model.source == "sft/run/final"
    assert config.model.reference == "sft/run/final"
    assert config.schedule.max_steps == 7
    assert config.schedule.kind == "constant"
    assert config.checkpoint.resume
    assert config.data.val_shards == "pairs/val"
    assert config.logging.val_every == 2
    assert config.data.use_stored_ref == (item.loss != "sft")


def test_the_composed_method_routes_tabpo_with_a_curriculum() -> None:
    config = load_config(
        None, method_overrides(method("tabpo_cr"), _settings(), out_dir=Path("r"), seed=0)
    )
    assert config.loss.params == {
        "base": "tabpo",
        "base_params": {"beta": 0.5, "tau": 0.66, "barrier_weight": 0.5},
    }
    assert config.curriculum.pacing == "linear"


def test_tabpo_uses_the_authors_defaults_and_mixdpo_a_dpo_base() -> None:
    assert method("tabpo").params == {"beta": 0.5, "tau": 0.66, "barrier_weight": 0.5}
    assert method("mixdpo").params == {"base": "dpo"}
    assert {"sft_continued", "rpo", "dpo", "tbpo_a", "tbpo_q"} <= set(method_names())
    assert "sft" not in method_names()  # the name of the SFT model in the report
    assert len(set(method_names())) == len(METHODS)


def test_no_validation_turns_val_every_off() -> None:
    overrides = method_overrides(method("dpo"), _settings(None), out_dir=Path("r"), seed=0)
    config = load_config(None, overrides)
    assert config.logging.val_every == 0
    assert config.data.val_shards is None


def test_an_unknown_method_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"no method 'tabp'; methods: dpo, tabpo"):
        method("tabp")
