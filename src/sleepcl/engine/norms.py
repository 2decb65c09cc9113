"""Norm-layer statistics that answer for the weights a task really uses: BatchNorm recalibration after pruning.

A BatchNorm layer answers with running statistics gathered during training. Pruning changes the weights under
them, and a short retraining moves them only part of the way back (an exponential average with momentum 0.1 over
a few dozen steps, of weights that are still changing): a task can end at chance with batch-statistics accuracy
above 0.9. The pruning literature's remedy, "BN recalibration" (the statistics recomputed on training data with
the pruned network, as ``torch.optim.swa_utils.update_bn`` does after weight averaging), is applied here at the end
of every night of a strategy that prunes (:meth:`~sleepcl.engine.day.DaySession.finish`) and of every night of
``sleepcl learn``: each member's statistics (the task's own copy under a strategy that freezes) are reset and
recomputed as the mean over one pass of the day's training data, with the weights the day ends with, every other
layer in evaluation mode (no dropout, so no member's random stream is used).

Only the running statistics change: training runs BatchNorm on batch statistics and never reads them, so a
recalibration changes what a task answers, not how the network trains; earlier tasks' copies are untouched.
"""

from __future__ import annotations

from typing import Iterable

import torch

from ..strategies import Batch
from .members import Members

__all__ = ["STATISTICS", "recalibrate"]

# A running-statistics layer's buffers and the values they are reset to.
STATISTICS = {"running_mean": 0.0, "running_var": 1.0, "num_batches_tracked": 0}


@torch.no_grad()
def recalibrate(members: Members, batches: Iterable[Batch], task: int | None = None) -> int:
    """Recompute every member's norm-layer running statistics on ``batches`` (inputs ``(S, B, ...)``, the same
    or each member's own); ``task`` (0-based) picks the per-task copy where the network has them. Returns the
    number of batches used (0: nothing to recalibrate, or no data, and the statistics are as they were)."""
    net = members.net
    names = [f"{layer}.{leaf}" for layer in net.statistics_layers for leaf in STATISTICS
             if f"{layer}.{leaf}" in members.buffers]
    if not names:
        return 0
    if net.per_task and task is None:
        raise ValueError(f"{net.name}: per-task norm layers are recalibrated one task at a time; give the task")
    views = {n: members.buffers[n][:, task] if n in net.per_task else members.buffers[n] for n in names}
    before = {n: v.clone() for n, v in views.items()}
    for n, v in views.items():
        v.fill_(STATISTICS[n.rpartition(".")[2]])
    used = 0
    with net.gathering_statistics() as next_batch:  # type: ignore[attr-defined]
        for x, _y, _task in batches:
            next_batch(used)
            net.features(members.params, x, buffers=members.buffers, task=task, train=True)
            used += 1
    if used == 0:
        for n, v in views.items():
            v.copy_(before[n])
    return used
