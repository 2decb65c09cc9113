"""The population engine: S runs of one strategy trained together, one batched step for all of them.

Members share the data, the strategy, the network and the step count; each has its own initial weights,
data order, dropout masks, owner map, prune events (its own ``p``, ``N`` and sleep schedule) and
optimizer state. Nothing couples them: the loss is a sum of per-member losses, the optimizer is
element-wise, pruning and evaluation are per member, so member ``s`` trains exactly as it would alone.

Read top to bottom, :meth:`Population.fit` is the paper's Algorithm 1 for every strategy: for each day, train
``E`` epochs; then the night, where each member prunes at the start of each of its rounds and all retrain
together; then evaluate every task seen so far (after every ``eval_every``-th day and the last; how the cost
of evaluating is kept down: :mod:`sleepcl.engine.evaluation`). What a day may change and how exactly is
:class:`~sleepcl.engine.day.DaySession`'s; what the days are and what each sees is the strategy's. Every step
is taken by :meth:`Population.train`, the one loop (:mod:`sleepcl.engine.loop`).

A deployed model's members (``sleepcl learn``) are a population too (:meth:`Population.of_members`): one member
(or, for a probe of candidate schedules, one per candidate) trained through the same :meth:`~Population.session`
and :meth:`~Population.train`, on one task's stream of batches, with a step budget that ``learn``'s planner
re-plans against the wall clock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable, Iterable, Iterator, Sequence

import torch
from torch import Tensor

from ..config import RunConfig, check_population
from ..data.split import SplitBenchmark
from ..models import build_network
from ..schedule import SleepSchedule, night_targets, sleep_schedule
from ..strategies import Batch, Day, Strategy, get_strategy
from ..threads import torch_threads
from .adam import MemberAdam, fused_adam_available, fused_adam_stacks_exact
from .day import ADAM_MODES, DaySession
from .density import layer_free_counts
from .divergence import nonfinite_members
from .evaluation import Evaluator, task_inference
from . import loop
from .loop import Budget, MemberNight, Night, Steps, Stopped
from .members import Members
from .streams import IndexStream, member_seeds, strategy_seed

__all__ = ["ADAM_MODES", "FAST_PARTS", "SPEEDS", "Event", "MemberAdam", "MemberResult", "Population",
           "Stopped", "fused_adam_available", "fused_adam_stacks_exact", "train_population"]

# How the engine computes, never what it computes: speed options are not part of a run's identity
# (RunConfig's hash). "fast" (the default) is every part below; "reference" is none of them: the plain
# formulation (the network as an ordinary nn.Module called once per member, foreach Adam, gradients zeroed
# and accumulated, a mask multiply every step, batches gathered by advanced indexing), kept to check the
# fast path against (tests/test_fast_path.py). A collection of part names picks some, to measure each.
SPEEDS = ("fast", "reference")
FAST_PARTS = (
    "stacked_kernels",    # the paper's networks as stacked kernels over the member axis (models/paper.py)
    "fused_adam",         # one pass of Adam over weights, gradients and moments instead of ~10 (MemberAdam)
    "compact_nights",     # with fused_adam: a member training few of a layer's weights (a night after pruning)
                          # updates just those, through one gather and one scatter, and skips the mask pass
    "handover_grads",     # backward hands its gradient over (set_to_none) instead of adding it to a zeroed one
    "skip_full_masks",    # no gradient-mask multiply while a mask freezes nothing (day 1, rehearsal training)
    "no_untrained_grads",  # weights the day does not train (biases after day 1) get no gradient at all
    "stacked_linear",     # with stacked_kernels: weight gradients straight into the weight's layout
    "gather_buffer",      # each step's batch gathered with one contiguous index into one reused buffer
    "member_convs",       # with stacked_kernels, on CPU: one convolution per member instead of one grouped one
    "member_workers",     # on CPU, groups of members side by side, one core each (train_population; workers.py)
    "vmap_members",       # off CPU, a user's model without random layers computes all members in one torch.func.vmap
    "joint_eval",         # a task's test and validation samples evaluated in one pass (engine/evaluation.py)
    "eval_cache",         # a task whose answering state is unchanged (its digest) is not evaluated again
)


def speed_parts(speed: str | Sequence[str]) -> frozenset[str]:
    """The fast-path parts a ``speed`` option stands for (see :data:`FAST_PARTS`)."""
    if isinstance(speed, str):
        if speed not in SPEEDS:
            raise ValueError(f"unknown speed {speed!r}; choose one of {', '.join(SPEEDS)} or a set of {FAST_PARTS}")
        return frozenset(FAST_PARTS) if speed == "fast" else frozenset()
    parts = frozenset(speed)
    unknown = parts - set(FAST_PARTS)
    if unknown:
        raise ValueError(f"unknown fast-path parts {sorted(unknown)}; choose from {', '.join(FAST_PARTS)}")
    return parts


@dataclass(frozen=True)
class Event:
    """A progress report: the engine calls back with one after every epoch and at phase changes."""

    day: int              # 1-based
    n_days: int
    phase: str            # "train", "retrain", "evaluate", "done"
    epoch: int            # epochs finished in this phase
    epochs: int
    steps_done: int       # over the whole run
    steps_total: int


@dataclass
class MemberResult:
    """What one member measured; :mod:`sleepcl.runs.records` turns it into the JSON record."""

    config: RunConfig
    # Row i: the accuracy on every task after day i (None for a task not learnt yet); a whole row is None when
    # the tasks were not evaluated after that day (RunConfig.eval_every > 1). The last row is always complete.
    accuracy_matrix: list[list[float | None] | None] = field(default_factory=list)
    val_accuracy_matrix: list[list[float | None] | None] = field(default_factory=list)
    free_fraction_after_task: list[float] = field(default_factory=list)
    free_fraction_after_round: list[list[float]] = field(default_factory=list)
    layer_free_fraction: dict[str, float] = field(default_factory=dict)
    # Seconds of the member's population by phase ("train", "prune", "retrain", "evaluate"), "total" and
    # "population_size" (so that total / population_size is the time per member); trained side by side in
    # groups (workers.py), the phases are its group's, "total" and "population_size" the whole run's, and
    # "groups" says how many there were.
    timings: dict[str, float] = field(default_factory=dict)
    # What the strategy stores beyond the network (Strategy.memory: ER's buffer), after the last day.
    strategy_memory: dict[str, int] = field(default_factory=dict)
    # Set when the member's weights held NaN or infinite values after a day (engine/divergence.py): the run
    # failed, and its record is never stored.
    diverged: str | None = None
    # At the end, the task never told (sleepcl.task_inference): per rule, "task" (task-inference accuracy) and
    # "class_incremental" (task and class right) on the test data, each the mean over tasks. None when not scored.
    task_inference: dict[str, dict[str, float]] | None = None


class Population:
    """S runs of one strategy on one benchmark, trained together: see the module docstring."""

    def __init__(self, configs: Sequence[RunConfig], bench: SplitBenchmark, device: torch.device | str = "cpu",
                 *, speed: str | Sequence[str] = "fast", adam: str | None = None, tf32: bool = False):
        """Speed options (none changes what is computed beyond rounding; none is part of a run's identity):

        ``speed``: ``"fast"`` (default), ``"reference"``, or a collection of :data:`FAST_PARTS`.
        ``adam``: force one of :data:`ADAM_MODES`; by default ``"fused"`` with the ``fused_adam`` part (when
        this torch has the fused kernel for the device), else ``"foreach"``.
        ``tf32``: let CUDA matmuls and convolutions use TF32 during :meth:`fit` (no effect on CPU).
        """
        self.parts = speed_parts(speed)
        if adam is not None and adam not in ADAM_MODES:
            raise ValueError(f"unknown adam mode {adam!r}; choose one of {', '.join(ADAM_MODES)}")
        self.configs = check_population(configs)
        first = self.configs[0]
        if bench.n_tasks != first.n_tasks:
            raise ValueError(f"the benchmark has {bench.n_tasks} tasks but the config asks for {first.n_tasks}")
        self.device = torch.device(device)
        if adam is None:
            adam = "fused" if "fused_adam" in self.parts and fused_adam_available(self.device) else "foreach"
        self.adam, self.tf32, self.lr = adam, tf32, first.lr
        self.bench = bench.to(self.device)
        self.strategy = get_strategy(first.strategy, first.strategy_options, night=first.night)
        self.net = build_network(first.network, bench.input_shape, bench.n_tasks, head_size(bench), first.widths,
                                 per_task_norm=self.strategy.freezes, stacked="stacked_kernels" in self.parts,
                                 head=first.head, class_counts=bench.n_classes,
                                 fast="stacked_linear" in self.parts,
                                 member_convs="member_convs" in self.parts and self.device.type == "cpu",
                                 vmap="vmap_members" in self.parts and self.device.type != "cpu")
        seeds = [member_seeds(c.seed) for c in self.configs]
        self.members = Members.initial(self.net, [s[0] for s in seeds], [s[2] for s in seeds], self.device)
        self.order_generators = [torch.Generator().manual_seed(s[1]) for s in seeds]
        self.strategy.start([strategy_seed(c.seed) for c in self.configs])
        self.schedules: list[SleepSchedule] = [sleep_schedule(c.schedule, c.retrain_epochs, c.rounds)
                                               for c in self.configs]
        # Set by whoever runs this population beside others (workers.py): checked before every step.
        self.stop: threading.Event | None = None

    @classmethod
    def of_members(cls, members: Members, strategy: Strategy, lr: float, *, parts: Iterable[str] = (),
                   adam: str = "foreach") -> "Population":
        """A population of members that exist already (a deployed model's: ``sleepcl learn``), with no benchmark
        and no run configs: it trains day by day through :meth:`session` and :meth:`train` on batches of the
        caller's (:meth:`fit` and evaluation need a benchmark). ``parts``: fast-path parts (:data:`FAST_PARTS`);
        ``adam``: one of :data:`ADAM_MODES`."""
        if adam not in ADAM_MODES:
            raise ValueError(f"unknown adam mode {adam!r}; choose one of {', '.join(ADAM_MODES)}")
        pop = cls.__new__(cls)
        pop.parts, pop.adam, pop.tf32, pop.lr = speed_parts(tuple(parts)), adam, False, lr
        pop.configs, pop.device, pop.bench = [], members.device, None  # type: ignore[assignment]
        pop.members, pop.net, pop.strategy = members, members.net, strategy
        pop.order_generators, pop.schedules, pop.stop = [], [], None
        return pop

    @property
    def size(self) -> int:
        return self.members.size

    @property
    def params(self) -> dict[str, Tensor]:
        return self.members.params

    @property
    def owner(self) -> dict[str, Tensor]:
        return self.members.owner

    # -- one day -------------------------------------------------------------------------------------

    def days(self) -> list[Day]:
        c = self.configs[0]
        sizes = [int(i.numel()) for i in self.bench.train]
        return self.strategy.days(sizes, c.batch_size, c.epochs, c.retrain_epochs)

    def session(self, day: Day, day_index: int) -> DaySession:
        """A day of this population's strategy (see :class:`~sleepcl.engine.day.DaySession`)."""
        return DaySession(self.members, self.strategy, day, day_index, self.lr, parts=self.parts, adam=self.adam)

    def train(self, session: DaySession, batches: Iterator[Batch], budget: Budget, night: Night | None = None) -> None:
        """Train ``session`` (a day of this population) on ``batches`` until ``budget`` says stop, taking
        ``night``'s prunes as they fall due: the one loop every step goes through (:func:`.loop.train`)."""
        loop.train(session, batches, budget, night)

    def replicate(self, session: DaySession, size: int, random_seeds: Sequence[int]) -> tuple["Population", DaySession]:
        """``size`` copies of member 0 as a new population whose day continues ``session``'s, Adam moments included
        (:meth:`DaySession.replicate`)."""
        copy = session.replicate(size, random_seeds)
        return Population.of_members(copy.members, self.strategy, self.lr, parts=self.parts, adam="foreach"), copy

    def data_streams(self, day: Day) -> tuple[list[IndexStream], Tensor]:
        """The day's pool of training positions and each member's shuffled stream over it."""
        pool = torch.cat([self.bench.train[t].cpu() for t in day.pool])
        return [IndexStream(pool.numel(), g) for g in self.order_generators], pool

    def batches(self, day: Day, streams: list[IndexStream], pool: Tensor) -> Iterator[Batch]:
        """One epoch of ``day.steps_per_epoch`` batches; each member reads its own shuffled stream."""
        bs, steps = self.configs[0].batch_size, day.steps_per_epoch
        local = torch.stack([s.take(steps * bs) for s in streams])  # (S, steps*bs) positions in the pool
        index = pool[local].to(self.device, non_blocking=True)
        bench, s, t = self.bench, len(streams), day.head_task
        gather = "gather_buffer" in self.parts
        if gather:
            by_step = index.view(s, steps, bs).transpose(0, 1).reshape(steps, s * bs)
            x_buf = torch.empty((s * bs, math.prod(bench.input_shape)), dtype=torch.float32, device=self.device)
        for k in range(steps):
            if gather:
                batch = by_step[k].view(s, bs)
                x = bench.inputs(batch, task=t, out=x_buf)
            else:
                batch = index[:, k * bs:(k + 1) * bs]
                x = bench.inputs(batch, task=t)
            yield x, bench.labels(batch), t if t is not None else bench.tasks(batch)

    def data_pass(self, day: Day, mixed: bool = False) -> Iterator[Batch]:
        """The day's training data once, in order (``mixed``: in one fixed shuffled order, so that every batch
        mixes the classes, for norm-layer statistics), the same batches for every member (for what a strategy
        computes at the end of a day, such as EWC's Fisher information; the members' own streams stay as
        they are)."""
        bench = self.bench
        pool = torch.cat([bench.train[t] for t in day.pool])
        if mixed:
            pool = pool[torch.randperm(pool.numel(), generator=torch.Generator().manual_seed(0)).to(pool.device)]
        bs, s, t = self.configs[0].batch_size, self.size, day.head_task
        for start in range(0, pool.numel(), bs):
            idx = pool[start:start + bs]
            x, y = bench.inputs(idx, task=t), bench.labels(idx)
            task = t if t is not None else bench.tasks(idx).expand(s, -1)
            yield x.expand(s, *x.shape), y.expand(s, -1), task

    def run_epoch(self, session: DaySession, streams: list[IndexStream], pool: Tensor) -> None:
        """One epoch of the day's training (stopped before any step once :attr:`stop` is set)."""
        self.train(session, self.batches(session.day, streams, pool), Steps(session.day.steps_per_epoch, self.stop))

    def night_targets(self, day: Day, held: list[dict[str, int]]) -> list[list[dict[str, int] | int]]:
        """Per member, per round: how many weights the day still holds after that round.

        Layer-wise pruning follows the schedule in every layer (a count per layer); global pruning
        follows it for the network as a whole (one count), letting magnitudes decide the layers' shares.
        """
        n_total = {name: o[0].numel() for name, o in self.owner.items()}
        out: list[list[dict[str, int] | int]] = []
        for m, c in enumerate(self.configs):
            if c.prune_scope == "global":
                start = sum(held[m].values())
                keep = start - self.strategy.free_target(sum(n_total.values()), day, c.n_tasks, c.final_free)
                out.append(list(night_targets(start, keep, self.schedules[m])))
                continue
            free = self.layer_free_targets(day, c)
            per_layer = {name: night_targets(held[m][name], held[m][name] - free[name], self.schedules[m])
                         for name in n_total}
            out.append([{name: per_layer[name][k] for name in n_total} for k in range(self.schedules[m].rounds)])
        return out

    def layer_free_targets(self, day: Day, c: RunConfig) -> dict[str, int]:
        """Per prunable layer, the weights free after ``day``'s night: each layer on its own schedule (``uniform``
        density), or the network's free count shared out as ERK given every earlier step's
        (:mod:`~sleepcl.engine.density`: a layer never takes back what an earlier task kept)."""
        shapes = {name: tuple(o.shape[1:]) for name, o in self.owner.items()}
        if day.capacity_step < 1:
            return {name: o[0].numel() for name, o in self.owner.items()}
        return layer_free_counts(shapes, _schedule(self.strategy, day, c), day.capacity_step,
                                 c.layer_density)[-1]  # type: ignore[arg-type]

    # -- the whole sequence ----------------------------------------------------------------------------

    def fit(self, progress: Callable[[Event], None] | None = None,
            on_day_end: Callable[["Population", int], None] | None = None) -> list[MemberResult]:
        """Learn every day of the strategy (training, then the night), evaluating after each."""
        if not self.configs:
            raise ValueError("a population of given members (Population.of_members) has no benchmark to fit: train "
                             "it day by day with session() and train()")
        try:
            with _allow_tf32(self.tf32), torch_threads(1 if self.net.thread_sensitive(self.device) else None):
                return self._fit(progress, on_day_end)
        finally:
            for p in self.params.values():  # the fast path turns off gradients of frozen parameters
                p.requires_grad_(True)

    def _fit(self, progress: Callable[[Event], None] | None,
             on_day_end: Callable[["Population", int], None] | None) -> list[MemberResult]:
        days = self.days()
        run = _Clock(days, progress, self.device)
        results = [MemberResult(c) for c in self.configs]
        evaluator = self.evaluator()
        for i, day in enumerate(days):
            session = self.session(day, i)
            held = session.held()
            streams, pool = self.data_streams(day)
            for e in range(day.train_epochs):
                with run.timed("train"):
                    self.run_epoch(session, streams, pool)
                run.epoch_done(i, "train", e + 1, day)
            rounds = self.night(i, session, held, streams, pool, run)
            session.finish(self.data_pass(day), self.data_pass(day, mixed=True))
            for m, name in nonfinite_members(self.members.params, self.members.buffers).items():
                results[m].diverged = results[m].diverged or f"after task {i + 1}, {name} held NaN or infinite values"
            evaluated = None
            if evaluation_day(i, len(days), self.configs[0].eval_every):
                run.report(i, "evaluate", 0, 1)
                with run.timed("evaluate"):
                    evaluated = evaluator(day.evaluate)
            self.record(results, day, rounds, evaluated)
            if on_day_end is not None:
                on_day_end(self, i)
        with run.timed("evaluate"):
            inferred = task_inference(self.members, self.strategy, self.bench, days[-1].evaluate)
        for m, r in enumerate(results):
            r.layer_free_fraction = self.members.layer_free_fraction(m)
            r.strategy_memory = self.strategy.memory()
            if inferred is not None:
                r.task_inference = {rule: {k: float(v[m]) for k, v in acc.items()} for rule, acc in inferred.items()}
            r.timings = {**run.timings, "total": time.perf_counter() - run.started, "population_size": self.size}
        run.report(len(days) - 1, "done", 1, 1)
        return results

    def night(self, i: int, session: DaySession, held: list[dict[str, int]], streams: list[IndexStream],
              pool: Tensor, run: "_Clock") -> list[list[float]]:
        """The night: member m prunes at the start of each of its rounds, then all retrain together. Returns each
        member's free fraction after each of its rounds."""
        day = session.day
        rounds: list[list[float]] = [[] for _ in range(self.size)]
        if not self.strategy.prunes:
            return rounds
        targets, n = self.night_targets(day, held), day.night_epochs
        plans = [MemberNight([Fraction(e, n) if n else Fraction(0) for e in sch.prune_epochs()], targets[m],
                             self.configs[m].prune_scope) for m, sch in enumerate(self.schedules)]
        night = Night(session, plans, after_prune=lambda m, _: rounds[m].append(self.members.member_free_fraction(m)))
        for e in range(n + 1):  # each round prunes at the start of its epoch (a night of n epochs, counted in epochs)
            with run.timed("prune"):
                night.prune_due(e, n)
            if e < n:
                with run.timed("retrain"):
                    self.run_epoch(session, streams, pool)
                run.epoch_done(i, "retrain", e + 1, day)
        return rounds

    def record(self, results: list[MemberResult], day: Day, rounds: list[list[float]],
               evaluated: dict[str, Tensor] | None) -> None:
        """Add the day's row to every member's results: its accuracies (``evaluated``: per split ``(S, tasks)``,
        or None when the day was not evaluated, which leaves the whole row None) and free fractions."""
        fractions = self.members.free_fraction()
        for m, r in enumerate(results):
            for matrix, split in ((r.accuracy_matrix, "test"), (r.val_accuracy_matrix, "val")):
                matrix.append(None if evaluated is None else
                              _row(day.evaluate, evaluated[split][m], self.bench.n_tasks))
            r.free_fraction_after_task.append(float(fractions[m]))
            r.free_fraction_after_round.append(rounds[m])

    # -- evaluation ----------------------------------------------------------------------------------

    def evaluator(self) -> Evaluator:
        """What :meth:`fit` evaluates with, using the fast path's evaluation parts
        (:data:`~sleepcl.engine.evaluation.EVAL_PARTS`); without them, :meth:`evaluate`'s plain formulation."""
        return Evaluator(self.members, self.strategy, self.bench, joint="joint_eval" in self.parts,
                         cache="eval_cache" in self.parts)

    def evaluate(self, tasks: Sequence[int], split: str = "test", chunk: int | None = None) -> Tensor:
        """Accuracy ``(S, len(tasks))`` of every member on each task, through that task's own network: one split,
        one task at a time, nothing cached (the plain formulation; :meth:`evaluator` shares work)."""
        plain = Evaluator(self.members, self.strategy, self.bench, joint=False, cache=False, chunk=chunk)
        return plain(tasks, (split,))[split]

    def params_for_task(self, task: int) -> dict[str, Tensor]:
        """The weights task ``task`` (0-based) answers with: its own and earlier tasks' under PackNet."""
        return self.strategy.weights_for_task(self.params, self.owner, task)


class _Clock:
    """A run's seconds by phase and its progress events (steps done of the whole run)."""

    def __init__(self, days: Sequence[Day], progress: Callable[[Event], None] | None, device: torch.device):
        self.days, self.progress, self.device = days, progress, device
        self.timings = {"train": 0.0, "prune": 0.0, "retrain": 0.0, "evaluate": 0.0}
        self.steps_total = sum(d.steps_per_epoch * (d.train_epochs + d.night_epochs) for d in days)
        self.steps_done = 0
        self.started = time.perf_counter()

    @contextlib.contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        since = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.timings[phase] += time.perf_counter() - since

    def epoch_done(self, i: int, phase: str, epoch: int, day: Day) -> None:
        self.steps_done += day.steps_per_epoch
        self.report(i, phase, epoch, day.train_epochs if phase == "train" else day.night_epochs)

    def report(self, i: int, phase: str, epoch: int, epochs: int) -> None:
        if self.progress is not None:
            self.progress(Event(i + 1, len(self.days), phase, epoch, epochs, self.steps_done, self.steps_total))


def train_population(configs: Sequence[RunConfig], bench: SplitBenchmark, device: torch.device | str = "cpu",
                     progress: Callable[[Event], None] | None = None, *, speed: str | Sequence[str] = "fast",
                     adam: str | None = None, tf32: bool = False, workers: int | None = None,
                     on_built: Callable[[], None] | None = None) -> list[MemberResult]:
    """Train every member of ``configs`` on ``bench`` as one population; return each member's results.

    ``speed``, ``adam`` and ``tf32`` choose how it is computed (see :class:`Population`), not what: they
    are not part of a run's identity. ``workers``: on CPU, how many groups of members train side by side,
    one core each (default, with the ``member_workers`` part: one group per torch thread; see
    :mod:`sleepcl.engine.workers`). Results come back in the order of ``configs`` either way. ``on_built`` is
    called once the members' networks are built (and checked), before the first step."""
    from .workers import default_workers, fit_side_by_side, split_members  # workers.py builds on this module

    device = torch.device(device)
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1 (groups of members side by side), got {workers}")
    chosen = workers
    if workers is None:
        workers = default_workers(len(configs), device) if "member_workers" in speed_parts(speed) else 1
    groups = [Population(group, bench, device, speed=speed, adam=adam, tf32=tf32)
              for group in split_members(configs, workers)]
    if len(groups) > 1 and chosen is None and getattr(groups[0].net, "uses_global_random", False):
        # Random layers that draw from torch's global generator: groups in threads would share it.
        groups = [Population(configs, bench, device, speed=speed, adam=adam, tf32=tf32)]
    if on_built is not None:
        on_built()
    if len(groups) == 1:
        return groups[0].fit(progress)
    return fit_side_by_side(groups, progress)


def _schedule(strategy: Strategy, day: Day, c: RunConfig) -> Callable[[int, int], int]:
    """``free(n, k)``: the strategy's free count for ``n`` weights after capacity step ``k`` of ``c``'s run."""
    def free(n: int, step: int) -> int:
        return strategy.free_target(n, dataclasses.replace(day, capacity_step=step), c.n_tasks, c.final_free)
    return free


def planned_free_counts(c: RunConfig, strategy: Strategy, shapes: dict[str, tuple[int, ...]],
                        train_sizes: Sequence[int]) -> list[dict[str, int]]:
    """Per capacity step of a run of ``c`` (a strategy that prunes), per prunable layer of ``shapes``: the weights
    free after it, as the run will plan them; before any training (``run --explain``, the notice of
    :func:`sleepcl.runs.runner.check_models`)."""
    days = strategy.days(list(train_sizes), c.batch_size, c.epochs, c.retrain_epochs)
    steps = max(d.capacity_step for d in days)
    return layer_free_counts(shapes, _schedule(strategy, days[-1], c), steps, c.layer_density)  # type: ignore[arg-type]


def head_size(bench: SplitBenchmark) -> int:
    """Outputs of every task's head: the most classes any task has (2 for the class-pair benchmarks)."""
    return bench.head_size


@contextlib.contextmanager
def _allow_tf32(enabled: bool) -> Iterator[None]:
    """TF32 for CUDA matmuls and convolutions inside the block (the flags are global: restored after)."""
    if not enabled:
        yield
        return
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    before = matmul.allow_tf32, cudnn.allow_tf32
    matmul.allow_tf32, cudnn.allow_tf32 = True, True
    try:
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = before


def evaluation_day(day: int, n_days: int, every: int) -> bool:
    """Whether the tasks are evaluated after day ``day`` (0-based) of ``n_days``: every ``every``-th day, and the
    last day always (the final accuracies are complete whatever ``every`` is)."""
    return (day + 1) % every == 0 or day == n_days - 1


def _row(tasks: Sequence[int], values: Tensor, n_tasks: int) -> list[float | None]:
    row: list[float | None] = [None] * n_tasks
    for j, v in zip(tasks, values.tolist()):
        row[j] = None if math.isnan(v) else v
    return row
