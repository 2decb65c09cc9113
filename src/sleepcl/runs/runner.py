"""From a list of run configs to finished records: check everything first, reuse stored runs, train the rest.

This is the one path both ``sleepcl run`` and the study take. Configs that can share a data stream are
grouped into populations; each finished population is written to the store in one transaction before
the next starts, so an interruption loses at most the population in flight.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

from ..config import MEMBER_FIELDS, RunConfig
from ..data.datasets import check_available
from ..engine.population import Event, train_population
from .records import environment, make_record
from ..data.split import SplitBenchmark, check_subsample_size, load_split_benchmark
from .store import RunStore

__all__ = ["PopulationEvent", "group_populations", "resolve_device", "run_configs"]


@dataclass(frozen=True)
class PopulationEvent:
    """Progress of one population within a batch of populations."""

    index: int          # 0-based population being trained
    count: int          # populations to train in all
    size: int           # members in this population
    event: Event


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` picks CUDA when present; asking for an absent device is refused before any work."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"unknown device {device!r}: use cpu, cuda, cuda:N or auto ({e})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device} asked for CUDA but this PyTorch sees no GPU "
                         f"(torch {torch.__version__}); use --device cpu or auto")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) present")
    return dev


def group_populations(configs: Iterable[RunConfig], max_size: int | None = None) -> list[list[RunConfig]]:
    """Group resolved configs that differ only in member fields (seed, p, N, schedule) into populations."""
    groups: dict[str, list[RunConfig]] = {}
    for c in configs:
        shared = {k: v for k, v in c.to_dict().items() if k not in MEMBER_FIELDS}
        groups.setdefault(repr(sorted(shared.items(), key=lambda kv: kv[0])), []).append(c)
    out = []
    for members in groups.values():
        step = max_size or len(members)
        out.extend(members[i:i + step] for i in range(0, len(members), step))
    return out


SUBSAMPLES = ("train_size", "test_size")
"""Keys of ``RunConfig.extra`` that subsample each task's train/test data (:func:`load_split_benchmark`)."""


class BenchmarkCache:
    """Loads each distinct benchmark once per process."""

    def __init__(self, data_dir: str | Path | None, download: bool):
        self.data_dir, self.download = data_dir, download
        self._cache: dict[tuple[Any, ...], SplitBenchmark] = {}

    def check(self, configs: Sequence[RunConfig]) -> None:
        for c in configs:
            for what in SUBSAMPLES:
                check_subsample_size(c.extra.get(what), what)
        for name in sorted({c.benchmark for c in configs}):
            check_available(name, self.data_dir, self.download)

    def get(self, c: RunConfig) -> SplitBenchmark:
        # extra["train_size"], extra["test_size"]: samples kept per task (a subsampled study; None: all)
        sizes = {what: c.extra.get(what) for what in SUBSAMPLES}
        key = (c.benchmark, c.val_size, c.class_order_seed, c.n_tasks, *sizes.values())
        if key not in self._cache:
            self._cache[key] = load_split_benchmark(c.benchmark, self.data_dir, val_size=c.val_size,
                                                    class_order_seed=c.class_order_seed, n_tasks=c.n_tasks,
                                                    download=self.download, **sizes)
        return self._cache[key]


def run_configs(configs: Sequence[RunConfig], *, device: str | torch.device = "auto",
                data_dir: str | Path | None = None, download: bool = False, store: RunStore | None = None,
                force: bool = False, max_population: int | None = None,
                progress: Callable[[PopulationEvent], None] | None = None,
                on_population: Callable[[list[dict[str, Any]]], None] | None = None) -> list[dict[str, Any]]:
    """Records for ``configs`` (in order), training only those the store does not already hold.

    Every config, the device and the data are checked before the first step of training, so bad input
    fails in seconds. ``on_population`` is called with the records of each population as it finishes.
    """
    resolved = [c.resolved() for c in configs]
    dev = resolve_device(device)
    data = BenchmarkCache(data_dir, download)
    data.check(resolved)

    hashes = [c.hash() for c in resolved]
    if len(set(hashes)) != len(hashes):
        raise ValueError("the same run config is listed twice; drop the duplicate (for example a repeated seed)")
    found: dict[str, dict[str, Any]] = {}
    if store is not None and not force:
        missing = set(store.missing(hashes))
        found = {h: store.get(h) for h in hashes if h not in missing}  # type: ignore[misc]
    todo = [c for c, h in zip(resolved, hashes) if h not in found]
    populations = group_populations(todo, max_population)
    env = environment(dev)
    for i, members in enumerate(populations):
        bench = data.get(members[0])
        callback = None
        if progress is not None:
            callback = (lambda e, i=i, n=len(members): progress(PopulationEvent(i, len(populations), n, e)))
        results = train_population(members, bench, dev, callback)
        records = [make_record(r, env) for r in results]
        if store is not None:
            store.put_many(records)
        if on_population is not None:
            on_population(records)
        found.update((r["config_hash"], r) for r in records)
    return [found[h] for h in hashes]
