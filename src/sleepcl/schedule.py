"""Capacity and sleep schedules: how many weights each task keeps, and how a night is split into rounds.

The paper fixes the final free fraction ``p`` after ``|T|`` tasks. Algorithm 2 turns it into

* ``r = p ** (1/|T|)``: after every task the free pool shrinks by the same factor ``r``, so task ``t``
  keeps ``1 - r`` of the weights it trained and ``r**t`` of all weights are free after it;
* ``z = 1 - (1 - r) ** (1/N)``: each of the ``N`` rounds of the night prunes a fraction ``z`` of the
  weights the task still holds, so ``(1 - z) ** N = 1 - r``.

Everything here is counted in whole weights so that rounding never drifts: the last round of a night
always lands exactly on the integer target, and after the last task each layer's free count is
``round(n * p)``, i.e. the free fraction equals ``p`` to within one weight per layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

__all__ = [
    "SCHEDULES",
    "SleepSchedule",
    "free_after_task",
    "keep_per_task",
    "night_targets",
    "prune_fraction",
    "sleep_schedule",
]


def keep_per_task(n_tasks: int, final_free: float) -> float:
    """``r`` of Algorithm 2: the fraction of the free pool still free after one more task."""
    _check_fraction(final_free)
    if n_tasks < 1:
        raise ValueError(f"n_tasks must be >= 1, got {n_tasks}")
    return math.exp(math.log(final_free) / n_tasks)


def prune_fraction(rounds: int, n_tasks: int, final_free: float) -> float:
    """Algorithm 2: the fraction ``z`` of its weights a task prunes in each of ``rounds`` rounds."""
    if rounds < 1:
        raise ValueError(f"rounds (N) must be >= 1, got {rounds}")
    r = keep_per_task(n_tasks, final_free)
    return 1.0 - math.exp(math.log(1.0 - r) / rounds)


def free_after_task(task: int, n_tasks: int, final_free: float) -> float:
    """Fraction of all weights that is free after ``task`` (1-based) tasks: ``r ** task``."""
    return keep_per_task(n_tasks, final_free) ** task


@dataclass(frozen=True)
class SleepSchedule:
    """One night: the retraining epochs of each round and the share of the night's pruning done by its end.

    ``pruned_share[k]`` is the fraction of the night's total pruning (in log-keep space, see
    :func:`night_targets`) completed after round ``k``; it increases and ends at 1. For the paper's
    uniform schedule round ``k`` prunes ``z`` of what is left, i.e. ``pruned_share = (k+1)/N``.
    """

    name: str
    round_epochs: tuple[int, ...]
    pruned_share: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.round_epochs) != len(self.pruned_share) or not self.round_epochs:
            raise ValueError("a sleep schedule needs one epoch count and one pruned share per round")
        if any(e < 0 for e in self.round_epochs):
            raise ValueError(f"round epochs must be >= 0, got {self.round_epochs}")
        shares = self.pruned_share
        if any(b < a for a, b in zip(shares, shares[1:])) or not math.isclose(shares[-1], 1.0):
            raise ValueError(f"pruned shares must increase to 1, got {shares}")

    @property
    def rounds(self) -> int:
        return len(self.round_epochs)

    @property
    def budget(self) -> int:
        """Total retraining epochs of the night, B."""
        return sum(self.round_epochs)

    def prune_epochs(self) -> tuple[int, ...]:
        """Retraining epoch (0-based, within the night) at whose start each round's pruning happens."""
        starts, e = [], 0
        for length in self.round_epochs:
            starts.append(e)
            e += length
        return tuple(starts)


def _uniform(budget: int, rounds: int) -> SleepSchedule:
    if budget % rounds:
        raise ValueError(
            f"the retraining budget B={budget} is not a multiple of N={rounds}: the uniform schedule "
            f"gives every round R = B/N whole epochs; choose N among the divisors of B "
            f"({', '.join(str(d) for d in _divisors(budget))}) or another --schedule"
        )
    return SleepSchedule("uniform", (budget // rounds,) * rounds, tuple((k + 1) / rounds for k in range(rounds)))


def _lengthening(budget: int, rounds: int) -> SleepSchedule:
    """Rounds that lengthen through the night, as REM periods do: lengths proportional to 1, 2, ..., N.

    Pruning is uniform in log-keep space (each round prunes the same ``z``), so the long retraining comes
    after the weights are nearly at their final sparsity.
    """
    epochs = _split_proportionally(budget, list(range(1, rounds + 1)))
    return SleepSchedule("lengthening", epochs, tuple((k + 1) / rounds for k in range(rounds)))


def _cubic(budget: int, rounds: int) -> SleepSchedule:
    """Zhu & Gupta's gradual schedule: prune hard early, gently late (share ``1 - (1 - k/N)**3``)."""
    epochs = _split_proportionally(budget, [1] * rounds)
    shares = tuple(1.0 - (1.0 - (k + 1) / rounds) ** 3 for k in range(rounds))
    return SleepSchedule("cubic", epochs, shares)


SCHEDULES = {"uniform": _uniform, "lengthening": _lengthening, "cubic": _cubic}


def sleep_schedule(name: str, budget: int, rounds: int) -> SleepSchedule:
    """The named schedule of ``rounds`` rounds within ``budget`` retraining epochs."""
    if rounds < 1:
        raise ValueError(f"rounds (N) must be >= 1, got {rounds}")
    if budget < 0:
        raise ValueError(f"the retraining budget must be >= 0 epochs, got {budget}")
    try:
        make = SCHEDULES[name]
    except KeyError:
        raise ValueError(f"unknown sleep schedule {name!r}; choose one of {', '.join(SCHEDULES)}") from None
    return make(budget, rounds)


def night_targets(held: int, keep: int, schedule: SleepSchedule) -> list[int]:
    """Weights a task still holds after each round, going from ``held`` to exactly ``keep``.

    Interpolates geometrically (so a uniform schedule prunes the same fraction ``z`` every round) and
    rounds to whole weights, forcing the last round onto ``keep`` so rounding never accumulates.
    """
    if not 0 <= keep <= held:
        raise ValueError(f"cannot go from {held} held weights to {keep}")
    if keep == held:
        return [held] * schedule.rounds
    if keep == 0:
        return [round(held * (1 - s)) for s in schedule.pruned_share[:-1]] + [0]
    ratio = keep / held
    targets = [max(keep, min(held, round(held * ratio**share))) for share in schedule.pruned_share]
    targets[-1] = keep
    return targets


def _split_proportionally(total: int, weights: Sequence[int]) -> tuple[int, ...]:
    """Integer parts proportional to ``weights`` that add up to ``total`` (largest remainder)."""
    scale = total / sum(weights)
    raw = [w * scale for w in weights]
    parts = [math.floor(x) for x in raw]
    by_remainder = sorted(range(len(raw)), key=lambda i: raw[i] - parts[i], reverse=True)
    for i in by_remainder[: total - sum(parts)]:
        parts[i] += 1
    return tuple(parts)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0] if n > 0 else [1]


def _check_fraction(p: float) -> None:
    if not 0.0 < p < 1.0:
        raise ValueError(f"the final free fraction p must lie strictly between 0 and 1, got {p}")
