"""The protocol every strategy follows: the few questions the engine asks it while learning a task sequence.

A *day* is one training phase followed by its *night* (rounds of prune-then-retrain). The engine asks the
strategy which days there are and what data each sees (:meth:`Strategy.days`), which weights a day takes and
may change (:meth:`~Strategy.take`, :meth:`~Strategy.trainable`, :meth:`~Strategy.trains_shared`), how many
weights must be free after its night (:meth:`~Strategy.free_target`) and by which score the night ranks them
(:meth:`~Strategy.prune_scores`: magnitude by default), the loss (:meth:`~Strategy.loss`), what to do when a
day begins and ends (:meth:`~Strategy.begin_day`, :meth:`~Strategy.end_of_day`) and after every optimizer step
(:meth:`~Strategy.after_step`), and which weights answer for a task (:meth:`~Strategy.weights_for_task`).
Everything else, and the guarantees that make freezing exact (a gradient mask, a fresh optimizer each day,
moments cleared at every prune), is the engine's, in one place (:mod:`sleepcl.engine.day`).

**What the loss sees** (:class:`Step`): the batch (inputs, labels, the task of each sample), every member's
parameters, on demand the outputs of any task's head on the batch, and, for a strategy that sets
:attr:`Strategy.needs_day_start`, the outputs of the model as it was when the day began (a copy the engine takes
only for such strategies). The loss of a population is the sum of its members' losses, so member ``s``'s
gradient is its own loss's.

**Per-member state.** The engine trains ``S`` members at once, every tensor with a leading member axis; a
strategy's own tensors (EWC's importance, ER's buffer) are kept the same way, so member ``s`` learns exactly as
it would alone. :meth:`Strategy.state` hands them over as a flat ``{name: (S, ...)}`` dict (what a deployed
model saves) and :meth:`Strategy.load_state` takes them back.

**Nights for any strategy.** Whether a strategy prunes (:attr:`Strategy.prunes`) is a default of its class;
``night="rounds"`` or ``"none"`` (``--night``) chooses for a run. A strategy that does not freeze and takes a
night re-selects its weights every day, as Memory does: the day takes every weight, and its night prunes back
to the capacity schedule ``1 - r**t`` used after task t.

**Equal time budget.** Every strategy takes the same number of optimizer steps of the same batch size: per
task, ``E`` training and ``B`` retraining *task-epochs*, a task-epoch being ``ceil(n_t / batch)`` steps for a task
of ``n_t`` training samples. Strategies without a night train ``E + B`` task-epochs.

A new strategy is one file: subclass :class:`Strategy`, override what differs, and register it
(:func:`sleepcl.strategies.register`), or name it as ``path/to/file.py:Class`` or ``package.module:Class``
(``--strategy``; :mod:`sleepcl.strategies.user`). Its own parameters go in :attr:`Strategy.options` with their
defaults; runs give them as ``RunConfig(strategy_options={...})``. An option at its default is left out of a
run's identity, so giving it or not is one run, and every other run's identity is unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable, Mapping, Sequence

import torch.nn.functional as F
from torch import Tensor

from ..engine import ownership
from ..schedule import free_after_task

__all__ = ["NIGHTS", "Batch", "Day", "GradientSource", "Step", "Strategy", "cross_entropy"]

Batch = tuple[Tensor, Tensor, "Tensor | int"]
"""Inputs ``(S, B, ...)``, labels ``(S, B)``, and the task of every sample (an int, or ``(S, B)``)."""

NIGHTS = ("rounds", "none")
"""A run's choice of night (``RunConfig.night``): ``rounds`` of prune-then-retrain after each day, or ``none``."""


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


