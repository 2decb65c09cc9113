"""The paper's two networks, as ordinary ``nn.Module`` s and as tuned kernels for populations.

:class:`PaperMLP` (784-256-256, a 2-way head per task) and :class:`PaperVGG` (conv3-32, conv3-64, maxpool,
conv3-128, conv3-128, maxpool, dropout, fc1024, dropout, heads; Appendix A) are plain modules: they train on the
engine's generic path like any user model (:mod:`sleepcl.models.module`), and they define the initial weights
(:func:`sleepcl.models.layers.uniform_`, drawn in the order of their parameters).

:class:`StackedMLP` and :class:`StackedVGG` compute the same networks for a whole population at once, with
the member axis folded into the kernels: linear layers are batched matmuls whose backward writes weight
gradients straight into the weights' layout, and convolutions are one grouped convolution (or one per member
on CPU, where oneDNN's ordinary kernels are faster). The engine chooses them automatically for the paper's
networks (the ``stacked_kernels`` part of its fast path); their parameters have the same names and initial
values as the modules'.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Buffers, MemberRandom, Network, Params, fan_in, seeded
from .layers import GeneratorDropout, TaskHeads, uniform_

__all__ = ["PaperMLP", "PaperVGG", "StackedMLP", "StackedVGG", "MLP_WIDTHS", "VGG_WIDTHS", "VGG_DROPOUT"]

MLP_WIDTHS = (256, 256)
VGG_WIDTHS = (32, 64, 128, 128, 1024)
VGG_DROPOUT = 0.1


def _skip_init(cls: type[nn.Module], *args: int, **kwargs: int) -> nn.Module:
    """A layer whose weights are left for :meth:`PaperMLP.reset_parameters` to draw (no draws of its own)."""
    return torch.nn.utils.skip_init(cls, *args, device=torch.get_default_device(), **kwargs)


def _draw(layers: Sequence[nn.Module]) -> None:
    """Every layer's weight then bias from U(+-1/sqrt(fan_in)), in order: the paper networks' initial weights."""
    for layer in layers:
        uniform_(layer.weight, fan_in(layer.weight.shape))
        uniform_(layer.bias, fan_in(layer.weight.shape))


class PaperMLP(nn.Module):
    """The paper's MLP: input -> 256 -> 256 -> one head per task (ReLU)."""

    def __init__(self, input_shape: Sequence[int], n_tasks: int = 1, head_size: int = 2,
                 widths: Sequence[int] = MLP_WIDTHS):
        super().__init__()
        dims = [math.prod(input_shape), *widths]
        if not widths or any(int(w) < 1 for w in widths):
            raise ValueError(f"the MLP's widths must be whole numbers >= 1, got {tuple(widths)}")
        self.depth = len(widths)
        for i, (a, b) in enumerate(zip(dims, dims[1:])):
            setattr(self, f"fc{i}", _skip_init(nn.Linear, a, b))
        _draw([getattr(self, f"fc{i}") for i in range(self.depth)])
        self.head = TaskHeads(n_tasks, head_size, dims[-1])

    def forward(self, x: Tensor, task: int = 0) -> Tensor:
        h = x.flatten(1)
        for i in range(self.depth):
            h = F.relu(getattr(self, f"fc{i}")(h), inplace=True)
        return self.head(h, task)


