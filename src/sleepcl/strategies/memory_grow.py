"""Memory with a grow-only mask: the other reading of the paper's "we expand all weight masks".

Full rehearsal and no freezing, as :mod:`.memory`, but weights in use stay in use: each day takes the free
weights in addition to those already in use and trains all of them, and its night prunes only among the weights
it took, so each task adds capacity (``1 - r**t`` used after task t, the same schedule as PackNet's).
"""

from __future__ import annotations

from typing import Mapping

from torch import Tensor

from ..engine import ownership
from .base import Day, Strategy


class MemoryGrow(Strategy):
    name = "memory-grow"
    summary = "full rehearsal, no freezing; weights in use stay in use and each task adds the capacity it keeps"
    rehearses = True

    def take(self, owner: Mapping[str, Tensor], day: Day) -> None:
        ownership.assign(owner, day.owner, only_free=True)

    def trainable(self, owner: Mapping[str, Tensor], day: Day) -> dict[str, Tensor]:
        return {name: o != ownership.FREE for name, o in owner.items()}
