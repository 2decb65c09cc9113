"""The two layers sleepcl adds to a network: per-task heads, and dropout that draws from a member's own generator."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["GeneratorDropout", "TaskHeads", "uniform_"]


def uniform_(t: Tensor, fan_in: int) -> Tensor:
    """Fill ``t`` from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), the range of ``nn.Linear``/``nn.Conv2d``'s default init.

    Drawn as ``(rand * 2 - 1) * bound`` from torch's global generator: the paper's networks have always been
    initialised this way, so a seed gives the weights it gave before.
    """
    if t.is_meta:  # a shape-only template has no values to draw; drawing would load torch._dynamo (~1.5 s)
        return t
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        return t.copy_((torch.rand(t.shape, dtype=t.dtype) * 2 - 1) * bound)


class TaskHeads(nn.Module):
    """One output layer per task (the task-incremental setting): ``weight`` ``(T, O, F)``, ``bias`` ``(T, O)``.

    A head belongs to its task alone, is never pruned and is not counted in the free fraction, as PackNet keeps a
    classifier per dataset. Tasks with fewer than ``O`` classes use the first rows of their head; the engine
    masks the rest.
    """

    def __init__(self, n_tasks: int, n_outputs: int, features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_tasks, n_outputs, features))
        self.bias = nn.Parameter(torch.empty(n_tasks, n_outputs))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        features = self.weight.shape[-1]
        uniform_(self.weight, features)
        uniform_(self.bias, features)

    def forward(self, h: Tensor, task: int = 0) -> Tensor:
        return F.linear(h, self.weight[task], self.bias[task])


class GeneratorDropout(nn.Module):
    """Dropout whose masks come from ``self.generator``, set by the engine to the member being computed.

    torch's own dropout draws from the global generator, which members trained side by side in threads would
    share; with a generator per member, a member draws the same masks alone, in a population or in a group.
    The masks are drawn as the paper networks' stacked dropout draws them, so both give the same.
    """

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout rate must lie in [0, 1), got {p}")
        self.p = p
        self.generator: torch.Generator | None = None

    def forward(self, h: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return h
        keep = 1.0 - self.p
        mask = torch.empty(h.shape, device=h.device, dtype=h.dtype).bernoulli_(keep, generator=self.generator)
        return h * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"
