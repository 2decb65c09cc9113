"""The paper's two networks, written for a *population*: every parameter has a leading member axis ``S``.

A population of S independent networks trains as one: linear layers are batched matmuls over the member
axis and convolutions are one grouped convolution with ``groups=S``, so one kernel call serves all
members. Parameters are plain tensors in a dict (the ``torch.func.functional_call`` convention), which
keeps masks, pruning and the optimizer working on the same stacked tensors.

Which weights count as "the network's weights" (the ones owned, pruned and freed):

* every weight matrix and convolution kernel of the trunk is **prunable** and has an owner;
* **biases** are shared by all tasks and, as in PackNet, trained on the first task only and then frozen
  (PackNet's choice: a bias is a single number per unit, so splitting it among tasks is not possible,
  and freezing it is what keeps old tasks bit-exact). The shared-weight baselines keep training them;
* **heads**: each task has its own 2-way output layer (task-incremental setting). A head belongs to its
  task alone, is never pruned and is not counted in the free fraction, exactly as PackNet keeps a
  classifier per task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["NETWORKS", "Network", "MLP", "SmallVGG", "make_network"]

Params = dict[str, Tensor]


@dataclass(frozen=True)
class Network:
    """Shapes and forward pass of one architecture; the parameters themselves live in a :class:`Params` dict.

    ``fast`` (set by the engine's fast path, see :mod:`sleepcl.engine.population`) computes the same forward pass
    with a backward that writes every weight gradient directly in the weight's own layout; the plain
    autograd formulation (``fast=False``) hands a transposed gradient that must be copied once more.
    ``member_convs`` (convolutional networks; the fast path sets it on CPU) runs one convolution per
    member instead of one grouped convolution over all of them: the same arithmetic, and on CPU oneDNN's
    ordinary kernels are faster than its grouped ones (up to 1.7x for the first 32x32 layer).
    """

    input_shape: tuple[int, ...]
    n_tasks: int
    n_outputs: int
    fast: bool = field(default=False, kw_only=True)
    member_convs: bool = field(default=False, kw_only=True)

    @property
    def prunable(self) -> tuple[str, ...]:
        """Names of the weights that are owned, pruned and freed, in forward order."""
        raise NotImplementedError

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-member shape of every parameter, heads included."""
        raise NotImplementedError

    def features(self, params: Params, x: Tensor, dropout: "Dropout | None" = None) -> Tensor:
        """Trunk output ``(S, B, F)`` for inputs ``x`` of shape ``(S, B, *input_shape)``."""
        raise NotImplementedError

    @property
    def activation_floats(self) -> int:
        """The widest activation one sample makes in one member (floats): sizes evaluation chunks."""
        raise NotImplementedError

    @property
    def feature_dim(self) -> int:
        return self.shapes()["head.weight"][-1]

    def init(self, generator: torch.Generator) -> Params:
        """One member's parameters, drawn like ``nn.Linear``/``nn.Conv2d`` defaults (U(+-1/sqrt(fan_in)))."""
        out: Params = {}
        for name, shape in self.shapes().items():
            fan_in = _fan_in(name, shape, self.shapes())
            bound = 1.0 / math.sqrt(fan_in)
            out[name] = (torch.rand(shape, generator=generator) * 2 - 1) * bound
        return out

    def logits(self, params: Params, x: Tensor, task: Tensor | int, dropout: "Dropout | None" = None) -> Tensor:
        """Logits ``(S, B, n_outputs)``, each sample through the head of its own task.

        ``task`` is an int (the whole batch is one task) or a ``(S, B)`` tensor of task indices (0-based):
        a batch mixing tasks, as rehearsal and multitask training draw, is routed per sample.
        """
        h = self.features(params, x, dropout)
        w, b = params["head.weight"], params["head.bias"]  # (S, T, O, F), (S, T, O)
        if isinstance(task, int):
            return _linear(h, w[:, task], b[:, task], self.fast)
        s, t, o, f = w.shape
        every = torch.baddbmm(b.reshape(s, 1, t * o), h, w.reshape(s, t * o, f).transpose(1, 2))
        every = every.view(s, -1, t, o)
        return every.gather(2, task[:, :, None, None].expand(-1, -1, 1, o)).squeeze(2)


class Dropout:
    """Dropout with one generator per member, so a member draws the same masks alone or in a population."""

    def __init__(self, rate: float, generators: Sequence[torch.Generator]):
        self.rate = rate
        self.generators = list(generators)

    def __call__(self, h: Tensor) -> Tensor:
        if self.rate == 0.0:
            return h
        keep = 1.0 - self.rate
        masks = [torch.empty(h.shape[1:], device=h.device, dtype=h.dtype).bernoulli_(keep, generator=g)
                 for g in self.generators]
        return h * torch.stack(masks) / keep


def _linear(x: Tensor, w: Tensor, b: Tensor, fast: bool = False) -> Tensor:
    """``x @ w.T + b`` for every member: ``x`` (S, B, in), ``w`` (S, out, in), ``b`` (S, out)."""
    if fast and torch.is_grad_enabled() and (w.requires_grad or b.requires_grad or x.requires_grad):
        return _StackedLinear.apply(x, w, b)
    return torch.baddbmm(b[:, None, :], x, w.transpose(1, 2))


class _StackedLinear(torch.autograd.Function):
    """The same forward as :func:`_linear`; the backward computes ``dW = dY^T X`` straight into the layout
    of ``W`` (autograd's own ``(X^T dY)^T`` is a transposed view that is copied once more per step)."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, b: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, w)
        return torch.baddbmm(b[:, None, :], x, w.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:  # type: ignore[override]
        x, w = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        gx = torch.bmm(grad, w) if need_x else None
        gw = torch.bmm(grad.transpose(1, 2), x) if need_w else None
        gb = grad.sum(1) if need_b else None
        return gx, gw, gb


@dataclass(frozen=True)
class MLP(Network):
    """The paper's MLP: input -> 256 -> 256 -> per-task head (ReLU)."""

    widths: tuple[int, ...] = (256, 256)

    @property
    def prunable(self) -> tuple[str, ...]:
        return tuple(f"fc{i}.weight" for i in range(len(self.widths)))

    def shapes(self) -> dict[str, tuple[int, ...]]:
        dims = [math.prod(self.input_shape), *self.widths]
        out: dict[str, tuple[int, ...]] = {}
        for i, (a, b) in enumerate(zip(dims, dims[1:])):
            out[f"fc{i}.weight"] = (b, a)
            out[f"fc{i}.bias"] = (b,)
        out["head.weight"] = (self.n_tasks, self.n_outputs, dims[-1])
        out["head.bias"] = (self.n_tasks, self.n_outputs)
        return out

    @property
    def activation_floats(self) -> int:
        return max(math.prod(self.input_shape), *self.widths)

    def features(self, params: Params, x: Tensor, dropout: Dropout | None = None) -> Tensor:
        h = x.flatten(2)
        for i in range(len(self.widths)):
            # In place: the layer's backward needs its input, not its output (one pass and buffer fewer).
            h = torch.relu_(_linear(h, params[f"fc{i}.weight"], params[f"fc{i}.bias"], self.fast))
        return h


@dataclass(frozen=True)
class SmallVGG(Network):
    """The paper's small VGG: conv3-32, conv3-64, maxpool, conv3-128, conv3-128, maxpool, dropout,
    fc (flattened -> 1024), dropout, per-task head. ``widths`` = the four conv widths and the fc width."""

    widths: tuple[int, ...] = (32, 64, 128, 128, 1024)
    dropout_rate: float = 0.1

    @property
    def prunable(self) -> tuple[str, ...]:
        return ("conv0.weight", "conv1.weight", "conv2.weight", "conv3.weight", "fc0.weight")

    def shapes(self) -> dict[str, tuple[int, ...]]:
        if len(self.widths) != 5:
            raise ValueError(f"the small VGG takes 5 widths (4 conv, 1 fc), got {self.widths}")
        c, h, w = self.input_shape
        convs = [c, *self.widths[:4]]
        out: dict[str, tuple[int, ...]] = {}
        for i, (a, b) in enumerate(zip(convs, convs[1:])):
            out[f"conv{i}.weight"] = (b, a, 3, 3)
            out[f"conv{i}.bias"] = (b,)
        flat = convs[-1] * (h // 4) * (w // 4)
        out["fc0.weight"] = (self.widths[4], flat)
        out["fc0.bias"] = (self.widths[4],)
        out["head.weight"] = (self.n_tasks, self.n_outputs, self.widths[4])
        out["head.bias"] = (self.n_tasks, self.n_outputs)
        return out

    @property
    def activation_floats(self) -> int:
        c, h, w = self.input_shape
        return max(c * h * w, *(k * h * w for k in self.widths[:2]), *(k * h * w // 4 for k in self.widths[2:4]),
                   self.widths[4])

    def features(self, params: Params, x: Tensor, dropout: Dropout | None = None) -> Tensor:
        s, b = x.shape[:2]
        if self.member_convs:
            # One member at a time through the conv trunk (unbind: one stack in backward, not S copies).
            weights = [params[f"conv{i}.weight"].unbind(0) for i in range(4)]
            biases = [params[f"conv{i}.bias"].unbind(0) for i in range(4)]
            outs = []
            for m, h in enumerate(x.unbind(0)):
                for i in range(4):
                    h = torch.relu_(F.conv2d(h, weights[i][m], biases[i][m], padding=1))
                    if i in (1, 3):
                        h = F.max_pool2d(h, 2)
                outs.append(h.reshape(b, -1))
            h = torch.stack(outs)
        else:
            # Members become channel groups: (S, B, C, H, W) -> (B, S*C, H, W), one grouped conv for all.
            h = x.transpose(0, 1).reshape(b, s * x.shape[2], *x.shape[3:])
            for i in range(4):
                w = params[f"conv{i}.weight"]
                h = torch.relu_(F.conv2d(h, w.flatten(0, 1), params[f"conv{i}.bias"].flatten(), padding=1, groups=s))
                if i in (1, 3):
                    h = F.max_pool2d(h, 2)
            h = h.reshape(b, s, -1).transpose(0, 1)
        if dropout is not None:
            h = dropout(h)
        h = torch.relu_(_linear(h, params["fc0.weight"], params["fc0.bias"], self.fast))
        if dropout is not None:
            h = dropout(h)
        return h


NETWORKS = ("mlp", "vgg")


def make_network(name: str, input_shape: Sequence[int], n_tasks: int, widths: Sequence[int] | None = None,
                 n_outputs: int = 2) -> Network:
    """The named architecture for inputs of ``input_shape`` and ``n_tasks`` heads of ``n_outputs``."""
    shape = tuple(int(d) for d in input_shape)
    if name == "mlp":
        return MLP(shape, n_tasks, n_outputs, tuple(widths) if widths else (256, 256))
    if name == "vgg":
        if len(shape) != 3:
            raise ValueError(f"the vgg network needs image inputs (C, H, W), got input shape {shape}")
        return SmallVGG(shape, n_tasks, n_outputs, tuple(widths) if widths else (32, 64, 128, 128, 1024))
    raise ValueError(f"unknown network {name!r}; choose one of {', '.join(NETWORKS)}")


def _fan_in(name: str, shape: tuple[int, ...], shapes: dict[str, tuple[int, ...]]) -> int:
    if name.endswith(".weight"):
        return math.prod(shape[1:]) if not name.startswith("head") else shape[-1]
    weight = shapes[name.replace(".bias", ".weight")]
    return math.prod(weight[1:]) if not name.startswith("head") else weight[-1]
