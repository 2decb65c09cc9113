"""Evaluating a population on every task seen so far, with the cost kept down as the tasks pile up.

After task ``t`` the engine measures every task ``j <= t`` on its test and validation data, each through its own
network (:meth:`Strategy.weights_for_task`): ``t + 1`` forward passes of each member, so a sequence of ``T`` tasks
costs ``T (T + 1) / 2`` of them, quadratic in ``T``. Two things are shared here (``benchmarks/sequence_cost.py``
measures them):

* **one pass per task for both splits**: a task's test and validation samples go through its network together,
  so its inputs are gathered once and its answering weights (PackNet: every weight masked to the task's own) are
  built once, not once per split;
* **unchanged tasks are not recomputed**: a task's predictions are a deterministic function of its *answering
  state* -- the weights it answers with, its own head and per-task copies (norm layers), the shared parameters and
  buffers -- and of its fixed inputs. Each member's state of each task is summarised by a SHA-256 digest; when a
  task's digests equal those of its last evaluation, its counts of correct answers are the stored ones, bit for
  bit what a forward pass would give. Under PackNet an old task's state never changes (that is what freezing
  means), so after task ``t`` only the new task is computed and the old ones are digested (masking and hashing
  an old task took about a sixth of its forward pass in ``benchmarks/sequence_cost.py``); a strategy whose tasks
  share weights that keep training (Memory, fine-tuning) changes every task's state every day, so it is not
  digested at all.

What is *not* shared, and why: the tasks of one evaluation cannot share a forward pass under PackNet, since
each task answers with different weights; strategies whose tasks share the trunk could push several tasks'
samples through it in larger chunks, but on this CPU a chunk of 8,192 samples took 1.10x as long per sample as one
of 400 (``benchmarks/sequence_cost.py``: the MLP's matmuls are already efficient at a task's 1,000-1,400
samples), so nothing would be gained.
"""

from __future__ import annotations

import hashlib
from typing import Mapping, Sequence

import torch
from torch import Tensor

from ..data.split import SplitBenchmark
from ..strategies import Strategy
from .members import Members

__all__ = ["EVAL_PARTS", "Evaluator", "MAX_INFERRED_TASKS", "task_digests", "task_inference"]

EVAL_PARTS = ("joint_eval", "eval_cache")
"""The fast-path parts that concern evaluation (:data:`sleepcl.engine.population.FAST_PARTS`): test and
validation of a task in one pass, and unchanged tasks served from their digests."""


def task_state(members: Members, weights: Mapping[str, Tensor], task: int) -> list[tuple[str, Tensor]]:
    """Everything task ``task`` (0-based) answers with, by name, each with the member axis first: the answering
    ``weights`` (shared ones whole, heads and per-task copies at the task's index), then the buffers."""
    net = members.net
    out = []
    for kind, group in (("param", weights), ("buffer", members.buffers)):
        for name in sorted(group):
            t = group[name]
            if name.startswith("head.") or name in net.per_task:
                t = t[:, task]
            out.append((f"{kind}:{name}", t))
    return out


def task_digests(members: Members, weights: Mapping[str, Tensor], task: int) -> list[bytes]:
    """Per member, the SHA-256 digest of task ``task``'s answering state (:func:`task_state`): names, dtypes,
    shapes and bytes, with -0.0 read as 0.0 (equal values, which no forward pass tells apart but in the sign of a
    zero; PackNet's masked-out weights are one or the other as the masked weight's sign is)."""
    hashes = [hashlib.sha256() for _ in range(members.size)]
    for name, t in task_state(members, weights, task):
        t = t.detach()
        if t.is_floating_point():
            t = t + 0.0  # -0.0 + 0.0 is 0.0; every other value stays as it is
        t = t.to("cpu").contiguous()
        head = f"{name}|{t.dtype}|{tuple(t.shape[1:])}".encode()
        for m, h in enumerate(hashes):
            h.update(head)
            h.update(t[m].reshape(-1).view(torch.uint8).numpy().data)
    return [h.digest() for h in hashes]


