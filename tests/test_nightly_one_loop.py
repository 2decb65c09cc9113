"""``sleepcl learn`` trains through the engine's one loop (:meth:`sleepcl.engine.population.Population.train`):
the same nights, bit for bit, as the loop nightly/ had of its own until commit c4df0c0, and the same budget
guarantees.

The reference (tests/data/old_loop/) was written by :func:`three_nights` and :func:`answers` below, run with the
code of commit c4df0c0 (the last with nightly/night.py's own loop): ``PYTHONPATH=<c4df0c0's src> python
tests/test_nightly_one_loop.py FOLDER``. Three nights of the MLP cover a fixed schedule, the adaptive one (its
validation-loss hook) and ``auto`` (a probe population with torch's Adam, copied from the night's member); a VGG
night covers the conv path (the paper's VGG has no norm layers); two nights of a user's network with BatchNorm
cover the recalibration of its statistics at the end of each night. Bit-identity holds on one kind of CPU and
one torch build (float arithmetic is the CPU's): the reference was made on this project's 2-core CPU machine
with torch 2.13.0; elsewhere, write it again with the command above.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REFERENCE = Path(__file__).parent / "data" / "old_loop"
MLP = dict(widths=(16, 16), epochs=2, retrain_epochs=2, threads=1, final_free=0.5, seed=5)
NIGHTS = [dict(schedule="uniform", rounds=2), dict(schedule="adaptive"),
          dict(schedule="auto", candidates=["uniform:1", "uniform:2"])]
VGG = dict(network="vgg", widths=(4, 4, 8, 8, 16), epochs=1, retrain_epochs=1, batch_size=32, lr=1e-3, threads=1,
           final_free=0.5, seed=2, rounds=1)
BN_FACTORY = "sleepcl_bn_reference:net"  # tests/data/old_loop/sleepcl_bn_reference.py: a user's net with BatchNorm
BN = dict(network=BN_FACTORY, epochs=1, retrain_epochs=2, rounds=2, batch_size=64, lr=3e-3, threads=1,
          final_free=0.5, seed=4)
MODELS = {"mlp": 3, "vgg": 1, "bn": 2}  # nights of each
FACTORIES = {"bn": BN_FACTORY}


def three_nights(folder: Path, tasks: list[dict[str, Path]]) -> None:
    """The MLP's three nights (``mlp.safetensors``), the VGG's one (``vgg.safetensors``) and two of a user's
    network with BatchNorm (``bn.safetensors``) in ``folder``."""
    from sleepcl.nightly import learn

    for k, extra in enumerate(NIGHTS):
        learn(folder / "mlp.safetensors", f"task{k}", tasks[k]["train"], val_data=tasks[k]["val"], **MLP, **extra)
    learn(folder / "vgg.safetensors", "task0", tasks[0]["train"], val_data=tasks[0]["val"], **VGG)
    for k in range(MODELS["bn"]):
        learn(folder / "bn.safetensors", f"task{k}", tasks[k]["train"], val_data=tasks[k]["val"], **BN)


def answers(folder: Path, tasks: list[dict[str, Path]]) -> dict[str, np.ndarray]:
    """What the models in ``folder`` answer on every task's test data, told the task and not."""
    from sleepcl.nightly import predict
    from sleepcl.nightly.model import predict_any_task

    out = {}
    for name, n in MODELS.items():
        factory = FACTORIES.get(name)
        for k in range(n):
            out[f"{name}_task{k}_logits"] = predict(folder / f"{name}.safetensors", f"task{k}", tasks[k]["test"],
                                                    factory=factory)["logits"]
        untold = predict_any_task(folder / f"{name}.safetensors", tasks[0]["test"], factory=factory)
        out[f"{name}_untold"] = np.stack([untold["task_index"], untold["class_index"]])
    return out


def tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


# What a night records that depends on the clock, the date or where the data lay.
VARIES = {"started", "seconds", "timings", "costs", "val_source", "learnt", "created", "updated"}


