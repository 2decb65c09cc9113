"""Long task sequences in the engine: exact capacity at T = 50, evaluation that shares work, --eval-every."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import easy_digits

from sleepcl.cli import main
from sleepcl.config import RunConfig
from sleepcl.data.split import load_split_benchmark, make_transformed_benchmark
from sleepcl.engine.evaluation import EVAL_PARTS, Evaluator
from sleepcl.engine.population import FAST_PARTS, Population, evaluation_day
from sleepcl.metrics import average_accuracy, backward_transfer, final_accuracy, forgetting
from sleepcl.runs.records import make_record

T_LONG = 50


@pytest.fixture(scope="module")
def permuted50():
    return load_split_benchmark("permuted-mnist-5k", n_tasks=T_LONG, val_size=0.9)


def long_config(strategy: str = "packnet", **fields) -> RunConfig:
    """Tiny and fast: a 16-16 MLP, 400 training images per task (val_size 0.9) in one step per epoch, no training
    epochs before the night, evaluated once at the end."""
    base = dict(benchmark="permuted-mnist-5k", n_tasks=T_LONG, strategy=strategy, widths=(16, 16), epochs=0,
                retrain_epochs=2, batch_size=400, val_size=0.9, eval_every=T_LONG)
    return RunConfig(**{**base, **fields})


# --------------------------------------------------------------------------------------------- exact capacity


@pytest.mark.parametrize("strategy", ["packnet", "memory"])
def test_free_fraction_is_exact_in_every_layer_after_each_of_50_tasks(permuted50, strategy):
    """Algorithm 2 at T = 50: after task t every layer of every member holds round(n * r**t) free weights (to one
    weight), r = p ** (1/T), for N = 1 and N > 1 in one population (members differ in p and N)."""
    members = [long_config(strategy, final_free=p, rounds=n, seed=k)
               for k, (p, n) in enumerate([(0.5, 1), (0.5, 2), (0.9, 1), (0.9, 2)])]
    pop = Population(members, permuted50)
    free: list[dict[str, list[int]]] = []

    def after(p: Population, day: int) -> None:
        free.append({name: [int((o[m] == 0).sum()) for m in range(p.size)] for name, o in p.owner.items()})

    results = pop.fit(on_day_end=after)
    assert len(free) == T_LONG
    sizes = {name: o[0].numel() for name, o in pop.owner.items()}
    for m, c in enumerate(members):
        r = c.final_free ** (1 / T_LONG)
        for t in range(1, T_LONG + 1):
            for name, n in sizes.items():
                expected = round(n * r ** t)
                assert abs(free[t - 1][name][m] - expected) <= 1, (strategy, c.final_free, c.rounds, t, name)
        total = sum(sizes.values())
        assert results[m].free_fraction_after_task[-1] == pytest.approx(c.final_free, abs=len(sizes) / total)
        for night, after_task in zip(results[m].free_fraction_after_round, results[m].free_fraction_after_task):
            assert len(night) == c.rounds and all(a < b for a, b in zip(night, night[1:]))  # each round frees more
            assert night[-1] == after_task  # and the last lands on the task's target


# --------------------------------------------------------------------------------------------- evaluation


def small_bench(n_tasks: int = 6):
    return make_transformed_benchmark(easy_digits(12), "permuted", n_tasks)


def small_configs(strategy: str, n_tasks: int = 6, **fields) -> list[RunConfig]:
    return [RunConfig(benchmark="permuted-mnist-5k", n_tasks=n_tasks, strategy=strategy, widths=(32, 32), epochs=1,
                      retrain_epochs=1, batch_size=64, seed=s, final_free=p, **fields)
            for s, p in ((0, 0.5), (1, 0.8))]


WITHOUT_EVAL_PARTS = [p for p in FAST_PARTS if p not in EVAL_PARTS]


@pytest.mark.parametrize("strategy", ["packnet", "memory", "multinet"])
def test_shared_evaluation_gives_the_plain_evaluations_numbers(strategy):
    bench = small_bench()
    fast = Population(small_configs(strategy), bench).fit()
    plain = Population(small_configs(strategy), bench, speed=WITHOUT_EVAL_PARTS).fit()
    reference = Population(small_configs(strategy), bench, speed="reference").fit()
    for f, p, r in zip(fast, plain, reference):
        assert f.accuracy_matrix == p.accuracy_matrix == r.accuracy_matrix
        assert f.val_accuracy_matrix == p.val_accuracy_matrix == r.val_accuracy_matrix


def test_frozen_tasks_are_served_from_their_digests_only_while_unchanged():
    bench = small_bench(4)
    pop = Population(small_configs("packnet", 4), bench)
    made = []
    new_evaluator = pop.evaluator
    pop.evaluator = lambda: made.append(new_evaluator()) or made[-1]  # type: ignore[method-assign]
    pop.fit()
    assert (made[0].hits, made[0].misses) == (0 + 1 + 2 + 3, 4)  # in training: each old task from its digests
    ev = new_evaluator()
    tasks = list(range(4))
    first = ev(tasks)
    assert (ev.hits, ev.misses) == (0, 4)
    again = ev(tasks)
    assert (ev.hits, ev.misses) == (4, 4)
    for split in ("test", "val"):
        assert torch.equal(first[split], again[split])
        assert torch.equal(first[split], pop.evaluate(tasks, split))
    # A weight of task 2 (owner 2) changes tasks 2..4's networks, not task 1's; task 3's head only task 3. (The
    # weight keeps its sign: task 1 sees it masked to 0.0 or -0.0, and another byte image counts as a change.)
    with torch.no_grad():
        name = pop.net.prunable[0]
        where = (pop.owner[name][0] == 2).nonzero()[0]
        pop.params[name][(0, *where.tolist())] *= 30.0
        pop.params["head.weight"][1, 2] *= -1
    changed = ev(tasks)
    assert (ev.hits, ev.misses) == (5, 7)
    for split in ("test", "val"):
        assert torch.equal(changed[split], pop.evaluate(tasks, split))
    assert not torch.equal(changed["test"], first["test"])


def test_tasks_that_share_trained_weights_are_not_digested():
    pop = Population(small_configs("memory", 3), small_bench(3))
    pop.fit()
    ev = pop.evaluator()
    ev([0, 1, 2])
    ev([0, 1, 2])
    assert (ev.hits, ev.misses) == (0, 0) and not ev.cache
    assert Evaluator(pop.members, pop.strategy, pop.bench, cache=True).cache is False


# --------------------------------------------------------------------------------------------- --eval-every


def test_evaluation_days():
    assert [d for d in range(10) if evaluation_day(d, 10, 3)] == [2, 5, 8, 9]
    assert [d for d in range(10) if evaluation_day(d, 10, 1)] == list(range(10))
    assert [d for d in range(10) if evaluation_day(d, 10, 50)] == [9]


@pytest.mark.parametrize("strategy", ["packnet", "memory"])
def test_eval_every_skips_rows_and_changes_nothing_else(strategy):
    bench = small_bench(7)
    every = Population(small_configs(strategy, 7), bench).fit()
    third = Population(small_configs(strategy, 7, eval_every=3), bench).fit()
    for a, b in zip(every, third):
        for matrix_a, matrix_b in ((a.accuracy_matrix, b.accuracy_matrix),
                                   (a.val_accuracy_matrix, b.val_accuracy_matrix)):
            assert [i for i, row in enumerate(matrix_b) if row is None] == [0, 1, 3, 4]
            assert all(matrix_b[i] == matrix_a[i] for i in (2, 5, 6))  # the evaluated rows, the last complete
        assert a.free_fraction_after_task == b.free_fraction_after_task
        assert a.free_fraction_after_round == b.free_fraction_after_round
        assert final_accuracy(b.accuracy_matrix) == final_accuracy(a.accuracy_matrix)
        record = json.loads(json.dumps(make_record(b, {})))
        assert record["accuracy_matrix"][0] is None and record["average_accuracy"] == average_accuracy(a.accuracy_matrix)


def test_metrics_skip_rows_that_were_not_evaluated():
    a = [[0.9, None, None], None, [0.7, 0.6, 0.8]]
    assert forgetting(a) == pytest.approx(0.2)  # task 1: best evaluated 0.9, final 0.7; task 2 never before the end
    assert backward_transfer(a) == pytest.approx(-0.2)  # task 1 only: its row just after learning was evaluated
    assert final_accuracy(a) == [0.7, 0.6, 0.8]
    with pytest.raises(ValueError, match="last row"):
        final_accuracy([[0.9, None], None])


def test_eval_every_in_the_config_and_on_the_command_line(no_training, tmp_path, capsys):
    base = RunConfig(benchmark="permuted-mnist-5k", n_tasks=10)
    assert "eval_every" not in base.identity()
    assert RunConfig(benchmark="permuted-mnist-5k", n_tasks=10, eval_every=1).hash() == base.hash()
    assert RunConfig(benchmark="permuted-mnist-5k", n_tasks=10, eval_every=5).hash() != base.hash()
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="--eval-every"):
            RunConfig(eval_every=bad).resolved()
    assert main(["run", "--quiet", "--store", str(tmp_path / "s.sqlite"), "--eval-every", "0"]) == 2
    assert "--eval-every k must be a whole number >= 1" in capsys.readouterr().err


def test_eval_every_from_the_command_line_reaches_the_record(tmp_path):
    out = tmp_path / "runs.json"
    assert main(["run", "--quiet", "--no-store", "--benchmark", "permuted-mnist-5k", "--tasks", "4", "--epochs", "0",
                 "--retrain-epochs", "1", "--widths", "8,8", "--batch-size", "4096", "--eval-every", "2",
                 "--output", str(out), "--threads", "1"]) == 0
    (record,) = json.loads(out.read_text())
    assert record["config"]["eval_every"] == 2
    assert [row is None for row in record["accuracy_matrix"]] == [True, False, True, False]
    assert None not in record["accuracy_matrix"][-1] and len(record["free_fraction_after_task"]) == 4
    assert np.isfinite(record["forgetting"]) and np.isfinite(record["backward_transfer"])


# --------------------------------------------------------------------------------------------- 50 nights example


def test_the_long_nightly_example_runs_and_keeps_night_1_exact(tmp_path):
    """examples/nightly_long.py as written, shortened to 3 nights of one retraining epoch."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "examples" / "nightly_long.py"
    png = tmp_path / "plot.png"
    done = subprocess.run([sys.executable, str(script), "--nights", "3", "--epochs", "0", "--workdir",
                           str(tmp_path / "work"), "--plot", str(png)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "bit-identical to those right after night 1: True" in done.stdout
    assert "equals its accuracy the night it was learnt: True" in done.stdout
    assert png.read_bytes()[:4] == b"\x89PNG" and len(list((tmp_path / "work" / "data").glob("*.npz"))) == 6
