"""The protocol every strategy follows: the few questions the engine asks it while learning a task sequence.

A *day* is one training phase followed by its *night* (rounds of prune-then-retrain). The engine asks the
strategy which days there are and what data each sees (:meth:`Strategy.days`), which weights a day takes and
may change (:meth:`~Strategy.take`, :meth:`~Strategy.trainable`, :meth:`~Strategy.trains_shared`), how many
weights must be free after its night (:meth:`~Strategy.free_target`), the loss (:meth:`~Strategy.loss`), what
to do when a day ends (:meth:`~Strategy.end_of_day`) and which weights answer for a task
(:meth:`~Strategy.weights_for_task`). Everything else, and the guarantees that make freezing exact (a gradient
mask, a fresh optimizer each day, moments cleared at every prune), is the engine's, in one place
(:mod:`sleepcl.engine.day`).

**Equal time budget.** Every strategy takes the same number of optimizer steps of the same batch size: per
task, ``E`` training and ``B`` retraining *task-epochs*, a task-epoch being ``ceil(n_t / batch)`` steps for a task
of ``n_t`` training samples. Strategies without a night train ``E + B`` task-epochs.

A new strategy is one file: subclass :class:`Strategy`, override what differs, and register it
(:func:`sleepcl.strategies.register`). Its own parameters go in :attr:`Strategy.options` with their defaults;
runs give them as ``RunConfig(strategy_options={...})``, which leaves every other run's identity unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Mapping

import torch.nn.functional as F
from torch import Tensor

from ..engine import ownership
from ..schedule import free_after_task

__all__ = ["Batch", "Day", "Strategy"]

Batch = tuple[Tensor, Tensor, "Tensor | int"]
"""Inputs ``(S, B, ...)``, labels ``(S, B)``, and the task of every sample (an int, or ``(S, B)``)."""


@dataclass(frozen=True)
class Day:
    """One training phase and its night."""

    owner: int                 # owner index (1-based) the day's trained weights get
    pool: tuple[int, ...]      # tasks (0-based) whose training data the day draws from
    head_task: int | None      # the single task of every batch, or None when batches mix tasks
    steps_per_epoch: int
    train_epochs: int
    night_epochs: int          # 0 for strategies without a night
    evaluate: tuple[int, ...]  # tasks (0-based) evaluated after the night
    capacity_step: int         # tasks accounted for after this day (the ``t`` of ``r**t``)


class Strategy:
    """The default answers are those of sequential learning with pruning but no freezing; see the module doc."""

    name: ClassVar[str] = "strategy"
    summary: ClassVar[str] = ""           # one line for --help
    prunes: ClassVar[bool] = True         # a night of prune-then-retrain rounds after each day
    freezes: ClassVar[bool] = False       # kept weights are frozen for good: per-task norm layers, masked evaluation
    rehearses: ClassVar[bool] = False     # a day draws from every task seen so far
    options: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, **options: Any):
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            valid = ", ".join(f"{k} (default {v!r})" for k, v in self.options.items()) or "none"
            raise ValueError(f"strategy {self.name!r} has no option {', '.join(map(repr, unknown))}; its options: "
                             f"{valid}")
        self.settings = {**self.options, **options}
        self.check(self.settings)

    def check(self, settings: Mapping[str, Any]) -> None:
        """Refuse option values that cannot work (ValueError naming the option and the fix)."""

    # -- which data each day sees ---------------------------------------------------------------------

    def days(self, train_sizes: list[int], batch_size: int, epochs: int, retrain_epochs: int) -> list[Day]:
        """One day per task, on its own data (or on all data so far when rehearsing), E + B task-epochs."""
        per_task = [max(1, math.ceil(n / batch_size)) for n in train_sizes]
        out = []
        for t in range(len(train_sizes)):
            pool = tuple(range(t + 1)) if self.rehearses else (t,)
            night = retrain_epochs if self.prunes else 0
            train = epochs if self.prunes else epochs + retrain_epochs
            out.append(Day(t + 1, pool, None if self.rehearses else t, per_task[t], train, night,
                           tuple(range(t + 1)), t + 1))
        return out

    # -- which weights a day trains -------------------------------------------------------------------

    def take(self, owner: Mapping[str, Tensor], day: Day) -> None:
        """Hand weights to the day: here every weight, freed ones included (they restart at 0)."""
        ownership.assign(owner, day.owner, only_free=False)

    def trainable(self, owner: Mapping[str, Tensor], day: Day) -> dict[str, Tensor] | None:
        """Per prunable layer, which weights the day may change (``None``: all of them). Weights the night frees
        must be excluded: they stay exactly zero for later tasks."""
        return {name: o == day.owner for name, o in owner.items()}

    def trains_shared(self, day_index: int) -> bool:
        """Whether day ``day_index`` (0-based) trains the shared parameters (biases, shared norm layers)."""
        return True

    # -- the night --------------------------------------------------------------------------------------

    def free_target(self, n_weights: int, day: Day, n_tasks: int, final_free: float) -> int:
        """Free weights a layer of ``n_weights`` must have after ``day``'s night: Algorithm 2's ``r ** t``."""
        if not self.prunes:
            return 0
        return round(n_weights * free_after_task(day.capacity_step, n_tasks, final_free))

    # -- the loss, the end of a day, evaluation ---------------------------------------------------------

    def loss(self, logits: Tensor, y: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        """The sum over members of each member's mean cross-entropy: member s's gradient is its own loss's."""
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum") / y.shape[1]

    def end_of_day(self, day: Day, params: Mapping[str, Tensor], gradients: "GradientSource") -> None:
        """Called after the night (or the training, without one), before evaluation."""

    def weights_for_task(self, params: Mapping[str, Tensor], owner: Mapping[str, Tensor],
                         task: int) -> dict[str, Tensor]:
        """The weights task ``task`` (0-based) answers with: all of them (freed weights are exactly zero)."""
        return dict(params)


class GradientSource:
    """What :meth:`Strategy.end_of_day` may compute on the day's data: gradients of the plain loss per batch."""

    def __init__(self, batches: Iterable[Batch], gradients):  # type: ignore[no-untyped-def]
        self._batches, self._gradients = batches, gradients

    def __iter__(self):  # type: ignore[no-untyped-def]
        """Per batch of the day's training data: ``{name: gradient (S, ...)}`` of every member's mean loss."""
        for batch in self._batches:
            yield self._gradients(batch)
