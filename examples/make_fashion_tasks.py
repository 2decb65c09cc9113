"""Write Fashion-MNIST as five nightly tasks of .npz files, the way a user would hand over a day's data.

Task k (1..5) holds the class pair (2k-2, 2k-1): T-shirt/top vs Trouser, Pullover vs Dress, Coat vs Sandal,
Shirt vs Sneaker, Bag vs Ankle boot. For each task three files are written to FOLDER:

* ``<task>_train.npz`` -- the training part minus a stratified 10 % (``x`` uint8 (n, 28, 28), ``y`` class names),
* ``<task>_val.npz``   -- that 10 %: the validation data ``sleepcl learn --val-data`` reports accuracy on,
* ``<task>_test.npz``  -- the official test images of the two classes.

With ``--images``, each part is a folder of PNG files instead, one subfolder per class (``<task>_train/Trouser/
00012.png``), 32x32 RGB (the 28x28 image padded by 2 pixels and repeated in the three channels): the layout of
a photo collection, and the input a ResNet-18 made for colour images takes (examples/nightly_resnet.sh).

Reads the offline copy in /usr/share/datasets/fashion-mnist (Debian package dataset-fashion-mnist).
Usage: python examples/make_fashion_tasks.py FOLDER [--limit N] [--tasks K] [--images]
(N: at most N training images per class; K: the first K tasks only)
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
    ap.add_argument("--tasks", type=int, default=len(TASKS), help="write the first K tasks only")
    ap.add_argument("--images", action="store_true", help="PNG folders (32x32 RGB) instead of .npz files")
    args = ap.parse_args()
    out = Path(args.folder)
    out.mkdir(parents=True, exist_ok=True)
    raw = load_raw("fashion-mnist")
    rng = np.random.default_rng(0)
    names = np.array(NAMES)
    write = write_images if args.images else write_npz
    for k, task in enumerate(TASKS[:args.tasks]):
        pair = [2 * k, 2 * k + 1]
        idx = np.flatnonzero(np.isin(raw.train_y, pair))
        if args.limit:
            idx = np.concatenate([rng.permutation(idx[raw.train_y[idx] == c])[:args.limit] for c in pair])
            idx.sort()
        x, y = raw.train_x[idx, 0], raw.train_y[idx]
        is_val = stratified_holdout(y, int(round(args.val_fraction * len(y))), rng)
        t = np.isin(raw.test_y, pair)
        for part, xs, ys in (("train", x[~is_val], y[~is_val]), ("val", x[is_val], y[is_val]),
                             ("test", raw.test_x[t, 0], raw.test_y[t])):
            write(out / f"{task}_{part}", xs, names[ys])
        print(f"{task}: {int((~is_val).sum())} train, {int(is_val.sum())} val, {int(t.sum())} test -> {out}/{task}_*")


def write_npz(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    np.savez(path.with_suffix(".npz"), x=x, y=y)


def write_images(folder: Path, x: np.ndarray, y: np.ndarray) -> None:
    from PIL import Image

    for i, (image, label) in enumerate(zip(x, y)):
        (folder / str(label).replace("/", "-")).mkdir(parents=True, exist_ok=True)
        rgb = np.repeat(np.pad(image, 2)[:, :, None], 3, axis=2)
        Image.fromarray(rgb).save(folder / str(label).replace("/", "-") / f"{i:05d}.png")


if __name__ == "__main__":
    main()
