"""The models people bring, under pruning: BatchNorm statistics recomputed for the pruned network, random layers of
every kind drawing from the member's own stream, randomness sleepcl cannot control refused before training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from conftest import easy_digits
from sleepcl.config import RunConfig
from sleepcl.data.split import class_pairs, make_split_benchmark
from sleepcl.engine.population import Population, train_population
from sleepcl.models import build_network


@pytest.fixture(scope="module")
def digits16():
    """3 tasks of 1x16x16 images (a bright square per class): learnt in an epoch or two."""
    return make_split_benchmark(easy_digits(n_per_class=40, size=16), class_pairs(None, 3), val_size=4)


def bn_net(input_shape=(1, 16, 16), num_classes=2):
    """A conv net with BatchNorm after every convolution, as people write them."""
    c = input_shape[0]
    return nn.Sequential(nn.Conv2d(c, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(128, num_classes))


def _small(network: str, **kw) -> dict:
    base = dict(benchmark="mnist", network=network, n_tasks=3, epochs=2, retrain_epochs=2, batch_size=16, lr=3e-3,
                final_free=0.9, rounds=2)
    return {**base, **kw}


# -- BatchNorm under pruning ---------------------------------------------------------------------------------

@pytest.mark.parametrize("strategy", ["packnet", "memory"])
def test_batchnorm_under_pruning_keeps_every_task_well_above_chance(digits16, strategy):
    """Before its statistics were recomputed for the pruned network, PackNet's tasks 2 and 3 ended at 0.62 and 0.69
    here (binary tasks the network learns to 1.0)."""
    results = train_population([RunConfig(seed=s, strategy=strategy, **_small("test_any_model:bn_net"))
                                for s in (0, 1)], digits16)
    for r in results:
        assert min(r.accuracy_matrix[-1]) >= 0.85, r.accuracy_matrix


def test_recalibration_leaves_earlier_tasks_exact_and_makes_the_running_statistics_the_batch_statistics(digits16):
    pop = Population([RunConfig(seed=0, **_small("test_any_model:bn_net"))], digits16)
    seen = {}

    def after(p: Population, day: int) -> None:
        seen[day] = {n: b[:, day].clone() for n, b in p.members.buffers.items()}

    pop.fit(on_day_end=after)
    for day, stats in seen.items():
        for n, b in stats.items():  # every task's copy as its own night left it
            assert torch.equal(pop.members.buffers[n][:, day], b), (day, n)
    # the last task's statistics: the mean over its training batches of the batch statistics of the final weights
    last = 2
    day = pop.days()[last]
    w, b = pop.params["0.weight"][0].detach(), pop.params["0.bias"][0].detach()
    means = [nn.functional.conv2d(x[0], w, b, padding=1).mean((0, 2, 3)) for x, _, _ in pop.data_pass(day, mixed=True)]
    assert len(means) > 1
    assert torch.allclose(pop.members.buffers["1.running_mean"][0, last], torch.stack(means).mean(0), atol=1e-5)


# -- random layers of every kind ----------------------------------------------------------------------------

def dropout2d_net(input_shape=(1, 16, 16), num_classes=2):
    c = input_shape[0]
    return nn.Sequential(nn.Conv2d(c, 8, 3, padding=1), nn.ReLU(), nn.Dropout2d(0.3), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(8 * (input_shape[1] // 2) ** 2, num_classes))


class PatchTransformer(nn.Module):
    """A small Transformer encoder over 4x4 patches, with its default dropout (inside the attention too)."""

    def __init__(self, input_shape, num_classes, d=16):
        super().__init__()
        c, h, w = input_shape
        self.p = 4
        self.embed = nn.Linear(c * self.p * self.p, d)
        self.pos = nn.Parameter(torch.randn((h // self.p) * (w // self.p), d) * 0.02)
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(d, 2, 32, dropout=0.2, batch_first=True), 1)
        self.fc = nn.Linear(d, num_classes)

    def forward(self, x):
        b, c, _, _ = x.shape
        p = self.p
        x = x.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 1, 4, 5).reshape(b, -1, c * p * p)
        return self.fc(self.encoder(self.embed(x) + self.pos).mean(1))


def transformer(input_shape=(1, 16, 16), num_classes=2):
    return PatchTransformer(input_shape, num_classes)


class FunctionalDropout(nn.Module):
    def forward(self, x):
        return nn.functional.dropout(x, 0.3, self.training) + (0.01 * torch.randn_like(x) if self.training else 0)


def functional_dropout_net(input_shape=(1, 16, 16), num_classes=2):
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), 32), nn.ReLU(), FunctionalDropout(),
                         nn.Linear(32, num_classes))


def _fit(network: str, seeds, digits, workers=None):
    configs = [RunConfig(seed=s, **_small(network, epochs=1, retrain_epochs=1, rounds=1, final_free=0.5))
               for s in seeds]
    pops = []
    if workers is None:
        pop = Population(configs, digits)
        pop.fit()
        return pop.params
    from sleepcl.engine.workers import fit_side_by_side, split_members
    pops = [Population(g, digits) for g in split_members(configs, workers)]
    fit_side_by_side(pops)
    return {n: torch.cat([p.params[n] for p in pops]) for n in pops[0].params}


@pytest.mark.parametrize("factory", ["dropout2d_net", "transformer", "functional_dropout_net"])
def test_random_layers_of_every_kind_give_one_record_per_config(digits16, factory):
    """Twice the same population gives the same weights bit for bit; a member alone is the same member as in a
    population, and as in groups side by side in threads (before: each run drew from torch's global generator)."""
    name = f"test_any_model:{factory}"
    torch.manual_seed(1)
    first = _fit(name, [0], digits16)
    torch.manual_seed(2)  # whatever the global generator holds
    again = _fit(name, [0], digits16)
    many = _fit(name, [1, 0, 2], digits16)
    side_by_side = _fit(name, [1, 0, 2], digits16, workers=2)
    for n in first:
        assert torch.equal(first[n], again[n]), n
        assert torch.equal(first[n][0], many[n][1]), n
        assert torch.equal(many[n], side_by_side[n]), n
    name = next(iter(many))
    assert not torch.equal(many[name][0], many[name][1])  # members draw different streams


class NumpyNoise(nn.Module):
    def forward(self, x):
        return x + torch.from_numpy(np.random.normal(size=x.shape).astype(np.float32)) if self.training else x


class AlwaysRandom(nn.Module):
    def forward(self, x):
        return nn.functional.dropout(x, 0.5, training=True)


def numpy_noise_net(input_shape):
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), 8), NumpyNoise(), nn.Linear(8, 2))


