"""Where each member's randomness comes from: seeds for its initial weights, data order and dropout, and the
endless shuffled stream of sample positions it trains on; and one task's samples as an endless stream of batches
(what a night of ``sleepcl learn`` trains on)."""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

__all__ = ["IndexStream", "SampleStream", "member_seeds", "strategy_seed"]


def member_seeds(seed: int) -> tuple[int, int, int]:
    """Independent seeds for a member's initial weights, data order and dropout, from its one seed."""
    init, order, dropout = np.random.SeedSequence(seed).generate_state(3, dtype=np.uint64)
    return int(init), int(order), int(dropout)


def strategy_seed(seed: int) -> int:
    """A seed for what the member's strategy draws (ER's reservoir), independent of :func:`member_seeds`'."""
    return int(np.random.SeedSequence([seed, 1]).generate_state(1, dtype=np.uint64)[0])


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


class SampleStream:
    """One task's training samples (tensors on the device) as an endless shuffled stream of batches, the same
    batches for every member: indices are drawn an epoch at a time from ``generator``'s
    :class:`IndexStream`, and a stream that ends part way through an epoch (a phase of a night cut by its
    budget) carries on from there in the next phase."""

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, generator: torch.Generator):
        self.x, self.y, self.batch_size = x, y, batch_size
        self.stream = IndexStream(len(x), generator)
        self.buffer: Tensor | None = None
        self.used = 0

    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(len(self.x) / self.batch_size))

    def batch(self) -> tuple[Tensor, Tensor]:
        """The next batch of the stream: inputs and labels."""
        if self.buffer is None or self.used >= len(self.buffer):
            self.buffer = self.stream.take(self.steps_per_epoch * self.batch_size).to(self.x.device)
            self.used = 0
        idx = self.buffer[self.used:self.used + self.batch_size]
        self.used += self.batch_size
        return self.x[idx], self.y[idx]

    def batches(self, size: int, task: int) -> Iterator[tuple[Tensor, Tensor, int]]:
        """The stream as batches of ``size`` members (the same samples for each), every sample of ``task``; a
        batch is drawn only when it is asked for."""
        while True:  # the generator holds no batch between steps: each is freed once its step is done
            yield self._for_members(size, task)

    def _for_members(self, size: int, task: int) -> tuple[Tensor, Tensor, int]:
        x, y = self.batch()
        return x.expand(size, *x.shape), y.expand(size, *y.shape), task

    def passes(self, size: int) -> list[tuple[Tensor, Tensor, None]]:
        """The training samples once, in one fixed shuffled order (every batch mixing the classes), as batches for
        ``size`` members (for norm-layer statistics); the stream is left as it is."""
        order = torch.randperm(len(self.x), generator=torch.Generator().manual_seed(0)).to(self.x.device)
        return [(self.x[i].expand(size, *self.x[i].shape), self.y[i].expand(size, len(i)), None)
                for i in order.split(self.batch_size)]
