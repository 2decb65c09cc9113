"""Training that diverged: weights or statistics that are NaN or infinite after a day.

A learning rate too large for the network (``--lr 1e308``), a penalty that overflows (a huge EWC lambda), a
model whose outputs are NaN or whose initial weights are infinite: each ends a day with non-finite weights
(a NaN loss gives NaN gradients, and Adam writes them into every weight it trains). Such a run measures chance
accuracy, not the method, so it must never be stored or saved as a result. The check runs once per day on
the members' stacked tensors -- one pass over the weights, against the day's many passes of training -- not
at every step.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

__all__ = ["DIVERGED_HINT", "TrainingDiverged", "first_nonfinite", "nonfinite_members"]

DIVERGED_HINT = ("a smaller learning rate (--lr), a smaller penalty (--strategy-option), or a model whose outputs "
                 "and initial weights are finite")


class TrainingDiverged(ValueError):
    """Training produced NaN or infinite weights; the message names the runs and what to change."""


def first_nonfinite(tensors: Mapping[str, Tensor]) -> str | None:
    """The name of the first floating-point tensor of ``tensors`` holding NaN or infinite values, or None."""
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name
    return None


def nonfinite_members(*groups: Mapping[str, Tensor]) -> dict[int, str]:
    """``{member: first tensor name}`` for the members whose slice (dim 0) of any tensor in ``groups`` (stacked
    ``(S, ...)`` parameters, buffers) holds NaN or infinite values."""
    bad: dict[int, str] = {}
    for group in groups:
        for name, t in group.items():
            if not t.is_floating_point() or t.ndim == 0:
                continue
            finite = torch.isfinite(t.detach()).reshape(t.shape[0], -1).all(1)
            if bool(finite.all()):
                continue
            for m in (~finite).nonzero().flatten().tolist():
                bad.setdefault(m, name)
    return bad
