"""Populations on a Ray cluster: ``--cluster ADDRESS|auto|local``, one Ray task per population.

The driver (the process running ``sleepcl run`` or ``sleepcl study``) does everything but the training
(on a cluster it starts itself, it trains too: below): it plans the populations, puts each benchmark into
Ray's object store once, submits one task per population, and hands each population's records to
:func:`sleepcl.runs.runner.run_configs` as it arrives, which writes them to the results store in one
transaction. Workers never open the store, so it
stays a single-writer SQLite file and an interrupted study resumes exactly as it does in one process.

Data: the driver loads the benchmark (the only process that reads dataset files) and ships its tensors
through the object store as numpy arrays, which every worker on a node maps without copying; a worker
copies them once into its own tensors (the store's pages are read-only). So workers need no data
folder and download nothing; a node fetches each benchmark once.

Code. Every task carries the driver's sleepcl package and the user files the configs name (a model's
``path/to/file.py``, any ``path.py:name`` spec; :mod:`sleepcl.usercode`) through Ray's ``runtime_env``
``py_modules``, uploaded once per content; a node needs Ray, torch and sleepcl's dependencies, not sleepcl.
A probe on every node checks, before any training, that it has those dependencies, can import what was
shipped and runs the driver's sources (the records' ``environment.source_digest``); each task checks again.
A cluster this process starts (``--cluster local``) ships nothing: its processes start with the driver's
sleepcl and the folder of the user files' copies on ``PYTHONPATH``, so its tasks need no ``runtime_env`` and
run in the workers Ray starts with the node, one per place, started while the probe runs.

The driver's place (``--cluster local`` on CPU, :mod:`sleepcl.runs.driver_place`). A local cluster starts with
the first population to train, not on entering, and the driver keeps one place's CPUs (``--threads``) back
from Ray: it begins training at once, while its main thread starts the cluster (seconds, mostly waiting on
Ray's processes), and stays one place of the cluster to the end. What it has not begun when the
cluster is up is shared out again between it and Ray's places (:func:`share_out`, its backlog counted). Records
say which trained them (``environment.cluster_place``: ``driver`` or ``worker``); a member's results are the
same either way. A command with nothing to train starts no cluster.

Faults. A worker process that dies mid-population (killed, out of memory) makes Ray run the task again
(``max_retries``); the driver stores only what a finished task returns, so nothing is lost or stored
twice. A population that runs out of CUDA memory is split in two and submitted again. Any other exception
in a population is not retried: the driver stops the other tasks and raises :class:`ClusterError` naming
the population's configs. Ctrl-C (or any error) on the driver cancels every task still queued or running.

Scheduling. Each task asks for ``cpus_per_population`` CPUs (``--threads``, default 1), on CUDA one GPU,
and the memory its population needs by :mod:`sleepcl.runs.memory`'s estimate. ``--device auto`` with GPUs
in the cluster trains on the GPUs and on the CPUs of the nodes without one (:meth:`RayCluster.kinds`).
Populations are cut so that every place of the cluster gets the same share of the work and all end
together (:func:`plan_populations`, :func:`share_out`; the members of a population are independent, so this
changes no member's result on CPU), and the longest start first. Tasks report their progress through the
cluster's key-value store (:mod:`sleepcl.runs.progress_board`), read by the driver while it waits.
Ray is imported only when a :class:`RayCluster` is entered (for ``local``: when its cluster starts).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from importlib import metadata
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from ..config import MEMBER_FIELDS, RunConfig
from ..data.split import SplitBenchmark
from ..engine.population import Event, train_population
from ..usercode import install, user_sources
from .records import environment, make_record, package_digest, source_digest
from .driver_place import DriverPlace, Finished
from .memory import plan_population
from . import progress_board
from .runner import BenchmarkCache, group_populations

__all__ = ["ClusterError", "ClusterProgress", "Node", "RayCluster", "describe_population",
           "pack_benchmark", "plan_populations", "population_slots", "share_out", "unpack_benchmark"]

# Environment variables the sleepcl command sets for its own process (cli.PROCESS_DEFAULTS) that must reach the
# workers before they import torch: MKL's strict reproducibility makes a worker's matmuls give the driver's bits.
WORKER_ENV = ("MKL_CBWR", "GOMP_SPINCOUNT")
PROBE_TIMEOUT_S = 120.0
# How long a local cluster's start waits for the driver to build its first population's networks (seconds).
BUILD_WAIT_S = 60.0
# A task raises CUDA's out-of-memory error for a population of more members than this (tests: no GPU there).
INJECT_OOM = "SLEEPCL_INJECT_OOM_ABOVE"
# What of the package directory is not shipped to the workers.
SHIP_EXCLUDES = ["__pycache__", "*.pyc"]


class ClusterError(ValueError):
    """A population failed on the cluster (its own exception, or lost after Ray's retries). A ValueError, so
    that the command prints its message and exits with status 2, as for any input it cannot run."""


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
    memory: float = 0.0     # bytes Ray lets tasks ask for


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
    """Populations for ``slots`` parallel places that end together (:func:`share_out` with every place free),
    longest first: Ray hands each to the place free first."""
    places = share_out(todo, max_population, [0.0] * max(slots, 1), cost)
    return sorted((p for place in places for p in place), key=lambda p: -sum(cost(c) for c in p))


def share_out(todo: Sequence[RunConfig], max_population: int | None, backlogs: Sequence[float],
              cost: Callable[[RunConfig], float]) -> list[list[list[RunConfig]]]:
    """The populations of each place, so that places busy for ``backlogs[i]`` more (in ``cost``'s units) all end
    together: grouped as in process, then cut to the places' shares.

    McNaughton's wrap-around rule: lay the groups, longest first, end to end on one line of cost, and give each
    place the stretch of the line that fills it up to the common end T (where the places' room, T minus their
    backlog, adds up to the whole cost); a member goes to the place its middle falls in. So three equal groups on
    two free places become 10 + 5 and 5 + 10 members, not 10 + 10 and then 10 alone (one place idle for a third
    of the time); a place still busy gets less."""
    groups = sorted(group_populations(todo, max_population), key=lambda g: -sum(cost(c) for c in g))
    total = sum(cost(c) for c in todo)
    if len(backlogs) <= 1 or total <= 0:
        return [groups] + [[] for _ in backlogs[1:]]
    end = common_end(total, backlogs)
    bounds, at = [], 0.0
    for b in backlogs:  # where each place's stretch of the line ends
        at += max(end - b, 0.0)
        bounds.append(at)
    out: list[list[list[RunConfig]]] = [[] for _ in backlogs]
    at = 0.0
    for g in groups:
        pieces: dict[int, list[RunConfig]] = {}
        for c in g:
            middle = at + cost(c) / 2
            place = next((i for i, b in enumerate(bounds) if middle < b), len(bounds) - 1)
            pieces.setdefault(place, []).append(c)
            at += cost(c)
        for place, members in pieces.items():
            out[place].append(members)
    return out


def common_end(total: float, backlogs: Sequence[float]) -> float:
    """T such that the places' room up to T (T minus each backlog, where positive) adds up to ``total``."""
    busy = sorted(backlogs)
    for k in range(len(busy), 1, -1):  # the k least busy places share the work; the others have none
        end = (total + sum(busy[:k])) / k
        if end >= busy[k - 1]:
            return end
    return total + busy[0]  # the least busy place alone


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


# sleepcl's dependencies (pyproject.toml), import name -> what to install: a node must have them all.
DEPENDENCIES = {"torch": "torch", "numpy": "numpy", "scipy": "scipy", "pandas": "pandas", "matplotlib": "matplotlib",
                "safetensors": "safetensors", "rich": "rich", "mlxtend": "mlxtend", "PIL": "pillow",
                "pydantic": "pydantic"}


def _installed(module: str) -> bool:
    """Whether ``module`` can be found here, without importing it (a worker imports only what it uses)."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _probe() -> dict[str, Any]:
    """What a node runs: asked of every node before any training."""
    import platform

    import sleepcl

    return {"source_digest": source_digest(), "sleepcl": os.path.dirname(sleepcl.__file__),
            "torch": torch.__version__, "python": platform.python_version(),
            "missing": [m for m in DEPENDENCIES if not _installed(m)]}


def _lacks(node: "Node", missing: Sequence[str]) -> str:
    return (f"node {node.ip} ({node.node_id[:8]}) lacks {', '.join(repr(m) for m in missing)}, which sleepcl needs: "
            f"install there: pip install {' '.join(DEPENDENCIES.get(m, m) for m in missing)} (the versions of this "
            "machine; README: Studies on a Ray cluster, the first two lines), then run the command again")


def _source_mismatch(driver: dict[str, Any], ip: str, worker: dict[str, Any]) -> str:
    return (f"node {ip} runs other sleepcl sources than this driver (digest {worker['source_digest']} in "
            f"{worker['sleepcl']}, against {driver['source_digest']} in {driver['sleepcl']}); its records would be "
            "stored as if this code had made them. The driver ships its sources with every task: either they "
            "changed on disk since this command started (run it again), or that node's Python puts another "
            "sleepcl ahead of the shipped one (a sitecustomize or a .pth that imports it: remove it there)")


def _reporter(board: str | None, key: Any, interval: float) -> Callable[[Event], None] | None:
    if board is None:
        return None
    lock, last = threading.Lock(), [-math.inf]

    def report(e: Event) -> None:
        with lock:  # groups side by side report from several threads
            now = time.monotonic()
            if now - last[0] >= interval or e.phase == "done":
                last[0] = now
                progress_board.write(board, key, e.steps_done / max(e.steps_total, 1))

    return report


def _train_population(members: list[RunConfig], packed: dict[str, Any], device: str, threads: int,
                      job: dict[str, Any], key: Any, board: str | None, interval: float) -> list[dict[str, Any]]:
    """One population on a worker: its records, with the worker's own environment.

    ``job``: what the driver shipped: its ``source_digest``, its ``sleepcl`` version, and ``files``, the user
    files of the configs (:meth:`sleepcl.usercode.UserSources.mapping`)."""
    import ray

    if source_digest() != job["source_digest"]:
        ip = ray.util.get_node_ip_address()
        raise SourceMismatch(_source_mismatch({"source_digest": job["source_digest"], "sleepcl": "the driver"}, ip,
                                              _probe()))
    install(job["files"])
    above = os.environ.get(INJECT_OOM)
    if above is not None and len(members) > int(above):  # fault injection for the tests (no GPU there)
        raise torch.OutOfMemoryError(f"CUDA out of memory ({INJECT_OOM}={above}, {len(members)} members)")
    bench = unpack_benchmark(packed)
    dev = torch.device(device)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        results = train_population(members, bench, dev, _reporter(board, key, interval))
        context = ray.get_runtime_context()
        env = {**environment(dev), "sleepcl": job["sleepcl"], "cluster_node": ray.util.get_node_ip_address(),
               "cluster_node_id": context.get_node_id(), "cluster_place": "worker", "ray": ray.__version__}
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


def usable_cpus() -> int:
    """The CPUs this process may use, as Ray counts them for a node it starts: the CPUs it may run on, fewer where
    a cgroup's quota (a container's CPU limit, cgroup v2 ``cpu.max``) allows less."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cpus


def _check_ray_installed() -> None:
    """What :func:`_import_ray` checks, without importing Ray."""
    if not _installed("ray"):
        _import_ray()


def _ray_connected() -> bool:
    """Whether this process is connected to a Ray cluster already (then a RayCluster uses that connection)."""
    import sys

    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--cluster {address!r} is not HOST:PORT, auto or local: give the address that "
                         "`ray start --head` printed (for example 10.0.0.5:6379)")
    return host.strip("[]"), int(port)


