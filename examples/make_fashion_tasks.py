"""Write Fashion-MNIST as five nightly tasks of .npz files, the way a user would hand over a day's data.

Task k (1..5) holds the class pair (2k-2, 2k-1): T-shirt/top vs Trouser, Pullover vs Dress, Coat vs Sandal,
Shirt vs Sneaker, Bag vs Ankle boot. For each task three files are written to FOLDER:

* ``<task>_train.npz`` -- the training part minus a stratified 10 % (``x`` uint8 (n, 28, 28), ``y`` class names),
* ``<task>_val.npz``   -- that 10 %: the validation data ``sleepcl learn --val-data`` reports accuracy on,
* ``<task>_test.npz``  -- the official test images of the two classes.

Reads the offline copy in /usr/share/datasets/fashion-mnist (Debian package dataset-fashion-mnist).
Usage: python examples/make_fashion_tasks.py FOLDER [--limit N]   (N: at most N training images per class)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from sleepcl.data.datasets import load_raw, stratified_holdout

NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
TASKS = ["tshirt-trouser", "pullover-dress", "coat-sandal", "shirt-sneaker", "bag-boot"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--limit", type=int, default=None, help="at most this many training images per class")
    ap.add_argument("--val-fraction", type=float, default=0.1)
    args = ap.parse_args()
    out = Path(args.folder)
    out.mkdir(parents=True, exist_ok=True)
    raw = load_raw("fashion-mnist")
    rng = np.random.default_rng(0)
    names = np.array(NAMES)
    for k, task in enumerate(TASKS):
        pair = [2 * k, 2 * k + 1]
        idx = np.flatnonzero(np.isin(raw.train_y, pair))
        if args.limit:
            idx = np.concatenate([rng.permutation(idx[raw.train_y[idx] == c])[:args.limit] for c in pair])
            idx.sort()
        x, y = raw.train_x[idx, 0], raw.train_y[idx]
        is_val = stratified_holdout(y, int(round(args.val_fraction * len(y))), rng)
        np.savez(out / f"{task}_train.npz", x=x[~is_val], y=names[y[~is_val]])
        np.savez(out / f"{task}_val.npz", x=x[is_val], y=names[y[is_val]])
        t = np.isin(raw.test_y, pair)
        np.savez(out / f"{task}_test.npz", x=raw.test_x[t, 0], y=names[raw.test_y[t]])
        print(f"{task}: {int((~is_val).sum())} train, {int(is_val.sum())} val, {int(t.sum())} test -> {out}/{task}_*.npz")


if __name__ == "__main__":
    main()
