"""Long task sequences: Permuted and Rotated benchmarks, class groups, the owner map's limit, and Split unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage
import torch
from conftest import easy_digits
from split_reference import CASES, REFERENCE, digests

from sleepcl.cli import main
from sleepcl.config import RunConfig
from sleepcl.data.datasets import FASHION_MNIST_SYSTEM_DIR
from sleepcl.data.split import (BENCHMARKS, _normalise, check_tasks, load_split_benchmark, make_split_benchmark,
                                make_transformed_benchmark, parse_benchmark)
from sleepcl.data.transforms import (GOLDEN_ANGLE, MAX_TASKS, parse_permutations, parse_rotations, task_angles,
                                     task_pixel_maps)
from sleepcl.engine import ownership
from sleepcl.runs.runner import BenchmarkCache

# --------------------------------------------------------------------------------------------- Split unchanged


@pytest.mark.parametrize("case", list(CASES))
def test_split_benchmarks_are_byte_identical_to_the_earlier_code(case: str) -> None:
    if case.startswith("fashion") and not FASHION_MNIST_SYSTEM_DIR.exists():
        pytest.skip("Fashion-MNIST's Debian package is not installed")
    expected = json.loads(REFERENCE.read_text())[case]
    assert digests(CASES[case]()) == expected


def test_split_access_is_plain_indexing() -> None:
    bench = make_split_benchmark(easy_digits(6), ((0, 1), (2, 3)))
    idx = torch.tensor([[0, 3, 5], [7, 1, 2]])
    assert torch.equal(bench.inputs(idx), bench.x[idx]) and torch.equal(bench.labels(idx), bench.y[idx])
    assert torch.equal(bench.tasks(idx), bench.task[idx])
    out = torch.empty(6 * 28 * 28)
    assert torch.equal(bench.inputs(idx, out=out), bench.x[idx]) and out.data_ptr() == bench.inputs(idx, out=out).data_ptr()
    assert bench.n_classes == (2, 2) and bench.head_size == 2 and bench.n_samples == len(bench.x)


# --------------------------------------------------------------------------------------------- class groups


def test_class_groups_of_any_size() -> None:
    raw = easy_digits(6)
    bench = make_split_benchmark(raw, ((7, 0, 2), (3, 4), (5, 6, 8, 9)), val_size=0)
    assert bench.n_classes == (3, 2, 4) and bench.head_size == 4
    assert bench.head_mask().tolist() == [[True, True, True, False], [True, True, False, False], [True] * 4]
    classes = np.concatenate([raw.train_y, raw.test_y])  # the kept images: the groups' classes, train part first
    kept = torch.from_numpy(classes[np.isin(classes, [c for g in bench.classes for c in g])])
    for t, group in enumerate(bench.classes):
        for part in (bench.train, bench.test):
            idx = part[t]
            cls = kept[idx]
            assert set(cls.tolist()) == set(group)
            expected = torch.tensor([group.index(int(c)) for c in cls])
            assert torch.equal(bench.labels(idx), expected) and bool((bench.tasks(idx) == t).all())
    assert sorted(int(c) for g in bench.classes for c in g) == [0, 2, 3, 4, 5, 6, 7, 8, 9]


def test_class_groups_from_the_loader_and_config() -> None:
    bench = load_split_benchmark("mnist-5k", class_groups="0,1,2|3,4,5|6,7,8,9")  # n_tasks: one per group
    assert bench.classes == ((0, 1, 2), (3, 4, 5), (6, 7, 8, 9)) and bench.head_size == 4
    assert sum(len(t) for t in bench.test) == 1000
    a = RunConfig(class_groups=" 0, 1,2|3,4,5 | 6,7,8,9", n_tasks=3).resolved()
    assert a.class_groups == "0,1,2|3,4,5|6,7,8,9"
    assert a.hash() == RunConfig(class_groups="0,1,2|3,4,5|6,7,8,9", n_tasks=3).hash() != RunConfig(n_tasks=3).hash()


# --------------------------------------------------------------------------------------------- permuted


def test_permutations_are_true_permutations_distinct_and_seeded_as_documented() -> None:
    taps, weights = task_pixel_maps("permuted", (1, 28, 28), 50, 3)
    assert weights is None and taps.shape == (50, 784, 1)
    for t in range(50):
        assert np.array_equal(np.sort(taps[t, :, 0]), np.arange(784))
        assert np.array_equal(taps[t, :, 0], np.random.default_rng([3, t]).permutation(784))
    assert len({taps[t].tobytes() for t in range(50)}) == 50
    assert np.array_equal(task_pixel_maps("permuted", (1, 28, 28), 5, 3)[0], taps[:5])  # T = 5 starts T = 50
    assert not np.array_equal(task_pixel_maps("permuted", (1, 28, 28), 5, 4)[0], taps[:5])
    listed, _ = task_pixel_maps("permuted", (1, 28, 28), 3, 0, "identity,7,9")
    assert np.array_equal(listed[0, :, 0], np.arange(784))
    assert np.array_equal(listed[1, :, 0], np.random.default_rng(7).permutation(784))


def permuted_reference(raw, perm: np.ndarray, mean, std) -> torch.Tensor:
    """The documented inputs of a permuted task: the raw images (train part first), pixels permuted, normalised."""
    images = np.concatenate([raw.train_x, raw.test_x])
    c = images.shape[1]
    permuted = images.reshape(len(images), c, -1)[:, :, perm].reshape(images.shape)
    return _normalise(permuted, np.asarray(mean), np.asarray(std))


def test_a_permuted_task_sees_the_permuted_images_bit_for_bit() -> None:
    raw = easy_digits(12)
    bench = make_transformed_benchmark(raw, "permuted", 7, seed=5)
    n = len(raw.train_y) + len(raw.test_y)
    assert bench.name == "permuted-easy" and bench.n_samples == 7 * n and bench.head_size == 10
    labels = torch.from_numpy(np.concatenate([raw.train_y, raw.test_y]))
    for t in (0, 3, 6):
        expected = permuted_reference(raw, np.random.default_rng([5, t]).permutation(784), bench.mean, bench.std)
        for part in (bench.train, bench.val, bench.test):
            idx = part[t]
            base = idx - t * n
            assert torch.equal(bench.inputs(idx), expected[base])
            assert torch.equal(bench.inputs(idx, task=t), expected[base])
            assert torch.equal(bench.labels(idx), labels[base]) and bool((bench.tasks(idx) == t).all())
    out = torch.empty(4 * 784)
    idx = bench.train[2][:4]
    assert torch.equal(bench.inputs(idx, task=2, out=out), bench.inputs(idx)) and out.abs().sum() > 0


def test_a_whole_task_drawn_at_once() -> None:
    for transform in ("permuted", "rotated"):
        bench = make_transformed_benchmark(easy_digits(6), transform, 3)
        n = len(bench.x)
        whole = bench.task_inputs(2)
        assert whole.shape == (n, 1, 28, 28) and torch.equal(whole[bench.test[0]], bench.inputs(bench.test[2]))
    split = make_split_benchmark(easy_digits(6), ((0, 1),))
    assert split.task_inputs(0) is split.x


def test_tasks_share_one_split_and_index_space_layout() -> None:
    raw = easy_digits(12)
    bench = make_transformed_benchmark(raw, "permuted", 4)
    n = len(bench.x)
    for t in range(4):
        for part in (bench.train, bench.val, bench.test):
            assert torch.equal(part[t], part[0] + t * n)
        assert bench.tasks(bench.train[t]).unique().tolist() == [t]
    every = torch.cat([bench.train[0], bench.val[0], bench.test[0]])
    assert torch.equal(every.sort().values, torch.arange(n))  # disjoint and covering
    assert len(bench.test[0]) == len(raw.test_y) and len(bench.val[0]) == round(0.1 * len(raw.train_y))
    assert bench.train[-1].equal(bench.train[3]) and len(bench.train[1:3]) == 2
    with pytest.raises(IndexError):
        bench.train[4]


def test_a_batch_of_mixed_tasks_equals_each_task_alone() -> None:
    for transform in ("permuted", "rotated"):
        bench = make_transformed_benchmark(easy_digits(6), transform, 6)
        idx = torch.stack([bench.train[t][:5] for t in range(6)], 1)  # (5, 6): every row mixes the tasks
        mixed = bench.inputs(idx)
        assert mixed.shape == (5, 6, 1, 28, 28)
        for t in range(6):
            assert torch.equal(mixed[:, t], bench.inputs(idx[:, t], task=t))


def test_memory_does_not_grow_with_the_number_of_tasks() -> None:
    raw = easy_digits(12)
    one, fifty = (make_transformed_benchmark(raw, "permuted", t) for t in (1, 50))
    assert fifty.x.data_ptr() != one.x.data_ptr() and fifty.x.nbytes == one.x.nbytes  # the images once
    assert fifty.x.nbytes == len(fifty.x) * 784 * 4 and fifty.train.base.nbytes == one.train.base.nbytes  # type: ignore[attr-defined]
    assert fifty.maps is not None and fifty.maps.taps.nbytes == 50 * 784 * 8  # 8 bytes per pixel per task


def test_permuted_mnist_5k_with_50_tasks() -> None:
    bench = load_split_benchmark("permuted-mnist-5k", n_tasks=50)
    assert bench.n_tasks == 50 and bench.input_shape == (1, 28, 28) and len(bench.x) == 5000
    assert [len(bench.train[t]) for t in (0, 49)] == [3600, 3600] and len(bench.test[49]) == 1000
    raw_order = load_split_benchmark("mnist-5k", class_groups="0,1,2,3,4,5,6,7,8,9", val_size=0.1)
    # The same images, split the same way, as a single 10-class Split task: task 0 is it, permuted.
    perm = np.random.default_rng([0, 0]).permutation(784)
    idx = raw_order.test[0]
    expected = raw_order.x[idx].reshape(-1, 1, 784)[:, :, perm].reshape(-1, 1, 28, 28)
    assert torch.equal(bench.inputs(bench.test[0]), expected)
    assert torch.equal(bench.test[0], idx) and torch.equal(bench.labels(bench.test[0]), raw_order.y[idx])


# --------------------------------------------------------------------------------------------- rotated


def rotated_reference(raw, angle: float) -> np.ndarray:
    images = np.concatenate([raw.train_x, raw.test_x]).astype(np.float64)
    return scipy.ndimage.rotate(images, angle, axes=(2, 3), reshape=False, order=1, mode="grid-constant", cval=0)


@pytest.mark.parametrize("angle", [0.0, 90.0, 180.0, 33.3, 201.7, -45.0])
def test_a_rotated_task_sees_the_rotated_images(angle: float) -> None:
    raw = easy_digits(6)
    bench = make_transformed_benchmark(raw, "rotated", 2, spec=f"{angle + 10},{angle}")
    mean, std = bench.mean[0], bench.std[0]
    got = bench.inputs(bench.test[1]).double() * std + mean  # back to [0, 1]
    expected = rotated_reference(raw, angle)[bench.test[0].numpy()] / 255
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=2e-6)
    if angle % 90 == 0:  # a quarter turn moves pixels without interpolating: bit for bit as numpy's rot90
        images = np.rot90(np.concatenate([raw.train_x, raw.test_x]), k=int(angle // 90) % 4, axes=(2, 3))
        exact = _normalise(np.ascontiguousarray(images), np.asarray(bench.mean), np.asarray(bench.std))
        assert torch.equal(bench.inputs(bench.test[1]), exact[bench.test[0]])


def test_rotation_angles_are_seeded_golden_steps_independent_of_t() -> None:
    angles = task_angles(50, seed=2)
    offset = 360 * np.random.default_rng([2]).random()
    np.testing.assert_allclose(angles, [(offset + t * GOLDEN_ANGLE) % 360 for t in range(50)])
    assert task_angles(5, seed=2) == angles[:5] and task_angles(5, seed=3) != angles[:5]
    taps, weights = task_pixel_maps("rotated", (1, 28, 28), MAX_TASKS)  # all 255 tasks distinct (checked inside)
    assert taps.shape == (255, 784, 4) and weights is not None and weights.shape == (255, 784, 4)
    total = weights.sum(-1)  # bilinear: 1 where all 4 taps are inside, less where some read the black outside
    assert (total <= 1 + 1e-6).all() and np.allclose(total[:, 14 * 28 + 14], 1, atol=1e-6)


# --------------------------------------------------------------------------------------------- limits and messages


def test_the_limit_is_the_owner_maps() -> None:
    owner = {"w": torch.zeros(1, 3, dtype=torch.uint8)}
    ownership.assign(owner, MAX_TASKS, only_free=True)  # the last task that fits
    assert int(owner["w"].max()) == MAX_TASKS == torch.iinfo(torch.uint8).max
    with pytest.raises(ValueError):
        ownership.assign(owner, MAX_TASKS + 1, only_free=True)
    RunConfig(benchmark="permuted-mnist-5k", n_tasks=MAX_TASKS).resolved()
    RunConfig(benchmark="rotated-fashion-mnist", n_tasks=MAX_TASKS).resolved()


@pytest.mark.parametrize("fields, message", [
    ({"benchmark": "permuted-mnist-5k", "n_tasks": 256}, "at most 255 tasks fit"),
    ({"benchmark": "rotated-fashion-mnist", "n_tasks": 1000}, "owner is one uint8"),
    ({"benchmark": "permuted-mnist-5k", "n_tasks": 0}, "outside 1..255"),
    ({"benchmark": "mnist-5k", "n_tasks": 6}, "use permuted-mnist-5k or rotated-mnist-5k"),
    ({"benchmark": "permuted-mnist-5k", "n_tasks": 3, "permutations": "4,8,4"}, "tasks 1 and 3 the same seed 4"),
    ({"benchmark": "permuted-mnist-5k", "n_tasks": 3, "permutations": "identity,1,identity"},
     "tasks 1 and 3 the identity permutation"),
    ({"benchmark": "permuted-mnist-5k", "n_tasks": 4, "permutations": "1-3,2"}, "tasks 2 and 4 the same seed 2"),
    ({"benchmark": "rotated-mnist-5k", "n_tasks": 3, "rotations": "0,90,360"},
     "tasks 1 and 3 (0 and 360 degrees) are the same rotation modulo 360"),
    ({"benchmark": "rotated-mnist-5k", "n_tasks": 2, "rotations": "-90,270"}, "the same rotation modulo 360"),
    ({"benchmark": "rotated-mnist-5k", "n_tasks": 2, "rotations": "45,45"}, "tasks 1 and 2"),
    ({"benchmark": "rotated-mnist-5k", "n_tasks": 3, "rotations": "0,45"}, "lists 2 tasks but 3 are asked for"),
    ({"benchmark": "rotated-mnist-5k", "rotations": "0,nan"}, "finite"),
    ({"benchmark": "permuted-mnist-5k", "permutations": "1,-2"}, "a seed >= 0"),
    ({"benchmark": "mnist-5k", "rotations": "0,90"}, "rotated-* benchmarks only"),
    ({"benchmark": "rotated-mnist-5k", "n_tasks": 2, "permutations": "1,2"}, "permuted-* benchmarks only"),
    ({"benchmark": "mnist-5k", "transform_seed": 1}, "permuted-* and rotated-* benchmarks only"),
    ({"benchmark": "rotated-mnist-5k", "n_tasks": 2, "rotations": "0,9", "transform_seed": 1}, "no effect"),
    ({"benchmark": "permuted-mnist-5k", "transform_seed": -1}, "integer >= 0"),
    ({"benchmark": "permuted-mnist-5k", "class_order_seed": 1}, "--class-order-seed"),
    ({"benchmark": "mnist-5k", "class_groups": "0,1|2,3", "n_tasks": 5}, "make 2 tasks but n_tasks"),
    ({"benchmark": "mnist-5k", "class_groups": "0,1|2,3", "n_tasks": 2, "class_order_seed": 0}, "drop"),
    ({"benchmark": "mnist-5k", "class_groups": "0,1|1,2", "n_tasks": 2}, "disjoint"),
    ({"benchmark": "mnist-5k", "class_groups": "0|1,2", "n_tasks": 2}, "at least 2 classes"),
    ({"benchmark": "mnist-5k", "class_groups": "0,1,10", "n_tasks": 1}, "in 0..9"),
    ({"benchmark": "mnist-5k", "class_groups": "0,1;2,3", "n_tasks": 1}, "separated by |"),
    ({"benchmark": "permuted-mnist-10k"}, "unknown benchmark"),
])
def test_bad_task_sequences_are_refused_by_the_config(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
        RunConfig(**fields).resolved()


def test_two_tasks_with_the_same_map_are_refused_whatever_made_them() -> None:
    # On 2 pixels there are 2 permutations: 3 seeded tasks must repeat one, and the maps themselves are compared.
    seeded = r"tasks \d and \d \(default_rng\(\[0, \d\]\) and default_rng\(\[0, \d\]\)\) transform the images identically"
    with pytest.raises(ValueError, match=seeded):
        task_pixel_maps("permuted", (1, 1, 2), 3)
    with pytest.raises(ValueError, match="tasks 1 and 2 .*0 degrees and 45 degrees"):  # a 1-pixel image turns into itself
        task_pixel_maps("rotated", (1, 1, 1), 2, 0, "0,45")
    assert parse_permutations("identity,0-2,9") == (None, 0, 1, 2, 9)
    assert parse_rotations("0,-45.5,720.25") == (0.0, -45.5, 720.25)


def test_the_loader_refuses_before_reading_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at most 255"):
        load_split_benchmark("permuted-mnist", tmp_path / "nowhere", n_tasks=300)
    with pytest.raises(ValueError, match="same rotation"):
        load_split_benchmark("rotated-mnist", tmp_path / "nowhere", rotations="10,370")
    check_tasks("permuted-cifar10", 255)
    assert parse_benchmark("rotated-fashion-mnist") == ("rotated", "fashion-mnist")
    assert len(BENCHMARKS) == 15 and parse_benchmark("permuted-fashion-mnist-32") == ("permuted", "fashion-mnist-32")


def test_config_identity_of_the_new_fields() -> None:
    base = RunConfig(benchmark="permuted-mnist-5k", n_tasks=50)
    assert "transform_seed" not in base.identity() and "rotations" not in base.identity()
    assert base.hash() != RunConfig(benchmark="permuted-mnist-5k", n_tasks=50, transform_seed=1).hash()
    a = RunConfig(benchmark="rotated-mnist-5k", n_tasks=3, rotations="0, 45.0,90").resolved()
    assert a.rotations == "0,45,90"
    assert a.hash() == RunConfig(benchmark="rotated-mnist-5k", n_tasks=3, rotations="0,45,90").hash()
    b = RunConfig(benchmark="permuted-mnist-5k", n_tasks=4, permutations="Identity,1-3").resolved()
    assert b.permutations == "identity,1,2,3"
    assert RunConfig(benchmark="rotated-cifar10").resolved().network == "vgg"


# --------------------------------------------------------------------------------------------- command line


@pytest.mark.parametrize("args, message", [
    (["--benchmark", "permuted-mnist-5k", "--tasks", "256"], "at most 255 tasks"),
    (["--benchmark", "permuted-mnist-5k", "--permutations", "identity,3,identity"], "identity permutation"),
    (["--benchmark", "rotated-mnist-5k", "--rotations", "0,90,360"], "same rotation modulo 360"),
    (["--benchmark", "mnist-5k", "--class-groups", "0,1,2|3,4", "--tasks", "3"], "make 2 tasks"),
])
def test_bad_sequences_are_refused_on_the_command_line(no_training, tmp_path, capsys, args, message):
    assert main(["run", "--quiet", "--store", str(tmp_path / "s.sqlite"), *args]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("args, n_tasks, name", [
    (["--tasks", "50", "--benchmark", "permuted-mnist-5k"], 50, "permuted-mnist-5k"),
    (["--benchmark", "permuted-mnist-5k", "--permutations", "identity,1-9"], 10, "permuted-mnist-5k"),
    (["--benchmark", "rotated-mnist-5k", "--rotations", "0,45,90"], 3, "rotated-mnist-5k"),
    (["--benchmark", "mnist-5k", "--class-groups", "0,1,2|3,4,5|6,7,8,9"], 3, "mnist-5k"),
    (["--benchmark", "mnist-5k"], 5, "mnist-5k"),
])
def test_the_command_line_builds_the_sequence(args, n_tasks, name) -> None:
    import argparse

    from sleepcl.cli.run import add_run_parser, run_configs_from_args

    parser = argparse.ArgumentParser()
    add_run_parser(parser.add_subparsers())
    (config,) = run_configs_from_args(parser.parse_args(["run", *args]))
    assert config.n_tasks == n_tasks
    bench = BenchmarkCache(None, False).get(config)
    assert bench.n_tasks == n_tasks and bench.name == name
