"""Long task sequences: time per task, training and evaluation apart, at T = 5 and T = 50, evaluation two ways.

After task ``t`` the engine evaluates every task seen so far on its test and validation data: ``t`` forward
passes per member, so the evaluation of a whole sequence grows as ``T^2`` while its training grows as ``T``. This
script trains one population per (strategy, T) -- the paper's MLP (784-256-256, 10-way heads) on permuted-mnist-5k
-- and after every task evaluates all seen tasks twice, interleaved, on the same state:

* **plain**: one split at a time, one task at a time, everything recomputed (``Population.evaluate``, the
  engine's reference formulation);
* **shared**: ``sleepcl.engine.evaluation.Evaluator`` as the engine now evaluates: a task's test and validation
  samples in one pass (its inputs and masked weights made once), and a task whose answering state has not changed
  since its last evaluation (its SHA-256 digests) served from the counts stored then;

and checks that both give the same accuracies. Training time per task is the population's own train + prune +
retrain seconds over T (the run evaluates nothing itself but the final row). ``--eval-every K``'s cost is computed
from the same per-task evaluation times (the evaluations after tasks K, 2K, ... and the last). Then, for the claim
that larger evaluation chunks would not help: the forward time per sample of the MLP at several chunk sizes.

    python benchmarks/sequence_cost.py                      # T = 5 and 50, PackNet and Memory, S = 2, E = B = 1
    python benchmarks/sequence_cost.py --tasks 5,20 --members 1 --strategies packnet
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")  # as the sleepcl command sets it

import torch  # noqa: E402

from sleepcl.config import RunConfig  # noqa: E402
from sleepcl.data.split import load_split_benchmark  # noqa: E402
from sleepcl.engine.evaluation import Evaluator  # noqa: E402
from sleepcl.engine.population import Population, evaluation_day  # noqa: E402

BENCHMARK = "permuted-mnist-5k"


def configs(strategy: str, n_tasks: int, members: int, epochs: int) -> list[RunConfig]:
    return [RunConfig(benchmark=BENCHMARK, n_tasks=n_tasks, strategy=strategy, epochs=epochs, retrain_epochs=epochs,
                      final_free=0.9, seed=s, eval_every=n_tasks) for s in range(members)]


def measure(strategy: str, n_tasks: int, members: int, epochs: int) -> dict:
    """Train one population; after each task time both evaluations of every task seen (interleaved, alternating
    which goes first) and check they agree."""
    bench = load_split_benchmark(BENCHMARK, n_tasks=n_tasks)
    pop = Population(configs(strategy, n_tasks, members, epochs), bench)
    shared = Evaluator(pop.members, pop.strategy, pop.bench)
    plain_s, shared_s = [], []

    def plain() -> dict[str, torch.Tensor]:
        return {split: pop.evaluate(tasks, split) for split in ("test", "val")}

    def after(p: Population, day: int) -> None:
        nonlocal tasks
        tasks = list(p.days()[day].evaluate)
        order = [("plain", plain), ("shared", lambda: shared(tasks))]
        got = {}
        for name, fn in order if day % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            got[name] = fn()
            (plain_s if name == "plain" else shared_s).append(time.perf_counter() - t0)
        for split in ("test", "val"):
            if not torch.equal(got["plain"][split], got["shared"][split]):
                raise AssertionError(f"{strategy} T={n_tasks} after task {day + 1}: the two evaluations disagree")

    tasks: list[int] = []
    result = pop.fit(on_day_end=after)[0]
    t = result.timings
    days = len(plain_s)
    return {"strategy": strategy, "T": n_tasks, "days": days, "train_s": t["train"] + t["prune"] + t["retrain"],
            "plain_s": plain_s, "shared_s": shared_s, "hits": shared.hits, "misses": shared.misses,
            "accuracy": sum(result.accuracy_matrix[-1]) / n_tasks}


def every_k(per_day: list[float], k: int) -> float:
    """Seconds of evaluation over the run with --eval-every k: the days it evaluates after."""
    return sum(s for d, s in enumerate(per_day) if evaluation_day(d, len(per_day), k))


def chunk_times(members: int, sizes: list[int], repeats: int) -> list[tuple[int, float]]:
    """Forward time per sample of the MLP's members (shared weights) at each chunk size, on 6 tasks' samples."""
    bench = load_split_benchmark(BENCHMARK, n_tasks=6)
    pop = Population(configs("memory", 6, members, 1), bench)
    idx = torch.cat([torch.cat([bench.test[t], bench.val[t]]) for t in range(6)])
    x = bench.inputs(idx)
    weights = pop.evaluator().weights(0)
    out = []
    for size in sizes:
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            pop.members.predict(x, 0, weights, chunk=size)
            best = min(best, time.perf_counter() - t0)
        out.append((size, best / len(x)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="5,50", help="sequence lengths T")
    ap.add_argument("--strategies", default="packnet,memory")
    ap.add_argument("--members", type=int, default=2, help="population size S")
    ap.add_argument("--epochs", type=int, default=1, help="E = B per task")
    ap.add_argument("--eval-every", type=int, default=10, help="K of the --eval-every column")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    k = args.eval_every
    print(f"sleepcl long sequences: {BENCHMARK}, paper MLP 784-256-256, S = {args.members} members, E = B = "
          f"{args.epochs}, batch 128; torch {torch.__version__}, {args.threads} thread(s), {platform.processor() or platform.machine()}")
    print("seconds per task (whole run / T); evaluation = every task seen, test and validation, after each task\n")
    head = (f"{'strategy':>8} {'T':>3} {'train':>7} {'eval plain':>10} {'eval shared':>11} {'shared/plain':>12} "
            f"{f'shared, k={k}':>13} {'from digests':>12} {'final acc':>9}")
    print(head)
    print("-" * len(head))
    rows = []
    for strategy in args.strategies.split(","):
        for n_tasks in (int(t) for t in args.tasks.split(",")):
            started = time.perf_counter()
            r = measure(strategy, n_tasks, args.members, args.epochs)
            rows.append(r)
            plain, shared = sum(r["plain_s"]) / n_tasks, sum(r["shared_s"]) / n_tasks
            served = r["hits"] / max(1, r["hits"] + r["misses"])
            print(f"{strategy:>8} {n_tasks:>3} {r['train_s'] / n_tasks:>7.3f} {plain:>10.3f} {shared:>11.3f} "
                  f"{shared / plain:>12.2f} {every_k(r['shared_s'], k) / n_tasks:>13.3f} {served:>12.0%} "
                  f"{r['accuracy']:>9.4f}   ({time.perf_counter() - started:.0f} s)", flush=True)
    print("\nevaluation after task t (seconds): how it grows along the longest sequence")
    for r in rows:
        if r["T"] != max(x["T"] for x in rows):
            continue
        days = sorted({0, 9, r["days"] // 2 - 1, r["days"] - 1})
        print(f"  {r['strategy']:>8} T={r['T']}: " + ", ".join(
            f"t={d + 1}: plain {r['plain_s'][d]:.3f} / shared {r['shared_s'][d]:.3f}" for d in days if d < r["days"]))
    print("\nforward time per evaluated sample by chunk size (memory's shared weights, all members):")
    times = chunk_times(args.members, [400, 1400, 2048, 8192], repeats=5)
    base = times[0][1]
    print("  " + ", ".join(f"{size}: {s * 1e6:.1f} us ({s / base:.2f}x)" for size, s in times))
    print(f"\nthe two evaluations gave identical accuracies after every task of every run; median over runs of "
          f"shared/plain: {statistics.median(sum(r['shared_s']) / sum(r['plain_s']) for r in rows):.2f}")


if __name__ == "__main__":
    main()
