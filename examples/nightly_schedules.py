"""Automatic N against the paper's uniform schedule with a fixed N, on five nights of Fashion-MNIST.

Every configuration learns the same five tasks (``make_fashion_tasks.py``: T-shirt/Trouser, Pullover/Dress,
Coat/Sandal, Shirt/Sneaker, Bag/Ankle boot) night after night with ``sleepcl.nightly.learn``, each night
within the same wall-clock budget and from the same seeds. After night 5 every task is evaluated on its
validation data (what ``inspect`` records, and what ``--schedule auto`` chooses on) and, separately, on its
test data. The table shows, per configuration and final free fraction ``p``, the mean over seeds of the
average test and validation accuracy over the five tasks (± standard error over seeds), the budget overrun
and, for ``auto``, which schedules it picked.

Usage:
    python examples/nightly_schedules.py [--budget 15s] [--final-free 0.9,0.99] [--seeds 0,1]
        [--configs uniform:1,uniform:2,uniform:4,uniform:8,auto] [--work DIR] [--threads 1] [--limit N]

Each (configuration, p, seed) takes 5 x budget; the defaults take about 5 x 2 x 2 x 5 x 15 s = 25 min.
Results are also written to WORK/schedules.json.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
TASKS = ["tshirt-trouser", "pullover-dress", "coat-sandal", "shirt-sneaker", "bag-boot"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", default="15s", help="wall-clock budget of every night")
    ap.add_argument("--final-free", default="0.9,0.99", help="p values (fixed capacity policy, 5 expected tasks)")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--configs", default="uniform:1,uniform:2,uniform:4,uniform:8,auto",
                    help="SCHEDULE:N (fixed) or auto")
    ap.add_argument("--work", default="nightly-schedules", help="folder for the task files and models")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--limit", type=int, default=None, help="at most this many training images per class")
    args = ap.parse_args()

    from sleepcl.nightly import learn, predict

    work = Path(args.work)
    data = work / "data"
    if not (data / f"{TASKS[-1]}_test.npz").exists():
        cmd = [sys.executable, str(HERE / "make_fashion_tasks.py"), str(data)]
        subprocess.run(cmd + (["--limit", str(args.limit)] if args.limit else []), check=True)
    ps = [float(p) for p in args.final_free.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]

    rows = []
    for p in ps:
        for config in configs:
            for seed in seeds:
                model = work / "models" / f"p{p}_{config.replace(':', '')}_s{seed}.safetensors"
                model.parent.mkdir(parents=True, exist_ok=True)
                for f in (model, model.with_name(model.name + ".prev")):
                    f.unlink(missing_ok=True)
                nights = []
                for task in TASKS:
                    kw = dict(schedule="auto") if config == "auto" else \
                        dict(schedule=config.split(":")[0], rounds=int(config.split(":")[1]))
                    t0 = time.perf_counter()
                    r = learn(model, task, data / f"{task}_train.npz", val_data=data / f"{task}_val.npz",
                              budget=args.budget, final_free=p, expected_tasks=5, seed=seed, threads=args.threads, **kw)
                    wall = time.perf_counter() - t0
                    nights.append({"task": task, "wall_s": wall, "budget_s": r["budget_s"],
                                   "schedule": f"{r['schedule']}:{r['rounds']}",
                                   "probe": (r["probe"] or {}).get("chosen"),
                                   "kept_from": (r["probe"] or {}).get("kept_from"),
                                   "train_epochs": r["train_epochs"], "night_epochs": r["night_epochs"]})
                val = [predict(model, t, data / f"{t}_val.npz", threads=args.threads)["accuracy"] for t in TASKS]
                test = [predict(model, t, data / f"{t}_test.npz", threads=args.threads)["accuracy"] for t in TASKS]
                row = {"p": p, "config": config, "seed": seed, "val": val, "test": test, "nights": nights}
                rows.append(row)
                print(f"p={p} {config:>11} seed {seed}: test {sum(test) / 5:.4f} val {sum(val) / 5:.4f} "
                      f"max overrun {max(n['wall_s'] / n['budget_s'] - 1 for n in nights):+.1%} "
                      + (f"picked {[n['schedule'] for n in nights]}" if config == "auto" else ""), flush=True)
                (work / "schedules.json").write_text(json.dumps(rows, indent=1))

    print()
    print(f"five nights of Fashion-MNIST, {args.budget} per night, seeds {args.seeds}; accuracy = mean over the "
          "5 tasks after night 5, mean ± se over seeds")
    head = f"{'p':>5} {'schedule':>11} {'test acc':>16} {'val acc':>16} {'epochs/night':>12} {'overrun max':>11}  picked"
    print(head)
    print("-" * len(head))
    for p in ps:
        best_fixed = None
        for config in configs:
            rs = [r for r in rows if r["p"] == p and r["config"] == config]
            test = [sum(r["test"]) / 5 for r in rs]
            val = [sum(r["val"]) / 5 for r in rs]
            nights = [n for r in rs for n in r["nights"]]
            over = max(n["wall_s"] / n["budget_s"] - 1 for n in nights)
            epochs = sum(n["train_epochs"] + n["night_epochs"] for n in nights) / len(nights)
            picked = ""
            if config == "auto":
                picked = ", ".join(f"{k} x{v}" for k, v in Counter(n["schedule"] for n in nights).most_common())
            elif best_fixed is None or _mean(test) > best_fixed[1]:
                best_fixed = (config, _mean(test))
            print(f"{p:>5g} {config:>11} {_fmt(test):>16} {_fmt(val):>16} {epochs:>12.1f} {over:>+11.1%}  {picked}")
        if best_fixed:
            print(f"{'':>5} best fixed schedule by test accuracy at p={p:g}: {best_fixed[0]}")
    print(f"\nwrote {work / 'schedules.json'}")


def _mean(v: list[float]) -> float:
    return sum(v) / len(v)


def _fmt(v: list[float]) -> str:
    m = _mean(v)
    se = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1) / len(v)) if len(v) > 1 else 0.0
    return f"{m:.4f}±{se:.4f}"


if __name__ == "__main__":
    main()
