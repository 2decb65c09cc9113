"""Multinet, the paper's multitask baseline: one day on every task's data at once, pruned to ``1 - p`` used
weights with the same rounds; its ``E + B`` epochs of the union are as many steps as the others' task-epochs."""

from __future__ import annotations

import math

from .base import Day, Strategy


class Multinet(Strategy):
    name = "multinet"
    summary = "all tasks at once (an upper bound), pruned to the same final capacity"

    def days(self, train_sizes: list[int], batch_size: int, epochs: int, retrain_epochs: int) -> list[Day]:
        every = tuple(range(len(train_sizes)))
        steps = max(1, math.ceil(sum(train_sizes) / batch_size))
        train, night = (epochs, retrain_epochs) if self.prunes else (epochs + retrain_epochs, 0)
        return [Day(1, every, None, steps, train, night, every, len(train_sizes))]
