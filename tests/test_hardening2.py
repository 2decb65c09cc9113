"""Hostile and careless input, second round (issue 23): nothing a file or a flag says fills memory, overwrites
what is not sleepcl's, or is stored as a result when it is not one.

Memory-bound cases are checked by their refusal, never by allocating: files claim sizes in their headers (an npy
header, a gzip stream that inflates past its limit) or a resource limit (``RLIMIT_AS``) bounds a subprocess.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import stat
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import sleepcl.runs.runner
from sleepcl.cli import main
from sleepcl.runs.store import RunStore

from test_hardening import RUN, LEARN, refused
from sleepcl.nightly.model import prev_path
from test_nightly import night, sha
from test_store import make_record


@pytest.fixture
def no_training(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("training started although the input was invalid")
    monkeypatch.setattr(sleepcl.runs.runner, "train_population", refuse)


# -- 2. devices are written into, never replaced ---------------------------------------------------------------

class FifoReader:
    """A FIFO at ``path`` and a thread reading everything written into it."""

    def __init__(self, path: Path):
        os.mkfifo(path)
        self.path, self.data = path, b""
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while True:  # one writer per open; read until the test is over
            with open(self.path, "rb") as f:
                self.data += f.read()

    def text(self) -> str:
        self.thread.join(0.5)
        return self.data.decode()


@pytest.fixture(scope="module")
def a_store(tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("store") / "s.sqlite"
    with RunStore(store) as s:
        s.put_many([make_record(seed=0), make_record(seed=1)])
    return store


def char_device(path: Path) -> Path | None:
    """A copy of /dev/null's device node at ``path`` (root only), or None."""
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.stat("/dev/null").st_rdev)
        with open(path, "wb") as f:
            f.write(b"x")
    except OSError:
        return None
    return path


def test_outputs_stream_into_a_pipe_and_never_replace_it(tasks, tmp_path, a_store, capsys):
    fifo = FifoReader(tmp_path / "pipe")
    assert main(["run", *RUN, "--no-store", "--output", str(fifo.path)]) == 0
    assert stat.S_ISFIFO(os.lstat(fifo.path).st_mode)
    model = tmp_path / "m.st"
    night(model, 0, tasks)
    csv_pipe = FifoReader(tmp_path / "preds.csv")
    assert main(["predict", str(model), "--task", "task0", "--data", str(tasks[0]["val"]), "--output",
                 str(csv_pipe.path)]) == 0
    json_pipe = FifoReader(tmp_path / "runs.json")
    assert main(["results", "--store", str(a_store), "--export", str(json_pipe.path)]) == 0
    for p in (fifo, csv_pipe, json_pipe):
        assert stat.S_ISFIFO(os.lstat(p.path).st_mode), p.path
    assert len(json.loads(fifo.text())) == 1
    assert csv_pipe.text().startswith("row,prediction")
    assert len(json.loads(json_pipe.text())) == 2


def test_outputs_to_a_device_node_leave_the_node(tmp_path, a_store):
    node = char_device(tmp_path / "null")
    if node is None:
        pytest.skip("creating a device node needs root on a file system that allows devices")
    for argv in (["run", *RUN, "--no-store", "--output", str(node)],
                 ["results", "--store", str(a_store), "--export", str(node.with_name("null.csv"))]):
        if argv[0] == "results":
            os.rename(node, node.with_name("null.csv"))
            node = node.with_name("null.csv")
        assert main(argv) == 0
        assert stat.S_ISCHR(os.lstat(node).st_mode)


def test_a_block_device_or_a_link_of_another_user_to_a_device_is_refused(tmp_path, a_store, capsys):
    if os.geteuid() != 0:
        pytest.skip("needs root to make a device node and a link of another owner")
    block = tmp_path / "disk.json"
    try:
        os.mknod(block, 0o600 | stat.S_IFBLK, os.makedev(7, 200))
    except OSError:
        pytest.skip("this file system does not allow device nodes")
    refused(capsys, ["results", "--store", str(a_store), "--export", str(block)], "cannot write --export",
            "is a block device")
    link = tmp_path / "planted.json"
    link.symlink_to("/dev/null")
    os.lchown(link, 12345, 12345)
    refused(capsys, ["results", "--store", str(a_store), "--export", str(link)], "made by another user")
    assert stat.S_ISBLK(os.lstat(block).st_mode) and link.is_symlink()


