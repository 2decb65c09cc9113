"""Groups of members side by side: on a CPU, a population trains fastest as one group per core.

One population spreads each op over torch's intra-op threads, and every op ends at a barrier where the
threads wait for each other; the many small ops of a step (activations, biases, heads, the loss, the
optimizer's bookkeeping) barely split at all. Instead, the members are cut into as many groups as there are
threads, each group an ordinary :class:`~sleepcl.engine.population.Population` trained in its own Python thread
with one intra-op thread: torch's ops release the GIL, so the groups' steps run at once on separate cores
without waiting for one another. ``benchmarks/population_speed.py`` measures both ways in one run.

Members are independent, so the cut changes nothing a member computes: it is the same member in a group,
in the whole population or alone (tests/test_workers.py checks this bit for bit).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Callable, Sequence, TypeVar

import torch

from .population import Event, MemberResult, Population, Stopped

__all__ = ["default_workers", "fit_side_by_side", "split_members"]

T = TypeVar("T")


def default_workers(size: int, device: torch.device, threads: int | None = None) -> int:
    """How many groups a population of ``size`` members trains in: one per intra-op thread on CPU (at most
    one group per member); one elsewhere (a GPU runs the whole population as one batch)."""
    if device.type != "cpu":
        return 1
    threads = torch.get_num_threads() if threads is None else threads
    return max(1, min(threads, size))


def split_members(members: Sequence[T], groups: int) -> list[list[T]]:
    """``members`` cut into ``groups`` consecutive groups whose sizes differ by at most one (none empty)."""
    if groups < 1:
        raise ValueError(f"workers must be >= 1, got {groups}")
    groups = min(groups, len(members))
    size, extra = divmod(len(members), groups)
    out, start = [], 0
    for g in range(groups):
        end = start + size + (g < extra)
        out.append(list(members[start:end]))
        start = end
    return out


def fit_side_by_side(populations: Sequence[Population],
                     progress: Callable[[Event], None] | None = None) -> list[MemberResult]:
    """Fit every population in its own thread with one intra-op thread; results in the populations' order.

    ``progress`` hears the slowest group's events (every group takes the same steps). If a group fails,
    or the caller is interrupted (Ctrl-C), the other groups stop before their next step and the error is
    raised here once they have.
    """
    lock = threading.Lock()
    latest: list[Event | None] = [None] * len(populations)
    stop = threading.Event()
    for pop in populations:
        pop.stop = stop

    def report(i: int, event: Event) -> None:
        with lock:
            latest[i] = event
            if progress is not None and all(e is not None for e in latest):
                progress(min(latest, key=lambda e: e.steps_done))  # type: ignore[arg-type, return-value]

    def fit(i: int, pop: Population) -> list[MemberResult]:
        torch.set_num_threads(1)
        try:
            return pop.fit(lambda e: report(i, e))
        except BaseException:
            stop.set()  # the other groups end at their next step
            raise

    before, started = torch.get_num_threads(), time.perf_counter()
    try:
        with ThreadPoolExecutor(len(populations), thread_name_prefix="sleepcl-group") as pool:
            futures = [pool.submit(fit, i, pop) for i, pop in enumerate(populations)]
            try:
                wait(futures, return_when=FIRST_EXCEPTION)
            except BaseException:  # Ctrl-C: stop every group; leaving the block waits for them
                stop.set()
                raise
            failed = [f for f in futures if f.exception() is not None and not isinstance(f.exception(), Stopped)]
            if failed:
                raise failed[0].exception()  # type: ignore[misc]
            results = [member for f in futures for member in f.result()]
        total = time.perf_counter() - started
        for r in results:
            r.timings.update(total=total, population_size=len(results), groups=len(populations))
        return results
    finally:
        torch.set_num_threads(before)  # torch's thread count is global: the groups set it to one
        for pop in populations:
            pop.stop = None
