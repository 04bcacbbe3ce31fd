"""The trainer's TOML config: loading, overrides, checks and their messages, the round trip."""

from __future__ import annotations

import dataclasses
import itertools
import re
import tomllib
from pathlib import Path
from types import NoneType
from typing import Any, get_args, get_type_hints

import pytest

from tokenpo.data.sampler import CurriculumConfig
from tokenpo.exceptions import ConfigError
from tokenpo.losses import LossConfigError
from tokenpo.train.config import (
    CheckpointConfig,
    CurriculumSection,
    DataConfig,
    LoggingConfig,
    LossSection,
    ModelConfig,
    OptimConfig,
    RunConfig,
    ScheduleConfig,
    TrainConfig,
    config_to_toml,
    default_config_toml,
    load_config,
    save_config,
)

SHARDS = "data.shards=shards/"
SECTIONS = "run, model, data, loss, optim, schedule, curriculum, checkpoint, logging"


def defaults() -> TrainConfig:
    return TrainConfig(data=DataConfig(shards="shards/"))


def everything_set() -> TrainConfig:
    """Every field away from its default (grad_clip off, so None), with tables in tables."""
    return TrainConfig(
        run=RunConfig(out_dir="runs/x", seed=7, device="cuda"),
        model=ModelConfig(
            gpt={"num_hidden_layers": 4, "rope_theta": 5e5, "tie_word_embeddings": True},
            reference="ref-model",
            dtype="bfloat16",
            mixed_precision="bf16",
            activation_checkpointing=True,
            trust_remote_code=True,
        ),
        data=DataConfig(
            shards="shards/",
            val_shards="val/",
            batch_size=32,
            micro_batch_size=8,
            row_tokens=None,
            use_stored_ref=False,
            tokenizer="tok.json",
        ),
        loss=LossSection(
            name="mixdpo",
            params={"base": "tabpo", "base_params": {"beta": 0.2, "tau": 0.5}, "threshold": 0.6},
        ),
        optim=OptimConfig(lr=1e-4, weight_decay=0.1, betas=(0.8, 0.99), eps=1e-6, grad_clip=None),
        schedule=ScheduleConfig(
            kind="linear", warmup_steps=10, max_steps=100, epochs=3, min_lr_ratio=0.0
        ),
        curriculum=CurriculumSection(
            pacing="step", bands=5, start=0.5, ramp=0.5, stages=2, column="score"
        ),
        checkpoint=CheckpointConfig(every=50, keep=1, resume=True),
        logging=LoggingConfig(
            every=5, val_every=25, early_stop_metric="val/acc", early_stop_mode="min", patience=2
        ),
    )


def load_text(tmp_path: Path, text: str, *overrides: str) -> TrainConfig:
    path = tmp_path / "run.toml"
    path.write_text(text)
    return load_config(path, overrides)


def load_error(*overrides: str) -> str:
    """The message of the error that loading the defaults with ``overrides`` raises."""
    with pytest.raises(ConfigError) as caught:
        load_config(None, [SHARDS, *overrides])
    return str(caught.value)


def nullable_fields() -> list[tuple[str, str]]:
    config = defaults()
    return [
        (section.name, name)
        for section in dataclasses.fields(config)
        for name, hint in get_type_hints(type(getattr(config, section.name))).items()
        if NoneType in get_args(hint)
    ]


# The round trip


@pytest.mark.parametrize("config", [defaults(), everything_set()], ids=["defaults", "all-set"])
def test_saved_config_loads_back_equal(tmp_path: Path, config: TrainConfig) -> None:
    path = tmp_path / "run" / "config.toml"
    save_config(config, path)
    assert load_config(path) == config
    assert [p.name for p in path.parent.iterdir()] == ["config.toml"]  # no temp file left over


def test_saved_toml_spells_grad_clip_off_as_zero_and_keeps_tables() -> None:
    text = config_to_toml(everything_set())
    parsed = tomllib.loads(text)
    assert parsed["optim"]["grad_clip"] == 0.0
    assert "betas = [0.8, 0.99]" in text
    assert parsed["loss"] == {
        "name": "mixdpo",
        "base": "tabpo",
        "base_params": {"beta": 0.2, "tau": 0.5},
        "threshold": 0.6,
    }
    assert "reference" not in tomllib.loads(config_to_toml(defaults()))["model"]