# -- 3. the lock never follows a link and never outlives a refused first night ---------------------------

def test_the_lock_file_never_follows_a_planted_link(tasks, tmp_path, capsys):
    model, victim = tmp_path / "m.st", tmp_path / "victim"
    (tmp_path / "m.st.lock").symlink_to(victim)
    refused(capsys, ["learn", str(model), "--task", "t", "--data", str(tasks[0]["train"]), *LEARN],
            "m.st.lock (the lock of", "is a symbolic link", code=2)
    assert not victim.exists() and not model.exists()


def test_a_refused_first_night_leaves_no_lock_file(tmp_path, capsys):
    model = tmp_path / "m.st"
    refused(capsys, ["learn", str(model), "--task", "t", "--data", str(tmp_path / "missing.npz"), *LEARN],
            "missing.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_two_learns_still_exclude_each_other_after_a_lock_is_removed(tmp_path):
    from sleepcl.nightly.model import ModelError, lock_model

    model = tmp_path / "m.st"
    with lock_model(model):
        with pytest.raises(ModelError, match="another `sleepcl learn` is working on"):
            with lock_model(model):
                pass
    assert not (tmp_path / "m.st.lock").exists()  # the model was never made
    model.write_bytes(b"")
    with lock_model(model):
        pass
    assert (tmp_path / "m.st.lock").exists()  # beside a model the lock stays, as it always did


# -- 4. ranges are counted before they are expanded ------------------------------------------------------

def test_a_huge_permutation_range_is_refused_at_once(no_training, tmp_path, capsys):
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (1 << 31, 1 << 31));"
            "from sleepcl.cli import main; sys.exit(main(sys.argv[1:]))")
    argv = ["run", *RUN[:RUN.index("--tasks")], "--benchmark", "permuted-mnist-5k", "--permutations", "0-300000000",
            "--no-store"]
    p = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr[-2000:]
    assert "300,000,001 or more tasks, more than the 255" in p.stderr and "Traceback" not in p.stderr


# -- 5. every array of a .npz is sized from its header; predict checks sizes too -------------------------

def npy_header(shape: tuple[int, ...], dtype: str) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def npz_with_huge_labels(path: Path, x: np.ndarray, n_labels: int) -> Path:
    """A .npz of real images ``x`` whose y.npy header claims ``n_labels`` int64 labels (with a few bytes of data)."""
    with zipfile.ZipFile(path, "w") as z:
        buf = io.BytesIO()
        np.save(buf, x)
        z.writestr("x.npy", buf.getvalue())
        z.writestr("y.npy", npy_header((n_labels,), "<i8") + b"\0" * 64)
    return path


def test_labels_claiming_more_samples_than_x_are_refused_before_reading(tasks, tmp_path, capsys):
    x = np.load(tasks[0]["val"])["x"][:20]
    data = npz_with_huge_labels(tmp_path / "big.npz", x, 500_000_000)
    message = "y has shape (500000000,) but x holds 20 samples"
    model = tmp_path / "m.st"
    refused(capsys, ["learn", str(model), "--task", "t", "--data", str(data), "--max-memory", "1G", *LEARN], message)
    assert not model.exists()
    night(model, 0, tasks)
    refused(capsys, ["predict", str(model), "--task", "task0", "--data", str(data)], message)


def test_predict_refuses_data_that_cannot_fit_before_reading_it(tasks, tmp_path, capsys):
    from test_hardening import npz_claiming

    model = tmp_path / "m.st"
    night(model, 0, tasks)
    data = npz_claiming(tmp_path / "big.npz", (2 * 10**12, 28, 28), "u1")
    refused(capsys, ["predict", str(model), "--task", "task0", "--data", str(data)],
            "2,000,000,000,000 samples of shape (28, 28) (uint8): predicting it needs about", "more than the")


def test_labels_are_counted_in_the_memory_a_night_needs(tasks, tmp_path):
    from sleepcl.data.user import measure_data

    x = np.load(tasks[0]["val"])["x"][:20]
    buf = io.BytesIO()
    np.savez(buf, x=x, y=np.array(["a" * 50] * 20))
    (tmp_path / "s.npz").write_bytes(buf.getvalue())
    size = measure_data(tmp_path / "s.npz")
    assert size.n == 20 and size.label_bytes == 2 * 200  # 50 UCS-4 characters, read and normalised