class Evaluator:
    """Accuracy of every member on tasks and splits, sharing work as the module docstring says.

    ``joint``: a task's splits in one pass; ``cache``: reuse the counts of a task whose every member's answering
    state is unchanged since its last evaluation (only tried under strategies that freeze). The counts are the
    same either way (tests/test_sequences.py); a cache lives as long as its evaluator (one :meth:`Population.fit`).
    """

    def __init__(self, members: Members, strategy: Strategy, bench: SplitBenchmark, *, joint: bool = True,
                 cache: bool = True, chunk: int | None = None):
        self.members, self.strategy, self.bench = members, strategy, bench
        self.joint, self.cache, self.chunk = joint, cache and strategy.freezes, chunk
        self._seen: dict[tuple[int, tuple[str, ...]], tuple[list[bytes], dict[str, Tensor]]] = {}
        self.hits = self.misses = 0

    def weights(self, task: int) -> dict[str, Tensor]:
        return self.strategy.weights_for_task(self.members.params, self.members.owner, task)

    @torch.no_grad()
    def __call__(self, tasks: Sequence[int], splits: Sequence[str] = ("test", "val")) -> dict[str, Tensor]:
        """Per split, the accuracy ``(S, len(tasks))`` of every member on each task (NaN for a task without samples
        in that split)."""
        out = {s: torch.full((self.members.size, len(tasks)), float("nan"), dtype=torch.float64) for s in splits}
        for col, j in enumerate(tasks):
            sizes = {s: int(getattr(self.bench, s)[j].numel()) for s in splits}
            for s, right in self.task_counts(j, tuple(splits)).items():
                if sizes[s]:
                    out[s][:, col] = right.double().cpu() / sizes[s]
        return out

    def task_counts(self, task: int, splits: tuple[str, ...]) -> dict[str, Tensor]:
        """Per split, how many samples of task ``task`` each member gets right ``(S,)``."""
        weights = self.weights(task)
        digests = task_digests(self.members, weights, task) if self.cache else None
        if digests is not None:
            stored = self._seen.get((task, splits))
            if stored is not None and stored[0] == digests:
                self.hits += 1
                return stored[1]
            self.misses += 1
        if self.joint:
            counts = self._joint_counts(task, splits, weights)
        else:
            counts = {s: self._split_counts(task, s, weights) for s in splits}
        if digests is not None:
            self._seen[(task, splits)] = (digests, counts)
        return counts

    def _split_counts(self, task: int, split: str, weights: Mapping[str, Tensor]) -> Tensor:
        idx = getattr(self.bench, split)[task]
        if idx.numel() == 0:
            return torch.zeros(self.members.size, dtype=torch.long, device=self.members.device)
        x, y = self.bench.inputs(idx, task=task), self.bench.labels(idx)
        return self.members.correct(x, y, task, weights, self.chunk)

    def _joint_counts(self, task: int, splits: tuple[str, ...], weights: Mapping[str, Tensor]) -> dict[str, Tensor]:
        parts = [getattr(self.bench, s)[task] for s in splits]
        idx = torch.cat(parts)
        if idx.numel() == 0:
            return {s: torch.zeros(self.members.size, dtype=torch.long, device=self.members.device) for s in splits}
        x, y = self.bench.inputs(idx, task=task), self.bench.labels(idx)
        right = self.members.predict(x, task, weights, self.chunk) == y
        ends = torch.tensor([p.numel() for p in parts]).cumsum(0).tolist()
        return {s: right[:, a:b].sum(1) for s, a, b in zip(splits, [0, *ends[:-1]], ends)}


MAX_INFERRED_TASKS = 20
"""Task inference costs ``T**2`` forward passes of the test data (every task's samples through every task's
network); longer sequences are not scored (their records hold no task-inference figures)."""


@torch.no_grad()
def task_inference(members: Members, strategy: Strategy, bench: SplitBenchmark, tasks: Sequence[int],
                   split: str = "test", chunk: int | None = None) -> dict[str, dict[str, Tensor]] | None:
    """Per rule of :mod:`sleepcl.task_inference`, each member's task-inference and class-incremental accuracy
    ``(S,)`` on ``split`` of ``tasks``, the task never told: each task's samples go through every task's network
    and head, the rule picks the task, that task's head the class. The mean over tasks of each task's share, as
    the task-aware average accuracy is. Calibrated rules standardise by each task's scores on its own
    validation split. None for more than :data:`MAX_INFERRED_TASKS` tasks."""
    from ..task_inference import BASE_RULES, RULES, inference_accuracy, score_stats

    tasks = list(tasks)
    if not tasks or len(tasks) > MAX_INFERRED_TASKS:
        return None
    if chunk is None:
        chunk = max(16, min(2048, 2**22 // members.net.activation_floats))
    idx = {j: getattr(bench, split)[j] for j in tasks}
    inputs = {j: bench.inputs(i, task=j) for j, i in idx.items() if i.numel()}
    if not inputs:
        return None
    mask = bench.head_mask().to(members.device)
    logits = {j: torch.empty(members.size, len(x), len(tasks), bench.head_size, dtype=torch.float32)
              for j, x in inputs.items()}
    stats = {rule: torch.zeros(members.size, len(tasks), 2, dtype=torch.float64) for rule in BASE_RULES}

    def run(weights: Mapping[str, Tensor], k: int, x: Tensor) -> Tensor:
        parts = [members.net.logits(weights, xs.expand(members.size, *xs.shape), k, buffers=members.buffers)
                 for xs in x.split(chunk)]
        return torch.cat(parts, 1).masked_fill(~mask[k], float("-inf")).cpu()

    for col, k in enumerate(tasks):
        weights = strategy.weights_for_task(members.params, members.owner, k)
        for j, x in inputs.items():
            logits[j][:, :, col] = run(weights, k, x)
        val = bench.val[k]
        own = run(weights, k, bench.inputs(val, task=k)) if val.numel() else logits[k][:, :, col] if k in logits \
            else None
        for rule in BASE_RULES:
            stats[rule][:, col] = score_stats(own, rule) if own is not None else torch.tensor([0.0, 1.0])
    per_task = []
    for col, j in enumerate(tasks):
        if j in inputs:
            label = bench.labels(idx[j]).cpu()
            per_task.append(inference_accuracy(logits[j], torch.tensor(col), label, RULES, stats))
    return {rule: {what: torch.stack([a[rule][what] for a in per_task]).mean(0) for what in ("task", "class_incremental")}
            for rule in RULES}
