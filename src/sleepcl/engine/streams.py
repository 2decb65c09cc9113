"""Where each member's randomness comes from: seeds for its initial weights, data order and dropout, and the
endless shuffled stream of sample positions it trains on."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["IndexStream", "member_seeds", "strategy_seed"]


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
