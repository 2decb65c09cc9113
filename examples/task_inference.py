"""Which rule infers an input's task best? The rules of :mod:`sleepcl.task_inference` on Split and Permuted tasks.

Trains PackNet (the paper's MLP, p = 0.9, N = 1) on each benchmark for a few seeds, then scores every rule on the
same trained members (the engine's :func:`sleepcl.engine.evaluation.task_inference`, what ``sleepcl run``
records): the task-inference accuracy and the class-incremental accuracy (task and class right), beside the
task-aware average accuracy. Mean +- standard error over seeds. The default rule (DEFAULT_RULE) was chosen
from this table (examples/NIGHTLY.md, "Answering without the task").

    python examples/task_inference.py                      # 3 seeds, E = B = 10, four benchmarks (~1 min on 1 core)
    python examples/task_inference.py --seeds 0-4 --epochs 20
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")  # as the sleepcl command sets it

import torch  # noqa: E402

from sleepcl.config import RunConfig  # noqa: E402
from sleepcl.data.split import load_split_benchmark  # noqa: E402
from sleepcl.engine.population import train_population  # noqa: E402
from sleepcl.task_inference import DEFAULT_RULE, RULES  # noqa: E402

SETTINGS = {
    "split mnist-5k (5 x 2 classes)": dict(benchmark="mnist-5k"),
    "split mnist-5k (3+3+4 classes)": dict(benchmark="mnist-5k", class_groups="0,1,2|3,4,5|6,7,8,9", n_tasks=3),
    "split fashion-mnist (5 x 2, 1000 train/task)": dict(benchmark="fashion-mnist", extra={"train_size": 1000}),
    "permuted mnist-5k (5 x 10 classes)": dict(benchmark="permuted-mnist-5k"),
}


def mean_se(v: list[float]) -> str:
    m = statistics.fmean(v)
    se = statistics.stdev(v) / math.sqrt(len(v)) if len(v) > 1 else float("nan")
    return f"{m:.4f} ± {se:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0-2", help="e.g. 0-2 or 0,3,5")
    ap.add_argument("--epochs", type=int, default=10, help="E = B (default 10)")
    ap.add_argument("--final-free", type=float, default=0.9)
    ap.add_argument("--only", default=None, help="run the settings whose name contains this text")
    args = ap.parse_args()
    a, _, b = args.seeds.partition("-")
    seeds = list(range(int(a), int(b) + 1)) if b else [int(s) for s in args.seeds.split(",")]
    torch.set_num_threads(1)
    print(f"PackNet, mlp, p = {args.final_free}, N = 1, E = B = {args.epochs}, seeds {args.seeds}; default rule "
          f"{DEFAULT_RULE}; torch threads 1, load {os.getloadavg()[0]:.1f}")
    print("| benchmark | task-aware accuracy | rule | task inference | class-incremental |")
    print("|---|---|---|---|---|")
    for name, spec in SETTINGS.items():
        if args.only and args.only not in name:
            continue
        spec = dict(spec)
        extra = spec.pop("extra", {})
        t0 = time.perf_counter()
        configs = [RunConfig(strategy="packnet", final_free=args.final_free, epochs=args.epochs,
                             retrain_epochs=args.epochs, seed=s, extra=extra, **spec) for s in seeds]
        c = configs[0]
        bench = load_split_benchmark(c.benchmark, n_tasks=c.n_tasks, class_groups=c.class_groups, **extra)
        results = train_population(configs, bench)
        aware = [sum(r.accuracy_matrix[-1]) / len(r.accuracy_matrix[-1]) for r in results]
        for i, rule in enumerate(RULES):
            task = [r.task_inference[rule]["task"] for r in results]
            ci = [r.task_inference[rule]["class_incremental"] for r in results]
            print(f"| {name if i == 0 else ''} | {mean_se(aware) if i == 0 else ''} | {rule} | {mean_se(task)} | "
                  f"{mean_se(ci)} |", flush=True)
        print(f"<!-- {name}: {time.perf_counter() - t0:.0f} s -->", flush=True)


if __name__ == "__main__":
    main()