@pytest.mark.parametrize(("section", "key"), nullable_fields())
def test_every_field_that_accepts_none_keeps_none_through_toml(
    tmp_path: Path, section: str, key: str
) -> None:
    # TOML has no null: None is a missing key, or the field's own spelling (grad_clip = 0).
    # A field defaulting to something else without a spelling would come back as the default.
    config = defaults()
    object.__setattr__(getattr(config, section), key, None)
    save_config(config, tmp_path / "config.toml")
    loaded = load_config(tmp_path / "config.toml")
    assert getattr(getattr(loaded, section), key) is None
    assert loaded == config


def test_a_none_inside_a_passed_through_table_is_refused() -> None:
    config = defaults()
    config.model.gpt["num_key_value_heads"] = None
    with pytest.raises(ConfigError, match=r"model\.gpt\.num_key_value_heads is None"):
        config_to_toml(config)


# Overrides


@pytest.mark.parametrize(
    ("override", "section", "key", "expected"),
    [
        ("optim.lr=1e-4", "optim", "lr", 1e-4),
        ("run.seed=3", "run", "seed", 3),
        ("model.activation_checkpointing=true", "model", "activation_checkpointing", True),
        ("optim.betas=[0.9,0.99]", "optim", "betas", (0.9, 0.99)),
        ("model.source=./m", "model", "source", "./m"),
        ('model.source="true"', "model", "source", "true"),
        ("run.device=cpu", "run", "device", "cpu"),
        (" data.micro_batch_size = 4 ", "data", "micro_batch_size", 4),
        ("model.gpt.num_hidden_layers=4", "model", "gpt", {"num_hidden_layers": 4}),
        ("model.gpt={hidden_size=64}", "model", "gpt", {"hidden_size": 64}),
        ("loss.beta=0.2", "loss", "params", {"beta": 0.2}),
        ("optim.grad_clip=0", "optim", "grad_clip", None),
        ("schedule.max_steps=10", "schedule", "max_steps", 10),
        ("curriculum.pacing=root", "curriculum", "pacing", "root"),
        ("run.out_dir=a = b", "run", "out_dir", "a = b"),
    ],
)
def test_override_sets_a_typed_value(override: str, section: str, key: str, expected: Any) -> None:
    value = getattr(getattr(load_config(None, [SHARDS, override]), section), key)
    assert value == expected
    assert type(value) is type(expected)


def test_an_int_for_a_float_becomes_a_float() -> None:
    lr = load_config(None, [SHARDS, "optim.lr=1"]).optim.lr
    assert lr == 1.0
    assert isinstance(lr, float)


def test_overrides_apply_over_the_file_in_order(tmp_path: Path) -> None:
    text = '[data]\nshards = "s"\n[optim]\nlr = 0.1\nweight_decay = 0.2\n'
    config = load_text(tmp_path, text, "optim.lr=0.3", "optim.lr=0.4")
    assert (config.optim.lr, config.optim.weight_decay) == (0.4, 0.2)


@pytest.mark.parametrize("override", ["optim.lr", "lr=1", ".lr=1", "optim.=1"])
def test_malformed_override_is_refused(override: str) -> None:
    assert load_error(override) == f"override {override!r} must look like section.key=value"


def test_override_into_a_value_that_is_not_a_table() -> None:
    message = load_error("optim.lr=1", "optim.lr.x=1")
    assert message == "override 'optim.lr.x=1': optim.lr is not a table"
    # Unset, the key becomes a table, which the type check then refuses.
    assert load_error("optim.lr.x=1") == "optim.lr must be a finite float, got {'x': 1} (dict)"


# Unknown names


def test_unknown_section_suggests_the_closest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, "[optimizer]\nlr = 1.0\n", SHARDS)
    assert str(caught.value) == (
        f"unknown section [optimizer]. Did you mean [optim]? Sections: {SECTIONS}"
    )


def test_key_above_every_section_points_to_its_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, "seed = 1\n", SHARDS)
    assert (
        str(caught.value) == f"unknown section [seed]. Did you mean run.seed? Sections: {SECTIONS}"
    )


def test_unknown_key_suggests_the_closest() -> None:
    assert load_error("optim.lrr=1") == (
        "unknown key optim.lrr. Did you mean optim.lr? "
        "Keys of [optim]: lr, weight_decay, betas, eps, grad_clip"
    )


