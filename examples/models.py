"""Models of one's own for sleepcl: each function returns an ``nn.Module`` that maps ``(batch, *input_shape)`` to
class scores; name one on the command line as ``--model examples/models.py:FUNCTION`` (or, from Python,
``RunConfig(network="examples/models.py:FUNCTION")``). sleepcl replaces the model's classifier (its last
``nn.Linear``) by one head per task, owns and prunes every other Linear and convolution weight, and gives each
task its own copy of the norm layers under PackNet (README, "Your own model").

A factory may take any of ``input_shape``, ``n_tasks`` and ``num_classes`` as keyword arguments; sleepcl passes
those it accepts.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def import_torchvision():  # type: ignore[no-untyped-def]
    """``torchvision``, also beside the CPU build of torch.

    The torchvision wheel on PyPI links its compiled operators (nms and the like) against the CUDA build of
    torch. Beside the CPU build they cannot load, and ``import torchvision`` then stops at registering shapes for
    two of them (``torchvision::nms``, ``torchvision::qnms``). The models need none of those operators:
    declaring the two first lets the import through, and they stay unavailable.
    """
    try:
        import torchvision
    except RuntimeError as e:
        if "torchvision::" not in str(e):
            raise
        for op in ("nms", "qnms"):
            try:
                torch.library.define(f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            except RuntimeError:
                pass  # defined by an earlier attempt
        import torchvision
    return torchvision


def resnet18(input_shape: tuple[int, ...] = (3, 32, 32), num_classes: int = 10) -> nn.Module:
    """torchvision's ResNet-18 (BatchNorm, 11.2 M parameters), its first convolution taking the images' channels
    (grey images: one); on 32x32 images its 7x7 stem and max-pool leave 8x8 maps after the stem, as is common in
    continual-learning benchmarks that reuse it as is."""
    model = import_torchvision().models.resnet18(num_classes=num_classes)
    if input_shape[0] != 3:
        model.conv1 = nn.Conv2d(input_shape[0], 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


def mlp(input_shape: tuple[int, ...] = (1, 28, 28), num_classes: int = 2) -> nn.Module:
    """The paper's MLP (input -> 256 -> 256 -> classes) written as anyone would, with ``nn.Sequential``."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 256), nn.ReLU(),
                         nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, num_classes))


def small_convnet(input_shape: tuple[int, ...] = (3, 32, 32), num_classes: int = 2) -> nn.Module:
    """A small conv net with BatchNorm and dropout, for quick runs on image benchmarks."""
    c = input_shape[0]
    return nn.Sequential(
        nn.Conv2d(c, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Dropout(0.1), nn.Linear(32, num_classes))


def vgg_fc8192_layer(input_shape: tuple[int, ...] = (3, 32, 32), num_classes: int = 2) -> nn.Module:
    """The paper's VGG (Appendix A) with "fc8192" read as a fully connected layer of 8,192 units.

    Appendix A: conv3-32, conv3-64, maxpool, conv3-128, conv3-128, maxpool, dropout(0.1), fc8192, dropout(0.1),
    fc1024, fc2. sleepcl's built-in ``vgg`` network reads "fc8192" as the 128 x 8 x 8 = 8,192 flattened features
    entering fc1024 (README, "The study"); this is the other reading, 8,192 units after the flatten, which adds
    a 8,192 x 8,192 layer (67 M weights) in front of fc1024. Run it with ``--model
    examples/models.py:vgg_fc8192_layer``; no committed report uses it.
    """
    c, h, w = input_shape
    return nn.Sequential(
        nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Dropout(0.1), nn.Flatten(), nn.Linear(128 * (h // 4) * (w // 4), 8192), nn.ReLU(), nn.Dropout(0.1),
        nn.Linear(8192, 1024), nn.ReLU(), nn.Linear(1024, num_classes))
def convnet(input_shape: tuple[int, ...] = (3, 32, 32), num_classes: int = 2) -> nn.Module:
    """A conv net with BatchNorm after each of its two 32-channel convolutions (about 10 k weights): wide enough that every
    task keeps a working network at p = 0.9 over five tasks, where ``small_convnet``'s first layer keeps 3 weights."""
    c = input_shape[0]
    return nn.Sequential(
        nn.Conv2d(c, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(128, num_classes))
