"""Task sequences over one dataset: Split (classes cut into tasks), Permuted and Rotated (every class in every
task, each task its own pixel map). Task-incremental: the task of every sample is known.

Why tensors and index tensors, not Datasets: the training engine keeps the whole benchmark on the
training device and draws batches by indexing, which is much faster for these small images than a
DataLoader.  A :class:`SplitBenchmark` therefore holds every image once and, per task, int64 index
tensors for its train/val/test parts; :meth:`SplitBenchmark.inputs`, :meth:`~SplitBenchmark.labels` and
:meth:`~SplitBenchmark.tasks` give a batch of sample indices its network inputs, labels and tasks.

**Split** (:func:`load_split_benchmark` with a dataset name, e.g. ``mnist-5k``):

* classes ``0..9`` (shuffled with ``numpy.random.default_rng(class_order_seed)`` if a seed is given)
  are paired in order: ``(c0, c1), (c2, c3), ...``; the first ``n_tasks`` pairs are the tasks; or
  ``class_groups="0,1,2|3,4,5|6,7,8,9"`` names each task's classes (any number, at least 2 each);
* within a task its classes are labels ``0..n_t-1`` in the order given (a pair: first 0, second 1);
* the dataset's official train part of a task's classes gives its train and val parts (val held out
  stratified by class, deterministically: seed ``VAL_SEED`` combined with ``class_order_seed``); the
  official test part gives its test part;
* ``train_size`` and ``test_size`` (optional) keep that many of each task's train (test) samples,
  stratified by class, drawn with seed ``SUBSAMPLE_SEED`` (combined with ``class_order_seed``); the
  train subsample is drawn after the val part is held out, so val is the same with and without it,
  and a smaller subsample is part of a larger one. For a network too slow for the whole dataset;
* pixels are scaled to [0, 1] and normalised per channel with the mean/std of the *train* parts
  (val and test excluded) of the chosen tasks; ``x`` holds them as float32, sample ``i`` of task ``task[i]``.

**Permuted / Rotated** (``permuted-mnist-5k``, ``rotated-fashion-mnist``, ...): the whole dataset, all 10
classes (label = class id), split once as above into train/val/test (``VAL_SEED``); task ``t`` sees those
images through its own pixel map (:mod:`sleepcl.data.transforms`: what each task sees, and how it is seeded).
``x`` holds the images once, normalised with the untransformed train images' mean/std; sample index ``i``
stands for image ``i % N`` seen by task ``i // N`` (``N = len(x)``), so ``train[t]`` is the base train
indices plus ``t * N``, computed when asked (:class:`TaskIndices`). Memory therefore does not grow with the
number of tasks (up to 255, the owner map's limit); the inputs of a batch are gathered through its tasks'
maps when the batch is drawn.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import overload

import numpy as np
import torch
from torch import Tensor

from .datasets import DATASETS, IMAGE_SHAPES, N_CLASSES, RawDataset, load_raw, stratified_holdout
from .transforms import MAX_TASKS as MAX_OWNER_TASKS
from .transforms import (TRANSFORMS, PixelMaps, canonical_permutations, canonical_rotations, check_n_tasks,
                         parse_permutations, parse_rotations, task_pixel_maps)

__all__ = ["BENCHMARKS", "SUBSAMPLE_SEED", "SplitBenchmark", "TaskIndices", "VAL_SEED", "canonical_task_spec",
           "check_subsample_size", "check_tasks", "class_pairs", "default_n_tasks", "load_split_benchmark",
           "make_split_benchmark", "make_transformed_benchmark", "parse_benchmark", "parse_class_groups"]

BENCHMARKS: tuple[str, ...] = DATASETS + tuple(f"{t}-{d}" for t in TRANSFORMS for d in DATASETS)
"""Valid benchmark names: the datasets ("mnist", "fashion-mnist", "cifar10", "mnist-5k", "fashion-mnist-32") cut
into Split tasks, then "permuted-" and "rotated-" each of them."""

MAX_TASKS = N_CLASSES // 2
"""Split tasks: at most 5 (pairs of the 10 classes; a task needs two classes)."""
VAL_SEED = 0
"""Fixed seed of the train/val hold-out (combined with ``class_order_seed``)."""
SUBSAMPLE_SEED = 1
"""Fixed seed of the ``train_size``/``test_size`` subsamples (combined with ``class_order_seed``)."""


def parse_benchmark(name: str) -> tuple[str | None, str]:
    """``"permuted-mnist-5k"`` -> ``("permuted", "mnist-5k")``; ``"mnist-5k"`` -> ``(None, "mnist-5k")``."""
    if name in DATASETS:
        return None, name
    for transform in TRANSFORMS:
        dataset = name[len(transform) + 1:]
        if name.startswith(transform + "-") and dataset in DATASETS:
            return transform, dataset
    raise ValueError(f"unknown benchmark {name!r}; valid names: {', '.join(BENCHMARKS)}")


class TaskIndices(Sequence[Tensor]):
    """``n_tasks`` index tensors ``base + t * stride`` made when asked, so they take no memory per task."""

    def __init__(self, base: Tensor, stride: int, n_tasks: int):
        self.base, self.stride, self.n_tasks = base, stride, n_tasks

    def __len__(self) -> int:
        return self.n_tasks

    @overload
    def __getitem__(self, t: int) -> Tensor: ...
    @overload
    def __getitem__(self, t: slice) -> tuple[Tensor, ...]: ...

    def __getitem__(self, t: int | slice) -> Tensor | tuple[Tensor, ...]:
        if isinstance(t, slice):
            return tuple(self[i] for i in range(*t.indices(self.n_tasks)))
        if not -self.n_tasks <= t < self.n_tasks:
            raise IndexError(f"task {t} of {self.n_tasks}")
        return self.base + (t % self.n_tasks) * self.stride

    def to(self, device: torch.device | str) -> TaskIndices:
        return TaskIndices(self.base.to(device), self.stride, self.n_tasks)


@dataclass(frozen=True)
class SplitBenchmark:
    """A sequence of tasks over one tensor of images; see the module docstring."""

    name: str
    x: Tensor
    """The stored images, normalised (float32): the network inputs (Split), or what each task's map reads
    (Permuted, Rotated: index them through :meth:`inputs`, never directly)."""
    y: Tensor
    """The label of each stored image within its task (Split), or its class (Permuted, Rotated)."""
    task: Tensor | None
    """The task of each stored image (Split); None when every task sees every image (Permuted, Rotated)."""
    train: Sequence[Tensor]
    val: Sequence[Tensor]
    test: Sequence[Tensor]
    classes: tuple[tuple[int, ...], ...]
    """The dataset's classes of each task, in label order."""
    input_shape: tuple[int, ...]
    mean: tuple[float, ...] = ()
    """Per-channel mean of the train pixels in [0, 1] used for normalisation (for logs)."""
    std: tuple[float, ...] = ()
    """Per-channel std of the train pixels in [0, 1] used for normalisation (for logs)."""
    maps: PixelMaps | None = None
    """Each task's pixel map (Permuted, Rotated); None for Split."""

    def __post_init__(self) -> None:
        n = len(self.classes)
        if not (len(self.train) == len(self.val) == len(self.test) == n):
            raise ValueError(
                f"{self.name}: {n} tasks in classes but {len(self.train)}/{len(self.val)}/{len(self.test)} "
                "train/val/test index tensors"
            )
        if tuple(self.x.shape[1:]) != tuple(self.input_shape):
            raise ValueError(f"{self.name}: x has sample shape {tuple(self.x.shape[1:])}, input_shape {self.input_shape}")
        if self.y.shape != (self.x.shape[0],) or (self.maps is None) == (self.task is None) or (
                self.task is not None and self.task.shape != self.y.shape):
            raise ValueError(f"{self.name}: x, y and task disagree on the number of samples (task is None exactly "
                             "when the benchmark has pixel maps)")
        if self.maps is not None and self.maps.n_tasks != n:
            raise ValueError(f"{self.name}: {self.maps.n_tasks} pixel maps for {n} tasks")

    @property
    def n_tasks(self) -> int:
        """Number of tasks."""
        return len(self.classes)

    @property
    def n_classes(self) -> tuple[int, ...]:
        """Number of classes (labels ``0..n-1``) of each task."""
        return tuple(len(c) for c in self.classes)

    @property
    def head_size(self) -> int:
        """Outputs a task's head needs: the most classes of any task."""
        return max(self.n_classes)

    @property
    def n_samples(self) -> int:
        """Size of the sample index space: stored images, times the tasks when each task sees them all."""
        return self.x.shape[0] * (self.n_tasks if self.maps is not None else 1)

    def inputs(self, index: Tensor, task: int | None = None, out: Tensor | None = None) -> Tensor:
        """Network inputs of samples ``index`` (any shape): float32 ``(*index.shape, *input_shape)``.

        ``task``: the task of every sample, when the caller knows it (a day of one task): then a permuted or
        rotated batch reads one map instead of one per sample. ``out``: a contiguous float32 tensor of
        ``index.numel() * prod(input_shape)`` elements to write into (returned, viewed to the result's shape).
        Split: exactly ``x[index]``.
        """
        shape = (*index.shape, *self.input_shape)
        if self.maps is None:
            if out is None:
                return self.x[index]
            flat = self.x.view(self.x.shape[0], -1)
            return torch.index_select(flat, 0, index.reshape(-1), out=out.view(index.numel(), -1)).view(shape)
        n, channels = self.x.shape[0], self.input_shape[0]
        flat = index.reshape(-1)
        pixels = self.x.view(n, channels, -1)[flat.remainder(n)]  # (M, C, P)
        x = self.maps.apply(pixels, task if task is not None else flat.div(n, rounding_mode="floor"))
        return (x if out is None else out.view(x.shape).copy_(x)).view(shape)

    def task_inputs(self, task: int) -> Tensor:
        """The inputs of every stored image as task ``task`` sees them, ``(len(x), *input_shape)``: for a day of
        one task, drawn once so that its batches index a plain tensor (``task_inputs(t)[index - t * len(x)]``).
        Split: ``x`` itself (all tasks' images, each with its own task)."""
        if self.maps is None:
            return self.x
        n = self.x.shape[0]
        return self.inputs(torch.arange(n, device=self.x.device) + task * n, task=task)

    def labels(self, index: Tensor) -> Tensor:
        """Label of samples ``index`` within their task (int64, shape of ``index``)."""
        return self.y[index] if self.maps is None else self.y[index.remainder(self.x.shape[0])]

    def tasks(self, index: Tensor) -> Tensor:
        """Task (0-based) of samples ``index`` (int64, shape of ``index``)."""
        if self.maps is None:
            return self.task[index]  # type: ignore[index]
        return index.div(self.x.shape[0], rounding_mode="floor")

    def head_mask(self) -> Tensor:
        """``(n_tasks, head_size)`` bool: output ``j`` is a class of task ``t`` (False beyond a smaller task's classes)."""
        n = torch.tensor(self.n_classes, device=self.x.device)
        return torch.arange(self.head_size, device=self.x.device) < n[:, None]

    def to(self, device: torch.device | str) -> SplitBenchmark:
        """A copy with every tensor (images, labels, indices, maps) on ``device``."""

        def move(parts: Sequence[Tensor]) -> Sequence[Tensor]:
            return parts.to(device) if isinstance(parts, TaskIndices) else tuple(t.to(device) for t in parts)

        return dataclasses.replace(
            self,
            x=self.x.to(device),
            y=self.y.to(device),
            task=None if self.task is None else self.task.to(device),
            train=move(self.train),
            val=move(self.val),
            test=move(self.test),
            maps=None if self.maps is None else self.maps.to(device),
        )

    def describe(self) -> str:
        """One line: name, number of tasks, input shape, and train/val/test sizes per task."""
        shape = "x".join(map(str, self.input_shape))
        if self.maps is not None:  # every task alike but for its map
            sizes = f"{len(self.train[0])}/{len(self.val[0])}/{len(self.test[0])}"
            return (f"{self.name}: {self.n_tasks} tasks of {self.head_size} classes, input {shape}, "
                    f"train/val/test per task: {sizes}")
        tasks = "; ".join(
            f"t{t} {self.classes[t]} {len(self.train[t])}/{len(self.val[t])}/{len(self.test[t])}"
            for t in range(self.n_tasks)
        )
        return f"{self.name}: {self.n_tasks} tasks, input {shape}, train/val/test per task: {tasks}"


