"""Digests of Split (class-pair) benchmarks, to check that they stay byte-identical as the data layer grows.

``tests/data/split_reference.json`` was written by ``python tests/split_reference.py`` at commit ee49e83,
before the data layer learned class groups and permuted/rotated tasks; ``tests/test_long_sequences.py``
rebuilds every case with the current code and compares each tensor's digest.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from sleepcl.data.datasets import RawDataset
from sleepcl.data.split import SplitBenchmark, load_split_benchmark, make_split_benchmark

REFERENCE = Path(__file__).parent / "data" / "split_reference.json"


def synthetic_raw(shape: tuple[int, int, int], seed: int) -> RawDataset:
    """A deterministic 10-class dataset of random uint8 images (30 train, 10 test per class)."""
    rng = np.random.default_rng(seed)
    train_y = rng.permutation(np.repeat(np.arange(10), 30)).astype(np.int64)
    test_y = rng.permutation(np.repeat(np.arange(10), 10)).astype(np.int64)
    train_x = rng.integers(0, 256, size=(len(train_y), *shape), dtype=np.uint8)
    test_x = rng.integers(0, 256, size=(len(test_y), *shape), dtype=np.uint8)
    return RawDataset("synthetic", train_x, train_y, test_x, test_y)


def _pairs(seed: int | None, n: int) -> tuple[tuple[int, int], ...]:
    from sleepcl.data.split import class_pairs

    return class_pairs(seed, n)


CASES: dict[str, Callable[[], SplitBenchmark]] = {
    "synthetic-pairs": lambda: make_split_benchmark(synthetic_raw((1, 8, 8), 0), _pairs(None, 5)),
    "synthetic-shuffled-3-tasks": lambda: make_split_benchmark(synthetic_raw((1, 8, 8), 1), _pairs(3, 3),
                                                               val_size=5, seed=3),
    "synthetic-rgb-no-val": lambda: make_split_benchmark(synthetic_raw((3, 6, 6), 2), _pairs(None, 5), val_size=0),
    "mnist-5k": lambda: load_split_benchmark("mnist-5k"),
    "mnist-5k-seed3-2-tasks": lambda: load_split_benchmark("mnist-5k", val_size=0.2, class_order_seed=3, n_tasks=2),
    "fashion-mnist": lambda: load_split_benchmark("fashion-mnist"),  # the Debian package's files
}


def _digest(t: torch.Tensor) -> str:
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def digests(bench: SplitBenchmark) -> dict[str, Any]:
    """One digest per tensor (index tensors one per task), and the plain fields as they are."""
    out: dict[str, Any] = {name: _digest(getattr(bench, name)) for name in ("x", "y", "task")}
    for part in ("train", "val", "test"):
        out[part] = [_digest(i) for i in getattr(bench, part)]
    out.update(name=bench.name, classes=[list(c) for c in bench.classes], input_shape=list(bench.input_shape),
               mean=list(bench.mean), std=list(bench.std))
    return out


if __name__ == "__main__":
    REFERENCE.write_text(json.dumps({name: digests(make()) for name, make in CASES.items()}, indent=1) + "\n")
    print(f"wrote {REFERENCE}")
