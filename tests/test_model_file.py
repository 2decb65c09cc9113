"""A deployed model of the user's own network: its identity is its architecture, not its factory's source file; reading
a model file never imports the code it names unless the user asks (``--model``); ``inspect`` needs no factory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sleepcl.nightly import ModelError, NightlyModel, inspect, learn, predict

FACTORY = '''
import torch
from torch import nn


def net(input_shape=(28, 28), num_classes=2):
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, num_classes))
'''

COMMON = dict(epochs=1, retrain_epochs=1, rounds=1, batch_size=64, lr=3e-3, final_free=0.5, threads=1)


@pytest.fixture
def made(tasks, tmp_path):
    """A model of a user's factory (a file in its own folder) after one night."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "mynet.py").write_text(FACTORY)
    factory = f"{code / 'mynet.py'}:net"
    path = tmp_path / "model.st"
    learn(path, "a", tasks[0]["train"], network=factory, **COMMON)
    return path, factory, code / "mynet.py"


def _forget_code() -> None:
    """What a new process starts with: no factory imported, no source digest remembered (the test edits files)."""
    from sleepcl.models import factory_digest

    factory_digest.cache_clear()
    for name in [m for m in sys.modules if m.startswith("sleepcl_user_model_")]:
        del sys.modules[name]


def _rename_network(path: Path, name: str) -> None:
    """Rewrite a model file's metadata so that it names the network ``name`` (what a planted file would do)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta = json.loads(metadata["sleepcl"])
    meta["network"]["name"] = name
    save_file(tensors, str(path), metadata={**metadata, "sleepcl": json.dumps(meta)})


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    code = "import sys; from sleepcl.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_reading_a_model_file_never_imports_the_code_it_names(made, tasks, tmp_path):
    path, _, _ = made
    marker = tmp_path / "imported"
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(marker)!r}, 'w').write('ran')\ndef ok(input_shape=(28, 28)):\n    return None\n")
    _rename_network(path, f"{evil}:ok")
    inspected = _cli("inspect", str(path), cwd=tmp_path)
    assert inspected.returncode == 0, inspected.stderr
    assert f"{evil}:ok" in inspected.stdout
    predicted = _cli("predict", str(path), "--task", "a", "--data", str(tasks[0]["val"]), cwd=tmp_path)
    assert predicted.returncode != 0 and "give --model" in predicted.stderr
    learnt = _cli("learn", str(path), "--task", "b", "--data", str(tasks[1]["train"]), "--epochs", "1",
                  "--retrain-epochs", "1", "--threads", "1", cwd=tmp_path)
    assert learnt.returncode != 0 and "give --model" in learnt.stderr
    assert not marker.exists(), "reading the model file ran the code its metadata names"
    _rename_network(path, "this:x")  # importing the standard library's `this` prints the Zen of Python
    out = _cli("inspect", str(path), cwd=tmp_path)
    assert out.returncode == 0 and "Beautiful is better than ugly" not in out.stdout + out.stderr


def test_inspect_shows_the_model_without_its_factory(made):
    path, _, source = made
    source.unlink()  # the factory is gone
    _forget_code()
    info = inspect(path)
    assert info["tasks"][0]["name"] == "a" and 0 < info["free_fraction"] < 1
    assert [layer["name"] for layer in info["layers"]] == ["1.weight"]  # 3 is the classifier


def test_a_missing_factory_is_named_missing_not_damage(made, tasks):
    path, factory, source = made
    source.unlink()
    _forget_code()
    with pytest.raises(ModelError) as e:
        predict(path, "a", tasks[0]["val"], factory=factory)
    assert "missing" in str(e.value) and "damaged" in str(e.value) and "is not damaged" in str(e.value)


def test_an_edit_that_keeps_the_architecture_loads_with_a_notice_and_a_moved_factory_can_be_named(made, tasks,
                                                                                                     tmp_path):
    path, factory, source = made
    before = predict(path, "a", tasks[0]["val"], factory=factory)["logits"]
    source.write_text(FACTORY + "\n# a comment added later\n")
    _forget_code()
    with pytest.warns(UserWarning, match="source file changed"):
        again = predict(path, "a", tasks[0]["val"], factory=factory)["logits"]
    assert (before == again).all()
    moved = tmp_path / "elsewhere.py"
    moved.write_text(FACTORY)
    assert (predict(path, "a", tasks[0]["val"], factory=f"{moved}:net")["logits"] == before).all()
    learn(path, "b", tasks[1]["train"], network=f"{moved}:net", **COMMON)
    assert len(NightlyModel.load(path, f"{moved}:net").tasks) == 2


@pytest.mark.filterwarnings("ignore:.*source file changed")
def test_an_edit_that_changes_the_architecture_is_refused_naming_the_code(made, tasks):
    path, factory, source = made
    source.write_text(FACTORY.replace("nn.Linear(784, 32), nn.ReLU(), nn.Linear(32,", "nn.Linear(784, 48), nn.ReLU(), "
                                                                                       "nn.Linear(48,"))
    _forget_code()
    with pytest.raises(ModelError, match="builds another network than the one in") as e:
        predict(path, "a", tasks[0]["val"], factory=factory)
    assert "damaged" not in str(e.value)