def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """The sum over members of each member's mean cross-entropy (``logits`` ``(S, B, O)``, ``y`` ``(S, B)``)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum") / y.shape[1]


class Step:
    """One optimizer step as the strategy sees it: the batch, the parameters, and outputs on demand.

    ``x`` ``(S, B, ...)``, ``y`` ``(S, B)``, ``task`` (an int, or ``(S, B)``) and ``params`` (every member's,
    stacked) are the step's; :meth:`outputs` and :meth:`outputs_before` compute more of the network on ``x``.
    After the optimizer step (:meth:`Strategy.after_step`) ``params`` hold the new values and their ``.grad``
    the gradient the step took (None for a parameter the day does not train).
    """

    def __init__(self, x: Tensor, y: Tensor, task: Tensor | int, params: Mapping[str, Tensor],
                 outputs: Callable[[Sequence[int], bool], Tensor]):
        self.x, self.y, self.task, self.params = x, y, task, params
        self._outputs = outputs

    def outputs(self, tasks: Sequence[int]) -> Tensor:
        """Logits ``(S, B, len(tasks), O)`` of every sample through the heads of ``tasks`` (0-based), from the
        model being trained (training mode, with gradients): one more forward pass of the trunk."""
        return self._outputs(tasks, False)

    def outputs_before(self, tasks: Sequence[int]) -> Tensor:
        """The same from the model as it was when the day began (evaluation mode, no gradient); only for a
        strategy with :attr:`Strategy.needs_day_start`."""
        return self._outputs(tasks, True)


class Strategy:
    """The default answers are those of sequential learning with pruning but no freezing; see the module doc."""

    name: ClassVar[str] = "strategy"
    summary: ClassVar[str] = ""           # one line for --help
    prunes: ClassVar[bool] = True         # the default night: rounds of prune-then-retrain after each day
    freezes: ClassVar[bool] = False       # kept weights are frozen for good: per-task norm layers, masked evaluation
    rehearses: ClassVar[bool] = False     # a day draws from every task seen so far
    needs_day_start: ClassVar[bool] = False  # the loss asks for the outputs of the model as the day began
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

    @classmethod
    def default_night(cls) -> str:
        return "rounds" if cls.prunes else "none"

    def set_night(self, night: str | None) -> None:
        """Take nights (``"rounds"``) or not (``"none"``) for this run; ``None`` keeps the class's default."""
        if night is None:
            return
        if night not in NIGHTS:
            raise ValueError(f"unknown night {night!r}; choose one of {', '.join(NIGHTS)}")
        if night == "none" and self.freezes:
            raise ValueError(f"strategy {self.name!r} freezes what its night keeps: without a night nothing is left "
                             "free for later tasks; use --night rounds")
        self.prunes = night == "rounds"  # type: ignore[misc]  # the instance's choice shadows the class default

    def start(self, seeds: Sequence[int]) -> None:
        """Called once before the first day with a seed per member (for a strategy that draws at random, such
        as ER's reservoir: each member draws from its own generator)."""

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

    def training_batch(self, batch: Batch) -> Batch:
        """The batch a step trains on, given the one drawn from the day's data (ER adds stored samples here)."""
        return batch

    # -- which weights a day trains -------------------------------------------------------------------

    def take(self, owner: Mapping[str, Tensor], day: Day) -> None:
        """Hand weights to the day: here every weight, freed ones included (they restart at 0)."""
        ownership.assign(owner, day.owner, only_free=False)

    def trainable(self, owner: Mapping[str, Tensor], day: Day) -> dict[str, Tensor] | None:
        """Per prunable layer, which weights the day may change (``None``: all of them). Weights the night frees
        must be excluded: they stay exactly zero for later tasks. Without a night, all of them."""
        if not self.prunes:
            return None
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

    def prune_scores(self, params: Mapping[str, Tensor]) -> dict[str, Tensor] | None:
        """Per prunable layer, the score ``(S, ...)`` the night ranks weights by (the lowest are freed), or
        ``None`` for their magnitude (the default, PackNet's)."""
        return None

    # -- the loss, the days' ends, evaluation -------------------------------------------------------------

    def begin_day(self, day: Day, params: Mapping[str, Tensor]) -> None:
        """Called when a day begins, after it took its weights and before its first step."""

    def loss(self, logits: Tensor, step: Step) -> Tensor:
        """The sum over members of each member's loss; here its mean cross-entropy on the step's batch.
        ``logits`` ``(S, B, O)``: every sample through the head of its own task."""
        return cross_entropy(logits, step.y)

    def after_step(self, step: Step) -> None:
        """Called after every optimizer step (``step.params`` hold the new values, their ``.grad`` the step's
        gradient)."""

    def end_of_day(self, day: Day, params: Mapping[str, Tensor], gradients: "GradientSource") -> None:
        """Called after the night (or the training, without one), before evaluation."""

    def weights_for_task(self, params: Mapping[str, Tensor], owner: Mapping[str, Tensor],
                         task: int) -> dict[str, Tensor]:
        """The weights task ``task`` (0-based) answers with: all of them (freed weights are exactly zero)."""
        return dict(params)

    # -- state -----------------------------------------------------------------------------------------

    def state(self) -> dict[str, Tensor]:
        """The strategy's own tensors, each ``(S, ...)`` with the member axis first (saved with a deployed model)."""
        return {}

    def load_state(self, state: Mapping[str, Tensor]) -> None:
        """Take back what :meth:`state` gave."""
        if state:
            raise ValueError(f"strategy {self.name!r} keeps no state, got {', '.join(sorted(state))}")

    def memory(self) -> dict[str, int]:
        """What the strategy stores per member beyond the network, for the run's record (``{}``: nothing;
        ER: ``{"stored_samples": n, "bytes": b}``)."""
        return {}

    def planned_bytes(self, sample_shape: Sequence[int]) -> int:
        """The most bytes per member the strategy will store beyond the network, known before training from the
        shape of one input sample (what sizes populations: :func:`sleepcl.runs.runner.memory_plan`); ER: its
        whole buffer."""
        return 0


class GradientSource:
    """What :meth:`Strategy.end_of_day` may compute on the day's data: gradients of the plain loss per batch."""

    def __init__(self, batches: Iterable[Batch], gradients):  # type: ignore[no-untyped-def]
        self._batches, self._gradients = batches, gradients

    def __iter__(self):  # type: ignore[no-untyped-def]
        """Per batch of the day's training data: ``{name: gradient (S, ...)}`` of every member's mean loss."""
        for batch in self._batches:
            yield self._gradients(batch)

    def samples(self) -> Iterable[Batch]:
        """The day's training data once, in order, as batches ``(x, y, task)`` (the same for every member)."""
        return self._batches
