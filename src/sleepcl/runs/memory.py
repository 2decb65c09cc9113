"""How much memory a population needs, and how much there is: populations are sized to fit, not discovered
to be too large when the machine starts swapping.

The estimate (:func:`member_bytes`) is a pure function of a network's parameter shapes and its activations,
counted from what the engine keeps per member:

* every parameter four times as a float (the weight, its gradient, Adam's two moments), and every prunable
  weight twice more (its float gradient mask, its masked copy while evaluating), one byte of owner map and
  12 bytes while pruning sorts it (the magnitude and an int64 index);
* one training step's activations, taken as ``batch x widest activation x number of layers``, twice (the
  forward pass keeps them for the backward pass, which makes as many gradients);
* one evaluation chunk's widest activation (:meth:`Population.evaluate`'s chunk).

The data is counted once (:func:`data_bytes`): the normalised float32 samples plus the raw uint8 ones while
they are read, and so is a workspace of :data:`WORKSPACE_BYTES` (kernels' scratch memory and first-use
allocations: a population of one VGG member added 540 MB, 120 MB more than its per-member estimate).
``python benchmarks/memory_estimate.py`` measured (``ru_maxrss``, 2026-12-03, this project's CPU machine): one
more MLP member on mnist-5k 12.1 MB (estimate 17.8 MB, 1.47x), one more VGG member on CIFAR-shaped data
315.5 MB (estimate 416.6 MB, 1.32x): on the safe side, so a population sized to fit does fit.

What there is (:func:`available_bytes`): ``MemAvailable`` of ``/proc/meminfo`` (the kernel's own estimate of what
can be allocated without swapping), or ``os.sysconf`` where there is no /proc, or the GPU's free memory, of which
90% is used; ``--max-memory`` replaces it.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

__all__ = ["DATASET_SHAPES", "WORKSPACE_BYTES", "MemoryPlan", "available_bytes", "data_bytes", "format_bytes",
           "member_bytes", "parse_size", "plan_population"]

#: Samples and sample shape of each benchmark's dataset (train + test), for sizing before anything is read.
DATASET_SHAPES: dict[str, tuple[int, tuple[int, ...]]] = {
    "mnist": (70_000, (1, 28, 28)),
    "fashion-mnist": (70_000, (1, 28, 28)),
    "cifar10": (60_000, (3, 32, 32)),
    "mnist-5k": (5_000, (1, 28, 28)),
    "fashion-mnist-32": (70_000, (1, 32, 32)),
}
#: Memory a training process needs besides members and data (see module doc).
WORKSPACE_BYTES = 256 * 2**20
#: Share of the measured available memory a command plans to use (the rest is left to the machine).
USABLE_SHARE = 0.9
EVAL_CHUNK_FLOATS = 2**22  # Population.evaluate: a chunk's widest activation, per member
_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def member_bytes(shapes: Mapping[str, Sequence[int]], prunable: Sequence[str], *, batch_size: int,
                 activation_floats: int) -> int:
    """Bytes one population member needs while it trains (see module doc for what is counted)."""
    params = sum(math.prod(s) for s in shapes.values())
    owned = sum(math.prod(shapes[name]) for name in prunable)
    layers = max(1, sum(1 for name in shapes if name.endswith("weight")))
    step = 2 * batch_size * activation_floats * layers
    chunk = max(16, min(2048, EVAL_CHUNK_FLOATS // max(1, activation_floats)))
    evaluation = chunk * activation_floats
    return 4 * (4 * params + 2 * owned + step + evaluation) + 13 * owned


def data_bytes(n_samples: int, sample_shape: Sequence[int]) -> int:
    """Bytes of a benchmark's samples: float32 on the training device, uint8 while they are read."""
    return n_samples * math.prod(sample_shape) * (4 + 1)


@dataclass(frozen=True)
class MemoryPlan:
    """How many members of one kind of run fit: the figures behind the answer, for the message."""

    per_member: int
    data: int            # the data and the workspace, once
    available: int
    source: str          # where ``available`` comes from, for the message
    fits: int            # members that fit (0: not even one)

    def describe(self, members: int) -> str:
        return (f"{members} member{'s' if members != 1 else ''} need{'' if members != 1 else 's'} about "
                f"{format_bytes(self.data + members * self.per_member)} ({format_bytes(self.per_member)} each "
                f"+ {format_bytes(self.data)} of data and workspace) of {format_bytes(self.available)} ({self.source})")


def plan_population(per_member: int, data: int, available: int, source: str) -> MemoryPlan:
    """How many members fit in ``available`` bytes once the data is in."""
    fits = max(0, (available - data) // per_member) if per_member > 0 else 0
    return MemoryPlan(per_member, data, available, source, int(fits))


def available_bytes(device: str = "cpu", limit: int | None = None) -> tuple[int, str]:
    """``(bytes a command may plan to use, where that figure comes from)`` on ``device``."""
    if limit is not None:
        return limit, "--max-memory"
    if str(device).startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free * USABLE_SHARE), f"{USABLE_SHARE:.0%} of the free memory of {device}"
    avail = _meminfo_available()
    if avail is not None:
        return int(avail * USABLE_SHARE), f"{USABLE_SHARE:.0%} of MemAvailable in /proc/meminfo"
    try:
        pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return int(pages * USABLE_SHARE), f"{USABLE_SHARE:.0%} of the free physical memory"
    except (ValueError, OSError, AttributeError):
        return 2**62, "no way to measure it here"


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def parse_size(text: str, flag: str = "--max-memory") -> int:
    """``"4G"``, ``"500M"``, ``"1.5g"``, ``"2GB"`` or bytes -> bytes (binary units)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgtKMGT]?)(?:i?[bB])?\s*", str(text))
    if not m:
        raise ValueError(f"{flag} takes a size such as 4G, 500M or 1.5G, got {text!r}")
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if not math.isfinite(value) or value < 1:
        raise ValueError(f"{flag} must be a positive size such as 4G, got {text!r}")
    return int(value)


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover
