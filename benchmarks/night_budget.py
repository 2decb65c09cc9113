"""Where a short night's budget goes: start-up, loading, warm-up, training, the night's rounds, evaluation, save.

Runs ``sleepcl learn --budget B`` as a user would (a fresh process per night, timed from outside too) on the
first Fashion-MNIST tasks of ``examples/make_fashion_tasks.py``, and prints, per night, the seconds of each part
from the night's history entry (``timings``: ``startup`` is the process start to the call of ``learn``: Python,
torch and sleepcl's imports; ``load`` reads the model and the data and sets up the night; ``train`` and
``retrain`` are optimizer steps, ``retrain`` including the night's prunes) and the share of the budget spent
training and pruning (``train + retrain + probe``; the warm-up's eight steps are training too but are counted
with the warm-up, which also times a prune, an evaluation and a save).

A night also stops at ``--max-epochs`` (default 72, Table 2's E and B): on a fast step it can do all 72 epochs
of training and of night before its budget ends, and the time left is then not lost to overhead. The benchmark
passes ``--max-epochs 1000`` by default so that the budget is what ends every night, and prints the epochs each
phase did (a night that stopped at its cap is marked "cap").

    python benchmarks/night_budget.py                         # 3 nights of 30 s, 1 torch thread
    python benchmarks/night_budget.py --budget 60s --nights 5 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TASKS = ["tshirt-trouser", "pullover-dress", "coat-sandal", "shirt-sneaker", "bag-boot"]
PARTS = ("startup", "load", "warmup", "train", "probe", "retrain", "evaluate", "save")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", default="30s")
    ap.add_argument("--nights", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-epochs", type=int, default=1000,
                    help="learn's cap on the epochs of each phase (learn's default is 72; high so the budget binds)")
    ap.add_argument("--limit", type=int, default=None, help="at most this many training images per class")
    ap.add_argument("--work", default=None, help="folder for the data and the model (default: a temporary one)")
    ap.add_argument("--sleepcl", default=str(Path(sys.executable).with_name("sleepcl")))
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="night-budget-"))
    data = work / "data"
    model = work / "model.safetensors"
    for p in (model, model.with_name(model.name + ".prev")):
        p.unlink(missing_ok=True)
    if not (data / f"{TASKS[args.nights - 1]}_val.npz").exists():
        subprocess.run([sys.executable, str(HERE.parent / "examples" / "make_fashion_tasks.py"), str(data),
                        "--tasks", str(args.nights), *(["--limit", str(args.limit)] if args.limit else [])],
                       check=True, stdout=subprocess.DEVNULL)
    print(f"sleepcl learn --budget {args.budget} --threads {args.threads} --max-epochs {args.max_epochs}, "
          "Fashion-MNIST tasks; load average "
          f"{os.getloadavg()[0]:.2f} before, {os.cpu_count()} CPUs")
    head = ["night", "outside s", *PARTS, "unused", "epochs (train / night)", "training+pruning"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    shares = []
    for k, task in enumerate(TASKS[:args.nights], start=1):
        t0 = time.perf_counter()
        out = subprocess.run([args.sleepcl, "learn", str(model), "--task", task, "--data", str(data / f"{task}_train.npz"),
                              "--val-data", str(data / f"{task}_val.npz"), "--budget", args.budget, "--threads",
                              str(args.threads), "--max-epochs", str(args.max_epochs), "--quiet", "--json"],
                             capture_output=True, text=True)
        outside = time.perf_counter() - t0
        if out.returncode != 0:
            raise SystemExit(f"night {k} failed:\n{out.stderr}")
        entry = json.loads(out.stdout[out.stdout.index("{"):])
        t, budget = entry["timings"], entry["budget_s"]
        spent = {p: t.get(p, 0.0) for p in PARTS}
        unused = budget - entry["total_seconds"]
        share = (spent["train"] + spent["retrain"] + spent["probe"]) / budget
        shares.append(share)
        cap = args.max_epochs * entry["steps_per_epoch"]
        epochs = " / ".join(f"{entry[f'{phase}_steps'] / entry['steps_per_epoch']:.1f}"
                            + (" cap" if entry[f"{phase}_steps"] >= cap else "") for phase in ("train", "night"))
        print(f"| {k} | {outside:.2f} | " + " | ".join(f"{spent[p]:.2f}" for p in PARTS)
              + f" | {unused:.2f} | {epochs} | {share:.1%} |", flush=True)
    print(f"training and pruning: {min(shares):.1%} to {max(shares):.1%} of the budget; load average "
          f"{os.getloadavg()[0]:.2f} after")


if __name__ == "__main__":
    main()
