"""The population engine: S runs of one strategy trained together, one batched step for all of them.

Members share the data, the strategy, the network and the step count; each has its own initial weights,
data order, dropout masks, owner map, prune events (its own ``p``, ``N`` and sleep schedule) and
optimizer state. Nothing couples them: the loss is a sum of per-member losses, the optimizer is
element-wise, pruning and evaluation are per member, so member ``s`` trains exactly as it would alone.

How freezing is made exact: a trainable mask zeroes the gradient of every weight a day may not change,
and the Adam state of a weight is zero whenever it is frozen or freed (a fresh optimizer each day, and
its moments cleared at every prune). Adam's update ``m / (sqrt(v) + eps)`` is then exactly ``0`` for such
a weight, so frozen weights stay bit-identical without copying them back after every step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from . import ownership
from ..config import RunConfig, check_population
from ..models.paper import Dropout, Network, Params, make_network
from ..schedule import SleepSchedule, night_targets, sleep_schedule
from ..data.split import SplitBenchmark
from ..strategies import Day, Strategy, get_strategy

__all__ = ["ADAM_MODES", "FAST_PARTS", "SPEEDS", "Event", "MemberAdam", "MemberResult", "Population",
           "Stopped", "fused_adam_available", "fused_adam_stacks_exact", "train_population"]

# How the engine computes, never what it computes: speed options are not part of a run's identity
# (RunConfig's hash). "fast" (the default) is every part below; "reference" is none of them: the plain
# formulation (foreach Adam, gradients zeroed and accumulated, a mask multiply every step, autograd's own
# linear layers, batches gathered by advanced indexing), kept to check the fast path against
# (tests/test_fast_path.py). A collection of part names picks some, to measure what each buys.
SPEEDS = ("fast", "reference")
FAST_PARTS = (
    "fused_adam",         # one pass of Adam over weights, gradients and moments instead of ~10 (MemberAdam)
    "compact_nights",     # with fused_adam: a member training few of a layer's weights (a night after pruning)
                          # updates just those, through one gather and one scatter, and skips the mask pass
    "handover_grads",     # backward hands its gradient over (set_to_none) instead of adding it to a zeroed one
    "skip_full_masks",    # no gradient-mask multiply while a mask freezes nothing (day 1, rehearsal training)
    "no_untrained_grads",  # weights the day does not train (biases after day 1) get no gradient at all
    "stacked_linear",     # weight gradients computed straight into the weight's layout (no transposed copy)
    "gather_buffer",      # each step's batch gathered with one contiguous index into one reused buffer
    "member_convs",       # on CPU, one convolution per member instead of one grouped one (faster kernels)
    "member_workers",     # on CPU, groups of members side by side, one core each (train_population; workers.py)
)
# Which Adam updates the weights: "foreach" (torch.optim.Adam's foreach kernels: the reference) or "fused"
# (:class:`MemberAdam`: the fused kernel over per-member views, masks applied per member).
ADAM_MODES = ("foreach", "fused")
# A member that trains fewer than this share of a layer's weights keeps compact Adam moments for them.
COMPACT_BELOW = 0.25
# On CPU, stacked tensors whose members' slices are a multiple of this many floats go to the fused Adam
# kernel whole: 16 floats are one cache line and a whole number of vectors (8 with AVX2, 16 with AVX-512).
STACK_MULTIPLE = 16


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
    accuracy_matrix: list[list[float | None]] = field(default_factory=list)
    val_accuracy_matrix: list[list[float | None]] = field(default_factory=list)
    free_fraction_after_task: list[float] = field(default_factory=list)
    free_fraction_after_round: list[list[float]] = field(default_factory=list)
    layer_free_fraction: dict[str, float] = field(default_factory=dict)
    # Seconds of the member's population by phase ("train", "prune", "retrain", "evaluate"), "total" and
    # "population_size" (so that total / population_size is the time per member); trained side by side in
    # groups (workers.py), the phases are its group's, "total" and "population_size" the whole run's, and
    # "groups" says how many there were.
    timings: dict[str, float] = field(default_factory=dict)


class Stopped(Exception):
    """A population asked to stop between two steps (see :attr:`Population.stop`)."""


class IndexStream:
    """An endless stream of shuffled indices into a pool, one permutation after another.

    Every batch is full size: a batch that runs past the end of one permutation continues into the next,
    as a sampler that never drops a sample would.
    """

    def __init__(self, pool_size: int, generator: torch.Generator):
        self.pool_size, self.generator = pool_size, generator
        self.buffer = torch.empty(0, dtype=torch.long)

    def take(self, count: int) -> Tensor:
        while self.buffer.numel() < count:
            self.buffer = torch.cat([self.buffer, torch.randperm(self.pool_size, generator=self.generator)])
        out, self.buffer = self.buffer[:count], self.buffer[count:]
        return out


def member_seeds(seed: int) -> tuple[int, int, int]:
    """Independent seeds for a member's initial weights, data order and dropout, from its one seed."""
    init, order, dropout = np.random.SeedSequence(seed).generate_state(3, dtype=np.uint64)
    return int(init), int(order), int(dropout)


