"""The same small study two ways in one run: in this process, and through a one-machine Ray cluster.

Both sides train the study's runs on the same cores from an empty results store: in process with
``--threads`` torch threads (a population as one group of members per thread, side by side), and through
``RayCluster("local")`` with one CPU and one thread per population, ``--threads`` CPUs in all, exactly
what ``sleepcl study ... --cluster local --threads 1`` does, progress reports included (on a cluster
through the cluster's key-value store, as for the command's bar). On a local cluster the driver keeps one place's CPU and trains
there (``sleepcl/runs/driver_place.py``): it starts its first population at once and starts the cluster
meanwhile, and Ray gets the other CPUs. The cluster's time is taken end to end (from creating the executor
to the end of its stop: what a user waits for), with where its seconds go: the cluster's start inside the
study (``ray.init``, then the probe, which on a local cluster also starts a worker per place), the study
beyond the in-process time, the stop. Prints the ratio against the in-process time, the CPU seconds of both
sides, how many members each place of the cluster trained, and checks that both sides stored the same
records (accuracies, free fractions, configs).

Then the cost of shipping the data through Ray's object store instead of a shared data folder: the time to
put a benchmark (packed as numpy arrays) and, in a worker, to get it and copy it into tensors, for the
study's benchmark and for Fashion-MNIST (MNIST's size) where it is installed.

    python benchmarks/ray_overhead.py                        # quick pruning grid on mnist-5k, seed 0
    python benchmarks/ray_overhead.py --experiments pruning matching --seeds 0-1 --repeats 2

Times are wall-clock seconds; with --repeats > 1 the two sides alternate and the minimum of each counts
(the machine is shared; the load averages are printed).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")  # as the sleepcl command does: the same bits on any thread count

import torch  # noqa: E402

from sleepcl.config import parse_int_list  # noqa: E402
from sleepcl.data.split import load_split_benchmark  # noqa: E402
from sleepcl.runs.cluster import RayCluster, pack_benchmark, unpack_benchmark  # noqa: E402
from population_speed import load_average  # noqa: E402
from procs import descendants  # noqa: E402

from sleepcl.runs.store import RunStore  # noqa: E402
from sleepcl.study.experiments import cost_epochs, expand_names, settings, study_configs  # noqa: E402
from sleepcl.study.run import run_study  # noqa: E402
from sleepcl.threads import torch_threads  # noqa: E402

SAME = ("config", "accuracy_matrix", "val_accuracy_matrix", "average_accuracy", "free_fraction_after_task",
        "free_fraction_after_round", "layer_free_fraction")


def descendants_cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) of every live process under this one (a local cluster's daemons and
    workers), by kind: ``workers`` (Ray's worker processes: the tasks', the probe's, idle ones) and ``daemons``
    (the GCS, the raylet, the dashboard and its agents, the monitors)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {"workers": 0.0, "daemons": 0.0}
    for pid, f in descendants().items():
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        agent = title.startswith((b"ray::DashboardAgent", b"ray::RuntimeEnvAgent"))
        kind = "workers" if title.startswith(b"ray::") and not agent else "daemons"
        out[kind] += (int(f[11]) + int(f[12])) / tick
    return out


def ignore(progress: object) -> None:
    """Both sides report progress as the command does for its bar (on a cluster: through its key-value store)."""


def in_process(names: list[str], s, threads: int, folder: Path) -> tuple[dict[str, float], dict]:
    store = RunStore(folder / "in-process.sqlite")
    started, cpu = time.perf_counter(), time.process_time()
    with torch_threads(threads):
        run_study(names, s, store=store, device="cpu", progress=ignore)
    times = {"total": time.perf_counter() - started, "cpu": time.process_time() - cpu}
    return times, {r["config_hash"]: r for r in store.query()}


def on_cluster(names: list[str], s, threads: int, folder: Path) -> tuple[dict[str, float], dict]:
    store = RunStore(folder / "cluster.sqlite")
    t0, cpu0 = time.perf_counter(), time.process_time()
    cluster = RayCluster("local", cpus_per_population=1, ray_init={"num_cpus": threads}).__enter__()
    try:
        t1 = time.perf_counter()
        run_study(names, s, store=store, device="cpu", executor=cluster, progress=ignore)
        t2 = time.perf_counter()
        parts = descendants_cpu_seconds()  # the cluster's processes, before they end
        driver = time.process_time() - cpu0
        cpu = driver + sum(parts.values())
    finally:
        cluster.__exit__(None, None, None)
    t3 = time.perf_counter()
    records = {r["config_hash"]: r for r in store.query()}
    places = [r["environment"].get("cluster_place") for r in records.values()]
    times = {"start": t1 - t0, "study": t2 - t1, "stop": t3 - t2, "total": t3 - t0, "cpu": cpu, "driver": driver,
             **parts, **{f"cluster_{k}": v for k, v in cluster.timings.items()},
             "members_driver": places.count("driver"), "members_workers": places.count("worker")}
    return times, records


def same_records(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(a[h][k] == b[h][k] for h in a for k in SAME)


def object_store_cost(benchmarks: list[str]) -> list[str]:
    """Put each benchmark into the object store; in a worker, get it and copy it into tensors (seconds)."""
    import ray

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)

    def fetch(packed) -> float:  # the argument arrives already mapped from the object store
        t = time.perf_counter()
        unpack_benchmark(packed)
        return time.perf_counter() - t

    remote = ray.remote(num_cpus=1)(fetch)
    lines = []
    try:
        for i, name in enumerate(benchmarks):
            bench = load_split_benchmark(name)
            if i == 0:  # start the worker (and its imports) untimed
                ray.get(remote.remote(ray.put(pack_benchmark(bench))))
            size = sum(t.numel() * t.element_size() for t in (bench.x, bench.y, bench.task, *bench.train,
                                                             *bench.val, *bench.test))
            t = time.perf_counter()
            ref = ray.put(pack_benchmark(bench))
            put = time.perf_counter() - t
            t = time.perf_counter()
            copy = ray.get(remote.remote(ref))
            task = time.perf_counter() - t
            lines.append(f"| {name} | {size / 2**20:.0f} | {put:.3f} | {copy:.3f} | {task:.3f} |")
    finally:
        ray.shutdown()
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--experiments", nargs="+", default=["pruning"], help="study experiments to run")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--benchmark", default="mnist-5k")
    ap.add_argument("--seeds", default="0", help="the study's seeds (default 0: 30 runs of the quick grid)")
    ap.add_argument("--threads", type=int, default=2, help="cores for both sides")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--no-data", action="store_true", help="skip the object-store measurement")
    args = ap.parse_args()

    names = expand_names(args.experiments)
    s = settings(args.preset, args.benchmark, seeds=parse_int_list(args.seeds))
    configs = study_configs(names, s)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; torch {torch.__version__}; "
          f"python {platform.python_version()}")
    import ray

    print(f"ray {ray.__version__}; load average at start {load_average()}")
    print(f"study: {' '.join(names)} --preset {args.preset} --benchmark {args.benchmark} --seeds {args.seeds}: "
          f"{len(configs)} runs in the fixed grids, {cost_epochs(configs)} member task-epochs "
          f"({s.describe()})")
    print(f"in process: {args.threads} torch threads; cluster: a local Ray cluster of {args.threads} CPUs, "
          "one CPU and one thread per population\n")

    inproc, cluster, same = [], [], []
    for r in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            order = ("in", "ray") if r % 2 == 0 else ("ray", "in")
            got: dict[str, dict] = {}
            for side in order:
                if side == "in":
                    times, got["in"] = in_process(names, s, args.threads, Path(tmp))
                    inproc.append(times)
                    print(f"repeat {r + 1}: in process {times['total']:.1f} s ({times['cpu']:.1f} CPU s)")
                else:
                    times, got["ray"] = on_cluster(names, s, args.threads, Path(tmp))
                    cluster.append(times)
                    print(f"repeat {r + 1}: cluster {times['total']:.1f} s (entering {times['start']:.1f}; study "
                          f"{times['study']:.1f}, the cluster starting inside it: ray.init "
                          f"{times['cluster_connect']:.1f}, probe and workers {times['cluster_probe']:.1f}; stop "
                          f"{times['stop']:.1f}; {times['cpu']:.1f} CPU s: the driver {times['driver']:.1f}, "
                          f"Ray's workers {times['workers']:.1f}, Ray's daemons {times['daemons']:.1f}; members "
                          f"trained by the driver {times['members_driver']}, by Ray's workers "
                          f"{times['members_workers']})")
            same.append(same_records(got["in"], got["ray"]))
            stored = len(got["in"])

    best_in = min(t["total"] for t in inproc)
    best_total = min(c["total"] for c in cluster)
    print(f"\nload average at end {load_average()}")
    print(f"records identical (accuracy matrices, free fractions, configs): {'yes' if all(same) else 'NO'} "
          f"({stored} runs stored by each side)")
    print(f"in process: {best_in:.1f} s; cluster end to end: {best_total:.1f} s (min over {args.repeats} repeat(s))")
    print(f"overhead ratio, end to end: {best_total / best_in:.3f}x (goal <= 1.15x)")
    if args.repeats > 1:  # the sides alternate, so each repeat's two runs ran back to back
        paired = sorted(c["total"] / i["total"] for c, i in zip(cluster, inproc))
        print(f"each repeat's ratio (its two runs back to back): {', '.join(f'{x:.3f}' for x in paired)}; median "
              f"{statistics.median(paired):.3f}x")
    fast = min(cluster, key=lambda c: c["total"])
    print(f"where the cluster's {fast['total'] - best_in:+.1f} s go (its fastest repeat against the fastest in process): "
          f"entering {fast['start']:.1f}, the study {fast['study'] - best_in:+.1f} (the cluster started inside it "
          f"in {fast['cluster_connect'] + fast['cluster_probe']:.1f} s: ray.init {fast['cluster_connect']:.1f}, probe and "
          f"workers {fast['cluster_probe']:.1f}, while the driver trained), stop {fast['stop']:.1f}")
    cpu_in, cpu_ray = min(t["cpu"] for t in inproc), min(c["cpu"] for c in cluster)
    print(f"CPU seconds: in process {cpu_in:.1f}, cluster {cpu_ray:.1f} (driver, Ray's daemons and workers): "
          f"{cpu_ray / cpu_in:.3f}x")

    if not args.no_data:
        names_data = [args.benchmark]
        if Path("/usr/share/datasets/fashion-mnist").is_dir() and args.benchmark != "fashion-mnist":
            names_data.append("fashion-mnist")
        print("\nthe data through the object store (seconds; the driver's put, a worker's get + copy into tensors, "
              "and the whole task round trip):\n")
        print("| benchmark | MB | put | get + copy in the worker | task round trip |")
        print("|---|---|---|---|---|")
        for line in object_store_cost(names_data):
            print(line)


if __name__ == "__main__":
    sys.exit(main())
