"""The four ways of learning a task sequence, as data: what each day trains on and how capacity is shared.

A *day* is one training phase followed by its *night* (rounds of prune-then-retrain). Sequential
strategies have one day per task; Multinet has a single day on all tasks at once.

========== ======================= =========================== ===================== =================
strategy   data of a day           weights trained             old tasks use          free after day t
========== ======================= =========================== ===================== =================
packnet    task t only             free ones (others frozen)   their own weights     r**t  (Alg. 2)
memory     tasks 1..t (rehearsal)  all used + free, no freeze  all used weights      r**t
multinet   all tasks, one day      all                         all used weights      p
finetune   task t only             all, no pruning             all weights           0
========== ======================= =========================== ===================== =================

**Equal time budget.** Every strategy takes the same number of optimizer steps of the same batch size:
per task, ``E`` training and ``B`` retraining *task-epochs*, a task-epoch being ``ceil(n_t / batch)``
steps for a task of ``n_t`` training samples. Memory draws those steps from the growing pool of all data
seen so far; Multinet does ``E`` + ``B`` epochs of the whole training set (the same step count in total);
fine-tuning, which has no night, trains for ``E + B`` task-epochs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..schedule import free_after_task

__all__ = ["STRATEGIES", "Day", "Strategy", "get_strategy"]


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


@dataclass(frozen=True)
class Strategy:
    name: str
    freezes: bool          # weights of earlier tasks are frozen and each task sees only its own
    only_free: bool        # a day trains only the free weights (else it takes over every weight)
    prunes: bool
    rehearses: bool        # a day draws from all tasks seen so far
    multitask: bool        # one day on all tasks
    trains_bias_after_first: bool

    def days(self, train_sizes: list[int], batch_size: int, epochs: int, retrain_epochs: int) -> list[Day]:
        """The days of this strategy on tasks with ``train_sizes`` training samples."""
        n_tasks = len(train_sizes)
        per_task = [max(1, math.ceil(n / batch_size)) for n in train_sizes]
        if self.multitask:
            every = tuple(range(n_tasks))
            steps = max(1, math.ceil(sum(train_sizes) / batch_size))
            return [Day(1, every, None, steps, epochs, retrain_epochs, every, n_tasks)]
        days = []
        for t in range(n_tasks):
            pool = tuple(range(t + 1)) if self.rehearses else (t,)
            night = retrain_epochs if self.prunes else 0
            train = epochs if self.prunes else epochs + retrain_epochs
            days.append(Day(t + 1, pool, None if self.rehearses else t, per_task[t], train, night,
                            tuple(range(t + 1)), t + 1))
        return days

    def free_target(self, n_weights: int, day: Day, n_tasks: int, final_free: float) -> int:
        """Free weights a layer of ``n_weights`` must have after ``day``'s night."""
        if not self.prunes:
            return 0
        return round(n_weights * free_after_task(day.capacity_step, n_tasks, final_free))


STRATEGIES = {
    "packnet": Strategy("packnet", freezes=True, only_free=True, prunes=True, rehearses=False,
                        multitask=False, trains_bias_after_first=False),
    "memory": Strategy("memory", freezes=False, only_free=False, prunes=True, rehearses=True,
                       multitask=False, trains_bias_after_first=True),
    "multinet": Strategy("multinet", freezes=False, only_free=False, prunes=True, rehearses=False,
                         multitask=True, trains_bias_after_first=True),
    "finetune": Strategy("finetune", freezes=False, only_free=False, prunes=False, rehearses=False,
                         multitask=False, trains_bias_after_first=True),
}


def get_strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}") from None
