"""Memory, the paper's full-rehearsal baseline: every day trains on all data seen so far, nothing is frozen,
and all weights are re-selected each day ("we expand all weight masks"): the day takes every weight, and its
night prunes back to the capacity schedule's used count, ``1 - r**t``."""

from __future__ import annotations

from .base import Strategy


class Memory(Strategy):
    name = "memory"
    summary = "full rehearsal, no freezing; every day re-selects which weights are used"
    rehearses = True
