"""A zoo of models written as users write them, each trained as a population under PackNet with sleep cycles: earlier
tasks stay exact, the final free fraction is p, every task ends well above chance, and a member is its solo run
(trained again, from another global random state: one config, one record).

The data is small (three tasks of 16x16 grey images, a bright square per class) so that the zoo costs CI seconds;
tests/test_models.py runs torchvision's full ResNet-18."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import easy_digits
from sleepcl.config import RunConfig
from sleepcl.data.split import class_pairs, make_split_benchmark
from sleepcl.engine.population import Population

P = 0.75


@pytest.fixture(scope="module")
def digits16():
    return make_split_benchmark(easy_digits(n_per_class=80, size=16), class_pairs(None, 3), val_size=4)


# -- the zoo ----------------------------------------------------------------------------------------------------

class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18's layout (a stem, four stages of two basic blocks, global pooling) at a width of 8 to 64."""

    def __init__(self, channels=1, num_classes=2, width=8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        stages, cin = [], width
        for i, stride in enumerate((1, 2, 2, 2)):
            cout = width * 2 ** i
            stages += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*stages)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1), 1))


def resnet18(input_shape=(1, 16, 16), num_classes=2):
    return ResNet18(input_shape[0], num_classes)


def bn_convnet(input_shape=(1, 16, 16), num_classes=2):
    return nn.Sequential(nn.Conv2d(input_shape[0], 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(128, num_classes))


def groupnorm_layernorm(input_shape=(1, 16, 16), num_classes=2):
    return nn.Sequential(nn.Conv2d(input_shape[0], 16, 3, padding=1), nn.GroupNorm(4, 16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(256, 64), nn.LayerNorm(64), nn.ReLU(),
                         nn.Linear(64, num_classes))


def dropout2d(input_shape=(1, 16, 16), num_classes=2):
    return nn.Sequential(nn.Conv2d(input_shape[0], 16, 3, padding=1), nn.ReLU(), nn.Dropout2d(0.2), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Dropout(0.2), nn.Linear(16 * 64, num_classes))


class PatchTransformer(nn.Module):
    """A Transformer encoder over 4x4 patches with a class token and learnt positions (dropout 0.1 everywhere)."""

    def __init__(self, input_shape, num_classes, d=32):
        super().__init__()
        c, h, w = input_shape
        self.p = 4
        self.embed = nn.Linear(c * self.p ** 2, d)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.pos = nn.Parameter(torch.randn(1, (h // self.p) * (w // self.p) + 1, d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, 4, 64, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, num_classes)
        self.sleepcl_shared = ["cls"]  # a token every task reads: kept shared

    def forward(self, x):
        b, c, _, _ = x.shape
        p = self.p
        patches = x.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 1, 4, 5).reshape(b, -1, c * p * p)
        h = torch.cat([self.cls.expand(b, -1, -1), self.embed(patches)], 1) + self.pos
        return self.head(self.norm(self.encoder(h))[:, 0])


def transformer(input_shape=(1, 16, 16), num_classes=2):
    return PatchTransformer(input_shape, num_classes)


class Tied(nn.Module):
    """Two hidden layers that share one weight matrix (weight tying)."""

    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.inp = nn.Linear(math.prod(input_shape), 64)
        self.a = nn.Linear(64, 64)
        self.b = nn.Linear(64, 64)
        self.b.weight = self.a.weight
        self.out = nn.Linear(64, num_classes)

    def forward(self, x):
        h = F.relu(self.inp(x.flatten(1)))
        return self.out(F.relu(self.b(F.relu(self.a(h)))))


def tied(input_shape=(1, 16, 16), num_classes=2):
    return Tied(input_shape, num_classes)


class Embedded(nn.Module):
    """Pixels as 16 grey levels, each level a learnt vector, plus a learnt vector per position."""

    def __init__(self, input_shape, num_classes, d=16):
        super().__init__()
        n = math.prod(input_shape)
        self.levels = nn.Embedding(16, d)
        self.positions = nn.Embedding(n, d)
        self.hidden = nn.Linear(d, 32)
        self.out = nn.Linear(32, num_classes)

    def forward(self, x):
        tokens = (x.flatten(1) * 4 + 8).long().clamp(0, 15)
        h = self.levels(tokens) + self.positions.weight
        return self.out(F.relu(self.hidden(h)).amax(1))


def embedding(input_shape=(1, 16, 16), num_classes=2):
    return Embedded(input_shape, num_classes)


def conv1d(input_shape=(1, 16, 16), num_classes=2):
    """Rows of the image as a sequence of 16 values per step."""
    return nn.Sequential(nn.Flatten(1, 2), nn.Conv1d(input_shape[1], 32, 3, padding=1), nn.ReLU(),
                         nn.Conv1d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool1d(1), nn.Flatten(),
                         nn.Linear(32, num_classes))


def no_biases(input_shape=(1, 16, 16), num_classes=2):
    return nn.Sequential(nn.Conv2d(input_shape[0], 16, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(16 * 64, 32, bias=False), nn.ReLU(),
                         nn.Linear(32, num_classes, bias=False))


# Models that learn more slowly get more epochs (their unpruned networks need them too).
EPOCHS = {"transformer": 6, "embedding": 6, "conv1d": 4}
ZOO = ["resnet18", "bn_convnet", "groupnorm_layernorm", "dropout2d", "transformer", "tied", "embedding", "conv1d",
       "no_biases"]


def _outputs(pop: Population, task: int) -> torch.Tensor:
    """Every member's logits on ``task``'s test samples through the task's own network (evaluation mode)."""
    x = pop.bench.inputs(pop.bench.test[task], task=task)
    with torch.no_grad():
        return pop.net.logits(pop.params_for_task(task), x.expand(pop.size, *x.shape), task,
                              buffers=pop.members.buffers)


@pytest.mark.parametrize("factory", ZOO)
def test_a_users_model_learns_stays_exact_and_reproduces(digits16, factory):
    base = dict(benchmark="mnist", network=f"test_zoo:{factory}", n_tasks=3, epochs=EPOCHS.get(factory, 2), retrain_epochs=2,
                batch_size=16, lr=3e-3 if factory != "transformer" else 1e-3, final_free=P)
    configs = [RunConfig(seed=0, rounds=1, **base), RunConfig(seed=1, rounds=2, **base)]
    torch.manual_seed(123)
    pop = Population(configs, digits16)
    seen: dict[int, list[torch.Tensor]] = {}
    pop.fit(on_day_end=lambda p, day: seen.setdefault(day, [_outputs(p, t) for t in range(day + 1)]))
    for day, outputs in seen.items():  # every task answers at the end exactly as after its own night
        for t, before in enumerate(outputs):
            assert torch.equal(_outputs(pop, t), before), (factory, day, t)
    free = pop.members.free_fraction()
    assert torch.allclose(free, torch.full_like(free, P), atol=2e-3), free
    accuracy = pop.evaluate([0, 1, 2])
    assert bool((accuracy >= 0.65).all()), (factory, accuracy)  # chance: 0.5, 52 test samples a task
    torch.manual_seed(456)  # another global random state: the member's own streams decide
    solo = Population(configs[1:], digits16)
    solo.fit()
    for n in solo.params:
        assert torch.equal(solo.params[n][0], pop.params[n][1]), (factory, n)
    for n in solo.members.buffers:
        assert torch.equal(solo.members.buffers[n][0], pop.members.buffers[n][1]), (factory, n)