def random_in_eval_net(input_shape):
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), 8), AlwaysRandom(), nn.Linear(8, 2))


@pytest.mark.parametrize("factory, message", [
    ("numpy_noise_net", "draws from Python's or numpy's global random generator"),
    ("random_in_eval_net", "draws random numbers in evaluation mode"),
])
def test_randomness_sleepcl_cannot_give_a_member_is_refused_before_training(factory, message):
    with pytest.raises(ValueError, match=message):
        build_network(f"test_any_model:{factory}", (1, 16, 16), n_tasks=2)


# -- a member is its solo run, whatever the thread count ----------------------------------------------------

def layernorm_mlp(input_shape=(1, 16, 16), num_classes=2):
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), 64), nn.LayerNorm(64), nn.ReLU(),
                         nn.Linear(64, 64), nn.LayerNorm(64), nn.ReLU(), nn.Linear(64, num_classes))


def groupnorm_net(input_shape=(1, 16, 16), num_classes=2):
    return nn.Sequential(nn.Conv2d(input_shape[0], 16, 3, padding=1), nn.GroupNorm(4, 16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64, num_classes))


@pytest.mark.parametrize("factory", ["bn_net", "layernorm_mlp", "groupnorm_net"])
def test_a_member_with_norm_layers_is_its_solo_run_at_any_thread_count(digits16, factory):
    """Sums over the batch (batch statistics, the gradients of a norm layer's affine parameters) round differently
    with the number of threads that share them; a network with norm layers computes every member on one thread."""
    from sleepcl.threads import torch_threads

    configs = [RunConfig(seed=s, **_small(f"test_any_model:{factory}", epochs=1, retrain_epochs=1, rounds=1,
                                          final_free=0.5)) for s in (0, 1)]
    with torch_threads(2):
        solo = Population(configs[1:], digits16)
        solo.fit()
    with torch_threads(1):
        whole = Population(configs, digits16)
        whole.fit()
    for n in solo.params:
        assert torch.equal(solo.params[n][0], whole.params[n][1]), n