# -- 6. a gzip that inflates past its header, data that is a device --------------------------------------

def test_a_gzip_bomb_with_a_matching_size_field_is_refused_after_reading_what_the_header_says(tmp_path):
    import tracemalloc

    from sleepcl.data.datasets import DataCorruptError, check_available, read_idx
    from test_datasets import fake_mnist, idx_bytes, write_mnist

    paths = write_mnist(tmp_path, fake_mnist(), gz=True)
    real = idx_bytes(fake_mnist()["train_x"])
    zeros = gzip.compress(b"\0" * 2**20, mtime=0)  # 1 MiB of zeros in about a kilobyte; gzip reads every member
    bomb = gzip.compress(real, mtime=0) + zeros * 200 + gzip.compress(b"\0" * len(real), mtime=0)
    paths["train_x"].write_bytes(bomb)  # 200 MiB more than the header says; the last member's size field matches
    check_available("mnist", tmp_path)  # what the size field says adds up: the bomb is found while reading
    tracemalloc.start()
    try:
        with pytest.raises(DataCorruptError, match="but the file holds more"):
            read_idx(paths["train_x"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * len(real) + 2**20, peak


def test_an_idx_header_past_the_limit_is_refused_before_reading(tmp_path):
    from sleepcl.data.datasets import DataCorruptError, read_idx

    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 3]) + (100_000).to_bytes(4, "big") + (100).to_bytes(4, "big") * 2 + b"\0" * 99)
    with pytest.raises(DataCorruptError, match="1,000,000,016 bytes"):
        read_idx(path)


