"""How the weights the tasks keep are shared out among the layers: uniform (the paper's) or Erdős–Rényi-Kernel.

The capacity schedule says how many weights are free after each task (``r ** t`` of them, Algorithm 2). Under
``uniform`` density, PackNet's and the paper's protocol, every layer follows the schedule on its own: each keeps the
same fraction. On a small network that starves its small layers: at ``p = 0.9`` over 5 tasks each task keeps 2 %
of a layer, so a conv net's first convolution (1 input channel, 16 filters of 3x3: 144 weights) keeps 3 weights
per task, 13 of its 16 channels answer a constant, and the next layer's largest weights mostly read those
constant channels: the task's network outputs one class for every input (issue 18).

``erk`` density (Erdős–Rényi-Kernel, Evci et al. 2020, "Rigging the Lottery"; the allocation sparse-training
libraries use) gives a layer of shape ``(n_out, n_in, k_1, ...)`` a used density proportional to
``sum(shape) / prod(shape)``: small layers and first layers keep a larger share, wide layers a smaller one, and a
layer whose share would pass 1 is used whole (its remaining weights are then shared out again). The network as a
whole follows the schedule to the weight: the counts of every step add up to exactly its free total. Every layer's
free count only ever shrinks from one step to the next, since weights a task keeps are never given back.
"""

from __future__ import annotations

import math
from typing import Callable, Literal, Mapping, Sequence

__all__ = ["LAYER_DENSITIES", "LayerDensity", "erk_densities", "erk_free_counts", "layer_free_counts", "starved_layers"]

LayerDensity = Literal["uniform", "erk"]
LAYER_DENSITIES: tuple[LayerDensity, ...] = ("uniform", "erk")


def erk_densities(shapes: Mapping[str, Sequence[int]], used: int) -> dict[str, float]:
    """Per layer, the fraction of its weights in use when ``used`` weights of the network are, shared out as
    Erdős–Rényi-Kernel: density ``eps * sum(shape) / prod(shape)``, capped at 1 (RigL's ``sparsity_distribution``
    with its dense-layer loop), ``eps`` chosen so that the densities add up to ``used`` weights."""
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    total = sum(sizes.values())
    if not 0 <= used <= total:
        raise ValueError(f"cannot use {used} weights of a network of {total}")
    if any(n == 0 for n in sizes.values()):
        raise ValueError("every layer needs at least one weight")
    score = {n: sum(shapes[n]) / sizes[n] for n in shapes}
    dense: set[str] = set()
    while True:
        rest = [n for n in shapes if n not in dense]
        budget = used - sum(sizes[n] for n in dense)
        eps = budget / sum(score[n] * sizes[n] for n in rest) if rest else 0.0
        full = {n for n in rest if eps * score[n] >= 1.0}
        if not full:
            return {n: 1.0 if n in dense else eps * score[n] for n in shapes}
        dense |= full


def erk_free_counts(shapes: Mapping[str, Sequence[int]], free_totals: Sequence[int]) -> list[dict[str, int]]:
    """Per step (``free_totals[k]``: weights of the network free after step ``k``, never growing), per layer: its
    free weights under ``erk`` density. The weights in use are shared out by :func:`erk_densities` and rounded to
    whole weights by largest remainder, so that every step's counts add up to exactly its total, with no layer's
    free count growing from one step to the next."""
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    total = sum(sizes.values())
    if any(not 0 <= f <= total for f in free_totals) or any(b > a for a, b in zip(free_totals, free_totals[1:])):
        raise ValueError(f"free totals must lie in 0..{total} and never grow, got {list(free_totals)}")
    out: list[dict[str, int]] = []
    floor = dict.fromkeys(sizes, 0)  # weights in use after the previous step: a layer never gives any back
    for free in free_totals:
        want = {n: d * sizes[n] for n, d in erk_densities(shapes, total - free).items()}
        used = _whole(want, total - free, floor, sizes)
        out.append({n: sizes[n] - u for n, u in used.items()})
        floor = used
    return out


def layer_free_counts(shapes: Mapping[str, Sequence[int]], free: Callable[[int, int], int], steps: int,
                      density: LayerDensity) -> list[dict[str, int]]:
    """Per capacity step ``1..steps``, per layer: the weights free after it. ``free(n, k)``: the schedule's free
    count for ``n`` weights after step ``k`` (:meth:`~sleepcl.strategies.Strategy.free_target`). ``uniform``: each
    layer on its own schedule; ``erk``: the network's count shared out by :func:`erk_free_counts`."""
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    if density == "uniform":
        return [{n: free(size, k) for n, size in sizes.items()} for k in range(1, steps + 1)]
    if density != "erk":
        raise ValueError(f"unknown layer density {density!r}; choose one of {', '.join(LAYER_DENSITIES)}")
    return erk_free_counts(shapes, [free(sum(sizes.values()), k) for k in range(1, steps + 1)])


def starved_layers(shapes: Mapping[str, Sequence[int]], free_counts: Sequence[Mapping[str, int]]) -> dict[str, int]:
    """Layers where the first task keeps at most half as many weights as the layer has outputs (``shape[0]``), with
    that count: at least half of the layer's outputs get none of the task's weights and answer a constant for it."""
    if not free_counts:
        return {}
    kept = {n: math.prod(s) - free_counts[0][n] for n, s in shapes.items()}
    return {n: k for n, k in kept.items() if 2 * k <= shapes[n][0]}


def _whole(want: Mapping[str, float], target: int, floor: Mapping[str, int], cap: Mapping[str, int]) -> dict[str, int]:
    """Whole counts near ``want`` that add up to ``target``, each within ``floor[n]..cap[n]`` (largest remainder,
    then the fewest changes that respect the bounds)."""
    parts = {n: min(cap[n], max(floor[n], math.floor(w))) for n, w in want.items()}
    # hand out what is missing to the largest remainders, take back what is over from the smallest
    by_remainder = sorted(want, key=lambda n: (want[n] - parts[n], n), reverse=True)
    while (short := target - sum(parts.values())) != 0:
        if short > 0:
            room = [n for n in by_remainder if parts[n] < cap[n]]
            for n in room[:short]:
                parts[n] += 1
        else:
            spare = [n for n in reversed(by_remainder) if parts[n] > floor[n]]
            for n in spare[:-short]:
                parts[n] -= 1
    return parts