def class_pairs(class_order_seed: int | None = None, n_tasks: int = MAX_TASKS) -> tuple[tuple[int, int], ...]:
    """The class pair of each task: ``0..9`` in order, or shuffled by ``default_rng(class_order_seed)``."""
    _check_n_tasks(n_tasks)
    _check_seed(class_order_seed)
    order = np.arange(N_CLASSES) if class_order_seed is None else np.random.default_rng(class_order_seed).permutation(N_CLASSES)
    return tuple((int(a), int(b)) for a, b in order.reshape(-1, 2)[:n_tasks])


def parse_class_groups(text: str) -> tuple[tuple[int, ...], ...]:
    """``"0,1,2|3,4,5|6,7,8,9"`` -> ``((0, 1, 2), (3, 4, 5), (6, 7, 8, 9))``: each task's classes, in label order."""
    try:
        groups = tuple(tuple(int(c) for c in group.split(",")) for group in text.split("|"))
    except ValueError:
        raise ValueError(f"cannot read class groups {text!r}: write each task's classes separated by commas and the "
                         "tasks by |, like 0,1,2|3,4,5|6,7,8,9") from None
    _class_maps(groups)
    return groups


def canonical_task_spec(name: str, text: str | None) -> str | None:
    """The one spelling of a ``class_groups``, ``permutations`` or ``rotations`` value (a run's identity)."""
    if text is None:
        return None
    if name == "class_groups":
        return "|".join(",".join(map(str, g)) for g in parse_class_groups(text))
    if name == "permutations":
        return canonical_permutations(parse_permutations(text))
    if name == "rotations":
        return canonical_rotations(parse_rotations(text))
    raise ValueError(f"no task spec named {name!r}")


