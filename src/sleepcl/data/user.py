"""The user's own data for a night: read, checked and split, in one of three documented formats.

Formats (chosen by the path):

* **NumPy ``.npz``** (``np.savez``): an array ``x`` of samples, shape ``(n, ...)`` -- ``(n, features)``,
  ``(n, H, W)`` grey images or ``(n, C, H, W)`` channel-first images -- and, for learning, an array ``y``
  of ``n`` labels (integers or strings). ``uint8`` ``x`` is read as raw pixel values 0..255; any other
  numeric type as ``float32``. Pickled (object) arrays are refused.
* **CSV** (``.csv``): a header row; the column named ``label`` (``--label-column`` to change) holds the
  labels, every other column is a numeric feature (read as ``float32``). Without a label column the file is
  unlabelled (fine for ``predict``). Empty cells are refused.
* **A folder of images**: one subfolder per class, named after the class (``data/cat/001.png``), or, for
  ``predict`` only, the images directly in the folder (unlabelled). Read with Pillow (installed with
  matplotlib): PNG, JPEG, BMP, GIF, TIFF, WebP. Grey images give ``(n, 1, H, W)``, colour ones
  ``(n, 3, H, W)``, as ``uint8``; all must have the same size.

Labels are normalised one way everywhere: integers (or strings that all spell integers, such as folder
names ``0``, ``1``) become ``int64``; anything else stays a string. So ``y = [0, 1]`` in an ``.npz`` and
folders ``0/`` and ``1/`` name the same classes.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import stat
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .datasets import stratified_holdout

__all__ = ["DataFormatError", "DataSize", "Dataset", "IMAGE_SUFFIXES", "fingerprint", "load_data", "measure_data",
           "normalise_labels", "split_validation"]

GREY_MODES = ("L", "1", "I", "I;16", "F", "LA")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
FORMATS_HELP = ("use a .npz file (arrays x and y), a .csv file (a 'label' column plus numeric feature "
                "columns) or a folder of images with one subfolder per class")


class DataFormatError(ValueError):
    """The data cannot be read, or does not fit the model or the task (the message says which and why)."""


@dataclass(frozen=True)
class Dataset:
    """Samples ``x`` (``uint8`` or ``float32``, shape ``(n, ...)``) and labels ``y`` (or ``None``)."""

    x: np.ndarray
    y: np.ndarray | None
    source: str
    format: str
    names: tuple[str, ...] | None = None  # one per sample, for image folders

    def __post_init__(self) -> None:
        if self.y is not None and len(self.y) != len(self.x):
            raise DataFormatError(f"{self.source}: {len(self.x)} samples but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.x)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x.shape[1:])

    @property
    def kind(self) -> str:
        """``"uint8"`` (raw pixels) or ``"float32"``."""
        return "uint8" if self.x.dtype == np.uint8 else "float32"

    def classes(self) -> list:
        """Sorted distinct labels, as plain Python ints or strings."""
        if self.y is None:
            return []
        return [_py(v) for v in np.unique(self.y)]

    def subset(self, mask: np.ndarray) -> "Dataset":
        names = tuple(n for n, k in zip(self.names, mask) if k) if self.names is not None else None
        return replace(self, x=self.x[mask], y=None if self.y is None else self.y[mask], names=names)


def load_data(source: "str | Path | Dataset | tuple", *, label_column: str = "label",
              require_labels: bool = False) -> Dataset:
    """Read ``source`` (a path, an ``(x, y)`` tuple, or a :class:`Dataset`) and check it.

    Raises :class:`DataFormatError` naming the file and the problem.
    """
    if isinstance(source, Dataset):
        data = source
    elif isinstance(source, tuple):
        if len(source) != 2:
            raise DataFormatError("in-memory data must be a tuple (x, y); y may be None")
        data = _from_arrays(np.asarray(source[0]), None if source[1] is None else np.asarray(source[1]),
                            "arrays", "arrays")
    else:
        path = Path(source)
        if not path.exists():
            raise DataFormatError(f"no data at {path}: {FORMATS_HELP}")
        check_regular(path)
        if path.is_dir():
            data = _read_image_folder(path)
        elif path.suffix.lower() == ".npz":
            data = _read_npz(path)
        elif path.suffix.lower() == ".csv":
            data = _read_csv(path, label_column)
        else:
            raise DataFormatError(f"unknown data format {path.name!r} (suffix {path.suffix or 'none'!r}): {FORMATS_HELP}")
    if len(data) == 0:
        raise DataFormatError(f"{data.source}: no samples")
    if require_labels and data.y is None:
        hint = f" (no {label_column!r} column)" if data.format == "csv" else ""
        raise DataFormatError(f"{data.source}: has no labels{hint}; learning a task needs labelled data")
    return data


def normalise_labels(y: np.ndarray, where: str = "labels") -> np.ndarray:
    """Labels as ``int64`` (integers, integral floats, strings that spell integers) or as strings."""
    y = np.asarray(y)
    if y.ndim != 1:
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        else:
            raise DataFormatError(f"{where}: labels must be one per sample (shape (n,)), got shape {y.shape}; "
                                  "one-hot labels are not supported, give class ids or names")
    if y.dtype == bool or np.issubdtype(y.dtype, np.integer):
        return y.astype(np.int64)
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            bad = y[~(np.isfinite(y) & (y == np.round(y)))][:3]
            raise DataFormatError(f"{where}: labels must be class ids (integers) or names (strings); found "
                                  f"values such as {', '.join(str(b) for b in bad)}")
        return y.astype(np.int64)
    if y.dtype.kind in "US" or y.dtype == object:
        text = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in y.tolist()])
        if len(text) and all(re.fullmatch(r"[+-]?\d+", t.strip()) for t in text.tolist()):
            return np.array([int(t) for t in text.tolist()], dtype=np.int64)
        return text.astype(str)
    raise DataFormatError(f"{where}: labels of type {y.dtype} are not supported; use integers or strings")


def split_validation(data: Dataset, fraction: float, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Hold out ``fraction`` of ``data``, stratified by class; every class keeps at least one training sample."""
    if not 0.0 < fraction < 1.0:
        raise DataFormatError(f"--val-fraction must lie strictly between 0 and 1, got {fraction}")
    assert data.y is not None
    n_val = int(round(fraction * len(data)))
    if n_val < 1:
        raise DataFormatError(f"{data.source}: {len(data)} samples are too few to hold out {fraction:g} for "
                              "validation; give more data or a separate --val-data file")
    is_val = stratified_holdout(data.y, n_val, np.random.default_rng(seed))
    train, val = data.subset(~is_val), data.subset(is_val)
    missing = set(data.classes()) - set(train.classes())
    if missing:
        raise DataFormatError(f"{data.source}: class(es) {sorted(missing, key=str)} have too few samples to keep "
                              "one for training after the validation split")
    return train, val


