"""The curriculum sampler: which pairs each rank trains on at each optimizer step.

A competence-based curriculum without replacement (Platanios et al., 2019, "Competence-based
curriculum learning for neural machine translation", NAACL), made deterministic and
distributed-aware.

**Epochs.** An epoch is ``K = N // batch_size`` global batches of ``batch_size`` distinct pairs;
the ``N - K * batch_size`` pairs left over are dropped (different ones each epoch), so every rank
runs the same number of steps. All randomness of epoch ``e`` comes from one
``numpy.random.Generator`` seeded with ``(seed, e)``: the batches depend on nothing else (not on
the rank, the world size or the history), which is what makes resume exact.

**Pacing "none".** The epoch is a random permutation of the pairs, cut into batches; the
difficulty is ignored.

**Pacing "sorted".** Every epoch is the pairs sorted by difficulty ascending (stable, so ties
keep index order), cut into batches in order, as MixDPO's authors train: one pass over data
sorted easy to hard, without shuffling. The hardest ``N - K * batch_size`` pairs are dropped.

**Other pacings.** First the easy-to-hard order ``O`` of the epoch: the pairs sorted by difficulty
ascending (stable, so ties keep index order), cut into ``bands`` bands of equal count (band ``i``
holds sorted positions ``[i * N // bands, (i + 1) * N // bands)``), each band shuffled. Then, with
``x = k / (ramp * K)`` the progress of step ``k`` through the ramp and ``s = start``, the
competence of step ``k`` is ``c_k = clip(pace(x), s, 1)`` where::

    linear: pace(x) = s + (1 - s) * x                      (Platanios et al., c_linear)
    root:   pace(x) = sqrt(s**2 + (1 - s**2) * x)           (Platanios et al., c_sqrt)
    step:   pace(x) = s + (1 - s) * floor(x * stages) / stages

so ``c_0 = s`` and ``c_k = 1`` from ``k >= ramp * K`` on. Step ``k`` admits the first
``a_k = min(N, max(ceil(c_k * N), (k + 1) * batch_size))`` entries of ``O`` (the second term
guarantees enough unused pairs for the batch) and draws its batch uniformly at random, without
replacement within the epoch, from the admitted pairs not used yet. The draw is a partial
Fisher-Yates shuffle: the ``t``-th pair of the epoch (``t = k * batch_size + j``) swaps position
``t`` of ``O`` with a uniform position in ``[t, a_k)``, so positions ``[0, t)`` always hold the used
pairs and ``[t, a_k)`` the admitted unused ones; the whole epoch costs O(N).

**Ranks.** Every rank computes the same global batches and takes its contiguous slice: rank ``r``
of ``world_size`` gets ``[r * b, (r + 1) * b)`` of each, ``b = batch_size // world_size``. Ranks
never overlap, and their union is the global batch. No communication is needed.

**Position and resume.** The sampler is its own cursor: iterating yields local batches from
``position`` onwards, for epochs ``position[0]`` to ``epochs - 1``, and the position moves past a
batch as it is yielded. So ``state_dict()`` taken after ``k`` batches were yielded resumes at
batch ``k``. The world size may change between save and resume: the global batches do not.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Literal, TypeGuard, get_args

import numpy as np
from numpy.typing import ArrayLike, NDArray

from tokenpo.exceptions import ConfigError, InputError

__all__ = ["CurriculumConfig", "CurriculumSampler", "Pacing", "competence"]

Pacing = Literal["none", "sorted", "linear", "root", "step"]
PACINGS: tuple[str, ...] = get_args(Pacing)

# The settings a resumed sampler must share with the one that saved its state.
_RESUME_SETTINGS = (
    "seed",
    "num_pairs",
    "batch_size",
    "pacing",
    "bands",
    "start",
    "ramp",
    "stages",
    "difficulty_fingerprint",
)


def _is_int(value: object) -> TypeGuard[int | np.integer[Any]]:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[float | int]:
    return isinstance(value, float | int) and not isinstance(value, bool)


def _require_int(name: str, value: object, minimum: int) -> None:
    if not _is_int(value) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


@dataclass(kw_only=True, slots=True, frozen=True)
class CurriculumConfig:
    """How the sampler orders pairs by difficulty; see :mod:`tokenpo.data.sampler`."""

    pacing: Pacing = "none"
    """How competence grows over an epoch: "none" (plain shuffle), "sorted" (easy to hard, no
    shuffle), "linear", "root" or "step"."""

    bands: int = 10
    """Equal-count difficulty bands of the easy-to-hard order; pairs are shuffled within a band."""

    start: float = 0.2
    """Initial competence in [0, 1]: the fraction of the easiest pairs admitted at step 0."""

    ramp: float = 1.0
    """Fraction of an epoch, in (0, 1], at which competence reaches 1."""

    stages: int = 4
    """Number of competence levels below 1 for "step" pacing."""

    def __post_init__(self) -> None:
        if self.pacing not in PACINGS:
            allowed = ", ".join(repr(p) for p in PACINGS)
            raise ConfigError(f"pacing must be one of {allowed}, got {self.pacing!r}")
        _require_int("bands", self.bands, 1)
        _require_int("stages", self.stages, 1)
        if not _is_number(self.start) or not 0.0 <= self.start <= 1.0:
            raise ConfigError(f"start must be a number in [0, 1], got {self.start!r}")
        if not _is_number(self.ramp) or not 0.0 < self.ramp <= 1.0:
            raise ConfigError(f"ramp must be a number in (0, 1], got {self.ramp!r}")


def competence(progress: float, config: CurriculumConfig) -> float:
    """The competence at ``progress`` (step / steps per epoch) through an epoch, in [start, 1].

    Always 1 for pacings "none" and "sorted". The formulas are in the module docstring.
    """
    if config.pacing in ("none", "sorted"):
        return 1.0
    start = config.start
    x = progress / config.ramp
    if config.pacing == "linear":
        pace = start + (1.0 - start) * x
    elif config.pacing == "root":
        pace = math.sqrt(start**2 + (1.0 - start**2) * x)
    else:
        pace = start + (1.0 - start) * math.floor(x * config.stages) / config.stages
    return min(max(pace, start), 1.0)


class CurriculumSampler:
    """Deterministic, resumable, distributed curriculum over ``len(difficulty)`` pairs.

    ``difficulty`` is one value per pair, lower is easier (the shard's ``difficulty`` column, or
    any other numeric column). ``batch_size`` counts the pairs of one optimizer step over all
    ranks. Iterating yields this rank's int64 pair indices, ``batch_size // world_size`` of them
    per step, for ``epochs`` epochs from the current position.
    """

    def __init__(
        self,
        difficulty: ArrayLike,
        config: CurriculumConfig,
        *,
        batch_size: int,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        epochs: int = 1,
    ) -> None:
        values = np.asarray(difficulty, dtype=np.float64)
        if values.ndim != 1:
            raise InputError(
                f"difficulty must be one value per pair (1-D), got shape {values.shape}",
                field="difficulty",
            )
        not_finite = np.flatnonzero(~np.isfinite(values))
        if not_finite.size:
            row = int(not_finite[0])
            raise InputError(
                f"difficulty of pair {row} is {values[row]}; every pair needs a finite value",
                row=row,
                field="difficulty",
            )
        _require_int("batch_size", batch_size, 1)
        _require_int("world_size", world_size, 1)
        _require_int("seed", seed, 0)
        _require_int("epochs", epochs, 1)
        if not _is_int(rank) or not 0 <= rank < world_size:
            raise ConfigError(f"rank must be an integer in [0, {world_size}), got {rank!r}")
        if batch_size % world_size:
            raise ConfigError(
                f"batch_size {batch_size} must be divisible by world_size {world_size}, "
                "so every rank gets the same number of pairs"
            )
        if values.size < batch_size:
            raise ConfigError(
                f"batch_size {batch_size} is larger than the {values.size} pairs of the data; "
                "not a single batch can be formed"
            )

        self.config = config
        self.batch_size = int(batch_size)
        self.world_size = int(world_size)
        self.rank = int(rank)
        self.seed = int(seed)
        self.epochs = int(epochs)
        self.num_pairs = int(values.size)
        self.steps_per_epoch = self.num_pairs // self.batch_size
        self.local_batch_size = self.batch_size // self.world_size
        self.difficulty_fingerprint = hashlib.blake2b(
            np.ascontiguousarray(values, dtype="<f8").tobytes(), digest_size=16
        ).hexdigest()

        self._easy_to_hard = np.argsort(values, kind="stable").astype(np.int64)
        self._band_edges = [(i * self.num_pairs) // config.bands for i in range(config.bands + 1)]
        steps = np.arange(self.steps_per_epoch)
        self._admitted = np.minimum(
            self.num_pairs,
            np.maximum(
                [math.ceil(self.competence(int(k)) * self.num_pairs) for k in steps],
                (steps + 1) * self.batch_size,
            ),
        ).astype(np.int64)
        self._epoch = 0
        self._step = 0
        self._cached: tuple[int, NDArray[np.int64]] | None = None

    def __len__(self) -> int:
        """Optimizer steps per epoch, the same on every rank."""
        return self.steps_per_epoch

    @property
    def position(self) -> tuple[int, int]:
        """``(epoch, step)`` of the next batch to yield."""
        return self._epoch, self._step

    def competence(self, step: int) -> float:
        """The competence at ``step`` of an epoch (for logging): the admitted fraction of pairs."""
        return competence(self._check_step(step) / self.steps_per_epoch, self.config)

    def global_batch(self, epoch: int, step: int) -> NDArray[np.int64]:
        """The ``batch_size`` pair indices of step ``step`` of epoch ``epoch``, over all ranks."""
        # A copy, so a caller writing into it cannot corrupt the cached epoch.
        batch: NDArray[np.int64] = self._epoch_batches(epoch)[self._check_step(step)].copy()
        return batch

    def local_batch(self, epoch: int, step: int) -> NDArray[np.int64]:
        """This rank's contiguous slice of :meth:`global_batch`."""
        lo = self.rank * self.local_batch_size
        return self.global_batch(epoch, step)[lo : lo + self.local_batch_size]

    def __iter__(self) -> Iterator[NDArray[np.int64]]:
        while self._epoch < self.epochs:
            batch = self.local_batch(self._epoch, self._step)
            # Move before yielding, so a state_dict taken right after next() resumes past it.
            self._step += 1
            if self._step == self.steps_per_epoch:
                self._epoch, self._step = self._epoch + 1, 0
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """The position and the settings it is only valid for (ints, floats and strings)."""
        config = self.config
        return {
            "epoch": self._epoch,
            "step": self._step,
            "seed": self.seed,
            "num_pairs": self.num_pairs,
            "batch_size": self.batch_size,
            "pacing": config.pacing,
            "bands": config.bands,
            "start": config.start,
            "ramp": config.ramp,
            "stages": config.stages,
            "difficulty_fingerprint": self.difficulty_fingerprint,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at the position of ``state``, saved by a sampler with the same data and settings.

        Raises :class:`ConfigError` naming every setting that differs, or a missing key.
        """
        current = self.state_dict()
        missing = [key for key in current if key not in state]
        if missing:
            raise ConfigError(f"the sampler state lacks {', '.join(missing)}")
        differ = [
            f"{key} (saved {state[key]!r}, now {current[key]!r})"
            for key in _RESUME_SETTINGS
            if state[key] != current[key]
        ]
        if differ:
            raise ConfigError(
                "cannot resume the sampler: the saved state has a different "
                + "; ".join(differ)
                + ". A resumed run must use the same data, seed, batch_size and curriculum"
            )
        epoch, step = state["epoch"], state["step"]
        if not _is_int(epoch) or epoch < 0:
            raise ConfigError(f"the sampler state's epoch must be an integer >= 0, got {epoch!r}")
        if not _is_int(step) or not 0 <= step < self.steps_per_epoch:
            raise ConfigError(
                f"the sampler state's step must be an integer in [0, {self.steps_per_epoch}), "
                f"got {step!r}"
            )
        self._epoch, self._step = int(epoch), int(step)

    def _check_step(self, step: int) -> int:
        if not _is_int(step) or not 0 <= step < self.steps_per_epoch:
            raise ConfigError(f"step must be an integer in [0, {self.steps_per_epoch}), got {step}")
        return int(step)

    def _epoch_batches(self, epoch: int) -> NDArray[np.int64]:
        """All global batches of ``epoch``, [steps_per_epoch, batch_size]; the last is cached."""
        if not _is_int(epoch) or epoch < 0:
            raise ConfigError(f"epoch must be an integer >= 0, got {epoch!r}")
        if self._cached is None or self._cached[0] != epoch:
            rng = np.random.default_rng([self.seed, int(epoch)])
            if self.config.pacing == "none":
                order = rng.permutation(self.num_pairs)
            elif self.config.pacing == "sorted":
                order = self._easy_to_hard
            else:
                order = self._curriculum_order(rng)
            used = self.steps_per_epoch * self.batch_size
            batches = order[:used].astype(np.int64).reshape(self.steps_per_epoch, self.batch_size)
            self._cached = (int(epoch), batches)
        return self._cached[1]

    def _curriculum_order(self, rng: np.random.Generator) -> NDArray[np.int64]:
        """The epoch's pairs in drawing order: batch ``k`` is ``[k * B, (k + 1) * B)``."""
        easy_to_hard = self._easy_to_hard.copy()
        for lo, hi in pairwise(self._band_edges):
            rng.shuffle(easy_to_hard[lo:hi])
        # Draw t swaps position t with a uniform one in [t, a_k): the bounds are known up front,
        # so all the random numbers come in one call and only the swaps run one by one.
        draws = self.steps_per_epoch * self.batch_size
        swap_with = rng.integers(np.arange(draws), np.repeat(self._admitted, self.batch_size))
        pool: list[int] = easy_to_hard.tolist()
        for t, j in enumerate(swap_with.tolist()):
            pool[t], pool[j] = pool[j], pool[t]
        return np.array(pool[:draws], dtype=np.int64)
