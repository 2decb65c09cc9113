"""Any nn.Module on the engine: torchvision's ResNet-18 with per-task BatchNorm, a user's nn.Sequential MLP against
the built-in one, populations of user models, and models the engine must refuse before training."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import easy_digits
from sleepcl.config import RunConfig
from sleepcl.data.split import class_pairs, make_split_benchmark
from sleepcl.engine.population import Population, train_population
from sleepcl.models import TaskHeads, build_network

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "models.py"
RESNET = f"{EXAMPLES}:resnet18"


@pytest.fixture(scope="module")
def cifar_shaped():
    """3 tasks of 3x32x32 images (a bright square per class), small enough for a ResNet-18 on a CPU."""
    return make_split_benchmark(easy_digits(n_per_class=24, channels=3, size=32), class_pairs(None, 3), val_size=4)


def _resnet_config(**kw):
    base = dict(benchmark="cifar10", network=RESNET, n_tasks=3, epochs=1, retrain_epochs=1, batch_size=16,
                lr=1e-3, final_free=0.5)
    return RunConfig(**{**base, **kw})


def _task_outputs(pop: Population, task: int) -> torch.Tensor:
    """Logits of ``task``'s test samples through the task's own network (eval mode: running statistics)."""
    idx = pop.bench.test[task]
    x = pop.bench.x[idx].expand(pop.size, *pop.bench.x[idx].shape)
    with torch.no_grad():
        return pop.net.logits(pop.params_for_task(task), x, task, buffers=pop.members.buffers)


def test_resnet18_with_batchnorm_keeps_earlier_tasks_exact(cifar_shaped):
    if importlib.util.find_spec("torchvision") is None:  # ('.[test]' installs it)
        pytest.skip("torchvision is not installed")
    pop = Population([_resnet_config()], cifar_shaped)
    net = pop.net
    assert "fc" not in " ".join(net.prunable) and len(net.prunable) == 20  # 20 convolutions, the fc is the head
    assert any(n.endswith("running_mean") for n in net.per_task) and "bn1.weight" in net.per_task
    seen: dict[int, dict[str, torch.Tensor]] = {}

    def after(p: Population, day: int) -> None:
        seen[day] = {"logits": _task_outputs(p, 0), "bn": p.members.buffers["bn1.running_mean"][:, 0].clone()}
        if day == 1:
            seen[day]["logits1"] = _task_outputs(p, 1)

    [result] = pop.fit(on_day_end=after)
    final = _task_outputs(pop, 0)
    assert torch.equal(final, seen[0]["logits"]), "task 1's outputs changed after tasks 2 and 3"
    assert torch.equal(_task_outputs(pop, 1), seen[1]["logits1"])
    assert torch.equal(pop.members.buffers["bn1.running_mean"][:, 0], seen[0]["bn"])
    assert not torch.equal(pop.members.buffers["bn1.running_mean"][:, 2], seen[0]["bn"])  # task 3 has its own
    for name, o in pop.owner.items():  # the final free fraction is p, to the weight, in every layer
        assert abs(float((o[0] == 0).double().mean()) - 0.5) <= 1 / o[0].numel(), name
    assert result.accuracy_matrix[0][0] == result.accuracy_matrix[-1][0]


def sequential_mlp(input_shape, n_tasks):
    """The built-in MLP written as a user would, ending with sleepcl's per-task heads."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 48), nn.ReLU(), nn.Linear(48, 32), nn.ReLU(),
                         TaskHeads(n_tasks, 2, 32))