def recorded(path: Path, factory: str | None) -> dict:
    """The model's metadata less what :data:`VARIES`."""
    from sleepcl.nightly import NightlyModel

    meta = NightlyModel.load(path, factory=factory).meta

    def strip(v):
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if k not in VARIES}
        if isinstance(v, list):
            return [strip(x) for x in v]
        return v

    return strip(meta)


@pytest.fixture
def factories(monkeypatch):
    monkeypatch.syspath_prepend(str(REFERENCE))  # the BatchNorm net's factory, as package.module:function


def test_learn_gives_the_old_loops_nights_bit_for_bit(tasks, tmp_path, factories):
    three_nights(tmp_path, tasks)
    for name in MODELS:
        new, old = tensors(tmp_path / f"{name}.safetensors"), tensors(REFERENCE / f"{name}.safetensors")
        assert new.keys() == old.keys()
        for k in old:
            assert torch.equal(new[k], old[k]), f"{name}: {k} differs from the old loop's"
        factory = FACTORIES.get(name)
        assert recorded(tmp_path / f"{name}.safetensors", factory) == recorded(REFERENCE / f"{name}.safetensors", factory)


def test_models_saved_by_the_old_loop_load_and_answer_the_same(tasks, tmp_path, factories):
    expected = np.load(REFERENCE / "answers.npz")
    for name in MODELS:  # a copy: reading takes the model's lock, beside the file
        (tmp_path / f"{name}.safetensors").write_bytes((REFERENCE / f"{name}.safetensors").read_bytes())
    got = answers(tmp_path, tasks)
    assert sorted(got) == sorted(expected.files)
    for k in expected.files:
        assert np.array_equal(got[k], expected[k]), k


# -- the budget, kept through the engine's loop ---------------------------------------------------------------

class WorkClock:
    """A clock the work moves: each reading costs ``tick``, each optimizer step ``step_s`` seconds (the engine's
    steps report themselves: :meth:`stepped`), so the planner sees the same times whatever the load of the
    machine. ``slow_after`` steps in, every step takes ``slow_factor`` times longer (the machine got busy)."""

    def __init__(self, tick: float, step_s: float, slow_after: int, slow_factor: float):
        self.now, self.tick, self.step_s, self.slow_after, self.slow_factor = 0.0, tick, step_s, slow_after, slow_factor
        self.steps = 0

    def __call__(self) -> float:
        self.now += self.tick
        return self.now

    def stepped(self) -> None:
        self.steps += 1
        self.now += self.step_s * (self.slow_factor if self.steps > self.slow_after else 1.0)


@pytest.mark.parametrize("night", [dict(schedule="uniform", rounds=3), dict(schedule="adaptive"),
                                   dict(schedule="auto", candidates=["uniform:1", "uniform:4"]),
                                   dict(policy="tolerance", tolerance=0.02)],
                         ids=["uniform", "adaptive", "auto", "tolerance"])
def test_a_night_that_slows_down_overruns_its_budget_by_at_most_5_percent(tasks, tmp_path, monkeypatch, night):
    """Steps of 4 ms that become 12 ms a third of the way in (the planner's warm-up measured the fast ones): the
    night re-plans, ends on the capacity target and is saved within 5 % of its 6 s budget, using most of it."""
    from sleepcl.engine.day import DaySession
    from sleepcl.nightly import NightlyModel, learn
    from sleepcl.schedule import free_after_task

    budget = 6.0
    clock = WorkClock(tick=2e-4, step_s=0.004, slow_after=250, slow_factor=3.0)
    real_step = DaySession.step

    def step(self, *args, **kwargs):
        real_step(self, *args, **kwargs)
        clock.stepped()

    monkeypatch.setattr(DaySession, "step", step)
    path = tmp_path / "m.safetensors"
    capacity = {} if night.get("policy") == "tolerance" else dict(final_free=0.5)
    r = learn(path, "task0", tasks[0]["train"], val_data=tasks[0]["val"], budget=budget, widths=(16, 16),
              max_epochs=10_000, threads=1, clock=clock, **capacity, **night)
    assert clock.steps > 250, "the night never reached the slow steps"
    assert r["overrun_s"] <= 0.05 * budget, f"overran {budget:g} s by {r['overrun_s']:.3f} s"
    assert r["total_seconds"] >= 0.8 * budget
    m = NightlyModel.load(path)
    if night.get("policy") != "tolerance":  # the tolerance policy keeps at most the target (fewer within tolerance)
        for name, n in m.layer_sizes().items():
            assert m.free_counts()[name] == round(n * free_after_task(1, 5, 0.5))