def fingerprint(data: Dataset) -> str:
    """sha256 of the samples and labels: tells whether two files hold the same data."""
    h = hashlib.sha256()
    h.update(str((data.x.dtype.str, data.x.shape)).encode())
    h.update(np.ascontiguousarray(data.x).tobytes())
    if data.y is not None:
        h.update(str(data.y.dtype.kind).encode())
        h.update("\x1f".join(str(v) for v in data.y.tolist()).encode())
    return h.hexdigest()


# -- sizes, before anything is read --------------------------------------------------------------------

@dataclass(frozen=True)
class DataSize:
    """What a data file holds, read from its header or listing only: ``n`` samples of ``sample_shape``, stored as
    ``stored_bytes`` per value in the file's own type and ``kind`` (``uint8`` or ``float32``) once read."""

    source: str
    n: int
    sample_shape: tuple[int, ...]
    stored_bytes: int
    kind: str
    label_bytes: int = 0  # per sample, where the header says (the .npz's y)

    @property
    def values(self) -> int:
        return self.n * math.prod(self.sample_shape)

    def describe(self) -> str:
        return f"{self.n:,} samples of shape {self.sample_shape}"


def measure_data(source: "str | Path | Dataset | tuple", label_column: str = "label") -> DataSize | None:
    """The size of the data at ``source`` without reading it (None for data already in memory, or a file the
    reader will refuse anyway): the ``.npz`` member's npy header, a CSV's rows and columns, an image folder's
    image count and the size in each image's header."""
    if isinstance(source, (Dataset, tuple)):
        return None
    path = Path(source)
    if path.exists():
        check_regular(path)
    if path.is_dir():
        return _measure_images(path)
    if path.suffix.lower() == ".npz" and path.is_file():
        return _measure_npz(path)
    if path.suffix.lower() == ".csv" and path.is_file():
        return _measure_csv(path, label_column)
    return None


def check_regular(path: Path) -> None:
    """Refuse a data path that is neither a regular file nor a folder (a device such as /dev/zero, a pipe): its
    size cannot be known before reading it, and reading it may never end."""
    mode = path.stat().st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        kind = "a character device" if stat.S_ISCHR(mode) else "a pipe" if stat.S_ISFIFO(mode) else "not a regular file"
        target = f" (a link to {os.path.realpath(path)})" if path.is_symlink() else ""
        raise DataFormatError(f"{path}{target} is {kind}, not a data file: its size cannot be checked before "
                              f"reading it; give a regular file or a folder of images. {FORMATS_HELP}")


def npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]] | None:
    """``{name: (shape, dtype)}`` of the ``x`` and ``y`` members of a ``.npz`` from their npy headers, without
    reading their data (None when the file is not a zip of npy files: :func:`numpy.load` says why). An ``x`` and
    a ``y`` that disagree on the number of samples are refused here, before either is read."""
    out: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0,
            (3, 0): np.lib.format.read_array_header_2_0}
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            for key in ("x", "y"):
                if f"{key}.npy" not in names:
                    continue
                with z.open(f"{key}.npy") as f:
                    version = np.lib.format.read_magic(f)
                    if version not in read:
                        return None
                    shape, _, dtype = read[version](f)
                out[key] = (tuple(int(d) for d in shape), dtype)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None
    if "x" in out and "y" in out:
        (xs, _), (ys, _) = out["x"], out["y"]
        if len(ys) != 1 or not xs or ys[0] != xs[0]:
            raise DataFormatError(f"{path}: y has shape {ys} but x holds {xs[0] if xs else 0:,} samples (shape "
                                  f"{xs}); y must hold one label per sample, shape ({xs[0] if xs else 0},)")
    return out


def _measure_npz(path: Path) -> DataSize | None:
    headers = npz_headers(path)
    if not headers or "x" not in headers:
        return None  # np.load will say what is wrong
    shape, dtype = headers["x"]
    if len(shape) < 2:
        return None
    kind = "uint8" if dtype == np.uint8 else "float32"
    # labels are read as stored, then normalised (int64 or strings): counted per sample beside the values
    label_bytes = 2 * max(8, headers["y"][1].itemsize) if "y" in headers else 0
    return DataSize(str(path), int(shape[0]), tuple(int(d) for d in shape[1:]), max(1, dtype.itemsize), kind,
                    label_bytes)


def _measure_csv(path: Path, label_column: str) -> DataSize | None:
    import csv

    try:
        with open(path, newline="") as f:
            header = next(csv.reader([f.readline()]), [])
            rows = 0
            for block in iter(lambda: f.read(1 << 22), ""):
                rows += block.count("\n")
    except (OSError, UnicodeDecodeError):
        return None
    features = len([c for c in header if c != label_column])
    # pandas parses into float64 columns of Python-level objects first: about 16 bytes per value
    return DataSize(str(path), rows, (max(1, features),), 16, "float32")


def _measure_images(path: Path) -> DataSize:
    files, _ = _image_files(path)
    largest: tuple[int, ...] = ()
    for f in files:
        with _open_image(f) as im:
            w, h = im.size
            bands = 1 if im.mode in GREY_MODES else 3
        if bands * h * w > math.prod(largest or (0,)):
            largest = (bands, h, w)
    return DataSize(str(path), len(files), largest, 1, "uint8")


# -- readers ------------------------------------------------------------------------------------------

def _from_arrays(x: np.ndarray, y: np.ndarray | None, source: str, fmt: str,
                 names: tuple[str, ...] | None = None) -> Dataset:
    if x.dtype == object:
        raise DataFormatError(f"{source}: x is an object array; give a numeric array")
    if x.ndim < 2:
        raise DataFormatError(f"{source}: x must have one row per sample (shape (n, features) or (n, H, W) "
                              f"or (n, C, H, W)), got shape {x.shape}")
    if x.dtype == np.uint8:
        pass
    elif x.dtype == bool or np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
        if not np.all(np.isfinite(x)):
            raise DataFormatError(f"{source}: x holds NaN or infinite values")
    else:
        raise DataFormatError(f"{source}: x has type {x.dtype}; give numbers (uint8 pixels or floats)")
    if y is not None:
        y = normalise_labels(y, f"{source}: y")
    return Dataset(np.ascontiguousarray(x), y, source, fmt, names)


def _read_npz(path: Path) -> Dataset:
    npz_headers(path)  # x and y agree on their length before either is read
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = list(f.keys())
            if "x" not in keys:
                raise DataFormatError(f"{path}: no array named 'x' (found: {', '.join(keys) or 'none'}); save the "
                                      "data with np.savez(path, x=samples, y=labels)")
            x = f["x"]
            y = f["y"] if "y" in keys else None
    except DataFormatError:
        raise
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise DataFormatError(f"{path}: cannot read it without unpickling ({e}); save plain numeric/string "
                                  "arrays") from e
        raise DataFormatError(f"{path}: damaged or truncated ({e}); save it again with np.savez(path, x=samples, "
                              "y=labels)") from e
    except (OSError, EOFError) as e:
        raise DataFormatError(f"{path}: not a readable .npz file ({e})") from e
    return _from_arrays(x, y, str(path), "npz")