# A gRPC server (Ray's GCS and its client server are) answers the HTTP/2 client preface with a SETTINGS frame.
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def check_reachable(address: str, timeout: float = 3.0, what: str | None = None) -> None:
    """Refuse, within seconds, an address where nothing answers (Ray itself would retry for a minute or more),
    and one where something answers that is not Ray (not a gRPC server). ``what``: where the address came from,
    for the message."""
    if address in ("auto", "local"):
        return
    host, port = _split_address(address)
    where = f"{address}" + (f" ({what})" if what else "")
    try:
        conn = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        raise ValueError(f"no Ray cluster answers at {where} ({e.strerror or e}): start one on that machine with "
                         f"`ray start --head --port={port}`, check the address with `ray status` there, or use "
                         "--cluster local for a throwaway cluster on this machine") from None
    head = b""
    with conn:
        try:
            conn.sendall(_HTTP2_PREFACE)
            while len(head) < 9:
                chunk = conn.recv(9 - len(head))
                if not chunk:
                    break
                head += chunk
        except OSError:  # reset, or silent past the timeout: not Ray
            pass
    if len(head) < 9 or head[3] != 4:
        raise ValueError(f"something answers at {where}, but it is not a Ray cluster (no gRPC answer within "
                         f"{timeout:g} s; it said {head[:16]!r}): give the address `ray start --head` printed "
                         "(the GCS port, 6379 by default), not the dashboard's or another service's")