# -- the loop itself ------------------------------------------------------------------------------------------

class Recorder:
    """A session that records what the loop asks of it."""

    def __init__(self):
        self.log = []

    def step(self, x, y, task):
        self.log.append(("step", int(x)))

    def prune(self, member, keep, scope):
        self.log.append(("prune", member, keep))


def test_the_loop_prunes_each_member_where_its_night_puts_it_and_ends_on_its_last_round():
    from fractions import Fraction

    from sleepcl.engine.loop import MemberNight, Night, Steps, train

    session = Recorder()
    plans = [MemberNight([Fraction(0), Fraction(1, 2)], [10, 5]), MemberNight([Fraction(0), Fraction(1, 3),
                                                                              Fraction(2, 3), Fraction(1)], [9, 8, 7, 6])]
    seen = []
    night = Night(session, plans, before_prune=lambda m, p: seen.append((m, p.rounds_done)))  # type: ignore[arg-type]
    train(session, iter((k, None, 0) for k in range(100)), Steps(6), night)  # type: ignore[arg-type]
    assert session.log == [("prune", 0, 10), ("prune", 1, 9), ("step", 0), ("step", 1),
                           ("prune", 1, 8), ("step", 2), ("prune", 0, 5), ("step", 3), ("prune", 1, 7), ("step", 4),
                           ("step", 5), ("prune", 1, 6)]
    assert seen == [(0, 0), (1, 0), (1, 1), (0, 1), (1, 2), (1, 3)]


def test_a_budget_that_ends_early_still_takes_the_nights_remaining_prunes():
    from fractions import Fraction

    from sleepcl.engine.loop import MemberNight, Night, Steps, train

    class Cut(Steps):  # planned 10 steps, stopped after 3 (a deadline came early)
        def keep_going(self):
            if self.done == 3:
                self.planned = 3
            return super().keep_going()

    session = Recorder()
    plan = MemberNight([Fraction(0), Fraction(1, 2), Fraction(3, 4)], [3, 2, 1])
    train(session, iter((k, None, 0) for k in range(100)), Cut(10), Night(session, [plan]))  # type: ignore[arg-type]
    assert session.log == [("prune", 0, 3), ("step", 0), ("step", 1), ("step", 2), ("prune", 0, 2), ("prune", 0, 1)]


def test_a_population_asked_to_stop_stops_before_the_next_step():
    import threading

    from sleepcl.engine.loop import Steps, Stopped, train

    session, stop = Recorder(), threading.Event()
    batches = iter((k, None, 0) for k in range(100))
    train(session, batches, Steps(2, stop))  # type: ignore[arg-type]
    stop.set()
    with pytest.raises(Stopped):
        train(session, batches, Steps(2, stop))  # type: ignore[arg-type]
    assert session.log == [("step", 0), ("step", 1)]


if __name__ == "__main__":  # write the reference (see the module docstring)
    sys.path[:0] = [str(Path(__file__).parent), str(REFERENCE)]
    import tempfile

    from conftest import tasks as tasks_fixture

    folder = Path(sys.argv[1])
    folder.mkdir(parents=True, exist_ok=True)

    class Factory:
        def mktemp(self, name: str) -> Path:
            return Path(tempfile.mkdtemp(prefix=name))

    data = tasks_fixture.__wrapped__(Factory())
    torch.set_num_threads(1)
    three_nights(folder, data)
    np.savez(folder / "answers.npz", **answers(folder, data))
    print(sorted(p.name for p in folder.iterdir()))
