"""One day of training on a population, and the guarantees that make freezing exact, in one place.

A day hands the strategy's weights to its task (:meth:`Strategy.take`), trains with a fresh optimizer, and in
its night prunes each member's weakest weights of the day down to the capacity schedule. Both the study's
engine (:mod:`sleepcl.engine.population`) and the nightly model (:mod:`sleepcl.nightly.learn`) train through
this class, and through one loop (:mod:`sleepcl.engine.loop`), so the rules below hold for both:

* **a gradient mask** zeroes the gradient of every prunable weight the day may not change
  (:meth:`Strategy.trainable`), and parameters the day does not train (shared ones after the first day under
  PackNet) get no gradient at all;
* **a fresh Adam each day**, and the Adam moments of a weight are cleared whenever it is pruned. With a zero
  gradient and zero moments, Adam's update ``m / (sqrt(v) + eps)`` is exactly 0, so frozen and freed weights
  stay bit-identical without being copied back after every step;
* **pruning** frees the smallest-magnitude weights the day holds, to exact counts
  (:func:`sleepcl.engine.ownership.prune`); freed weights are set to zero;
* **per-task state** (norm layers under a strategy that freezes) of the day's task starts from the previous
  task's, and only the day's copy is used, so every other task's copy stays as it was.

The strategy's hooks are called here too: :meth:`~Strategy.begin_day` once its weights are taken,
:meth:`~Strategy.training_batch`, :meth:`~Strategy.loss` and :meth:`~Strategy.after_step` at every step,
:meth:`~Strategy.prune_scores` at every prune and :meth:`~Strategy.end_of_day` at :meth:`DaySession.finish`. The
model as the day began is copied only for a strategy that asks (:attr:`~Strategy.needs_day_start`).
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import torch
from torch import Tensor

from ..strategies import Batch, Day, GradientSource, Step, Strategy
from ..strategies.base import cross_entropy
from . import norms, ownership
from .adam import MemberAdam
from .members import Members

__all__ = ["ADAM_MODES", "COMPACT_BELOW", "DaySession"]

# Which Adam updates the weights: "foreach" (torch.optim.Adam's foreach kernels: the reference) or "fused"
# (:class:`MemberAdam`: the fused kernel over per-member views, masks applied per member).
ADAM_MODES = ("foreach", "fused")
# A member that trains fewer than this share of a layer's weights keeps compact Adam moments for them.
COMPACT_BELOW = 0.25

class DaySession:
    """One day of ``strategy`` on ``members``: call :meth:`step` per batch, :meth:`prune` at each round of the
    night, and :meth:`finish` at the end.

    ``parts``: the engine's fast-path parts in use (:data:`sleepcl.engine.population.FAST_PARTS`);
    ``adam``: one of :data:`ADAM_MODES`.
    """

    def __init__(self, members: Members, strategy: Strategy, day: Day, day_index: int, lr: float, *,
                 parts: frozenset[str] = frozenset(), adam: str = "foreach", begin: bool = True):
        """``begin=False``: members already part way through this day (copies of a member that began it)."""
        if adam not in ADAM_MODES:
            raise ValueError(f"unknown adam mode {adam!r}; choose one of {', '.join(ADAM_MODES)}")
        self.members, self.strategy, self.day, self.day_index = members, strategy, day, day_index
        self.parts, self.adam, self.lr = parts, adam, lr
        self.handover = "handover_grads" in parts
        if begin:
            strategy.take(members.owner, day)
            if strategy.freezes:
                members.start_task(day.owner - 1)
        params = members.params
        # The model as the day began, for a strategy whose loss asks for its outputs (LwF).
        self.day_start: tuple[dict[str, Tensor], dict[str, Tensor]] | None = None
        if strategy.needs_day_start:
            self.day_start = ({n: p.detach().clone() for n, p in params.items()},
                              {n: b.clone() for n, b in members.buffers.items()})
        allowed = strategy.trainable(members.owner, day)
        self.masks = {n: m.to(params[n].dtype) for n, m in allowed.items()} if allowed is not None else {}
        # Which masks freeze something now (a mask of all ones is skipped on the fast path).
        self.mask_active = {n: not bool(m.all()) for n, m in self.masks.items()}
        self.skip_full = "skip_full_masks" in parts
        trained = [n for n in params if self.trains(n)]
        if "no_untrained_grads" in parts:
            for n, p in params.items():
                p.requires_grad_(n in trained)
        if adam == "fused":
            self.optimizer: torch.optim.Adam | MemberAdam = MemberAdam(
                params, trained, self.masks, lr, skip_full=self.skip_full,
                compact_below=COMPACT_BELOW if "compact_nights" in parts else 0.0)
        else:  # foreach: ~10x faster than the per-tensor loop on CPU
            self.optimizer = torch.optim.Adam([params[n] for n in trained], lr=lr, foreach=True)
        if begin:
            strategy.begin_day(day, params)

    def replicate(self, size: int, random_seeds: Sequence[int]) -> "DaySession":
        """``size`` copies of member 0 in a new session that continues its day, Adam moments included (each copy
        with its own dropout generator). For torch's Adam (``adam="foreach"``) and a strategy without state of
        its own per member (its tensors would not follow the copies)."""
        if isinstance(self.optimizer, MemberAdam):
            raise ValueError("copies of a member continue its day with torch's Adam moments: start the day with "
                             "adam='foreach'")
        if self.strategy.state():
            raise ValueError(f"strategy {self.strategy.name!r} keeps state per member, which copies would not carry")
        members = self.members.replicate(size, random_seeds)
        copy = DaySession(members, self.strategy, self.day, self.day_index, self.lr, parts=self.parts,
                          adam="foreach", begin=False)
        rep = lambda t: t[:1].repeat(size, *([1] * (t.dim() - 1)))  # noqa: E731
        if self.day_start is not None:
            copy.day_start = ({n: rep(p) for n, p in self.day_start[0].items()},
                              {n: rep(b) for n, b in self.day_start[1].items()})
        for src, dst in zip(self.optimizer.param_groups[0]["params"], copy.optimizer.param_groups[0]["params"]):
            state = self.optimizer.state.get(src)
            if state:
                copy.optimizer.state[dst] = {"step": state["step"].clone(), "exp_avg": rep(state["exp_avg"]),
                                             "exp_avg_sq": rep(state["exp_avg_sq"])}
        return copy

    def trains(self, name: str) -> bool:
        """Whether the day trains parameter ``name``: prunable weights (masked), heads and per-task copies
        always (only the day's own receive a gradient), shared parameters as the strategy says."""
        net = self.members.net
        if name in self.members.owner or name.startswith("head.") or name in net.per_task:
            return True
        return self.strategy.trains_shared(self.day_index)

    def held(self) -> list[dict[str, int]]:
        """Per member, per prunable layer: the weights the day holds (owner = the day's)."""
        counts = ownership.counts(self.members.owner, self.day.owner)
        return [{n: int(c[m]) for n, c in counts.items()} for m in range(self.members.size)]

    # -- training ------------------------------------------------------------------------------------

    def step(self, x: Tensor, y: Tensor, task: Tensor | int) -> None:
        """One optimizer step on inputs ``x`` ``(S, B, ...)`` with labels ``y`` ``(S, B)``; ``task`` is the task
        of every sample (an int) or of each one (``(S, B)``)."""
        m, strategy = self.members, self.strategy
        x, y, task = strategy.training_batch((x, y, task))
        logits = m.net.logits(m.params, x, task, buffers=m.buffers, random=m.random, train=True)
        step = Step(x, y, task, m.params, lambda tasks, before: self.outputs(x, tasks, before))
        loss = strategy.loss(logits, step)
        self.optimizer.zero_grad(set_to_none=self.handover)
        loss.backward()
        if not isinstance(self.optimizer, MemberAdam):  # MemberAdam masks per member itself
            for n, mask in self.masks.items():
                if self.mask_active.get(n, True) or not self.skip_full:
                    m.params[n].grad.mul_(mask)
        self.optimizer.step()
        strategy.after_step(step)

    def outputs(self, x: Tensor, tasks: Sequence[int], before: bool = False) -> Tensor:
        """Logits ``(S, B, len(tasks), O)`` of inputs ``x`` through the heads of ``tasks``: of the model being
        trained (training mode), or of the model as the day began (``before``: evaluation mode, no gradient)."""
        m = self.members
        if not before:
            return _head_outputs(m.net, m.params, m.buffers, x, tasks, random=m.random, train=True)
        if self.day_start is None:
            raise RuntimeError(f"strategy {self.strategy.name!r} asks for the outputs of the model as the day began: "
                               "set needs_day_start = True on its class")
        with torch.no_grad():
            return _head_outputs(m.net, *self.day_start, x, tasks)

    @torch.no_grad()
    def prune(self, member: int, keep: Mapping[str, int] | int, scope: ownership.PruneScope = "layer") -> None:
        """Free member ``member``'s weakest weights of the day down to ``keep`` and forget their moments."""
        m = self.members
        scores = self.strategy.prune_scores(m.params)
        if scores is None:  # magnitude: pruning zeroes the weights it frees
            ownership.prune(m.params, m.owner, self.day.owner, member, keep, scope)
        else:
            ownership.prune({n: s.detach().clone() for n, s in scores.items()}, m.owner, self.day.owner, member,
                            keep, scope)
            for n, o in m.owner.items():  # freed weights are exactly zero (every free weight of the member is)
                m.params[n][member].masked_fill_(o[member] == ownership.FREE, 0)
        allowed = self.strategy.trainable({n: o[member:member + 1] for n, o in m.owner.items()}, self.day)
        for n, mask in self.masks.items():
            mask[member] = allowed[n][0] if allowed is not None else 1
            self.mask_active[n] = True  # pruning freed weights the day must leave alone
            if isinstance(self.optimizer, MemberAdam):
                continue
            state = self.optimizer.state.get(m.params[n])
            if state:
                state["exp_avg"][member].mul_(mask[member])
                state["exp_avg_sq"][member].mul_(mask[member])
        if isinstance(self.optimizer, MemberAdam):
            self.optimizer.member_pruned(member)

    def finish(self, batches: Iterable[Batch] = (), norm_batches: Iterable[Batch] = ()) -> None:
        """End the day: under a strategy that prunes, the norm layers' running statistics recomputed for the
        pruned network on ``norm_batches`` (the day's data in an order that mixes its classes: :mod:`.norms`);
        the strategy's :meth:`~Strategy.end_of_day` (with the day's data ``batches``, for those that use it);
        then every parameter takes gradients again."""
        try:
            if self.strategy.prunes:
                norms.recalibrate(self.members, norm_batches, self.day.owner - 1 if self.members.net.per_task else None)
            self.strategy.end_of_day(self.day, self.members.params, GradientSource(batches, self.gradients))
        finally:
            for p in self.members.params.values():
                p.requires_grad_(True)

    def gradients(self, batch: Batch) -> dict[str, Tensor]:
        """Gradients ``(S, ...)`` of every member's mean plain loss (no strategy penalty) on one batch, taken with
        the network in evaluation mode."""
        m = self.members
        x, y, task = batch
        for p in m.params.values():
            p.requires_grad_(True)
            p.grad = None
        with torch.enable_grad():  # also when the strategy asks from inside no_grad
            logits = m.net.logits(m.params, x, task, buffers=m.buffers)
            cross_entropy(logits, y).backward()
        out = {n: p.grad.detach().clone() for n, p in m.params.items() if p.grad is not None}
        for p in m.params.values():
            p.grad = None
        return out


def _head_outputs(net, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor], x: Tensor,  # type: ignore[no-untyped-def]
                  tasks: Sequence[int], *, random=None, train: bool = False) -> Tensor:
    """Logits ``(S, B, len(tasks), O)`` of ``x`` through the heads of ``tasks``: one pass of the trunk (one per task
    where the network keeps per-task copies), then each task's head."""
    w, b = params["head.weight"], params["head.bias"]
    h = None
    out = []
    for t in tasks:
        if h is None or net.per_task:
            h = net.features(dict(params), x, buffers=dict(buffers), task=t, random=random, train=train)
        o = net.head(h, w[:, t], b[:, t])
        if net.class_counts is not None:
            o = o.masked_fill(~net._used_outputs(t, o.device), float("-inf"))
        out.append(o)
    if not out:
        return x.new_zeros(x.shape[0], x.shape[1], 0, net.head_size)
    return torch.stack(out, 2)
