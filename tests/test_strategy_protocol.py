"""Every strategy, the registered ones and one from a user's file, under the engine's guarantees: a member of a
population learns exactly what it learns alone, the fast path learns what the reference path learns, a strategy
that freezes keeps earlier tasks exact, and one that prunes follows the capacity schedule to the weight.

The data is tiny (3 tasks, every 8th training sample: ~90 each, 1 + 2 epochs) so that the ~15 cases stay within seconds.
"""

from __future__ import annotations

import dataclasses
import textwrap

import pytest
import torch

from conftest import assert_task1_weights_stay
from sleepcl.config import RunConfig
from sleepcl.engine import ownership
from sleepcl.engine.population import Population
from sleepcl.schedule import free_after_task
from sleepcl.strategies import STRATEGIES, get_strategy

SMALL = dict(widths=(16, 16), epochs=1, retrain_epochs=2, batch_size=32, n_tasks=3)

USER_STRATEGY = '''
"""A user's method in one file: L2 towards the weights the day began with, which the night prunes by
|w| * (1 + |w - w_start|) instead of magnitude; it counts its steps."""
import torch
from sleepcl.strategies import Strategy
from sleepcl.strategies.base import cross_entropy


class Anchored(Strategy):
    name = "anchored"
    options = {"strength": 0.1}
    needs_day_start = True

    def __init__(self, **options):
        super().__init__(**options)
        self.steps = 0

    def begin_day(self, day, params):
        self.start = {n: p.detach().clone() for n, p in params.items() if not n.startswith("head.")}

    def loss(self, logits, step):
        before = step.outputs_before([0])  # the hook is exercised (and must not change with the population)
        assert before.shape[:3] == (*step.y.shape, 1)
        penalty = sum(((step.params[n] - a) ** 2).sum() for n, a in self.start.items())
        return cross_entropy(logits, step.y) + self.settings["strength"] * penalty

    def after_step(self, step):
        self.steps += 1

    def prune_scores(self, params):
        return {n: params[n].detach().abs() * (1 + (params[n].detach() - self.start[n]).abs())
                for n in self.start if n.endswith("weight") and n in params}
'''


