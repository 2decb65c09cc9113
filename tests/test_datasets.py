"""Tests of sleepcl.data.datasets (reading the standard file formats) and sleepcl.data.split (Split benchmarks).

The tests write small files in the real formats themselves (IDX plain and gzipped, CIFAR-10 python
pickles as a folder and as a tar.gz) and check that what is loaded equals what was written.  Nothing
is downloaded: the download path is exercised with file:// URLs.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from sleepcl.data import datasets
from sleepcl.data.datasets import (
    DataCorruptError,
    DataNotFoundError,
    RawDataset,
    check_available,
    download_file,
    load_raw,
    read_idx,
    stratified_holdout,
)
from sleepcl.data.split import BENCHMARKS, SplitBenchmark, class_pairs, load_split_benchmark, make_split_benchmark

IDX_NAMES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
IDX_TYPE_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
                  np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}


# --------------------------------------------------------------------------------------------- file writers


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file's content, written independently of the reader: magic 0x0000TTDD, dims, big-endian data."""
    code = IDX_TYPE_CODES[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    data = idx_bytes(array)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def tagged_images(labels: np.ndarray, part: int, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Random uint8 images whose first pixels encode (class, index, part), so a sample can be traced."""
    n = len(labels)
    x = rng.integers(0, 256, size=(n, int(np.prod(shape))), dtype=np.uint8)
    x[:, 0] = labels
    x[:, 1] = np.arange(n) % 256
    x[:, 2] = np.arange(n) // 256
    x[:, 3] = part
    return x.reshape((n, *shape))


def fake_mnist(n_train: int = 200, n_test: int = 50, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    train_y = (np.arange(n_train) % 10).astype(np.uint8)
    test_y = (np.arange(n_test) % 10).astype(np.uint8)
    rng.shuffle(train_y)
    return {
        "train_x": tagged_images(train_y, 0, (28, 28), rng),
        "train_y": train_y,
        "test_x": tagged_images(test_y, 1, (28, 28), rng),
        "test_y": test_y,
    }


def write_mnist(folder: Path, arrays: dict[str, np.ndarray], gz: bool = False) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return {k: write_idx(folder / IDX_NAMES[k], a, gz) for k, a in arrays.items()}


def fake_cifar(n_per_batch: int = 30, seed: int = 0) -> dict[str, tuple[np.ndarray, list[int]]]:
    """Six batches as in the python version: data uint8 (n, 3072) channel-major, labels a list of ints."""
    rng = np.random.default_rng(seed)
    out = {}
    for i, name in enumerate([f"data_batch_{j}" for j in range(1, 6)] + ["test_batch"]):
        labels = rng.integers(0, 10, n_per_batch)
        data = tagged_images(labels, i, (3072,), rng)
        out[name] = (data, [int(v) for v in labels])
    return out


def cifar_pickle(data: np.ndarray, labels: list[int], protocol: int = 2) -> bytes:
    batch = {b"batch_label": b"testing batch", b"labels": labels, b"data": data,
             b"filenames": [b"f%d.png" % i for i in range(len(labels))]}
    return pickle.dumps(batch, protocol=protocol)


def write_cifar_folder(parent: Path, batches: dict[str, tuple[np.ndarray, list[int]]]) -> Path:
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, (data, labels) in batches.items():
        (folder / name).write_bytes(cifar_pickle(data, labels))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"airplane"]}))
    return folder


def write_cifar_tar(path: Path, batches: dict[str, tuple[np.ndarray, list[int]]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, (data, labels) in batches.items():
            payload = cifar_pickle(data, labels, protocol=pickle.HIGHEST_PROTOCOL)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def untag(bench: SplitBenchmark) -> np.ndarray:
    """Recover the uint8 pixels from the normalised x (to trace samples back to the files)."""
    c = bench.x.shape[1]
    mean = torch.tensor(bench.mean).view(1, c, *([1] * (bench.x.ndim - 2)))
    std = torch.tensor(bench.std).view(1, c, *([1] * (bench.x.ndim - 2)))
    return torch.round((bench.x * std + mean) * 255).to(torch.int64).numpy()


# --------------------------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, np.float64])
def test_read_idx_roundtrip(tmp_path: Path, gz: bool, dtype: type) -> None:
    array = (np.arange(2 * 3 * 5) * 37 - 100).reshape(2, 3, 5).astype(dtype)
    path = write_idx(tmp_path / "a-idx3", array, gz)
    got = read_idx(path)
    assert got.shape == (2, 3, 5) and got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, array)


def test_idx_magic_numbers_are_the_standard_ones(tmp_path: Path) -> None:
    paths = write_mnist(tmp_path, fake_mnist())
    assert paths["train_x"].read_bytes()[:4] == (0x00000803).to_bytes(4, "big")
    assert paths["train_y"].read_bytes()[:4] == (0x00000801).to_bytes(4, "big")


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_pixels_and_labels_equal_the_files(tmp_path: Path, gz: bool) -> None:
    arrays = fake_mnist()
    write_mnist(tmp_path, arrays, gz)
    raw = load_raw("mnist", tmp_path)
    assert raw.image_shape == (1, 28, 28)
    assert raw.train_x.dtype == np.uint8 and raw.train_y.dtype == np.int64
    np.testing.assert_array_equal(raw.train_x[:, 0], arrays["train_x"])
    np.testing.assert_array_equal(raw.train_y, arrays["train_y"])
    np.testing.assert_array_equal(raw.test_x[:, 0], arrays["test_x"])
    np.testing.assert_array_equal(raw.test_y, arrays["test_y"])
    check_available("mnist", tmp_path)


@pytest.mark.parametrize("name,sub", [("mnist", "MNIST/raw"), ("fashion-mnist", "FashionMNIST/raw")])
def test_torchvision_layout_is_accepted(tmp_path: Path, name: str, sub: str) -> None:
    arrays = fake_mnist()
    write_mnist(tmp_path / sub, arrays, gz=True)
    raw = load_raw(name, tmp_path)
    np.testing.assert_array_equal(raw.test_y, arrays["test_y"])
    check_available(name, tmp_path)


def test_missing_folder_names_folder_and_files(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    for call in (lambda: load_raw("mnist", missing), lambda: check_available("mnist", missing)):
        with pytest.raises(DataNotFoundError) as err:
            call()
        message = str(err.value)
        assert isinstance(err.value, FileNotFoundError)
        assert str(missing) in message
        for stem in IDX_NAMES.values():
            assert stem in message
        assert "--data-dir" in message and "--download" in message


def test_fashion_missing_message_mentions_the_debian_package(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_raw("fashion-mnist", tmp_path)


def test_partial_folder_names_the_missing_files(tmp_path: Path) -> None:
    paths = write_mnist(tmp_path, fake_mnist())
    paths["test_y"].unlink()
    with pytest.raises(DataNotFoundError, match="t10k-labels-idx1-ubyte") as err:
        load_raw("mnist", tmp_path)
    assert "train-images" not in str(err.value).split("missing")[1].split(".")[0]


def corrupt_bad_magic(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[2] = 0x42  # no such type code
    path.write_bytes(bytes(data))


def corrupt_truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def corrupt_dims(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[4:8] = (10**6).to_bytes(4, "big")  # claims a million images
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("corrupt", [corrupt_bad_magic, corrupt_truncate, corrupt_dims])
def test_corrupt_idx_raises_data_corrupt_error(tmp_path: Path, corrupt) -> None:  # noqa: ANN001
    paths = write_mnist(tmp_path, fake_mnist())
    corrupt(paths["train_x"])
    for call in (lambda: load_raw("mnist", tmp_path), lambda: check_available("mnist", tmp_path)):
        with pytest.raises(DataCorruptError, match="train-images-idx3-ubyte"):
            call()


def test_truncated_gzip_raises_data_corrupt_error(tmp_path: Path) -> None:
    paths = write_mnist(tmp_path, fake_mnist(), gz=True)
    corrupt_truncate(paths["train_x"])
    for call in (lambda: load_raw("mnist", tmp_path), lambda: check_available("mnist", tmp_path)):
        with pytest.raises(DataCorruptError, match="train-images-idx3-ubyte.gz"):
            call()


def test_not_gzip_at_all_raises_data_corrupt_error(tmp_path: Path) -> None:
    paths = write_mnist(tmp_path, fake_mnist(), gz=True)
    paths["test_y"].write_bytes(b"<html>404 not found</html>" * 10)
    with pytest.raises(DataCorruptError, match="t10k-labels"):
        load_raw("mnist", tmp_path)


def test_image_label_count_mismatch_and_bad_labels(tmp_path: Path) -> None:
    arrays = fake_mnist()
    write_mnist(tmp_path, {**arrays, "test_y": arrays["test_y"][:-1]})
    with pytest.raises(DataCorruptError, match="labels"):
        load_raw("mnist", tmp_path)
    with pytest.raises(DataCorruptError):
        check_available("mnist", tmp_path)
    write_mnist(tmp_path, {**arrays, "test_y": np.full_like(arrays["test_y"], 12)})
    with pytest.raises(DataCorruptError, match="0..9"):
        load_raw("mnist", tmp_path)


# --------------------------------------------------------------------------------------------- CIFAR-10


def assert_cifar_equal(raw: RawDataset, batches: dict[str, tuple[np.ndarray, list[int]]]) -> None:
    train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
    assert raw.image_shape == (3, 32, 32)
    np.testing.assert_array_equal(raw.train_x.reshape(len(raw.train_x), -1), np.concatenate([d for d, _ in train]))
    np.testing.assert_array_equal(raw.train_y, np.concatenate([l for _, l in train]))
    np.testing.assert_array_equal(raw.test_x.reshape(len(raw.test_x), -1), batches["test_batch"][0])
    np.testing.assert_array_equal(raw.test_y, batches["test_batch"][1])
    # channel-first: the first 1024 values of a row are the red plane
    np.testing.assert_array_equal(raw.test_x[:, 0].reshape(len(raw.test_x), -1), batches["test_batch"][0][:, :1024])


def test_cifar_folder_itself_and_its_parent(tmp_path: Path) -> None:
    batches = fake_cifar()
    folder = write_cifar_folder(tmp_path, batches)
    for where in (tmp_path, folder):
        assert_cifar_equal(load_raw("cifar10", where), batches)
        check_available("cifar10", where)


def test_cifar_tar_archive(tmp_path: Path) -> None:
    batches = fake_cifar()
    archive = write_cifar_tar(tmp_path / "cifar-10-python.tar.gz", batches)
    for where in (tmp_path, archive):
        assert_cifar_equal(load_raw("cifar10", where), batches)
        check_available("cifar10", where)
    assert not (tmp_path / "cifar-10-batches-py").exists()  # read in place, not extracted


def test_cifar_missing_batch_and_missing_folder(tmp_path: Path) -> None:
    folder = write_cifar_folder(tmp_path, fake_cifar())
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataNotFoundError, match="data_batch_3"):
        load_raw("cifar10", tmp_path)
    with pytest.raises(DataNotFoundError, match="cifar-10-python.tar.gz") as err:
        check_available("cifar10", tmp_path / "empty")
    assert str(tmp_path / "empty") in str(err.value)


def test_cifar_truncated_tar_and_foreign_pickle(tmp_path: Path) -> None:
    archive = write_cifar_tar(tmp_path / "cifar-10-python.tar.gz", fake_cifar())
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataCorruptError, match="cifar-10-python.tar.gz"):
        load_raw("cifar10", tmp_path)

    evil = tmp_path / "evil"
    folder = write_cifar_folder(evil, fake_cifar())
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": os.getcwd, b"labels": []}))
    with pytest.raises(DataCorruptError, match="not allowed"):
        load_raw("cifar10", evil)


# --------------------------------------------------------------------------------------------- real data


def test_mnist_5k_is_5000_real_digits() -> None:
    raw = load_raw("mnist-5k", "/ignored")
    assert raw.image_shape == (1, 28, 28)
    assert len(raw.train_y) == 4000 and len(raw.test_y) == 1000
    np.testing.assert_array_equal(np.bincount(raw.train_y, minlength=10), [400] * 10)
    np.testing.assert_array_equal(np.bincount(raw.test_y, minlength=10), [100] * 10)
    assert raw.train_x.max() == 255 and raw.train_x.min() == 0
    # real digits: ink in the centre, blank borders
    assert raw.train_x[:, 0, 10:18, 10:18].mean() > 5 * raw.train_x[:, 0, :2, :].mean() + 1
    again = load_raw("mnist-5k")
    np.testing.assert_array_equal(again.test_x, raw.test_x)  # deterministic split
    check_available("mnist-5k")


def test_fashion_mnist_system_package() -> None:
    folder = datasets.FASHION_MNIST_SYSTEM_DIR
    if not folder.is_dir():
        pytest.skip("Debian package dataset-fashion-mnist not installed")
    check_available("fashion-mnist")
    raw = load_raw("fashion-mnist")
    assert raw.train_x.shape == (60000, 1, 28, 28) and raw.test_x.shape == (10000, 1, 28, 28)
    np.testing.assert_array_equal(np.bincount(raw.train_y), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(raw.test_y), [1000] * 10)
    bench = load_split_benchmark("fashion-mnist")
    assert [len(t) + len(v) for t, v in zip(bench.train, bench.val)] == [12000] * 5
    assert [len(t) for t in bench.test] == [2000] * 5


def test_padded_variant_reads_its_base_and_pads_with_black(tmp_path: Path) -> None:
    arrays = fake_mnist(n_train=40, n_test=20)
    write_mnist(tmp_path, arrays, gz=True)
    check_available("fashion-mnist-32", tmp_path)
    raw = load_raw("fashion-mnist-32", tmp_path)
    assert raw.name == "fashion-mnist-32" and raw.image_shape == (1, 32, 32) and "zero-padded by 2 px" in raw.source
    for part in ("train", "test"):
        x = getattr(raw, f"{part}_x")
        np.testing.assert_array_equal(x[:, 0, 2:30, 2:30], arrays[f"{part}_x"])  # the image, unchanged, centred
        inner = np.zeros((32, 32), dtype=bool)
        inner[2:30, 2:30] = True
        assert (x[:, :, ~inner] == 0).all()  # a black border of 2 pixels
        np.testing.assert_array_equal(getattr(raw, f"{part}_y"), arrays[f"{part}_y"])
    bench = load_split_benchmark("fashion-mnist-32", tmp_path)
    assert bench.input_shape == (1, 32, 32) and bench.name == "fashion-mnist-32"
    assert datasets.default_data_dir("fashion-mnist-32") == datasets.default_data_dir("fashion-mnist")
    with pytest.raises(DataNotFoundError, match="fashion-mnist"):
        check_available("fashion-mnist-32", tmp_path / "empty")


def test_padded_fashion_mnist_from_the_system_package() -> None:
    if not datasets.FASHION_MNIST_SYSTEM_DIR.is_dir():
        pytest.skip("Debian package dataset-fashion-mnist not installed")
    raw = load_raw("fashion-mnist-32")
    assert raw.train_x.shape == (60000, 1, 32, 32) and raw.test_x.shape == (10000, 1, 32, 32)


def test_train_size_keeps_a_stratified_nested_subsample_and_the_same_val_and_test(mnist_dir: Path) -> None:
    full = load_split_benchmark("mnist", mnist_dir, val_size=0.1)
    small = load_split_benchmark("mnist", mnist_dir, val_size=0.1, train_size=20)
    smaller = load_split_benchmark("mnist", mnist_dir, val_size=0.1, train_size=10)
    again = load_split_benchmark("mnist", mnist_dir, val_size=0.1, train_size=20)
    pixels = untag(full)
    for t in range(full.n_tasks):
        assert len(small.train[t]) == 20 and len(smaller.train[t]) == 10
        assert torch.equal(small.val[t], full.val[t]) and torch.equal(small.test[t], full.test[t])
        assert set(small.train[t].tolist()) <= set(full.train[t].tolist())
        assert set(smaller.train[t].tolist()) <= set(small.train[t].tolist())
        assert torch.equal(small.train[t], again.train[t])  # deterministic
        np.testing.assert_array_equal(np.bincount(small.y[small.train[t]].numpy(), minlength=2), [10, 10])
    # the samples kept are the same images: x is built from the same files in the same order
    np.testing.assert_array_equal(untag(small)[torch.cat(small.val).numpy()], pixels[torch.cat(full.val).numpy()])
    with pytest.raises(ValueError, match="train_size=100 exceeds the 72 samples of task 0"):
        load_split_benchmark("mnist", mnist_dir, val_size=0.1, train_size=100)


def test_test_size_keeps_a_stratified_part_of_each_test_set(mnist_dir: Path) -> None:
    full = load_split_benchmark("mnist", mnist_dir)
    small = load_split_benchmark("mnist", mnist_dir, test_size=10)
    for t in range(full.n_tasks):
        assert len(small.test[t]) == 10 and set(small.test[t].tolist()) <= set(full.test[t].tolist())
        np.testing.assert_array_equal(np.bincount(small.y[small.test[t]].numpy(), minlength=2), [5, 5])
        assert torch.equal(small.train[t], full.train[t]) and torch.equal(small.val[t], full.val[t])
    both = load_split_benchmark("mnist", mnist_dir, test_size=10, train_size=20)
    assert all(torch.equal(a, b) for a, b in zip(both.test, small.test))  # independent of train_size
    with pytest.raises(ValueError, match="test_size=21 exceeds the 20 samples"):
        load_split_benchmark("mnist", mnist_dir, test_size=21)


# --------------------------------------------------------------------------------------------- download


def test_download_file_verifies_md5_and_writes_atomically(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(5000))
    md5 = hashlib.md5(src.read_bytes()).hexdigest()
    dest = tmp_path / "out" / "file.bin"
    download_file(src.as_uri(), dest, md5, chunk_size=1000)
    assert dest.read_bytes() == src.read_bytes()

    bad = tmp_path / "out" / "bad.bin"
    with pytest.raises(DataCorruptError, match="MD5"):
        download_file(src.as_uri(), bad, "0" * 32)
    assert not bad.exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["file.bin"]  # no temp file left


def test_download_then_load_via_file_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    arrays = fake_mnist()
    paths = write_mnist(mirror, arrays, gz=True)
    files = tuple((p.name, hashlib.md5(p.read_bytes()).hexdigest()) for p in paths.values())
    dead = (tmp_path / "dead").as_uri() + "/"
    monkeypatch.setitem(datasets.SOURCES, "mnist", datasets.Source((dead, mirror.as_uri() + "/"), files))
    monkeypatch.setenv("SLEEPCL_DATA", str(tmp_path / "cache"))

    check_available("mnist", None, download=True)  # nothing there yet, but the cache is writable
    raw = load_raw("mnist", None, download=True)
    np.testing.assert_array_equal(raw.train_y, arrays["train_y"])
    assert (tmp_path / "cache" / "mnist" / "train-images-idx3-ubyte.gz").is_file()
    check_available("mnist")  # now present


def test_download_md5_mismatch_and_no_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    paths = write_mnist(mirror, fake_mnist(), gz=True)
    files = tuple((p.name, "0" * 32) for p in paths.values())
    monkeypatch.setitem(datasets.SOURCES, "mnist", datasets.Source((mirror.as_uri() + "/",), files))
    with pytest.raises(DataCorruptError, match="MD5"):
        load_raw("mnist", tmp_path / "target", download=True)
    assert not any((tmp_path / "target").iterdir())

    monkeypatch.setitem(datasets.SOURCES, "mnist", datasets.Source(((tmp_path / "dead").as_uri() + "/",), files))
    with pytest.raises(DataNotFoundError, match="could not download"):
        load_raw("mnist", tmp_path / "target", download=True)


def test_default_data_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SLEEPCL_DATA", str(tmp_path))
    assert datasets.default_data_dir("cifar10") == tmp_path / "cifar10"
    monkeypatch.delenv("SLEEPCL_DATA")
    assert datasets.default_data_dir("mnist") == Path.home() / ".cache" / "sleepcl" / "mnist"
    with pytest.raises(ValueError, match="mnist-5k"):
        datasets.default_data_dir("imagenet")


def test_known_torchvision_checksums() -> None:
    assert dict(datasets.SOURCES["mnist"].files)["train-images-idx3-ubyte.gz"] == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert dict(datasets.SOURCES["cifar10"].files)["cifar-10-python.tar.gz"] == "c58f30108f718f92721af3b95e74349a"


# --------------------------------------------------------------------------------------------- splits


@pytest.fixture()
def mnist_dir(tmp_path: Path) -> Path:
    write_mnist(tmp_path, fake_mnist(n_train=400, n_test=100), gz=True)
    return tmp_path


def test_split_tasks_labels_and_coverage(mnist_dir: Path) -> None:
    bench = load_split_benchmark("mnist", mnist_dir)
    assert bench.n_tasks == 5 and bench.classes == ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
    assert bench.input_shape == (1, 28, 28) and bench.x.shape == (500, 1, 28, 28)
    assert bench.x.dtype == torch.float32 and bench.y.dtype == torch.int64 and bench.task.dtype == torch.int64
    pixels = untag(bench)
    cls, part = pixels[:, 0, 0, 0], pixels[:, 0, 0, 3]
    all_idx = []
    for t, (a, b) in enumerate(bench.classes):
        tr, va, te = (s[t].numpy() for s in (bench.train, bench.val, bench.test))
        for idx in (tr, va, te):
            assert idx.dtype == np.int64
        idx = np.concatenate([tr, va, te])
        assert len(set(idx.tolist())) == len(idx)  # train/val/test disjoint
        assert set(cls[idx]) == {a, b}
        np.testing.assert_array_equal(bench.y.numpy()[idx], (cls[idx] == b).astype(np.int64))
        np.testing.assert_array_equal(bench.task.numpy()[idx], t)
        assert (part[np.concatenate([tr, va])] == 0).all() and (part[te] == 1).all()
        assert len(tr) + len(va) == 80 and len(te) == 20
        all_idx.append(idx)
    np.testing.assert_array_equal(np.sort(np.concatenate(all_idx)), np.arange(500))  # covering


def test_split_normalisation_uses_train_part(mnist_dir: Path) -> None:
    bench = load_split_benchmark("mnist", mnist_dir, val_size=0.25)
    train = bench.x[torch.cat(bench.train)].double()
    assert abs(train.mean().item()) < 1e-5 and abs(train.std(unbiased=False).item() - 1) < 1e-5
    assert 0 < bench.mean[0] < 1 and bench.std[0] > 0


def test_split_cifar_three_channels(tmp_path: Path) -> None:
    write_cifar_folder(tmp_path, fake_cifar(n_per_batch=40))
    bench = load_split_benchmark("cifar10", tmp_path, val_size=0)
    assert bench.input_shape == (3, 32, 32) and len(bench.mean) == 3
    train = bench.x[torch.cat(bench.train)].double()
    means = train.mean(dim=(0, 2, 3))
    stds = train.transpose(0, 1).reshape(3, -1).std(dim=1, unbiased=False)
    assert torch.allclose(means, torch.zeros(3, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(stds, torch.ones(3, dtype=torch.float64), atol=1e-5)


@pytest.mark.parametrize("val_size,expected", [(0.1, 8), (0.25, 20), (0.0, 0), (0, 0), (10, 10), (79, 79)])
def test_val_size_fraction_and_count(mnist_dir: Path, val_size: float | int, expected: int) -> None:
    bench = load_split_benchmark("mnist", mnist_dir, val_size=val_size)
    for t in range(bench.n_tasks):
        assert len(bench.val[t]) == expected
        assert len(bench.train[t]) == 80 - expected
        assert bench.val[t].dtype == torch.int64


def test_val_is_stratified_and_deterministic(mnist_dir: Path) -> None:
    bench = load_split_benchmark("mnist", mnist_dir, val_size=20)
    again = load_split_benchmark("mnist", mnist_dir, val_size=20)
    for t in range(bench.n_tasks):
        assert torch.equal(bench.val[t], again.val[t]) and torch.equal(bench.train[t], again.train[t])
        np.testing.assert_array_equal(np.bincount(bench.y[bench.val[t]].numpy(), minlength=2), [10, 10])
    other = load_split_benchmark("mnist", mnist_dir, val_size=20, class_order_seed=1)
    assert other.classes != bench.classes


def test_stratified_holdout_any_count() -> None:
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    for n in (0, 1, 7, 10, 33, 100):
        mask = stratified_holdout(labels, n, np.random.default_rng(0))
        assert mask.sum() == n
        share = np.bincount(labels[mask], minlength=3)
        assert np.all(np.abs(share - n * np.array([0.5, 0.3, 0.2])) <= 1)
    # random within a class (not simply its first samples), and reproducible from the generator's seed
    mask = stratified_holdout(np.zeros(100, dtype=np.int64), 10, np.random.default_rng(0))
    assert not mask[:10].all()
    np.testing.assert_array_equal(mask, stratified_holdout(np.zeros(100, dtype=np.int64), 10, np.random.default_rng(0)))


def test_class_order_seed(mnist_dir: Path) -> None:
    assert class_pairs(None) == ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
    order = np.random.default_rng(7).permutation(10)
    assert class_pairs(7) == tuple((int(a), int(b)) for a, b in order.reshape(5, 2))
    assert class_pairs(7) == class_pairs(7) and class_pairs(7) != class_pairs(8)
    bench = load_split_benchmark("mnist", mnist_dir, class_order_seed=7)
    assert bench.classes == class_pairs(7)
    cls = untag(bench)[:, 0, 0, 0]
    for t, (a, b) in enumerate(bench.classes):
        idx = bench.train[t].numpy()
        np.testing.assert_array_equal(bench.y.numpy()[idx], (cls[idx] == b).astype(np.int64))
        assert set(cls[idx]) == {a, b}


def test_n_tasks_subset(mnist_dir: Path) -> None:
    bench = load_split_benchmark("mnist", mnist_dir, n_tasks=2)
    assert bench.n_tasks == 2 and len(bench.train) == len(bench.val) == len(bench.test) == 2
    assert bench.classes == ((0, 1), (2, 3))
    assert set(untag(bench)[:, 0, 0, 0].tolist()) == {0, 1, 2, 3}  # only the chosen classes are kept
    assert int(bench.task.max()) == 1


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"name": "imagenet"}, "mnist, fashion-mnist, cifar10, mnist-5k, fashion-mnist-32"),
        ({"train_size": 1}, "train_size"),
        ({"train_size": 10.5}, "train_size"),
        ({"test_size": 0}, "test_size"),
        ({"n_tasks": 0}, "n_tasks"),
        ({"n_tasks": 6}, "n_tasks"),
        ({"n_tasks": True}, "n_tasks"),
        ({"val_size": 1.0}, "val_size"),
        ({"val_size": -0.1}, "val_size"),
        ({"val_size": -1}, "val_size"),
        ({"val_size": "10%"}, "val_size"),
        ({"class_order_seed": -1}, "class_order_seed"),
        ({"class_order_seed": 1.5}, "class_order_seed"),
    ],
)
def test_bad_arguments_are_refused_before_reading(tmp_path: Path, kwargs: dict, match: str) -> None:
    args = {"name": "mnist", "data_dir": tmp_path / "does-not-exist", **kwargs}
    with pytest.raises(ValueError, match=match):
        load_split_benchmark(args.pop("name"), **args)


def test_val_size_leaving_no_train_is_refused(mnist_dir: Path) -> None:
    with pytest.raises(ValueError, match="leaving none"):
        load_split_benchmark("mnist", mnist_dir, val_size=80)


def test_to_moves_everything_and_describe(mnist_dir: Path) -> None:
    bench = load_split_benchmark("mnist", mnist_dir, n_tasks=3)
    moved = bench.to("meta")
    tensors = [moved.x, moved.y, moved.task, *moved.train, *moved.val, *moved.test]
    assert all(t.device.type == "meta" for t in tensors)
    assert bench.x.device.type == "cpu"  # the original is untouched
    assert moved.classes == bench.classes and moved.n_tasks == 3
    line = bench.describe()
    assert "\n" not in line and line.startswith("mnist") and "3 tasks" in line
    assert f"{len(bench.train[0])}/{len(bench.val[0])}/{len(bench.test[0])}" in line


def test_make_split_benchmark_from_raw() -> None:
    rng = np.random.default_rng(0)
    y = np.arange(100) % 10
    raw = RawDataset("toy", tagged_images(y, 0, (1, 4, 4), rng), y, tagged_images(y[:20], 1, (1, 4, 4), rng), y[:20])
    bench = make_split_benchmark(raw, ((9, 3),), val_size=0.2)
    assert bench.classes == ((9, 3),) and bench.x.shape == (24, 1, 4, 4)
    cls = untag(bench)[:, 0, 0, 0]
    np.testing.assert_array_equal(bench.y.numpy(), (cls == 3).astype(np.int64))
    assert len(bench.val[0]) == 4 and len(bench.train[0]) == 16 and len(bench.test[0]) == 4


def test_benchmark_names() -> None:
    assert BENCHMARKS[:5] == ("mnist", "fashion-mnist", "cifar10", "mnist-5k", "fashion-mnist-32")  # Split
    assert {"permuted-mnist-5k", "rotated-fashion-mnist"} <= set(BENCHMARKS[5:]) and len(BENCHMARKS) == 15
    bench = load_split_benchmark("mnist-5k", val_size=0.1, class_order_seed=3)
    assert bench.name == "mnist-5k" and bench.n_tasks == 5
    assert sum(len(t) for t in bench.train) + sum(len(v) for v in bench.val) == 4000
    assert sum(len(t) for t in bench.test) == 1000
