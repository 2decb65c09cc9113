"""What the engine needs of a network: its members' state, which weights are owned, and a forward pass.

A *population* of S networks trains as one: every parameter and buffer is a tensor with a leading member axis
``S`` in a plain dict (the ``torch.func.functional_call`` convention), so masks, pruning and the optimizer work
on the same stacked tensors whatever the architecture.

Which weights are which (the same for every network, the paper's and the user's):

* **prunable**: every weight matrix of the trunk (``Linear``, convolution, attention and embedding weights, a
  model's own matrices; see :mod:`.module`). Each has an owner (see :mod:`sleepcl.engine.ownership`) and is
  pruned and freed;
* **heads** (``head.weight`` ``(S, T, O, F)``, ``head.bias`` ``(S, T, O)``): one output layer per task, owned by
  that task alone, never pruned, not counted in the free fraction;
* **per-task** parameters and buffers (norm layers under a strategy that freezes): a task axis after the member
  axis, one copy per task, so a norm layer's statistics and affine parameters never change for an old task;
* **shared**: everything else (biases, norm layers under strategies that do not freeze, what a model marks shared).
  A strategy that freezes trains them on the first task only (PackNet's rule for biases: a bias cannot be split
  between tasks, and freezing it keeps old tasks exact).
"""

from __future__ import annotations

import math
import threading
from typing import Callable, Sequence, TypeVar

import torch
from torch import Tensor

__all__ = ["Buffers", "MemberRandom", "Network", "Params", "fan_in", "seeded"]

Params = dict[str, Tensor]
Buffers = dict[str, Tensor]

_INIT_LOCK = threading.Lock()
# What the words of :meth:`Network.roles` mean.
ROLES = {
    "owned": "each weight belongs to one task (the owner map); a task answers with its own and earlier tasks' weights",
    "pruned": "the night frees the smallest-magnitude weights of the day's task to the capacity schedule",
    "frozen": "a kept weight never changes again (bit for bit)",
    "per task": "one copy per task (axis after the member axis); a new task's copy starts from the previous one's",
    "shared": "one copy for every task",
    "task 1": "trained with the first task only, then frozen (PackNet's rule for biases)",
    "statistics": "a norm layer's running statistics",
    "recomputed": "recomputed on the day's training data for the pruned network at the end of each night",
    "head": "the classifier, replaced by one head per task: its task's alone, never pruned",
}
T = TypeVar("T")


def seeded(seed: int, build: Callable[[], T]) -> T:
    """``build()`` with torch's global generator seeded by ``seed`` and restored after.

    Models draw their initial weights from the global generator (as ``nn.Linear`` does); seeding it around the
    construction gives every member its own weights from its own seed, whatever ran before. A lock keeps two
    threads from drawing from the global generator at once.
    """
    with _INIT_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def fan_in(shape: Sequence[int]) -> int:
    """Inputs per output unit of a weight of ``shape`` (``(out, in, *kernel)``)."""
    return math.prod(shape[1:])


class MemberRandom:
    """One generator per member for the random ops of training (dropout), so that a member draws the same
    numbers alone, in a population or in a group side by side."""

    def __init__(self, generators: Sequence[torch.Generator]):
        self.generators = list(generators)

    def __len__(self) -> int:
        return len(self.generators)


