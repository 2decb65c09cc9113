"""Groups of members side by side (sleepcl.workers) compute exactly what one population computes."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import sleepcl.population as population
from sleepcl.config import RunConfig
from sleepcl.population import Population, Stopped, train_population
from sleepcl.threads import torch_threads
from sleepcl.workers import default_workers, fit_side_by_side, split_members

SMALL = dict(widths=(48, 32), epochs=2, retrain_epochs=2, batch_size=64, n_tasks=3)


def _members():
    return [RunConfig(seed=s, final_free=p, rounds=n, **SMALL) for s, p, n in [(0, 0.9, 1), (1, 0.5, 2), (2, 0.99, 2)]]


@pytest.fixture
def two_threads():
    with torch_threads(2):
        yield


def _bench(mnist5k):
    import dataclasses

    return dataclasses.replace(mnist5k, train=mnist5k.train[:3], val=mnist5k.val[:3], test=mnist5k.test[:3],
                               classes=mnist5k.classes[:3])


@given(st.integers(1, 40), st.integers(1, 12))
def test_split_members_keeps_order_and_balances(n, groups):
    members = list(range(n))
    parts = split_members(members, groups)
    assert [m for part in parts for m in part] == members
    assert len(parts) == min(n, groups)
    sizes = [len(p) for p in parts]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


def test_zero_groups_are_refused(mnist5k):
    with pytest.raises(ValueError, match="workers must be >= 1"):
        split_members([1, 2], 0)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        train_population(_members(), _bench(mnist5k), workers=0)


def test_default_workers_one_group_per_thread_on_cpu_only():
    cpu = torch.device("cpu")
    assert default_workers(10, cpu, threads=2) == 2
    assert default_workers(1, cpu, threads=2) == 1
    assert default_workers(3, cpu, threads=8) == 3
    assert default_workers(10, cpu, threads=1) == 1
    assert default_workers(10, torch.device("cuda"), threads=2) == 1


def test_groups_side_by_side_are_bit_identical_to_one_population(mnist5k, two_threads):
    bench = _bench(mnist5k)
    members = _members()
    whole = Population(members, bench)
    whole_results = whole.fit()
    groups = [Population(part, bench) for part in split_members(members, 2)]
    events = []
    results = fit_side_by_side(groups, events.append)

    assert torch.get_num_threads() == 2, "the groups' one thread each must not outlive them"
    assert [r.config for r in results] == [r.config for r in whole_results]
    for r, w in zip(results, whole_results):
        assert r.accuracy_matrix == w.accuracy_matrix and r.val_accuracy_matrix == w.val_accuracy_matrix
        assert r.free_fraction_after_round == w.free_fraction_after_round
    start = 0
    for g in groups:
        rows = slice(start, start + g.size)
        for name in whole.params:
            assert torch.equal(g.params[name].detach(), whole.params[name].detach()[rows]), name
        for name in whole.owner:
            assert torch.equal(g.owner[name], whole.owner[name][rows]), name
        start += g.size
    assert all(r.timings["population_size"] == 3 and r.timings["groups"] == 2 for r in results)
    assert len({r.timings["total"] for r in results}) == 1, "one wall time for the whole run"
    # Progress follows the slowest group: steps never go back, and the run ends with one "done" at the end.
    steps = [e.steps_done for e in events]
    assert steps == sorted(steps) and events[-1].phase == "done"
    assert events[-1].steps_done == events[-1].steps_total > 0


def test_a_member_in_a_group_is_bit_identical_to_its_solo_run_on_two_threads(mnist5k, two_threads):
    """Groups train on one intra-op thread each, a solo run on two: the member must not notice."""
    bench = _bench(mnist5k)
    members = _members()
    groups = [Population(part, bench) for part in split_members(members, 2)]
    fit_side_by_side(groups)
    solo = Population(members[2:], bench)
    solo.fit()
    for name in solo.params:
        assert torch.equal(solo.params[name].detach(), groups[1].params[name].detach()), name


def test_train_population_uses_groups_by_default_with_two_threads(mnist5k, two_threads, monkeypatch):
    seen = []
    real = fit_side_by_side

    def spy(groups, progress=None):
        seen.append([g.size for g in groups])
        return real(groups, progress)

    monkeypatch.setattr("sleepcl.workers.fit_side_by_side", spy)
    members = _members()
    bench = _bench(mnist5k)
    grouped = train_population(members, bench)
    assert seen == [[2, 1]]
    alone = train_population(members, bench, workers=1)
    assert seen == [[2, 1]]
    reference = train_population(members[:2], bench, speed="reference")
    assert seen == [[2, 1]], "the reference path trains one population"
    assert [r.accuracy_matrix for r in grouped] == [r.accuracy_matrix for r in alone]
    assert len(reference) == 2


def test_a_failing_group_stops_the_others(mnist5k, two_threads, monkeypatch):
    bench = _bench(mnist5k)
    groups = [Population(part, bench) for part in split_members(_members(), 2)]
    failing = groups[1]
    epochs = {id(g): 0 for g in groups}
    run_epoch = Population.run_epoch

    def counted(self, *args, **kwargs):
        epochs[id(self)] += 1
        if self is failing and epochs[id(self)] == 2:
            raise RuntimeError("boom")
        return run_epoch(self, *args, **kwargs)

    monkeypatch.setattr(Population, "run_epoch", counted)
    with pytest.raises(RuntimeError, match="boom"):
        fit_side_by_side(groups)
    all_epochs = sum(d.train_epochs + d.night_epochs for d in groups[0].days())
    assert epochs[id(groups[0])] < all_epochs, "the healthy group trained on after its sibling failed"
    assert torch.get_num_threads() == 2
    assert all(g.stop is None for g in groups)


def test_ctrl_c_stops_every_group(mnist5k, two_threads, monkeypatch):
    import time

    import sleepcl.workers as workers

    bench = _bench(mnist5k)
    groups = [Population(part, bench) for part in split_members(_members(), 2)]
    epochs = {id(g): 0 for g in groups}
    run_epoch = Population.run_epoch

    def counted(self, *args, **kwargs):
        epochs[id(self)] += 1
        return run_epoch(self, *args, **kwargs)

    def interrupted(futures, return_when):
        deadline = time.monotonic() + 60
        while not all(epochs.values()) and time.monotonic() < deadline:  # until both groups train
            time.sleep(0.001)
        raise KeyboardInterrupt

    monkeypatch.setattr(Population, "run_epoch", counted)
    monkeypatch.setattr(workers, "wait", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fit_side_by_side(groups)
    all_epochs = sum(d.train_epochs + d.night_epochs for d in groups[0].days())
    assert all(0 < n < all_epochs for n in epochs.values()), epochs
    assert torch.get_num_threads() == 2


def test_stop_is_checked_before_every_step(mnist5k):
    import threading

    pop = Population(_members()[:1], _bench(mnist5k))
    pop.stop = threading.Event()
    pop.stop.set()
    with pytest.raises(Stopped):
        pop.fit()


def test_whole_stacks_in_fused_adam_match_member_by_member(mnist5k, two_threads, monkeypatch):
    """Members whose slices are multiples of 16 floats go to the fused kernel as whole stacks; with the
    kernel split between two threads they must update exactly as member by member."""
    bench = _bench(mnist5k)
    members = _members()
    population.fused_adam_stacks_exact("cpu")  # the probe's own calls before the spy
    calls: dict[str, list[int]] = {"whole": [], "by member": []}
    fused = torch._fused_adam_
    spying = "whole"

    def spy(params, *args, **kwargs):
        calls[spying].append(len(params))
        return fused(params, *args, **kwargs)

    monkeypatch.setattr(torch, "_fused_adam_", spy)
    whole = Population(members, bench)
    whole.fit()
    spying = "by member"
    monkeypatch.setattr(population, "fused_adam_stacks_exact", lambda device: False)
    by_member = Population(members, bench)
    by_member.fit()
    assert max(calls["whole"]) < max(calls["by member"]), "whole stacks should mean fewer tensors per call"
    for name in whole.params:
        assert torch.equal(whole.params[name], by_member.params[name]), name
