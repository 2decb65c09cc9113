"""Behaviour of the population engine on real (small) data: freezing, capacity, equivalence, forgetting."""

import dataclasses

import pytest
import torch

from sleepcl.engine import ownership
from sleepcl.config import RunConfig
from sleepcl.models import build_network
from sleepcl.engine.population import Population, train_population
from sleepcl.schedule import free_after_task

SMALL = dict(widths=(48, 32), epochs=2, retrain_epochs=2, batch_size=64)


def cfg(**kw):
    return RunConfig(**{**SMALL, **kw})


def test_frozen_weights_of_task_1_are_bit_identical_after_task_5(mnist5k):
    pop = Population([cfg(seed=0, rounds=2), cfg(seed=1, rounds=1, final_free=0.5)], mnist5k)
    snapshot = {}

    def after_day(p, day):
        if day == 0:
            for name, o in p.owner.items():
                snapshot[name] = (o == 1).clone(), p.params[name].detach().clone()
            for name in ("fc0.bias", "fc1.bias"):
                snapshot[name] = p.params[name].detach().clone()
            snapshot["head0"] = p.params["head.weight"][:, 0].detach().clone()

    results = pop.fit(on_day_end=after_day)
    for name in pop.owner:
        kept, before = snapshot[name]
        assert kept.any()
        assert torch.equal(pop.owner[name] == 1, kept), "task 1 lost or gained weights"
        assert torch.equal(pop.params[name].detach()[kept], before[kept]), f"{name}: a frozen weight moved"
        # Weights of later tasks did change: the test would notice if nothing trained.
        assert not torch.equal(pop.params[name].detach()[~kept], before[~kept])
    for name in ("fc0.bias", "fc1.bias"):
        assert torch.equal(pop.params[name].detach(), snapshot[name])
    assert torch.equal(pop.params["head.weight"][:, 0].detach(), snapshot["head0"])
    for r in results:
        column = [row[0] for row in r.accuracy_matrix]
        assert len(set(column)) == 1, f"task 1 accuracy changed: {column}"
        assert r.accuracy_matrix[0][0] > 0.9


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_final_free_fraction_equals_p(mnist5k, scope):
    members = [cfg(seed=s, final_free=p, rounds=n, prune_scope=scope)
               for s, p, n in [(0, 0.9, 1), (1, 0.5, 2), (2, 0.99, 2)]]
    pop = Population(members, mnist5k)
    results = pop.fit()
    for m, c in enumerate(pop.configs):
        free = {name: int((o[m] == ownership.FREE).sum()) for name, o in pop.owner.items()}
        sizes = {name: o[m].numel() for name, o in pop.owner.items()}
        if scope == "layer":
            for name in free:
                assert abs(free[name] - sizes[name] * c.final_free) <= 1, (name, free[name], sizes[name])
        else:
            assert abs(sum(free.values()) - sum(sizes.values()) * c.final_free) <= len(free)
        after = results[m].free_fraction_after_task
        for t, f in enumerate(after, start=1):
            assert f == pytest.approx(free_after_task(t, 5, c.final_free), abs=len(free) / sum(sizes.values()))
        # Freed weights are exactly zero: the network for later tasks cannot see them.
        for name, o in pop.owner.items():
            assert torch.all(pop.params[name].detach()[m][o[m] == ownership.FREE] == 0)


def test_each_round_prunes_algorithm_2_fraction(mnist5k):
    [r] = train_population([cfg(rounds=2, final_free=0.9)], mnist5k)
    first_night = r.free_fraction_after_round[0]
    z = 1 - (1 - 0.9 ** 0.2) ** 0.5
    assert first_night[0] == pytest.approx(z, abs=1e-3)           # after round 1, z of the task's weights freed
    assert first_night[1] == pytest.approx(0.9 ** 0.2, abs=1e-3)  # after round 2, r of them