def test_unknown_key_with_nothing_close_lists_the_keys() -> None:
    assert load_error("run.zzz=1") == "unknown key run.zzz. Keys of [run]: out_dir, seed, device"


def test_section_that_is_not_a_table(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, "run = 3\n", SHARDS)
    assert str(caught.value) == "run must be a table ([run]), got 3"


# Types, choices, ranges


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ('optim.lr="fast"', "optim.lr must be a finite float, got 'fast' (str)"),
        ("optim.lr=inf", "optim.lr must be a finite float, got inf (float)"),
        ("run.seed=1.5", "run.seed must be an int, got 1.5 (float)"),
        ("run.seed=true", "run.seed must be an int, got True (bool)"),
        (
            "model.trust_remote_code=1",
            "model.trust_remote_code must be a bool (true or false), got 1 (int)",
        ),
        ("data.micro_batch_size='4'", "data.micro_batch_size must be an int, got '4' (str)"),
        ("optim.betas=[0.9]", "optim.betas must be a list [float, float], got [0.9] (list)"),
        ("optim.betas=0.9", "optim.betas must be a list [float, float], got 0.9 (float)"),
        ('optim.betas=[0.9, "x"]', "optim.betas[1] must be a finite float, got 'x' (str)"),
        ("model.gpt=3", "model.gpt must be a table, got 3 (int)"),
        ("model.source=1", "model.source must be a string, got 1 (int)"),
        ("curriculum.bands=2.0", "curriculum.bands must be an int, got 2.0 (float)"),
    ],
)
def test_wrong_type_names_key_expected_type_and_value(override: str, message: str) -> None:
    assert load_error(override) == message


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("run.device=mps", "run.device must be one of 'auto', 'cpu', 'cuda', got 'mps'"),
        (
            "data.layout=paded",
            "data.layout must be one of 'shared', 'padded', got 'paded'. Did you mean 'padded'?",
        ),
        ("model.dtype=fp16", "model.dtype must be one of 'float32', 'bfloat16', got 'fp16'"),
        ("model.mixed_precision=1", "model.mixed_precision must be one of 'none', 'bf16', got 1"),
        (
            "schedule.kind=cosin",
            "schedule.kind must be one of 'constant', 'linear', 'cosine', got 'cosin'. "
            "Did you mean 'cosine'?",
        ),
        (
            "curriculum.pacing=fast",
            "curriculum.pacing must be one of 'none', 'sorted', 'linear', 'root', 'step', "
            "got 'fast'",
        ),
        (
            "logging.early_stop_mode=up",
            "logging.early_stop_mode must be one of 'max', 'min', got 'up'",
        ),
    ],
)
def test_bad_choice_lists_the_allowed_values(override: str, message: str) -> None:
    assert load_error(override) == message


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.lr=-1"], "optim.lr must be > 0, got -1.0"),
        (["optim.betas=[0.9, 1]"], "optim.betas[1] must lie in [0, 1), got 1.0"),
        (["optim.grad_clip=-1"], "optim.grad_clip must be > 0, got -1.0"),
        (["run.seed=-1"], "run.seed must be >= 0, got -1"),
        (["data.batch_size=0"], "data.batch_size must be >= 1, got 0"),
        (["data.shards="], "data.shards must not be empty"),
        (
            ["data.micro_batch_size=32"],
            "data.micro_batch_size (32) must be <= data.batch_size (16)",
        ),
        (["data.row_tokens=-1"], "data.row_tokens must be >= 1, got -1"),
        (
            ["model.source=./m", "model.gpt.num_hidden_layers=2"],
            "model.gpt configures the built-in GPT only, but model.source = './m'",
        ),
        (
            ["schedule.max_steps=5", "schedule.warmup_steps=6"],
            "schedule.warmup_steps (6) must be <= schedule.max_steps (5)",
        ),
        (["schedule.min_lr_ratio=1.5"], "schedule.min_lr_ratio must lie in [0, 1], got 1.5"),
        (["checkpoint.keep=0"], "checkpoint.keep must be >= 1, got 0"),
        (["logging.val_every=10"], "logging.val_every = 10 needs data.val_shards"),
        (
            ["logging.early_stop_metric=val/acc"],
            "logging.early_stop_metric needs logging.val_every > 0",
        ),
        # The sampler's own checks, under the section's name.
        (["curriculum.start=2"], "curriculum.start must be a number in [0, 1], got 2.0"),
        (["curriculum.bands=0"], "curriculum.bands must be an integer >= 1, got 0"),
        (["curriculum.column="], "curriculum.column must not be empty"),
    ],
)
def test_out_of_range_value_is_named(overrides: list[str], message: str) -> None:
    assert load_error(*overrides) == message


