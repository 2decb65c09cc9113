"""Who owns each weight: one ``uint8`` per prunable weight, ``0`` = free, ``t`` = kept by task ``t`` (1-based).

This is PackNet's representation: a single small integer map replaces one boolean mask per task, and the
network for task ``t`` is the set of weights with ``1 <= owner <= t``. The maps are stacked like the
weights, with a leading member axis, so every member of a population has its own.

Pruning frees the smallest-magnitude weights a task holds, per layer (PackNet) or across all layers
("global"), and always frees an *exact* count, so the free fraction follows the schedule to the weight.
"""

from __future__ import annotations

from typing import Literal, Mapping

import torch
from torch import Tensor

__all__ = ["FREE", "PruneScope", "assign", "counts", "free_fraction", "prune", "visible"]

FREE = 0
PruneScope = Literal["layer", "global"]


def assign(owner: Mapping[str, Tensor], task: int, *, only_free: bool) -> None:
    """Hand weights to ``task``: the free ones (PackNet) or all of them (strategies without freezing)."""
    if not 1 <= task <= 255:
        raise ValueError(f"task index must be in 1..255 to fit the uint8 owner map, got {task}")
    for o in owner.values():
        if only_free:
            o.masked_fill_(o == FREE, task)
        else:
            o.fill_(task)


def visible(owner: Tensor, task: int) -> Tensor:
    """Boolean mask of the weights that make up the network for ``task``: owned by tasks 1..task."""
    return (owner != FREE) & (owner <= task)


def counts(owner: Mapping[str, Tensor], task: int | None = None) -> dict[str, Tensor]:
    """Per layer, per member: how many weights are held by ``task`` (or are free when ``task`` is None)."""
    value = FREE if task is None else task
    return {name: (o == value).flatten(1).sum(1) for name, o in owner.items()}


def free_fraction(owner: Mapping[str, Tensor]) -> Tensor:
    """Fraction of all prunable weights that is free, per member ``(S,)``."""
    free = sum((o == FREE).flatten(1).sum(1) for o in owner.values())
    total = sum(o[0].numel() for o in owner.values())
    return free.double() / total


def prune(weights: Mapping[str, Tensor], owner: Mapping[str, Tensor], task: int, member: int,
          keep: Mapping[str, int] | int, scope: PruneScope = "layer") -> None:
    """Free the smallest-magnitude weights held by ``task`` in one member until ``keep`` remain.

    ``keep`` is a count per layer (scope ``"layer"``) or one count over all layers (``"global"``). Freed
    weights are set to zero, which is what makes the network for later tasks ignore them without a mask.
    Ties are broken by position (``topk``), so the count is exact even with equal magnitudes.
    """
    names = list(owner)
    if scope == "layer":
        if not isinstance(keep, Mapping):
            raise TypeError("layer-wise pruning needs a keep count per layer")
        for name in names:
            _free_smallest([weights[name][member]], [owner[name][member]], task, keep[name])
    elif scope == "global":
        if isinstance(keep, Mapping):
            keep = sum(keep.values())
        _free_smallest([weights[n][member] for n in names], [owner[n][member] for n in names], task, keep)
    else:
        raise ValueError(f"unknown prune scope {scope!r}; choose 'layer' or 'global'")


@torch.no_grad()
def _free_smallest(weights: list[Tensor], owner: list[Tensor], task: int, keep: int) -> None:
    held = [o.reshape(-1) == task for o in owner]
    n_held = int(sum(h.sum() for h in held))
    n_free = n_held - keep
    if n_free < 0:
        raise ValueError(f"cannot keep {keep} weights: task {task} holds only {n_held}")
    if n_free == 0:
        return
    magnitude = torch.cat([torch.where(h, w.reshape(-1).abs(), torch.inf) for w, h in zip(weights, held)])
    chosen = torch.topk(magnitude, n_free, largest=False, sorted=False).indices
    start = 0
    for w, o in zip(weights, owner):
        n = w.numel()
        local = chosen[(chosen >= start) & (chosen < start + n)] - start
        w.view(-1)[local] = 0
        o.view(-1)[local] = FREE
        start += n
