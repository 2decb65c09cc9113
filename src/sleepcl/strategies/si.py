"""SI, synaptic intelligence (Zenke, Poole & Ganguli, "Continual Learning Through Synaptic Intelligence",
ICML 2017): a weight's importance is how much it lowered the loss along its path while a task was learnt.

During task mu every weight k accumulates the path integral ``w_k = -sum_steps g_k * (theta_k(after) -
theta_k(before))`` (``g`` the gradient the optimizer step took; as Avalanche's plugin, the gradient of the whole
loss). When the task ends, its contribution ``w_k / (Delta_k**2 + xi)`` (``Delta_k``: how far the weight moved
over the task) is added to the importance ``Omega_k``, and later tasks pay

    loss = cross-entropy + c * sum_k Omega_k (theta_k - theta*_k)**2

with ``theta*`` the weights at the end of the previous task. Each task's contribution is clamped at 0 (a weight
that moved against its gradient is not made to move further away). Per-task heads are left out, as in EWC.
Options: ``c`` (default 1.0, the paper's strength for Split MNIST) and ``xi`` (default 1e-3, its damping).
No night by default (``--night rounds`` prunes it as Memory is).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import Tensor

from .base import Day, GradientSource, Step, Strategy
from .ewc import quadratic_penalty, split_state


class SI(Strategy):
    name = "si"
    summary = "synaptic intelligence: no pruning; a penalty weighs each weight by its path integral of the loss"
    prunes = False
    options = {"c": 1.0, "xi": 1e-3}

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.importance: dict[str, Tensor] = {}  # Omega, summed over finished tasks
        self.anchor: dict[str, Tensor] = {}      # theta* (the weights at the end of the last task)
        self.path: dict[str, Tensor] = {}        # w of the task being learnt
        self._start: dict[str, Tensor] = {}
        self._before: dict[str, Tensor] = {}

    def check(self, settings: Mapping[str, Any]) -> None:
        for key, low in (("c", 0.0), ("xi", 0.0)):
            v = settings[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < low or \
                    (key == "xi" and v == 0):
                raise ValueError(f"si option {key} must be a finite number {'> 0' if key == 'xi' else '>= 0'}, "
                                 f"got {v!r}")

    @staticmethod
    def _tracked(params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {n: p.detach() for n, p in params.items() if not n.startswith("head.")}

    def begin_day(self, day: Day, params: Mapping[str, Tensor]) -> None:
        self._start = {n: p.clone() for n, p in self._tracked(params).items()}
        self.path = {n: torch.zeros_like(p) for n, p in self._start.items()}

    def loss(self, logits: Tensor, step: Step) -> Tensor:
        self._before = {n: p.clone() for n, p in self._tracked(step.params).items()}
        loss = super().loss(logits, step)
        if not self.importance or self.settings["c"] == 0:
            return loss
        return loss + self.settings["c"] * quadratic_penalty(step.params, self.importance, self.anchor)

    @torch.no_grad()
    def after_step(self, step: Step) -> None:
        for n, w in self.path.items():
            p = step.params[n]
            if p.grad is not None:
                w.sub_(p.grad * (p.detach() - self._before[n]))

    @torch.no_grad()
    def end_of_day(self, day: Day, params: Mapping[str, Tensor], gradients: GradientSource) -> None:
        for n, theta in self._tracked(params).items():
            contribution = (self.path[n] / ((theta - self._start[n]) ** 2 + self.settings["xi"])).clamp_min_(0)
            self.importance[n] = self.importance[n] + contribution if n in self.importance else contribution
            self.anchor[n] = theta.clone()
        self._before = {}

    def state(self) -> dict[str, Tensor]:
        return {**{f"importance/{n}": t for n, t in self.importance.items()},
                **{f"anchor/{n}": t for n, t in self.anchor.items()}}

    def load_state(self, state: Mapping[str, Tensor]) -> None:
        self.importance, self.anchor = split_state(state, ("importance", "anchor"))
