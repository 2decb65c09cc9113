"""Split benchmarks: a 10-class dataset cut into binary tasks of class pairs (task-incremental setting).

Why tensors and index tensors, not Datasets: the training engine keeps the whole benchmark on the
training device and draws batches by indexing, which is much faster for these small images than a
DataLoader.  A :class:`SplitBenchmark` therefore holds every sample of every task once (``x``, ``y``,
``task``) and, per task, int64 index tensors for its train/val/test parts.

Construction (:func:`load_split_benchmark`):

* classes ``0..9`` (shuffled with ``numpy.random.default_rng(class_order_seed)`` if a seed is given)
  are paired in order: ``(c0, c1), (c2, c3), ...``; the first ``n_tasks`` pairs are the tasks;
* within a task the first class of its pair is label 0, the second label 1;
* the dataset's official train part of a task's classes gives its train and val parts (val held out
  stratified by class, deterministically: seed ``VAL_SEED`` combined with ``class_order_seed``); the
  official test part gives its test part;
* ``train_size`` and ``test_size`` (optional) keep that many of each task's train (test) samples,
  stratified by class, drawn with seed ``SUBSAMPLE_SEED`` (combined with ``class_order_seed``); the
  train subsample is drawn after the val part is held out, so val is the same with and without it,
  and a smaller subsample is part of a larger one. For a network too slow for the whole dataset;
* pixels are scaled to [0, 1] and normalised per channel with the mean/std of the *train* parts
  (val and test excluded) of the chosen tasks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .datasets import DATASETS, N_CLASSES, RawDataset, load_raw, stratified_holdout

__all__ = ["BENCHMARKS", "SUBSAMPLE_SEED", "SplitBenchmark", "VAL_SEED", "check_subsample_size", "class_pairs",
           "load_split_benchmark", "make_split_benchmark"]

BENCHMARKS: tuple[str, ...] = DATASETS
"""Valid benchmark names: ("mnist", "fashion-mnist", "cifar10", "mnist-5k", "fashion-mnist-32")."""

MAX_TASKS = N_CLASSES // 2
VAL_SEED = 0
"""Fixed seed of the train/val hold-out (combined with ``class_order_seed``)."""
SUBSAMPLE_SEED = 1
"""Fixed seed of the ``train_size``/``test_size`` subsamples (combined with ``class_order_seed``)."""


@dataclass(frozen=True)
class SplitBenchmark:
    """A sequence of binary tasks over one tensor of samples; see the module docstring."""

    name: str
    x: torch.Tensor
    y: torch.Tensor
    task: torch.Tensor
    train: tuple[torch.Tensor, ...]
    val: tuple[torch.Tensor, ...]
    test: tuple[torch.Tensor, ...]
    classes: tuple[tuple[int, ...], ...]
    input_shape: tuple[int, ...]
    mean: tuple[float, ...] = ()
    """Per-channel mean of the train pixels in [0, 1] used for normalisation (for logs)."""
    std: tuple[float, ...] = ()
    """Per-channel std of the train pixels in [0, 1] used for normalisation (for logs)."""

    def __post_init__(self) -> None:
        n = len(self.classes)
        if not (len(self.train) == len(self.val) == len(self.test) == n):
            raise ValueError(
                f"{self.name}: {n} tasks in classes but {len(self.train)}/{len(self.val)}/{len(self.test)} "
                "train/val/test index tensors"
            )
        if tuple(self.x.shape[1:]) != tuple(self.input_shape):
            raise ValueError(f"{self.name}: x has sample shape {tuple(self.x.shape[1:])}, input_shape {self.input_shape}")
        if not (self.y.shape == self.task.shape == (self.x.shape[0],)):
            raise ValueError(f"{self.name}: x, y and task disagree on the number of samples")

    @property
    def n_tasks(self) -> int:
        """Number of tasks."""
        return len(self.classes)

    def to(self, device: torch.device | str) -> SplitBenchmark:
        """A copy with ``x``, ``y``, ``task`` and all index tensors on ``device``."""

        def move(parts: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
            return tuple(t.to(device) for t in parts)

        return dataclasses.replace(
            self,
            x=self.x.to(device),
            y=self.y.to(device),
            task=self.task.to(device),
            train=move(self.train),
            val=move(self.val),
            test=move(self.test),
        )

    def describe(self) -> str:
        """One line: name, number of tasks, input shape, and train/val/test sizes per task."""
        tasks = "; ".join(
            f"t{t} {self.classes[t]} {len(self.train[t])}/{len(self.val[t])}/{len(self.test[t])}"
            for t in range(self.n_tasks)
        )
        shape = "x".join(map(str, self.input_shape))
        return f"{self.name}: {self.n_tasks} tasks, input {shape}, train/val/test per task: {tasks}"


def class_pairs(class_order_seed: int | None = None, n_tasks: int = MAX_TASKS) -> tuple[tuple[int, int], ...]:
    """The class pair of each task: ``0..9`` in order, or shuffled by ``default_rng(class_order_seed)``."""
    _check_n_tasks(n_tasks)
    _check_seed(class_order_seed)
    order = np.arange(N_CLASSES) if class_order_seed is None else np.random.default_rng(class_order_seed).permutation(N_CLASSES)
    return tuple((int(a), int(b)) for a, b in order.reshape(-1, 2)[:n_tasks])


def load_split_benchmark(
    name: str,
    data_dir: str | Path | None = None,
    *,
    val_size: float | int = 0.1,
    class_order_seed: int | None = None,
    n_tasks: int = 5,
    download: bool = False,
    train_size: int | None = None,
    test_size: int | None = None,
) -> SplitBenchmark:
    """Load dataset ``name`` (see :data:`BENCHMARKS`) and cut it into ``n_tasks`` binary tasks.

    ``val_size``: fraction (float in [0, 1)) of each task's train part, or a count (int >= 0) per task,
    held out as its val part. ``train_size``/``test_size``: keep only this many train/test samples per
    task (None: all). Arguments are validated before any file is read (ValueError).
    """
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; valid names: {', '.join(BENCHMARKS)}")
    _check_val_size(val_size)
    check_subsample_size(train_size, "train_size")
    check_subsample_size(test_size, "test_size")
    pairs = class_pairs(class_order_seed, n_tasks)
    raw = load_raw(name, data_dir, download)
    return make_split_benchmark(raw, pairs, val_size=val_size, seed=class_order_seed, train_size=train_size,
                                test_size=test_size)


def make_split_benchmark(
    raw: RawDataset,
    pairs: tuple[tuple[int, int], ...],
    *,
    val_size: float | int = 0.1,
    seed: int | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
) -> SplitBenchmark:
    """Build the benchmark from an already-loaded :class:`RawDataset` (separate so tests need no files)."""
    _check_val_size(val_size)
    check_subsample_size(train_size, "train_size")
    check_subsample_size(test_size, "test_size")
    class_task, class_bit = _class_maps(pairs)
    keep_train = class_task[raw.train_y] >= 0
    keep_test = class_task[raw.test_y] >= 0
    images = np.concatenate([raw.train_x[keep_train], raw.test_x[keep_test]])
    labels = np.concatenate([raw.train_y[keep_train], raw.test_y[keep_test]])
    is_test = np.repeat([False, True], [int(keep_train.sum()), int(keep_test.sum())])
    task = class_task[labels]
    rng = np.random.default_rng([VAL_SEED] if seed is None else [VAL_SEED, seed])
    # one stream per part, so the test subsample does not depend on whether train is subsampled
    train_rng, test_rng = (np.random.default_rng([SUBSAMPLE_SEED, part] + ([] if seed is None else [seed]))
                           for part in (0, 1))
    train, val, test = [], [], []
    for t in range(len(pairs)):
        tr, va = _train_val(np.flatnonzero((task == t) & ~is_test), labels, val_size, rng, raw.name, t)
        train.append(_subsample(tr, labels, train_size, train_rng, f"{raw.name} train_size", t))
        val.append(va)
        test.append(_subsample(np.flatnonzero((task == t) & is_test), labels, test_size, test_rng,
                               f"{raw.name} test_size", t))
    train_idx = np.concatenate(train)
    mean, std = _channel_stats(images[train_idx])
    return SplitBenchmark(
        name=raw.name,
        x=_normalise(images, mean, std),
        y=torch.from_numpy(class_bit[labels]),
        task=torch.from_numpy(task),
        train=tuple(torch.from_numpy(i) for i in train),
        val=tuple(torch.from_numpy(i) for i in val),
        test=tuple(torch.from_numpy(i) for i in test),
        classes=tuple((int(a), int(b)) for a, b in pairs),
        input_shape=tuple(int(s) for s in images.shape[1:]),
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
    )


# --------------------------------------------------------------------------------------------- helpers


def _check_n_tasks(n_tasks: int) -> None:
    if isinstance(n_tasks, bool) or not isinstance(n_tasks, (int, np.integer)) or not 1 <= n_tasks <= MAX_TASKS:
        raise ValueError(f"n_tasks must be an integer in 1..{MAX_TASKS} (pairs of the 10 classes), got {n_tasks!r}")


def _check_seed(seed: int | None) -> None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ValueError(f"class_order_seed must be None (classes in order) or an integer >= 0, got {seed!r}")


def _check_val_size(val_size: float | int) -> None:
    if isinstance(val_size, bool):
        raise ValueError(f"val_size must be a float in [0, 1) or an int >= 0, got {val_size!r}")
    if isinstance(val_size, (int, np.integer)):
        if val_size < 0:
            raise ValueError(f"val_size as a count per task must be >= 0, got {val_size}")
    elif isinstance(val_size, (float, np.floating)):
        if not 0.0 <= val_size < 1.0:
            raise ValueError(f"val_size as a fraction must lie in [0, 1), got {val_size}")
    else:
        raise ValueError(f"val_size must be a float in [0, 1) or an int >= 0, got {type(val_size).__name__}")


def check_subsample_size(size: int | None, what: str = "train_size") -> None:
    """A subsample size is None (every sample) or a count of at least 2 per task (one per class)."""
    if size is None:
        return
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 2:
        raise ValueError(f"{what} must be None (all samples) or an integer >= 2 per task, got {size!r}")


def _subsample(idx: np.ndarray, labels: np.ndarray, size: int | None, rng: np.random.Generator, what: str,
               t: int) -> np.ndarray:
    """``size`` of one task's indices (all for None), stratified by class, sorted; ``what`` names them."""
    if size is None:
        return idx
    if size > len(idx):
        raise ValueError(f"{what}={size} exceeds the {len(idx)} samples of task {t}; choose a smaller "
                         "count or None for all")
    return idx[stratified_holdout(labels[idx], size, rng)]


