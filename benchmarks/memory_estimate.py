"""The memory estimate that sizes populations (src/sleepcl/runs/memory.py) against what training really takes.

Each population trains in a fresh process (2 tasks, E = B = 1, one thread); the peak resident memory it adds
(``ru_maxrss`` after training minus before) is printed beside the estimate, and the slope between the two
largest populations gives the measured cost of one more member. The MLP runs on mnist-5k, the VGG on random
CIFAR-shaped images (400 training samples), so it needs no files.

    python benchmarks/memory_estimate.py                     # MLP S = 1, 8, 32; VGG S = 1, 4, 8
    python benchmarks/memory_estimate.py --mlp 1,4 --vgg ""  # fewer
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys
import numpy as np, torch
torch.set_num_threads(1)
from sleepcl.config import RunConfig
from sleepcl.data.datasets import RawDataset
from sleepcl.data.split import class_pairs, load_split_benchmark, make_split_benchmark
from sleepcl.engine.population import train_population
from sleepcl.runs.runner import memory_plan

net, size = sys.argv[1], int(sys.argv[2])
if net == "mlp":
    bench = load_split_benchmark("mnist-5k", n_tasks=2)
    base = dict(benchmark="mnist-5k")
else:
    g = np.random.default_rng(0)
    raw = RawDataset("cifar10", g.integers(0, 255, (400, 3, 32, 32), dtype=np.uint8), np.repeat(np.arange(10), 40),
                     g.integers(0, 255, (100, 3, 32, 32), dtype=np.uint8), np.repeat(np.arange(10), 10), "random")
    bench = make_split_benchmark(raw, class_pairs(None, 2))
    base = dict(benchmark="cifar10")
configs = [RunConfig(seed=s, n_tasks=2, epochs=1, retrain_epochs=1, **base) for s in range(size)]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
train_population(configs, bench, "cpu")
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
plan = memory_plan(configs[0].resolved(), torch.device("cpu"), 2**40)
print(json.dumps({"measured": (after - before) * 1024, "per_member": plan.per_member}))
"""


def measure(net: str, size: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, net, str(size)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mlp", default="1,8,32", help="population sizes of the MLP")
    ap.add_argument("--vgg", default="1,4,8", help="population sizes of the VGG")
    args = ap.parse_args()
    mb = 2**20
    for net, sizes in (("mlp", args.mlp), ("vgg", args.vgg)):
        sizes = [int(s) for s in sizes.split(",") if s.strip()]
        rows = [(s, measure(net, s)) for s in sizes]
        for s, r in rows:
            print(f"{net} S={s:3d}: measured {r['measured'] / mb:8.1f} MB added, estimate {s * r['per_member'] / mb:8.1f} MB "
                  f"for the members (+ the data)")
        if len(rows) >= 2:
            (s0, r0), (s1, r1) = rows[-2], rows[-1]
            slope = (r1["measured"] - r0["measured"]) / (s1 - s0)
            print(f"{net}: one more member measured {slope / mb:.1f} MB, estimated {r1['per_member'] / mb:.1f} MB "
                  f"({r1['per_member'] / slope:.2f}x)")


if __name__ == "__main__":
    main()
