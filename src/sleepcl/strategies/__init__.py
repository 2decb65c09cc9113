"""The ways of learning a task sequence, one file each, behind one protocol (:mod:`.base`).

=========== ======================= =========================== ===================== =================
strategy    data of a day           weights trained             old tasks use          free after day t
=========== ======================= =========================== ===================== =================
packnet     task t only             free ones (others frozen)   their own weights     r**t  (Alg. 2)
memory      tasks 1..t (rehearsal)  all, re-selected each day   all used weights      r**t
memory-grow tasks 1..t (rehearsal)  all in use + the free ones  all used weights      r**t
multinet    all tasks, one day      all                         all used weights      p
finetune    task t only             all; no night by default    all weights           0
ewc         task t only             all; penalty (Fisher)       all weights           0
si          task t only             all; penalty (path integral) all weights          0
lwf         task t only             all; distillation           all weights           0
er          task t + a bounded      all                         all weights           0
            reservoir of tasks < t
=========== ======================= =========================== ===================== =================

The last five take no night by default; ``night="rounds"`` (``--night rounds``) gives any of them one, pruned
to the same capacity schedule as Memory (``r**t`` free after day t) in the same number of steps.

A new strategy: one file with a :class:`~.base.Strategy` subclass, and :func:`register` (here, or from the
user's own code before the run), or named as ``path/to/file.py:Class`` / ``package.module:Class``
(:mod:`.user`).
"""

from __future__ import annotations

from typing import Any, Mapping

from .base import NIGHTS, Batch, Day, GradientSource, Step, Strategy
from .er import ER
from .ewc import EWC
from .finetune import Finetune
from .lwf import LwF
from .memory import Memory
from .memory_grow import MemoryGrow
from .multinet import Multinet
from .packnet import PackNet
from .si import SI
from .user import is_strategy_spec, load_strategy, strategy_digest

__all__ = ["NIGHTS", "STRATEGIES", "Batch", "Day", "GradientSource", "Step", "Strategy", "get_strategy",
           "is_strategy_spec", "load_strategy", "register", "strategy_class", "strategy_digest"]

STRATEGIES: dict[str, type[Strategy]] = {}


def register(strategy: type[Strategy]) -> type[Strategy]:
    """Make ``strategy`` available by its ``name`` (to RunConfig, the command line and the study)."""
    if not (isinstance(strategy, type) and issubclass(strategy, Strategy)):
        raise TypeError(f"register takes a Strategy subclass, got {strategy!r}")
    STRATEGIES[strategy.name] = strategy
    return strategy


for _s in (PackNet, Memory, MemoryGrow, Multinet, Finetune, EWC, SI, LwF, ER):
    register(_s)


def strategy_class(name: str) -> type[Strategy]:
    """The class ``name`` stands for: a registered strategy, or a user's ``path/file.py:Class`` /
    ``package.module:Class`` (:func:`load_strategy`)."""
    if name in STRATEGIES:
        return STRATEGIES[name]
    if is_strategy_spec(name):
        return load_strategy(name)
    raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)} or give your own class as "
                     "path/to/file.py:Class or package.module:Class")


def get_strategy(name: str, options: Mapping[str, Any] | None = None, night: str | None = None) -> Strategy:
    """A fresh instance of the strategy ``name`` (see :func:`strategy_class`) with ``options`` (its own
    parameters) and ``night`` (``"rounds"``, ``"none"``, or None for the strategy's default)."""
    strategy = strategy_class(name)(**dict(options or {}))
    strategy.set_night(night)
    return strategy
