"""Does the adaptive night find the rhythm? ``--schedule adaptive`` against fixed N, within the same steps.

Five nights of ``sleepcl learn`` (the Python API, epoch budgets: ``E`` training and ``B`` night epochs, so the
machine's load decides nothing) on the mnist-5k digit pairs (0,1), (2,3), ... as a user's .npz files, with the
fixed capacity policy ``--final-free p --expected-tasks 5``, for each schedule and seed; then every task's test
accuracy from ``predict`` (told the task). Writes ``runs.csv`` (one row per schedule, p and seed) to ``--out``.
``examples/rhythm_report.py`` reads it: the best fixed N chosen on the selection seeds and compared on the
held-out seeds with the adaptive night.

    python examples/nightly_rhythm.py --out docs/results/nightly-rhythm --seeds 0-5 --jobs 2
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

import numpy as np  # noqa: E402

PAIRS = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
SCHEDULES = ["uniform:1", "uniform:2", "uniform:4", "uniform:8", "lengthening:4", "adaptive"]
FIELDS = ["p", "schedule", "seed", "E", "B", "accuracy", *[f"acc_task_{k + 1}" for k in range(5)],
          "rounds", "seconds"]


def write_tasks(folder: Path) -> list[tuple[Path, Path]]:
    from sleepcl.data.datasets import load_raw

    raw = load_raw("mnist-5k")
    out = []
    for k, pair in enumerate(PAIRS):
        m, mt = np.isin(raw.train_y, pair), np.isin(raw.test_y, pair)
        train, test = folder / f"pair{k}_train.npz", folder / f"pair{k}_test.npz"
        np.savez(train, x=raw.train_x[m, 0], y=raw.train_y[m])
        np.savez(test, x=raw.test_x[mt, 0], y=raw.test_y[mt])
        out.append((train, test))
    return out


def one(job: tuple) -> dict:
    """Five nights of one schedule, p and seed; every task's test accuracy at the end."""
    import torch

    from sleepcl.nightly import learn, predict

    torch.set_num_threads(1)
    p, schedule, seed, E, B, files = job
    # adaptive:look=0.5 or adaptive:target=0.01: the adaptive night with --adaptive-lookahead / --adaptive-target
    name, _, n = schedule.partition(":")
    options = {}
    if name == "adaptive" and n:
        options = {f"adaptive_{'lookahead' if k == 'look' else k}": float(v)
                   for k, v in (kv.split("=") for kv in n.split(","))}
        n = ""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "m.st"
        rounds = []
        for k, (train, _) in enumerate(files):
            kw = dict(final_free=p, expected_tasks=5) if k == 0 else {}
            r = learn(model, f"pair{k}", train, epochs=E, retrain_epochs=B, schedule=name,
                      rounds=int(n) if n else None, seed=seed, threads=1, **options, **kw)
            rounds.append(r["rounds"])
        acc = [predict(model, f"pair{k}", test)["accuracy"] for k, (_, test) in enumerate(files)]
    return {"p": p, "schedule": schedule, "seed": seed, "E": E, "B": B, "accuracy": sum(acc) / len(acc),
            **{f"acc_task_{k + 1}": a for k, a in enumerate(acc)}, "rounds": " ".join(map(str, rounds)),
            "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--ps", default="0.99,0.995")
    ap.add_argument("--schedules", default=",".join(SCHEDULES))
    ap.add_argument("--seeds", default="0-5")
    ap.add_argument("--epochs", type=int, default=24, help="E = B, epochs (default 24)")
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args()
    a, _, b = args.seeds.partition("-")
    seeds = list(range(int(a), int(b) + 1)) if b else [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = out / "runs.csv"
    done = set()
    if runs.exists():
        with open(runs) as f:
            done = {(float(r["p"]), r["schedule"], int(r["seed"]), int(r["E"])) for r in csv.DictReader(f)}
    data = Path(tempfile.mkdtemp(prefix="rhythm-"))
    files = write_tasks(data)
    jobs = [(float(p), s, seed, args.epochs, args.epochs, files) for seed in seeds for p in args.ps.split(",")
            for s in args.schedules.split(",") if (float(p), s, seed, args.epochs) not in done]
    print(f"{len(jobs)} sequences of 5 nights to run ({len(done)} in {runs} already); load {os.getloadavg()[0]:.1f}",
          flush=True)
    new = not runs.exists()
    with open(runs, "a", newline="") as f, ProcessPoolExecutor(args.jobs) as pool:
        w = csv.DictWriter(f, FIELDS)
        if new:
            w.writeheader()
        for row in pool.map(one, jobs):
            w.writerow(row)
            f.flush()
            print(f"p={row['p']} {row['schedule']:>14} seed {row['seed']}: {row['accuracy']:.4f} (rounds "
                  f"{row['rounds']}, {row['seconds']} s)", flush=True)


if __name__ == "__main__":
    main()
