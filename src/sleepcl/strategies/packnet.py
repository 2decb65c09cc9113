"""PackNet (Mallya & Lazebnik, 2018) with sleep cycles: each task trains only the free weights, then a night of
N prune-then-retrain rounds frees part of them for later tasks and freezes the rest for good."""

from __future__ import annotations

from typing import Mapping

from torch import Tensor

from ..engine import ownership
from .base import Day, Strategy


class PackNet(Strategy):
    name = "packnet"
    summary = "freeze + prune: each task trains the free weights; the night frees part of them for later tasks"
    freezes = True

    def take(self, owner: Mapping[str, Tensor], day: Day) -> None:
        ownership.assign(owner, day.owner, only_free=True)

    def trains_shared(self, day_index: int) -> bool:
        return day_index == 0  # biases and other shared parameters: trained on the first task, then frozen

    def weights_for_task(self, params: Mapping[str, Tensor], owner: Mapping[str, Tensor],
                         task: int) -> dict[str, Tensor]:
        out = dict(params)
        for name, o in owner.items():
            out[name] = params[name] * ownership.visible(o, task + 1)
        return out