class Network:
    """A network for a population: the shapes of one member, its initial state, and a forward over members.

    Subclasses set :attr:`prunable`, :attr:`per_task`, :attr:`head_shape` and implement :meth:`member_state`
    and :meth:`features`. ``class_counts`` (tasks with fewer classes than the head has outputs) masks the
    outputs a task does not use.
    """

    name: str = "network"
    prunable: tuple[str, ...] = ()
    per_task: frozenset[str] = frozenset()
    # Norm layers that keep running statistics (BatchNorm): see :mod:`sleepcl.engine.norms`.
    statistics_layers: tuple[str, ...] = ()
    class_counts: tuple[int, ...] | None = None

    def __init__(self, input_shape: Sequence[int], n_tasks: int, head_size: int):
        self.input_shape = tuple(int(d) for d in input_shape)
        self.n_tasks = int(n_tasks)
        self.head_size = int(head_size)

    # -- what subclasses provide ------------------------------------------------------------------------

    def member_state(self, seed: int) -> tuple[Params, Buffers]:
        """One member's parameters and buffers (no member axis; per-task ones with their task axis)."""
        raise NotImplementedError

    def features(self, params: Params, x: Tensor, *, buffers: Buffers | None = None, task: int | None = None,
                 random: MemberRandom | None = None, train: bool = False) -> Tensor:
        """Trunk output ``(S, B, F)`` for inputs ``(S, B, *input_shape)``.

        ``task`` picks the per-task copies (required when :attr:`per_task` is not empty); ``train`` runs norm
        layers on batch statistics and turns on dropout, drawing from ``random``.
        """
        raise NotImplementedError

    @property
    def activation_floats(self) -> int:
        """The widest activation one sample makes in one member (floats): sizes evaluation chunks."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line for logs and records."""
        return self.name

    def roles(self, *, prunes: bool, freezes: bool, trains_shared_later: bool) -> list[tuple[str, tuple[int, ...], str]]:
        """Every parameter and buffer of a member: its name, shape (per member; per-task ones with their task axis)
        and its role (a key of :data:`ROLES`) under a strategy that ``prunes``, ``freezes`` and trains shared
        parameters after the first task or not (``trains_shared_later``)."""
        params, buffers = self.member_state(0)
        out = []
        for n, p in params.items():
            if n.startswith("head."):
                role = "head"
            elif n in self.prunable:
                role = ("owned, pruned" if prunes else "owned") + (", frozen" if freezes else "")
            elif n in self.per_task:
                role = "per task"
            else:
                role = "shared" + ("" if trains_shared_later else ", task 1")
            out.append((n, tuple(p.shape), role))
        for n, b in buffers.items():
            stats = n.rpartition(".")[0] in self.statistics_layers
            role = ("per task" if n in self.per_task else "shared") + (", statistics" if stats else "")
            out.append((n, tuple(b.shape), role + (", recomputed" if stats and prunes else "")))
        return out

    def thread_sensitive(self, device: torch.device) -> bool:
        """Whether what a member computes on ``device`` depends on the number of intra-op threads (sums over the
        batch that threads share and round differently): such a network computes on one thread, so that a member
        is the same alone or in a population whatever ``--threads`` is."""
        return False

    # -- shared by every network ------------------------------------------------------------------------

    @property
    def feature_dim(self) -> int:
        return self.head_shape[-1]

    @property
    def head_shape(self) -> tuple[int, int, int]:
        """``(T, O, F)`` of ``head.weight`` for one member."""
        raise NotImplementedError

    def logits(self, params: Params, x: Tensor, task: Tensor | int, *, buffers: Buffers | None = None,
               random: MemberRandom | None = None, train: bool = False) -> Tensor:
        """Logits ``(S, B, O)``, each sample through the head of its own task.

        ``task`` is an int (the whole batch is one task) or a ``(S, B)`` tensor of task indices (0-based): a
        batch mixing tasks, as rehearsal and multitask training draw, is routed per sample.
        """
        h = self.features(params, x, buffers=buffers, task=task if isinstance(task, int) else None,
                          random=random, train=train)
        w, b = params["head.weight"], params["head.bias"]  # (S, T, O, F), (S, T, O)
        if isinstance(task, int):
            out = self.head(h, w[:, task], b[:, task])
        else:
            s, t, o, f = w.shape
            every = torch.baddbmm(b.reshape(s, 1, t * o), h, w.reshape(s, t * o, f).transpose(1, 2))
            out = every.view(s, -1, t, o).gather(2, task[:, :, None, None].expand(-1, -1, 1, o)).squeeze(2)
        if self.class_counts is not None:
            out = out.masked_fill(~self._used_outputs(task, out.device), float("-inf"))
        return out

    def head(self, h: Tensor, w: Tensor, b: Tensor) -> Tensor:
        """``h @ w.T + b`` per member: ``h`` (S, B, F), ``w`` (S, O, F), ``b`` (S, O)."""
        return torch.baddbmm(b[:, None, :], h, w.transpose(1, 2))

    def _used_outputs(self, task: Tensor | int, device: torch.device) -> Tensor:
        counts = torch.tensor(self.class_counts, device=device)
        outputs = torch.arange(self.head_size, device=device)
        if isinstance(task, int):
            return outputs < counts[task]
        return outputs < counts[task][..., None]
