"""The stacked state of a population: S members' parameters, buffers, owner maps and random streams.

Members share a network (:class:`~sleepcl.models.base.Network`) and nothing else: every tensor has a leading
member axis, and each member has its own initial weights, owner map and dropout generator. Evaluation,
snapshots and copies work member by member on the same stacked tensors, for the study's engine and for the
nightly model alike.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

from ..models.base import Buffers, MemberRandom, Network, Params
from . import ownership

__all__ = ["Members"]

Weights = Callable[[int], Mapping[str, Tensor]]


class Members:
    """``S`` members of one network: see the module docstring."""

    def __init__(self, net: Network, params: Params, buffers: Buffers, owner: dict[str, Tensor],
                 random: MemberRandom):
        self.net, self.params, self.buffers, self.owner, self.random = net, params, buffers, owner, random

    @classmethod
    def initial(cls, net: Network, init_seeds: Sequence[int], random_seeds: Sequence[int],
                device: torch.device) -> "Members":
        """Fresh members: each one's initial weights from its own seed, every weight free."""
        states = [net.member_state(s) for s in init_seeds]
        params = {n: torch.stack([p[n] for p, _ in states]).to(device).requires_grad_() for n in states[0][0]}
        buffers = {n: torch.stack([b[n] for _, b in states]).to(device) for n in states[0][1]}
        owner = {n: torch.zeros_like(params[n], dtype=torch.uint8) for n in net.prunable}
        random = MemberRandom([torch.Generator(device=device).manual_seed(s) for s in random_seeds])
        return cls(net, params, buffers, owner, random)

    @property
    def size(self) -> int:
        return next(iter(self.params.values())).shape[0]

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device

    @torch.no_grad()
    def start_task(self, task: int) -> None:
        """Task ``task`` (0-based)'s copies of the per-task parameters and buffers start from the previous task's
        (they were trained together with the weights the new task builds on)."""
        if task < 1:
            return
        for group in (self.params, self.buffers):
            for name in self.net.per_task & group.keys():
                group[name][:, task] = group[name][:, task - 1]

    # -- evaluation --------------------------------------------------------------------------------------

    @torch.no_grad()
    def correct(self, x: Tensor, y: Tensor, task: int, weights: Mapping[str, Tensor] | None = None,
                chunk: int | None = None) -> Tensor:
        """How many of the samples ``x`` (``(n, *input)``, shared by all members) each member gets right on task
        ``task`` (0-based): ``(S,)``. ``weights`` replaces the parameters (a task's own network under PackNet).

        Samples go through in chunks of ``chunk`` (see :meth:`predict`).
        """
        return (self.predict(x, task, weights, chunk) == y).sum(1)

    @torch.no_grad()
    def predict(self, x: Tensor, task: int, weights: Mapping[str, Tensor] | None = None,
                chunk: int | None = None) -> Tensor:
        """Each member's predicted class of every sample ``x`` (``(n, *input)``, shared by all members) on task
        ``task`` (0-based): ``(S, n)``. ``weights`` replaces the parameters.

        Samples go through in chunks of ``chunk`` (default: 2048, fewer for a network whose activations are
        wide, so that a chunk's widest activation stays near 16 MB per member; never dependent on S, so a
        member is evaluated exactly as when alone).
        """
        if chunk is None:
            chunk = max(16, min(2048, 2**22 // self.net.activation_floats))
        params = dict(weights) if weights is not None else self.params
        preds = [self.net.logits(params, xs.expand(self.size, *xs.shape), task, buffers=self.buffers).argmax(-1)
                 for xs in x.split(chunk)]
        if not preds:
            return torch.empty(self.size, 0, dtype=torch.long, device=self.device)
        return torch.cat(preds, 1)

    # -- capacity ----------------------------------------------------------------------------------------

    def free_fraction(self) -> Tensor:
        """Fraction of all prunable weights that is free, per member ``(S,)``."""
        return ownership.free_fraction(self.owner)

    def member_free_fraction(self, member: int) -> float:
        return float(ownership.free_fraction({n: o[member:member + 1] for n, o in self.owner.items()})[0])

    def layer_free_fraction(self, member: int) -> dict[str, float]:
        return {n: float((o[member] == ownership.FREE).double().mean()) for n, o in self.owner.items()}

    def held(self, member: int, owner: int) -> int:
        """Weights (all layers) that owner index ``owner`` holds in member ``member``."""
        return int(sum((o[member] == owner).sum() for o in self.owner.values()))

    # -- copies of members -------------------------------------------------------------------------------

    @torch.no_grad()
    def snapshot(self, member: int) -> dict[str, dict[str, Tensor]]:
        """Member ``member``'s whole state (parameters, buffers, owner map), copied."""
        return {kind: {n: t[member].clone() for n, t in group.items()}
                for kind, group in (("params", self.params), ("buffers", self.buffers), ("owner", self.owner))}

    @torch.no_grad()
    def restore(self, member: int, snap: Mapping[str, Mapping[str, Tensor]]) -> None:
        for kind, group in (("params", self.params), ("buffers", self.buffers), ("owner", self.owner)):
            for n, t in snap[kind].items():
                group[n][member] = t

    def replicate(self, size: int, random_seeds: Sequence[int]) -> "Members":
        """``size`` copies of member 0, each with its own dropout generator."""
        def rep(t: Tensor) -> Tensor:
            return t.detach()[:1].repeat(size, *([1] * (t.dim() - 1)))

        return Members(self.net, {n: rep(p).requires_grad_() for n, p in self.params.items()},
                       {n: rep(b) for n, b in self.buffers.items()}, {n: rep(o) for n, o in self.owner.items()},
                       MemberRandom([torch.Generator(device=self.device).manual_seed(s) for s in random_seeds]))

    def member_state(self, member: int) -> dict[str, Any]:
        """Member ``member``'s tensors without the member axis (detached views)."""
        return {"params": {n: p[member].detach() for n, p in self.params.items()},
                "buffers": {n: b[member] for n, b in self.buffers.items()},
                "owner": {n: o[member] for n, o in self.owner.items()}}

    def __repr__(self) -> str:
        n = sum(math.prod(p.shape[1:]) for p in self.params.values())
        return f"Members({self.size} x {self.net.describe()}, {n:,} parameters each)"