@pytest.mark.parametrize("name", ["zero.csv", "zero.npz"])
def test_data_that_is_a_device_is_refused(tmp_path, name):
    link = tmp_path / name
    link.symlink_to("/dev/zero")
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30));"
            "from sleepcl.cli import main; sys.exit(main(sys.argv[1:]))")
    p = subprocess.run([sys.executable, "-c", code, "learn", str(tmp_path / "m.st"), "--task", "t", "--data", str(link),
                        *LEARN], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and f"{link} (a link to /dev/zero) is a character device, not a data file" in p.stderr, \
        p.stderr[-2000:]
    assert sorted(q.name for q in tmp_path.iterdir()) == [name]


# -- 7. imported records are validated against the record schema, streamed, before anything is stored -----

def good_record(**edit) -> dict:
    """A record the store would take (test_store's, with a config hash this sleepcl gives it)."""
    from sleepcl.config import RunConfig

    r = make_record(seed=3)
    r["config_hash"] = RunConfig.from_dict(r["config"]).hash()
    r.update(edit)
    return r


def write_jsonl(path: Path, records: list, raw: bytes = b"") -> Path:
    text = b"".join(json.dumps(r).encode() + b"\n" for r in records) + raw
    path.write_bytes(gzip.compress(text) if path.name.endswith(".gz") else text)
    return path


def matrix_with(value: float, n: int = 5) -> list:
    return [[value if j <= i else None for j in range(n)] for i in range(n)]


BAD_RECORDS = {
    "accuracy 5.0": (dict(accuracy_matrix=matrix_with(5.0), final_accuracy=[5.0] * 5, average_accuracy=5.0),
                     "accuracy_matrix.0.0: Input should be less than or equal to 1"),
    "average that the matrix does not give": (dict(average_accuracy=0.99), "average_accuracy is 0.99, but the"),
    "final accuracy edited": (dict(final_accuracy=[1.0] * 5), "final_accuracy is [1.0, 1.0, 1.0, 1.0, 1.0], but"),
    "NaN timing": (dict(timings={"total": float("nan")}), "timings.total: Input should be a finite number"),
    "negative free fraction": (dict(free_fraction_after_task=[-0.5] * 5), "free_fraction_after_task.0: Input should"),
    "matrix of the wrong shape": (dict(accuracy_matrix=[[0.9, 0.9]] * 2), "accuracy_matrix row 1 has 2 entries"),
    "too many rows": (dict(accuracy_matrix=matrix_with(0.9, 5) + [[0.9] * 5]), "has 6 rows; a run of 5 tasks"),
    "no matrix": (dict(accuracy_matrix=KeyError), "accuracy_matrix: Field required"),
    "no final accuracy": (dict(final_accuracy=KeyError), "final_accuracy: Field required"),
    "string accuracy": (dict(average_accuracy="0.9"), "average_accuracy: Input should be a valid number"),
    "bad hash": (dict(config_hash="x" * 64), "config hashes to"),
    "not an object": ([1, 2], "is not a run record"),
}


@pytest.mark.parametrize("case", BAD_RECORDS)
def test_imported_records_are_checked_against_the_schema(tmp_path, capsys, case):
    edit, message = BAD_RECORDS[case]
    bad = edit if isinstance(edit, list) else good_record()
    for k, v in (edit.items() if isinstance(edit, dict) else ()):
        if v is KeyError:
            del bad[k]
        else:
            bad[k] = v
    files = [write_jsonl(tmp_path / "good.jsonl", [good_record()]),
             write_jsonl(tmp_path / "bad.jsonl.gz", [good_record(created="x"), bad])]
    store = tmp_path / "s.sqlite"
    refused(capsys, ["results", "--import", *map(str, files), "--store", str(store)], "--import:",
            f"{files[1]}: record 2", message)
    assert not store.exists()  # nothing stored, not even the good file's run


def test_a_record_with_impossible_accuracy_is_never_imported(tmp_path, capsys):
    """The issue's case: a record with accuracy 5.0 was imported, served by `run` and published by `report`."""
    from sleepcl.cli import build_parser
    from sleepcl.cli.run import run_configs_from_args

    argv = ["run", *RUN, "--store", str(tmp_path / "s.sqlite")]
    (config,) = run_configs_from_args(build_parser().parse_args(argv))
    record = make_record(n_tasks=1)
    record.update(config_hash=config.hash(), config=config.to_dict(), accuracy_matrix=[[5.0]], final_accuracy=[5.0],
                  average_accuracy=5.0)
    refused(capsys, ["results", "--import", str(write_jsonl(tmp_path / "r.jsonl", [record])), "--store",
                     str(tmp_path / "s.sqlite")], "Input should be less than or equal to 1")
    assert not (tmp_path / "s.sqlite").exists()


@pytest.mark.parametrize("raw, message", [
    (b"{}\n" * 5_000_000, "record 2 is not a run record"),
    (b"[" * 100_000 + b"]" * 100_000 + b"\n", "line 2: JSON nested too deeply"),
    (b"{\"a\": \"" + b"x" * (17 * 2**20) + b"\"}\n", "line 2 is longer than 16,777,216 bytes"),
    (b"{not json}\n", "line 2: not valid JSON"),
])
def test_hostile_import_files_are_streamed_and_bounded(tmp_path, capsys, raw, message):
    path = write_jsonl(tmp_path / "r.jsonl.gz", [good_record()], raw)
    store = tmp_path / "s.sqlite"
    argv = ["results", "--import", str(path), "--store", str(store)]
    if raw.startswith(b"{}"):  # records are checked as they are read, not all held first: the peak is that of one
        def peak(file: Path) -> int:
            code = ("import resource, sys; from sleepcl.cli import main; rc = main(sys.argv[1:]); "
                    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(rc)")
            p = subprocess.run([sys.executable, "-c", code, "results", "--import", str(file), "--store", str(store)],
                               capture_output=True, text=True, timeout=300)
            assert p.returncode == 2 and message in p.stderr and "Traceback" not in p.stderr, p.stderr[-2000:]
            return int(p.stderr.split()[-1]) * 1024

        small = write_jsonl(tmp_path / "small.jsonl.gz", [good_record()], raw[:3])
        assert peak(path) - peak(small) < 100 * 2**20  # 5 M records held at once took 350 MB more
    else:
        refused(capsys, argv, message)
    assert not store.exists()


# -- 8. training that diverges is detected: never stored, never saved over a model ------------------------

MODELS = '''
import torch
from torch import nn


class NaNOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 16)
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        return self.head(torch.relu(self.fc(x.flatten(1))) * float("nan"))  # NaN features, nothing after the head


def nan_outputs():
    return NaNOut()


def infinite_weights():
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 2))
    with torch.no_grad():
        net[1].weight[0, 0] = float("inf")
    return net
'''


@pytest.mark.parametrize("extra, where", [
    (["--lr", "1e30"], "held NaN or infinite values"),
    (["--strategy", "ewc", "--strategy-option", "lambda=1e300", "--tasks", "2"], "after task 2"),
    (["--model", "MODELS:nan_outputs"], "after task 1"),
    (["--model", "MODELS:infinite_weights"], "after task 1"),
])
def test_a_run_that_diverges_is_refused_and_never_stored(tmp_path, capsys, extra, where):
    (tmp_path / "models.py").write_text(MODELS)
    extra = [e.replace("MODELS", str(tmp_path / "models.py")) for e in extra]
    store = tmp_path / "s.sqlite"
    argv = ["run", *RUN, "--seeds", "0-1", "--store", str(store), "--output", str(tmp_path / "out.json"), *extra]
    for flag in ("--tasks", "--model"):  # the one given in extra replaces RUN's (a user's model has no --widths)
        if flag in extra:
            i = argv.index("--tasks" if flag == "--tasks" else "--widths")
            del argv[i:i + 2]
    refused(capsys, argv, "training diverged in 2 of the 2 runs trained, which were not stored", "seed 0", where,
            "Try a smaller learning rate (--lr)")
    assert len(RunStore(store, read_only=True)) == 0 and not (tmp_path / "out.json").exists()


def test_divergence_is_found_per_member():
    from sleepcl.engine.divergence import nonfinite_members

    w = torch.zeros(3, 4, 5)
    w[1, 2, 3] = float("nan")
    b = torch.zeros(3, 5)
    b[2, 0] = float("-inf")
    assert nonfinite_members({"w": w}, {"b": b, "steps": torch.zeros(3, dtype=torch.long)}) == {1: "w", 2: "b"}


def test_learn_that_diverges_leaves_the_model_as_it_was(tasks, tmp_path, capsys):
    model = tmp_path / "m.st"
    night(model, 0, tasks)
    night(model, 1, tasks)
    digests = sha(model), sha(prev_path(model))
    refused(capsys, ["learn", str(model), "--task", "t2", "--data", str(tasks[2]["train"]), *LEARN, "--lr", "1e308"],
            "--lr a finite number > 0 (at most 3.403e+38: the weights are float32), got 128 and 1e+308")
    refused(capsys, ["learn", str(model), "--task", "t2", "--data", str(tasks[2]["train"]), *LEARN, "--lr", "1e30"],
            "training diverged:", "held NaN or infinite values at the end of the night", f"nothing was saved ({model}"
            " is as it was)")
    assert (sha(model), sha(prev_path(model))) == digests
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.st", "m.st.lock", "m.st.prev"]


# -- should be a message, not a traceback or wasted work --------------------------------------------------

FACTORIES = '''
import sys
from torch import nn


def exits():
    sys.exit(3)


def float64():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 2)).double()
'''
LONG = "a" * 300


@pytest.mark.parametrize("argv, message", [
    (["run", *RUN, "--threads", "100000"], "--threads must be >= 1 and at most 1,024"),
    (["run", *RUN, "--strategy", "ewc", "--strategy-option", "lambda=1", "--strategy-option", "lambda=2"],
     "--strategy-option gives 'lambda' twice"),
    (["run", *RUN, "--strategy", "ewc", "--final-free", "0.5,0.9"], "--final-free 0.5,0.9: ewc has no night here"),
    (["run", *RUN, "--strategy", "finetune", "--rounds", "2"], "--rounds 2: finetune has no night here"),
    (["run", *RUN, "--epochs", "99999999999999999999"], "--epochs must be >= 0 and at most 1,000,000"),
    (["run", *RUN, "--output", f"{LONG}.json"], "a file name is too long for the file system"),
    (["run", *RUN, "--model", "FACTORIES:exits"], "the model factory FACTORIES:exits failed: SystemExit: 3"),
    (["run", *RUN, "--model", "FACTORIES:float64"], "returned a model with float64 weights"),
    (["learn", f"{LONG}.st", "--task", "t", "--data", "d.npz"], "a file name is too long for the file system"),
    (["learn", "m.st", "--task", "t", "--data", "d.npz", "--epochs", "99999999999999999999"],
     "--epochs must be >= 0 and at most 1,000,000"),
    (["results", "--store", "s.sqlite", "stratgy=packnet"], "'stratgy' is not a config key; filters take"),
])
def test_careless_flags_get_a_message(no_training, tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "factories.py").write_text(FACTORIES)
    argv = [a.replace("FACTORIES", str(tmp_path / "factories.py")) for a in argv]
    message = message.replace("FACTORIES", str(tmp_path / "factories.py"))
    if "--model" in argv:
        i = argv.index("--widths")
        del argv[i:i + 2]
    refused(capsys, [*argv, *(["--no-store"] if argv[0] == "run" else [])], message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["factories.py"]


def test_a_cluster_port_out_of_range_is_refused_by_the_parser(no_training, capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", *RUN, "--no-store", "--cluster", "localhost:99999"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "the port must be a number in 1..65535" in err and "--port=99999" not in err


def test_an_unknown_results_column_is_named(tmp_path, a_store, capsys):
    refused(capsys, ["results", "--store", str(a_store), "--columns", "seed,acuracy"],
            "--columns acuracy: no such column; the runs have config_hash")


def test_learn_refuses_more_expected_tasks_than_the_owner_map_holds(tasks, tmp_path, capsys):
    refused(capsys, ["learn", str(tmp_path / "m.st"), "--task", "t", "--data", str(tasks[0]["train"]), *LEARN,
                     "--expected-tasks", "300"], "--expected-tasks must be a whole number in 1..255")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_data_the_model_cannot_take_is_refused_from_its_header(tasks, tmp_path, monkeypatch, capsys):
    from test_hardening import npz_claiming

    model = tmp_path / "m.st"
    night(model, 0, tasks)
    data = npz_claiming(tmp_path / "wide.npz", (300_000_000, 8), "<f8")  # 19 GB of float64 if it were read
    message = "wide.npz: samples have shape (8,) but the model takes (28, 28)"
    refused(capsys, ["learn", str(model), "--task", "t1", "--data", str(data), *LEARN], message)
    refused(capsys, ["predict", str(model), "--task", "task0", "--data", str(data)], message)


def test_damaged_data_files_are_named_for_what_is_wrong(tmp_path, capsys):
    from sleepcl.data.user import DataFormatError, load_data

    buf = io.BytesIO()
    np.save(buf, np.zeros((50, 28, 28), np.uint8))
    with zipfile.ZipFile(tmp_path / "trunc.npz", "w") as z:
        z.writestr("x.npy", buf.getvalue()[:20000])
    with pytest.raises(DataFormatError, match="trunc.npz: damaged or truncated") as e:
        load_data(tmp_path / "trunc.npz")
    assert "pickl" not in str(e.value)
    (tmp_path / "nan.csv").write_text("a,b,label\n1,nan,0\n2,3,1\n")
    with pytest.raises(DataFormatError, match="column 'b', row 2: the cell holds 'nan', which is not a number"):
        load_data(tmp_path / "nan.csv")
    (tmp_path / "empty.csv").write_text("a,b,label\n1,,0\n2,3,1\n")
    with pytest.raises(DataFormatError, match="column 'b', row 2: the cell is empty"):
        load_data(tmp_path / "empty.csv")


HUGE = '''
from torch import nn


def huge(input_shape=(1, 28, 28), num_classes=2):
    """About 1e9 parameters: 4 GB of weights, some 39 GB to train one member."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 40000), nn.ReLU(), nn.Linear(40000, 25000), nn.ReLU(),
                         nn.Linear(25000, num_classes))
'''


def test_a_model_too_large_for_one_member_is_refused_before_it_is_built(tmp_path):
    """Sized on the meta device: the process, capped at 3 GiB of address space, never holds its 4 GB of weights."""
    (tmp_path / "huge.py").write_text(HUGE)
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30));"
            "from sleepcl.cli import main; sys.exit(main(sys.argv[1:]))")
    p = subprocess.run([sys.executable, "-c", code, "run", "--model", f"{tmp_path / 'huge.py'}:huge", "--tasks", "2",
                        "--epochs", "1", "--no-store", "--quiet"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr[-2000:]
    assert "builds 1,031,475,002 parameters" in p.stderr and "nothing was built" in p.stderr
    assert "Traceback" not in p.stderr


def test_a_text_file_given_as_data_is_named_an_unknown_format(tmp_path, capsys):
    """``--data README.md`` names the file's format and the formats there are (not "no data")."""
    from sleepcl.cli import main

    readme = Path(__file__).resolve().parents[1] / "README.md"
    assert main(["learn", str(tmp_path / "m.st"), "--task", "t", "--data", str(readme), *LEARN]) == 2
    err = capsys.readouterr().err
    assert "unknown data format 'README.md' (suffix '.md')" in err and "use a .npz file" in err
    assert not (tmp_path / "m.st").exists() and not (tmp_path / "m.st.lock").exists()