# -- every weight matrix is owned, and --explain says so before training ------------------------------------

class Tokens(nn.Module):
    """Pixels as 16 grey levels, each level a learnt vector: an nn.Embedding over an image."""

    def __init__(self, input_shape, num_classes, shared=()):
        super().__init__()
        self.embed = nn.Embedding(16, 12)
        self.mix = nn.Parameter(torch.randn(12, 12) / 12 ** 0.5)  # a plain nn.Parameter matrix
        self.fc = nn.Linear(12, num_classes)
        self.sleepcl_shared = list(shared)

    def forward(self, x):
        levels = (x.flatten(1) * 4 + 8).long().clamp(0, 15)
        return self.fc(torch.relu(self.embed(levels).mean(1) @ self.mix))


def embedding_net(input_shape=(1, 16, 16), num_classes=2):
    return Tokens(input_shape, num_classes)


def embedding_net_shared(input_shape=(1, 16, 16), num_classes=2):
    return Tokens(input_shape, num_classes, shared=["embed.*"])


def test_attention_embedding_and_plain_parameter_matrices_are_owned_and_pruned(digits16):
    net = build_network("test_any_model:transformer", (1, 16, 16), n_tasks=3, per_task_norm=True)
    assert {"encoder.layers.0.self_attn.in_proj_weight", "pos", "embed.weight"} <= set(net.prunable)
    assert not any("norm" in n or n.endswith("bias") for n in net.prunable)
    assert set(build_network("test_any_model:embedding_net", (1, 16, 16), 3).prunable) == {"embed.weight", "mix"}
    assert build_network("test_any_model:embedding_net_shared", (1, 16, 16), 3).prunable == ("mix",)
    pop = Population([RunConfig(seed=0, **_small("test_any_model:transformer", epochs=1, retrain_epochs=1,
                                                 rounds=1, final_free=0.6))], digits16)
    kept = {}

    def after(p: Population, day: int) -> None:
        if day == 0:
            kept.update({n: (o == 1, p.params[n].detach().clone()) for n, o in p.owner.items()})

    [r] = pop.fit(on_day_end=after)
    for name, (mask, before) in kept.items():  # task 1's part of every owned matrix stays bit-identical
        assert mask.any() and torch.equal(pop.params[name].detach()[mask], before[mask]), name
    assert abs(r.free_fraction_after_task[-1] - 0.6) < 1e-3
    assert float((pop.owner["encoder.layers.0.self_attn.in_proj_weight"] == 0).double().mean()) > 0.5


def test_a_shared_mark_that_matches_nothing_is_refused():
    with pytest.raises(ValueError, match="sleepcl_shared names 'embedding', which matches no parameter"):
        from sleepcl.models.module import ModuleNetwork
        ModuleNetwork(lambda: Tokens((1, 16, 16), 2, shared=["embedding"]), (1, 16, 16), 3, 2)


def test_explain_lists_every_parameter_and_its_role_before_any_training(no_training, capsys, monkeypatch):
    from sleepcl.cli import main

    monkeypatch.setenv("COLUMNS", "200")
    assert main(["run", "--benchmark", "mnist-5k", "--model", "test_any_model:transformer", "--explain"]) == 0
    out = capsys.readouterr().out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") >= 4}
    assert "owned, pruned, frozen" in rows["encoder.layers.0.self_attn.in_proj_weight"]
    assert "per task" in rows["encoder.layers.0.norm1.weight"]
    assert "shared, task 1" in rows["embed.bias"]
    assert "head" in rows["head.weight"]


# -- what the engine cannot take apart is refused naming the fix ---------------------------------------------

