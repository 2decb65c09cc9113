"""The one training loop: a day's steps until a step budget says stop, each member pruned where its night puts it.

Everything that trains goes through :func:`train` (:meth:`Population.train
<sleepcl.engine.population.Population.train>`): ``sleepcl run``, the study and Ray train each epoch of a day and
of its night with it (a fixed number of steps: :class:`Steps`); ``sleepcl learn`` trains a night's phases with it,
each a budget its planner re-plans against the wall clock (:class:`sleepcl.nightly.planner.Phase`). What goes in
is a session (:class:`~sleepcl.engine.day.DaySession`: the strategy's hooks and the guarantees of freezing), an
endless iterator of batches, a step budget and, for a night, the members' prunes (:class:`Night`); what comes out
is the trained members.

**Where prunes fall.** A member's night is a list of positions, fractions of the night's steps (the first at 0),
and the counts to keep at each (:class:`MemberNight`). Before every step, and once more when the budget ends, each
member takes every prune whose position the night has reached (:func:`due`): with a fixed count of ``B`` epochs,
a round that starts at epoch ``e`` prunes before the night's step ``e * steps_per_epoch`` exactly, as the paper's
Algorithm 1; with a budget re-planned as the night goes, the rounds keep the night's shape, and a night cut short
still takes its remaining prunes, so it always ends on the capacity target.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence

from ..schedule import SleepSchedule
from ..strategies import Batch
from .day import DaySession

__all__ = ["Budget", "MemberNight", "Night", "Steps", "Stopped", "due", "night_positions", "train"]

Keep = Mapping[str, int] | int  # weights the day still holds after a round: per layer, or in all (global scope)


class Stopped(Exception):
    """Training asked to stop between two steps (see :attr:`Steps.stop`)."""


class Budget(Protocol):
    """How many steps: asked before every step. ``done`` steps so far of ``planned``."""

    done: int
    planned: int

    def keep_going(self) -> bool: ...

    def step_started(self) -> None: ...

    def step_finished(self) -> None: ...


@dataclass
class Steps:
    """A fixed number of steps; with ``stop`` set (by whoever trains populations side by side) the next
    :meth:`keep_going` raises :class:`Stopped`."""

    planned: int
    stop: threading.Event | None = None
    done: int = 0

    def keep_going(self) -> bool:
        if self.stop is not None and self.stop.is_set():
            raise Stopped("stopped: a population training beside this one failed or was interrupted")
        return self.done < self.planned

    def step_started(self) -> None:
        pass

    def step_finished(self) -> None:
        self.done += 1


def due(positions: Sequence[Fraction], next_round: int, done: int, planned: int) -> bool:
    """Whether the prune of round ``next_round`` is due after ``done`` of ``planned`` night steps."""
    if next_round >= len(positions):
        return False
    if done >= planned:
        return True
    return done >= math.floor(positions[next_round] * planned)


def night_positions(schedule: SleepSchedule) -> list[Fraction]:
    """Where each round's prune falls, as an exact fraction of the night's steps (first at 0)."""
    total = schedule.budget
    if total == 0:
        return [Fraction(0)] * schedule.rounds
    return [Fraction(e, total) for e in schedule.prune_epochs()]


@dataclass
class MemberNight:
    """One member's night: where each round's prune falls (fractions of the night's steps) and what it keeps.
    A schedule that decides as the night goes appends to both (see :class:`Night`'s ``before_prune``)."""

    positions: list[Fraction]
    targets: list[Keep]
    scope: str = "layer"
    rounds_done: int = 0

    def prunes_left(self) -> int:
        return len(self.targets) - self.rounds_done


@dataclass
class Night:
    """The prunes of every member of ``session`` during a night, taken by :func:`train` as they fall due.

    ``before_prune(m, plan)`` is called before each of member ``m``'s prunes (a schedule that decides each round
    from what the last one cost appends its target here) and ``after_prune(m, plan)`` after it; ``timed(what, f)``
    runs ``f`` (each prune) and may account its time.
    """

    session: DaySession
    plans: Sequence[MemberNight]
    before_prune: Callable[[int, Any], None] | None = None
    after_prune: Callable[[int, Any], None] | None = None
    timed: Callable[[str, Callable[[], Any]], Any] = field(default=lambda what, f: f())

    def prune_due(self, done: int, planned: int) -> None:
        """Every prune due after ``done`` of ``planned`` night steps, member by member."""
        for m, plan in enumerate(self.plans):
            while due(plan.positions, plan.rounds_done, done, planned):
                if self.before_prune is not None:
                    self.before_prune(m, plan)
                target = plan.targets[plan.rounds_done]
                self.timed("prune", lambda: self.session.prune(m, target, plan.scope))  # type: ignore[arg-type]
                plan.rounds_done += 1
                if self.after_prune is not None:
                    self.after_prune(m, plan)


def train(session: DaySession, batches: Iterator[Batch], budget: Budget, night: Night | None = None) -> None:
    """Train ``session``'s members on ``batches`` until ``budget`` says stop, taking ``night``'s prunes as they
    fall due (the night's steps are the budget's)."""
    while True:
        if night is not None:
            night.prune_due(budget.done, budget.planned)
        if not budget.keep_going():
            if night is not None:  # a budget that ended early: the prunes still to come, now
                night.prune_due(budget.done, budget.planned)
            return
        budget.step_started()
        session.step(*next(batches))
        budget.step_finished()
