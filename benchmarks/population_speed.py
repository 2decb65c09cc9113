"""The same PackNet runs two ways in one process: a plain PyTorch loop run after run, and sleepcl's population.

Prints, per workload:

1. head to head at S = --compare members: the plain loop (benchmarks/plain_loop.py) runs the S configs
   one after another; sleepcl trains them as one population, on its fast path (the default: on a CPU with
   several threads, as one group of members per thread side by side, see sleepcl/engine/workers.py), as one
   group on all threads (what the groups buy), and, for what the fast path buys, on its reference path.
   Interleaved, --repeats times, the order alternating.
   Per member-epoch seconds, the ratio, achieved GFLOP/s against the fp32 matmul peak measured in this
   script, peak memory and the mean final accuracy (a check that both sides learn the same thing);
2. scaling: the sleepcl population at each S of --sizes: time, per member-epoch time, GFLOP/s, peak memory.

Workloads: ``mlp``, the paper's MLP (784-256-256, a 2-way head per task) on Split Fashion-MNIST (real data,
exactly MNIST's size, batch 128, Adam 1e-3); ``vgg``, the paper's small VGG on CIFAR-10-shaped *synthetic*
tensors (3x32x32, batch 32, Adam 1e-4; random images with a faint class pattern: for timing only).

Times are wall-clock seconds of whole runs (initialisation, training, pruning and evaluation after every
task); an "epoch" is one pass over a task's training data, and every member does T x (E + B) of them.
FLOPs are counted analytically: the matmuls and convolutions of forward + backward (weight and input
gradients, none for the input layer) of every training sample, and the forward of every evaluated one.
Peak memory on CPU is the peak resident set size during the run above the resident size before it
(Linux VmHWM, reset per run); on CUDA torch.cuda.max_memory_allocated. The machine is shared: times are
the minimum over the repeats (the least disturbed), and the load averages are printed.
"""

from __future__ import annotations

import argparse
import ctypes
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from plain_loop import run_packnet  # noqa: E402

from sleepcl.config import RunConfig  # noqa: E402
from sleepcl.data.datasets import RawDataset  # noqa: E402
from sleepcl.models import build_network  # noqa: E402
from sleepcl.engine.population import FAST_PARTS, train_population  # noqa: E402
from sleepcl.data.split import SplitBenchmark, class_pairs, load_split_benchmark, make_split_benchmark  # noqa: E402
from sleepcl.engine.workers import default_workers  # noqa: E402
from sleepcl.engine.evaluation import EVAL_PARTS  # noqa: E402