class Population:
    """The stacked state of S members: weights, owner maps and random streams."""

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
        self.adam = adam
        self.tf32 = tf32
        self.bench = bench.to(self.device)
        self.strategy: Strategy = get_strategy(first.strategy)
        self.net: Network = make_network(first.network, bench.input_shape, bench.n_tasks, first.widths)
        if "stacked_linear" in self.parts:
            self.net = dataclasses.replace(self.net, fast=True)
        if "member_convs" in self.parts and self.device.type == "cpu":
            # Off CPU the grouped convolution stays: one kernel launch for all members.
            self.net = dataclasses.replace(self.net, member_convs=True)
        seeds = [member_seeds(c.seed) for c in self.configs]
        members = [self.net.init(torch.Generator().manual_seed(s[0])) for s in seeds]
        self.params: Params = {name: torch.stack([m[name] for m in members]).to(self.device).requires_grad_()
                               for name in members[0]}
        self.owner: dict[str, Tensor] = {name: torch.zeros_like(self.params[name], dtype=torch.uint8)
                                         for name in self.net.prunable}
        self.order_generators = [torch.Generator().manual_seed(s[1]) for s in seeds]
        self.dropout_generators = [torch.Generator(device=self.device).manual_seed(s[2]) for s in seeds]
        self.schedules: list[SleepSchedule] = [sleep_schedule(c.schedule, c.retrain_epochs, c.rounds)
                                               for c in self.configs]
        # Fast path: which masks currently freeze something (a mask of all ones is skipped).
        self._mask_active: dict[str, bool] = {}
        # Set by whoever runs this population beside others (workers.py): checked before every step.
        self.stop: threading.Event | None = None

    @property
    def size(self) -> int:
        return len(self.configs)

    # -- one day -------------------------------------------------------------------------------------

    def begin_day(self, day: Day) -> dict[str, int]:
        """Hand the day's weights to it; return how many each layer holds at the start (per member 0)."""
        # Strategies without freezing take over every weight, freed ones included (they restart at 0).
        ownership.assign(self.owner, day.owner, only_free=self.strategy.only_free)
        return {name: int(c[0]) for name, c in ownership.counts(self.owner, day.owner).items()}

    def trainable_masks(self, day: Day) -> dict[str, Tensor]:
        masks = {name: (o == day.owner).to(self.params[name].dtype) for name, o in self.owner.items()}
        self._mask_active = {name: not bool(m.all()) for name, m in masks.items()}
        return masks

    def make_optimizer(self, day_index: int, masks: dict[str, Tensor] | None = None) -> "torch.optim.Adam | MemberAdam":
        """A fresh Adam each day (as PackNet does), so no moment carries over to frozen weights.

        ``masks``: the day's trainable masks (:meth:`trainable_masks`), which :class:`MemberAdam` applies
        itself; the foreach Adam leaves masking to :meth:`run_epoch`.
        """
        names = [n for n in self.params if not self._frozen_parameter(n, day_index)]
        if "no_untrained_grads" in self.parts:
            # No gradient at all for what the day does not train (biases frozen after day 1).
            for n, p in self.params.items():
                p.requires_grad_(n in names)
        lr = self.configs[0].lr
        if self.adam == "fused":
            return MemberAdam(self.params, names, masks or {}, lr, skip_full="skip_full_masks" in self.parts,
                              compact_below=COMPACT_BELOW if "compact_nights" in self.parts else 0.0)
        # foreach: ~10x faster than the per-tensor loop on CPU.
        return torch.optim.Adam([self.params[n] for n in names], lr=lr, foreach=True)

    def _frozen_parameter(self, name: str, day_index: int) -> bool:
        is_bias = name.endswith(".bias") and not name.startswith("head")
        return is_bias and day_index > 0 and not self.strategy.trains_bias_after_first

    def run_epoch(self, day: Day, streams: list[IndexStream], pool: Tensor, optimizer: "torch.optim.Adam | MemberAdam",
                  masks: dict[str, Tensor], dropout: Dropout | None) -> None:
        """One epoch of ``day.steps_per_epoch`` steps; each member reads its own shuffled batches."""
        bs = self.configs[0].batch_size
        steps = day.steps_per_epoch
        local = torch.stack([s.take(steps * bs) for s in streams])  # (S, steps*bs) positions in the pool
        index = pool[local].to(self.device, non_blocking=True)
        x_all, y_all, task_all = self.bench.x, self.bench.y, self.bench.task
        parts = self.parts
        skip = "skip_full_masks" in parts
        active = [(self.params[n], m) for n, m in masks.items() if not skip or self._mask_active.get(n, True)]
        if isinstance(optimizer, MemberAdam):
            active = []  # it masks per member itself
        gather = "gather_buffer" in parts
        if gather:
            s = len(streams)
            by_step = index.view(s, steps, bs).transpose(0, 1).reshape(steps, s * bs)
            x_flat = x_all.view(x_all.shape[0], -1)
            x_buf = torch.empty((s * bs, x_flat.shape[1]), dtype=x_all.dtype, device=x_all.device)
        handover = "handover_grads" in parts
        for k in range(steps):
            if self.stop is not None and self.stop.is_set():
                raise Stopped("stopped: a population training beside this one failed or was interrupted")
            if gather:
                batch = by_step[k]
                x = torch.index_select(x_flat, 0, batch, out=x_buf).view(s, bs, *x_all.shape[1:])
                batch = batch.view(s, bs)
            else:
                batch = index[:, k * bs:(k + 1) * bs]
                x = x_all[batch]
            y = y_all[batch]
            task = day.head_task if day.head_task is not None else task_all[batch]
            logits = self.net.logits(self.params, x, task, dropout)
            # Sum of per-member mean losses: member s's gradient is exactly its own loss's gradient.
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum") / bs
            optimizer.zero_grad(set_to_none=handover)
            loss.backward()
            for param, mask in active:
                param.grad.mul_(mask)
            optimizer.step()

    def prune_member(self, member: int, day: Day, keep: dict[str, int] | int,
                     optimizer: "torch.optim.Adam | MemberAdam", masks: dict[str, Tensor]) -> None:
        """Free member ``member``'s weakest weights of the day down to ``keep`` and forget their moments."""
        scope = self.configs[member].prune_scope
        ownership.prune(self.params, self.owner, day.owner, member, keep, scope)  # type: ignore[arg-type]
        for name, o in self.owner.items():
            masks[name][member] = (o[member] == day.owner).to(masks[name].dtype)
            self._mask_active[name] = True  # pruning freed weights the day must leave alone
            if isinstance(optimizer, MemberAdam):
                continue
            state = optimizer.state.get(self.params[name])
            if state:
                state["exp_avg"][member].mul_(masks[name][member])
                state["exp_avg_sq"][member].mul_(masks[name][member])
        if isinstance(optimizer, MemberAdam):
            optimizer.member_pruned(member)

    def data_streams(self, day: Day) -> tuple[list[IndexStream], Tensor]:
        """The day's pool of training positions and each member's shuffled stream over it."""
        pool = torch.cat([self.bench.train[t].cpu() for t in day.pool])
        return [IndexStream(pool.numel(), g) for g in self.order_generators], pool

    def dropout(self) -> Dropout | None:
        """Dropout with each member's own generator, for networks that have it."""
        rate = getattr(self.net, "dropout_rate", 0.0)
        return Dropout(rate, self.dropout_generators) if rate > 0 else None

    def days(self) -> list[Day]:
        c = self.configs[0]
        sizes = [int(i.numel()) for i in self.bench.train]
        return self.strategy.days(sizes, c.batch_size, c.epochs, c.retrain_epochs)

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
            per_layer = {name: night_targets(held[m][name],
                                             held[m][name] - self.strategy.free_target(n, day, c.n_tasks, c.final_free),
                                             self.schedules[m])
                         for name, n in n_total.items()}
            out.append([{name: per_layer[name][k] for name in n_total} for k in range(self.schedules[m].rounds)])
        return out

    def fit(self, progress: Callable[[Event], None] | None = None,
            on_day_end: Callable[["Population", int], None] | None = None) -> list[MemberResult]:
        """Learn every day of the strategy (training, then the night), evaluating after each."""
        try:
            with _allow_tf32(self.tf32):
                return self._fit(progress, on_day_end)
        finally:
            for p in self.params.values():  # the fast path turns off gradients of frozen parameters
                p.requires_grad_(True)

    def _fit(self, progress: Callable[[Event], None] | None,
             on_day_end: Callable[["Population", int], None] | None) -> list[MemberResult]:
        days = self.days()
        results = [MemberResult(c) for c in self.configs]
        timings = {"train": 0.0, "prune": 0.0, "retrain": 0.0, "evaluate": 0.0}
        steps_total = sum(d.steps_per_epoch * (d.train_epochs + d.night_epochs) for d in days)
        steps_done = 0
        n_total = {name: o[0].numel() for name, o in self.owner.items()}
        dropout = self.dropout()
        started = time.perf_counter()

        def report(i: int, phase: str, epoch: int, epochs: int) -> None:
            if progress is not None:
                progress(Event(i + 1, len(days), phase, epoch, epochs, steps_done, steps_total))

        def clock(phase: str, since: float) -> float:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            now = time.perf_counter()
            timings[phase] += now - since
            return now

        for i, day in enumerate(days):
            free = ownership.counts(self.owner)
            held = [{name: int(free[name][m]) if self.strategy.only_free else n for name, n in n_total.items()}
                    for m in range(self.size)]
            self.begin_day(day)
            streams, pool = self.data_streams(day)
            masks = self.trainable_masks(day) if self.strategy.prunes else {}
            optimizer = self.make_optimizer(i, masks)

            t0 = time.perf_counter()
            for e in range(day.train_epochs):
                self.run_epoch(day, streams, pool, optimizer, masks, dropout)
                steps_done += day.steps_per_epoch
                report(i, "train", e + 1, day.train_epochs)
            clock("train", t0)

            # The night: member m prunes at the start of each of its rounds, then all retrain together.
            rounds_log: list[list[float]] = [[] for _ in range(self.size)]
            if self.strategy.prunes:
                targets = self.night_targets(day, held)
                prune_at = [sch.prune_epochs() for sch in self.schedules]
                next_round = [0] * self.size
                for e in range(day.night_epochs + 1):
                    tp = time.perf_counter()
                    for m in range(self.size):
                        while next_round[m] < len(prune_at[m]) and prune_at[m][next_round[m]] == e:
                            self.prune_member(m, day, targets[m][next_round[m]], optimizer, masks)
                            rounds_log[m].append(self.member_free_fraction(m))
                            next_round[m] += 1
                    clock("prune", tp)
                    if e < day.night_epochs:
                        tr = time.perf_counter()
                        self.run_epoch(day, streams, pool, optimizer, masks, dropout)
                        steps_done += day.steps_per_epoch
                        clock("retrain", tr)
                        report(i, "retrain", e + 1, day.night_epochs)

            te = time.perf_counter()
            report(i, "evaluate", 0, 1)
            test = self.evaluate(day.evaluate, "test")
            val = self.evaluate(day.evaluate, "val")
            clock("evaluate", te)
            fractions = ownership.free_fraction(self.owner)
            for m, r in enumerate(results):
                r.accuracy_matrix.append(_row(day.evaluate, test[m], self.bench.n_tasks))
                r.val_accuracy_matrix.append(_row(day.evaluate, val[m], self.bench.n_tasks))
                r.free_fraction_after_task.append(float(fractions[m]))
                r.free_fraction_after_round.append(rounds_log[m])
            if on_day_end is not None:
                on_day_end(self, i)

        total = time.perf_counter() - started
        for m, r in enumerate(results):
            r.layer_free_fraction = {name: float((o[m] == ownership.FREE).double().mean())
                                     for name, o in self.owner.items()}
            r.timings = {**timings, "total": total, "population_size": self.size}
        report(len(days) - 1, "done", 1, 1)
        return results

    def member_free_fraction(self, member: int) -> float:
        return float(ownership.free_fraction({n: o[member:member + 1] for n, o in self.owner.items()})[0])

    # -- evaluation ----------------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, tasks: Sequence[int], split: str = "test", chunk: int | None = None) -> Tensor:
        """Accuracy ``(S, len(tasks))`` of every member on each task, through that task's own network.

        Samples go through in chunks of ``chunk`` (default: 2048, fewer for a network whose activations
        are wide, so that a chunk's widest activation stays near 16 MB per member; never dependent on S,
        so a member is evaluated exactly as when alone).
        """
        if chunk is None:
            chunk = max(16, min(2048, 2**22 // self.net.activation_floats))
        indices = getattr(self.bench, split)
        out = torch.full((self.size, len(tasks)), float("nan"), dtype=torch.float64)
        for col, j in enumerate(tasks):
            idx = indices[j]
            if idx.numel() == 0:
                continue
            params = self.params_for_task(j)
            correct = torch.zeros(self.size, dtype=torch.long, device=self.device)
            for start in range(0, idx.numel(), chunk):
                sel = idx[start:start + chunk]
                x = self.bench.x[sel]
                x = x.expand(self.size, *x.shape)
                pred = self.net.logits(params, x, j).argmax(-1)
                correct += (pred == self.bench.y[sel]).sum(1)
            out[:, col] = correct.double().cpu() / idx.numel()
        return out

    def params_for_task(self, task: int) -> Params:
        """The weights task ``task`` (0-based) answers with: its own and earlier tasks' under PackNet."""
        if not self.strategy.freezes:
            return self.params  # freed weights are exactly zero, so no mask is needed
        out = dict(self.params)
        for name, o in self.owner.items():
            out[name] = self.params[name] * ownership.visible(o, task + 1)
        return out


def train_population(configs: Sequence[RunConfig], bench: SplitBenchmark, device: torch.device | str = "cpu",
                     progress: Callable[[Event], None] | None = None, *, speed: str | Sequence[str] = "fast",
                     adam: str | None = None, tf32: bool = False, workers: int | None = None) -> list[MemberResult]:
    """Train every member of ``configs`` on ``bench`` as one population; return each member's results.

    ``speed``, ``adam`` and ``tf32`` choose how it is computed (see :class:`Population`), not what: they
    are not part of a run's identity. ``workers``: on CPU, how many groups of members train side by side,
    one core each (default, with the ``member_workers`` part: one group per torch thread; see
    :mod:`sleepcl.engine.workers`). Results come back in the order of ``configs`` either way."""
    from .workers import default_workers, fit_side_by_side, split_members  # workers.py builds on this module

    device = torch.device(device)
    if workers is None:
        workers = default_workers(len(configs), device) if "member_workers" in speed_parts(speed) else 1
    if workers < 1:
        raise ValueError(f"workers must be >= 1 (groups of members side by side), got {workers}")
    if workers == 1:
        return Population(configs, bench, device, speed=speed, adam=adam, tf32=tf32).fit(progress)
    groups = [Population(group, bench, device, speed=speed, adam=adam, tf32=tf32)
              for group in split_members(configs, workers)]
    return fit_side_by_side(groups, progress)


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


class MemberAdam:
    """Adam for stacked parameters that updates each member exactly as if it were alone (the fast path's).

    Same update and hyperparameters as ``torch.optim.Adam`` (betas 0.9/0.999, eps 1e-8, no weight decay),
    computed by its fused kernel in one call per step: one pass over weights, gradients and moments instead
    of ~10. On CPU the kernel rounds the vector tail of a tensor differently from its body, so a member's
    slice inside a stacked tensor could round according to its position. A stacked tensor whose per-member
    slices are a multiple of :data:`STACK_MULTIPLE` floats has no tail inside it (the kernel's work units
    are cache-line aligned), and goes to the kernel whole; any other goes member by member, each slice its
    own tensor (both checked once per process: :func:`fused_adam_available`, :func:`fused_adam_stacks_exact`).
    Trainable masks (one per prunable weight, updated in place by pruning) are applied here, per member and
    layer:

    * ``free``: the mask freezes nothing (the first day's training, rehearsal training): no mask pass
      (with ``skip_full``);
    * ``masked``: the gradient is multiplied by the mask, and the moments of freed weights are cleared at
      every prune, so that a weight the member may not change gets an update of exactly 0;
    * ``compact`` (below ``compact_below`` of the layer trainable: a night after pruning keeps a few per
      cent): moments are kept for the trainable weights only; each step gathers their gradients and
      values, updates them and scatters the values back. Nothing else of the layer is read or written.
    """

    # Devices where a member's rounding must not depend on its place in the stack (elsewhere: whole stacked
    # tensors always; members are not claimed bit-identical to their solo runs off CPU anyway).
    PER_MEMBER_DEVICES = frozenset({"cpu"})

    def __init__(self, params: Params, names: Sequence[str], masks: dict[str, Tensor], lr: float, *,
                 skip_full: bool = True, compact_below: float = 0.0):
        self.params = {n: params[n] for n in names}
        self.masks = masks
        self.lr = lr
        self.skip_full, self.compact_below = skip_full, compact_below
        first = next(iter(self.params.values()))
        self.size = first.shape[0]
        self.per_member = first.device.type in self.PER_MEMBER_DEVICES
        self.stack_exact = self.per_member and fused_adam_stacks_exact(first.device)
        self.step_count = torch.zeros((), dtype=torch.float32, device=first.device)
        self.exp_avg = {n: torch.zeros_like(p) for n, p in self.params.items()}
        self.exp_avg_sq = {n: torch.zeros_like(p) for n, p in self.params.items()}
        self.mode: dict[str, list[str]] = {}
        self.compact: dict[str, dict[int, tuple[Tensor, Tensor, Tensor]]] = {}
        self._packed: dict[str, tuple[Tensor, Tensor, Tensor, list[int]] | None] = {}
        with torch.no_grad():
            for name in masks:
                if name in self.params:
                    self.mode[name] = ["masked"] * self.size
                    self.compact[name] = {}
                    for m in range(self.size):
                        self._reclassify(name, m)

    @property
    def state(self) -> dict[Tensor, dict[str, Tensor]]:
        """Dense moments by parameter, like ``torch.optim.Adam.state`` (compact members' rows unused)."""
        return {p: {"exp_avg": self.exp_avg[n], "exp_avg_sq": self.exp_avg_sq[n]} for n, p in self.params.items()}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params.values():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def member_pruned(self, member: int) -> None:
        """Member ``member``'s masks just lost weights: forget their moments, perhaps go compact."""
        for name in self.mode:
            self._reclassify(name, member)

    def _reclassify(self, name: str, member: int) -> None:
        mask = self.masks[name][member]
        old = self.mode[name][member]
        n_train, total = int(mask.sum()), mask.numel()  # a host sync, at the start of a day and at prunes only
        if old == "compact":  # the trainable set only shrinks within a day: keep the moments of what is left
            idx_old, m_old, v_old = self.compact[name][member]
            idx = mask.reshape(-1).nonzero().squeeze(1)
            pos = torch.searchsorted(idx_old, idx)
            self.compact[name][member] = (idx, m_old[pos], v_old[pos])
            self._packed[name] = None
            return
        if n_train < self.compact_below * total:
            idx = mask.reshape(-1).nonzero().squeeze(1)
            self.compact[name][member] = (idx, self.exp_avg[name][member].reshape(-1)[idx],
                                          self.exp_avg_sq[name][member].reshape(-1)[idx])
            self.mode[name][member] = "compact"
            self._packed[name] = None
            return
        self.exp_avg[name][member].mul_(mask)
        self.exp_avg_sq[name][member].mul_(mask)
        self.mode[name][member] = "free" if n_train == total and self.skip_full else "masked"

    def _pack(self, name: str) -> tuple[Tensor, Tensor, Tensor, list[int]]:
        """The compact members' trainable weights of one layer as one flat index and moment buffers."""
        packed = self._packed.get(name)
        if packed is None:
            n = self.params[name][0].numel()
            members = sorted(self.compact[name])
            parts = [self.compact[name][m] for m in members]
            sizes = [int(c[0].numel()) for c in parts]
            index = torch.cat([c[0] + m * n for m, c in zip(members, parts)])
            m_all, v_all = torch.cat([c[1] for c in parts]), torch.cat([c[2] for c in parts])
            for m, c, mv, vv in zip(members, parts, m_all.split(sizes), v_all.split(sizes)):
                self.compact[name][m] = (c[0], mv, vv)
            packed = self._packed[name] = (index, m_all, v_all, sizes)
        return packed

    @torch.no_grad()
    def step(self) -> None:
        self.step_count += 1
        ps: list[Tensor] = []
        gs: list[Tensor] = []
        ms: list[Tensor] = []
        vs: list[Tensor] = []
        scatter: list[tuple[Tensor, Tensor, Tensor]] = []

        def add(p: Tensor, g: Tensor, m: Tensor, v: Tensor, sizes: list[int] | None = None) -> None:
            whole = sizes is None and self.stack_exact and p[0].numel() % STACK_MULTIPLE == 0
            if whole or not self.per_member:
                ps.append(p)
                gs.append(g)
                ms.append(m)
                vs.append(v)
                return
            # Each member its own tensor to the kernel: rounding independent of its position in the stack.
            for out, t in ((ps, p), (gs, g), (ms, m), (vs, v)):
                out.extend(t.unbind(0) if sizes is None else [c for c in t.split(sizes) if c.numel()])

        for name, p in self.params.items():
            g = p.grad
            if g is None:
                continue
            modes = self.mode.get(name)
            if modes is None or all(mode == "free" for mode in modes):
                add(p, g, self.exp_avg[name], self.exp_avg_sq[name])
                continue
            mask = self.masks[name]
            if all(mode == "masked" for mode in modes):
                g.mul_(mask)
                add(p, g, self.exp_avg[name], self.exp_avg_sq[name])
                continue
            for m, mode in enumerate(modes):  # a mixed population: member by member
                if mode == "compact":
                    continue
                if mode == "masked":
                    g[m].mul_(mask[m])
                add(p[m:m + 1], g[m:m + 1], self.exp_avg[name][m:m + 1], self.exp_avg_sq[name][m:m + 1])
            if "compact" in modes:
                index, m_all, v_all, sizes = self._pack(name)
                if index.numel():
                    values = p.view(-1).index_select(0, index)
                    add(values, g.reshape(-1).index_select(0, index), m_all, v_all, sizes)
                    scatter.append((p, index, values))
        if ps:
            torch._fused_adam_(ps, gs, ms, vs, [], [self.step_count] * len(ps), lr=self.lr, beta1=0.9,
                               beta2=0.999, weight_decay=0.0, eps=1e-8, amsgrad=False, maximize=False)
        for p, index, values in scatter:
            p.view(-1).index_copy_(0, index, values)


_FUSED_PROBE: dict[str, tuple[bool, bool]] = {}


def fused_adam_available(device: torch.device | str) -> bool:
    """Whether :class:`MemberAdam` can run on ``device``: this torch has the fused Adam kernel there, and on
    CPU a member updated as its own tensor inside a list gives exactly what it gives alone (checked once per
    process on a few sizes, tails included, against rows of a stack)."""
    return _fused_probe(device)[0]


def fused_adam_stacks_exact(device: torch.device | str) -> bool:
    """Whether, on ``device``, a row of a stack whose rows are multiples of :data:`STACK_MULTIPLE` floats is
    updated exactly as alone when the whole stack goes to the fused kernel (checked once per process, with
    stacks large enough for the kernel to split them between threads). Off CPU, where members are not
    claimed bit-identical to their solo runs, true wherever the kernel exists."""
    return _fused_probe(device)[1]


def _fused_probe(device: torch.device | str) -> tuple[bool, bool]:
    device = torch.device(device)
    if device.type not in _FUSED_PROBE:
        _FUSED_PROBE[device.type] = _probe_fused_adam(device)
    return _FUSED_PROBE[device.type]


def _probe_fused_adam(device: torch.device) -> tuple[bool, bool]:
    """(members exact as their own tensors, members exact as rows of a whole stack)."""
    g = torch.Generator().manual_seed(0)
    stacks_exact = True
    try:
        for n in (10, 16, 100, 1040 + 7, 65536 + 48, 200704 + 16):
            state = [torch.randn(3, n, generator=g), torch.randn(3, n, generator=g),
                     torch.randn(3, n, generator=g) * 1e-2, torch.rand(3, n, generator=g) * 1e-3]
            state = [t.to(device) for t in state]
            rows = [[t[s].clone() for t in state] for s in range(3)]
            whole = [t.clone() for t in state]
            _fused_adam_step(*(list(t.unbind(0)) for t in state))
            if device.type != "cpu":
                continue  # off CPU: only that the kernel exists
            if n % STACK_MULTIPLE == 0:
                _fused_adam_step(*([t] for t in whole))
            for s, (p, grad, m, v) in enumerate(rows):
                _fused_adam_step([p], [grad], [m], [v])
                if not _same_row((p, m, v), state, s):
                    return False, False
                if n % STACK_MULTIPLE == 0 and not _same_row((p, m, v), whole, s):
                    stacks_exact = False
    except (RuntimeError, NotImplementedError):  # a torch without the fused kernel here: foreach it is
        return False, False
    return True, stacks_exact


def _same_row(alone: tuple[Tensor, Tensor, Tensor], state: list[Tensor], row: int) -> bool:
    p, m, v = alone
    return torch.equal(p, state[0][row]) and torch.equal(m, state[2][row]) and torch.equal(v, state[3][row])


def _fused_adam_step(p: list[Tensor], grad: list[Tensor], m: list[Tensor], v: list[Tensor]) -> None:
    step = torch.tensor(3.0, device=p[0].device)
    torch._fused_adam_(p, grad, m, v, [], [step] * len(p), lr=1e-3, beta1=0.9, beta2=0.999, weight_decay=0.0,
                       eps=1e-8, amsgrad=False, maximize=False)


def _row(tasks: Sequence[int], values: Tensor, n_tasks: int) -> list[float | None]:
    row: list[float | None] = [None] * n_tasks
    for j, v in zip(tasks, values.tolist()):
        row[j] = None if math.isnan(v) else v
    return row
