"""The driver's own place on a cluster it starts itself (``--cluster local``): populations trained in a thread
of the driver's process, on CPUs the driver keeps back from Ray.

Why: a local cluster takes seconds to start (Ray's daemons, their registrations, then a worker per place
importing torch), mostly waiting rather than computing, while the driver has torch imported and the data loaded
already. So the driver begins training at once and stays one place of the cluster to the end, with one worker
fewer to start and feed.

Until the cluster is up, the driver's queue is the whole plan; what it has not begun by then is shared out
again (:meth:`DriverPlace.take_back`). It trains as a Ray worker of ``threads`` CPUs does
(:func:`~sleepcl.engine.population.train_population`), so its members' results are bit-identical to a worker's.
Tried and not kept: the first population as one group per CPU at idle priority (nice 19) while the cluster
starts, to use the CPU the start leaves idle: no faster end to end (benchmarks/README.md).
"""

from __future__ import annotations

import collections
import queue
import threading
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..config import RunConfig
from ..data.split import SplitBenchmark
from ..engine.population import Event, MemberResult, train_population
from .records import environment

__all__ = ["DriverPlace", "Finished"]


class _Stopped(Exception):
    """Raised in the driver's training thread at its next progress report once :meth:`DriverPlace.stop` is called."""


@dataclass
class Finished:
    """A population the driver's place ended: its results and environment, or the exception it raised."""

    key: Any
    members: list[RunConfig]
    results: list[MemberResult] | None
    environment: dict[str, Any] | None
    error: BaseException | None = None


class DriverPlace:
    """Populations trained one after another in a thread of this process; the caller hands them over with
    :meth:`add` (and takes back what is not begun with :meth:`take_back`) and collects them with :meth:`finished`."""

    def __init__(self, device: torch.device, threads: int):
        self.device, self.threads = device, threads
        self.fraction: dict[Any, float] = {}   # key -> fraction of its steps done, for the progress bar
        self._todo: collections.deque[tuple[Any, list[RunConfig], SplitBenchmark]] = collections.deque()
        self._done: queue.Queue[Finished] = queue.Queue()
        self._lock = threading.Lock()
        self._busy = False
        self._stop = threading.Event()
        self.built = threading.Event()   # set once the first population's networks are built (or it failed)

    def add(self, key: Any, members: list[RunConfig], bench: SplitBenchmark) -> None:
        """Train ``members`` after what was added before."""
        with self._lock:
            self._todo.append((key, members, bench))
            self.fraction[key] = 0.0
            if not self._busy:
                self._busy = True
                threading.Thread(target=self._work, name="sleepcl-driver-place", daemon=True).start()

    @property
    def busy(self) -> bool:
        """Whether a population is still queued or training, or a finished one is not yet collected."""
        with self._lock:
            return self._busy or not self._done.empty()

    def backlog(self, cost: dict[Any, float]) -> float:
        """What is left of the work handed over, in the units of ``cost`` (key -> a population's whole cost): how
        long this place stays busy, in the time one place takes for one unit."""
        return sum(cost[k] * (1 - f) for k, f in list(self.fraction.items()))

    def take_back(self) -> list[Any]:
        """The keys of the populations added and not begun, which this place will no longer train."""
        with self._lock:
            keys = [key for key, _, _ in self._todo]
            self._todo.clear()
        for key in keys:
            self.fraction.pop(key, None)
        return keys

    def finished(self, wait: float = 0.0) -> list[Finished]:
        """The populations ended since the last call; waits up to ``wait`` seconds for the first."""
        out = []
        try:
            out.append(self._done.get(timeout=wait) if wait > 0 else self._done.get_nowait())
            while True:
                out.append(self._done.get_nowait())
        except queue.Empty:
            pass
        for f in out:
            self.fraction.pop(f.key, None)
        return out

    def stop(self) -> None:
        """Drop what is queued and end the population in training at its next progress report (an epoch)."""
        with self._lock:
            self._todo.clear()
        self._stop.set()

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._todo or self._stop.is_set():
                    self._busy = False
                    return
                key, members, bench = self._todo.popleft()
            try:
                done = self._train(key, members, bench)
            except BaseException as e:  # whatever happens here, the main thread hears of it and stops waiting
                done = Finished(key, list(members), None, None, e)
            self.built.set()
            self._done.put(done)

    def _train(self, key: Any, members: Sequence[RunConfig], bench: SplitBenchmark) -> Finished:
        def report(e: Event) -> None:
            if self._stop.is_set():
                raise _Stopped
            self.fraction[key] = e.steps_done / max(e.steps_total, 1)

        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)  # as a Ray worker of `threads` CPUs does (and its records say)
        try:
            results = train_population(list(members), bench, self.device, report, on_built=self.built.set)
            return Finished(key, list(members), results, environment(self.device))
        except BaseException as e:  # handed to the main thread, which raises it there
            return Finished(key, list(members), None, None, e)
        finally:
            torch.set_num_threads(before)
