"""The curriculum sampler: partitions, determinism, the curriculum bound, pacing, resume."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenpo.data.sampler import CurriculumConfig, CurriculumSampler, competence
from tokenpo.exceptions import ConfigError, InputError

PACINGS = ("none", "sorted", "linear", "root", "step")
CURRICULA = ("linear", "root", "step")


@dataclass(frozen=True)
class Setup:
    """Everything that defines a sampler but the rank."""

    difficulty: np.ndarray[Any, np.dtype[np.float64]]
    config: CurriculumConfig
    batch_size: int
    world_size: int
    seed: int
    epochs: int

    def sampler(self, rank: int = 0) -> CurriculumSampler:
        return CurriculumSampler(
            self.difficulty,
            self.config,
            batch_size=self.batch_size,
            world_size=self.world_size,
            rank=rank,
            seed=self.seed,
            epochs=self.epochs,
        )


@st.composite
def setups(draw: st.DrawFn, pacings: tuple[str, ...] = PACINGS, epochs: int = 2) -> Setup:
    world_size = draw(st.integers(1, 4))
    batch_size = world_size * draw(st.integers(1, 4))
    pairs = draw(st.integers(batch_size, 60))
    # Few distinct values, so ties (broken by index) are common.
    values = draw(st.lists(st.integers(0, 5), min_size=pairs, max_size=pairs))
    config = CurriculumConfig(
        pacing=draw(st.sampled_from(pacings)),
        bands=draw(st.integers(1, 12)),
        start=draw(st.floats(0.0, 1.0)),
        ramp=draw(st.floats(0.05, 1.0)),
        stages=draw(st.integers(1, 5)),
    )
    return Setup(
        difficulty=np.array(values, dtype=np.float64) / 5,
        config=config,
        batch_size=batch_size,
        world_size=world_size,
        seed=draw(st.integers(0, 2**32)),
        epochs=epochs,
    )


def all_global_batches(sampler: CurriculumSampler, epoch: int) -> list[list[int]]:
    return [sampler.global_batch(epoch, step).tolist() for step in range(len(sampler))]


def easy_to_hard_order(
    difficulty: np.ndarray[Any, Any], bands: int, seed: int, epoch: int
) -> list[int]:
    """The order O of the module docstring, written plainly: sort, cut into bands, shuffle each."""
    pairs = len(difficulty)
    ranked = sorted(range(pairs), key=lambda i: (float(difficulty[i]), i))
    rng = np.random.default_rng([seed, epoch])
    order: list[int] = []
    for band in range(bands):
        members = np.array(ranked[band * pairs // bands : (band + 1) * pairs // bands])
        rng.shuffle(members)
        order += members.tolist()
    return order


# Partitions and ranks


@settings(max_examples=60, deadline=None)
@given(setups())
def test_each_epoch_draws_distinct_pairs_and_ranks_split_each_batch(setup: Setup) -> None:
    samplers = [setup.sampler(rank) for rank in range(setup.world_size)]
    steps = len(samplers[0])
    assert steps == len(setup.difficulty) // setup.batch_size
    per_rank = [list(sampler) for sampler in samplers]
    assert {len(batches) for batches in per_rank} == {steps * setup.epochs}

    local = setup.batch_size // setup.world_size
    for epoch in range(setup.epochs):
        drawn = np.concatenate(all_global_batches(samplers[0], epoch))
        assert drawn.dtype == np.int64
        assert len(drawn) == len(set(drawn.tolist())) == steps * setup.batch_size
        assert drawn.min() >= 0
        assert drawn.max() < len(setup.difficulty)
        for step in range(steps):
            batches = [per_rank[rank][epoch * steps + step] for rank in range(setup.world_size)]
            assert all(b.dtype == np.int64 and b.shape == (local,) for b in batches)
            assert (
                np.concatenate(batches).tolist() == samplers[0].global_batch(epoch, step).tolist()
            )


# Determinism


def test_same_seed_same_batches_and_seeds_and_epochs_differ() -> None:
    difficulty = np.linspace(0, 1, 200)
    for pacing in (p for p in PACINGS if p != "sorted"):  # sorted draws nothing at random
        config = CurriculumConfig(pacing=pacing)  # type: ignore[arg-type]

        def batches(seed: int, epoch: int, config: CurriculumConfig = config) -> list[list[int]]:
            sampler = CurriculumSampler(difficulty, config, batch_size=16, seed=seed)
            return all_global_batches(sampler, epoch)

        assert batches(3, 0) == batches(3, 0)
        assert batches(3, 0) != batches(4, 0), pacing
        assert batches(3, 0) != batches(3, 1), pacing


def test_pacing_none_ignores_the_difficulty() -> None:
    rng = np.random.default_rng(0)
    config = CurriculumConfig(pacing="none")
    first, second = (
        CurriculumSampler(rng.random(97), config, batch_size=8, seed=5) for _ in range(2)
    )
    for epoch in range(2):
        assert all_global_batches(first, epoch) == all_global_batches(second, epoch)


def test_pacing_sorted_is_one_easy_to_hard_pass_whatever_the_seed_or_epoch() -> None:
    # MixDPO's authors train on data sorted by margin, in order, without shuffling.
    difficulty = np.array([0.5, 0.1, 0.9, 0.1, 0.3, 0.7, 0.2, 0.8, 0.6])
    config = CurriculumConfig(pacing="sorted")
    for seed, epoch in ((0, 0), (7, 3)):
        sampler = CurriculumSampler(difficulty, config, batch_size=2, seed=seed)
        batches = all_global_batches(sampler, epoch)
        # Ties keep index order; the hardest pair (index 2) is the one left over.
        assert batches == [[1, 3], [6, 4], [0, 8], [5, 7]]


def test_returned_batches_are_copies() -> None:
    sampler = CurriculumSampler(np.zeros(40), CurriculumConfig(), batch_size=8, world_size=2)
    batch = sampler.global_batch(0, 0)
    expected = batch.copy()
    batch[:] = -1
    next(iter(sampler))[:] = -1
    assert sampler.global_batch(0, 0).tolist() == expected.tolist()


# The curriculum


@settings(max_examples=80, deadline=None)
@given(setups(pacings=CURRICULA))
def test_batch_k_draws_only_from_the_first_admitted_pairs_of_the_order(setup: Setup) -> None:
    sampler = setup.sampler()
    pairs, batch_size, steps = len(setup.difficulty), setup.batch_size, len(sampler)
    for epoch in range(setup.epochs):
        order = easy_to_hard_order(setup.difficulty, setup.config.bands, setup.seed, epoch)
        for step in range(steps):
            admitted = max(math.ceil(sampler.competence(step) * pairs), (step + 1) * batch_size)
            allowed = set(order[: min(admitted, pairs)])
            assert set(sampler.global_batch(epoch, step).tolist()) <= allowed


def test_linear_pacing_trains_easy_pairs_first() -> None:
    difficulty = np.random.default_rng(1).permutation(1000) / 1000
    config = CurriculumConfig(pacing="linear", start=0.1)
    sampler = CurriculumSampler(difficulty, config, batch_size=20, seed=2)
    means = [difficulty[sampler.global_batch(0, step)].mean() for step in range(len(sampler))]
    assert len(means) == 50
    assert np.mean(means[:10]) + 0.3 < np.mean(means[-10:])
    # The first batch holds only pairs among the easiest 10% (bands of 10% each).
    assert difficulty[sampler.global_batch(0, 0)].max() < 0.1


def test_competence_one_from_the_start_draws_from_every_band() -> None:
    difficulty = np.arange(400) / 400
    config = CurriculumConfig(pacing="linear", start=1.0)
    sampler = CurriculumSampler(difficulty, config, batch_size=200, seed=0)
    first = difficulty[sampler.global_batch(0, 0)]
    assert first.min() < 0.1
    assert first.max() > 0.9


# Competence


@pytest.mark.parametrize("pacing", CURRICULA)
@pytest.mark.parametrize("start", [0.0, 0.2, 0.75, 1.0])
@pytest.mark.parametrize("ramp", [0.3, 1.0])
def test_competence_starts_at_start_reaches_one_at_ramp_and_never_falls(
    pacing: str, start: float, ramp: float
) -> None:
    config = CurriculumConfig(pacing=pacing, start=start, ramp=ramp, stages=4)  # type: ignore[arg-type]
    assert competence(0.0, config) == start
    assert competence(ramp, config) == pytest.approx(1.0)
    assert competence(1.0, config) == 1.0
    values = [competence(p, config) for p in np.linspace(0, 1, 101)]
    assert all(start <= v <= 1.0 for v in values)
    assert all(a <= b for a, b in itertools.pairwise(values))


@pytest.mark.parametrize("start", [0.0, 0.2, 0.6])
def test_root_exceeds_linear_by_the_exact_gap(start: float) -> None:
    linear = CurriculumConfig(pacing="linear", start=start)
    root = CurriculumConfig(pacing="root", start=start)
    for x in np.linspace(0, 1, 21):
        gap = competence(x, root) ** 2 - competence(x, linear) ** 2
        assert gap == pytest.approx((1 - start) ** 2 * x * (1 - x), abs=1e-12)


def test_step_pacing_is_a_staircase_under_linear() -> None:
    step = CurriculumConfig(pacing="step", start=0.2, stages=4)
    linear = CurriculumConfig(pacing="linear", start=0.2)
    assert [competence(x, step) for x in (0.0, 0.24, 0.25, 0.49, 0.5, 0.75, 0.99)] == (
        pytest.approx([0.2, 0.2, 0.4, 0.4, 0.6, 0.8, 0.8])
    )
    for x in np.linspace(0, 1, 41):
        assert competence(x, step) <= competence(x, linear) + 1e-12


def test_sampler_competence_follows_the_steps_of_the_epoch() -> None:
    config = CurriculumConfig(pacing="linear", start=0.2, ramp=0.5)
    sampler = CurriculumSampler(np.zeros(100), config, batch_size=10)
    assert [round(sampler.competence(k), 6) for k in range(10)] == (
        [0.2, 0.36, 0.52, 0.68, 0.84, 1.0, 1.0, 1.0, 1.0, 1.0]
    )
    none = CurriculumSampler(np.zeros(100), CurriculumConfig(pacing="none"), batch_size=10)
    assert none.competence(0) == 1.0
    with pytest.raises(ConfigError, match=r"step must be an integer in \[0, 10\), got 10"):
        sampler.competence(10)


# Resume


def uninterrupted(setup: Setup, rank: int) -> list[list[int]]:
    return [batch.tolist() for batch in setup.sampler(rank)]


@settings(max_examples=60, deadline=None)
@given(setups(epochs=3), st.data())
def test_resume_yields_exactly_the_rest_of_the_sequence(setup: Setup, data: st.DataObject) -> None:
    rank = data.draw(st.integers(0, setup.world_size - 1))
    expected = uninterrupted(setup, rank)
    cut = data.draw(st.integers(0, len(expected)))

    first = setup.sampler(rank)
    batches = iter(first)
    head = [next(batches).tolist() for _ in range(cut)]
    assert first.position == divmod(cut, len(first))
    state = json.loads(json.dumps(first.state_dict()))

    resumed = setup.sampler(rank)
    resumed.load_state_dict(state)
    assert resumed.position == first.position
    assert head + [batch.tolist() for batch in resumed] == expected


def test_resume_across_an_epoch_boundary_on_another_world_size() -> None:
    difficulty = np.random.default_rng(3).random(50)
    config = CurriculumConfig(pacing="root", bands=5)

    def sampler(world_size: int, rank: int) -> CurriculumSampler:
        return CurriculumSampler(
            difficulty, config, batch_size=12, world_size=world_size, rank=rank, epochs=2
        )

    saving = sampler(2, 0)
    batches = iter(saving)
    for _ in range(len(saving)):
        next(batches)
    assert saving.position == (1, 0)
    state = saving.state_dict()

    resumed = [sampler(4, rank) for rank in range(4)]
    for part in resumed:
        part.load_state_dict(state)
    for step, pieces in enumerate(zip(*resumed, strict=True)):
        assert np.concatenate(pieces).tolist() == saving.global_batch(1, step).tolist()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"pairs": 41}, "num_pairs"),
        ({"seed": 8}, "seed"),
        ({"difficulty_offset": 0.5}, "difficulty_fingerprint"),
        ({"batch_size": 4}, "batch_size"),
        ({"pacing": "root"}, "pacing"),
        ({"start": 0.3}, "start"),
    ],
)
def test_resume_on_other_data_or_settings_names_what_differs(
    change: dict[str, Any], field: str
) -> None:
    def sampler(
        pairs: int = 40,
        seed: int = 7,
        difficulty_offset: float = 0.0,
        batch_size: int = 8,
        pacing: str = "linear",
        start: float = 0.2,
    ) -> CurriculumSampler:
        config = CurriculumConfig(pacing=pacing, start=start)  # type: ignore[arg-type]
        difficulty = np.linspace(0, 1, pairs) + difficulty_offset
        return CurriculumSampler(difficulty, config, batch_size=batch_size, seed=seed)

    saved = sampler()
    next(iter(saved))
    with pytest.raises(ConfigError, match=rf"cannot resume the sampler.*different {field} \(saved"):
        sampler(**change).load_state_dict(saved.state_dict())


def test_resume_rejects_a_truncated_or_out_of_range_state() -> None:
    sampler = CurriculumSampler(np.zeros(40), CurriculumConfig(), batch_size=8)
    state = sampler.state_dict()
    del state["seed"]
    with pytest.raises(ConfigError, match="the sampler state lacks seed"):
        sampler.load_state_dict(state)
    with pytest.raises(ConfigError, match=r"step must be an integer in \[0, 5\), got 5"):
        sampler.load_state_dict({**sampler.state_dict(), "step": 5})


def test_iteration_continues_from_the_position() -> None:
    sampler = CurriculumSampler(np.zeros(30), CurriculumConfig(), batch_size=10, epochs=2)
    expected = [sampler.global_batch(e, s).tolist() for e in range(2) for s in range(3)]
    first_two = [batch.tolist() for _, batch in zip(range(2), sampler, strict=False)]
    assert sampler.position == (0, 2)
    assert first_two + [batch.tolist() for batch in sampler] == expected
    assert sampler.position == (2, 0)
    assert list(sampler) == []


# Bad input


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "pacing",
            "cosine",
            "pacing must be one of 'none', 'sorted', 'linear', 'root', 'step', got 'cosine'",
        ),
        ("bands", 0, "bands must be an integer >= 1, got 0"),
        ("bands", 2.5, "bands must be an integer >= 1, got 2.5"),
        ("stages", 0, "stages must be an integer >= 1, got 0"),
        ("start", 1.5, "start must be a number in [0, 1], got 1.5"),
        ("start", -0.1, "start must be a number in [0, 1], got -0.1"),
        ("ramp", 0.0, "ramp must be a number in (0, 1], got 0.0"),
        ("ramp", 2.0, "ramp must be a number in (0, 1], got 2.0"),
        ("ramp", float("nan"), "ramp must be a number in (0, 1], got nan"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(
    field: str, value: object, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        CurriculumConfig(**{field: value})  # type: ignore[arg-type]
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"batch_size": 6, "world_size": 4}, "batch_size 6 must be divisible by world_size 4"),
        ({"batch_size": 64}, "batch_size 64 is larger than the 50 pairs of the data"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
        (
            {"batch_size": 8, "world_size": 2, "rank": 2},
            r"rank must be an integer in [0, 2), got 2",
        ),
        ({"batch_size": 8, "seed": -1}, "seed must be an integer >= 0, got -1"),
        ({"batch_size": 8, "epochs": 0}, "epochs must be an integer >= 1, got 0"),
    ],
)
def test_sampler_rejects_bad_arguments_naming_them(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        CurriculumSampler(np.zeros(50), CurriculumConfig(), **arguments)
    assert message in str(caught.value)


def test_sampler_rejects_unusable_difficulty() -> None:
    with pytest.raises(InputError, match=r"one value per pair \(1-D\), got shape \(5, 2\)"):
        CurriculumSampler(np.zeros((5, 2)), CurriculumConfig(), batch_size=2)
    with pytest.raises(InputError, match="difficulty of pair 3 is nan") as caught:
        CurriculumSampler([0.1, 0.2, 0.3, float("nan")], CurriculumConfig(), batch_size=2)
    assert caught.value.row == 3
    assert caught.value.field == "difficulty"