def default_n_tasks(benchmark: str, *, class_groups: str | None = None, permutations: str | None = None,
                    rotations: str | None = None) -> int:
    """Tasks when none are asked for: one per class group or per listed permutation/rotation, else 5."""
    transform, _ = parse_benchmark(benchmark)
    if class_groups is not None and transform is None:
        return len(parse_class_groups(class_groups))
    if permutations is not None and transform == "permuted":
        return len(parse_permutations(permutations))
    if rotations is not None and transform == "rotated":
        return len(parse_rotations(rotations))
    return MAX_TASKS


def check_tasks(benchmark: str, n_tasks: int, *, class_order_seed: int | None = None, class_groups: str | None = None,
                transform_seed: int = 0, permutations: str | None = None, rotations: str | None = None) -> None:
    """Refuse a task sequence that cannot be built, with a message naming the problem and the fix.

    Checks everything that needs no files: the name, the number of tasks against what the benchmark has
    (Split) or the owner map holds (Permuted, Rotated), that every option fits the benchmark kind, and that
    no two tasks would be identical (the pixel maps are built for this: cached, milliseconds).
    """
    transform, dataset = parse_benchmark(benchmark)
    _check_seed(class_order_seed)
    if isinstance(transform_seed, bool) or not isinstance(transform_seed, (int, np.integer)) or transform_seed < 0:
        raise ValueError(f"transform_seed (--transform-seed) must be an integer >= 0, got {transform_seed!r}")
    for flag, value, kind in (("--permutations", permutations, "permuted"), ("--rotations", rotations, "rotated")):
        if value is not None and transform != kind:
            raise ValueError(f"{benchmark}: {flag} applies to {kind}-* benchmarks only (e.g. {kind}-{dataset}); drop it")
    spec = permutations if transform == "permuted" else rotations
    if transform is None:
        if transform_seed != 0:
            raise ValueError(f"{benchmark}: --transform-seed applies to permuted-* and rotated-* benchmarks only; drop it")
        if class_groups is not None:
            if class_order_seed is not None:
                raise ValueError("class_groups (--class-groups) names each task's classes itself: drop "
                                 "class_order_seed (--class-order-seed), or drop class_groups to shuffle the pairs")
            groups = parse_class_groups(class_groups)
            if n_tasks != len(groups):
                raise ValueError(f"{benchmark}: class groups {class_groups!r} make {len(groups)} tasks but n_tasks "
                                 f"(--tasks) is {n_tasks}: set it to {len(groups)} (or leave --tasks out)")
        else:
            _check_n_tasks(n_tasks, benchmark)
        return
    if class_order_seed is not None or class_groups is not None:
        raise ValueError(f"{benchmark}: every task has all {N_CLASSES} classes, so --class-order-seed and "
                         "--class-groups do not apply; drop them (--transform-seed varies the tasks)")
    if spec is not None and transform_seed != 0:
        raise ValueError(f"{benchmark}: --transform-seed has no effect with an explicit "
                         f"--{'permutations' if transform == 'permuted' else 'rotations'} list; drop one of them")
    check_n_tasks(n_tasks, benchmark)
    task_pixel_maps(transform, IMAGE_SHAPES[dataset], n_tasks, int(transform_seed), spec)


