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

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from . import ownership
from .config import RunConfig, check_population
from .networks import Dropout, Network, Params, make_network
from .schedule import SleepSchedule, night_targets, sleep_schedule
from .split import SplitBenchmark
from .strategies import Day, Strategy, get_strategy

__all__ = ["Event", "MemberResult", "Population", "train_population"]


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
    """What one member measured; :mod:`sleepcl.records` turns it into the JSON record."""

    config: RunConfig
    accuracy_matrix: list[list[float | None]] = field(default_factory=list)
    val_accuracy_matrix: list[list[float | None]] = field(default_factory=list)
    free_fraction_after_task: list[float] = field(default_factory=list)
    free_fraction_after_round: list[list[float]] = field(default_factory=list)
    layer_free_fraction: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


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

    def __init__(self, configs: Sequence[RunConfig], bench: SplitBenchmark, device: torch.device | str = "cpu"):
        self.configs = check_population(configs)
        first = self.configs[0]
        if bench.n_tasks != first.n_tasks:
            raise ValueError(f"the benchmark has {bench.n_tasks} tasks but the config asks for {first.n_tasks}")
        self.device = torch.device(device)
        self.bench = bench.to(self.device)
        self.strategy: Strategy = get_strategy(first.strategy)
        self.net: Network = make_network(first.network, bench.input_shape, bench.n_tasks, first.widths)
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
        return {name: (o == day.owner).to(self.params[name].dtype) for name, o in self.owner.items()}

    def make_optimizer(self, day_index: int) -> torch.optim.Adam:
        """A fresh Adam each day (as PackNet does), so no moment carries over to frozen weights."""
        names = [n for n in self.params if not self._frozen_parameter(n, day_index)]
        # foreach: ~30x faster than the per-tensor loop on CPU. Not fused: the fused CPU kernel rounds the
        # SIMD tail of a tensor differently, so a member's update would depend on its position in the stack.
        return torch.optim.Adam([self.params[n] for n in names], lr=self.configs[0].lr, foreach=True)

    def _frozen_parameter(self, name: str, day_index: int) -> bool:
        is_bias = name.endswith(".bias") and not name.startswith("head")
        return is_bias and day_index > 0 and not self.strategy.trains_bias_after_first

    def run_epoch(self, day: Day, streams: list[IndexStream], pool: Tensor, optimizer: torch.optim.Adam,
                  masks: dict[str, Tensor], dropout: Dropout | None) -> None:
        """One epoch of ``day.steps_per_epoch`` steps; each member reads its own shuffled batches."""
        bs = self.configs[0].batch_size
        steps = day.steps_per_epoch
        local = torch.stack([s.take(steps * bs) for s in streams])  # (S, steps*bs) positions in the pool
        index = pool[local].to(self.device, non_blocking=True)
        x_all, y_all, task_all = self.bench.x, self.bench.y, self.bench.task
        for k in range(steps):
            batch = index[:, k * bs:(k + 1) * bs]
            x, y = x_all[batch], y_all[batch]
            task = day.head_task if day.head_task is not None else task_all[batch]
            logits = self.net.logits(self.params, x, task, dropout)
            # Sum of per-member mean losses: member s's gradient is exactly its own loss's gradient.
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum") / bs
            optimizer.zero_grad(set_to_none=False)
            loss.backward()
            for name, mask in masks.items():
                self.params[name].grad.mul_(mask)
            optimizer.step()

    def prune_member(self, member: int, day: Day, keep: dict[str, int] | int, optimizer: torch.optim.Adam,
                     masks: dict[str, Tensor]) -> None:
        """Free member ``member``'s weakest weights of the day down to ``keep`` and forget their moments."""
        scope = self.configs[member].prune_scope
        ownership.prune(self.params, self.owner, day.owner, member, keep, scope)  # type: ignore[arg-type]
        for name, o in self.owner.items():
            masks[name][member] = (o[member] == day.owner).to(masks[name].dtype)
            state = optimizer.state.get(self.params[name])
            if state:
                state["exp_avg"][member].mul_(masks[name][member])
                state["exp_avg_sq"][member].mul_(masks[name][member])

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
        days = self.days()
        results = [MemberResult(c) for c in self.configs]
        timings = {"train": 0.0, "prune": 0.0, "retrain": 0.0, "evaluate": 0.0}
        steps_total = sum(d.steps_per_epoch * (d.train_epochs + d.night_epochs) for d in days)
        steps_done = 0
        n_total = {name: o[0].numel() for name, o in self.owner.items()}
        rate = getattr(self.net, "dropout_rate", 0.0)
        dropout = Dropout(rate, self.dropout_generators) if rate > 0 else None
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
            pool = torch.cat([self.bench.train[t].cpu() for t in day.pool])
            streams = [IndexStream(pool.numel(), g) for g in self.order_generators]
            optimizer = self.make_optimizer(i)
            masks = self.trainable_masks(day) if self.strategy.prunes else {}

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
    def evaluate(self, tasks: Sequence[int], split: str = "test", chunk: int = 2048) -> Tensor:
        """Accuracy ``(S, len(tasks))`` of every member on each task, through that task's own network."""
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
                     progress: Callable[[Event], None] | None = None) -> list[MemberResult]:
    """Train every member of ``configs`` on ``bench`` as one population; return each member's results."""
    return Population(configs, bench, device).fit(progress)


def _row(tasks: Sequence[int], values: Tensor, n_tasks: int) -> list[float | None]:
    row: list[float | None] = [None] * n_tasks
    for j, v in zip(tasks, values.tolist()):
        row[j] = None if math.isnan(v) else v
    return row
