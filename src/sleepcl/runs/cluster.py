"""Populations on a Ray cluster: ``--cluster ADDRESS|auto|local``, one Ray task per population.

The driver (the process running ``sleepcl run`` or ``sleepcl study``) does everything but the training:
it plans the populations, puts each benchmark into Ray's object store once, submits one task per
population, and hands each population's records to :func:`sleepcl.runs.runner.run_configs` as it
arrives, which writes them to the results store in one transaction. Workers never open the store, so it
stays a single-writer SQLite file and an interrupted study resumes exactly as it does in one process.

Data: the driver loads the benchmark (the only process that reads dataset files) and ships its tensors
through the object store as numpy arrays, which every worker on a node maps without copying; a worker
copies them once into its own tensors (the store's pages are read-only). So workers need no data
folder and download nothing; a node fetches each benchmark once.

Faults. A worker process that dies mid-population (killed, out of memory) makes Ray run the task again
(``max_retries``); the driver stores only what a finished task returns, so nothing is lost or stored
twice. An exception in a population is not retried: the driver stops the other tasks and raises
:class:`ClusterError` naming the population's configs. Ctrl-C (or any error) on the driver cancels every
task still queued or running. Every node must run the same sleepcl sources as the driver (the records'
``environment.source_digest``): checked on every node before any training, and again by each task.

Scheduling. Each task asks for ``cpus_per_population`` CPUs (``--threads``, default 1) and, on CUDA, one
GPU. Populations are split until there are about as many as the cluster has room for at once (the
members of a population are independent, so this changes no member's result on CPU), and the longest
start first. Ray is imported only when a :class:`RayCluster` is entered.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from ..config import MEMBER_FIELDS, RunConfig
from ..data.split import SplitBenchmark
from ..engine.population import Event, train_population
from .records import environment, make_record, source_digest
from .runner import BenchmarkCache, group_populations, size_populations

__all__ = ["ClusterError", "ClusterProgress", "Node", "RayCluster", "describe_population",
           "pack_benchmark", "plan_populations", "population_slots", "unpack_benchmark"]

# Environment variables the sleepcl command sets for its own process (cli.PROCESS_DEFAULTS) that must reach the
# workers before they import torch: MKL's strict reproducibility makes a worker's matmuls give the driver's bits.
WORKER_ENV = ("MKL_CBWR", "GOMP_SPINCOUNT")
PROBE_TIMEOUT_S = 120.0


class ClusterError(RuntimeError):
    """A population failed on the cluster (its own exception, or lost after Ray's retries)."""


class SourceMismatch(RuntimeError):
    """A worker runs other sleepcl sources than the driver."""


@dataclass(frozen=True)
class ClusterProgress:
    """The whole of a command's work on the cluster so far; cumulative over ``run_configs`` calls."""

    populations: int
    populations_done: int
    running: int            # populations that have reported a step and not finished
    members: int
    members_done: int
    work: float             # member-steps of every population submitted (estimated from the configs)
    work_done: float


@dataclass(frozen=True)
class Node:
    """An alive node of the cluster and what it offers."""

    node_id: str
    ip: str
    cpus: float
    gpus: float


# ------------------------------------------------------------------------------------------- pure planning


def population_slots(nodes: Sequence[Node], cpus: int, gpus: int) -> int:
    """How many populations needing ``cpus`` CPUs and ``gpus`` GPUs the nodes can train at once."""
    total = 0
    for n in nodes:
        fit = int(n.cpus // cpus)
        if gpus:
            fit = min(fit, int(n.gpus // gpus))
        total += fit
    return total


def plan_populations(todo: Sequence[RunConfig], max_population: int | None, slots: int,
                     cost: Callable[[RunConfig], float]) -> list[list[RunConfig]]:
    """Populations for ``slots`` parallel places: grouped as in process, split until none holds much more than
    its share of the total cost, longest first (equal costs keep their order)."""
    groups = group_populations(todo, max_population)
    share = sum(cost(c) for c in todo) / max(slots, 1)
    out: list[list[RunConfig]] = []
    for g in groups:
        parts = min(len(g), max(1, math.ceil(sum(cost(c) for c in g) / share - 1e-9))) if share > 0 else 1
        out.extend(group_populations(g, math.ceil(len(g) / parts)) if parts > 1 else [g])
    return sorted(out, key=lambda p: -sum(cost(c) for c in p))


def member_steps(config: RunConfig, bench: SplitBenchmark) -> int:
    """A member's optimizer steps: E + B task-epochs per task, each ceil(n_t / batch) steps (every strategy
    takes this many; see the README's "Equal time budget")."""
    per_epoch = sum(math.ceil(len(t) / config.batch_size) for t in bench.train[:config.n_tasks])
    return (config.epochs + config.retrain_epochs) * per_epoch


def describe_population(members: Sequence[RunConfig]) -> str:
    """The configs of a population in one line: what they share, the member values, and their hashes."""
    first = members[0].to_dict()
    shared = ", ".join(f"{k}={v}" for k, v in first.items() if k not in MEMBER_FIELDS)
    values = "; ".join(f"{k} {', '.join(str(v) for v in dict.fromkeys(getattr(c, k) for c in members))}"
                       for k in MEMBER_FIELDS)
    hashes = ", ".join(c.hash() for c in members)
    return f"{len(members)} run(s) [{shared}; {values}] (config hashes {hashes})"


# ----------------------------------------------------------------------------------- the data for workers


def pack_benchmark(bench: SplitBenchmark) -> dict[str, Any]:
    """``bench`` with every tensor as a numpy array: the object store shares numpy arrays without copying."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(bench):
        value = getattr(bench, f.name)
        if isinstance(value, torch.Tensor):
            value = value.cpu().numpy()
        elif isinstance(value, (tuple, list)) and value and all(isinstance(v, torch.Tensor) for v in value):
            value = type(value)(v.cpu().numpy() for v in value)
        out[f.name] = value  # anything else travels as Ray pickles it
    return out


def unpack_benchmark(packed: dict[str, Any]) -> SplitBenchmark:
    """The benchmark back as tensors, copied out of the object store's read-only pages."""
    def tensor(a: Any) -> Any:
        return torch.from_numpy(np.array(a)) if isinstance(a, np.ndarray) else a

    fields = {k: type(value)(tensor(v) for v in value) if isinstance(value, (tuple, list)) else tensor(value)
              for k, value in packed.items()}
    return SplitBenchmark(**fields)


# ------------------------------------------------------------------------------------- what workers run


def _probe() -> dict[str, Any]:
    """What a node runs: asked of every node before any training."""
    import platform

    import sleepcl

    return {"source_digest": source_digest(), "sleepcl": os.path.dirname(sleepcl.__file__),
            "torch": torch.__version__, "python": platform.python_version()}


def _source_mismatch(driver: dict[str, Any], ip: str, worker: dict[str, Any]) -> str:
    return (f"node {ip} runs other sleepcl sources than this driver (digest {worker['source_digest']} in "
            f"{worker['sleepcl']}, against {driver['source_digest']} in {driver['sleepcl']}); its records would be "
            "stored as if this code had made them. Install the same sleepcl on every node (the same commit, "
            "pip install -e . there), then restart Ray on that node (ray stop; ray start --address=HEAD:PORT) so "
            "its workers load it")


class _ProgressSink:
    """A tiny actor: tasks tell it how far their population is; the driver reads it while it waits."""

    def __init__(self) -> None:
        self.latest: dict[Any, float] = {}

    def report(self, key: Any, fraction: float) -> None:
        self.latest[key] = fraction

    def take(self) -> dict[Any, float]:
        return dict(self.latest)


def _reporter(sink: Any, key: Any, interval: float) -> Callable[[Event], None] | None:
    if sink is None:
        return None
    lock, last = threading.Lock(), [-math.inf]

    def report(e: Event) -> None:
        with lock:  # groups side by side report from several threads
            now = time.monotonic()
            if now - last[0] >= interval or e.phase == "done":
                last[0] = now
                sink.report.remote(key, e.steps_done / max(e.steps_total, 1))

    return report


def _train_population(members: list[RunConfig], packed: dict[str, Any], device: str, threads: int, digest: str,
                      key: Any, sink: Any, interval: float) -> list[dict[str, Any]]:
    """One population on a worker: its records, with the worker's own environment."""
    import ray

    if source_digest() != digest:
        ip = ray.util.get_node_ip_address()
        raise SourceMismatch(_source_mismatch({"source_digest": digest, "sleepcl": "the driver"}, ip, _probe()))
    bench = unpack_benchmark(packed)
    dev = torch.device(device)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        results = train_population(members, bench, dev, _reporter(sink, key, interval))
        env = {**environment(dev), "cluster_node": ray.util.get_node_ip_address(), "ray": ray.__version__}
        return [make_record(r, env) for r in results]
    finally:
        torch.set_num_threads(before)


# -------------------------------------------------------------------------------------------- connecting


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ValueError("--cluster needs Ray, which is not installed here: pip install 'sleepcl[ray]' (in a "
                         "checkout: pip install -e '.[ray]'), or leave out --cluster to train in this process") from None
    return ray


def check_reachable(address: str, timeout: float = 3.0) -> None:
    """Refuse, within seconds, an address where nothing answers (Ray itself would retry for a minute)."""
    if address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--cluster {address!r} is not HOST:PORT, auto or local: give the address that "
                         "`ray start --head` printed (for example 10.0.0.5:6379)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise ValueError(f"no Ray cluster answers at {address} ({e.strerror or e}): start one on that machine with "
                         f"`ray start --head --port={port}`, check the address with `ray status` there, or use "
                         "--cluster local for a throwaway cluster on this machine") from None


def _connection_advice(address: str, error: BaseException) -> str:
    chain, e = [], error
    while e is not None:
        chain.append(f"{type(e).__name__}: {e}")
        e = e.__cause__ or e.__context__
    text = " ".join(chain)
    if "uthentication" in text or "auth token" in text.lower():
        return (f"the Ray cluster at {address} refused this driver's token: the cluster uses token authentication, "
                "so set RAY_AUTH_MODE=token here and copy the head node's ~/.ray/auth_token to this machine "
                "(or set RAY_AUTH_TOKEN); on the head node itself, --cluster auto finds the token")
    if address == "auto":
        return ("--cluster auto found no running Ray cluster on this machine: start one with `ray start --head` "
                "(and join the other machines with `ray start --address=HEAD:PORT`), or use --cluster local")
    return f"could not connect to the Ray cluster at {address}: {chain[0]}; check it with `ray status` on its head node"


class RayCluster:
    """An :class:`~sleepcl.runs.runner.Executor` that trains each population as one task on a Ray cluster.

    ``address``: ``"local"`` (start a cluster on this machine, shut down on exit), ``"auto"`` or
    ``"HOST:PORT"`` (connect to a running one). A process already connected to Ray (``ray.init`` called
    by the caller) uses that connection and leaves it open. Use as a context manager::

        with RayCluster("auto", cpus_per_population=1) as cluster:
            records = run_configs(configs, executor=cluster, store=store)
    """

    def __init__(self, address: str = "local", *, cpus_per_population: int | None = None, max_retries: int = 3,
                 progress_interval: float = 0.5, ray_init: dict[str, Any] | None = None):
        if cpus_per_population is not None and cpus_per_population < 1:
            raise ValueError(f"--threads must be >= 1, got {cpus_per_population}")
        self.address, self.cpus = address, cpus_per_population or 1
        self.max_retries, self.progress_interval = max_retries, progress_interval
        self.ray_init = dict(ray_init or {})  # extra ray.init arguments for a local cluster (tests: num_cpus)
        self.ray: Any = None
        self.nodes: list[Node] = []
        self._owned = False
        self._sink: Any = None
        self._take: Any = None   # the sink's answer on its way
        self._benches: dict[tuple[Any, ...], Any] = {}
        self._calls = 0
        self._totals = dict(populations=0, populations_done=0, members=0, members_done=0, work=0.0)
        self._done_work = 0.0
        self._running: dict[Any, tuple[float, float]] = {}   # key -> (cost, fraction done)
        self.runtime_env = {"env_vars": {k: os.environ[k] for k in WORKER_ENV if k in os.environ}}

    # -- connection -------------------------------------------------------------------------------------
    def __enter__(self) -> "RayCluster":
        ray = _import_ray()
        check_reachable(self.address)
        if not ray.is_initialized():
            kwargs = dict(logging_level=logging.WARNING, log_to_driver=False)
            try:
                if self.address == "local":
                    ray.init(address="local", include_dashboard=False, **self.ray_init, **kwargs)
                else:
                    ray.init(address=self.address, **kwargs)
            except (ConnectionError, RuntimeError) as e:
                raise ValueError(_connection_advice(self.address, e)) from None
            self._owned = True
        self.ray = ray
        try:
            self.nodes = [Node(n["NodeID"], n["NodeManagerAddress"], float(n["Resources"].get("CPU", 0)),
                               float(n["Resources"].get("GPU", 0))) for n in ray.nodes() if n.get("Alive")]
            self._check_sources()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.ray is None:
            return
        if self._sink is not None:
            self.ray.kill(self._sink)
            self._sink = self._take = None
        if self._owned:
            self.ray.shutdown()
        self.ray = None

    def _check_sources(self) -> None:
        """Ask every node what sleepcl it runs; refuse before any training if one differs from this driver."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        ray = self.ray
        probe = ray.remote(_probe)
        refs = [probe.options(num_cpus=0, runtime_env=self.runtime_env, scheduling_strategy=
                              NodeAffinitySchedulingStrategy(n.node_id, soft=False)).remote() for n in self.nodes]
        try:
            answers = ray.get(refs, timeout=PROBE_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            raise ValueError(f"the cluster's nodes did not all answer within {PROBE_TIMEOUT_S:.0f} s: check them "
                             "with `ray status` on the head node") from None
        except ray.exceptions.RayError as e:
            raise ValueError(f"a node of the cluster cannot run sleepcl ({type(e).__name__}: {str(e)[-500:]}); "
                             "install the same sleepcl on every node (pip install -e . in the same checkout)") from None
        mine = _probe()
        for node, theirs in zip(self.nodes, answers):
            if theirs["source_digest"] != mine["source_digest"]:
                raise ValueError(_source_mismatch(mine, node.ip, theirs))

    # -- the executor ---------------------------------------------------------------------------------
    def resolve_device(self, device: str | torch.device) -> torch.device:
        """The device on the cluster's nodes: ``auto`` is CUDA when some node has a GPU. A population must fit
        on one node (its CPUs and, on CUDA, a GPU): refused here otherwise."""
        text = str(device)
        if text == "auto":
            dev = torch.device("cuda" if any(n.gpus >= 1 for n in self.nodes) else "cpu")
        else:
            try:
                dev = torch.device(text)
            except RuntimeError as e:
                raise ValueError(f"unknown device {text!r}: use cpu, cuda or auto ({e})") from None
            if dev.type not in ("cpu", "cuda"):
                raise ValueError(f"--device {text} with --cluster: populations train on cpu or cuda")
            if dev.index not in (None, 0):
                raise ValueError(f"--device {text} with --cluster: Ray gives each population a GPU of its own; "
                                 "use --device cuda")
            dev = torch.device(dev.type)
        self._check_fits(dev)
        return dev

    def _check_fits(self, dev: torch.device) -> None:
        gpus = 1 if dev.type == "cuda" else 0
        if population_slots(self.nodes, self.cpus, gpus):
            return
        offer = "; ".join(f"{n.ip}: {n.cpus:g} CPU, {n.gpus:g} GPU" for n in self.nodes) or "no alive node"
        if gpus and not any(n.gpus >= 1 for n in self.nodes):
            raise ValueError(f"--device {dev} but no node of the cluster has a GPU ({offer}): use --device cpu, or "
                             "join a GPU machine (ray start --address=HEAD:PORT there)")
        raise ValueError(f"a population needs {self.cpus} CPU(s) (--threads {self.cpus})"
                         + (" and a GPU" if gpus else "") + f" on one node, and no node of the cluster has that "
                         f"({offer}): lower --threads, or join a larger machine")

    def slots(self, dev: torch.device) -> int:
        return population_slots(self.nodes, self.cpus, 1 if dev.type == "cuda" else 0)

    def train(self, todo: list[RunConfig], data: BenchmarkCache, device: torch.device, *,
              max_population: int | None, max_memory: int | None = None,
              progress: Callable[[ClusterProgress], None] | None = None,
              log: Callable[[str], None] | None = None) -> Iterator[list[dict[str, Any]]]:
        """Submit every population at once (longest first), yield each one's records as it finishes.

        Populations are sized to the cluster's CPUs (``max_population`` caps them); ``max_memory``, the memory
        of one population's node, caps them too when given (the driver cannot measure the workers' memory)."""
        if max_memory is not None and todo:
            fits = min(len(p) for p in size_populations(todo, device, max_population, max_memory, log))
            max_population = min(max_population or fits, fits)
        if self.ray is None:
            raise RuntimeError("RayCluster is used as a context manager: with RayCluster(...) as cluster: ...")
        if not todo:
            return
        ray = self.ray
        steps = {c.hash(): member_steps(c, data.get(c)) for c in todo}
        populations = plan_populations(todo, max_population, self.slots(device), lambda c: steps[c.hash()])
        call, self._calls = self._calls, self._calls + 1
        if progress is not None and self._sink is None:
            self._sink = ray.remote(_ProgressSink).options(num_cpus=0).remote()
        sink = self._sink if progress is not None else None
        task = ray.remote(_train_population).options(
            num_cpus=self.cpus, num_gpus=1 if device.type == "cuda" else 0, max_retries=self.max_retries,
            retry_exceptions=False, runtime_env=self.runtime_env)
        pending: dict[Any, tuple[Any, list[RunConfig]]] = {}
        for i, members in enumerate(populations):
            key = (call, i)
            self._running[key] = (float(sum(steps[c.hash()] for c in members)), 0.0)
            self._totals["populations"] += 1
            self._totals["members"] += len(members)
            self._totals["work"] += self._running[key][0]
            ref = task.remote(members, self._bench_ref(data, members[0]), str(device), self.cpus,
                              source_digest(), key, sink, self.progress_interval)
            pending[ref] = (key, members)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=self.progress_interval)
                for ref in ready:
                    key, members = pending.pop(ref)
                    records = self._result(ref, members)
                    self._finished(key, len(members))
                    self._report(progress)
                    yield records
                if not ready:
                    self._report(progress)
        finally:
            for ref in pending:  # an error, Ctrl-C, or a caller that stopped reading: nothing keeps training
                ray.cancel(ref, force=True)
            for key, _ in pending.values():
                self._running.pop(key, None)

    def _bench_ref(self, data: BenchmarkCache, config: RunConfig) -> Any:
        key = (str(data.data_dir), data.download, *data.key(config))
        if key not in self._benches:
            self._benches[key] = self.ray.put(pack_benchmark(data.get(config)))
        return self._benches[key]

    def _result(self, ref: Any, members: list[RunConfig]) -> list[dict[str, Any]]:
        ray = self.ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None) or e
            if isinstance(cause, SourceMismatch):
                raise ValueError(str(cause)) from None
            raise ClusterError(f"a population failed on the cluster: {describe_population(members)}: "
                               f"{type(cause).__name__}: {cause}") from e
        except ray.exceptions.RayError as e:
            raise ClusterError(f"a population was lost on the cluster after {self.max_retries} retries: "
                               f"{describe_population(members)}: {type(e).__name__}: {e}") from e

    def _finished(self, key: Any, size: int) -> None:
        cost, _ = self._running.pop(key)
        self._done_work += cost
        self._totals["populations_done"] += 1
        self._totals["members_done"] += size

    def _report(self, progress: Callable[[ClusterProgress], None] | None) -> None:
        if progress is None:
            return
        self._read_sink()
        running = [(cost, f) for cost, f in self._running.values() if f > 0]
        t = self._totals
        progress(ClusterProgress(t["populations"], t["populations_done"], len(running), t["members"],
                                 t["members_done"], t["work"], self._done_work + sum(c * f for c, f in running)))

    def _read_sink(self) -> None:
        """Take the tasks' latest reports without waiting: the sink may still be starting (a process of its own)."""
        if self._sink is None:
            return
        if self._take is None:
            self._take = self._sink.take.remote()
        ready, _ = self.ray.wait([self._take], timeout=0)
        if ready:
            for key, fraction in self.ray.get(self._take).items():
                if key in self._running:
                    self._running[key] = (self._running[key][0], fraction)
            self._take = self._sink.take.remote()
