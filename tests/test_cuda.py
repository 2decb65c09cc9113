"""The GPU path on a real CUDA device (skipped where there is none, as in CI).

Run on a lent GPU machine with ``bash benchmarks/gpu_session.sh check``. The same properties are checked on
CPU by tests/test_fast_path.py (forced GPU choices, op recording); these check them where they matter:
on CUDA the engine hands whole stacked tensors to the fused Adam, keeps the grouped convolution, and may
use TF32, and nothing in an epoch may wait for the device.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from conftest import assert_task1_weights_stay, easy_digits, run_epochs_inside
from sleepcl.config import RunConfig
from sleepcl.engine.population import Population, train_population
from sleepcl.data.split import class_pairs, make_split_benchmark

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

TOL = 0.02  # accuracy, per task: 2 samples in 100 (float32 on both sides, different kernels)


@pytest.fixture(scope="module")
def bench():
    return make_split_benchmark(easy_digits(n_per_class=150), class_pairs(None, 3))


def _members(**kw) -> list[RunConfig]:
    base = {**dict(n_tasks=3, widths=(64, 64), epochs=2, retrain_epochs=2, batch_size=32), **kw}
    return [RunConfig(seed=0, rounds=1, final_free=0.9, **base), RunConfig(seed=1, rounds=2, final_free=0.5, **base)]


def _close(a, b) -> None:
    for x, y in zip(a, b):
        for row_x, row_y in zip(x.accuracy_matrix, y.accuracy_matrix):
            assert all(abs(u - v) <= TOL for u, v in zip(row_x, row_y) if u is not None), (row_x, row_y)
        assert x.free_fraction_after_task == pytest.approx(y.free_fraction_after_task, abs=1e-9)


@pytest.mark.parametrize("network", ["mlp", "vgg"])
def test_cuda_learns_what_cpu_learns(bench, network):
    members = _members() if network == "mlp" else _members(network="vgg", widths=(8, 8, 16, 16, 32), lr=1e-3)
    _close(train_population(members, bench, "cuda"), train_population(members, bench, "cpu"))


def test_tf32_keeps_the_accuracy(bench):
    members = _members()
    _close(train_population(members, bench, "cuda", tf32=True), train_population(members, bench, "cuda"))


def test_frozen_weights_stay_exact_on_cuda(bench):
    assert_task1_weights_stay(Population(_members(), bench, "cuda"), "cuda")


def test_no_device_sync_inside_an_epoch(bench, monkeypatch):
    """CUDA's own check: with the sync debug mode set to error, any synchronising call inside an epoch raises."""
    @contextlib.contextmanager
    def strict():
        torch.cuda.set_sync_debug_mode("error")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode("default")

    run_epochs_inside(monkeypatch, strict)
    for strategy in ("packnet", "memory"):
        Population(_members(strategy=strategy), bench, "cuda").fit()


def test_a_users_batchnorm_model_on_cuda(bench):
    """The generic path on the device: a user's conv net with BatchNorm learns what it learns on CPU, and its
    first task (weights and its own BatchNorm copy) stays exact."""
    from pathlib import Path

    model = f"{Path(__file__).resolve().parent.parent / 'examples' / 'models.py'}:small_convnet"
    members = _members(network=model, widths=None, lr=3e-3)
    _close(train_population(members, bench, "cuda"), train_population(members, bench, "cpu"))
    assert_task1_weights_stay(Population(members, bench, "cuda"), "cuda user model")
