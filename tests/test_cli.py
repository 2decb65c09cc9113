"""The command line: bad input refused before training, records written, finished runs found again."""

import json

import pytest

import sleepcl.runs.runner
from sleepcl.cli import main

TINY = ["--widths", "16,16", "--epochs", "1", "--retrain-epochs", "2", "--batch-size", "128", "--quiet"]
REQUIRED_KEYS = {"config", "accuracy_matrix", "average_accuracy", "free_fraction_after_task", "timings",
                 "environment", "config_hash", "forgetting", "backward_transfer", "final_accuracy"}


@pytest.mark.parametrize("args, message", [
    (["--final-free", "0"], "strictly between 0 and 1"),
    (["--final-free", "1"], "strictly between 0 and 1"),
    (["--final-free", "0.9,1.5"], "strictly between 0 and 1"),
    (["--rounds", "0"], "at least 1"),
    (["--retrain-epochs", "6", "--rounds", "4"], "not a multiple of N=4"),
    (["--seeds", "9-3"], "range like 0-9"),
    (["--seeds", "1,1"], "twice"),
    (["--benchmark", "mnist", "--data-dir", "/no/such/folder"], "/no/such/folder"),
    (["--benchmark", "cifar10", "--data-dir", "/no/such/folder"], "cifar"),
    (["--device", "cuda:0"], "no GPU"),
    (["--tasks", "7"], "between 1 and 5"),
    (["--epochs", "-1"], ">= 0"),
    (["--threads", "0"], "--threads must be >= 1"),
])
def test_bad_input_is_refused_before_training(no_training, tmp_path, capsys, args, message):
    code = main(["run", *TINY, "--store", str(tmp_path / "s.sqlite"), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err


@pytest.mark.parametrize("args", [["--strategy", "bogus"], ["--benchmark", "imagenet"]])
def test_unknown_names_are_refused(no_training, capsys, args):
    with pytest.raises(SystemExit) as e:
        main(["run", *args])
    assert e.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("model, message", [
    ("resnet", "unknown network 'resnet'; choose one of mlp, vgg or give a model factory"),
    ("no_such_package.models:net", "cannot import 'no_such_package.models'"),
    ("torch.nn:NoSuchThing", "'torch.nn' has no 'NoSuchThing'"),
])
def test_unknown_models_are_refused(no_training, tmp_path, capsys, model, message):
    assert main(["run", *TINY, "--store", str(tmp_path / "s.sqlite"), "--model", model]) == 2
    assert message in capsys.readouterr().err


def test_strategy_options_are_checked(no_training, tmp_path, capsys):
    assert main(["run", *TINY, "--no-store", "--strategy", "ewc", "--strategy-option", "lamda=3"]) == 2
    assert "strategy 'ewc' has no option 'lamda'; its options: lambda (default 100.0)" in capsys.readouterr().err
    assert main(["run", *TINY, "--no-store", "--strategy", "ewc", "--strategy-option", "lambda=-1"]) == 2
    assert "lambda must be a finite number >= 0" in capsys.readouterr().err
    assert main(["run", *TINY, "--no-store", "--strategy-option", "lambda"]) == 2
    assert "is not KEY=VALUE" in capsys.readouterr().err


def test_output_folder_refused(no_training, tmp_path, capsys):
    assert main(["run", *TINY, "--no-store", "--output", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_run_writes_records_and_finds_them_again(tmp_path, monkeypatch, capsys):
    store, out = tmp_path / "runs.sqlite", tmp_path / "runs.json"
    args = ["run", *TINY, "--seeds", "0-1", "--rounds", "1,2", "--store", str(store), "--output", str(out)]
    assert main(args) == 0
    records = json.loads(out.read_text())
    assert len(records) == 4
    for r in records:
        assert REQUIRED_KEYS <= set(r)
        assert len(r["accuracy_matrix"]) == 5 and len(r["free_fraction_after_task"]) == 5
        assert r["free_fraction_after_task"][-1] == pytest.approx(0.9, abs=1e-3)
    assert {(r["config"]["seed"], r["config"]["rounds"]) for r in records} == {(0, 1), (1, 1), (0, 2), (1, 2)}
    assert "task 5" in capsys.readouterr().out

    # Same command again: everything comes from the store, nothing trains.
    monkeypatch.setattr(sleepcl.runs.runner, "train_population",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("retrained a stored run")))
    out2 = tmp_path / "again.json"
    assert main([*args[:-1], str(out2)]) == 0
    assert json.loads(out2.read_text()) == records

    # A new member trains alone, the stored ones are reused.
    calls = []
    real = sleepcl.engine.population.train_population
    monkeypatch.setattr(sleepcl.runs.runner, "train_population", lambda c, *a, **k: calls.append(len(c)) or real(c, *a, **k))
    assert main(["run", *TINY, "--seeds", "0-2", "--store", str(store), "--output", str(out2)]) == 0
    assert calls == [1]


def test_results_lists_filters_and_exports(tmp_path, capsys):
    store = tmp_path / "runs.sqlite"
    assert main(["run", *TINY, "--seeds", "0-2", "--store", str(store)]) == 0
    capsys.readouterr()
    assert main(["results", "--store", str(store), "seed=0,2"]) == 0
    assert "2 runs" in capsys.readouterr().out
    csv = tmp_path / "runs.csv"
    assert main(["results", "--store", str(store), "--export", str(csv)]) == 0
    import pandas as pd
    df = pd.read_csv(csv)
    assert len(df) == 3 and {"average_accuracy", "seed", "final_free"} <= set(df.columns)
    assert main(["results", "--store", str(tmp_path / "none.sqlite")]) == 2


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    for flag in ("--benchmark", "--strategy", "--final-free", "--rounds", "--epochs", "--retrain-epochs", "--seeds",
                 "--batch-size", "--lr", "--device", "--data-dir", "--output", "Table 2"):
        assert flag in text


def test_threads_apply_to_the_training_and_are_restored(tmp_path, monkeypatch):
    import torch

    seen = []
    train = sleepcl.runs.runner.train_population

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return train(*args, **kwargs)

    monkeypatch.setattr(sleepcl.runs.runner, "train_population", spy)
    before = torch.get_num_threads()
    wanted = 2 if before == 1 else 1
    assert main(["run", *TINY, "--tasks", "2", "--no-store", "--threads", str(wanted)]) == 0
    assert seen == [wanted] and torch.get_num_threads() == before


@pytest.mark.parametrize("name, value", [("GOMP_SPINCOUNT", "1000"), ("MKL_CBWR", "AUTO,STRICT")])
def test_the_command_sets_its_process_defaults_unless_the_user_did(monkeypatch, tmp_path, name, value):
    import os
    import subprocess
    import sys

    monkeypatch.delenv(name, raising=False)
    main(["results", "--store", str(tmp_path / "none.sqlite")])
    assert os.environ[name] == value
    monkeypatch.setenv(name, "5")
    main(["results", "--store", str(tmp_path / "none.sqlite")])
    assert os.environ[name] == "5"
    # main sets it before anything loads torch (and with it libgomp, which reads it once)
    code = "import sys, sleepcl.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_run_a_users_own_model_from_a_file(tmp_path, capsys):
    (tmp_path / "mymodels.py").write_text(
        "import math\nfrom torch import nn\n\n"
        "def tiny(input_shape):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 16), nn.ReLU(), nn.Linear(16, 2))\n")
    out = tmp_path / "runs.json"
    spec = f"{tmp_path / 'mymodels.py'}:tiny"
    assert main(["run", "--model", spec, "--epochs", "1", "--retrain-epochs", "1", "--tasks", "2", "--quiet",
                 "--store", str(tmp_path / "s.sqlite"), "--output", str(out)]) == 0
    [record] = json.loads(out.read_text())
    assert record["config"]["network"] == spec and len(record["accuracy_matrix"]) == 2
    assert record["layer_free_fraction"].keys() == {"1.weight"}
    # the model's source is part of the run's identity: an edited model is a new run, not a stored one
    before = record["config_hash"]
    (tmp_path / "mymodels.py").write_text((tmp_path / "mymodels.py").read_text() + "# edited\n")
    from sleepcl.config import RunConfig
    from sleepcl.models import factory_digest

    factory_digest.cache_clear()
    assert RunConfig.from_dict(record["config"]).hash() != before