def _solo_vs_population(bench, members, exact):
    pop = Population(members, bench)
    together = pop.fit()
    for m, c in enumerate(members):
        alone_pop = Population([c], bench)
        [alone] = alone_pop.fit()
        assert together[m].free_fraction_after_task == alone.free_fraction_after_task
        for name in pop.params:
            a, b = pop.params[name].detach()[m], alone_pop.params[name].detach()[0]
            if exact:
                assert torch.equal(a, b), f"member {m} {name} differs from its solo run"
            else:
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        for name in pop.owner:
            if exact:
                assert torch.equal(pop.owner[name][m], alone_pop.owner[name][0])
        if exact:
            assert together[m].accuracy_matrix == alone.accuracy_matrix


def test_population_member_equals_solo_run_mlp_bit_identical(mnist5k):
    """Different seeds, p and N in one population; each member is bit-identical to running alone (CPU)."""
    members = [cfg(seed=0, final_free=0.9, rounds=1), cfg(seed=1, final_free=0.5, rounds=2),
               cfg(seed=2, final_free=0.99, rounds=2)]
    _solo_vs_population(mnist5k, members, exact=True)


def test_population_member_equals_solo_run_memory(mnist5k):
    members = [cfg(strategy="memory", seed=3, rounds=2), cfg(strategy="memory", seed=4, final_free=0.6)]
    _solo_vs_population(mnist5k, members, exact=True)


def test_population_member_equals_solo_run_vgg_with_dropout(mnist5k):
    """Grouped convolution may round differently from a single one: equal to a stated tolerance."""
    bench = dataclasses.replace(mnist5k, train=tuple(t[:128] for t in mnist5k.train[:2]),
                                val=mnist5k.val[:2], test=mnist5k.test[:2], classes=mnist5k.classes[:2])
    small = dict(network="vgg", widths=(4, 4, 8, 8, 16), n_tasks=2, epochs=1, retrain_epochs=2, batch_size=32,
                 lr=1e-3)
    members = [RunConfig(seed=0, rounds=1, **small), RunConfig(seed=1, rounds=2, final_free=0.5, **small)]
    _solo_vs_population(bench, members, exact=False)


def test_finetune_forgets_and_packnet_does_not(mnist5k):
    common = dict(widths=(64, 64), epochs=5, retrain_epochs=5, batch_size=64, lr=3e-3)
    [ft] = train_population([RunConfig(strategy="finetune", **common)], mnist5k)
    [pn] = train_population([RunConfig(strategy="packnet", **common)], mnist5k)
    from sleepcl.metrics import backward_transfer, forgetting
    assert forgetting(ft.accuracy_matrix) > 0.005
    assert backward_transfer(ft.accuracy_matrix) < 0
    assert forgetting(pn.accuracy_matrix) == 0.0
    assert backward_transfer(pn.accuracy_matrix) == 0.0


def test_memory_and_multinet_follow_the_capacity_schedule(mnist5k):
    [mem] = train_population([cfg(strategy="memory", final_free=0.8, rounds=2)], mnist5k)
    n = 784 * 48 + 48 * 32
    for t, f in enumerate(mem.free_fraction_after_task, start=1):
        assert f == pytest.approx(0.8 ** (t / 5), abs=2 / n)
    assert min(mem.final_accuracy if hasattr(mem, "final_accuracy") else mem.accuracy_matrix[-1]) > 0.8
    [mn] = train_population([cfg(strategy="multinet", final_free=0.8)], mnist5k)
    assert len(mn.accuracy_matrix) == 1 and None not in mn.accuracy_matrix[0]
    assert mn.free_fraction_after_task == [pytest.approx(0.8, abs=2 / n)]


def test_every_sample_goes_through_its_own_tasks_head():
    net = build_network("mlp", (1, 4, 4), n_tasks=3, widths=(8,))
    params = {k: torch.stack([v, v * 0.5]) for k, v in net.member_state(0)[0].items()}
    x = torch.randn(2, 6, 1, 4, 4)
    task = torch.tensor([[0, 1, 2, 2, 1, 0], [2, 2, 0, 1, 0, 1]])
    mixed = net.logits(params, x, task)
    for s in range(2):
        for b in range(6):
            alone = net.logits(params, x, int(task[s, b]))[s, b]
            torch.testing.assert_close(mixed[s, b], alone)
    # Routing matters: the current head (task 2) would give different logits for a task-0 sample.
    assert not torch.allclose(mixed[0, 0], net.logits(params, x, 2)[0, 0])