def load_split_benchmark(
    name: str,
    data_dir: str | Path | None = None,
    *,
    val_size: float | int = 0.1,
    class_order_seed: int | None = None,
    n_tasks: int | None = None,
    download: bool = False,
    class_groups: str | None = None,
    transform_seed: int = 0,
    permutations: str | None = None,
    rotations: str | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
) -> SplitBenchmark:
    """Load benchmark ``name`` (see :data:`BENCHMARKS`) as ``n_tasks`` tasks.

    ``n_tasks=None``: 5 class pairs (Split), one task per group of ``class_groups`` or per entry of
    ``permutations``/``rotations``, else 5. ``val_size``: fraction (float in [0, 1)) of each task's train
    part, or a count (int >= 0) per task, held out as its val part. ``train_size``/``test_size``: keep only
    this many train/test samples per task (None: all; Permuted/Rotated: of the images every task shares).
    Other arguments: the module docstring
    and :mod:`sleepcl.data.transforms`. Arguments are validated before any file is read (ValueError).
    """
    transform, dataset = parse_benchmark(name)
    _check_val_size(val_size)
    check_subsample_size(train_size, "train_size")
    check_subsample_size(test_size, "test_size")
    if n_tasks is None:
        n_tasks = default_n_tasks(name, class_groups=class_groups, permutations=permutations, rotations=rotations)
    check_tasks(name, n_tasks, class_order_seed=class_order_seed, class_groups=class_groups,
                transform_seed=transform_seed, permutations=permutations, rotations=rotations)
    if transform is None:
        groups = parse_class_groups(class_groups) if class_groups is not None else class_pairs(class_order_seed, n_tasks)
        return make_split_benchmark(load_raw(dataset, data_dir, download), groups, val_size=val_size,
                                    seed=class_order_seed, train_size=train_size, test_size=test_size)
    spec = permutations if transform == "permuted" else rotations
    return make_transformed_benchmark(load_raw(dataset, data_dir, download), transform, n_tasks, val_size=val_size,
                                      seed=transform_seed, spec=spec, train_size=train_size, test_size=test_size)