class PaperVGG(nn.Module):
    """The paper's small VGG; ``widths`` = the four conv widths and the fc width."""

    def __init__(self, input_shape: Sequence[int], n_tasks: int = 1, head_size: int = 2,
                 widths: Sequence[int] = VGG_WIDTHS, dropout: float = VGG_DROPOUT):
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"the vgg network needs image inputs (C, H, W), got input shape {tuple(input_shape)}")
        if len(widths) != 5 or any(int(w) < 1 for w in widths):
            raise ValueError(f"the small VGG takes 5 widths >= 1 (4 conv, 1 fc), got {tuple(widths)}")
        c, h, w = input_shape
        convs = [c, *widths[:4]]
        for i, (a, b) in enumerate(zip(convs, convs[1:])):
            setattr(self, f"conv{i}", _skip_init(nn.Conv2d, a, b, 3, padding=1))
        self.fc0 = _skip_init(nn.Linear, convs[-1] * (h // 4) * (w // 4), widths[4])
        _draw([self.conv0, self.conv1, self.conv2, self.conv3, self.fc0])
        self.drop0, self.drop1 = GeneratorDropout(dropout), GeneratorDropout(dropout)
        self.head = TaskHeads(n_tasks, head_size, widths[4])

    def forward(self, x: Tensor, task: int = 0) -> Tensor:
        h = x
        for i in range(4):
            h = F.relu(getattr(self, f"conv{i}")(h), inplace=True)
            if i in (1, 3):
                h = F.max_pool2d(h, 2)
        h = self.drop0(h.flatten(1))
        h = self.drop1(F.relu(self.fc0(h), inplace=True))
        return self.head(h, task)


# -- the tuned kernels ------------------------------------------------------------------------------------

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


def _dropout(h: Tensor, rate: float, random: MemberRandom) -> Tensor:
    """Dropout with each member's own generator (the masks :class:`GeneratorDropout` draws for one member)."""
    keep = 1.0 - rate
    masks = [torch.empty(h.shape[1:], device=h.device, dtype=h.dtype).bernoulli_(keep, generator=g)
             for g in random.generators]
    return h * torch.stack(masks) / keep


class _Stacked(Network):
    """What both tuned networks share: the module that defines them, and the fast-path flags.

    ``fast`` computes every linear layer with a backward that writes weight gradients in the weights' own
    layout (the plain formulation hands a transposed gradient that must be copied once more).
    """

    module_class: type[nn.Module]
    default_widths: tuple[int, ...]

    def __init__(self, input_shape: Sequence[int], n_tasks: int, head_size: int = 2,
                 widths: Sequence[int] | None = None, *, fast: bool = False):
        super().__init__(input_shape, n_tasks, head_size)
        self.widths = tuple(int(w) for w in widths) if widths else self.default_widths
        self.fast = fast
        template = self.module(torch.device("meta"))
        self._shapes = {n: tuple(p.shape) for n, p in template.named_parameters()}
        self.prunable = tuple(n for n in self._shapes if n.endswith(".weight") and not n.startswith("head."))

    def module(self, device: torch.device | None = None) -> nn.Module:
        """A fresh module of this network (its initial weights drawn from torch's global generator)."""
        if device is not None and device.type == "meta":
            with torch.device("meta"):
                return self.module_class(self.input_shape, self.n_tasks, self.head_size, self.widths)
        return self.module_class(self.input_shape, self.n_tasks, self.head_size, self.widths)

    def member_state(self, seed: int) -> tuple[Params, Buffers]:
        m = seeded(seed, self.module)
        return {n: p.detach() for n, p in m.named_parameters()}, {}

    @property
    def head_shape(self) -> tuple[int, int, int]:
        return self._shapes["head.weight"]  # type: ignore[return-value]

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-member shape of every parameter, heads included."""
        return dict(self._shapes)

    def head(self, h: Tensor, w: Tensor, b: Tensor) -> Tensor:
        return _linear(h, w, b, self.fast)


class StackedMLP(_Stacked):
    """:class:`PaperMLP` for a population: linear layers as batched matmuls over the member axis."""

    name = "mlp"
    module_class = PaperMLP
    default_widths = MLP_WIDTHS

    @property
    def activation_floats(self) -> int:
        return max(math.prod(self.input_shape), *self.widths)

    def features(self, params: Params, x: Tensor, *, buffers: Buffers | None = None, task: int | None = None,
                 random: MemberRandom | None = None, train: bool = False) -> Tensor:
        h = x.flatten(2)
        for i in range(len(self.widths)):
            # In place: the layer's backward needs its input, not its output (one pass and buffer fewer).
            h = torch.relu_(_linear(h, params[f"fc{i}.weight"], params[f"fc{i}.bias"], self.fast))
        return h

    def describe(self) -> str:
        return f"mlp {math.prod(self.input_shape)}-" + "-".join(map(str, self.widths))


class StackedVGG(_Stacked):
    """:class:`PaperVGG` for a population. ``member_convs`` (the fast path sets it on CPU) runs one convolution
    per member instead of one grouped convolution over all of them: the same arithmetic, and on CPU oneDNN's
    ordinary kernels are faster than its grouped ones (up to 1.7x for the first 32x32 layer)."""

    name = "vgg"
    module_class = PaperVGG
    default_widths = VGG_WIDTHS
    dropout_rate = VGG_DROPOUT

    def __init__(self, input_shape: Sequence[int], n_tasks: int, head_size: int = 2,
                 widths: Sequence[int] | None = None, *, fast: bool = False, member_convs: bool = False):
        super().__init__(input_shape, n_tasks, head_size, widths, fast=fast)
        self.member_convs = member_convs

    @property
    def activation_floats(self) -> int:
        c, h, w = self.input_shape
        return max(c * h * w, *(k * h * w for k in self.widths[:2]), *(k * h * w // 4 for k in self.widths[2:4]),
                   self.widths[4])

    def features(self, params: Params, x: Tensor, *, buffers: Buffers | None = None, task: int | None = None,
                 random: MemberRandom | None = None, train: bool = False) -> Tensor:
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
        drop = train and random is not None and self.dropout_rate > 0
        if drop:
            h = _dropout(h, self.dropout_rate, random)  # type: ignore[arg-type]
        h = torch.relu_(_linear(h, params["fc0.weight"], params["fc0.bias"], self.fast))
        if drop:
            h = _dropout(h, self.dropout_rate, random)  # type: ignore[arg-type]
        return h

    def describe(self) -> str:
        return "vgg " + "-".join(map(str, self.widths))