def _class_maps(pairs: tuple[tuple[int, int], ...]) -> tuple[np.ndarray, np.ndarray]:
    """Lookup tables class -> task (-1 if unused) and class -> label within its task (0 or 1)."""
    flat = [c for pair in pairs for c in pair]
    if len(set(flat)) != len(flat) or any(len(p) != 2 for p in pairs) or not all(0 <= c < N_CLASSES for c in flat):
        raise ValueError(f"pairs must be disjoint pairs of classes in 0..{N_CLASSES - 1}, got {pairs}")
    class_task = np.full(N_CLASSES, -1, dtype=np.int64)
    class_bit = np.zeros(N_CLASSES, dtype=np.int64)
    for t, (a, b) in enumerate(pairs):
        class_task[[a, b]] = t
        class_bit[b] = 1
    return class_task, class_bit


def _train_val(
    idx: np.ndarray, labels: np.ndarray, val_size: float | int, rng: np.random.Generator, name: str, t: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split one task's train indices into (train, val), val stratified by class; both sorted."""
    n_val = int(round(val_size * len(idx))) if isinstance(val_size, (float, np.floating)) else int(val_size)
    if n_val >= len(idx):
        raise ValueError(
            f"{name}: val_size={val_size!r} holds out {n_val} of the {len(idx)} train samples of task {t}, "
            "leaving none to train on"
        )
    is_val = stratified_holdout(labels[idx], n_val, rng)
    return idx[~is_val], idx[is_val]


def _channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-channel mean/std of uint8 images scaled to [0, 1], from pixel-value histograms.

    Why histograms: exact in float64 without materialising a float copy of the whole train set.
    """
    if len(images) == 0:
        raise ValueError("no train samples to compute the normalisation from")
    values = np.arange(256, dtype=np.float64) / 255.0
    channels = images.shape[1]
    means, stds = np.empty(channels), np.empty(channels)
    for c in range(channels):  # 1 or 3 channels
        pixels = torch.from_numpy(np.ascontiguousarray(images[:, c])).reshape(-1)
        hist = torch.bincount(pixels, minlength=256).numpy().astype(np.float64)  # much faster than numpy's
        total = hist.sum()
        means[c] = hist @ values / total
        var = hist @ (values - means[c]) ** 2 / total
        stds[c] = np.sqrt(var) if var > 0 else 1.0
    return means, stds


def _normalise(images: np.ndarray, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    """float32 ``(pixel / 255 - mean) / std`` per channel."""
    shape = (1, -1) + (1,) * (images.ndim - 2)
    x = torch.from_numpy(images).to(torch.float32).div_(255.0)
    x.sub_(torch.from_numpy(mean.astype(np.float32)).view(shape))
    return x.div_(torch.from_numpy(std.astype(np.float32)).view(shape))