def auto_address(temp_dir: str | None = None) -> tuple[str, str]:
    """``(address, where it came from)`` for ``--cluster auto``: ``$RAY_ADDRESS``, else the address file that
    ``ray start --head`` wrote on this machine. Refuses at once a missing file, one written by another user (a
    shared machine: their cluster is not joined silently), and a stale one (a cluster stopped without
    ``ray stop``)."""
    env = os.environ.get("RAY_ADDRESS")
    if env and env != "auto":
        check_reachable(env, what="from $RAY_ADDRESS")
        return env, "$RAY_ADDRESS"
    from ray._private.utils import get_ray_address_file

    path = Path(get_ray_address_file(temp_dir))
    try:
        address, owner = path.read_text().strip(), path.stat().st_uid
    except OSError:
        raise ValueError("--cluster auto found no Ray cluster started on this machine (no address file "
                         f"{path}): start one with `ray start --head` (and join the other machines with `ray "
                         "start --address=HEAD:PORT`), give its address (--cluster HOST:PORT), or use --cluster "
                         "local") from None
    if hasattr(os, "getuid") and owner != os.getuid():
        import pwd

        try:
            name = pwd.getpwuid(owner).pw_name
        except KeyError:
            name = f"uid {owner}"
        raise ValueError(f"--cluster auto found the cluster at {address} in {path}, started by another user "
                         f"({name}); auto joins only a cluster you started. To use it deliberately, give "
                         f"--cluster {address}; to start your own, `ray start --head --temp-dir DIR --port PORT`")
    try:
        check_reachable(address, what=f"from {path}")
    except ValueError as e:
        raise ValueError(f"{e}. The address file {path} names a cluster that no longer runs (one stopped "
                         f"without `ray stop` leaves it behind): start a cluster with `ray start --head`, or "
                         f"remove the stale file (rm {path})") from None
    return address, str(path)


