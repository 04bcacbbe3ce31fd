"""`tokenpo demo sft` and `demo data` take their defaults from SftOptions and DataSizes (the
CLI repeats them as literals so that `--help` needs no torch import)."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest

from tokenpo.demo.data import DataSizes
from tokenpo.demo.pipeline import DemoPlan
from tokenpo.demo.stages import SftOptions
from tokenpo_cli.demo import data_command, sft_command


@pytest.mark.parametrize(
    ("command", "options"), [(sft_command, SftOptions), (data_command, DataSizes)]
)
def test_the_cli_defaults_are_the_options_defaults(command: Any, options: Any) -> None:
    cli = {
        name: parameter.default
        for name, parameter in inspect.signature(command).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    defaults = {field.name: field.default for field in dataclasses.fields(options)}
    assert set(defaults) <= set(cli)
    assert {name: cli[name] for name in defaults} == defaults


def test_the_default_plan_trains_sft_with_the_options_defaults() -> None:
    plan, options = DemoPlan(), SftOptions()
    assert (plan.sft_lr, plan.sft_warmup_steps) == (options.lr, options.warmup_steps)
    assert (plan.sft_increment, plan.sft_max_steps) == (options.increment, options.max_steps)
