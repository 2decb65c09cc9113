"""How long the paper's whole study would take on K machines, from a measured cost per member task-epoch.

The study's own configs say how much work there is (``sleepcl.study.experiments``): runs and member
task-epochs per experiment, the longest run, and how many runs the matching experiment's searches may ask
for. A cost per member task-epoch (measured on one CPU thread, see benchmarks/README.md) turns that into
time. On K machines of C cores, one population per core (``--cluster ... --threads 1``):

* the fixed grids take at least max(work / (K C), longest run) and, with the longest populations started
  first, at most work / (K C) + the longest population (bounded by a run when populations are split to
  fill the cluster, as ``--cluster`` does);
* the matching searches then go round by round (each round needs the previous round's accuracy): at most
  ``matching_maxiter`` rounds, each one run long when the cluster can train a round's runs at once
  (searches x seeds), longer otherwise.

Assumptions, stated in the output: every core as fast as the one thread measured, no slowdown from cores
sharing memory bandwidth, and the searches using all their evaluations (an upper bound).

    python benchmarks/cluster_estimate.py --benchmark mnist --task-epoch-seconds 0.37
"""

from __future__ import annotations

import argparse
import math

from sleepcl.study.experiments import BASELINES, EXPERIMENTS, cost_epochs, experiment_configs, settings, study_configs


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--benchmark", default="mnist")
    ap.add_argument("--task-epoch-seconds", type=float, required=True,
                    help="measured seconds of one member task-epoch on one thread (training and pruning)")
    ap.add_argument("--cores", type=int, default=16, help="cores per machine (C)")
    ap.add_argument("--machines", default="1,4,16,64", help="values of K")
    args = ap.parse_args()

    s = settings(args.preset, args.benchmark)
    sec = args.task_epoch_seconds
    configs = study_configs(EXPERIMENTS, s)
    print(f"{args.preset} preset on {args.benchmark}: {s.describe()}; {sec:g} s per member task-epoch (one thread)")
    print("\n| experiment | runs | member task-epochs | one thread |")
    print("|---|---|---|---|")
    for name in EXPERIMENTS:
        c = experiment_configs(name, s)
        print(f"| {name} | {len(c)} | {cost_epochs(c):,} | {hours(cost_epochs(c) * sec)} |")
    work = cost_epochs(configs) * sec
    print(f"| all (shared runs once) | {len(configs)} | {cost_epochs(configs):,} | {hours(work)} |")
    longest = max(cost_epochs([c]) for c in configs) * sec
    base_run = s.n_tasks * (s.epochs + s.retrain_epochs) * sec
    per_round = len(s.matching_ps) * len(BASELINES) * len(s.seeds)  # runs one round of the searches asks for
    max_search = s.matching_maxiter * per_round
    print(f"\nlongest run {hours(longest)}; a base run {hours(base_run)}; the matching searches: at most "
          f"{s.matching_maxiter} rounds of {per_round} runs ({max_search} runs, {hours(max_search * base_run)} "
          "on one thread)")
    print(f"\n| K machines x {args.cores} cores | fixed grids | matching searches (at most) | study |")
    print("|---|---|---|---|")
    for k in (int(x) for x in args.machines.split(",")):
        slots = k * args.cores
        low, high = max(work / slots, longest), work / slots + longest
        search = s.matching_maxiter * math.ceil(per_round / slots) * base_run
        print(f"| {k} | {hours(low)} to {hours(high)} | {hours(search)} | {hours(low + search)} to "
              f"{hours(high + search)} |")
    print("\n(assumes every core as fast as the measured thread, no memory-bandwidth contention, and searches "
          "that use every evaluation they may)")


if __name__ == "__main__":
    main()
