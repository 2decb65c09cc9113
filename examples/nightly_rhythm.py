"""Does the adaptive night find the rhythm? ``--schedule adaptive`` against fixed N, within the same steps.

Five nights of ``sleepcl learn`` (the Python API, epoch budgets: ``E`` training and ``B`` night epochs, so the
machine's load decides nothing) on a benchmark's class pairs (0,1), (2,3), ... as a user's .npz files, with the
fixed capacity policy ``--final-free p --expected-tasks 5``, for each schedule and seed; then every task's test
accuracy from ``predict`` (told the task). Writes ``runs.csv`` (one row per schedule, p and seed) and
``runs.jsonl.gz`` (the same runs with every night's history entry: rounds, each round's step and weights kept, the
adaptive rule's log of validation losses, the validation accuracy after the night) to ``--out``. ``examples/rhythm_report.py`` reads ``runs.csv``: the
best fixed N chosen on the selection seeds and compared on the held-out seeds with the adaptive night.

The MLP on mnist-5k (all of each pair's images; 10% of the training images held out for validation)::

    python examples/nightly_rhythm.py --out docs/results/nightly-rhythm --seeds 0-5 --jobs 2

The study's conv network (``vgg-cpu``: VGG widths 16x32x64x64x512, E = 12, B = 6, batch 32, Adam lr 1e-3) on
fashion-mnist-32, per task and seed a stratified draw of 128 training, 256 validation and 400 test images::

    python examples/nightly_rhythm.py --out docs/results/nightly-rhythm-vgg --benchmark fashion-mnist-32 \
        --network vgg --widths 16,32,64,64,512 --epochs 12 --retrain-epochs 6 --lr 1e-3 --batch-size 32 \
        --train-size 128 --val-size 256 --test-size 400 --ps 0.8,0.95 \
        --schedules uniform:1,uniform:2,uniform:3,uniform:6,adaptive --seeds 0-7 --jobs 2
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import subprocess
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
# Columns added with the conv network's runs (a runs.csv without them is the MLP's on all of mnist-5k)
MORE_FIELDS = ["benchmark", "network", "widths", "train_size", "val_size", "test_size", "lr", "batch_size",
               "val_accuracy", "commit"]
# Night history entry fields kept in runs.jsonl.gz
NIGHT_FIELDS = ("night", "task", "rounds", "rhythm", "round_log", "train_steps", "night_steps", "steps_per_epoch",
                "val_accuracy", "unpruned_val_accuracy", "kept_weights", "free_after", "n_train", "n_val")


def stratified(y: np.ndarray, n: int | None, rng: np.random.Generator, exclude: np.ndarray | None = None) -> np.ndarray:
    """Indices of ``n`` samples of ``y`` (all when None), as equal per class as possible, none in ``exclude``."""
    idx = np.arange(len(y)) if exclude is None else np.setdiff1d(np.arange(len(y)), exclude)
    if n is None:
        return idx
    classes = np.unique(y[idx])
    out = []
    for j, c in enumerate(classes):
        pool = idx[y[idx] == c]
        want = n // len(classes) + (1 if j < n % len(classes) else 0)
        if want > len(pool):
            raise ValueError(f"class {c} has {len(pool)} samples, {want} asked for")
        out.append(rng.choice(pool, want, replace=False))
    return np.sort(np.concatenate(out))


def write_tasks(folder: Path, benchmark: str = "mnist-5k", seed: int = 0, train_size: int | None = None,
                val_size: int | None = None, test_size: int | None = None,
                channels: bool = False) -> list[tuple[Path, Path | None, Path]]:
    """Each class pair's (train, validation or None, test) .npz files; with sizes, a stratified draw per task
    (``seed`` decides it: every schedule of one seed sees the same images). ``channels``: images stay
    (n, C, H, W) (a conv network's input) even with one channel."""
    from sleepcl.data.datasets import load_raw

    raw = load_raw(benchmark)
    rng = np.random.default_rng([seed, 22])
    out = []
    for k, pair in enumerate(PAIRS):
        tr, te = np.flatnonzero(np.isin(raw.train_y, pair)), np.flatnonzero(np.isin(raw.test_y, pair))
        ti = stratified(raw.train_y[tr], train_size, rng)
        t = tr[ti]
        v = tr[stratified(raw.train_y[tr], val_size, rng, exclude=ti)] if val_size else None
        te = te[stratified(raw.test_y[te], test_size, rng)]
        # (n, H, W) for one grey channel (the MLP's), (n, C, H, W) with channels
        x, xt = raw.train_x, raw.test_x
        sq = (lambda a: a[:, 0]) if x.shape[1] == 1 and not channels else (lambda a: a)
        train, val, test = (folder / f"pair{k}_{part}.npz" for part in ("train", "val", "test"))
        np.savez(train, x=sq(x[t]), y=raw.train_y[t])
        if v is not None:
            np.savez(val, x=sq(x[v]), y=raw.train_y[v])
        np.savez(test, x=sq(xt[te]), y=raw.test_y[te])
        out.append((train, val if v is not None else None, test))
    return out


def git_commit() -> str:
    """The commit of the code that trains the runs (``+dirty`` when the work tree differs from it)."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def one(job: tuple) -> dict:
    """Five nights of one schedule, p and seed; every task's test accuracy at the end."""
    import torch

    from sleepcl.nightly import learn, predict

    torch.set_num_threads(1)
    p, schedule, seed, E, B, setting = job
    # adaptive:look=0.5 or adaptive:target=0.01: the adaptive night with --adaptive-lookahead / --adaptive-target
    name, _, n = schedule.partition(":")
    options = {}
    if name == "adaptive" and n:
        options = {f"adaptive_{'lookahead' if k == 'look' else k}": float(v)
                   for k, v in (kv.split("=") for kv in n.split(","))}
        n = ""
    t0 = time.perf_counter()
    net = {k: setting[k] for k in ("network", "widths", "lr", "batch_size") if setting.get(k) is not None}
    with tempfile.TemporaryDirectory() as tmp:
        files = setting.get("files") or write_tasks(Path(tmp), setting["benchmark"], seed, setting["train_size"],
                                                    setting["val_size"], setting["test_size"],
                                                    channels=setting.get("network") == "vgg")
        model = Path(tmp) / "m.st"
        nights = []
        for k, (train, val, _) in enumerate(files):
            kw = dict(final_free=p, expected_tasks=5, **net) if k == 0 else {}
            r = learn(model, f"pair{k}", train, val_data=val, epochs=E, retrain_epochs=B, schedule=name,
                      rounds=int(n) if n else None, seed=seed, threads=1, **options, **kw)
            nights.append({f: r.get(f) for f in NIGHT_FIELDS})
        acc = [predict(model, f"pair{k}", test)["accuracy"] for k, (_, _, test) in enumerate(files)]
    val = [x["val_accuracy"] for x in nights if x["val_accuracy"] is not None]
    widths = setting.get("widths")
    row = {"p": p, "schedule": schedule, "seed": seed, "E": E, "B": B, "accuracy": sum(acc) / len(acc),
           **{f"acc_task_{k + 1}": a for k, a in enumerate(acc)}, "rounds": " ".join(str(x["rounds"]) for x in nights),
           "seconds": round(time.perf_counter() - t0, 1), "benchmark": setting["benchmark"],
           "network": setting.get("network") or "mlp", "widths": ",".join(map(str, widths)) if widths else "",
           "train_size": setting["train_size"] or "", "val_size": setting["val_size"] or "",
           "test_size": setting["test_size"] or "", "lr": setting.get("lr") or "",
           "batch_size": setting.get("batch_size") or "",
           "val_accuracy": round(sum(val) / len(val), 6) if val else "", "commit": setting["commit"]}
    return {"row": row, "nights": nights}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--ps", default="0.99,0.995")
    ap.add_argument("--schedules", default=",".join(SCHEDULES))
    ap.add_argument("--seeds", default="0-5")
    ap.add_argument("--epochs", type=int, default=24, help="E, training epochs (default 24)")
    ap.add_argument("--retrain-epochs", type=int, default=None, help="B, night epochs (default: E)")
    ap.add_argument("--benchmark", default="mnist-5k", help="a dataset with classes 0-9: its pairs are the tasks")
    ap.add_argument("--network", default=None, help="mlp (default) or vgg")
    ap.add_argument("--widths", default=None, help="the network's widths, comma-separated (default: the paper's)")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--train-size", type=int, default=None, help="training images per task, a stratified draw per "
                    "seed (default: all, 10%% of them held out for validation unless --val-size)")
    ap.add_argument("--val-size", type=int, default=None, help="validation images per task, drawn from the "
                    "training images not drawn for training (default: 10%% of the training images)")
    ap.add_argument("--test-size", type=int, default=None, help="test images per task (default: all)")
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args()
    B = args.retrain_epochs if args.retrain_epochs is not None else args.epochs
    a, _, b = args.seeds.partition("-")
    seeds = list(range(int(a), int(b) + 1)) if b else [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = out / "runs.csv"
    done = set()
    if runs.exists():
        with open(runs) as f:
            done = {(float(r["p"]), r["schedule"], int(r["seed"]), int(r["E"])) for r in csv.DictReader(f)}
    sized = any(v is not None for v in (args.train_size, args.val_size, args.test_size))
    setting = {"benchmark": args.benchmark, "network": args.network, "lr": args.lr, "batch_size": args.batch_size,
               "widths": tuple(int(w) for w in args.widths.split(",")) if args.widths else None,
               "train_size": args.train_size, "val_size": args.val_size, "test_size": args.test_size,
               "commit": git_commit(), "files": None}
    if not sized:  # the same images for every seed: written once
        data = tempfile.TemporaryDirectory(prefix="rhythm-")  # removed when main returns (or the process exits)
        setting["files"] = write_tasks(Path(data.name), args.benchmark, channels=args.network == "vgg")
    jobs = [(float(p), s, seed, args.epochs, B, setting) for seed in seeds for p in args.ps.split(",")
            for s in args.schedules.split(",") if (float(p), s, seed, args.epochs) not in done]
    print(f"{len(jobs)} sequences of 5 nights to run ({len(done)} in {runs} already); load {os.getloadavg()[0]:.1f}; "
          f"code {setting['commit']}", flush=True)
    new = not runs.exists()
    if new:
        fields = FIELDS + MORE_FIELDS
    else:
        with open(runs) as f:
            fields = next(csv.reader(f))
    with open(runs, "a", newline="") as f, ProcessPoolExecutor(args.jobs) as pool:
        w = csv.DictWriter(f, fields, extrasaction="ignore")
        if new:
            w.writeheader()
        for result in pool.map(one, jobs):
            row = result["row"]
            w.writerow(row)
            f.flush()
            # one whole gzip member per run: a run killed later leaves every finished record readable
            with gzip.open(out / "runs.jsonl.gz", "at") as g:
                g.write(json.dumps({**row, "nights": result["nights"]}) + "\n")
            print(f"p={row['p']} {row['schedule']:>14} seed {row['seed']}: {row['accuracy']:.4f} (rounds "
                  f"{row['rounds']}, validation {row['val_accuracy']}, {row['seconds']} s)", flush=True)


if __name__ == "__main__":
    main()
