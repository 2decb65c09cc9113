"""The actor a cluster's tasks report their progress to (:mod:`sleepcl.runs.cluster`), in a module of its own:
an actor is a worker process of its own, and this module imports nothing, so that process starts without
torch (about a second of CPU less per command, taken from the populations training beside it)."""

from __future__ import annotations

from typing import Any

__all__ = ["ProgressSink"]


class ProgressSink:
    """Tasks tell it how far their population is; the driver reads it while it waits."""

    def __init__(self) -> None:
        self.latest: dict[Any, float] = {}

    def report(self, key: Any, fraction: float) -> None:
        self.latest[key] = fraction

    def take(self) -> dict[Any, float]:
        return dict(self.latest)
