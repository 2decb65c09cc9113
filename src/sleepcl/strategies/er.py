"""ER, experience replay with a bounded buffer (Chaudhry et al., "On Tiny Episodic Memories in Continual
Learning", 2019): the realistic counterpart of Memory, which rehearses every earlier sample.

The buffer holds at most ``buffer`` samples in all (inputs as the network reads them, labels and tasks),
whatever the number of tasks. Each optimizer step trains on the day's batch together with a replay batch of
``replay_batch`` samples (default: as many as the day's batch, the paper's choice) drawn uniformly from the
buffer; on the first task the buffer is empty and steps train on the day's batch alone. When a day ends, its
training samples pass through the buffer by reservoir sampling (Vitter, "Random Sampling with a Reservoir",
1985, Algorithm R): after ``n`` samples of all tasks so far each of them is in the buffer with probability
``buffer / n``, so every task keeps a share in proportion to its size. Each member draws from its own generator.

The buffer is reported in the run's record (``strategy_memory``: samples stored and bytes). No night by default
(``--night rounds`` prunes it as Memory is).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from .base import Batch, Day, GradientSource, Strategy


class ER(Strategy):
    name = "er"
    summary = "experience replay: a bounded reservoir of earlier tasks' samples replayed beside each batch"
    prunes = False
    options = {"buffer": 200, "replay_batch": 0}

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.capacity = int(self.settings["buffer"])
        self.generators: list[torch.Generator] = []
        self.x: Tensor | None = None   # (S, capacity, *input)
        self.y: Tensor | None = None   # (S, capacity)
        self.task: Tensor | None = None
        self.seen = 0                  # samples offered to the buffer so far (the same for every member)

    def check(self, settings: Mapping[str, Any]) -> None:
        for key, low in (("buffer", 1), ("replay_batch", 0)):
            v = settings[key]
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"er option {key} must be a whole number >= {low}, got {v!r}")

    def start(self, seeds: Sequence[int]) -> None:
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]

    @property
    def stored(self) -> int:
        return min(self.seen, self.capacity)

    def training_batch(self, batch: Batch) -> Batch:
        x, y, task = batch
        if self.stored == 0:
            return batch
        s, b = y.shape
        k = self.settings["replay_batch"] or b
        pick = torch.stack([torch.randint(self.stored, (k,), generator=g) for g in self._member_generators(s)])
        pick = pick.to(y.device)
        rx = self.x.gather(1, pick.view(s, k, *[1] * (x.dim() - 2)).expand(s, k, *x.shape[2:]))  # type: ignore[union-attr]
        ry, rt = self.y.gather(1, pick), self.task.gather(1, pick)  # type: ignore[union-attr]
        tasks = torch.full_like(y, task) if isinstance(task, int) else task
        return torch.cat([x, rx], 1), torch.cat([y, ry], 1), torch.cat([tasks, rt], 1)

    @torch.no_grad()
    def end_of_day(self, day: Day, params: Mapping[str, Tensor], gradients: GradientSource) -> None:
        for x, y, task in gradients.samples():
            self.offer(x, y, torch.full_like(y, task) if isinstance(task, int) else task)

    def offer(self, x: Tensor, y: Tensor, task: Tensor) -> None:
        """Pass a batch of samples (``(S, B, ...)``, the same samples for every member or not) through each
        member's reservoir, in order."""
        s, b = y.shape
        if self.x is None:
            self.x = x.new_zeros(s, self.capacity, *x.shape[2:])
            self.y = y.new_zeros(s, self.capacity)
            self.task = y.new_zeros(s, self.capacity)
        for m, g in enumerate(self._member_generators(s)):
            slots, sources = reservoir_slots(self.seen, b, self.capacity, g)
            if slots:
                slot, source = torch.tensor(slots, device=y.device), torch.tensor(sources, device=y.device)
                self.x[m, slot] = x[m, source]
                self.y[m, slot] = y[m, source]  # type: ignore[index]
                self.task[m, slot] = task[m, source]  # type: ignore[index]
        self.seen += b

    def _member_generators(self, size: int) -> list[torch.Generator]:
        if len(self.generators) != size:
            raise RuntimeError(f"er: {size} members but {len(self.generators)} generators: call start(seeds) first")
        return self.generators

    def memory(self) -> dict[str, int]:
        if self.x is None:
            return {"stored_samples": 0, "buffer": self.capacity, "bytes": 0}
        per_sample = math.prod(self.x.shape[2:]) * self.x.element_size() + 2 * self.y.element_size()  # type: ignore[union-attr]
        return {"stored_samples": self.stored, "buffer": self.capacity, "bytes": self.capacity * per_sample}

    def planned_bytes(self, sample_shape: Sequence[int]) -> int:
        """The full buffer: float32 inputs, int64 labels and tasks (:meth:`memory`'s ``bytes`` once it is made)."""
        return self.capacity * (math.prod(sample_shape) * 4 + 2 * 8)

    def state(self) -> dict[str, Tensor]:
        if self.x is None:
            return {}
        s = self.x.shape[0]
        return {"x": self.x, "y": self.y, "task": self.task,  # type: ignore[dict-item]
                "seen": torch.full((s,), self.seen, dtype=torch.int64)}

    def load_state(self, state: Mapping[str, Tensor]) -> None:
        if not state:
            return
        self.x, self.y, self.task = state["x"], state["y"], state["task"]
        self.seen = int(state["seen"][0])


def reservoir_slots(seen: int, count: int, capacity: int, generator: torch.Generator) -> tuple[list[int], list[int]]:
    """Algorithm R over ``count`` new samples after ``seen``: which buffer slot each kept sample goes to, as
    ``(slots, positions in the batch)``, one entry per slot (a later sample replaces an earlier one in its slot)."""
    n = seen + torch.arange(count, dtype=torch.float64)  # samples before each new one
    draw = (torch.rand(count, generator=generator, dtype=torch.float64) * (n + 1)).floor().long().tolist()
    chosen: dict[int, int] = {}
    for i, j in enumerate(draw):
        k = seen + i
        if k < capacity:
            chosen[k] = i
        elif j < capacity:
            chosen[j] = i
    return list(chosen), list(chosen.values())
