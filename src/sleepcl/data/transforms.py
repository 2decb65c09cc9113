"""Per-task input transforms of the Permuted and Rotated benchmarks: each task sees the same images through
its own fixed pixel map.

Why pixel maps applied when a batch is drawn, not transformed copies: a benchmark of T tasks would hold T
copies of the images (Fashion-MNIST: 220 MB each as float32, 11 GB at T = 50). The images are stored once,
and a map per task says where each output pixel comes from: ``K`` source pixels of the same channel and
their weights (``K = 1``, weight 1, for a permutation; ``K = 4`` bilinear taps for a rotation).
The images are stored normalised (float32, as a Split benchmark's); a batch of (image, task) pairs is
gathered through its tasks' maps in a handful of vectorised ops on the training device.

What task ``t`` (0-based) sees, for a benchmark of images ``(C, H, W)``, ``P = H * W`` pixel positions:

* **permuted**: ``x_t.reshape(C, P)[:, j] = x.reshape(C, P)[:, perm_t[j]]``: the same permutation of the
  pixel positions in every channel, ``perm_t = numpy.random.default_rng([transform_seed, t]).permutation(P)``;
  with an explicit list (``permutations="identity,7,8"``) task ``t``'s entry is a seed ``s``
  (``default_rng(s).permutation(P)``) or ``identity`` (the images as they are).
* **rotated**: ``x_t = scipy.ndimage.rotate(x, angle_t, axes=(1, 2), reshape=False, order=1,
  mode="grid-constant", cval=0)`` on the raw pixels (bilinear, counter-clockwise as displayed like
  ``numpy.rot90``, about the image centre, black outside), computed in float32 as ``sum_k w_k * x[tap_k]``
  over the 4 taps in a fixed order (within float32 rounding of scipy's float64; exact at multiples of 90
  degrees).
  ``angle_t = (offset + t * GOLDEN_ANGLE) mod 360`` with ``offset = 360 * default_rng([transform_seed])
  .random()``: golden-angle steps spread any number of tasks evenly over the circle, and task ``t``'s angle
  does not depend on how many tasks follow it (so T = 5 is the start of T = 50). An explicit list of degrees
  (``rotations="0,45,90"``) gives each task its angle.

Pixels are normalised as the Split benchmarks' are (``(pixel / 255 - mean) / std`` per channel, with the
mean and std of the untransformed train images); a permuted task's inputs are bit-identical to normalising
the permuted images (:class:`PixelMaps`).

Two tasks that would see identical inputs (the same permutation, or angles equal modulo 360) are refused,
as is a number of tasks beyond what the owner map holds (:data:`MAX_TASKS`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["GOLDEN_ANGLE", "MAX_TASKS", "TRANSFORMS", "PixelMaps", "check_n_tasks", "parse_permutations",
           "parse_rotations", "permutation_map", "rotation_map", "task_angles", "task_pixel_maps",
           "task_permutations"]

TRANSFORMS: tuple[str, ...] = ("permuted", "rotated")
"""The per-task transforms, each a benchmark name prefix: ``permuted-mnist-5k``, ``rotated-fashion-mnist``."""

MAX_TASKS = 255
"""The owner map (engine/ownership.py) holds one uint8 per weight: 0 = free, 1..255 = the task that keeps it."""

GOLDEN_ANGLE = 180.0 * (3.0 - math.sqrt(5.0))
"""About 137.508 degrees: successive multiples leave no two angles of the first T close together."""

IDENTITY = "identity"


def check_n_tasks(n_tasks: int, benchmark: str) -> None:
    """Refuse a task count the owner map cannot hold (or below 1), naming the limit."""
    if isinstance(n_tasks, bool) or not isinstance(n_tasks, (int, np.integer)) or not 1 <= n_tasks <= MAX_TASKS:
        raise ValueError(
            f"{benchmark}: {n_tasks!r} tasks is outside 1..{MAX_TASKS}: each weight's owner is one uint8 "
            f"(0 = free, 1..{MAX_TASKS} = its task; engine/ownership.py), so at most {MAX_TASKS} tasks fit; "
            f"ask for {MAX_TASKS} tasks or fewer")


# --------------------------------------------------------------------------------------------- specs


def parse_permutations(text: str) -> tuple[int | None, ...]:
    """``"identity,3,7-9"`` -> ``(None, 3, 7, 8, 9)``: one seed per task, ``None`` for the identity.

    Refuses what would give two tasks the same permutation (a seed twice, identity twice).
    """
    out: list[int | None] = []
    for part in (p.strip() for p in text.split(",")):
        if part.lower() == IDENTITY:
            out.append(None)
            continue
        try:
            lo, _, hi = part.partition("-") if "-" in part[1:] else (part, "", part)
            a, b = int(lo), int(hi)
        except ValueError:
            raise ValueError(f"cannot read {part!r} in permutations {text!r}: give one entry per task, each a "
                             "seed >= 0, a range of seeds like 3-9, or 'identity'") from None
        if a < 0 or b < a:
            raise ValueError(f"{part!r} in permutations {text!r} is not a seed >= 0 or a range like 3-9")
        if len(out) + b - a + 1 > MAX_TASKS:  # counted before the range is expanded: 0-300000000 answers at once
            raise ValueError(f"permutations {text!r} give {len(out) + b - a + 1:,} or more tasks, more than the "
                             f"{MAX_TASKS} the owner map holds (one uint8 per weight); give at most {MAX_TASKS}")
        out.extend(range(a, b + 1))
    seen: dict[int | None, int] = {}
    for t, seed in enumerate(out):
        if seed in seen:
            what = "the identity permutation" if seed is None else f"the same seed {seed}, so the same permutation"
            raise ValueError(f"permutations {text!r} give tasks {seen[seed] + 1} and {t + 1} {what}: the two "
                             "tasks would be identical; give every task its own seed (identity at most once)")
        seen[seed] = t
    return tuple(out)


def parse_rotations(text: str) -> tuple[float, ...]:
    """``"0,45,90"`` -> angles in degrees, one per task; refuses two equal modulo 360 (identical tasks)."""
    try:
        angles = tuple(float(a) for a in text.split(","))
    except ValueError:
        raise ValueError(f"cannot read rotations {text!r}: give one angle in degrees per task, "
                         "like 0,45,90,135") from None
    if not all(math.isfinite(a) for a in angles):
        raise ValueError(f"rotations {text!r} must be finite angles in degrees")
    seen: dict[float, int] = {}
    for t, a in enumerate(angles):
        key = round(a % 360.0, 9) % 360.0
        if key in seen:
            raise ValueError(f"rotations {text!r}: tasks {seen[key] + 1} and {t + 1} ({angles[seen[key]]:g} and "
                             f"{a:g} degrees) are the same rotation modulo 360, so the two tasks would be "
                             "identical; give every task a different angle")
        seen[key] = t
    return angles


def canonical_rotations(angles: tuple[float, ...]) -> str:
    """The one spelling of an angle list (for a run's identity): ``"0,45,137.5"``."""
    return ",".join(str(int(a)) if a.is_integer() else repr(a) for a in angles)


def canonical_permutations(seeds: tuple[int | None, ...]) -> str:
    return ",".join(IDENTITY if s is None else str(s) for s in seeds)


def task_permutations(n_tasks: int, n_pixels: int, seed: int = 0,
                      seeds: tuple[int | None, ...] | None = None) -> list[np.ndarray]:
    """Each task's permutation of ``n_pixels`` positions (module docstring)."""
    if seeds is None:
        return [np.random.default_rng([seed, t]).permutation(n_pixels) for t in range(n_tasks)]
    return [np.arange(n_pixels) if s is None else np.random.default_rng(s).permutation(n_pixels) for s in seeds]


def task_angles(n_tasks: int, seed: int = 0) -> tuple[float, ...]:
    """Golden-angle steps from a seeded offset (module docstring), in [0, 360)."""
    offset = 360.0 * float(np.random.default_rng([seed]).random())
    return tuple((offset + t * GOLDEN_ANGLE) % 360.0 for t in range(n_tasks))


# --------------------------------------------------------------------------------------------- maps


def permutation_map(perm: np.ndarray) -> tuple[np.ndarray, None]:
    """Taps ``(P, 1)`` of a permutation (output pixel ``j`` reads input pixel ``perm[j]``); no weights."""
    return np.asarray(perm, dtype=np.int64)[:, None], None


def rotation_map(angle: float, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear taps ``(P, 4)`` and weights ``(P, 4)`` of scipy.ndimage.rotate's rotation by ``angle`` degrees.

    As scipy: output pixel (row i, column j) reads the input at row ``c*di + s*dj + cy``, column
    ``-s*di + c*dj + cx`` (``d`` = offset from the centre ``((H-1)/2, (W-1)/2)``, ``c, s`` the cosine and sine
    of the angle in degrees, exact at multiples of 90). A tap outside the image reads black: weight 0 (on pixel 0).
    """
    from scipy import special  # here, not at the top: the nightly imports config (and so this module) and not scipy

    a = angle % 360.0  # 360 and 0 give the same map to the bit
    c, s = float(special.cosdg(a)), float(special.sindg(a))  # exact at multiples of 90 degrees
    cy, cx = (height - 1) / 2, (width - 1) / 2
    di, dj = np.meshgrid(np.arange(height) - cy, np.arange(width) - cx, indexing="ij")
    row, col = c * di + s * dj + cy, -s * di + c * dj + cx
    r0, c0 = np.floor(row), np.floor(col)
    fr, fc = row - r0, col - c0
    taps, weights = [], []
    for dr, dc, w in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
        rr, cc = r0 + dr, c0 + dc
        inside = (rr >= 0) & (rr < height) & (cc >= 0) & (cc < width)
        taps.append(np.where(inside, rr * width + cc, 0).astype(np.int64).ravel())
        weights.append(np.where(inside, w, 0.0).ravel())
    return np.stack(taps, 1), np.stack(weights, 1).astype(np.float32)


@functools.lru_cache(maxsize=8)  # up to 12 MB each (255 rotations of 32x32)
def task_pixel_maps(transform: str, image_shape: tuple[int, int, int], n_tasks: int, seed: int = 0,
                    spec: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Every task's taps ``(T, P, K)`` and weights (``None`` for permutations), checked distinct.

    ``spec``: the explicit per-task list (``permutations`` or ``rotations``), or None for the seeded default.
    Cached: configs are validated often and the maps depend only on these arguments.
    """
    if transform not in TRANSFORMS:
        raise ValueError(f"unknown transform {transform!r}; choose one of {', '.join(TRANSFORMS)}")
    _, height, width = image_shape
    if transform == "permuted":
        seeds = parse_permutations(spec) if spec is not None else None
        maps = [permutation_map(p) for p in task_permutations(n_tasks, height * width, seed, seeds)]
        labels = ([f"seed {s}" if s is not None else IDENTITY for s in seeds] if seeds
                  else [f"default_rng([{seed}, {t}])" for t in range(n_tasks)])
    else:
        angles = parse_rotations(spec) if spec is not None else task_angles(n_tasks, seed)
        maps = [rotation_map(a, height, width) for a in angles]
        labels = [f"{a:g} degrees" for a in angles]
    if spec is not None and len(maps) != n_tasks:
        flag = "--permutations" if transform == "permuted" else "--rotations"
        raise ValueError(f"{transform}: {flag} {spec!r} lists {len(maps)} tasks but {n_tasks} are asked for "
                         f"(n_tasks, --tasks): give one entry per task, or leave --tasks out to learn {len(maps)}")
    _check_distinct(maps, labels, transform)
    taps = np.stack([m[0] for m in maps])
    weights = None if transform == "permuted" else np.stack([m[1] for m in maps])  # type: ignore[misc]
    taps.flags.writeable = False  # shared by the cache
    if weights is not None:
        weights.flags.writeable = False
    return taps, weights


def _check_distinct(maps: list[tuple[np.ndarray, np.ndarray | None]], labels: list[str], transform: str) -> None:
    """Refuse two tasks with the same map: they would be the same task under two heads."""
    seen: dict[bytes, int] = {}
    for t, (taps, weights) in enumerate(maps):
        key = taps.tobytes() + (b"" if weights is None else weights.tobytes())
        if key in seen:
            first = seen[key]
            fix = "seed" if transform == "permuted" else "angle"
            raise ValueError(f"{transform}: tasks {first + 1} and {t + 1} ({labels[first]} and {labels[t]}) transform "
                             f"the images identically, so they would be the same task; choose another {fix}")
        seen[key] = t


@dataclass(frozen=True)
class PixelMaps:
    """Every task's pixel map over *normalised* images, as tensors on the device the images live on.

    Normalisation ``(pixel / 255 - mean) / std`` commutes with a permutation, so a permuted task's inputs are
    the stored normalised images, permuted (bit for bit). A rotation reads black (raw 0) outside the image:
    over normalised pixels that is ``sum_k w_k * x[tap_k] + (sum_k w_k - 1) * mean / std``, the second term
    (``offset``) precomputed per task, channel and pixel.
    """

    taps: Tensor              # (K, T, P) int64: input pixel of each tap (tap-major: a row per task, contiguous)
    weights: Tensor | None    # (K, T, P) float32, or None: one tap of weight 1 (a permutation)
    offset: Tensor | None     # (T, C, P) float32: what black outside the image adds, or None

    @classmethod
    def over_normalised(cls, taps: np.ndarray, weights: np.ndarray | None, mean: Sequence[float],
                        std: Sequence[float]) -> PixelMaps:
        """The maps (``(T, P, K)`` arrays, :func:`task_pixel_maps`) for images normalised with per-channel
        ``mean`` and ``std`` (of pixels in [0, 1])."""
        def tap_major(a: np.ndarray) -> Tensor:
            return torch.from_numpy(np.array(a.transpose(2, 0, 1), order="C"))  # a copy: the cached arrays are read-only

        if weights is None:
            return cls(tap_major(taps), None, None)
        black = np.asarray(mean, dtype=np.float64) / np.asarray(std, dtype=np.float64)  # -(normalised black)
        offset = (weights.astype(np.float64).sum(-1) - 1.0)[:, None, :] * black[None, :, None]
        return cls(tap_major(taps), tap_major(weights), torch.from_numpy(offset.astype(np.float32)))

    @property
    def n_tasks(self) -> int:
        return int(self.taps.shape[1])

    def to(self, device: torch.device | str) -> PixelMaps:
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)

        return PixelMaps(self.taps.to(device), move(self.weights), move(self.offset))

    def apply(self, pixels: Tensor, task: Tensor | int) -> Tensor:
        """Normalised float32 ``pixels`` ``(M, C, P)`` through the map of ``task`` (one int, or ``(M,)``).

        One task for the whole batch (a PackNet day) reads its taps with ``index_select``; mixed tasks
        (rehearsal) gather per sample. Both work on ``(M * C, P)`` rows and read tables by row, where torch's
        CPU kernels are fast (``index_select`` over the last of three dimensions, or advanced indexing of a
        table, were several times slower here). The sum runs over the taps in order: the same bits on every call.
        """
        m, c, p = pixels.shape
        rows = pixels.reshape(m * c, p)
        out = self._tap(rows, task, 0, c).view(m, c, p)
        if self.weights is None:
            return out
        out.mul_(self._per_pixel(self.weights[0], task))
        for k in range(1, self.taps.shape[0]):
            out.add_(self._tap(rows, task, k, c).view(m, c, p).mul_(self._per_pixel(self.weights[k], task)))
        assert self.offset is not None
        return out.add_(self.offset[task] if isinstance(task, int) else self.offset.index_select(0, task))

    def _tap(self, rows: Tensor, task: Tensor | int, k: int, channels: int) -> Tensor:
        """Tap ``k`` of ``rows`` ``(M * C, P)``: one task's taps for all, or each sample's (all its channels)."""
        if isinstance(task, int):
            return rows.index_select(1, self.taps[k, task])
        taps = self.taps[k].index_select(0, task)  # (M, P)
        return rows.gather(1, taps if channels == 1 else taps.repeat_interleave(channels, dim=0))

    @staticmethod
    def _per_pixel(values: Tensor, task: Tensor | int) -> Tensor:
        """Row ``task`` of ``values`` (T, P), shaped to broadcast over (M, C, P)."""
        if isinstance(task, int):
            return values[task]  # (P,)
        return values.index_select(0, task).unsqueeze(1)  # (M, 1, P)
