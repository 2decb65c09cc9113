"""LwF, learning without forgetting (Li & Hoiem, "Learning without Forgetting", ECCV 2016 / TPAMI 2017): no
stored data; while task t is learnt, the outputs of every earlier task's head on task t's inputs are held near
those of the model as it was before task t (knowledge distillation, Hinton et al. 2015):

    loss = cross-entropy(task t) + alpha * sum_{j < t} mean_batch CE(softmax(y_old_j / T), softmax(y_j / T))

``y_old_j``: head j's logits from the model as the day began (evaluation mode, no gradient: the engine's copy,
:attr:`~.base.Strategy.needs_day_start`); ``y_j``: from the model being trained. The paper's ``lambda_o = 1`` and
``T = 2`` are the defaults of options ``alpha`` and ``temperature`` (FACIL and Avalanche use the same). No night
by default (``--night rounds`` prunes it as Memory is).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import Tensor

from .base import Day, Step, Strategy


class LwF(Strategy):
    name = "lwf"
    summary = "learning without forgetting: no pruning; old heads' outputs distilled from the model before the task"
    prunes = False
    needs_day_start = True
    options = {"alpha": 1.0, "temperature": 2.0}

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.old_tasks: tuple[int, ...] = ()

    def check(self, settings: Mapping[str, Any]) -> None:
        for key in ("alpha", "temperature"):
            v = settings[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or \
                    (key == "temperature" and v == 0):
                raise ValueError(f"lwf option {key} must be a finite number {'> 0' if key == 'temperature' else '>= 0'}"
                                 f", got {v!r}")

    def begin_day(self, day: Day, params: Mapping[str, Tensor]) -> None:
        self.old_tasks = tuple(range(min(day.pool)))  # every task before the day's

    def loss(self, logits: Tensor, step: Step) -> Tensor:
        loss = super().loss(logits, step)
        if not self.old_tasks or self.settings["alpha"] == 0:
            return loss
        return loss + self.settings["alpha"] * distillation(step.outputs(self.old_tasks),
                                                            step.outputs_before(self.old_tasks),
                                                            self.settings["temperature"])


def distillation(outputs: Tensor, targets: Tensor, temperature: float) -> Tensor:
    """Cross-entropy of ``softmax(outputs / T)`` against ``softmax(targets / T)`` (both ``(S, B, tasks, O)``),
    summed over tasks and members, averaged over the batch. Outputs a task does not use (``-inf``) count 0."""
    log_p = torch.log_softmax(outputs / temperature, -1)
    q = torch.softmax(targets / temperature, -1)
    terms = torch.where(q > 0, q * log_p, torch.zeros((), device=q.device, dtype=q.dtype))
    return -terms.sum() / outputs.shape[1]
