"""Groups of members side by side (sleepcl.engine.workers) compute exactly what one population computes."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import sleepcl.engine.adam as adam
from sleepcl.config import RunConfig
from sleepcl.engine.population import Population, Stopped, train_population
from sleepcl.data.split import load_split_benchmark
from sleepcl.threads import torch_threads
from sleepcl.engine.workers import default_workers, fit_side_by_side, split_members

SMALL = dict(widths=(48, 32), epochs=2, retrain_epochs=2, batch_size=64, n_tasks=3)


def _members():
    return [RunConfig(seed=s, final_free=p, rounds=n, **SMALL) for s, p, n in [(0, 0.9, 1), (1, 0.5, 2), (2, 0.99, 2)]]


@pytest.fixture
def two_threads():
    with torch_threads(2):
        yield


@pytest.fixture(scope="module")
def bench():
    """mnist-5k cut to the members' 3 tasks, as the runner loads it for them."""
    return load_split_benchmark("mnist-5k", n_tasks=SMALL["n_tasks"])


@given(st.integers(1, 40), st.integers(1, 12))
def test_split_members_keeps_order_and_balances(n, groups):
    members = list(range(n))
    parts = split_members(members, groups)
    assert [m for part in parts for m in part] == members
    assert len(parts) == min(n, groups)
    sizes = [len(p) for p in parts]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


def test_zero_groups_are_refused(bench):
    with pytest.raises(ValueError, match="workers must be >= 1"):
        split_members([1, 2], 0)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        train_population(_members(), bench, workers=0)


def test_default_workers_one_group_per_thread_on_cpu_only():
    cpu = torch.device("cpu")
    assert default_workers(10, cpu, threads=2) == 2
    assert default_workers(1, cpu, threads=2) == 1
    assert default_workers(3, cpu, threads=8) == 3
    assert default_workers(10, cpu, threads=1) == 1
    assert default_workers(10, torch.device("cuda"), threads=2) == 1


def test_groups_side_by_side_are_bit_identical_to_one_population(bench, two_threads):
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


def test_a_member_in_a_group_is_bit_identical_to_its_solo_run_on_two_threads(bench, two_threads):
    """Groups train on one intra-op thread each, a solo run on two: the member must not notice."""
    members = _members()
    groups = [Population(part, bench) for part in split_members(members, 2)]
    fit_side_by_side(groups)
    solo = Population(members[2:], bench)
    solo.fit()
    for name in solo.params:
        assert torch.equal(solo.params[name].detach(), groups[1].params[name].detach()), name


def test_train_population_uses_groups_by_default_with_two_threads(bench, two_threads, monkeypatch):
    seen = []
    real = fit_side_by_side

    def spy(groups, progress=None):
        seen.append([g.size for g in groups])
        return real(groups, progress)

    monkeypatch.setattr("sleepcl.engine.workers.fit_side_by_side", spy)
    members = _members()
    grouped = train_population(members, bench)
    assert seen == [[2, 1]]
    alone = train_population(members, bench, workers=1)
    assert seen == [[2, 1]]
    reference = train_population(members[:2], bench, speed="reference")
    assert seen == [[2, 1]], "the reference path trains one population"
    assert [r.accuracy_matrix for r in grouped] == [r.accuracy_matrix for r in alone]
    assert len(reference) == 2


def _count_epochs(groups, monkeypatch, fail_at: tuple[int, int] | None = None) -> tuple[dict[int, int], int]:
    """Count each group's epochs (by index); ``fail_at=(group, epoch)`` raises there. Also: epochs in all."""
    epochs = {i: 0 for i in range(len(groups))}
    run_epoch = Population.run_epoch

    def counted(self, *args, **kwargs):
        i = next(i for i, g in enumerate(groups) if g is self)
        epochs[i] += 1
        if fail_at == (i, epochs[i]):
            raise RuntimeError("boom")
        return run_epoch(self, *args, **kwargs)

    monkeypatch.setattr(Population, "run_epoch", counted)
    return epochs, sum(d.train_epochs + d.night_epochs for d in groups[0].days())


def test_a_failing_group_stops_the_others(bench, two_threads, monkeypatch):
    groups = [Population(part, bench) for part in split_members(_members(), 2)]
    epochs, all_epochs = _count_epochs(groups, monkeypatch, fail_at=(1, 2))
    with pytest.raises(RuntimeError, match="boom"):
        fit_side_by_side(groups)
    assert epochs[0] < all_epochs, "the healthy group trained on after its sibling failed"
    assert torch.get_num_threads() == 2
    assert all(g.stop is None for g in groups)


def test_ctrl_c_stops_every_group(bench, two_threads, monkeypatch):
    import time

    import sleepcl.engine.workers as workers

    groups = [Population(part, bench) for part in split_members(_members(), 2)]
    epochs, all_epochs = _count_epochs(groups, monkeypatch)

    def interrupted(futures, return_when):
        deadline = time.monotonic() + 60
        while not all(epochs.values()) and time.monotonic() < deadline:  # until both groups train
            time.sleep(0.001)
        raise KeyboardInterrupt

    monkeypatch.setattr(workers, "wait", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fit_side_by_side(groups)
    assert all(0 < n < all_epochs for n in epochs.values()), epochs
    assert torch.get_num_threads() == 2


def test_stop_is_checked_before_every_step(bench):
    import threading

    pop = Population(_members()[:1], bench)
    pop.stop = threading.Event()
    pop.stop.set()
    with pytest.raises(Stopped):
        pop.fit()


def test_whole_stacks_in_fused_adam_match_member_by_member(bench, two_threads, monkeypatch):
    """Members whose slices are multiples of 16 floats go to the fused kernel as whole stacks; with the
    kernel split between two threads they must update exactly as member by member."""
    members = _members()
    adam.fused_adam_stacks_exact("cpu")  # the probe's own calls before the spy
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
    monkeypatch.setattr(adam, "fused_adam_stacks_exact", lambda device: False)
    by_member = Population(members, bench)
    by_member.fit()
    assert max(calls["whole"]) < max(calls["by member"]), "whole stacks should mean fewer tensors per call"
    for name in whole.params:
        assert torch.equal(whole.params[name], by_member.params[name]), name