def plain_mlp(input_shape):
    """The same, ending with an ordinary nn.Linear classifier (replaced by per-task heads)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 48), nn.ReLU(), nn.Linear(48, 32), nn.ReLU(),
                         nn.Linear(32, 2))


@pytest.mark.parametrize("strategy", ["packnet", "memory"])
def test_a_users_sequential_mlp_learns_what_the_builtin_mlp_learns(mnist5k, strategy):
    """Same seeds, same accuracies: the generic path (one functional call per member) against the tuned kernels.
    With sleepcl's heads the two start from the same weights and stay bit-identical. With the model's own
    nn.Linear classifier the trunk starts the same but the heads do not (the classifier's own draws come first),
    so that model is only required to learn (chance is 0.5) on exactly the same capacity schedule."""
    small = dict(strategy=strategy, epochs=2, retrain_epochs=2, batch_size=64, final_free=0.9, rounds=2)
    seeds = (0, 1)
    builtin = train_population([RunConfig(widths=(48, 32), seed=s, **small) for s in seeds], mnist5k)
    heads = train_population([RunConfig(network="test_models:sequential_mlp", seed=s, **small) for s in seeds],
                             mnist5k)
    plain = train_population([RunConfig(network="test_models:plain_mlp", seed=s, **small) for s in seeds], mnist5k)
    for b, h in zip(builtin, heads):
        assert h.accuracy_matrix == b.accuracy_matrix
        assert h.free_fraction_after_round == b.free_fraction_after_round

    assert [p.free_fraction_after_round for p in plain] == [b.free_fraction_after_round for b in builtin]
    assert all(sum(p.accuracy_matrix[-1]) / len(p.accuracy_matrix[-1]) > 0.75 for p in plain), \
        [p.accuracy_matrix[-1] for p in plain]


def test_a_member_of_a_user_model_population_is_its_solo_run(cifar_shaped):
    small = dict(benchmark="cifar10", network=f"{EXAMPLES}:small_convnet", n_tasks=3, epochs=1, retrain_epochs=2,
                 batch_size=16, lr=1e-3, final_free=0.7)
    members = [RunConfig(seed=0, rounds=1, **small), RunConfig(seed=1, rounds=2, **small)]
    whole = Population(members, cifar_shaped)
    whole.fit()
    solo = Population(members[1:], cifar_shaped)
    solo.fit()
    for name in solo.params:
        assert torch.equal(solo.params[name], whole.params[name][1:]), name
    for name in solo.members.buffers:
        assert torch.equal(solo.members.buffers[name], whole.members.buffers[name][1:]), name


# -- what cannot work is refused before any training ---------------------------------------------------------

def failing():
    raise RuntimeError("no GPU here")


def not_a_module():
    return "resnet"


def only_a_classifier(input_shape):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 2))


class Counter(nn.Module):
    """Keeps a count of the batches it has seen in a buffer: state that would drift under old tasks."""

    def __init__(self):
        super().__init__()
        self.register_buffer("seen", torch.zeros(()))

    def forward(self, x):
        if self.training:
            self.seen += 1
        return x


def with_counter(input_shape):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 8), Counter(), nn.Linear(8, 2))


def lazy(input_shape):
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(8), nn.ReLU(), nn.Linear(8, 2))


def wrong_input(input_shape):
    return nn.Sequential(nn.Flatten(), nn.Linear(100, 8), nn.ReLU(), nn.Linear(8, 2))


def heads_of_the_wrong_size(input_shape):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 8), nn.ReLU(), TaskHeads(7, 2, 8))


@pytest.mark.parametrize("factory, message", [
    ("failing", "the model factory test_models:failing failed: RuntimeError: no GPU here"),
    ("not_a_module", "returned a str, not a torch.nn.Module"),
    ("only_a_classifier", "no Linear or convolution besides the classifier (1)"),
    ("with_counter", "layer 2 (Counter) changes its buffer 2.seen in training"),
    ("lazy", "is not initialised yet (a lazy layer)"),
    ("wrong_input", "failed on a batch of shape (2, 1, 28, 28)"),
    ("heads_of_the_wrong_size", "has 7 heads of 2 outputs, but the tasks need 5 heads of 2"),
])
def test_models_that_cannot_work_are_refused_with_the_reason(factory, message):
    with pytest.raises(ValueError) as e:
        build_network(f"test_models:{factory}", (1, 28, 28), n_tasks=5, per_task_norm=True)
    assert message in str(e.value)


def test_a_layer_with_state_is_fine_where_nothing_is_frozen():
    net = build_network("test_models:with_counter", (1, 28, 28), n_tasks=5, per_task_norm=False)
    assert net.prunable == ("1.weight",)


def test_the_runner_checks_every_model_before_the_first_population_trains(mnist5k, monkeypatch, tmp_path):
    import sleepcl.runs.runner as runner

    trained = []
    monkeypatch.setattr(runner, "train_population", lambda members, *a, **k: trained.append(members) or [])
    good = RunConfig(epochs=1, retrain_epochs=1, widths=(8, 8))
    bad = RunConfig(epochs=1, retrain_epochs=1, network="test_models:not_a_module")
    with pytest.raises(ValueError, match="not a torch.nn.Module"):
        runner.run_configs([good, bad], device="cpu")
    assert trained == []


def bn_convnet(input_shape):
    """A conv net with BatchNorm and no random layer."""
    return nn.Sequential(nn.Conv2d(input_shape[0], 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(16, 2))


def _vmapped(pop: Population) -> Population:
    """``pop`` with its network computing all members in one vmap (the GPU's way, forced here on CPU)."""
    from sleepcl.models import build_network

    c = pop.configs[0]
    pop.net = pop.members.net = build_network(c.network, pop.bench.input_shape, pop.bench.n_tasks,
                                              per_task_norm=pop.strategy.freezes, vmap=True)
    assert pop.net.vmap
    return pop


def test_vmap_members_learn_what_the_member_loop_learns(mnist5k):
    """All members in one torch.func.vmap (the GPU's way, forced here on CPU) learn what one call per member
    learns: the same capacity schedule, accuracies within 0.01 (float rounding apart)."""
    small = dict(network="test_models:plain_mlp", epochs=2, retrain_epochs=2, batch_size=64, final_free=0.9)
    members = [RunConfig(seed=0, rounds=1, **small), RunConfig(seed=1, rounds=2, **small)]
    ra = Population(members, mnist5k).fit()
    rb = _vmapped(Population(members, mnist5k)).fit()
    for a, b in zip(ra, rb):
        assert a.free_fraction_after_round == b.free_fraction_after_round
        for row_a, row_b in zip(a.accuracy_matrix, b.accuracy_matrix):
            assert all(abs(u - v) <= 0.01 for u, v in zip(row_a, row_b) if u is not None), (row_a, row_b)


def test_vmap_members_keep_each_tasks_batchnorm(cifar_shaped):
    small = dict(benchmark="cifar10", network="test_models:bn_convnet", n_tasks=3, epochs=2, retrain_epochs=2,
                 batch_size=16, lr=3e-3, final_free=0.6)
    pop = _vmapped(Population([RunConfig(seed=0, **small), RunConfig(seed=1, rounds=2, **small)], cifar_shaped))
    seen = {}
    pop.fit(on_day_end=lambda p, day: seen.setdefault(day, _task_outputs(p, 0)))
    assert torch.equal(_task_outputs(pop, 0), seen[0])
    assert not torch.equal(pop.members.buffers["1.running_mean"][:, 0], pop.members.buffers["1.running_mean"][:, 2])


def test_vmap_is_not_used_for_models_with_random_layers():
    from sleepcl.models import build_network

    net = build_network(f"{EXAMPLES}:small_convnet", (3, 32, 32), 2, per_task_norm=True, vmap=True)
    assert not net.vmap  # its nn.Dropout draws from each member's own generator, one member at a time