def _read_csv(path: Path, label_column: str) -> Dataset:
    import pandas as pd

    try:
        df = pd.read_csv(path)
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as e:
        raise DataFormatError(f"{path}: not a readable CSV file ({e})") from e
    y = None
    if label_column in df.columns:
        labels = df.pop(label_column)
        if labels.isna().any():
            raise DataFormatError(f"{path}: column {label_column!r} has empty cells (row {int(labels.isna().idxmax()) + 2})")
        y = labels.to_numpy()
    if df.shape[1] == 0:
        raise DataFormatError(f"{path}: no feature columns besides {label_column!r}")
    bad = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        raise DataFormatError(f"{path}: column(s) {', '.join(map(repr, bad[:5]))} are not numeric; every column "
                              f"but the label column ({label_column!r}) must be a number "
                              "(is the label column named differently? use --label-column)")
    if df.isna().any().any():
        col = df.columns[df.isna().any()].tolist()[0]
        row = int(df[col].isna().to_numpy().argmax())
        cell = _raw_cell(path, row, str(col))
        what = "is empty" if cell == "" else f"holds {cell!r}, which is not a number"
        raise DataFormatError(f"{path}: column {col!r}, row {row + 2}: the cell {what}; every feature must be a "
                              "finite number")
    return _from_arrays(df.to_numpy(dtype=np.float32), y, str(path), "csv")


def _raw_cell(path: Path, row: int, column: str) -> str:
    """The text of one cell of a CSV file as written (row 0 is the first after the header)."""
    import csv
    import itertools

    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        line = next(itertools.islice(reader, row, None), [])
    i = header.index(column) if column in header else -1
    return line[i].strip() if 0 <= i < len(line) else ""


def _image_files(path: Path) -> tuple[list[Path], list[str] | None]:
    """The images of a folder and their labels (class subfolder names; None for unlabelled images)."""
    subdirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    top = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if subdirs and top:
        raise DataFormatError(f"{path}: holds both images and subfolders; put labelled images in one subfolder "
                              "per class, or unlabelled images directly in the folder, not both")
    files: list[Path] = []
    labels: list[str] | None = []
    if subdirs:
        for d in subdirs:
            found = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DataFormatError(f"{d}: class folder without images ({', '.join(IMAGE_SUFFIXES)})")
            files += found
            labels += [d.name] * len(found)
    else:
        files, labels = top, None
    if not files:
        raise DataFormatError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) and no class subfolders; {FORMATS_HELP}")
    return files, labels


def _open_image(f: Path):
    """Pillow's lazy image (header read, pixels not yet decoded); an unreadable or oversized one is refused."""
    from PIL import Image

    try:
        return Image.open(f)
    except Image.DecompressionBombError as e:
        raise DataFormatError(f"{f}: the image is too large to decode safely ({e}); resize it (all images of a "
                              "task have one size, that of the network's input)") from None
    except (OSError, ValueError) as e:
        raise DataFormatError(f"{f}: not a readable image ({e})") from e


def _read_image_folder(path: Path) -> Dataset:
    files, labels = _image_files(path)
    from PIL import Image
    images, modes = [], []
    for f in files:
        try:
            with _open_image(f) as im:
                im.load()
                modes.append(im.mode)
                images.append(im.copy())
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            if isinstance(e, DataFormatError):
                raise
            raise DataFormatError(f"{f}: not a readable image ({e})") from e
    grey = all(m in GREY_MODES for m in modes)
    arrays = []
    size = None
    for f, im in zip(files, images):
        if grey:
            a = np.asarray(im.convert("L"), dtype=np.uint8)[None]
        else:
            a = np.asarray(im.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)
        if size is None:
            size = a.shape
        elif a.shape != size:
            raise DataFormatError(f"{f}: image of size {a.shape[2]}x{a.shape[1]} but {files[0].name} is "
                                  f"{size[2]}x{size[1]}; all images must have the same size")
        arrays.append(a)
    names = tuple(str(f.relative_to(path)) for f in files)
    y = None if labels is None else np.array(labels)
    return _from_arrays(np.stack(arrays), y, str(path), "images", names)


def _py(v):
    return v.item() if hasattr(v, "item") else v
