"""The paper's Figure 2 grid, timed: PackNet at a fixed night budget B, N over divisors of B, several p, many seeds.

sleepcl trains the whole grid as populations of at most --max-population members (members may differ in
seed, p and N, so by default the grid is one population); the plain loop (benchmarks/plain_loop.py) is
timed on --plain-runs of the same runs, one after another, and its time for the whole grid is that
per-run time times the number of runs (stated as an extrapolation in the output).

The paper's protocol is the default (5 tasks, E = 72, B = 72, MLP on Split Fashion-MNIST, exactly MNIST's
size): minutes on a GPU, far too long for a CPU; on CPU shorten it, e.g.

    python benchmarks/figure2_grid.py --epochs 1 --retrain-epochs 6 --rounds 1,2,3,6 --seeds 2 --threads 1

``--workload vgg`` times the conv-net grid instead (CIFAR-10-shaped synthetic tensors, E = 12, B = 6).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from population_speed import (PeakMeter, Workload, cpu_name, epochs_per_member, flops_per_member,  # noqa: E402
                              load_average, make_workload, sync)
from plain_loop import run_packnet  # noqa: E402

from sleepcl.config import RunConfig  # noqa: E402
from sleepcl.engine.population import train_population  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", choices=("mlp", "vgg"), default="mlp")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--epochs", type=int, default=None, help="E (paper: MLP 72, VGG 12)")
    ap.add_argument("--retrain-epochs", type=int, default=None, help="B (paper: MLP 72, VGG 6)")
    ap.add_argument("--rounds", default=None, help="N values (default: MLP 1,2,3,4,6,8; VGG 1,2,3,6)")
    ap.add_argument("--final-free", default=None, help="p values (default: MLP 0.95,0.99,0.995; VGG 0.8,0.9,0.95)")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--tasks", type=int, default=5)
    ap.add_argument("--vgg-train", type=int, default=9000, help="VGG training samples per task (CIFAR-10: 9000)")
    ap.add_argument("--max-population", type=int, default=0, help="members per population (0: the whole grid)")
    ap.add_argument("--plain-runs", type=int, default=1, help="runs of the plain loop to time (0: none)")
    ap.add_argument("--tf32", action="store_true", help="let sleepcl use TF32 on CUDA")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    mlp = args.workload == "mlp"
    epochs = args.epochs if args.epochs is not None else (72 if mlp else 12)
    budget = args.retrain_epochs if args.retrain_epochs is not None else (72 if mlp else 6)
    rounds = [int(n) for n in (args.rounds or ("1,2,3,4,6,8" if mlp else "1,2,3,6")).split(",")]
    ps = [float(p) for p in (args.final_free or ("0.95,0.99,0.995" if mlp else "0.8,0.9,0.95")).split(",")]

    # make_workload reads these names; the grid varies p and N per member below.
    ns = argparse.Namespace(tasks=args.tasks, epochs=epochs, retrain_epochs=budget, vgg_epochs=epochs,
                            vgg_retrain_epochs=budget, rounds=1, final_free=ps[0], vgg_train=args.vgg_train)
    w: Workload = make_workload(args.workload, ns)
    grid = [RunConfig(**{**w.base.to_dict(), "final_free": p, "rounds": n, "seed": s}).resolved()
            for p in ps for n in rounds for s in range(args.seeds)]
    size = args.max_population or len(grid)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"# Figure 2 grid: {w.note}")
    print(f"machine: {where}, torch {torch.__version__}, {torch.get_num_threads()} threads; load {load_average()}")
    print(f"grid: p in {ps} x N in {rounds} x {args.seeds} seeds = {len(grid)} runs of {args.tasks} tasks x "
          f"(E={epochs} + B={budget}) epochs; populations of up to {size}")
    peak = PeakMeter(device)
    peak.measure(4.0)

    sync(device)
    t0 = time.perf_counter()
    done = 0
    for start in range(0, len(grid), size):
        part = grid[start:start + size]
        train_population(part, w.bench, device, tf32=args.tf32)
        sync(device)
        done += len(part)
        print(f"  {done}/{len(grid)} runs after {time.perf_counter() - t0:.1f} s", flush=True)
    seconds = time.perf_counter() - t0
    flops = flops_per_member(w) * len(grid)
    peak.measure(4.0)
    print(f"\nsleepcl: {seconds:.1f} s for the grid ({seconds / len(grid):.2f} s per run, "
          f"{seconds / len(grid) / epochs_per_member(w) * 1e3:.2f} ms per member-epoch); "
          f"{flops / seconds / 1e9:.1f} GFLOP/s = {100 * flops / seconds / 1e9 / peak.best:.0f}% of the fp32 "
          f"matmul peak {peak.best:.1f} GFLOP/s measured here")
    if args.plain_runs:
        t0 = time.perf_counter()
        for cfg in grid[:args.plain_runs]:
            run_packnet(cfg, w.bench, device)
        sync(device)
        per_run = (time.perf_counter() - t0) / args.plain_runs
        print(f"plain loop: {per_run:.1f} s per run (timed on {args.plain_runs} run(s)), so ~{per_run * len(grid):.0f} s "
              f"for the grid run after run (extrapolated): sleepcl is {per_run * len(grid) / seconds:.1f}x faster")
    print(f"load average at end: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
