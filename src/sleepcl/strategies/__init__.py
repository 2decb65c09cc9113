"""The ways of learning a task sequence, one file each, behind one protocol (:mod:`.base`).

========== ======================= =========================== ===================== =================
strategy   data of a day           weights trained             old tasks use          free after day t
========== ======================= =========================== ===================== =================
packnet    task t only             free ones (others frozen)   their own weights     r**t  (Alg. 2)
memory     tasks 1..t (rehearsal)  all, re-selected each day   all used weights      r**t
memory-grow tasks 1..t (rehearsal) all in use + the free ones  all used weights      r**t
multinet   all tasks, one day      all                         all used weights      p
finetune   task t only             all, no pruning             all weights           0
ewc        task t only             all, no pruning; penalty    all weights           0
========== ======================= =========================== ===================== =================

A new strategy: one file with a :class:`~.base.Strategy` subclass, and :func:`register` (here, or from the
user's own code before the run).
"""

from __future__ import annotations

from typing import Any, Mapping

from .base import Batch, Day, GradientSource, Strategy
from .ewc import EWC
from .finetune import Finetune
from .memory import Memory
from .memory_grow import MemoryGrow
from .multinet import Multinet
from .packnet import PackNet

__all__ = ["STRATEGIES", "Batch", "Day", "GradientSource", "Strategy", "get_strategy", "register"]

STRATEGIES: dict[str, type[Strategy]] = {}


def register(strategy: type[Strategy]) -> type[Strategy]:
    """Make ``strategy`` available by its ``name`` (to RunConfig, the command line and the study)."""
    if not (isinstance(strategy, type) and issubclass(strategy, Strategy)):
        raise TypeError(f"register takes a Strategy subclass, got {strategy!r}")
    STRATEGIES[strategy.name] = strategy
    return strategy


for _s in (PackNet, Memory, MemoryGrow, Multinet, Finetune, EWC):
    register(_s)


def get_strategy(name: str, options: Mapping[str, Any] | None = None) -> Strategy:
    """A fresh instance of the strategy called ``name`` with ``options`` (its own parameters)."""
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}") from None
    return cls(**dict(options or {}))
