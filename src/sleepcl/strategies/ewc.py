"""EWC, elastic weight consolidation (Kirkpatrick et al., 2017): the regularisation baseline users compare with.

No pruning and no freezing: every task trains every weight for ``E + B`` task-epochs, with a quadratic penalty
that holds each weight near its values after earlier tasks, in proportion to how much those tasks' loss depends
on it:

    loss = cross-entropy + lambda/2 * sum_k sum_i F_k,i (theta_i - theta*_k,i)**2

``F_k`` is the diagonal empirical Fisher information of task k at the end of its day: the mean over one epoch
of its training batches of the squared gradient of the batch's mean loss (as Avalanche computes it), and
``theta*_k`` the weights then. The sum over tasks is kept in two tensors per parameter, whatever the number of
tasks: the total importance ``I = sum_k F_k`` and the importance-weighted anchor ``sum_k F_k theta*_k / I``, whose
penalty ``I (theta - anchor)**2`` has the same gradient. Per-task heads are left out (each is trained on its
own task only). Option ``lambda`` (default 100) weighs the penalty; it needs tuning per benchmark.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import Tensor

from .base import Day, GradientSource, Step, Strategy


class EWC(Strategy):
    name = "ewc"
    summary = "elastic weight consolidation: no pruning; a penalty keeps weights important to old tasks in place"
    prunes = False
    options = {"lambda": 100.0}

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.importance: dict[str, Tensor] = {}
        self.anchor: dict[str, Tensor] = {}

    def check(self, settings: Mapping[str, Any]) -> None:
        lam = settings["lambda"]
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(lam) or lam < 0:
            raise ValueError(f"ewc option lambda must be a finite number >= 0, got {lam!r}")

    def loss(self, logits: Tensor, step: Step) -> Tensor:
        loss = super().loss(logits, step)
        if not self.importance or self.settings["lambda"] == 0:
            return loss
        return loss + 0.5 * self.settings["lambda"] * quadratic_penalty(step.params, self.importance, self.anchor)

    @torch.no_grad()
    def end_of_day(self, day: Day, params: Mapping[str, Tensor], gradients: GradientSource) -> None:
        fisher: dict[str, Tensor] = {}
        batches = 0
        for grads in gradients:
            for n, g in grads.items():
                if not n.startswith("head."):
                    fisher[n] = fisher[n].add_(g * g) if n in fisher else g * g
            batches += 1
        for n, f in fisher.items():
            f.div_(max(1, batches))
            theta = params[n].detach()
            if n not in self.importance:
                self.importance[n], self.anchor[n] = f, theta.clone()
                continue
            total = self.importance[n] + f
            weighted = self.importance[n] * self.anchor[n] + f * theta
            self.anchor[n] = torch.where(total > 0, weighted / total.clamp_min(1e-30), theta)
            self.importance[n] = total

    def state(self) -> dict[str, Tensor]:
        return {**{f"importance/{n}": t for n, t in self.importance.items()},
                **{f"anchor/{n}": t for n, t in self.anchor.items()}}

    def load_state(self, state: Mapping[str, Tensor]) -> None:
        self.importance, self.anchor = split_state(state, ("importance", "anchor"))


def quadratic_penalty(params: Mapping[str, Tensor], importance: Mapping[str, Tensor],
                      anchor: Mapping[str, Tensor]) -> Tensor:
    """``sum_i importance_i (theta_i - anchor_i)**2`` over every parameter ``importance`` names, summed over members
    (each member's gradient is its own penalty's): EWC's and SI's penalty."""
    return sum((imp * (params[n] - anchor[n]) ** 2).sum() for n, imp in importance.items())  # type: ignore[return-value]


def split_state(state: Mapping[str, Tensor], groups: tuple[str, ...]) -> tuple[dict[str, Tensor], ...]:
    """``{"group/name": t}`` back into one ``{name: t}`` per group (the inverse of the strategies' :meth:`state`)."""
    out: tuple[dict[str, Tensor], ...] = tuple({} for _ in groups)
    for key, t in state.items():
        group, _, name = key.partition("/")
        if group not in groups or not name:
            raise ValueError(f"unexpected strategy state {key!r}; expected {', '.join(g + '/<name>' for g in groups)}")
        out[groups.index(group)][name] = t
    return out