# ----------------------------------------------------------------------------------------- machine


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMeter:
    """The fp32 matmul peak: the best GFLOP/s torch.mm reaches on square matrices, re-measured during the
    run (the best measurement counts: a loaded moment must not lower the bar the engine is judged by)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.sizes = (256, 512, 1024, 2048) if device.type == "cpu" else (2048, 4096, 8192)
        self.best = 0.0
        self.samples: list[float] = []

    def measure(self, budget_s: float = 2.0) -> float:
        found = 0.0
        for n in self.sizes:
            a = torch.randn(n, n, device=self.device)
            b = torch.randn(n, n, device=self.device)
            torch.mm(a, b)
            sync(self.device)
            start = time.perf_counter()
            for _ in range(20):
                t0 = time.perf_counter()
                torch.mm(a, b)
                sync(self.device)
                dt = time.perf_counter() - t0
                found = max(found, 2 * n**3 / dt / 1e9)
                if time.perf_counter() - start > budget_s / len(self.sizes):
                    break
        self.samples.append(found)
        self.best = max(self.best, found)
        return found


class MemoryMeter:
    """Peak memory of one run: CUDA allocator peak, or Linux peak RSS above the RSS at the start."""

    def __init__(self, device: torch.device):
        self.device = device
        self.base = 0

    @staticmethod
    def _status(key: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        return 0

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass
        self.base = self._status("VmRSS")

    def peak(self) -> tuple[float, float]:
        """(peak MB in total, peak MB above the start)."""
        if self.device.type == "cuda":
            top = torch.cuda.max_memory_allocated(self.device)
        else:
            top = self._status("VmHWM")
        return top / 2**20, (top - self.base) / 2**20


class BusyCores:
    """``n`` other processes that each keep one core busy while the block runs: a shared machine, on purpose."""

    def __init__(self, n: int):
        self.n = n
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> "BusyCores":
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.n)]
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


# ----------------------------------------------------------------------------------------- workloads


def synthetic_cifar(per_class_train: int, per_class_test: int, seed: int = 0) -> SplitBenchmark:
    """CIFAR-10-shaped random images (uint8 3x32x32) with a faint class-dependent pattern, cut like cifar10."""
    g = np.random.default_rng(seed)
    pattern = g.integers(0, 40, size=(10, 3, 32, 32))

    def part(per_class: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(10), per_class)
        x = g.integers(0, 216, size=(y.size, 3, 32, 32)) + pattern[y]
        return x.astype(np.uint8), y.astype(np.int64)

    train_x, train_y = part(per_class_train)
    test_x, test_y = part(per_class_test)
    raw = RawDataset("cifar10-synthetic", train_x, train_y, test_x, test_y, source="synthetic")
    return make_split_benchmark(raw, class_pairs(None, 5))


@dataclass
class Workload:
    name: str
    bench: SplitBenchmark
    base: RunConfig
    note: str

    def configs(self, size: int) -> list[RunConfig]:
        return [RunConfig(**{**self.base.to_dict(), "seed": s}).resolved() for s in range(size)]


def flops_per_member(w: Workload) -> float:
    """Matmul/conv FLOPs of one member's run: training forward+backward, evaluation forward."""
    cfg = w.base.resolved()
    net = build_network(cfg.network, w.bench.input_shape, w.bench.n_tasks, widths=cfg.widths)
    shapes = net.shapes()
    layers: list[float] = []  # forward FLOPs per sample of each layer, input layer first
    if cfg.network == "mlp":
        dims = [math.prod(w.bench.input_shape), *net.widths]
        layers = [2.0 * a * b for a, b in zip(dims, dims[1:])]
    else:
        c, h, wd = w.bench.input_shape
        for i in range(4):
            out_c, in_c = shapes[f"conv{i}.weight"][:2]
            area = h * wd if i < 2 else (h // 2) * (wd // 2)
            layers.append(2.0 * out_c * in_c * 9 * area)
        layers.append(2.0 * math.prod(shapes["fc0.weight"]))
    layers.append(2.0 * shapes["head.weight"][-1] * shapes["head.weight"][-2])
    forward = sum(layers)
    train_sample = forward + forward + (forward - layers[0])  # forward, weight grads, input grads
    total = 0.0
    for t in range(w.bench.n_tasks):
        n_train = w.bench.train[t].numel()
        total += n_train * (cfg.epochs + cfg.retrain_epochs) * train_sample
        evaluated = sum(w.bench.test[j].numel() + w.bench.val[j].numel() for j in range(t + 1))
        total += evaluated * forward
    return total


def epochs_per_member(w: Workload) -> int:
    cfg = w.base.resolved()
    return w.bench.n_tasks * (cfg.epochs + cfg.retrain_epochs)


def cut_tasks(bench: SplitBenchmark, n_tasks: int, train_per_task: int | None) -> SplitBenchmark:
    import dataclasses

    train = tuple(t[:train_per_task] if train_per_task else t for t in bench.train[:n_tasks])
    return dataclasses.replace(bench, train=train, val=bench.val[:n_tasks], test=bench.test[:n_tasks],
                               classes=bench.classes[:n_tasks])


def make_workload(name: str, args: argparse.Namespace) -> Workload:
    common = dict(strategy="packnet", final_free=args.final_free, rounds=args.rounds, n_tasks=args.tasks)
    if name == "mlp":
        bench = load_split_benchmark("fashion-mnist")
        bench = cut_tasks(bench, args.tasks, None)
        base = RunConfig(benchmark="fashion-mnist", network="mlp", epochs=args.epochs,
                         retrain_epochs=args.retrain_epochs, **common)
        note = (f"paper MLP 784-256-256 on Split Fashion-MNIST (real data), {args.tasks} tasks of "
                f"{bench.train[0].numel()} training samples, batch 128, Adam 1e-3")
    else:
        per_class = max(1, math.ceil(args.vgg_train / 2 / 0.9))
        bench = cut_tasks(synthetic_cifar(per_class, max(1, per_class // 5)), args.tasks, args.vgg_train)
        base = RunConfig(benchmark="cifar10", network="vgg", epochs=args.vgg_epochs,
                         retrain_epochs=args.vgg_retrain_epochs, **common)
        note = (f"paper small VGG on CIFAR-10-shaped SYNTHETIC tensors (3x32x32, timing only), {args.tasks} "
                f"tasks of {bench.train[0].numel()} training samples (CIFAR-10 has 9000), batch 32, Adam 1e-4")
    return Workload(name, bench, base, note)


# ----------------------------------------------------------------------------------------- measuring


@dataclass
class Measurement:
    method: str
    size: int
    seconds: list[float]
    cpu_seconds: list[float]
    peak_mb: float
    above_mb: float
    accuracy: float

    @property
    def best(self) -> float:
        return min(self.seconds)


def fold(into: dict, key: object, m: Measurement) -> None:
    """Add measurement ``m`` (of one method at one size) to ``into[key]``: times appended, memory peaks kept."""
    if key not in into:
        into[key] = m
        return
    old = into[key]
    old.seconds += m.seconds
    old.cpu_seconds += m.cpu_seconds
    old.peak_mb, old.above_mb = max(old.peak_mb, m.peak_mb), max(old.above_mb, m.above_mb)


def run_method(method: str, w: Workload, size: int, device: torch.device,
               tf32: bool) -> tuple[float, float, float, float, float]:
    """(seconds, CPU seconds, peak MB, MB above start, mean final average accuracy) of one method."""
    configs = w.configs(size)
    meter = MemoryMeter(device)
    meter.start()
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    if method == "plain":
        finals = [float(np.mean(run_packnet(c, w.bench, device)["accuracy_matrix"][-1])) for c in configs]
    else:
        speed = "reference" if method == "reference" else "fast"
        workers = 1 if method == "one-group" else None  # None: the default, one group per thread on CPU
        results = train_population(configs, w.bench, device, speed=speed, tf32=tf32, workers=workers)
        finals = [float(np.mean(r.accuracy_matrix[-1])) for r in results]
    sync(device)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak, above = meter.peak()
    return seconds, cpu, peak, above, float(np.mean(finals))


def measure(methods: list[str], w: Workload, size: int, repeats: int, device: torch.device, tf32: bool,
            peak: PeakMeter) -> dict[str, Measurement]:
    out: dict[str, Measurement] = {}
    for r in range(repeats):
        order = methods if r % 2 == 0 else methods[::-1]
        for method in order:
            peak.measure(0.6)
            seconds, cpu, mb, above, acc = run_method(method, w, size, device, tf32)
            fold(out, method, Measurement(method, size, [seconds], [cpu], mb, above, acc))
            print(f"    {method:10s} S={size:<3d} run {r + 1}: {seconds:7.2f} s, {cpu:7.2f} CPU s  "
                  f"(load {load_average()})", flush=True)
    return out


def warm_up(w: Workload, device: torch.device) -> None:
    """First-call costs (imports inside torch.optim, kernel selection) out of the timed runs."""
    import dataclasses

    tiny = Workload(w.name, cut_tasks(w.bench, 2, 64), dataclasses.replace(w.base, epochs=1, retrain_epochs=1,
                                                                          rounds=1, n_tasks=2), w.note)
    for method in ("plain", "sleepcl", "reference"):
        run_method(method, tiny, 2, device, False)


# ----------------------------------------------------------------------------------------- output


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.rjust(wd) for c, wd in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (wd + 2) for wd in widths) + "|", *map(line, rows)])


LABEL = {"plain": "plain loop (one run after another)", "sleepcl": "sleepcl population (fast path)",
         "one-group": "sleepcl, fast path as one group", "reference": "sleepcl population (reference path)"}


def run_workload(w: Workload, args: argparse.Namespace, device: torch.device, peak: PeakMeter,
                 compare: int) -> dict:
    """Measure the head-to-head and the scaling of one workload (tables are printed at the end)."""
    cfg = w.base.resolved()
    print(f"\n## {w.name}: {w.note}")
    print(f"   protocol: {cfg.n_tasks} tasks x (E={cfg.epochs} + B={cfg.retrain_epochs}) epochs, N={cfg.rounds}, "
          f"p={cfg.final_free}; {epochs_per_member(w)} epochs and {flops_per_member(w) / 1e9:.1f} GFLOP per member",
          flush=True)
    warm_up(w, device)
    peak.measure(2.0)
    methods = ["plain", "sleepcl"]
    groups = default_workers(compare, device)
    if groups > 1:  # what the groups side by side buy (engine/workers.py)
        methods.append("one-group")
    if not args.no_reference:
        methods.append("reference")
    print(f"  head to head at S = {compare}, {args.repeats} interleaved repeat(s):", flush=True)
    head = measure(methods, w, compare, args.repeats, device, args.tf32, peak)
    scaling = {}
    if args.sizes:
        print(f"  scaling of the population with S = {args.sizes}:", flush=True)
        if compare in args.sizes:
            scaling[compare] = head["sleepcl"]
        # Round robin over the sizes, the order alternating, so that a slow spell of the machine is spread
        # over all of them rather than landing on one.
        others = [size for size in args.sizes if size != compare]
        for r in range(args.scaling_repeats):
            for size in others if r % 2 == 0 else others[::-1]:
                fold(scaling, size, measure(["sleepcl"], w, size, 1, device, args.tf32, peak)["sleepcl"])
    ablation = {}
    if args.ablation:
        print(f"  ablation at S = {compare}: the fast path without each of its parts:", flush=True)
        ablation = measure_ablation(w, compare, args.repeats, device, args.tf32)
    return {"workload": w, "methods": methods, "head": head, "scaling": scaling, "ablation": ablation,
            "compare": compare, "groups": groups}


def report_workload(res: dict, args: argparse.Namespace, peak: float) -> None:
    w, head, methods, compare = res["workload"], res["head"], res["methods"], res["compare"]
    flops, epochs, cfg = flops_per_member(w), epochs_per_member(w), w.base.resolved()
    print(f"\n## {w.name}: {w.note}")
    print(f"protocol: {cfg.n_tasks} tasks x (E={cfg.epochs} + B={cfg.retrain_epochs}) epochs, N={cfg.rounds}, "
          f"p={cfg.final_free}: {epochs} epochs and {flops / 1e9:.1f} GFLOP (matmul/conv) per member")
    print(f"\nhead to head at S = {compare} (min over {args.repeats} interleaved repeats)\n")
    rows = []
    plain_pme = head["plain"].best / (compare * epochs)
    for method in methods:
        m = head[method]
        pme = m.best / (compare * epochs)
        gflops = flops * compare / m.best / 1e9
        cpu_share = flops * compare / min(m.cpu_seconds) / 1e9 / (peak / torch.get_num_threads())
        rows.append([LABEL[method], f"{m.best:.2f}", f"{statistics.median(m.seconds):.2f}",
                     f"{min(m.cpu_seconds):.2f}", f"{pme * 1e3:.1f}",
                     f"{pme / plain_pme:.2f}", f"{gflops:.1f}", f"{100 * gflops / peak:.0f}%", f"{100 * cpu_share:.0f}%",
                     f"{m.peak_mb:.0f}", f"{m.above_mb:.0f}", f"{m.accuracy:.4f}"])
    print(table(["method", "wall s (min)", "wall s (median)", "CPU s (min)", "ms / member-epoch", "vs plain", "GFLOP/s",
                 "of peak", "of peak per CPU s", "peak MB", "+MB for the run", "final avg acc"], rows))
    print("('of peak per CPU s': FLOPs per second of CPU time the process got, against one thread's share of the "
          "peak (peak / threads): the efficiency of the code itself when other jobs take part of the cores)")
    speedup = head["plain"].best / head["sleepcl"].best
    print(f"\nratio: sleepcl's fast path takes {1 / speedup:.2f}x the plain loop's time per member-epoch "
          f"({speedup:.2f}x faster)")
    if "one-group" in head:
        print(f"groups: {res['groups']} groups side by side take {head['sleepcl'].best / head['one-group'].best:.2f}x the "
              f"time of one group on {torch.get_num_threads()} threads")
    if res["scaling"]:
        print(f"\nscaling of the sleepcl population (fast path) with S (min over {args.scaling_repeats} repeat(s); "
              f"S = {compare} is the head-to-head's)\n")
        rows = []
        for size, m in sorted(res["scaling"].items()):
            pme = m.best / (size * epochs)
            gflops = flops * size / m.best / 1e9
            cpu_share = flops * size / min(m.cpu_seconds) / 1e9 / (peak / torch.get_num_threads())
            rows.append([str(size), f"{m.best:.2f}", f"{min(m.cpu_seconds):.2f}", f"{pme * 1e3:.1f}",
                         f"{pme / plain_pme:.2f}", f"{gflops:.1f}", f"{100 * gflops / peak:.0f}%",
                         f"{100 * cpu_share:.0f}%", f"{m.peak_mb:.0f}", f"{m.above_mb:.0f}", f"{m.above_mb / size:.1f}"])
        print(table(["S", "wall s", "CPU s", "ms / member-epoch", "vs plain", "GFLOP/s", "of peak",
                     "of peak per CPU s", "peak MB", "+MB for the run", "+MB per member"], rows))
        print(f"\n(vs plain: against the plain loop's {plain_pme * 1e3:.1f} ms per member-epoch above; it trains one "
              f"model at a time, so its time per member does not depend on S)")
    if res["ablation"]:
        print(f"\nwhat each part of the fast path buys: CPU seconds of one epoch of the population at S = {compare}, "
              f"the fast path against the fast path without the part, in the phase the part is for (minimum and "
              f"median over {args.repeats * 3} interleaved epochs each; CPU time, as the machine is shared)\n")
        rows = [[name, phase, f"{f:.3f}", f"{w_:.3f}", f"{100 * (w_ - f) / w_:+.1f}%", f"{100 * (wm - fm) / wm:+.1f}%"]
                for name, phase, f, w_, fm, wm in res["ablation"]]
        print(table(["part", "epoch timed", "fast s (min)", "without s (min)", "saves (min)", "saves (median)"], rows))


# The phase each part is for: the first day's training (nothing frozen yet), the first night after its prune
# (few weights trainable), the second day's training (some weights and the biases frozen).
ABLATION_PHASES = {"stacked_kernels": "day 2", "fused_adam": "day 2", "compact_nights": "night 1", "handover_grads": "day 2",
                   "skip_full_masks": "day 1", "no_untrained_grads": "day 2", "stacked_linear": "day 2",
                   "gather_buffer": "day 2", "member_convs": "day 2"}


def _epoch_state(w: Workload, configs: list[RunConfig], device: torch.device, speed, phase: str, tf32: bool):
    """A population set up at the start of one epoch of ``phase``, through the engine's own steps."""
    from sleepcl.engine.population import Population

    pop = Population(configs, w.bench, device, speed=speed, tf32=tf32)
    days = pop.days()
    session = pop.session(days[0], 0)
    if phase != "day 1":
        targets = pop.night_targets(days[0], session.held())
        for m in range(len(configs)):
            session.prune(m, targets[m][-1])
    if phase == "day 2":
        session.finish()
        session = pop.session(days[1], 1)
    streams, pool = pop.data_streams(session.day)
    epoch = lambda: pop.run_epoch(session, streams, pool)  # noqa: E731
    epoch()  # warm
    return epoch


def measure_ablation(w: Workload, size: int, repeats: int, device: torch.device, tf32: bool) -> list[tuple]:
    """Per part: CPU seconds of an epoch with the whole fast path and without that part (min, median)."""
    configs = w.configs(size)
    # member_workers acts on whole runs, not on one population's epochs: the head-to-head's "one group" row
    # measures it. The evaluation parts act after the epochs: benchmarks/sequence_cost.py measures them.
    # vmap_members is for users' models off CPU (the paper's networks have their stacked kernels).
    parts = [p for p in FAST_PARTS if (p != "member_convs" or w.base.resolved().network == "vgg")
             and p not in ("member_workers", "vmap_members") and p not in EVAL_PARTS]
    out = []
    for part in [*parts, "reference"]:
        phase = ABLATION_PHASES.get(part, "day 2")
        other = "reference" if part == "reference" else [p for p in FAST_PARTS if p != part]
        epochs = {"fast": _epoch_state(w, configs, device, "fast", phase, tf32),
                  "without": _epoch_state(w, configs, device, other, phase, tf32)}
        times: dict[str, list[float]] = {"fast": [], "without": []}
        for r in range(repeats * 3):
            for v in ("fast", "without") if r % 2 == 0 else ("without", "fast"):
                sync(device)
                c0 = time.process_time() if device.type == "cpu" else time.perf_counter()
                epochs[v]()
                sync(device)
                times[v].append((time.process_time() if device.type == "cpu" else time.perf_counter()) - c0)
        name = "all of them (the reference path)" if part == "reference" else part
        out.append((name, phase, min(times["fast"]), min(times["without"]), statistics.median(times["fast"]),
                    statistics.median(times["without"])))
        print(f"    {name:34s} {phase}: fast {min(times['fast']):.3f} s, without {min(times['without']):.3f} s "
              f"(load {load_average()})", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default="mlp,vgg", help="comma list of mlp, vgg (default both)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--compare", type=int, default=10, help="population size of the head-to-head (default 10)")
    ap.add_argument("--sizes", default="1,2,5,10,20,50", help="population sizes of the scaling table ('' = none)")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repeats of the head-to-head (default 2)")
    ap.add_argument("--scaling-repeats", type=int, default=2,
                    help="repeats of the scaling table, round robin over the sizes (default 2)")
    ap.add_argument("--tasks", type=int, default=5, help="tasks T (default 5)")
    ap.add_argument("--epochs", type=int, default=1, help="MLP training epochs E per task (paper: 72)")
    ap.add_argument("--retrain-epochs", type=int, default=1, help="MLP night budget B (paper: 72)")
    ap.add_argument("--vgg-epochs", type=int, default=1, help="VGG training epochs E per task (paper: 12)")
    ap.add_argument("--vgg-retrain-epochs", type=int, default=1, help="VGG night budget B (paper: 6)")
    ap.add_argument("--vgg-train", type=int, default=None,
                    help="VGG training samples per task (default 256 on CPU, 9000 = CIFAR-10's on GPU)")
    ap.add_argument("--rounds", type=int, default=1, help="prune rounds N (must divide both B)")
    ap.add_argument("--final-free", type=float, default=0.9)
    ap.add_argument("--no-reference", action="store_true", help="skip sleepcl's reference path")
    ap.add_argument("--ablation", action="store_true",
                    help="also time epochs of the population without each part of the fast path (what each buys)")
    ap.add_argument("--tf32", action="store_true", help="let sleepcl use TF32 on CUDA")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--peak-seconds", type=float, default=6.0,
                    help="time spent measuring the matmul peak at the start and at the end (default 6)")
    ap.add_argument("--busy", type=int, default=0,
                    help="other processes that each keep a core busy during the workloads: a shared machine")
    ap.add_argument("--quick", action="store_true",
                    help="a first look in minutes on CPU: 2 tasks, 1 repeat, sizes 1,2,5,10; the VGG at S <= 5 "
                         "on 128 samples per task")
    args = ap.parse_args(argv)
    if args.quick:
        args.tasks, args.repeats = 2, 1
        args.sizes = "1,2,5,10" if args.sizes == "1,2,5,10,20,50" else args.sizes
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.vgg_train is None:
        args.vgg_train = (128 if args.quick else 256) if device.type == "cpu" else 9000
    all_sizes = [int(s) for s in args.sizes.split(",") if s.strip()]

    print("# sleepcl population vs a plain PyTorch loop")
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"machine: {where}; {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"device {device}")
    start_load = load_average()
    print(f"load average at start (1, 5, 15 min): {start_load}")
    peak = PeakMeter(device)
    print(f"fp32 matmul peak (torch.mm, square {'/'.join(map(str, peak.sizes))}): {peak.measure(args.peak_seconds):.1f} GFLOP/s")
    if args.busy:
        print(f"--busy {args.busy}: {args.busy} other process(es) each keep a core busy during the workloads "
              f"(the peak is measured before and after them)")
    results = []
    for name in [s.strip() for s in args.workloads.split(",") if s.strip()]:
        if name not in ("mlp", "vgg"):
            raise SystemExit(f"unknown workload {name!r}; choose mlp, vgg")
        small = args.quick and name == "vgg"
        args.sizes = [s for s in all_sizes if s <= 5] if small else all_sizes
        compare = min(args.compare, 5) if small else args.compare
        with BusyCores(args.busy):
            results.append(run_workload(make_workload(name, args), args, device, peak, compare))
    peak.measure(args.peak_seconds)
    print(f"\n# results\nmachine: {where}; torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")
    print(f"fp32 matmul peak: {peak.best:.1f} GFLOP/s, the best of {len(peak.samples)} measurements during the run "
          f"(torch.mm, square {'/'.join(map(str, peak.sizes))}; they ranged {min(peak.samples):.1f}.."
          f"{max(peak.samples):.1f} as the machine's load varied); 'of peak' is against the best")
    print(f"load average (1, 5, 15 min) at start {start_load}, at end {load_average()}")
    if args.busy:
        print(f"shared on purpose: {args.busy} other process(es) kept a core busy each while the workloads ran")
    for res in results:
        report_workload(res, args, peak.best)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
