"""Algorithm 2 and the capacity schedule, as pure maths."""

import math

import pytest
from hypothesis import given, strategies as st

from sleepcl.study.matching import compression_ratio
from sleepcl.schedule import (free_after_task, keep_per_task, night_targets, prune_fraction, sleep_schedule)


@pytest.mark.parametrize("n, tasks, p, z", [
    # z = 1 - (1 - p**(1/T))**(1/N), worked by hand for these cases.
    (1, 5, 0.9, 0.9 ** 0.2),                          # N=1: one round prunes z = r of the task's weights
    (2, 5, 0.9, 1 - (1 - 0.9 ** 0.2) ** 0.5),
    (4, 5, 0.99, 1 - (1 - 0.99 ** 0.2) ** 0.25),
    (72, 5, 0.995, 1 - (1 - 0.995 ** 0.2) ** (1 / 72)),
    (3, 1, 0.5, 1 - 0.5 ** (1 / 3)),
])
def test_algorithm_2(n, tasks, p, z):
    assert prune_fraction(n, tasks, p) == pytest.approx(z, rel=1e-12)


def test_algorithm_2_known_numbers():
    # p = 0.9 over 5 tasks: r = 0.97915..., so a one-shot night prunes 97.9% of what the task trained.
    assert keep_per_task(5, 0.9) == pytest.approx(0.979148362, abs=1e-9)
    assert prune_fraction(1, 5, 0.9) == pytest.approx(0.979148362, abs=1e-9)
    assert prune_fraction(2, 5, 0.9) == pytest.approx(1 - math.sqrt(1 - 0.9 ** 0.2), abs=1e-12)


@given(st.integers(1, 100), st.integers(1, 20), st.floats(0.01, 0.999))
def test_rounds_compose_to_one_task_share(n, tasks, p):
    z = prune_fraction(n, tasks, p)
    assert 0 < z < 1
    assert (1 - z) ** n == pytest.approx(1 - keep_per_task(tasks, p), rel=1e-9)
    assert free_after_task(tasks, tasks, p) == pytest.approx(p, rel=1e-9)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5])
def test_bad_p_refused(bad):
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        prune_fraction(1, 5, bad)


def test_bad_rounds_refused():
    with pytest.raises(ValueError, match="N"):
        prune_fraction(0, 5, 0.9)
    with pytest.raises(ValueError, match="not a multiple"):
        sleep_schedule("uniform", 72, 5)


@given(st.integers(1, 10_000), st.data(), st.sampled_from(["uniform", "lengthening", "cubic"]),
       st.integers(1, 12))
def test_night_targets_end_exactly_and_never_grow(held, data, name, rounds):
    keep = data.draw(st.integers(0, held))
    budget = rounds * data.draw(st.integers(1, 6))
    targets = night_targets(held, keep, sleep_schedule(name, budget, rounds))
    assert len(targets) == rounds
    assert targets[-1] == keep
    assert all(a >= b for a, b in zip([held, *targets], targets))


def test_uniform_night_prunes_z_each_round():
    held, n = 100_000, 4
    z = prune_fraction(n, 5, 0.9)
    keep = round(held * (1 - keep_per_task(5, 0.9)))
    targets = night_targets(held, keep, sleep_schedule("uniform", 8, n))
    previous = held
    for t in targets:
        assert t == pytest.approx(previous * (1 - z), abs=1.5)
        previous = t


def test_schedules_spend_the_budget():
    for name in ("uniform", "lengthening", "cubic"):
        s = sleep_schedule(name, 72, 6)
        assert s.budget == 72 and s.rounds == 6
    assert sleep_schedule("lengthening", 10, 4).round_epochs == (1, 2, 3, 4)
    assert sleep_schedule("uniform", 72, 8).prune_epochs() == tuple(range(0, 72, 9))


def test_compression_ratio_paper_example():
    # Section 2: A keeps 60% free, B 90% free at the same accuracy -> B is 4x more memory efficient.
    assert compression_ratio(0.60, 0.90) == pytest.approx(4.0)