@contextlib.contextmanager
def _lean_head() -> Iterator[None]:
    """Start a local cluster without three processes that a one-node, fixed-size cluster driven by this command does
    not use: the autoscaler's monitor (nothing to scale), the log monitor (it forwards the workers' output to the
    driver, which connects with ``log_to_driver=False``; the output stays in the session's log files) and the
    dashboard's head (``include_dashboard=False`` still starts it, for the job and state APIs, and ``ray.init``
    waits for it): three Python processes to start, part of ``ray.init``'s wait, and the monitor's second of grace
    at ``ray.shutdown`` (benchmarks/README.md, "Ray cluster"). ``ray.init`` has no argument for them, so this sets
    them on the node's parameters while it starts; another Ray than this was written for starts them as usual."""
    try:
        from ray._private.node import Node
        from ray._private.parameter import RayParams

        init, api_server = RayParams.__init__, Node.start_api_server
    except (ImportError, AttributeError):
        yield
        return

    def lean(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self.no_monitor, self.include_log_monitor = True, False

    def no_api_server(self: Any, **_: Any) -> None:
        self._webui_url = None

    RayParams.__init__, Node.start_api_server = lean, no_api_server
    try:
        yield
    finally:
        RayParams.__init__, Node.start_api_server = init, api_server


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
    return f"could not connect to the Ray cluster at {address}: {chain[0]}; check it with `ray status` on its head node"


class RayCluster:
    """An :class:`~sleepcl.runs.runner.Executor` that trains each population as one task on a Ray cluster.

    ``address``: ``"local"`` (start a cluster on this machine, shut down on exit), ``"auto"`` (the cluster
    ``ray start --head`` started on this machine, by this user) or ``"HOST:PORT"`` (connect to a running one).
    A process already connected to Ray (``ray.init`` called by the caller) uses that connection and leaves it
    open. The sleepcl package and the user files the configs name travel with every task (``runtime_env``
    ``py_modules``): a node needs Ray, torch and sleepcl's dependencies, not sleepcl; a ``"local"`` cluster runs
    this Python on this driver's files and ships nothing, starts with the first population to train (none if
    nothing is to train), and on CPU has the driver train as one of its places (:mod:`sleepcl.runs.driver_place`).
    ``timings``: seconds of ``connect``, ``probe`` and ``stop``. Use as a context manager::

        with RayCluster("auto", cpus_per_population=1) as cluster:
            records = run_configs(configs, executor=cluster, store=store)
    """

    def __init__(self, address: str = "local", *, cpus_per_population: int | None = None, max_retries: int = 3,
                 progress_interval: float = 0.5, ray_init: dict[str, Any] | None = None,
                 env_vars: dict[str, str] | None = None, log: Callable[[str], None] | None = None):
        if cpus_per_population is not None and cpus_per_population < 1:
            raise ValueError(f"--threads must be >= 1, got {cpus_per_population}")
        self.address, self.cpus = address, cpus_per_population or 1
        self.max_retries, self.progress_interval = max_retries, progress_interval
        self.ray_init = dict(ray_init or {})  # extra ray.init arguments for a local cluster (tests: num_cpus)
        self.log = log
        self.ray: Any = None
        self.nodes: list[Node] = []
        self.joined = ""         # the address connected to, and where it came from (for --cluster auto)
        self._entered = False
        self._owned = False
        self._local = False      # a cluster this process starts (--cluster local): it runs this Python, these files
        self._driver: DriverPlace | None = None   # the driver's own place on a local cluster, on CPU
        self.timings: dict[str, float] = {}   # seconds of each phase: connect, probe, stop (benchmarks/ray_overhead.py)
        self._auto_device = False  # --device auto: GPUs where there are, and the CPUs of nodes without
        self._board = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"  # where this command's tasks report progress
        self._benches: dict[tuple[Any, ...], Any] = {}
        self._staging: Path | None = None   # copies of the user files, shipped from here
        self._calls = 0
        self._totals = dict(populations=0, populations_done=0, members=0, members_done=0, work=0.0)
        self._done_work = 0.0
        self._running: dict[Any, tuple[float, float]] = {}   # key -> (cost, fraction done)
        self._costs: dict[Any, float] = {}   # the cost of each population the driver's place holds
        import sleepcl

        self._env_vars = {**{k: os.environ[k] for k in WORKER_ENV if k in os.environ}, **(env_vars or {})}
        self.runtime_env: dict[str, Any] = {
            "env_vars": self._env_vars,
            "py_modules": [str(Path(sleepcl.__file__).parent)],   # this driver's sources, on every node
            "excludes": SHIP_EXCLUDES}
        try:
            version = metadata.version("sleepcl")
        except metadata.PackageNotFoundError:
            version = None
        self._job = {"source_digest": source_digest(), "sleepcl": version, "files": {}}

    # -- connection -------------------------------------------------------------------------------------
    def __enter__(self) -> "RayCluster":
        if self.address == "local" and not _ray_connected():
            # started by the first train(), while the driver trains its first population (runs/driver_place.py);
            # Ray itself is imported then too, beside the driver's training
            _check_ray_installed()
            self._entered = self._local = True
            self.nodes = [self._this_machine()]
            return self
        ray = _import_ray()
        if self.address.startswith("ray://"):
            raise ValueError(f"--cluster {self.address}: Ray Client addresses (ray://) are not supported (the driver "
                             "ships its sources and the data through the cluster's own store): run sleepcl on a "
                             "machine of the cluster, the head for example, with --cluster HEAD_IP:6379 (the "
                             "address `ray start --head` printed) or --cluster auto")
        check_reachable(self.address)  # HOST:PORT: something answers there, and it is Ray
        self._entered = True
        started = time.perf_counter()
        if not ray.is_initialized():
            address, where = self.address, ""
            if address == "auto":
                address, where = auto_address()
            try:
                ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
            except (ConnectionError, RuntimeError) as e:
                raise ValueError(_connection_advice(address, e)) from None
            self._owned = True
            self.joined = address + (f" (from {where})" if where else "")
        self._connected(ray, started)
        return self

    def _this_machine(self) -> Node:
        """What a local cluster will offer before it is started: this machine's CPUs (or ``ray_init``'s
        ``num_cpus``), its GPUs, and the memory a population in this process is sized to."""
        from .memory import available_bytes

        cpus = self.ray_init.get("num_cpus")
        if cpus is None:
            cpus = usable_cpus()
        gpus = self.ray_init.get("num_gpus", torch.cuda.device_count() if torch.cuda.is_available() else 0)
        return Node("local", "127.0.0.1", float(cpus), float(gpus), float(available_bytes("cpu")[0]))

    def _start_local(self, reserve: int) -> None:
        """Start this machine's cluster with ``reserve`` CPUs fewer than it has: the driver's place trains on them."""
        started = time.perf_counter()
        init = {**self.ray_init, "num_cpus": int(self.nodes[0].cpus) - reserve}
        # Ray starts its workers at nice 15 so that a machine's drivers stay responsive; here they do the study's
        # work beside the driver's place (nice 0), and at 15 they lose to every other process: on this project's
        # loaded 2-core machine the probe's worker took 42 s to import torch (benchmarks/README.md)
        init["_system_config"] = {"worker_niceness": 0, **init.get("_system_config", {})}
        ray = _import_ray()
        from ..models.module import GLOBAL_RANDOM_LOCK

        try:  # ray.init draws from Python's random generator: not while a model is checked for doing so
            with GLOBAL_RANDOM_LOCK, self._local_environment(), _lean_head():
                ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False,
                         **init)
        except (ConnectionError, RuntimeError) as e:
            raise ValueError(_connection_advice("local", e)) from None
        self._owned, self.joined = True, "local"
        self._connected(ray, started)

    def _connected(self, ray: Any, started: float) -> None:
        """Check, once connected, that the nodes can run this driver's sources, and learn what they offer."""
        self.ray = ray
        self.timings["connect"] = time.perf_counter() - started
        try:
            self._check_unchanged()
            if self._local:  # nothing to ship: the node's processes run this Python on these files
                self.runtime_env = {}
            else:
                self.runtime_env = self._upload(self.runtime_env)
            self.nodes = [Node(n["NodeID"], n["NodeManagerAddress"], float(n["Resources"].get("CPU", 0)),
                               float(n["Resources"].get("GPU", 0)), float(n["Resources"].get("memory", 0)))
                          for n in ray.nodes() if n.get("Alive")]
            if self.log is not None and self.address == "auto":
                self.log(f"joined the Ray cluster at {self.joined}: {self.describe_nodes()}")
            started = time.perf_counter()
            self._check_sources()
            self.timings["probe"] = time.perf_counter() - started
        except BaseException:
            self.__exit__(None, None, None)
            raise

    @contextlib.contextmanager
    def _local_environment(self) -> Iterator[None]:
        """The environment a local cluster's processes start with, so that its workers need no runtime_env (which
        would keep them from using the workers Ray starts with the node, and cost an upload and an unpacking per
        command): this driver's sleepcl first on ``PYTHONPATH``, then the folder the user files are copied to
        (:meth:`_ship`), and the workers' environment variables. Ray adds the driver's folder itself."""
        import sleepcl

        paths = [str(Path(sleepcl.__file__).resolve().parent.parent), str(self._folder())]
        saved = {k: os.environ.get(k) for k in ("PYTHONPATH", *self._env_vars)}
        os.environ.update(self._env_vars)
        os.environ["PYTHONPATH"] = os.pathsep.join(paths + ([saved["PYTHONPATH"]] if saved["PYTHONPATH"] else []))
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def __exit__(self, *exc: Any) -> None:
        if self._driver is not None:
            self._driver.stop()
            self._driver = None
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None
        if self.ray is None:
            return
        with contextlib.suppress(Exception):  # a cluster that went away took the reports with it
            progress_board.clear(self._board)
        if self._owned:
            started = time.perf_counter()
            self.ray.shutdown()
            self.timings["stop"] = time.perf_counter() - started
        self.ray = None

    def _check_unchanged(self) -> None:
        """Refuse to ship sources that are not the ones this process runs (edited since it started)."""
        import sleepcl

        root = Path(sleepcl.__file__).resolve().parent
        now = package_digest(root)
        if now != self._job["source_digest"]:
            raise ValueError(f"the sleepcl sources in {root} changed while this command ran (digest "
                             f"{self._job['source_digest']} when it started, {now} now): the workers would run "
                             "other code than this driver; run the command again")

    def describe_nodes(self) -> str:
        return "; ".join(f"{n.ip} ({n.node_id[:8]}): {n.cpus:g} CPU, {n.gpus:g} GPU" for n in self.nodes) \
            or "no alive node"

    def _check_sources(self) -> None:
        """Run a probe on every node with the shipped sources; refuse before any training if a node cannot run
        them (a missing dependency) or if they are not what this driver runs."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        ray = self.ray
        probe = ray.remote(_probe)
        refs, warm = [], []
        for n in self.nodes:
            # A local cluster's tasks all run in one environment, so a worker started now serves every population:
            # one per place, each holding its place's CPUs so that they start side by side, importing torch and
            # sleepcl while nothing else runs rather than while the first populations train.
            fit = int(n.cpus // self.cpus) if self._local else 0
            on_node = [probe.options(num_cpus=self.cpus if fit else 0, runtime_env=self.runtime_env,
                                     scheduling_strategy=NodeAffinitySchedulingStrategy(n.node_id, soft=False)).remote()
                       for _ in range(max(fit, 1))]
            refs.append(on_node[0])
            warm += on_node[1:]
        end = time.monotonic() + PROBE_TIMEOUT_S
        try:
            answers = []
            for node, ref in zip(self.nodes, refs):  # one by one, to name the node that fails
                try:
                    answers.append(ray.get(ref, timeout=max(end - time.monotonic(), 0.1)))
                except ray.exceptions.RayTaskError as e:
                    cause = getattr(e, "cause", None) or e
                    if isinstance(cause, ModuleNotFoundError) and cause.name:  # sleepcl's own imports failed there
                        raise ValueError(_lacks(node, [cause.name.split(".")[0]])) from None
                    raise ValueError(f"node {node.ip} ({node.node_id[:8]}) cannot run sleepcl ({type(cause).__name__}: "
                                     f"{str(cause)[-600:]}); every node needs Ray, torch and sleepcl's dependencies, "
                                     "the same versions as here (README: Studies on a Ray cluster)") from None
            ray.get(warm, timeout=max(end - time.monotonic(), 0.1))
        except ray.exceptions.GetTimeoutError:
            for ref in refs + warm:
                ray.cancel(ref, force=True)
            raise ValueError(f"the cluster's nodes did not all answer within {PROBE_TIMEOUT_S:.0f} s: check them "
                             "with `ray status` on the head node") from None
        except ray.exceptions.RayError as e:
            raise ValueError(f"a node of the cluster cannot run sleepcl ({type(e).__name__}: {str(e)[-600:]}); "
                             "every node needs Ray, torch and sleepcl's dependencies, the same versions as here "
                             "(README: Studies on a Ray cluster)") from None
        mine = _probe()
        for node, theirs in zip(self.nodes, answers):
            if theirs.get("missing"):
                raise ValueError(_lacks(node, theirs["missing"]))
            if theirs["source_digest"] != mine["source_digest"]:
                raise ValueError(_source_mismatch(mine, node.ip, theirs))

    # -- the executor ---------------------------------------------------------------------------------
    def resolve_device(self, device: str | torch.device) -> torch.device:
        """The device on the cluster's nodes. ``auto``: CUDA when some node has a GPU, and then populations train
        on the GPUs and on the CPUs of the nodes without one; ``cuda``: on GPUs only; ``cpu``: on every node's
        CPUs. A population must fit on one node (its CPUs and, on CUDA, a GPU): refused here otherwise."""
        text = str(device)
        self._auto_device = False
        if text == "auto":
            dev = torch.device("cuda" if any(n.gpus >= 1 for n in self.nodes) else "cpu")
            self._auto_device = dev.type == "cuda"
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
        offer = self.describe_nodes()
        if gpus and not any(n.gpus >= 1 for n in self.nodes):
            raise ValueError(f"--device {dev} but no node of the cluster has a GPU ({offer}): use --device cpu, or "
                             "join a GPU machine (ray start --address=HEAD:PORT there)")
        raise ValueError(f"a population needs {self.cpus} CPU(s) (--threads {self.cpus})"
                         + (" and a GPU" if gpus else "") + f" on one node, and no node of the cluster has that "
                         f"({offer}): lower --threads, or join a larger machine")

    def kinds(self, dev: torch.device) -> list[tuple[str, int]]:
        """``(device, slots)`` for each kind of task the populations go to: on CUDA from ``--device auto``, the
        GPUs, then the CPUs of the nodes without a GPU (``slots`` 0: as many as Ray queues)."""
        if dev.type == "cpu":
            return [("cpu", 0)]
        if not self._auto_device:
            return [("cuda", 0)]
        cpu_only = [n for n in self.nodes if n.gpus < 1]
        gpu_slots = population_slots(self.nodes, self.cpus, 1)
        cpu_slots = population_slots(cpu_only, self.cpus, 0)
        return [("cuda", gpu_slots)] + ([("cpu", cpu_slots)] if cpu_slots else [])

    def slots(self, dev: torch.device) -> int:
        return sum(slots for _, slots in self.kinds(dev)) if self._auto_device and dev.type == "cuda" \
            else population_slots(self.nodes, self.cpus, 1 if dev.type == "cuda" else 0)

    def _memory_fit(self, todo: list[RunConfig], device: torch.device, max_population: int | None,
                    max_memory: int | None, log: Callable[[str], None] | None) -> tuple[dict[str, int | None],
                                                                                       Callable]:
        """The largest population for each kind of task (:meth:`kinds`; ``None``: no cap) and each population's
        memory request, both from the estimate that sizes populations in one process (:mod:`sleepcl.runs.memory`).
        On CPU the members live in a node's memory: populations fit in the largest node's memory for tasks (or
        ``max_memory``), on ``--device auto`` the largest node's without a GPU; on a GPU only the data does (a
        GPU's memory is not Ray's to tell: running out of it makes a population smaller)."""
        from .runner import memory_plan

        plans = {}
        for group in group_populations(todo):  # one estimate per kind of run, measured nowhere (a huge limit)
            plan = memory_plan(group[0], torch.device("cpu"), 2**62)
            plans.update((c.hash(), plan) for c in group)

        largest = max((n.memory for n in self.nodes), default=0)

        def request(members: Sequence[RunConfig], kind: str) -> int:
            """Bytes of host memory: on CUDA the data's copy, on CPU the members too; never more than a node has
            (Ray would hold such a task forever)."""
            plan = plans[members[0].hash()]
            need = plan.data + (len(members) * plan.per_member if kind == "cpu" else 0)
            return int(min(need, largest) if largest > 0 else need)

        caps: dict[str, int | None] = {kind: max_population for kind, _ in self.kinds(device)}
        if "cpu" not in caps:
            return caps, request
        cpu_nodes = [n for n in self.nodes if device.type == "cpu" or n.gpus < 1]
        node_memory = max((n.memory for n in cpu_nodes), default=0)
        limit = max_memory if max_memory is not None else (int(node_memory) if node_memory > 0 else None)
        if limit is None:
            return caps, request
        source = "--max-memory" if max_memory is not None else (
            "the largest node's memory for Ray tasks" if device.type == "cpu"
            else "the largest memory for Ray tasks of a node without a GPU")
        fits = None
        for group in group_populations(todo):
            p = plans[group[0].hash()]
            plan = plan_population(p.per_member, p.data, limit, source)
            if plan.fits < 1:
                c = group[0]
                raise ValueError(f"not enough memory on any node of the cluster for even one {c.network} member on "
                                 f"{c.benchmark}: {plan.describe(1)}; use a smaller network or batch, or join a "
                                 "larger machine" + (" (or --device cuda, to train on the GPUs only)"
                                                     if device.type == "cuda" else ""))
            fits = plan.fits if fits is None else min(fits, plan.fits)
            if log is not None and plan.fits < len(group):
                log(f"populations of up to {plan.fits} members" + (" on CPU nodes" if device.type == "cuda" else "")
                    + f": {plan.describe(plan.fits)}")
        if fits is not None:
            caps["cpu"] = min(max_population or fits, fits)
        return caps, request

    def train(self, todo: list[RunConfig], data: BenchmarkCache, device: torch.device, *,
              max_population: int | None, max_memory: int | None = None,
              progress: Callable[[ClusterProgress], None] | None = None,
              log: Callable[[str], None] | None = None) -> Iterator[list[dict[str, Any]]]:
        """Submit the populations (longest first), yield each one's records as it finishes.

        Populations are split to the cluster's room (``max_population`` caps them) and to the memory of its
        largest node (``max_memory`` in its place when given); each task asks Ray for the memory its population
        needs, so a node runs only as many at once as fit. A population that runs out of CUDA memory is split in
        two and tried again. A local cluster starts here, on the first call; on CPU the driver keeps one place's
        CPUs back and trains from the start, while the cluster starts (:mod:`sleepcl.runs.driver_place`)."""
        if not self._entered:
            raise RuntimeError("RayCluster is used as a context manager: with RayCluster(...) as cluster: ...")
        if not todo:
            return
        steps = {c.hash(): member_steps(c, data.get(c)) for c in todo}
        cost = lambda members: float(sum(steps[c.hash()] for c in members))  # noqa: E731
        call, self._calls = self._calls, self._calls + 1
        counter = iter(range(10**9))
        handed: dict[Any, list[RunConfig]] = {}   # what the driver's place took in this call
        if self.ray is None:  # a local cluster, not started yet
            places = int(self.nodes[0].cpus // self.cpus)
            if device.type == "cpu" and places >= 2:
                # the driver trains from the start, while the cluster starts (seconds, mostly waiting): the whole
                # plan is its queue until then, and what it has not begun is shared out again
                caps, _ = self._memory_fit(todo, device, max_population, max_memory, log)
                self._driver = DriverPlace(device, self.cpus)
                for members in plan_populations(todo, caps["cpu"], places, lambda c: steps[c.hash()]):
                    key = (call, next(counter))
                    handed[key] = members
                    self._hand_to_driver(members, key, data, cost)
            try:
                if self._driver is not None:  # its networks are checked without Ray drawing random numbers beside
                    self._driver.built.wait(BUILD_WAIT_S)
                self._start_local(reserve=self.cpus if self._driver is not None else 0)
            except BaseException:
                if self._driver is not None:
                    self._driver.stop()
                raise
            if self._driver is not None:
                for key in self._driver.take_back():
                    self._forget(key, handed.pop(key))
        ray = self.ray
        driver = self._driver
        taken = {c.hash() for members in handed.values() for c in members}
        rest = [c for c in todo if c.hash() not in taken]
        kinds = self.kinds(device)
        caps, request = self._memory_fit(rest or todo, device, max_population, max_memory, log)
        if driver is not None:
            # the driver's place (busy with what it began while the cluster started) and Ray's end together
            backlog = driver.backlog(self._costs)
            shares = share_out(rest, caps["cpu"], [backlog] + [0.0] * self.slots(device), lambda c: steps[c.hash()])
            for members in shares[0]:
                self._hand_to_driver(members, (call, next(counter)), data, cost)
            queue = sorted((p for place in shares[1:] for p in place), key=lambda p: -cost(p))
        else:
            # planned to the first kind's cap; a population taken by a kind with a smaller one is cut there (submit)
            queue = plan_populations(rest, caps[kinds[0][0]], self.slots(device), lambda c: steps[c.hash()])
        board = self._board if progress is not None else None
        runtime_env, job = self._ship(rest) if rest else (self.runtime_env, self._job)
        busy = {kind: 0 for kind, _ in kinds}
        task = ray.remote(_train_population)
        pending: dict[Any, tuple[Any, list[RunConfig], str]] = {}

        def submit() -> None:
            for kind, slots in kinds:
                while queue and (not slots or busy[kind] < slots):
                    members = queue.pop(0)
                    cap = caps[kind]
                    if cap is not None and len(members) > cap:  # a CPU node of --device auto holds fewer
                        queue.insert(0, members[cap:])
                        members = members[:cap]
                        self._totals["populations"] += 1
                    key = (call, next(counter))
                    self._running[key] = (cost(members), 0.0)
                    ref = task.options(num_cpus=self.cpus, num_gpus=1 if kind == "cuda" else 0,
                                       memory=request(members, kind), max_retries=self.max_retries,
                                       retry_exceptions=False, runtime_env=runtime_env).remote(
                        members, self._bench_ref(data, members[0]), kind, self.cpus, job, key, board,
                        self.progress_interval)
                    pending[ref] = (key, members, kind)
                    busy[kind] += 1

        for members in queue:
            self._totals["populations"] += 1
            self._totals["members"] += len(members)
            self._totals["work"] += cost(members)
        try:
            submit()
            while pending or (driver is not None and driver.busy):
                for done in driver.finished(wait=0 if pending else self.progress_interval) if driver else []:
                    self._finished(done.key, len(done.members))
                    self._report(progress)
                    yield self._driver_records(done)
                if not pending:
                    self._report(progress)
                    continue
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=self.progress_interval)
                for ref in ready:
                    key, members, kind = pending.pop(ref)
                    busy[kind] -= 1
                    records = self._result(ref, members, kind)
                    if records is None:  # out of CUDA memory: two halves, back in the queue
                        self._running.pop(key, None)
                        half = len(members) // 2
                        queue[:0] = [members[:half], members[half:]]
                        self._totals["populations"] += 1
                        if log is not None:
                            log(f"a population of {len(members)} ran out of CUDA memory; trying it again as two "
                                f"of {half} and {len(members) - half}")
                    else:
                        self._finished(key, len(members))
                        self._report(progress)
                        yield records
                    submit()
                if not ready:
                    self._report(progress)
        finally:
            for ref in pending:  # an error, Ctrl-C, or a caller that stopped reading: nothing keeps training
                ray.cancel(ref, force=True)
            for key, _, _ in pending.values():
                self._running.pop(key, None)
            if driver is not None and driver.busy:
                driver.stop()
                self._driver = None  # a stopped place takes no more work

    def _hand_to_driver(self, members: list[RunConfig], key: Any, data: BenchmarkCache,
                        cost: Callable[[Sequence[RunConfig]], float]) -> None:
        assert self._driver is not None
        self._costs[key] = cost(members)
        self._running[key] = (cost(members), 0.0)
        self._totals["populations"] += 1
        self._totals["members"] += len(members)
        self._totals["work"] += cost(members)
        self._driver.add(key, members, data.get(members[0]))

    def _forget(self, key: Any, members: list[RunConfig]) -> None:
        """Undo :meth:`_hand_to_driver` for a population the driver's place gave back before beginning it."""
        cost = self._costs.pop(key)
        self._running.pop(key, None)
        self._totals["populations"] -= 1
        self._totals["members"] -= len(members)
        self._totals["work"] -= cost

    def _driver_records(self, done: Finished) -> list[dict[str, Any]]:
        """The records of a population the driver's place trained, or its error raised as a remote one is."""
        self._costs.pop(done.key, None)
        if done.error is not None:
            raise ClusterError(f"a population failed in the driver's place of the local cluster: "
                               f"{describe_population(done.members)}: {type(done.error).__name__}: "
                               f"{done.error}") from done.error
        ray = self.ray
        env = {**(done.environment or {}), "sleepcl": self._job["sleepcl"],
               "cluster_node": ray.util.get_node_ip_address(),
               "cluster_node_id": ray.get_runtime_context().get_node_id(), "cluster_place": "driver",
               "ray": ray.__version__}
        return [make_record(r, env) for r in done.results or []]

    def _ship(self, todo: Sequence[RunConfig]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The tasks' runtime_env and job: the package, plus the user files the configs name (sleepcl.usercode)."""
        sources = user_sources(c.to_dict() for c in todo)
        if not sources.files and not sources.modules:
            return self.runtime_env, {**self._job, "files": {}}
        if self._local:  # the copies go to a folder on the workers' path; the driver's folder is on it too
            sources.stage(self._folder())
            return self.runtime_env, {**self._job, "files": sources.mapping()}
        env = {**self.runtime_env, "py_modules": [*self.runtime_env["py_modules"], *sources.stage(self._folder())]}
        return self._upload(env), {**self._job, "files": sources.mapping()}

    def _folder(self) -> Path:
        if self._staging is None:
            self._staging = Path(tempfile.mkdtemp(prefix="sleepcl-ship-"))
        return self._staging

    def _upload(self, env: dict[str, Any]) -> dict[str, Any]:
        """``env`` with its local ``py_modules`` uploaded to the cluster (content-addressed: an upload Ray already
        holds is not sent again) and named by URI, as ``ray.init`` does for a job's runtime_env; a task's own
        runtime_env takes URIs only."""
        from ray._private.runtime_env.py_modules import upload_py_modules_if_needed

        quiet = logging.getLogger("sleepcl.cluster.upload")
        quiet.setLevel(logging.WARNING)
        out = upload_py_modules_if_needed(dict(env), include_gitignore=False, scratch_dir=str(self._folder()),
                                          logger=quiet)
        out.pop("excludes", None)
        return out

    def _bench_ref(self, data: BenchmarkCache, config: RunConfig) -> Any:
        key = (str(data.data_dir), data.download, *data.key(config))
        if key not in self._benches:
            self._benches[key] = self.ray.put(pack_benchmark(data.get(config)))
        return self._benches[key]

    def _result(self, ref: Any, members: list[RunConfig], kind: str) -> list[dict[str, Any]] | None:
        """The records of a finished task; None when it ran out of CUDA memory and can be split."""
        ray = self.ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None) or e
            if isinstance(cause, SourceMismatch):
                raise ValueError(str(cause)) from None
            if isinstance(cause, torch.OutOfMemoryError) and len(members) > 1:
                return None
            hint = ""
            if isinstance(cause, torch.OutOfMemoryError):
                hint = "; even one member does not fit in a GPU's memory: use a smaller network or batch, or --device cpu"
            elif isinstance(cause, ModuleNotFoundError):
                hint = ("; a module the code imports is not installed on that node: install it there (sleepcl "
                        "itself and the user files the configs name are shipped, installed packages are not)")
            raise ClusterError(f"a population failed on the cluster: {describe_population(members)}: "
                               f"{type(cause).__name__}: {cause}{hint}") from None
        except ray.exceptions.RuntimeEnvSetupError as e:
            raise ClusterError(f"a node could not set up the sleepcl sources or user files shipped to it "
                               f"({str(e)[-600:]}); check the node with `ray status` and its log "
                               "(runtime_env_setup-*.log in the session's logs folder)") from None
        except ray.exceptions.RayError as e:
            raise ClusterError(f"a population was lost on the cluster after {self.max_retries} retries: "
                               f"{describe_population(members)}: {type(e).__name__}: {e}") from None

    def _finished(self, key: Any, size: int) -> None:
        cost, _ = self._running.pop(key)
        if key not in self._costs:  # a task's report (the driver's place reports in process)
            progress_board.clear(self._board, key)
        self._done_work += cost
        self._totals["populations_done"] += 1
        self._totals["members_done"] += size

    def _report(self, progress: Callable[[ClusterProgress], None] | None) -> None:
        if progress is None:
            return
        self._read_progress()
        running = [(cost, f) for cost, f in self._running.values() if f > 0]
        t = self._totals
        progress(ClusterProgress(t["populations"], t["populations_done"], len(running), t["members"],
                                 t["members_done"], t["work"], self._done_work + sum(c * f for c, f in running)))

    def _read_progress(self) -> None:
        """The latest fraction done of each running population: the tasks' from the board, the driver's place's
        from its thread."""
        fractions = progress_board.read(self._board, [k for k in self._running if k not in self._costs])
        if self._driver is not None:
            fractions.update(self._driver.fraction)
        for key, fraction in fractions.items():
            if key in self._running:
                self._running[key] = (self._running[key][0], fraction)
