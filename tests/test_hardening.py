"""Hostile and careless input (issue 13): every case is refused with a message that names the problem and the fix,
before any work where possible, and nothing already finished is lost or overwritten.

Memory-bound cases are checked by their refusal: the files claim sizes in their headers (a sparse tar member, an
npy header, a PNG header) that are never allocated.
"""

from __future__ import annotations

import io
import json
import os
import re
import sqlite3
import struct
import subprocess
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

import sleepcl.runs.runner
from sleepcl.cli import main
from sleepcl.nightly import NightlyModel, learn, predict
from sleepcl.nightly.model import lock_model, prev_path
from sleepcl.runs.store import RunStore

from test_nightly import TINY as NIGHT, night, sha
from test_store import make_record

RUN = ["--widths", "16,16", "--epochs", "1", "--retrain-epochs", "1", "--batch-size", "128", "--tasks", "1", "--quiet"]
LEARN = ["--widths", "16,16", "--epochs", "1", "--retrain-epochs", "2", "--threads", "1", "--final-free", "0.5"]


@pytest.fixture
def no_training(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("training started although the input was invalid")
    monkeypatch.setattr(sleepcl.runs.runner, "train_population", refuse)


def refused(capsys, argv, *messages, code=2) -> str:
    """Run the command; it must exit with ``code`` and print every message on stderr."""
    assert main(argv) == code, argv
    err = capsys.readouterr().err
    for m in messages:
        assert m in err, (m, err)
    assert "Traceback" not in err
    return err


# -- resources --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seeds, figure", [("0-100000", "100,001"), ("0-10000000000", "10,000,000,001")])
def test_absurd_seed_ranges_are_refused_before_anything_is_built(no_training, tmp_path, capsys, seeds, figure):
    refused(capsys, ["run", *RUN, "--seeds", seeds, "--store", str(tmp_path / "s.sqlite")], figure,
            "more than the 10,000", "split it over several commands")
    assert not (tmp_path / "s.sqlite").exists()


def test_populations_are_sized_to_the_memory_they_need(tmp_path, monkeypatch, capsys):
    from sleepcl.cli.run import run_configs_from_args
    from sleepcl.cli import build_parser
    from sleepcl.runs.runner import memory_plan

    args = build_parser().parse_args(["run", *RUN, "--seeds", "0-4"])
    plan = memory_plan(run_configs_from_args(args)[0], torch.device("cpu"), 2**40)
    limit = plan.data + 2 * plan.per_member + plan.per_member // 2  # room for two members and a half
    sizes = []
    real = sleepcl.runs.runner.train_population
    monkeypatch.setattr(sleepcl.runs.runner, "train_population", lambda c, *a, **k: sizes.append(len(c)) or real(c, *a, **k))
    argv = ["run", *RUN, "--seeds", "0-4", "--no-store", "--max-memory", str(limit)]
    argv.remove("--quiet")
    assert main(argv) == 0
    assert sizes == [2, 2, 1]
    out = capsys.readouterr().out
    assert "training 5 runs in 3 populations of up to 2" in out and "(--max-memory)" in out and "would not fit" in out
    sizes.clear()
    assert main([*argv, "--max-population", "1"]) == 0 and sizes == [1] * 5   # --max-population still works


@pytest.mark.parametrize("extra, figure", [(["--max-memory", "1M"], "1 member needs about"),
                                           (["--widths", "100000,100000", "--max-memory", "64G"], "of 64.0 GB")])
def test_a_member_that_cannot_fit_is_refused_with_the_figure(no_training, tmp_path, capsys, extra, figure):
    argv = ["run", *RUN, "--no-store", *extra]
    refused(capsys, argv, "not enough memory for even one mlp member", figure)


def test_memory_estimate_is_a_pure_function_of_the_network():
    from sleepcl.runs.memory import member_bytes, parse_size, plan_population

    shapes = {"fc0.weight": (256, 784), "fc0.bias": (256,), "head.weight": (1, 2, 256), "head.bias": (1, 2)}
    one = member_bytes(shapes, ["fc0.weight"], batch_size=128, activation_floats=784)
    assert one == member_bytes(dict(shapes), ("fc0.weight",), batch_size=128, activation_floats=784)
    assert member_bytes(shapes, ["fc0.weight"], batch_size=256, activation_floats=784) > one
    assert plan_population(one, 1000, 1000 + 3 * one + 1, "x").fits == 3
    assert plan_population(one, 1000, 999, "x").fits == 0
    assert parse_size("1.5G") == 3 * 2**29 and parse_size("500M") == 500 * 2**20 and parse_size("12") == 12
    for bad in ("", "lots", "-1G", "0"):
        with pytest.raises(ValueError, match="--max-memory"):
            parse_size(bad)


def npz_claiming(path: Path, shape: tuple[int, ...], dtype: str) -> Path:
    """A .npz whose x.npy and y.npy headers say ``shape`` (and ``shape[0]`` labels) but that holds a few bytes: its
    size is known without reading it."""
    header = {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    y = io.BytesIO()
    np.lib.format.write_array_header_1_0(y, {"descr": "<i8", "fortran_order": False, "shape": shape[:1]})
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", buf.getvalue() + b"\0" * 64)
        z.writestr("y.npy", y.getvalue() + b"\0" * 64)  # as many labels as samples, claimed likewise
    return path


@pytest.mark.parametrize("shape, dtype, words", [
    ((40000, 100000), "u1", ["40,000 samples of shape (100000,) (uint8)", "for the data"]),
    ((2, 10_000_000), "<f4", ["2 samples of shape (10000000,)", "network of 2,560,"]),
])
def test_learn_refuses_data_that_cannot_fit_before_reading_it(tmp_path, capsys, shape, dtype, words):
    data = npz_claiming(tmp_path / "big.npz", shape, dtype)
    model = tmp_path / "m.st"
    refused(capsys, ["learn", str(model), "--task", "t", "--data", str(data), "--max-memory", "8G"],
            *words, "learning it needs about", "more than the 8.0 GB", "--max-memory")
    assert not model.exists() and not prev_path(model).exists()


def test_learn_refuses_data_too_large_for_an_existing_model(tasks, tmp_path, capsys):
    model = tmp_path / "m.st"
    night(model, 0, tasks)
    digest = sha(model)
    data = npz_claiming(tmp_path / "big.npz", (4_000_000, 28, 28), "u1")
    refused(capsys, ["learn", str(model), "--task", "t", "--data", str(data), "--max-memory", "1G"],
            "4,000,000 samples of shape (28, 28)", "more than the 1.0 GB")
    assert sha(model) == digest


def sparse_cifar_tar(path: Path, big: str, size: int) -> Path:
    """An uncompressed CIFAR 'archive' whose member ``big`` claims ``size`` bytes (a hole in a sparse file)."""
    from sleepcl.data.datasets import CIFAR_FOLDER, CIFAR_TEST_BATCH, CIFAR_TRAIN_BATCHES

    with open(path, "wb") as f:
        for name in (*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH):
            info = tarfile.TarInfo(f"{CIFAR_FOLDER}/{name}")
            info.size = size if name == big else 10
            f.write(info.tobuf(tarfile.GNU_FORMAT))
            if name == big:
                f.seek((size + 511) // 512 * 512, os.SEEK_CUR)
            else:
                f.write(b"x" * 10 + b"\0" * 502)
        f.write(b"\0" * 1024)
    return path


def test_an_oversized_cifar_member_is_refused_without_reading_it(tmp_path, capsys, no_training):
    from sleepcl.data.datasets import CIFAR_MEMBER_LIMIT, DataCorruptError, load_raw

    archive = sparse_cifar_tar(tmp_path / "cifar-10-python.tar.gz", "data_batch_1", 3 * 2**30)
    assert os.stat(archive).st_blocks * 512 < 2**20  # a hole: nothing of the 3 GB is on disk or in memory
    message = f"3,221,225,472 bytes, but a CIFAR-10 batch holds about 31 MB (at most {CIFAR_MEMBER_LIMIT:,}"
    with pytest.raises(DataCorruptError, match=message.replace("(", r"\(")):
        load_raw("cifar10", archive)
    refused(capsys, ["run", *RUN, "--benchmark", "cifar10", "--data-dir", str(tmp_path), "--no-store"], message)


def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares ``width x height`` grey pixels (no pixel data)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


def test_a_decompression_bomb_image_is_refused(tmp_path, capsys):
    from PIL import Image

    for label in ("a", "b"):
        (tmp_path / "img" / label).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "img" / label / "0.png")
    png_header(tmp_path / "img" / "b" / "huge.png", 20000, 20000)
    model = tmp_path / "m.st"
    refused(capsys, ["learn", str(model), "--task", "t", "--data", str(tmp_path / "img"), *LEARN],
            "huge.png: the image is too large to decode safely", "resize it")
    assert not model.exists()


# -- writes -----------------------------------------------------------------------------------------------

def test_an_unwritable_output_is_refused_before_training(no_training, tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    refused(capsys, ["run", *RUN, "--no-store", "--output", str(tmp_path / "file" / "out.json")],
            "cannot write --output", "choose a writable place")
    refused(capsys, ["results", "--store", str(tmp_path / "s.sqlite"), "--export", str(tmp_path / "file" / "x.csv")],
            "cannot write --export")
    assert (tmp_path / "file").read_text() == "not a folder"


@pytest.mark.parametrize("use_store", [True, False])
def test_a_final_write_that_fails_keeps_the_records(tmp_path, monkeypatch, capsys, use_store):
    folder = tmp_path / "out"
    real = sleepcl.runs.runner.train_population

    def train_then_break_the_folder(*a, **k):
        results = real(*a, **k)
        folder.rmdir()
        folder.write_text("the folder was replaced by a file while training")
        return results

    monkeypatch.setattr(sleepcl.runs.runner, "train_population", train_then_break_the_folder)
    store = tmp_path / "s.sqlite"
    where = ["--store", str(store)] if use_store else ["--no-store"]
    err = refused(capsys, ["run", *RUN, "--seeds", "0-1", *where, "--output", str(folder / "runs.json")],
                  f"could not write {folder / 'runs.json'}", code=1)
    if use_store:
        assert "nothing is lost" in err and len(RunStore(store, read_only=True)) == 2
    else:
        kept = Path(err.split("kept the output in ")[1].split(" instead")[0])
        assert [r["config"]["seed"] for r in json.loads(kept.read_text())] == [0, 1]
        kept.unlink()


def plant_links(folder: Path, name: str, victim: Path) -> list[Path]:
    """Symbolic links to ``victim`` at every temporary name an old writer of ``name`` used."""
    links = []
    for n in (f"{name}.tmp", f".{name}.{os.getpid()}.tmp", f".{name}.{os.getpid()}.warmup",
              f".{name}.prev.{os.getpid()}.tmp"):
        (folder / n).symlink_to(victim)
        links.append(folder / n)
    return links


def test_planted_links_are_never_written_through(tasks, tmp_path):
    shared, victim = tmp_path / "shared", tmp_path / "victim"
    shared.mkdir()
    victim.write_text("precious")
    plant_links(shared, "out.json", victim)
    (shared / "out.json").symlink_to(victim)  # even a link at the destination itself is replaced, not followed
    assert main(["run", *RUN, "--no-store", "--output", str(shared / "out.json")]) == 0
    assert not (shared / "out.json").is_symlink() and len(json.loads((shared / "out.json").read_text())) == 1

    plant_links(shared, "preds.csv", victim)
    predict_model = tmp_path / "m.st"
    night(predict_model, 0, tasks)
    predict(predict_model, "task0", tasks[0]["val"], output=shared / "preds.csv")
    assert (shared / "preds.csv").read_text().startswith("row,prediction")

    model = shared / "m.st"
    plant_links(shared, "m.st", victim)
    learn(model, "task0", tasks[0]["train"], widths=(16, 16), final_free=0.5, threads=1, budget=4)  # warm-up: scratch file
    night(model, 1, tasks)
    assert victim.read_text() == "precious"
    assert len(NightlyModel.load(model).tasks) == 2


def test_a_model_reached_through_a_link_is_updated_where_it_is(tasks, tmp_path):
    real, link = tmp_path / "real.st", tmp_path / "link.st"
    night(real, 0, tasks)
    first = sha(real)
    link.symlink_to(real)
    night(link, 1, tasks)
    assert link.is_symlink() and [t["name"] for t in NightlyModel.load(real).tasks] == ["task0", "task1"]
    assert sha(prev_path(real)) == first and prev_path(link) == prev_path(real)
    with lock_model(real):  # two names of one model share one lock
        with pytest.raises(ValueError, match="another `sleepcl learn` is working on"):
            learn(link, "task2", tasks[2]["train"], **NIGHT)


@pytest.mark.parametrize("argv, message", [
    (["run", *RUN, "--lr", "inf"], "argument --lr: must be a finite number"),
    (["run", *RUN, "--lr", "nan"], "argument --lr: must be a finite number"),
    (["run", *RUN, "--val-size", "nan"], "argument --val-size: must be a finite number"),
    (["learn", "m.st", "--task", "t", "--data", "d.npz", "--lr", "inf"], "argument --lr: must be a finite number"),
    (["learn", "m.st", "--task", "t", "--data", "d.npz", "--final-free", "nan"], "argument --final-free: must be a"),
    (["learn", "m.st", "--task", "t", "--data", "d.npz", "--tolerance", "nan"], "argument --tolerance: must be a"),
    (["learn", "m.st", "--task", "t", "--data", "d.npz", "--val-fraction=-inf"], "argument --val-fraction: must"),
])
def test_non_finite_floats_are_refused(no_training, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_non_finite_floats_are_refused_in_configs(no_training, capsys):
    from sleepcl.config import RunConfig

    for kw in (dict(lr=float("inf")), dict(final_free=float("nan")), dict(val_size=float("nan"))):
        with pytest.raises(ValueError, match="must be a finite number"):
            RunConfig(**kw).resolved()
    refused(capsys, ["run", *RUN, "--final-free", "nan"], "--final-free must be a finite number")


def test_non_finite_floats_are_refused_by_learn_from_python(tasks, tmp_path, monkeypatch):
    """The CLI's flags refuse inf and nan; so must ``learn`` called from Python, before any training."""
    import sleepcl.engine.day as day

    monkeypatch.setattr(day.DaySession, "__init__", lambda *a, **k: pytest.fail("training started"))
    for kw, message in ((dict(lr=float("inf")), "--lr a finite number > 0"),
                        (dict(final_free=float("nan")), "--final-free p must lie strictly between 0 and 1"),
                        (dict(tolerance=float("inf")), "--tolerance must lie in [0, 1)")):
        with pytest.raises(ValueError, match=re.escape(message)):
            learn(tmp_path / "m.st", "t", tasks[0]["train"], epochs=1, retrain_epochs=1, **kw)
    assert not (tmp_path / "m.st").exists()


# -- damaged stores -----------------------------------------------------------------------------------------

def foreign_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, athlete TEXT, km REAL)")
    conn.execute("CREATE TABLE shoes (id INTEGER PRIMARY KEY, brand TEXT)")
    conn.execute("INSERT INTO runs (athlete, km) VALUES ('ann', 10.5)")
    conn.commit()
    conn.close()


def read_only(path: Path, request) -> None:
    """Make ``path`` read-only for this process: permissions, or for root (whom they do not stop) the
    immutable attribute."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        return
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("root, and this file system has no immutable attribute to make a file read-only")
    request.addfinalizer(lambda: subprocess.run(["chattr", "-i", str(path)], check=False))


STORE_CASES = {
    "folder": (lambda p: p.mkdir(), "is a folder; give --store a file name such as"),
    "random bytes": (lambda p: p.write_bytes(np.random.default_rng(0).bytes(8192)), "is not a readable SQLite database"),
    "other application": (foreign_sqlite, "is an SQLite database of another application (tables: runs, shoes)"),
}
COMMANDS = {
    "run": lambda s, out: ["run", *RUN, "--store", s],
    "results": lambda s, out: ["results", "--store", s],
    "study": lambda s, out: ["study", "pruning", "--preset", "tiny", "--store", s, "--out", out, "--quiet"],
    "report": lambda s, out: ["report", "pruning", "--preset", "tiny", "--store", s, "--out", out],
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", STORE_CASES)
def test_damaged_stores_get_one_clear_message(no_training, tmp_path, capsys, case, command):
    store = tmp_path / "s.sqlite"
    make, message = STORE_CASES[case]
    make(store)
    before = sorted((p.name, p.read_bytes() if p.is_file() else None) for p in tmp_path.rglob("*"))
    refused(capsys, COMMANDS[command](str(store), str(tmp_path / "report")), message, "--store")
    assert sorted((p.name, p.read_bytes() if p.is_file() else None) for p in tmp_path.rglob("*")) == before


def test_another_applications_database_gets_no_sleepcl_tables(tmp_path):
    store = tmp_path / "s.sqlite"
    foreign_sqlite(store)
    with pytest.raises(ValueError, match="another application"):
        RunStore(store)
    conn = sqlite3.connect(store)
    assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")] == ["runs", "shoes"]
    assert conn.execute("PRAGMA application_id").fetchone()[0] == 0


def test_stores_written_before_the_application_id_still_open(tmp_path):
    from sleepcl.runs.store import APPLICATION_ID

    store = tmp_path / "s.sqlite"
    with RunStore(store) as s:
        s.put(make_record())
        s.conn.execute("PRAGMA application_id = 0")  # as every store before this version
    with RunStore(store) as s:
        assert len(s) == 1 and s.conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID


def test_a_read_only_store_is_listed_and_writing_commands_refuse(no_training, tmp_path, capsys, request):
    store = tmp_path / "s.sqlite"
    with RunStore(store) as s:
        s.put_many([make_record(seed=0), make_record(seed=1)])
    read_only(store, request)
    before = store.read_bytes()
    assert main(["results", "--store", str(store)]) == 0
    assert "2 runs in" in capsys.readouterr().out
    assert main(["results", "--store", str(store), "--export", str(tmp_path / "runs.json")]) == 0
    assert len(json.loads((tmp_path / "runs.json").read_text())) == 2
    capsys.readouterr()
    assert main(COMMANDS["report"](str(store), str(tmp_path / "report"))) == 0
    for command in ("run", "study"):
        refused(capsys, COMMANDS[command](str(store), str(tmp_path / "report")), f"the results store {store} is "
                "read-only", "`sleepcl results` and `sleepcl report` can read it", "--no-store")
    assert store.read_bytes() == before


# -- damaged model files ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def good_model(tasks, tmp_path_factory):
    """A model of two nights, and its .prev."""
    path = tmp_path_factory.mktemp("good") / "m.st"
    night(path, 0, tasks)
    night(path, 1, tasks)
    return path


def rewrite(src: Path, dst: Path, edit_meta=None, edit_tensors=None, header_version: str = "1") -> None:
    from safetensors.torch import load, save

    data = src.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    meta = json.loads(json.loads(data[8:8 + n])["__metadata__"]["sleepcl"])
    tensors = {k: v.clone() for k, v in load(data).items()}
    if edit_meta:
        edit_meta(meta)
    if edit_tensors:
        edit_tensors(tensors)
    dst.write_bytes(save(tensors, {"format": "sleepcl-nightly", "version": header_version,
                                   "sleepcl": json.dumps(meta)}))


def _set(path: list, value):
    def edit(d):
        for k in path[:-1]:
            d = d[k]
        if value is KeyError:
            del d[path[-1]]
        else:
            d[path[-1]] = value
    return edit


def _tensor(name: str, change):
    def edit(t):
        t[name] = change(t[name])
    return edit


DAMAGE = {
    "no network key": (dict(edit_meta=_set(["network"], KeyError)), "metadata network: Field required"),
    "empty policy": (dict(edit_meta=_set(["policy"], {})), "metadata policy: Unable to extract tag"),
    "history null": (dict(edit_meta=_set(["history"], None)), "metadata history: Input should be a valid list"),
    "unknown input kind": (dict(edit_meta=_set(["input", "kind"], "int16")), "metadata input.kind: Input should be"),
    "non-integer version": (dict(edit_meta=_set(["version"], 1.5)), "metadata version: Input should be a valid integer"),
    "non-integer header version": (dict(header_version="one"), "its format version 'one' is not a whole number"),
    "head of the wrong shape": (dict(edit_tensors=_tensor("head/1/weight", lambda w: torch.zeros(2, 7))),
                                "the head of task 1 ('task0') is (2, 7)"),
    "class list edited": (dict(edit_meta=_set(["tasks", 1, "classes"], [2, 3, 4])),
                          "the head of task 2 ('task1') is (2, 16) + (2,), but the task has 3 classes"),
    "class listed twice": (dict(edit_meta=_set(["tasks", 0, "classes"], [0, 0])), "tasks[0].classes: a class is listed twice"),
    "NaN trunk": (dict(edit_tensors=_tensor("trunk/fc1.weight", lambda w: w.index_fill(0, torch.tensor([3]), float("nan")))),
                  "trunk weight fc1.weight holds NaN or infinite values"),
    "zero std": (dict(edit_tensors=_tensor("input/std", torch.zeros_like)), "input/std holds values <= 0"),
    "owner beyond the tasks": (dict(edit_tensors=_tensor("owner/fc0.weight", lambda o: o.index_fill(0, torch.tensor([0]), 7))),
                               "owner map of fc0.weight gives weights to task 7, but the model has 2 task(s)"),
    "task name with a newline": (dict(edit_meta=_set(["tasks", 0, "name"], "a\nb")), "holds control characters"),
}


@pytest.mark.parametrize("case", DAMAGE)
def test_damaged_model_files_are_refused_and_left_alone(good_model, tasks, tmp_path, capsys, case):
    kw, message = DAMAGE[case]
    path = tmp_path / "m.st"
    rewrite(good_model, path, **kw)
    prev_path(path).write_bytes(prev_path(good_model).read_bytes())
    digests = sha(path), sha(prev_path(path))
    hint = [f"{path} is damaged (", message, f"the previous night's file {prev_path(path)} is kept", "copy it over"]
    refused(capsys, ["inspect", str(path)], *hint)
    refused(capsys, ["predict", str(path), "--task", "task0", "--data", str(tasks[0]["val"])], *hint)
    refused(capsys, ["learn", str(path), "--task", "new", "--data", str(tasks[2]["train"]), *LEARN], *hint)
    assert (sha(path), sha(prev_path(path))) == digests
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.st", "m.st.lock", "m.st.prev"]


def test_a_damaged_model_without_prev_says_to_restore_a_backup(good_model, tmp_path, capsys):
    path = tmp_path / "m.st"
    rewrite(good_model, path, edit_tensors=_tensor("input/std", torch.zeros_like))
    refused(capsys, ["inspect", str(path)], "there is no previous night's file", "from a backup")


# -- smaller cases --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["run", *RUN, "--device", "meta"], "--device meta is not a device sleepcl trains on"),
    (["run", *RUN, "--widths", "0,0"], "--widths takes positive integers like 256,256, got '0,0'"),
    (["run", *RUN, "--widths=-5,3"], "--widths takes positive integers like 256,256, got '-5,3'"),
    (["run", *RUN, "--widths", "a,b"], "--widths takes positive integers like 256,256, got 'a,b'"),
    (["run", *RUN, "--rounds", ","], "no integers in --rounds ','"),
    (["learn", "m.st", "--task", "t", "--data", "d.npz", "--widths", "a,b"], "--widths takes positive integers"),
    (["learn", "m.st", "--task", "a\nb", "--data", "d.npz"], "holds control characters ('\\n'"),
])
def test_small_cases(no_training, tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    refused(capsys, [*argv, *(["--no-store"] if argv[0] == "run" else [])], message)
    assert not (tmp_path / "m.st").exists()


@pytest.mark.parametrize("benchmark", ["mnist", "cifar10"])
def test_data_dir_naming_a_file(no_training, tmp_path, capsys, benchmark):
    (tmp_path / "data.bin").write_bytes(b"12345")
    refused(capsys, ["run", *RUN, "--benchmark", benchmark, "--no-store", "--data-dir", str(tmp_path / "data.bin")],
            f"--data-dir {tmp_path / 'data.bin'} is a file, not a folder")


def test_export_names_the_formats_that_exist(tmp_path, capsys):
    with RunStore(tmp_path / "s.sqlite") as s:
        s.put(make_record())
    refused(capsys, ["results", "--store", str(tmp_path / "s.sqlite"), "--export", str(tmp_path / "out.xlsx")],
            "the formats are .csv (one row per run), .json (the full records) and .jsonl")
    assert not (tmp_path / "out.xlsx").exists()


@pytest.mark.parametrize("benchmark", ["mnist", "cifar10"])
def test_stored_runs_are_served_whatever_the_data_folder_holds_now(no_training, tmp_path, capsys, benchmark):
    """Consistent for every benchmark: data is read (and checked) only for runs that train."""
    from sleepcl.cli import build_parser
    from sleepcl.cli.run import run_configs_from_args

    data = tmp_path / "data"
    data.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte", "cifar-10-python.tar.gz"):
        (data / name).write_bytes(b"broken" * 10)  # bad magic numbers, not a tar archive
    argv = ["run", *RUN, "--benchmark", benchmark, "--data-dir", str(data), "--store", str(tmp_path / "s.sqlite")]
    refused(capsys, argv, str(data))  # nothing stored: the data is needed, and refused
    (config,) = run_configs_from_args(build_parser().parse_args(argv))
    record = make_record(n_tasks=1)
    record.update(config_hash=config.hash(), config=config.to_dict())
    with RunStore(tmp_path / "s.sqlite") as s:
        s.put(record)
    assert main(argv) == 0
    assert "final test accuracy" in capsys.readouterr().out