def log_softmax_net(input_shape=(1, 16, 16), num_classes=2):
    return nn.Sequential(nn.Flatten(), nn.Linear(256, 16), nn.ReLU(), nn.Linear(16, num_classes), nn.LogSoftmax(1))


class ClassifierFirst(nn.Module):
    """The classifier registered before the last hidden layer (its forward uses them in the other order)."""

    def __init__(self):
        super().__init__()
        self.classifier = nn.Linear(16, 2)
        self.hidden = nn.Linear(256, 16)

    def forward(self, x):
        return self.classifier(torch.relu(self.hidden(x.flatten(1))))


def classifier_first(input_shape=(1, 16, 16)):
    return ClassifierFirst()


def test_a_layer_after_the_classifier_is_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"computes something after its classifier 3 \(4 \(LogSoftmax\)\).*not needed"):
        build_network("test_any_model:log_softmax_net", (1, 16, 16), n_tasks=2)


def test_a_classifier_registered_first_is_refused_naming_head_and_works_with_it():
    with pytest.raises(ValueError, match="name it with --head LAYER"):
        build_network("test_any_model:classifier_first", (1, 16, 16), n_tasks=2)
    net = build_network("test_any_model:classifier_first", (1, 16, 16), n_tasks=2, head="classifier")
    assert net.prunable == ("hidden.weight",)


def test_grey_images_reach_a_users_conv_net_with_one_channel(tmp_path):
    from sleepcl.nightly import learn

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(64, 16, 16)).astype(np.uint8)  # (n, H, W): grey images without a channel axis
    y = np.arange(64) % 2
    x[y == 1, 4:8, 4:8] = 255
    np.savez(tmp_path / "grey.npz", x=x, y=y)
    r = learn(tmp_path / "m.st", "a", tmp_path / "grey.npz", network="test_any_model:bn_net", epochs=1,
              retrain_epochs=1, rounds=1, batch_size=16, final_free=0.5, threads=1)
    assert r["val_accuracy"] >= 0.5


def test_torchvision_beside_a_torch_it_was_not_built_for_is_imported_for_its_models(tmp_path):
    """torchvision from PyPI beside the CPU build of torch stops at `operator torchvision::nms does not exist`;
    a user's file that imports it is loaded all the same (the models need none of the operators)."""
    import importlib.util

    if importlib.util.find_spec("torchvision") is None:
        pytest.skip("torchvision is not installed")
    (tmp_path / "vision.py").write_text("import torchvision\n\ndef net(num_classes=2):\n"
                                        "    return torchvision.models.resnet18(num_classes=num_classes)\n")
    from sleepcl.models import load_factory

    assert callable(load_factory(f"{tmp_path / 'vision.py'}:net"))


def test_sleepcl_learn_recomputes_the_nights_batchnorm_statistics_for_the_pruned_network(tmp_path):
    """The saved running statistics of the night's task are the mean batch statistics of its training data through
    the weights the night ended with (before: an average gathered mostly before pruning)."""
    from sleepcl.nightly import NightlyModel, learn

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(96, 1, 16, 16)).astype(np.uint8)
    y = np.arange(96) % 2
    x[y == 1, :, 4:8, 4:8] = 255
    np.savez(tmp_path / "train.npz", x=x, y=y)
    np.savez(tmp_path / "val.npz", x=x[:32], y=y[:32])
    factory = "test_any_model:bn_net"
    learn(tmp_path / "m.st", "a", tmp_path / "train.npz", val_data=tmp_path / "val.npz", network=factory, epochs=1,
          retrain_epochs=2, rounds=2, batch_size=16, final_free=0.9, threads=1)
    model = NightlyModel.load(tmp_path / "m.st", factory)
    inputs = model.normalise(x)
    w, b = model.trunk["0.weight"], model.trunk["0.bias"]
    order = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(0))
    means = [nn.functional.conv2d(inputs[i], w, b, padding=1).mean((0, 2, 3)) for i in order.split(16)]
    assert torch.allclose(model.buffers["1.running_mean"][0], torch.stack(means).mean(0), atol=1e-5)
