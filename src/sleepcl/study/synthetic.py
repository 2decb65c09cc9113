"""Synthetic runs with a known answer, for testing the study's analysis and report without training.

:class:`SyntheticWorld` defines accuracy curves in ``u = log(1 - p)``:

* Memory at ``p`` has accuracy ``curve(u)``; Multinet behaves like Memory with ``multinet_factor`` times
  more kept weights; PackNet like Memory with ``packnet_compression(p)`` times fewer. So matching
  PackNet at ``p`` gives compression ``C(p)`` against Memory and ``C(p) * multinet_factor`` against
  Multinet, exactly;
* PackNet with ``N`` rounds loses ``budget_penalty(p, N)`` on a fixed budget and gains
  ``nobudget_gain(p, N)`` when each round has its own ``R`` epochs; each schedule adds its own offset.

:meth:`SyntheticWorld.runner` is a drop-in replacement for :func:`sleepcl.runs.runner.run_configs` that makes
records (same keys as :func:`sleepcl.runs.records.make_record`) and writes them to the store.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..config import RunConfig

__all__ = ["SyntheticWorld", "synthetic_record"]

SYNTHETIC_ENV = {"python": "3.x", "platform": "synthetic-platform", "machine": "synthetic", "torch": "none",
                 "device": "none", "threads": 0, "sleepcl": "test", "numpy": np.__version__}


def _curve(u: float) -> float:
    """Logistic in u = log(1 - p): ~0.99 with many weights kept, 0.5 with none; centre at 1 - p = 0.01."""
    return 0.5 + 0.49 / (1.0 + math.exp(-(u - math.log(0.01)) / 0.7))


@dataclass
class SyntheticWorld:
    packnet_compression: Callable[[float], float] = lambda p: 2.0
    multinet_factor: float = 1.5
    budget_penalty: Callable[[float, int], float] = lambda p, n: 0.0
    nobudget_gain: Callable[[float, int], float] = lambda p, n: 0.0
    schedule_offset: dict[str, float] = field(default_factory=dict)
    noise: float = 0.0
    budget: int | None = None        # the fixed budget B: PackNet runs with another B get nobudget_gain
    calls: list[list[RunConfig]] = field(default_factory=list)

    def accuracy(self, c: RunConfig) -> float:
        u = math.log1p(-c.final_free)
        if c.strategy == "packnet":
            u -= math.log(self.packnet_compression(c.final_free))
        elif c.strategy == "multinet":
            u += math.log(self.multinet_factor)
        acc = _curve(u)
        if c.strategy == "packnet":
            if self.budget is not None and c.retrain_epochs != self.budget:
                acc += self.nobudget_gain(c.final_free, c.rounds)
            else:
                acc -= self.budget_penalty(c.final_free, c.rounds)
            if c.rounds > 1:
                acc += self.schedule_offset.get(c.schedule, 0.0)
        if self.noise:
            digest = hashlib.sha256(c.hash().encode()).digest()
            acc += self.noise * float(np.random.default_rng(int.from_bytes(digest[:8], "little")).standard_normal())
        return float(min(1.0, max(0.0, acc)))

    def runner(self, configs: Sequence[RunConfig], *, store=None, force: bool = False, **_: Any) -> list[dict[str, Any]]:
        """Like :func:`sleepcl.runs.runner.run_configs`: reuse stored records, "train" (make) the rest, store them."""
        resolved = [c.resolved() for c in configs]
        found = {}
        if store is not None and not force:
            for c in resolved:
                r = store.get(c.hash())
                if r is not None:
                    found[c.hash()] = r
        todo = [c for c in resolved if c.hash() not in found]
        if todo:
            self.calls.append(todo)
            records = [synthetic_record(c, self.accuracy(c), population_size=len(todo)) for c in todo]
            if store is not None:
                store.put_many(records)
            found.update((r["config_hash"], r) for r in records)
        return [found[c.hash()] for c in resolved]

    @property
    def trained(self) -> list[RunConfig]:
        return [c for call in self.calls for c in call]


def synthetic_record(c: RunConfig, accuracy: float, *, population_size: int = 1) -> dict[str, Any]:
    """A record of the shape :func:`sleepcl.runs.records.make_record` writes, with every task at ``accuracy``
    give or take a zero-mean spread (so the average is exactly ``accuracy``)."""
    c = c.resolved()
    n = c.n_tasks
    spread = np.linspace(-0.002, 0.002, n) if n > 1 else np.zeros(1)
    final = [float(min(1.0, accuracy + d)) for d in spread]
    final[-1] = accuracy * n - sum(final[:-1])  # exact mean
    rows = [[final[j] if j <= i else None for j in range(n)] for i in range(n)]
    return {
        "config_hash": c.hash(), "config": c.to_dict(), "environment": dict(SYNTHETIC_ENV),
        "accuracy_matrix": rows, "val_accuracy_matrix": rows, "final_accuracy": final,
        "average_accuracy": float(sum(final) / n), "forgetting": 0.0, "backward_transfer": 0.0,
        "free_fraction_after_task": [c.final_free ** ((i + 1) / n) for i in range(n)],
        "free_fraction_after_round": [], "layer_free_fraction": {},
        "timings": {"train": 1.0, "prune": 0.0, "retrain": 0.0, "evaluate": 0.0, "total": 1.0,
                    "population_size": population_size},
        "created": "2024-01-01T00:00:00+00:00",
    }
