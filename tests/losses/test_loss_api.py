"""The loss API: building by name, parameter validation, batch shape checks, metrics."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch
from losses_testkit import all_losses, build_test_loss, make_batch, run

from tokenpo.exceptions import InputError, TokenpoError
from tokenpo.losses import TBPOQ, LossConfigError, PairLogps, available, build, trainable_module

NAMES = (
    "dpo",
    "cdpo",
    "robust",
    "hinge",
    "ipo",
    "simpo",
    "rpo",
    "tdpo",
    "tis",
    "confpo",
    "tabpo",
    "tbpo_q",
    "tbpo_a",
    "mixdpo",
)


def test_available_lists_every_loss() -> None:
    assert set(available()) == set(NAMES)
    assert len(available()) == len(NAMES)


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(
        LossConfigError, match=r"unknown loss 'dpp'; available: dpo, cdpo, .*mixdpo"
    ):
        build("dpp")


def test_unknown_parameter_lists_the_valid_ones() -> None:
    with pytest.raises(
        LossConfigError, match=r"tabpo got unknown parameter\(s\) lambda; valid: beta, tau"
    ):
        build("tabpo", **{"lambda": 0.5})


def test_missing_parameter_is_named() -> None:
    with pytest.raises(LossConfigError, match=r"tbpo_q needs parameter\(s\) hidden_size"):
        build("tbpo_q")


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("dpo", {"beta": 0.0}, r"dpo.beta must lie in \(0, inf\), got 0.0"),
        ("dpo", {"beta": "0.1"}, r"dpo.beta must be a number, got '0.1'"),
        ("dpo", {"beta": True}, r"dpo.beta must be a number, got True"),
        ("cdpo", {"label_smoothing": 0.6}, r"cdpo.label_smoothing must lie in \[0, 0.5\], got 0.6"),
        (
            "robust",
            {"label_smoothing": 0.5},
            r"robust.label_smoothing must lie in \[0, 0.5\), got 0.5",
        ),
        ("rpo", {"alpha": -1.0}, r"rpo.alpha must lie in \[0, inf\)"),
        (
            "tdpo",
            {"variant": "tdpo3"},
            r"tdpo.variant must be one of 'tdpo1', 'tdpo2', got 'tdpo3'",
        ),
        ("tabpo", {"tau": 0.0}, r"tabpo.tau must lie in \(0, 1\], got 0.0"),
        ("tabpo", {"tau": float("nan")}, r"tabpo.tau must lie in"),
        ("tabpo", {"barrier": "sft"}, r"tabpo.barrier must be one of 'nll', 'ref'"),
        ("tabpo", {"length_norm": 1}, r"tabpo.length_norm must be True or False, got 1"),
        (
            "tbpo_a",
            {"generator": "kl"},
            r"tbpo_a.generator must be one of 'sba', 'logistic'",
        ),
        ("tbpo_a", {"lam": 1.5}, r"tbpo_a.lam must lie in \[0, 1\], got 1.5"),
        (
            "tbpo_a",
            {"lam": 1.0, "ratio_clamp": 50.0},
            r"tbpo_a: \(1 \+ lam\) \* ratio_clamp must be <= 80 so that exp stays finite, got 100",
        ),
        ("tbpo_q", {"hidden_size": 4, "head_lr": 0.0}, r"tbpo_q.head_lr must lie in \(0, inf\)"),
        ("tbpo_q", {"hidden_size": 0}, r"tbpo_q.hidden_size must be a positive int, got 0"),
        ("tbpo_q", {"hidden_size": 8.0}, r"tbpo_q.hidden_size must be a positive int, got 8.0"),
        ("mixdpo", {"threshold": 1.5}, r"mixdpo.threshold must lie in \[0, 1\], got 1.5"),
        ("mixdpo", {"base": "mixdpo"}, r"mixdpo.base cannot itself be mixdpo"),
        ("mixdpo", {"base": "dpp"}, r"unknown loss 'dpp'; available"),
        (
            "mixdpo",
            {"base_params": {"betaa": 1}},
            r"dpo got unknown parameter\(s\) betaa; valid: beta",
        ),
        (
            "mixdpo",
            {"gamma": 1},
            r"mixdpo got unknown parameter\(s\) gamma; valid: base, base_params",
        ),
    ],
)
def test_invalid_parameters_are_rejected_with_the_field_named(
    name: str, params: dict[str, object], message: str
) -> None:
    with pytest.raises(LossConfigError, match=message) as error:
        build(name, **params)
    assert isinstance(error.value, TokenpoError)
    assert isinstance(error.value, ValueError)


def test_only_tbpo_q_has_trainable_parameters() -> None:
    tbpo_q = build("tbpo_q", hidden_size=4, head_width=2)
    assert isinstance(tbpo_q, TBPOQ)
    assert trainable_module(tbpo_q) is tbpo_q.value_head
    # A one-hidden-layer MLP: 4 -> 2 -> 1.
    assert sum(p.numel() for p in tbpo_q.parameters()) == 4 * 2 + 2 + 2 + 1
    mixdpo = build("mixdpo", base="tbpo_q", base_params={"hidden_size": 4})
    assert trainable_module(mixdpo) is mixdpo.base.value_head  # type: ignore[attr-defined]
    assert trainable_module(build("tabpo")) is None


def test_defaults_follow_the_sources() -> None:
    tabpo = build("tabpo")
    assert (tabpo.beta, tabpo.tau, tabpo.barrier_weight, tabpo.length_norm) == (
        0.5,
        0.66,
        0.5,
        True,
    )  # type: ignore[attr-defined]
    assert build("tdpo").kl_weight == 0.5  # type: ignore[attr-defined]
    assert build("tdpo", variant="tdpo1").kl_weight == 1.0  # type: ignore[attr-defined]


def shape_error(**changes: object) -> InputError:
    with pytest.raises(InputError) as error:
        dataclasses.replace(make_batch(pairs=4, tokens=6), **changes)
    return error.value


def test_shape_error_names_the_field_and_both_shapes() -> None:
    error = shape_error(ref_chosen=torch.zeros(4, 5, dtype=torch.float64))
    assert error.field == "ref_chosen"
    assert str(error) == (
        "PairLogps.ref_chosen: expected shape [4, 6] "
        "(B and T from policy_chosen/policy_rejected), found [4, 5]"
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"policy_chosen": torch.zeros(4)},
            r"PairLogps.policy_chosen must have 2 dimensions, found shape \[4\]",
        ),
        (
            {"policy_rejected": torch.zeros(3, 6)},
            r"PairLogps.policy_rejected: expected shape \[4, 'T_l'\]",
        ),
        (
            {"chosen_mask": torch.ones(4, 6)},
            r"PairLogps.chosen_mask must be bool, found torch.float32",
        ),
        (
            {"chosen_diff": torch.ones(4, 6, dtype=torch.long)},
            r"PairLogps.chosen_diff must be bool",
        ),
        ({"difficulty": torch.zeros(5)}, r"PairLogps.difficulty: expected shape \[4\]"),
        ({"pair_weight": torch.zeros(4, 1)}, r"PairLogps.pair_weight must have 1 dimensions"),
        (
            {"ref_rejected": None},
            r"PairLogps.ref_chosen is given but ref_rejected is None; give both",
        ),
        (
            {"ref_chosen_logits": torch.zeros(4, 6, 9)},
            r"PairLogps.ref_chosen_logits: expected last dimension 5 \(as policy_chosen_logits\)",
        ),
        (
            {"chosen_hidden": torch.zeros(4, 5, 3)},
            r"PairLogps.chosen_hidden: expected shape \[4, 6, '\*'\]",
        ),
        (
            {"chosen_value": torch.zeros(4, 6, 1)},
            r"PairLogps.chosen_value must have 2 dimensions, found shape \[4, 6, 1\]",
        ),
        ({"ref_chosen": [[0.0]]}, r"PairLogps.ref_chosen must be a torch.Tensor, got list"),
    ],
)
def test_bad_batches_are_rejected(changes: dict[str, object], message: str) -> None:
    assert re.search(message, str(shape_error(**changes)))


@pytest.mark.parametrize(
    ("name", "field", "params"),
    [
        ("dpo", "ref_chosen", {}),
        ("tabpo", "ref_chosen", {}),
        ("tis", "chosen_weight", {}),
        ("tdpo", "ref_chosen_logits", {}),
        ("mixdpo", "difficulty", {}),
    ],
)
def test_missing_input_names_the_loss_and_the_field(
    name: str, field: str, params: dict[str, object]
) -> None:
    batch = make_batch(pairs=2, tokens=3, dtype=torch.float32)
    partner = field.replace("chosen", "rejected")
    batch = dataclasses.replace(batch, **{field: None, partner: None})
    with pytest.raises(
        InputError, match=rf"^{name} needs PairLogps.{field}, which is None$"
    ) as error:
        build(name, **params)(batch)
    assert error.value.field == field


def test_tbpo_q_without_values_or_hidden_states_names_both_fields() -> None:
    batch = make_batch(pairs=2, tokens=3, dtype=torch.float32)
    batch = dataclasses.replace(batch, chosen_hidden=None, rejected_hidden=None)
    with pytest.raises(
        InputError, match=r"^tbpo_q needs PairLogps.chosen_value or chosen_hidden$"
    ) as error:
        build("tbpo_q", hidden_size=3)(batch)
    assert error.value.field == "chosen_value"


def test_reference_free_losses_need_no_reference() -> None:
    batch = dataclasses.replace(make_batch(), ref_chosen=None, ref_rejected=None)
    for name in ("simpo", "confpo"):
        assert torch.isfinite(build(name)(batch).loss)


@pytest.mark.parametrize("name", all_losses())
def test_metrics_are_detached_scalars_with_the_common_keys(name: str) -> None:
    output, _ = run(build_test_loss(name), make_batch(pairs=4, tokens=5))
    common = {
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "rewards/accuracies",
        "logps/chosen",
        "logps/rejected",
        "margins/diff_tokens",
        "margins/shared_tokens",
    }
    assert common <= output.metrics.keys()
    for key, value in output.metrics.items():
        assert value.dim() == 0, key
        assert not value.requires_grad, key


def test_logps_and_diff_margin_metrics_by_hand() -> None:
    batch = make_batch(pairs=4, tokens=5, seed=8)
    output, _ = run(build("dpo"), batch)
    assert batch.ref_chosen is not None
    assert batch.ref_rejected is not None
    assert batch.chosen_diff is not None
    assert batch.rejected_diff is not None
    chosen_ratio = batch.policy_chosen - batch.ref_chosen
    rejected_ratio = batch.policy_rejected - batch.ref_rejected
    diff = (chosen_ratio * (batch.chosen_mask & batch.chosen_diff)).sum(-1) - (
        rejected_ratio * (batch.rejected_mask & batch.rejected_diff)
    ).sum(-1)
    shared = (chosen_ratio * (batch.chosen_mask & ~batch.chosen_diff)).sum(-1) - (
        rejected_ratio * (batch.rejected_mask & ~batch.rejected_diff)
    ).sum(-1)
    close = {"rtol": 0.0, "atol": 1e-12}
    torch.testing.assert_close(output.metrics["margins/diff_tokens"], diff.mean(), **close)
    torch.testing.assert_close(output.metrics["margins/shared_tokens"], shared.mean(), **close)
    torch.testing.assert_close(
        output.metrics["logps/chosen"],
        (batch.policy_chosen * batch.chosen_mask).sum(-1).mean(),
        **close,
    )


def test_mixdpo_reports_the_share_of_routed_pairs() -> None:
    batch = dataclasses.replace(
        make_batch(pairs=4, tokens=5),
        difficulty=torch.tensor([0.1, 0.8, 0.7, 0.2], dtype=torch.float64),
    )
    output = build("mixdpo", threshold=0.7)(batch)
    assert output.metrics["mixdpo/routed_share"].item() == 0.5


def test_pair_weight_zero_drops_the_pair() -> None:
    batch = make_batch(pairs=4, tokens=5, seed=9)
    weighted = dataclasses.replace(
        batch, pair_weight=torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    )
    for name in ("dpo", "tabpo", "tbpo_a"):
        output, grads = run(build(name), weighted)
        assert torch.all(grads["policy_chosen"][1] == 0)
        kept = PairLogps(
            **{
                field: None if getattr(batch, field) is None else getattr(batch, field)[[0, 2, 3]]
                for field in batch.__dataclass_fields__
            }
        )
        torch.testing.assert_close(output.loss, build(name)(kept).loss, rtol=0, atol=1e-12)
