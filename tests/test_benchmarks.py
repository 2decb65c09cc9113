"""The benchmark scripts still run against the engine's API, and the yardstick learns what sleepcl learns.

benchmarks/ is not a package: the scripts are imported from their folder, as they import each other.
The workload here is tiny and synthetic (the real ones read Fashion-MNIST): this checks the code paths and
the printed tables, never a timing.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import pytest
import torch

from sleepcl.config import RunConfig
from sleepcl.engine.evaluation import EVAL_PARTS
from sleepcl.engine.population import FAST_PARTS
from sleepcl.data.split import class_pairs, make_split_benchmark
from sleepcl.threads import torch_threads

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import population_speed as ps  # noqa: E402
from conftest import easy_digits  # noqa: E402
from plain_loop import run_packnet  # noqa: E402


@pytest.fixture(scope="module")
def workload() -> ps.Workload:
    bench = make_split_benchmark(easy_digits(), class_pairs(None, 2))
    base = RunConfig(benchmark="fashion-mnist", network="mlp", strategy="packnet", n_tasks=2, epochs=2,
                     retrain_epochs=2, rounds=2, final_free=0.8, widths=(32, 32), batch_size=16)
    return ps.Workload("mlp", bench, base, "tiny synthetic MLP workload (test)")


def test_plain_loop_learns_like_sleepcl(workload: ps.Workload) -> None:
    """The yardstick is a correct PackNet: on an easy benchmark both reach high accuracy on every task."""
    cfg = workload.configs(1)[0]
    plain = run_packnet(cfg, workload.bench)["accuracy_matrix"]
    _, _, _, _, sleepcl_acc = ps.run_method("sleepcl", workload, 1, torch.device("cpu"), False)
    assert len(plain) == 2 and all(a is not None and a > 0.9 for a in plain[-1]), plain
    assert sleepcl_acc > 0.9


def test_population_speed_prints_every_table(workload: ps.Workload, monkeypatch, capsys) -> None:
    def fixed_peak(self: ps.PeakMeter, budget_s: float = 0.0) -> float:  # no seconds spent on torch.mm
        self.samples.append(50.0)
        self.best = 50.0
        return 50.0

    monkeypatch.setattr(ps.PeakMeter, "measure", fixed_peak)
    monkeypatch.setattr(ps, "warm_up", lambda w, device: None)
    args = argparse.Namespace(repeats=1, sizes=[1, 2], scaling_repeats=2, no_reference=False, ablation=True,
                              tf32=False)
    peak = ps.PeakMeter(torch.device("cpu"))
    with torch_threads(2):  # two threads: the fast path trains two groups side by side, "one group" is shown
        res = ps.run_workload(workload, args, torch.device("cpu"), peak, compare=2)
        ps.report_workload(res, args, peak.best)
    out = capsys.readouterr().out

    assert set(res["head"]) == {"plain", "sleepcl", "one-group", "reference"}
    assert sorted(res["scaling"]) == [1, 2]
    assert len(res["scaling"][1].seconds) == 2, "each size of the scaling table measured once per repeat"
    assert res["scaling"][2] is res["head"]["sleepcl"], "the head-to-head's size is not measured again"
    for label in ps.LABEL.values():
        assert label in out
    assert "ratio: sleepcl's fast path takes" in out
    assert "groups: 2 groups side by side take" in out
    # One ablation row per part that applies to an MLP, plus the reference path, each with a phase.
    parts = [p for p in FAST_PARTS if p not in ("member_convs", "member_workers", "vmap_members", *EVAL_PARTS)]
    names = [row[0] for row in res["ablation"]]
    assert names == [*parts, "all of them (the reference path)"]
    assert all(row[1] in ("day 1", "night 1", "day 2") and row[2] > 0 and row[3] > 0 for row in res["ablation"])


def test_flops_count_is_the_analytic_one(workload: ps.Workload) -> None:
    """Forward + weight grads + input grads (none for the input layer) per training sample, forward per
    evaluated sample: checked by hand for the tiny MLP."""
    fwd_layers = [2 * 784 * 32, 2 * 32 * 32, 2 * 32 * 2]
    fwd = sum(fwd_layers)
    train_sample = 3 * fwd - fwd_layers[0]
    b = workload.bench
    cfg = workload.base
    expected = sum(b.train[t].numel() * (cfg.epochs + cfg.retrain_epochs) * train_sample
                   + sum(b.test[j].numel() + b.val[j].numel() for j in range(t + 1)) * fwd for t in range(2))
    assert ps.flops_per_member(workload) == pytest.approx(expected)
    assert ps.epochs_per_member(dataclasses.replace(workload)) == 2 * (2 + 2)


def test_busy_cores_run_only_inside_the_block() -> None:
    with ps.BusyCores(2) as busy:
        assert len(busy.procs) == 2 and all(p.poll() is None for p in busy.procs)
    assert all(p.poll() is not None for p in busy.procs)


def test_plain_loop_of_a_users_model_keeps_each_tasks_norm_layers() -> None:
    """The yardstick of models_speed.py: a user's model with BatchNorm, cut by hand into a trunk and per-task
    heads, with each task's BatchNorm state kept; task 1's accuracy must not move while tasks 2 and 3 learn."""
    bench = make_split_benchmark(easy_digits(n_per_class=60, channels=3, size=32), class_pairs(None, 3), val_size=4)
    models = Path(__file__).resolve().parent.parent / "examples" / "models.py"
    cfg = RunConfig(benchmark="cifar10", network=f"{models}:small_convnet", n_tasks=3, epochs=4, retrain_epochs=1,
                    batch_size=16, lr=1e-2, final_free=0.5)
    rows = run_packnet(cfg, bench)["accuracy_matrix"]
    assert rows[0][0] == rows[1][0] == rows[2][0] > 0.8, rows
