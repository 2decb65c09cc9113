"""From a list of run configs to finished records: check everything first, reuse stored runs, train the rest.

This is the one path both ``sleepcl run`` and the study take. Configs that can share a data stream are
grouped into populations; each finished population is written to the store in one transaction as soon as
it arrives, so an interruption loses at most the populations in flight.

Where the populations train is an executor's business: :class:`InProcess` (the default) trains them one
after another in this process; :class:`sleepcl.runs.cluster.RayCluster` sends each to a Ray cluster as
one task. Either way this module alone writes the store.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Protocol, Sequence

import torch

from ..config import MEMBER_FIELDS, RunConfig
from ..data.datasets import check_available
from ..data.split import SplitBenchmark, check_subsample_size, load_split_benchmark, parse_benchmark
from ..engine.divergence import DIVERGED_HINT, TrainingDiverged
from ..engine.density import starved_layers
from ..engine.population import Event, head_size, planned_free_counts, train_population
from ..models import build_network, is_factory
from ..strategies import get_strategy
from .memory import DATASET_SHAPES, WORKSPACE_BYTES, MemoryPlan, available_bytes, data_bytes, member_bytes, \
    plan_population
from .records import environment, make_record

if TYPE_CHECKING:  # the store imports pandas, which a cluster's workers never need (0.7 s each)
    from .store import RunStore

__all__ = ["BenchmarkCache", "Executor", "InProcess", "PopulationEvent", "group_populations", "memory_plan",
           "resolve_device", "run_configs"]


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
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {device} is not a device sleepcl trains on: use cpu, cuda, cuda:N or auto"
                         + (" (the meta device holds no data, so nothing could be learnt)" if dev.type == "meta" else ""))
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


def memory_plan(config: RunConfig, device: torch.device, max_memory: int | None = None) -> MemoryPlan:
    """How many members like ``config`` (resolved) fit in memory on ``device`` (:mod:`sleepcl.runs.memory`):
    each member's network and training, and what its strategy stores (ER's buffer: :meth:`Strategy.planned_bytes`)."""
    transform, dataset = parse_benchmark(config.benchmark)
    n, shape = DATASET_SHAPES[dataset]
    strategy = get_strategy(config.strategy, config.strategy_options)
    net = build_network(config.network, shape, config.n_tasks, 10 if transform else 2, config.widths,
                        per_task_norm=strategy.freezes, head=config.head)
    per_member = member_bytes(net.shapes(), net.prunable, batch_size=config.batch_size,
                              activation_floats=net.activation_floats) + strategy.planned_bytes(shape)
    available, source = available_bytes(str(device), max_memory)
    # permuted and rotated tasks share the images; the class-pair tasks each hold a fifth of them
    fixed = data_bytes(n if transform else n * min(config.n_tasks, 5) // 5, shape) + WORKSPACE_BYTES
    return plan_population(per_member, fixed, available, source)


def size_populations(configs: Sequence[RunConfig], device: torch.device, max_population: int | None,
                     max_memory: int | None, log: Callable[[str], None] | None) -> list[list[RunConfig]]:
    """Populations of at most ``max_population`` members and no more than fit in memory; refuses, with the
    figures, runs of which not even one member fits."""
    out = []
    for group in group_populations(configs):
        plan = memory_plan(group[0], device, max_memory)
        if plan.fits < 1:
            c = group[0]
            raise ValueError(f"not enough memory for even one {c.network} member on {c.benchmark} "
                             f"(widths {c.widths or 'default'}, batch {c.batch_size}): {plan.describe(1)}. Use a "
                             "smaller network or batch, or a machine with more memory"
                             + (" (--max-memory raises the limit)" if plan.source == "--max-memory" else ""))
        size = min(len(group), plan.fits, max_population or len(group))
        chunks = [group[i:i + size] for i in range(0, len(group), size)]
        if log is not None:
            why = ""
            if size < len(group) and size == plan.fits and size != max_population:
                why = f"; {len(group)} at once would not fit, --max-memory/--max-population change this"
            log(f"training {len(group)} run{'s' * (len(group) != 1)} in {len(chunks)} population"
                f"{'s' * (len(chunks) != 1)} of up to {size}: {plan.describe(size)}{why}")
        out.extend(chunks)
    return out


class BenchmarkCache:
    """Loads each distinct benchmark once per process."""

    def __init__(self, data_dir: str | Path | None, download: bool):
        self.data_dir, self.download = data_dir, download
        self._cache: dict[tuple[Any, ...], SplitBenchmark] = {}

    def check(self, configs: Sequence[RunConfig]) -> None:
        for c in configs:
            for what in SUBSAMPLES:
                check_subsample_size(c.extra.get(what), what)
        for name in sorted({parse_benchmark(c.benchmark)[1] for c in configs}):  # the datasets' files
            check_available(name, self.data_dir, self.download)

    @staticmethod
    def tasks(c: RunConfig) -> dict[str, Any]:
        """The fields of ``c`` that decide its task sequence (load_split_benchmark's arguments)."""
        return dict(val_size=c.val_size, class_order_seed=c.class_order_seed, n_tasks=c.n_tasks,
                    class_groups=c.class_groups, transform_seed=c.transform_seed, permutations=c.permutations,
                    rotations=c.rotations,
                    # extra["train_size"], extra["test_size"]: samples kept per task (a subsampled study)
                    **{what: c.extra.get(what) for what in SUBSAMPLES})

    def key(self, c: RunConfig) -> tuple[Any, ...]:
        """What decides the benchmark a config trains on: configs with equal keys share one."""
        return (c.benchmark, *self.tasks(c).values())

    def get(self, c: RunConfig) -> SplitBenchmark:
        key = self.key(c)
        if key not in self._cache:
            self._cache[key] = load_split_benchmark(c.benchmark, self.data_dir, download=self.download,
                                                    **self.tasks(c))
        return self._cache[key]


def check_models(configs: Sequence[RunConfig], data: BenchmarkCache) -> None:
    """Build every distinct user model once, before any training: a model that cannot work is refused in
    seconds, not after the populations before it have trained (the paper's networks cannot fail here). A run
    that would starve a layer (:func:`starvation_notice`) gets a notice, once per distinct text."""
    built: dict[tuple[Any, ...], tuple[dict[str, tuple[int, ...]], list[int]]] = {}
    said: set[str] = set()
    for c in configs:
        freezes = get_strategy(c.strategy, c.strategy_options).freezes
        key = (c.network, c.head, c.benchmark, c.n_tasks, c.val_size, c.class_order_seed, freezes)
        if not is_factory(c.network):
            continue
        if key not in built:
            bench = data.get(c)
            net = build_network(c.network, bench.input_shape, bench.n_tasks, head_size(bench),
                                per_task_norm=freezes, head=c.head)
            shapes = net.shapes()  # type: ignore[attr-defined]
            built[key] = {n: shapes[n] for n in net.prunable}, [int(i.numel()) for i in bench.train]
        notice = starvation_notice(c, *built[key])
        if notice and notice not in said:
            said.add(notice)
            warnings.warn(notice, UserWarning, stacklevel=2)


def starvation_notice(c: RunConfig, shapes: dict[str, tuple[int, ...]], train_sizes: list[int]) -> str | None:
    """What to say before training when a run of ``c`` (its prunable layers' ``shapes``, its tasks' training set
    sizes) leaves its first task at most half as many weights in some layer as the layer has outputs
    (:func:`~sleepcl.engine.density.starved_layers`): such a task's network can answer one class for every input
    (issue 18); ``--layer-density erk`` gives small layers a larger share."""
    strategy = get_strategy(c.strategy, c.strategy_options, night=c.night)
    if not strategy.prunes or c.prune_scope != "layer":
        return None
    starved = starved_layers(shapes, planned_free_counts(c, strategy, shapes, train_sizes))
    if not starved:
        return None
    named = ", ".join(f"{n} keeps {k} of {math.prod(shapes[n]):,} ({shapes[n][0]} outputs)"
                      for n, k in list(starved.items())[:3])
    if len(starved) > 3:
        named += f" and {len(starved) - 3} more layers"
    fix = ("--layer-density erk gives small layers a larger share (README, \"Your own model\")"
           if c.layer_density == "uniform" else "a smaller --final-free p or fewer tasks leaves each task more")
    return (f"{c.network} at p = {c.final_free} over {c.n_tasks} tasks under {c.layer_density} layer density: task 1 "
            f"{named}; at least half of such a layer's outputs get no weight of the task and answer a constant, "
            f"and a task can end at chance. {fix}.")


class Executor(Protocol):
    """Where populations train. ``run_configs`` asks it for the device, then for the records of ``todo``."""

    def resolve_device(self, device: str | torch.device) -> torch.device:
        """The device populations will train on; an impossible request is refused here, before any work."""
        ...

    def train(self, todo: list[RunConfig], data: BenchmarkCache, device: torch.device, *,
              max_population: int | None, max_memory: int | None, progress: Callable[[Any], None] | None,
              log: Callable[[str], None] | None) -> Iterator[list[dict[str, Any]]]:
        """Train ``todo`` as populations of at most ``max_population`` members that fit in ``max_memory`` bytes;
        yield each population's records (one per member) as it finishes."""
        ...


class InProcess:
    """The default executor: populations in this process, one after another, in the order they were grouped."""

    def resolve_device(self, device: str | torch.device) -> torch.device:
        return resolve_device(device)

    def train(self, todo: list[RunConfig], data: BenchmarkCache, device: torch.device, *,
              max_population: int | None, max_memory: int | None,
              progress: Callable[[PopulationEvent], None] | None,
              log: Callable[[str], None] | None) -> Iterator[list[dict[str, Any]]]:
        populations = size_populations(todo, device, max_population, max_memory, log) if todo else []
        env = environment(device)
        for i, members in enumerate(populations):
            bench = data.get(members[0])
            callback = None
            if progress is not None:
                callback = (lambda e, i=i, n=len(members): progress(PopulationEvent(i, len(populations), n, e)))
            results = train_population(members, bench, device, callback)
            yield [make_record(r, env) for r in results]


def run_configs(configs: Sequence[RunConfig], *, device: str | torch.device = "auto",
                data_dir: str | Path | None = None, download: bool = False, store: RunStore | None = None,
                force: bool = False, max_population: int | None = None, max_memory: int | None = None,
                progress: Callable[[Any], None] | None = None,
                on_population: Callable[[list[dict[str, Any]]], None] | None = None,
                log: Callable[[str], None] | None = None, executor: Executor | None = None) -> list[dict[str, Any]]:
    """Records for ``configs`` (in order), training only those the store does not already hold.

    Every config, the device, the memory, the data and every user model are checked before the first step of
    training, so bad input fails in seconds. Populations hold at most ``max_population`` members and no more
    than fit in ``max_memory`` bytes (default: the memory available now; :mod:`sleepcl.runs.memory`); ``log``
    hears how they were sized. Data files are read and checked only when a run must be trained: runs found in
    the store are served from it whatever the data folder holds now, for every benchmark alike.
    ``on_population`` is called with the records of each population as it finishes. ``executor`` says where
    populations train (default :class:`InProcess`); ``progress`` hears what it reports
    (:class:`PopulationEvent` in process, ``ClusterProgress`` from a ``RayCluster``).
    """
    runner = executor if executor is not None else InProcess()
    resolved = [c.resolved() for c in configs]
    dev = runner.resolve_device(device)
    if max_population is not None and max_population < 1:
        raise ValueError(f"--max-population must be >= 1, got {max_population}")

    hashes = [c.hash() for c in resolved]
    if len(set(hashes)) != len(hashes):
        raise ValueError("the same run config is listed twice; drop the duplicate (for example a repeated seed)")
    found: dict[str, dict[str, Any]] = {}
    if store is not None and not force:
        missing = set(store.missing(hashes))
        found = {h: store.get(h) for h in hashes if h not in missing}  # type: ignore[misc]
    todo = [c for c, h in zip(resolved, hashes) if h not in found]
    data = BenchmarkCache(data_dir, download)
    data.check(todo)
    check_models(todo, data)
    trained = runner.train(todo, data, dev, max_population=max_population, max_memory=max_memory,
                           progress=progress, log=log)
    failed: list[dict[str, Any]] = []
    with contextlib.closing(trained):  # closing it on an error or Ctrl-C stops what is still training
        for records in trained:
            failed += [r for r in records if r.get("diverged")]  # never stored (engine/divergence.py)
            records = [r for r in records if not r.get("diverged")]
            if store is not None:
                store.put_many(records)
            if on_population is not None:
                on_population(records)
            found.update((r["config_hash"], r) for r in records)
    if failed:
        raise diverged_error(failed, len(todo), store)
    return [found[h] for h in hashes]


def diverged_error(failed: Sequence[dict[str, Any]], trained: int, store: RunStore | None) -> TrainingDiverged:
    """The error for runs whose training diverged: which, where, and what to change."""
    shown = "; ".join(f"seed {r['config']['seed']}, p = {r['config']['final_free']}, N = {r['config']['rounds']}: "
                      f"{r['diverged']}" for r in failed[:5])
    more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
    kept = (f"; the other {trained - len(failed)} are in the results store {store.path}"
            if store is not None and trained > len(failed) else "")
    return TrainingDiverged(f"training diverged in {len(failed)} of the {trained} runs trained, which were not "
                            f"stored: {shown}{more}{kept}. Try {DIVERGED_HINT}")
