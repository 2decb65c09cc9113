"""Strategies as plug-ins: Memory with a grow-only mask, EWC, and a strategy registered from the user's code."""

from __future__ import annotations

import pytest
import torch

from sleepcl.config import RunConfig
from sleepcl.engine import ownership
from sleepcl.engine.population import Population, train_population
from sleepcl.metrics import forgetting
from sleepcl.schedule import free_after_task
from sleepcl.strategies import STRATEGIES, EWC, PackNet, get_strategy, register

SMALL = dict(widths=(48, 32), epochs=2, retrain_epochs=2, batch_size=64, n_tasks=3)


def _used_after_each_day(strategy: str, mnist5k) -> tuple[Population, list[dict[str, torch.Tensor]]]:
    bench = _three_tasks(mnist5k)
    pop = Population([RunConfig(strategy=strategy, seed=0, final_free=0.6, rounds=2, **SMALL)], bench)
    used = []
    pop.fit(on_day_end=lambda p, day: used.append({n: o[0] != ownership.FREE for n, o in p.owner.items()}))
    return pop, used


def _three_tasks(mnist5k):
    import dataclasses

    return dataclasses.replace(mnist5k, train=mnist5k.train[:3], val=mnist5k.val[:3], test=mnist5k.test[:3],
                               classes=mnist5k.classes[:3])


def test_memory_grow_keeps_weights_in_use_and_adds_capacity_per_task(mnist5k):
    pop, used = _used_after_each_day("memory-grow", mnist5k)
    for t in range(1, 3):
        for name in used[t]:
            assert bool((used[t][name] | ~used[t - 1][name]).all()), f"a weight in use was freed ({name}, day {t + 1})"
    for t, u in enumerate(used, start=1):  # the capacity schedule, to the weight, as PackNet's
        for name, mask in u.items():
            assert int(mask.sum()) == mask.numel() - round(mask.numel() * free_after_task(t, 3, 0.6)), (name, t)
    # the other reading re-selects every day: some weight in use after day 1 is free after day 2
    _, reselected = _used_after_each_day("memory", mnist5k)
    assert any(bool((reselected[0][n] & ~reselected[1][n]).any()) for n in reselected[0])


def test_ewc_without_its_penalty_is_finetuning_bit_for_bit(mnist5k):
    bench = _three_tasks(mnist5k)
    ewc = Population([RunConfig(strategy="ewc", strategy_options={"lambda": 0.0}, seed=3, **SMALL)], bench)
    ft = Population([RunConfig(strategy="finetune", seed=3, **SMALL)], bench)
    a, b = ewc.fit(), ft.fit()
    assert a[0].accuracy_matrix == b[0].accuracy_matrix
    assert all(torch.equal(ewc.params[n], ft.params[n]) for n in ft.params)
    assert set(ewc.strategy.importance) == {n for n in ewc.params if not n.startswith("head.")}


def test_ewc_forgets_less_than_finetuning(mnist5k):
    """At a learning rate that makes fine-tuning forget (0.34 of task 1's accuracy here), EWC forgets less."""
    bench = _three_tasks(mnist5k)
    fast = dict(SMALL, lr=1e-2)
    [ft] = train_population([RunConfig(strategy="finetune", seed=0, **fast)], bench)
    [ewc] = train_population([RunConfig(strategy="ewc", seed=0, strategy_options={"lambda": 1e4}, **fast)], bench)
    assert forgetting(ft.accuracy_matrix) > 0.1  # something to prevent
    assert forgetting(ewc.accuracy_matrix) < forgetting(ft.accuracy_matrix) / 2, (ewc.accuracy_matrix, ft.accuracy_matrix)


def test_ewc_keeps_the_sum_of_every_tasks_penalty_in_two_tensors():
    """The gradient of sum_k F_k (theta - theta_k)^2 equals that of I (theta - anchor)^2, whatever the order."""
    ewc = EWC(**{"lambda": 2.0})
    g = torch.Generator().manual_seed(0)
    fishers = [torch.rand(3, 5, generator=g) for _ in range(3)]
    optima = [torch.randn(3, 5, generator=g) for _ in range(3)]
    for f, theta in zip(fishers, optima):
        ewc.end_of_day(None, {"w": theta}, [{"w": f.sqrt()}])  # one batch whose squared gradient is f
    theta = torch.randn(3, 5, generator=g, requires_grad=True)
    exact = sum((f * (theta - o) ** 2).sum() for f, o in zip(fishers, optima))
    kept = (ewc.importance["w"] * (theta - ewc.anchor["w"]) ** 2).sum()
    torch.testing.assert_close(torch.autograd.grad(kept, theta)[0], torch.autograd.grad(exact, theta)[0])


def test_a_strategy_from_the_users_own_code(mnist5k):
    """A new method is one class: here PackNet that keeps training the biases (they then drift under old tasks,
    which the test shows, so that it proves the hook is called)."""

    class BiasesAlways(PackNet):
        name = "packnet-biases"
        summary = "PackNet, but every task trains the shared biases"

        def trains_shared(self, day_index: int) -> bool:
            return True

    register(BiasesAlways)
    try:
        bench = _three_tasks(mnist5k)
        firsts = {}
        for name in ("packnet", "packnet-biases"):
            pop = Population([RunConfig(strategy=name, seed=0, **SMALL)], bench)
            kept = {}
            pop.fit(on_day_end=lambda p, day: kept.setdefault(day, p.params["fc0.bias"].detach().clone()))
            firsts[name] = torch.equal(kept[0], pop.params["fc0.bias"])
        assert firsts == {"packnet": True, "packnet-biases": False}
    finally:
        STRATEGIES.pop("packnet-biases")


def test_unknown_options_and_bad_values_are_refused():
    with pytest.raises(ValueError, match="strategy 'packnet' has no option 'lambda'; its options: none"):
        get_strategy("packnet", {"lambda": 1})
    with pytest.raises(ValueError, match="lambda must be a finite number >= 0"):
        RunConfig(strategy="ewc", strategy_options={"lambda": float("inf")}).resolved()


def test_strategy_options_leave_other_runs_identity_alone():
    assert RunConfig(strategy="ewc").hash() != RunConfig(strategy="ewc", strategy_options={"lambda": 5}).hash()
    assert "strategy_options" not in RunConfig().identity()
