"""Adam for stacked parameters that updates each member exactly as if it were alone: the fast path's optimizer.

Same update and hyperparameters as ``torch.optim.Adam`` (betas 0.9/0.999, eps 1e-8, no weight decay), by its
fused kernel in one call per step. Frozen weights stay bit-identical because their gradient is masked to zero
and their moments are zero (a fresh optimizer each day, moments cleared at every prune): the update
``m / (sqrt(v) + eps)`` is then exactly 0.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

__all__ = ["STACK_MULTIPLE", "MemberAdam", "fused_adam_available", "fused_adam_stacks_exact"]

Params = dict[str, Tensor]

# On CPU, stacked tensors whose members' slices are a multiple of this many floats go to the fused Adam
# kernel whole: 16 floats are one cache line and a whole number of vectors (8 with AVX2, 16 with AVX-512).
STACK_MULTIPLE = 16


class MemberAdam:
    """Adam for stacked parameters that updates each member exactly as if it were alone (the fast path's).

    Same update and hyperparameters as ``torch.optim.Adam`` (betas 0.9/0.999, eps 1e-8, no weight decay),
    computed by its fused kernel in one call per step: one pass over weights, gradients and moments instead
    of ~10. On CPU the kernel rounds the vector tail of a tensor differently from its body, so a member's
    slice inside a stacked tensor could round according to its position. A stacked tensor whose per-member
    slices are a multiple of :data:`STACK_MULTIPLE` floats has no tail inside it (the kernel's work units
    are cache-line aligned), and goes to the kernel whole; any other goes member by member, each slice its
    own tensor (both checked once per process: :func:`fused_adam_available`, :func:`fused_adam_stacks_exact`).
    Trainable masks (one per prunable weight, updated in place by pruning) are applied here, per member and
    layer:

    * ``free``: the mask freezes nothing (the first day's training, rehearsal training): no mask pass
      (with ``skip_full``);
    * ``masked``: the gradient is multiplied by the mask, and the moments of freed weights are cleared at
      every prune, so that a weight the member may not change gets an update of exactly 0;
    * ``compact`` (below ``compact_below`` of the layer trainable: a night after pruning keeps a few per
      cent): moments are kept for the trainable weights only; each step gathers their gradients and
      values, updates them and scatters the values back. Nothing else of the layer is read or written.
    """

    # Devices where a member's rounding must not depend on its place in the stack (elsewhere: whole stacked
    # tensors always; members are not claimed bit-identical to their solo runs off CPU anyway).
    PER_MEMBER_DEVICES = frozenset({"cpu"})

    def __init__(self, params: Params, names: Sequence[str], masks: dict[str, Tensor], lr: float, *,
                 skip_full: bool = True, compact_below: float = 0.0):
        self.params = {n: params[n] for n in names}
        self.masks = masks
        self.lr = lr
        self.skip_full, self.compact_below = skip_full, compact_below
        first = next(iter(self.params.values()))
        self.size = first.shape[0]
        self.per_member = first.device.type in self.PER_MEMBER_DEVICES
        self.stack_exact = self.per_member and fused_adam_stacks_exact(first.device)
        self.step_count = torch.zeros((), dtype=torch.float32, device=first.device)
        self.exp_avg = {n: torch.zeros_like(p) for n, p in self.params.items()}
        self.exp_avg_sq = {n: torch.zeros_like(p) for n, p in self.params.items()}
        self.mode: dict[str, list[str]] = {}
        self.compact: dict[str, dict[int, tuple[Tensor, Tensor, Tensor]]] = {}
        self._packed: dict[str, tuple[Tensor, Tensor, Tensor, list[int]] | None] = {}
        with torch.no_grad():
            for name in masks:
                if name in self.params:
                    self.mode[name] = ["masked"] * self.size
                    self.compact[name] = {}
                    for m in range(self.size):
                        self._reclassify(name, m)

    @property
    def state(self) -> dict[Tensor, dict[str, Tensor]]:
        """Dense moments by parameter, like ``torch.optim.Adam.state`` (compact members' rows unused)."""
        return {p: {"exp_avg": self.exp_avg[n], "exp_avg_sq": self.exp_avg_sq[n]} for n, p in self.params.items()}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params.values():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def member_pruned(self, member: int) -> None:
        """Member ``member``'s masks just lost weights: forget their moments, perhaps go compact."""
        for name in self.mode:
            self._reclassify(name, member)

    def _reclassify(self, name: str, member: int) -> None:
        mask = self.masks[name][member]
        old = self.mode[name][member]
        n_train, total = int(mask.sum()), mask.numel()  # a host sync, at the start of a day and at prunes only
        if old == "compact":  # the trainable set only shrinks within a day: keep the moments of what is left
            idx_old, m_old, v_old = self.compact[name][member]
            idx = mask.reshape(-1).nonzero().squeeze(1)
            pos = torch.searchsorted(idx_old, idx)
            self.compact[name][member] = (idx, m_old[pos], v_old[pos])
            self._packed[name] = None
            return
        if n_train < self.compact_below * total:
            idx = mask.reshape(-1).nonzero().squeeze(1)
            self.compact[name][member] = (idx, self.exp_avg[name][member].reshape(-1)[idx],
                                          self.exp_avg_sq[name][member].reshape(-1)[idx])
            self.mode[name][member] = "compact"
            self._packed[name] = None
            return
        self.exp_avg[name][member].mul_(mask)
        self.exp_avg_sq[name][member].mul_(mask)
        self.mode[name][member] = "free" if n_train == total and self.skip_full else "masked"

    def _pack(self, name: str) -> tuple[Tensor, Tensor, Tensor, list[int]]:
        """The compact members' trainable weights of one layer as one flat index and moment buffers."""
        packed = self._packed.get(name)
        if packed is None:
            n = self.params[name][0].numel()
            members = sorted(self.compact[name])
            parts = [self.compact[name][m] for m in members]
            sizes = [int(c[0].numel()) for c in parts]
            index = torch.cat([c[0] + m * n for m, c in zip(members, parts)])
            m_all, v_all = torch.cat([c[1] for c in parts]), torch.cat([c[2] for c in parts])
            for m, c, mv, vv in zip(members, parts, m_all.split(sizes), v_all.split(sizes)):
                self.compact[name][m] = (c[0], mv, vv)
            packed = self._packed[name] = (index, m_all, v_all, sizes)
        return packed

    @torch.no_grad()
    def step(self) -> None:
        self.step_count += 1
        ps: list[Tensor] = []
        gs: list[Tensor] = []
        ms: list[Tensor] = []
        vs: list[Tensor] = []
        scatter: list[tuple[Tensor, Tensor, Tensor]] = []

        def add(p: Tensor, g: Tensor, m: Tensor, v: Tensor, sizes: list[int] | None = None) -> None:
            whole = sizes is None and self.stack_exact and p[0].numel() % STACK_MULTIPLE == 0
            if whole or not self.per_member:
                ps.append(p)
                gs.append(g)
                ms.append(m)
                vs.append(v)
                return
            # Each member its own tensor to the kernel: rounding independent of its position in the stack.
            for out, t in ((ps, p), (gs, g), (ms, m), (vs, v)):
                out.extend(t.unbind(0) if sizes is None else [c for c in t.split(sizes) if c.numel()])

        for name, p in self.params.items():
            g = p.grad
            if g is None:
                continue
            modes = self.mode.get(name)
            if modes is None or all(mode == "free" for mode in modes):
                add(p, g, self.exp_avg[name], self.exp_avg_sq[name])
                continue
            mask = self.masks[name]
            if all(mode == "masked" for mode in modes):
                g.mul_(mask)
                add(p, g, self.exp_avg[name], self.exp_avg_sq[name])
                continue
            for m, mode in enumerate(modes):  # a mixed population: member by member
                if mode == "compact":
                    continue
                if mode == "masked":
                    g[m].mul_(mask[m])
                add(p[m:m + 1], g[m:m + 1], self.exp_avg[name][m:m + 1], self.exp_avg_sq[name][m:m + 1])
            if "compact" in modes:
                index, m_all, v_all, sizes = self._pack(name)
                if index.numel():
                    values = p.view(-1).index_select(0, index)
                    add(values, g.reshape(-1).index_select(0, index), m_all, v_all, sizes)
                    scatter.append((p, index, values))
        if ps:
            torch._fused_adam_(ps, gs, ms, vs, [], [self.step_count] * len(ps), lr=self.lr, beta1=0.9,
                               beta2=0.999, weight_decay=0.0, eps=1e-8, amsgrad=False, maximize=False)
        for p, index, values in scatter:
            p.view(-1).index_copy_(0, index, values)


_FUSED_PROBE: dict[str, tuple[bool, bool]] = {}


def fused_adam_available(device: torch.device | str) -> bool:
    """Whether :class:`MemberAdam` can run on ``device``: this torch has the fused Adam kernel there, and on
    CPU a member updated as its own tensor inside a list gives exactly what it gives alone (checked once per
    process on a few sizes, tails included, against rows of a stack)."""
    return _fused_probe(device)[0]


def fused_adam_stacks_exact(device: torch.device | str) -> bool:
    """Whether, on ``device``, a row of a stack whose rows are multiples of :data:`STACK_MULTIPLE` floats is
    updated exactly as alone when the whole stack goes to the fused kernel (checked once per process, with
    stacks large enough for the kernel to split them between threads). Off CPU, where members are not
    claimed bit-identical to their solo runs, true wherever the kernel exists."""
    return _fused_probe(device)[1]


def _fused_probe(device: torch.device | str) -> tuple[bool, bool]:
    device = torch.device(device)
    if device.type not in _FUSED_PROBE:
        _FUSED_PROBE[device.type] = _probe_fused_adam(device)
    return _FUSED_PROBE[device.type]


def _probe_fused_adam(device: torch.device) -> tuple[bool, bool]:
    """(members exact as their own tensors, members exact as rows of a whole stack)."""
    g = torch.Generator().manual_seed(0)
    stacks_exact = True
    try:
        for n in (10, 16, 100, 1040 + 7, 65536 + 48, 200704 + 16):
            state = [torch.randn(3, n, generator=g), torch.randn(3, n, generator=g),
                     torch.randn(3, n, generator=g) * 1e-2, torch.rand(3, n, generator=g) * 1e-3]
            state = [t.to(device) for t in state]
            rows = [[t[s].clone() for t in state] for s in range(3)]
            whole = [t.clone() for t in state]
            _fused_adam_step(*(list(t.unbind(0)) for t in state))
            if device.type != "cpu":
                continue  # off CPU: only that the kernel exists
            if n % STACK_MULTIPLE == 0:
                _fused_adam_step(*([t] for t in whole))
            for s, (p, grad, m, v) in enumerate(rows):
                _fused_adam_step([p], [grad], [m], [v])
                if not _same_row((p, m, v), state, s):
                    return False, False
                if n % STACK_MULTIPLE == 0 and not _same_row((p, m, v), whole, s):
                    stacks_exact = False
    except (RuntimeError, NotImplementedError):  # a torch without the fused kernel here: foreach it is
        return False, False
    return True, stacks_exact


def _same_row(alone: tuple[Tensor, Tensor, Tensor], state: list[Tensor], row: int) -> bool:
    p, m, v = alone
    return torch.equal(p, state[0][row]) and torch.equal(m, state[2][row]) and torch.equal(v, state[3][row])


def _fused_adam_step(p: list[Tensor], grad: list[Tensor], m: list[Tensor], v: list[Tensor]) -> None:
    step = torch.tensor(3.0, device=p[0].device)
    torch._fused_adam_(p, grad, m, v, [], [step] * len(p), lr=1e-3, beta1=0.9, beta2=0.999, weight_decay=0.0,
                       eps=1e-8, amsgrad=False, maximize=False)
