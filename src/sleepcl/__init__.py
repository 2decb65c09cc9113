"""sleepcl: efficient continual learning with sleep-cycle pruning.

The names most users need, in one place::

    from sleepcl import RunConfig, load_split_benchmark, train_population, run_configs

They are imported on first use (PEP 562), so ``import sleepcl`` and the command line do not pay for
scipy and pandas until something needs them: start-up time counts against a nightly budget.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "Population": "engine.population", "train_population": "engine.population",
    "RunConfig": "config",
    "RunStore": "runs.store",
    "SplitBenchmark": "data.split", "load_split_benchmark": "data.split",
    "compression_ratio": "study.matching",
    "prune_fraction": "schedule", "sleep_schedule": "schedule",
    "run_configs": "runs.runner",
}
__all__ = sorted(_WHERE)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'sleepcl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
