"""User models on the engine, measured two ways in one run each.

1. ``generic``: the paper's MLP on its tuned stacked kernels (``--model mlp``) against the same network written
   as a user would (``examples/models.py:mlp``, an ``nn.Sequential``) on the generic path (one
   ``torch.func.functional_call`` per member), both populations of S members on the fast path, Split
   Fashion-MNIST, the same protocol as ``population_speed.py --workloads mlp``. Goal: the generic path within
   1.3x of the tuned one.
2. ``resnet``: torchvision's ResNet-18 (``examples/models.py:resnet18``, BatchNorm, per-task norm layers under
   PackNet) as a population of S = 1 and S = 4 against a plain PyTorch loop of the same model run after run
   (``plain_loop.run_packnet`` with the model's last nn.Linear cut into per-task heads and each task's
   BatchNorm state kept), on CIFAR-10-shaped synthetic tensors (timing only).

Interleaved repeats, the order alternating; times are the minimum over the repeats (the machine is shared) of
whole runs (initialisation, training, pruning, evaluation after every task), per member-epoch.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from plain_loop import run_packnet  # noqa: E402
from population_speed import cut_tasks, load_average, synthetic_cifar, table  # noqa: E402

from sleepcl.config import RunConfig  # noqa: E402
from sleepcl.data.split import SplitBenchmark, load_split_benchmark  # noqa: E402
from sleepcl.engine.population import train_population  # noqa: E402

MODELS = HERE.parent / "examples" / "models.py"


DEVICE = torch.device("cpu")


def run(method: str, configs: list[RunConfig], bench: SplitBenchmark) -> tuple[float, float]:
    """(seconds, mean final average accuracy) of ``configs`` trained by ``method`` on :data:`DEVICE`."""
    t0 = time.perf_counter()
    if method == "plain":
        finals = [float(np.mean(run_packnet(c, bench, DEVICE)["accuracy_matrix"][-1])) for c in configs]
    else:
        finals = [float(np.mean(r.accuracy_matrix[-1])) for r in train_population(configs, bench, DEVICE)]
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)
    return time.perf_counter() - t0, float(np.mean(finals))


def interleaved(cases: dict[str, tuple[str, list[RunConfig]]], bench: SplitBenchmark,
                repeats: int) -> dict[str, tuple[list[float], float]]:
    """Each case ``label -> (method, configs)`` ``repeats`` times, the order alternating."""
    out: dict[str, tuple[list[float], float]] = {label: ([], 0.0) for label in cases}
    for r in range(repeats):
        labels = list(cases) if r % 2 == 0 else list(cases)[::-1]
        for label in labels:
            method, configs = cases[label]
            seconds, acc = run(method, configs, bench)
            out[label] = (out[label][0] + [seconds], acc)
            print(f"    {label:34s} run {r + 1}: {seconds:7.2f} s  (load {load_average()})", flush=True)
    return out


def epochs_per_member(c: RunConfig) -> int:
    c = c.resolved()
    return c.n_tasks * (c.epochs + c.retrain_epochs)


def generic(args: argparse.Namespace) -> None:
    bench = cut_tasks(load_split_benchmark("fashion-mnist"), args.tasks, None)
    base = dict(benchmark="fashion-mnist", epochs=1, retrain_epochs=1, n_tasks=args.tasks, final_free=0.9)
    tuned = [RunConfig(network="mlp", seed=s, **base) for s in range(args.size)]
    user = [RunConfig(network=f"{MODELS}:mlp", seed=s, **base) for s in range(args.size)]
    print(f"\n## generic: the paper MLP, tuned kernels against an nn.Sequential on the generic path, S = {args.size}, "
          f"Split Fashion-MNIST, {args.tasks} tasks x (E=1 + B=1)", flush=True)
    for c in (tuned[0], user[0]):  # first-call costs out of the timed runs
        run("sleepcl", [dataclasses.replace(c, n_tasks=2)], cut_tasks(bench, 2, 256))
    res = interleaved({"tuned (--model mlp)": ("sleepcl", tuned),
                       "generic (examples/models.py:mlp)": ("sleepcl", user)}, bench, args.repeats)
    epochs = epochs_per_member(tuned[0]) * args.size
    rows = [[label, f"{min(t):.2f}", f"{statistics.median(t):.2f}", f"{1e3 * min(t) / epochs:.1f}", f"{acc:.4f}"]
            for label, (t, acc) in res.items()]
    print("\n" + table(["population", "wall s (min)", "wall s (median)", "ms / member-epoch", "final avg acc"], rows))
    t_tuned, t_user = (min(v[0]) for v in res.values())
    print(f"\nratio: the generic path takes {t_user / t_tuned:.2f}x the tuned path's time (goal: at most 1.3x)")


def resnet(args: argparse.Namespace) -> None:
    per_class = max(1, int(np.ceil(args.resnet_train / 2 / 0.9)))
    bench = cut_tasks(synthetic_cifar(per_class, max(1, per_class // 5)), 2, args.resnet_train)
    base = dict(benchmark="cifar10", network=f"{MODELS}:resnet18", epochs=1, retrain_epochs=1, n_tasks=2,
                batch_size=32, lr=1e-3, final_free=0.5)
    configs = [RunConfig(seed=s, **base) for s in range(max(args.resnet_sizes))]
    print(f"\n## resnet: torchvision's ResNet-18 (BatchNorm) on CIFAR-10-shaped SYNTHETIC tensors (timing only), 2 "
          f"tasks of {bench.train[0].numel()} training samples x (E=1 + B=1), batch 32", flush=True)
    for method in ("sleepcl", "plain"):
        run(method, configs[:1], cut_tasks(bench, 2, 32))
    epochs = epochs_per_member(configs[0])
    rows = []
    for size in args.resnet_sizes:
        res = interleaved({f"plain loop, {size} run(s) one after another": ("plain", configs[:size]),
                           f"sleepcl population, S = {size}": ("sleepcl", configs[:size])}, bench, args.repeats)
        (plain, plain_acc), (pop, pop_acc) = res.values()
        pme_plain, pme_pop = min(plain) / (size * epochs), min(pop) / (size * epochs)
        rows.append([str(size), f"{pme_plain:.2f}", f"{pme_pop:.2f}", f"{pme_pop / pme_plain:.2f}",
                     f"{plain_acc:.3f}", f"{pop_acc:.3f}"])
    print("\n" + table(["S", "plain s / member-epoch", "sleepcl s / member-epoch", "vs plain", "plain final acc",
                        "sleepcl final acc"], rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="generic,resnet", help="which measurements: generic, resnet")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (on CUDA a user's model without random layers "
                                                    "runs all members in one vmap)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--size", type=int, default=10, help="S of the generic comparison")
    ap.add_argument("--tasks", type=int, default=5, help="tasks of the generic comparison")
    ap.add_argument("--resnet-sizes", default="1,4", help="population sizes of the ResNet comparison")
    ap.add_argument("--resnet-train", type=int, default=128, help="training samples per task of the ResNet runs")
    args = ap.parse_args()
    args.resnet_sizes = [int(x) for x in args.resnet_sizes.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    global DEVICE
    DEVICE = torch.device(args.device)
    print(f"sleepcl models_speed: torch {torch.__version__}, {torch.get_num_threads()} threads, load {load_average()}")
    for part in args.parts.split(","):
        {"generic": generic, "resnet": resnet}[part](args)


if __name__ == "__main__":
    main()
