"""`tokenpo demo sft`, `demo data` and `demo train-method` take their defaults from SftOptions,
DataSizes and TrainSettings (the CLI repeats them as literals so that `--help` needs no torch
import), and so does the default plan."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest

from tokenpo.demo.data import DataSizes
from tokenpo.demo.methods import TrainSettings
from tokenpo.demo.pipeline import DemoPlan
from tokenpo.demo.stages import SftOptions
from tokenpo_cli.demo import data_command, sft_command, train_method_command


def defaults_of(options: Any) -> dict[str, Any]:
    return {
        field.name: field.default
        for field in dataclasses.fields(options)
        if field.default is not dataclasses.MISSING
    }


@pytest.mark.parametrize(
    ("command", "options"),
    [(sft_command, SftOptions), (data_command, DataSizes), (train_method_command, TrainSettings)],
)
def test_the_cli_defaults_are_the_options_defaults(command: Any, options: Any) -> None:
    cli = {
        name: parameter.default
        for name, parameter in inspect.signature(command).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    defaults = defaults_of(options)
    assert set(defaults) <= set(cli)
    assert {name: cli[name] for name in defaults} == defaults


def test_the_default_plan_trains_sft_with_the_options_defaults() -> None:
    plan, options = DemoPlan(), SftOptions()
    assert (plan.sft_lr, plan.sft_warmup_steps) == (options.lr, options.warmup_steps)
    assert (plan.sft_increment, plan.sft_max_steps) == (options.increment, options.max_steps)


def test_the_default_plan_trains_methods_with_the_settings_defaults() -> None:
    plan, settings = DemoPlan(), defaults_of(TrainSettings)
    assert (plan.steps, plan.batch_size, plan.val_every, plan.device) == (
        settings["steps"],
        settings["batch_size"],
        settings["val_every"],
        settings["device"],
    )
