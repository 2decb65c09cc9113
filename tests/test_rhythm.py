"""The adaptive night (``--schedule adaptive``): its decisions, and the guarantees a fixed schedule gives -- the
night's steps are the budget's, and it ends on the capacity target to the weight."""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sleepcl.nightly import NightlyModel, learn
from sleepcl.nightly.rhythm import Rhythm, share_targets
from sleepcl.schedule import free_after_task


def drive(losses, final_at=None):
    """Run a rhythm through a night of 1000 steps, the validation loss after round k being ``losses[k]``."""
    r = Rhythm()
    at, k = Fraction(0), 0
    while True:
        final = final_at is not None and at >= final_at
        u = r.next_share(losses[min(k, len(losses) - 1)], at, final=final)
        k += 1
        nxt = r.next_position(at)
        if nxt is None:
            return r, u
        assert nxt > at
        at = nxt


def test_pace_doubles_when_a_round_costs_little_and_halves_when_it_costs_much():
    cheap, _ = drive([0.1] * 20)
    assert [e["u"] for e in cheap.log] == [0.25, 0.75, 1.0] and cheap.done
    dear, _ = drive([0.1] + [0.5] * 20)  # every round costs 0.4 nats over the trained network's 0.1
    assert [e["pace"] for e in dear.log][:3] == [0.25, 0.125, 0.0625] and dear.done
    assert len(dear.log) <= dear.max_rounds


@given(st.lists(st.floats(0.0, 3.0), min_size=1, max_size=30))
def test_the_default_rule_never_runs_fewer_than_three_rounds(losses):
    """Why it cannot match N = 1 or 2 (the conv network's best N at p = 0.95 and near-best at 0.8, report
    docs/results/nightly-rhythm-vgg): round 1 goes a quarter of the path, at most doubling leaves a quarter
    after round 2, so a night that is not cut short has at least three prunes."""
    r, _ = drive(losses)
    assert len(r.log) >= 3 and r.log[0]["u"] == 0.25 and r.log[1]["u"] <= 0.75


@given(st.lists(st.floats(0.0, 3.0), min_size=1, max_size=30), st.sampled_from([None, Fraction(1, 2), Fraction(9, 10)]))
def test_every_night_ends_on_the_target_within_max_rounds(losses, final_at):
    r, u = drive(losses, final_at)
    assert u == 1.0 and r.done and 1 <= len(r.log) <= r.max_rounds
    positions = [e["position"] for e in r.log]
    assert positions == sorted(positions) and positions[0] == 0 and positions[-1] < 1


def test_share_targets_follow_the_geometric_path_and_end_exactly():
    held, keep = {"a": 10000, "b": 500}, {"a": 10, "b": 3}
    assert share_targets(held, keep, 0.0) == held and share_targets(held, keep, 1.0) == keep
    half = share_targets(held, keep, 0.5)
    assert half["a"] == 316 and keep["b"] <= half["b"] <= held["b"]


@pytest.mark.parametrize("budget", [None, "6s"])
def test_adaptive_night_keeps_the_budget_and_ends_on_the_capacity_target(tasks, tmp_path, budget):
    from test_nightly import TickClock

    path = tmp_path / "m.st"
    kw = dict(epochs=3, retrain_epochs=4) if budget is None else dict(budget=budget, clock=TickClock(0.004),
                                                                      max_epochs=1000)
    r = None
    for k in range(2):
        r = learn(path, f"task{k}", tasks[k]["train"], val_data=tasks[k]["val"], widths=(32, 32), schedule="adaptive",
                  final_free=0.5, expected_tasks=2, threads=1, **kw)
        m = NightlyModel.load(path)
        for name, n in m.layer_sizes().items():  # the night ended on the capacity target, to the weight
            assert m.free_counts()[name] == round(n * free_after_task(k + 1, 2, 0.5))
        assert r["schedule"] == "adaptive" and r["rounds"] == len(r["rhythm"]) >= 1
        if budget is None:
            assert r["night_steps"] == 4 * r["steps_per_epoch"]  # every step of the night's budget, no more
        else:
            assert r["total_seconds"] <= 6
    with pytest.raises(ValueError, match="does not go with --schedule adaptive"):
        learn(tmp_path / "n.st", "x", tasks[0]["train"], schedule="adaptive", rounds=4)


def test_lookahead_takes_the_longest_round_whose_prune_costs_little_at_once():
    # pruning to share u adds 2 * u**2 nats at once: from u = 0 with pace 0.25 the tries are 0.5 (0.5 nats), 0.25
    # (0.125), ...; a lookahead of 0.2 takes 0.25
    r = Rhythm(lookahead=0.2)
    tried = []

    def damage(u):
        tried.append(u)
        return 0.1 + 2 * u**2

    assert r.next_share(0.1, Fraction(0), final=False, damage=damage) == 0.25
    assert tried == [0.5, 0.25] and r.pace == 0.25
    # at the end of the steps the target is reached whatever the damage
    assert r.next_share(0.1, Fraction(99, 100), final=True, damage=damage) == 1.0


# -- the committed comparison (examples/nightly_rhythm.py, examples/rhythm_report.py) --------------------------

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
RHYTHM_REPORTS = sorted((EXAMPLES.parent / "docs" / "results").glob("nightly-rhythm*/report.md"))


def _example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("page", RHYTHM_REPORTS, ids=lambda p: p.parent.name)
def test_each_rhythm_report_reproduces_from_its_runs_csv(page: Path, tmp_path, monkeypatch) -> None:
    """The report's Command line, run on a copy of its folder, writes the same report (it trains nothing)."""
    command = re.search(r"^- \*\*Command:\*\* `python examples/rhythm_report.py (\S+) (.*?)`", page.read_text(),
                        flags=re.M)
    assert command, "no Command line"
    root = tmp_path / "root"
    shutil.copytree(page.parent, root / command.group(1))
    (root / command.group(1) / "report.md").unlink()
    monkeypatch.setattr(sys, "argv", ["rhythm_report.py", command.group(1), *command.group(2).split()])
    monkeypatch.chdir(root)
    _example("rhythm_report").main()
    assert (root / command.group(1) / "report.md").read_text() == page.read_text()


def test_the_subsample_is_stratified_disjoint_and_decided_by_the_seed() -> None:
    nr = _example("nightly_rhythm")
    y = np.repeat([3, 7], [50, 30])
    draw = lambda seed, n, exclude=None: nr.stratified(y, n, np.random.default_rng(seed), exclude)  # noqa: E731
    a = draw(0, 11)
    assert len(a) == 11 and sorted(np.bincount(y[a])[[3, 7]]) == [5, 6]
    assert np.array_equal(a, draw(0, 11)) and not np.array_equal(a, draw(1, 11))
    b = draw(0, 40, exclude=a)
    assert not set(a) & set(b) and np.bincount(y[b])[3] == 20
    assert np.array_equal(draw(0, None), np.arange(80))
    with pytest.raises(ValueError, match="class 7 has 30"):
        draw(0, 70)