def make_split_benchmark(
    raw: RawDataset,
    pairs: Sequence[Sequence[int]],
    *,
    val_size: float | int = 0.1,
    seed: int | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
) -> SplitBenchmark:
    """Build the benchmark from an already-loaded :class:`RawDataset` (separate so tests need no files).

    ``pairs``: each task's classes, in label order: pairs, or groups of any size >= 2.
    """
    _check_val_size(val_size)
    check_subsample_size(train_size, "train_size")
    check_subsample_size(test_size, "test_size")
    groups = tuple(tuple(int(c) for c in g) for g in pairs)
    images, labels, task, train, val, test = _select_and_split(raw, groups, val_size, seed, train_size,
                                                                      test_size)
    class_task, class_label = _class_maps(groups)
    mean, std = _channel_stats(images[np.concatenate(train)])
    return SplitBenchmark(
        name=raw.name,
        x=_normalise(images, mean, std),
        y=torch.from_numpy(class_label[labels]),
        task=torch.from_numpy(task),
        train=tuple(torch.from_numpy(i) for i in train),
        val=tuple(torch.from_numpy(i) for i in val),
        test=tuple(torch.from_numpy(i) for i in test),
        classes=groups,
        input_shape=tuple(int(s) for s in images.shape[1:]),
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
    )


