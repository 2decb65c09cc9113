"""Permuted and Rotated benchmarks: the memory of T tasks and the time to draw a batch, two ways in one run.

* **maps** (sleepcl): the images stored once (normalised, float32), each task's pixel map applied when a batch is drawn
  (``SplitBenchmark.inputs``): with the batch's one task (a PackNet day), or a task per sample (rehearsal).
* **copies**: the T transformed images stored as float32 network inputs, a batch drawn by indexing
  (``x[index]``, what the engine does for the Split benchmarks).
* **a task per day**: ``task_inputs(t)`` draws one task's whole inputs once (for a day that trains on that
  task alone); its batches then index a plain tensor, like copies. Its one-off cost is printed.

Memory is counted from the tensors each design holds (images, labels, task ids, index tensors, maps); the
copies are also built for real (mnist-5k) to time them, and the resident memory each build added is printed.
Times are the minimum over interleaved repeats of each fetch (one torch thread); for scale, the time of
one forward and backward pass of the paper's MLP (784-256-256, 10-way head) over the same batch is printed.

    python benchmarks/task_inputs.py                 # mnist-5k at T = 50 (timing) and Fashion-MNIST (memory)
    python benchmarks/task_inputs.py --tasks 5,50,255 --batch 1280 --repeats 200
"""

from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path

import numpy as np
import torch

from sleepcl.data.split import SplitBenchmark, load_split_benchmark
from sleepcl.data.datasets import FASHION_MNIST_SYSTEM_DIR

MB = 2 ** 20


def rss() -> int:
    """Resident set size of this process in bytes (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def held_bytes(bench: SplitBenchmark) -> int:
    """Bytes of every tensor the benchmark holds (index tensors made when asked count their base once)."""
    total = bench.x.nbytes + bench.y.nbytes + (0 if bench.task is None else bench.task.nbytes)
    for part in (bench.train, bench.val, bench.test):
        base = getattr(part, "base", None)
        total += base.nbytes if base is not None else sum(t.nbytes for t in part)
    if bench.maps is not None:
        total += sum(t.nbytes for t in (bench.maps.taps, bench.maps.weights, bench.maps.offset) if t is not None)
    return total


def copies_bytes(bench: SplitBenchmark) -> int:
    """Bytes the same benchmark would hold as T float32 copies, with a label and task id per sample."""
    n = bench.n_samples
    per_image = 4 * int(np.prod(bench.input_shape))
    indices = 8 * sum(len(bench.train[0]) + len(bench.val[0]) + len(bench.test[0]) for _ in range(bench.n_tasks))
    return n * per_image + 2 * 8 * n + indices


def materialise(bench: SplitBenchmark) -> torch.Tensor:
    """All T tasks' inputs as one float32 tensor, sample index i at row i (what copies would store)."""
    n = len(bench.x)
    out = torch.empty((bench.n_samples, *bench.input_shape))
    for t in range(bench.n_tasks):
        out[t * n:(t + 1) * n] = bench.inputs(torch.arange(n) + t * n, task=t)
    return out


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def time_fetches(bench: SplitBenchmark, copies: torch.Tensor, batch: int, repeats: int) -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    t = bench.n_tasks // 2
    one_task = bench.train[t][torch.randint(len(bench.train[t]), (batch,), generator=g)]
    pool = torch.cat([bench.train[k] for k in range(bench.n_tasks)])
    mixed = pool[torch.randint(len(pool), (batch,), generator=g)]
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784 * bench.input_shape[0], 256), torch.nn.ReLU(),
                              torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    x = copies[one_task]
    y = bench.labels(one_task)

    def step() -> None:
        mlp.zero_grad()
        torch.nn.functional.cross_entropy(mlp(x), y).backward()

    fetches = {
        "copies x[index]": lambda: copies[one_task],
        "maps, one task": lambda: bench.inputs(one_task, task=t),
        "maps, task per sample": lambda: bench.inputs(mixed),
        "copies x[index], mixed": lambda: copies[mixed],
        "MLP forward+backward (scale)": step,
        "task_inputs(t), once per day": lambda: bench.task_inputs(t),
    }
    best = {name: float("inf") for name in fetches}
    for _ in range(5):  # interleaved rounds: a slow spell of the machine hits every fetch alike
        for name, fn in fetches.items():
            best[name] = min(best[name], best_time(fn, max(1, repeats // 5)))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="50", help="comma list of task counts T")
    ap.add_argument("--batch", type=int, default=1280, help="samples per fetch (10 members x batch 128)")
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, best of {args.repeats}")

    print("\n## Memory held by the benchmark")
    print("| benchmark | T | maps (sleepcl) | T float32 copies | ratio | RSS added by the build |")
    print("|---|---|---|---|---|---|")
    datasets = ["mnist-5k"] + (["fashion-mnist"] if FASHION_MNIST_SYSTEM_DIR.exists() else [])
    for dataset in datasets:
        for transform in ("permuted", "rotated"):
            for n_tasks in (int(t) for t in args.tasks.split(",")):
                gc.collect()
                before = rss()
                bench = load_split_benchmark(f"{transform}-{dataset}", n_tasks=n_tasks)
                added = rss() - before
                held, copies = held_bytes(bench), copies_bytes(bench)
                print(f"| {bench.name} | {n_tasks} | {held / MB:.1f} MB | {copies / MB:.0f} MB | "
                      f"{copies / held:.0f}x | {added / MB:.0f} MB |")
                del bench

    print(f"\n## Time to draw {args.batch} samples' inputs (mnist-5k; copies built for real)")
    print("| benchmark | T | copies x[index] | maps, one task | maps, task per sample | copies, mixed | "
          "MLP fwd+bwd, for scale | task_inputs(t), once per day |")
    print("|---|---|---|---|---|---|---|---|")
    for transform in ("permuted", "rotated"):
        for n_tasks in (int(t) for t in args.tasks.split(",")):
            bench = load_split_benchmark(f"{transform}-mnist-5k", n_tasks=n_tasks)
            copies = materialise(bench)
            t = time_fetches(bench, copies, args.batch, args.repeats)
            ms = {k: 1e3 * v for k, v in t.items()}
            base = ms["copies x[index]"]
            print(f"| {bench.name} | {n_tasks} | {base:.3f} ms | {ms['maps, one task']:.3f} ms "
                  f"({ms['maps, one task'] / base:.1f}x) | {ms['maps, task per sample']:.3f} ms "
                  f"({ms['maps, task per sample'] / base:.1f}x) | {ms['copies x[index], mixed']:.3f} ms | "
                  f"{ms['MLP forward+backward (scale)']:.2f} ms | {ms['task_inputs(t), once per day']:.1f} ms |")
            del bench, copies
            gc.collect()


if __name__ == "__main__":
    main()