def test_sections_check_themselves_when_built_in_python() -> None:
    with pytest.raises(ConfigError, match=r"^optim\.lr must be > 0, got -1"):
        OptimConfig(lr=-1)
    assert OptimConfig(betas=[0.9, 0.99]).betas == (0.9, 0.99)  # type: ignore[arg-type]
    assert OptimConfig(grad_clip=0).grad_clip is None
    assert isinstance(CurriculumSection(), CurriculumConfig)


# The loss


def test_loss_parameters_sit_beside_the_name(tmp_path: Path) -> None:
    config = load_text(tmp_path, '[loss]\nname = "tabpo"\nbeta = 0.1\n', SHARDS, "loss.tau=0.5")
    assert config.loss == LossSection(name="tabpo", params={"beta": 0.1, "tau": 0.5})


def test_unknown_loss_parameter_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, [SHARDS, "loss.bogus=1"])
    assert str(caught.value) == "loss: dpo got unknown parameter(s) bogus; valid: beta"
    assert isinstance(caught.value.__cause__, LossConfigError)


def test_bad_loss_parameter_value_is_named() -> None:
    assert load_error("loss.name=tabpo", "loss.beta=-1").startswith("loss: tabpo.beta must lie in")


def test_unknown_loss_name_lists_the_losses_and_sft() -> None:
    message = load_error("loss.name=tabp")
    assert message.startswith("loss.name must be one of 'dpo', ")
    assert "'mixdpo', 'sft', got 'tabp'. Did you mean 'tabpo'?" in message


def test_sft_is_a_loss_with_one_option() -> None:
    config = load_config(None, [SHARDS, "loss.name=sft", "loss.weighted=true"])
    assert config.loss == LossSection(name="sft", params={"weighted": True})
    assert load_error("loss.name=sft", "loss.beta=0.1") == (
        "loss: sft got unknown parameter(s) beta; valid: weighted"
    )
    assert load_error("loss.name=sft", "loss.weighted=1") == (
        "loss: sft.weighted must be a bool, got 1"
    )


# Files


def test_missing_shards_is_named() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None)
    assert str(caught.value) == (
        "data.shards is required: set it in [data] or override it with data.shards=..."
    )


def test_toml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, '[data]\nshards = "s"\nbatch_size = = 3\n')
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'run.toml'} is not valid TOML: ")
    assert "line 3" in message


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist") as caught:
        load_config(tmp_path / "nope.toml")
    assert str(tmp_path / "nope.toml") in str(caught.value)


def test_printed_defaults_parse_and_load_to_the_defaults_once_shards_is_set(
    tmp_path: Path,
) -> None:
    text = default_config_toml()
    tomllib.loads(text)  # valid TOML as printed
    placeholder = "# shards = <a string>\n"
    assert placeholder in text
    filled = text.replace(placeholder, 'shards = "shards/"\n')
    assert load_text(tmp_path, filled) == defaults()
    with pytest.raises(ConfigError, match=r"^data\.shards is required"):
        load_text(tmp_path, text)


def test_printed_defaults_comment_every_key() -> None:
    config = defaults()
    expected = {
        (section.name, field.name)
        for section in dataclasses.fields(config)
        for field in dataclasses.fields(getattr(config, section.name))
        if field.name != "params"  # the loss parameters: a comment, no key of their own
    }
    seen = set()
    section = ""
    for previous, line in itertools.pairwise(default_config_toml().splitlines()):
        header = re.fullmatch(r"\[([a-z_]+)(?:\.([a-z_]+))?\]", line)
        key = re.match(r"(?:# )?([a-z_]+) = ", line)
        if header:
            section = header[1]
        name = header[2] if header else key[1] if key else None
        if name:
            assert previous.startswith("# "), line
            seen.add((section, name))
    assert seen == expected