def make_transformed_benchmark(
    raw: RawDataset,
    transform: str,
    n_tasks: int,
    *,
    val_size: float | int = 0.1,
    seed: int = 0,
    spec: str | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
) -> SplitBenchmark:
    """``n_tasks`` tasks of all classes of ``raw``, task ``t`` through its own pixel map (module docstring).

    ``transform``: "permuted" or "rotated"; ``seed``: the transform seed; ``spec``: the explicit per-task
    list (permutation seeds or angles), or None.
    """
    _check_val_size(val_size)
    check_subsample_size(train_size, "train_size")
    check_subsample_size(test_size, "test_size")
    name = f"{transform}-{raw.name}"
    check_n_tasks(n_tasks, name)
    taps, weights = task_pixel_maps(transform, raw.image_shape, n_tasks, seed, spec)
    every_class = (tuple(range(N_CLASSES)),)
    images, labels, _, (train,), (val,), (test,) = _select_and_split(raw, every_class, val_size, None,
                                                                       train_size, test_size)
    mean, std = _channel_stats(images[train])
    stride = len(images)
    return SplitBenchmark(
        name=name,
        x=_normalise(images, mean, std),
        y=torch.from_numpy(labels),
        task=None,
        train=TaskIndices(torch.from_numpy(train), stride, n_tasks),
        val=TaskIndices(torch.from_numpy(val), stride, n_tasks),
        test=TaskIndices(torch.from_numpy(test), stride, n_tasks),
        classes=every_class * n_tasks,
        input_shape=tuple(int(s) for s in images.shape[1:]),
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        maps=PixelMaps.over_normalised(taps, weights, mean, std),
    )


# --------------------------------------------------------------------------------------------- helpers


def _check_n_tasks(n_tasks: int, benchmark: str | None = None) -> None:
    if isinstance(n_tasks, bool) or not isinstance(n_tasks, (int, np.integer)) or not 1 <= n_tasks <= MAX_TASKS:
        name, longer = (f"{benchmark}: ", f"; for longer sequences use permuted-{benchmark} or rotated-{benchmark} "
                        f"(up to {MAX_OWNER_TASKS} tasks)") if benchmark else ("", "")
        raise ValueError(f"{name}n_tasks (--tasks) must be between 1 and {MAX_TASKS}: the {N_CLASSES} classes make "
                         f"{MAX_TASKS} pairs, got {n_tasks!r}{longer}")


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


def _class_maps(groups: tuple[tuple[int, ...], ...]) -> tuple[np.ndarray, np.ndarray]:
    """Lookup tables class -> task (-1 if unused) and class -> label within its task (its place in its group)."""
    flat = [c for group in groups for c in group]
    if (len(set(flat)) != len(flat) or not groups or any(len(g) < 2 for g in groups)
            or not all(0 <= c < N_CLASSES for c in flat)):
        raise ValueError(f"class groups must be disjoint groups of at least 2 classes in 0..{N_CLASSES - 1} "
                         f"(a task needs two classes to tell apart), got {groups}")
    class_task = np.full(N_CLASSES, -1, dtype=np.int64)
    class_label = np.zeros(N_CLASSES, dtype=np.int64)
    for t, group in enumerate(groups):
        class_task[list(group)] = t
        class_label[list(group)] = np.arange(len(group))
    return class_task, class_label


def _select_and_split(raw: RawDataset, groups: tuple[tuple[int, ...], ...], val_size: float | int,
                      seed: int | None, train_size: int | None = None, test_size: int | None = None,
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list, list, list]:
    """The images of the groups' classes (official train part first), their classes and tasks, and per task
    its train/val/test indices into them (val stratified by class, drawn task by task from one generator;
    then the ``train_size``/``test_size`` subsamples, each from its own generator)."""
    class_task, _ = _class_maps(groups)
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
    for t in range(len(groups)):
        tr, va = _train_val(np.flatnonzero((task == t) & ~is_test), labels, val_size, rng, raw.name, t)
        train.append(_subsample(tr, labels, train_size, train_rng, f"{raw.name} train_size", t))
        val.append(va)
        test.append(_subsample(np.flatnonzero((task == t) & is_test), labels, test_size, test_rng,
                               f"{raw.name} test_size", t))
    return images, labels, task, train, val, test


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