@pytest.fixture(scope="module")
def user_spec(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("user") / "anchored.py"
    path.write_text(textwrap.dedent(USER_STRATEGY))
    return f"{path}:Anchored"


@pytest.fixture(scope="module")
def tiny(mnist5k):
    return dataclasses.replace(mnist5k, train=tuple(t[::8] for t in mnist5k.train[:3]), val=mnist5k.val[:3],
                               test=tuple(t[:120] for t in mnist5k.test[:3]), classes=mnist5k.classes[:3])


# Every registered strategy with its own night, every one that has none by default with a night, and the user's.
CASES = [(name, None) for name in STRATEGIES] + \
        [(name, "rounds") for name, cls in STRATEGIES.items() if not cls.prunes] + [("user", None)]
IDS = [f"{s}" if n is None else f"{s}-night" for s, n in CASES]


def _members(strategy: str, night: str | None) -> list[RunConfig]:
    options = {"buffer": 40} if strategy == "er" else {}
    common = dict(SMALL, strategy=strategy, night=night, strategy_options=options)
    return [RunConfig(seed=0, final_free=0.9, rounds=1, **common),
            RunConfig(seed=1, final_free=0.5, rounds=2, **common)]


def _spec(strategy: str, user_spec: str) -> str:
    return user_spec if strategy == "user" else strategy


@pytest.mark.parametrize("strategy, night", CASES, ids=IDS)
def test_member_learns_what_it_learns_alone(tiny, user_spec, strategy, night):
    members = _members(_spec(strategy, user_spec), night)
    pop = Population(members, tiny)
    together = pop.fit()
    for m, c in enumerate(members):
        alone_pop = Population([c], tiny)
        [alone] = alone_pop.fit()
        assert together[m].accuracy_matrix == alone.accuracy_matrix
        assert together[m].free_fraction_after_task == alone.free_fraction_after_task
        for name in pop.params:
            assert torch.equal(pop.params[name].detach()[m], alone_pop.params[name].detach()[0]), (m, name)
        for name in pop.owner:
            assert torch.equal(pop.owner[name][m], alone_pop.owner[name][0]), (m, name)
        for key, t in pop.strategy.state().items():
            if key != "seen":
                assert torch.equal(t[m], alone_pop.strategy.state()[key][0]), (m, key)


# LwF's old heads learn from the distillation term alone, whose gradient at a day's first steps is zero up to
# rounding (the model equals its copy); Adam scales that noise to full-size steps, so the paths' rounding
# differences grow to ~1e-3 in its weights (measured 2e-3 to 1e-2) where the others stay near 1e-7.
WEIGHT_TOL = {"lwf": 2e-2}


@pytest.mark.parametrize("strategy, night", CASES, ids=IDS)
def test_fast_path_learns_what_the_reference_path_learns(tiny, user_spec, strategy, night):
    """The tolerance of tests/test_fast_path.py, loosened where pruning decides: accuracies within 0.02 (120 test
    samples a task), the same free fractions, owner maps that agree on 99.5% of the weights and 99.5% of the
    weights within 1e-4 (LwF: WEIGHT_TOL). A near-tie of magnitudes may be pruned in one path and kept in the
    other; under Memory's nights such a weight restarts at 0 the next day in one path only, so it differs after."""
    members = _members(_spec(strategy, user_spec), night)
    fast, ref = Population(members, tiny), Population(members, tiny, speed="reference")
    for x, y in zip(fast.fit(), ref.fit()):
        for row_x, row_y in zip(x.accuracy_matrix, y.accuracy_matrix):
            assert all(abs(u - v) <= 0.02 for u, v in zip(row_x, row_y) if u is not None), (row_x, row_y)
        assert x.free_fraction_after_task == y.free_fraction_after_task
    agree = [(fast.owner[n] == ref.owner[n]) for n in fast.owner]
    assert sum(int(a.sum()) for a in agree) >= 0.995 * sum(a.numel() for a in agree)
    close = [(fast.params[n].detach() - ref.params[n].detach()).abs() <= WEIGHT_TOL.get(strategy, 1e-4)
             for n in fast.params]
    assert sum(int(c.sum()) for c in close) >= 0.995 * sum(c.numel() for c in close)
    if strategy in ("packnet", "memory", "finetune", "ewc") and night is None:  # no near-tie decides: all of them
        assert all(bool(c.all()) for c in close)


@pytest.mark.parametrize("strategy, night", CASES, ids=IDS)
def test_capacity_schedule_where_it_prunes_and_exact_old_tasks_where_it_freezes(tiny, user_spec, strategy, night):
    spec = _spec(strategy, user_spec)
    members = _members(spec, night)
    pop = Population(members, tiny)
    strategy_obj = get_strategy(spec, members[0].strategy_options, night=night)
    if strategy_obj.freezes:
        assert_task1_weights_stay(Population(members, tiny), spec)
    used = []
    results = pop.fit(on_day_end=lambda p, day: used.append({n: o != ownership.FREE for n, o in p.owner.items()}))
    days = pop.days()
    for day, u in zip(days, used):
        for m, c in enumerate(members):
            for name, mask in u.items():
                n = mask[m].numel()
                free = round(n * free_after_task(day.capacity_step, 3, c.final_free)) if strategy_obj.prunes else 0
                assert int(mask[m].sum()) == n - free, (name, m, day)
    if strategy_obj.freezes:
        for r in results:  # task 1 answers exactly as it did after its own day
            assert r.accuracy_matrix[-1][0] == r.accuracy_matrix[0][0]
    if not strategy_obj.prunes:
        assert all(d.night_epochs == 0 and d.train_epochs == 3 for d in days)  # E + B: the equal-time budget
    else:
        assert all(d.night_epochs == 2 and d.train_epochs == 1 for d in days)


def test_the_user_strategy_hooks_are_called(tiny, user_spec):
    pop = Population(_members(user_spec, None)[:1], tiny)
    pop.fit()
    assert pop.strategy.steps == sum(d.steps_per_epoch * (d.train_epochs + d.night_epochs) for d in pop.days())
