"""What defines LwF, SI and ER, a user's strategy through the command line, and the identity of strategy options,
nights and user strategies."""

from __future__ import annotations

import dataclasses
import json
import textwrap

import pytest
import torch

from sleepcl.cli import main
from sleepcl.config import RunConfig
from sleepcl.engine.population import Population
from sleepcl.strategies import SI, Step, get_strategy
from sleepcl.strategies.er import reservoir_slots

SMALL = dict(widths=(32, 32), epochs=2, retrain_epochs=2, batch_size=32, n_tasks=2)


@pytest.fixture(scope="module")
def two_tasks(mnist5k):  # every 4th training sample (a task's samples are sorted by class)
    return dataclasses.replace(mnist5k, train=tuple(t[::4] for t in mnist5k.train[:2]), val=mnist5k.val[:2],
                               test=mnist5k.test[:2], classes=mnist5k.classes[:2])


def _task1_output_shift(strategy: str, bench, **options) -> float:
    """Mean absolute change of task 1's log-probabilities on its test inputs from the end of day 1 to the end of
    day 2 (what distillation holds: a logit shift common to all classes changes nothing)."""
    pop = Population([RunConfig(strategy=strategy, seed=0, lr=3e-3, strategy_options=options, **SMALL)], bench)
    x = bench.inputs(bench.test[0][None], task=0)
    seen = []
    pop.fit(on_day_end=lambda p, day: seen.append(
        p.net.logits(p.params, x, 0, buffers=p.members.buffers).detach().log_softmax(-1)))
    return float((seen[1] - seen[0]).abs().mean())


def test_lwf_old_task_outputs_move_less_than_finetunings(two_tasks):
    """LwF's defining behaviour (Li & Hoiem): distillation holds the old head's outputs on new data near the
    model's before the task, so they move less than under fine-tuning; alpha = 0 is fine-tuning."""
    finetune = _task1_output_shift("finetune", two_tasks)
    lwf = _task1_output_shift("lwf", two_tasks)
    assert lwf < finetune / 3, (lwf, finetune)  # measured 0.34 against 2.14
    assert _task1_output_shift("lwf", two_tasks, alpha=0.0) == finetune


def test_si_importance_is_the_path_integral_of_the_loss_drop():
    """SI's defining behaviour (Zenke et al., eq. 3-5): along small gradient steps on a quadratic loss, each weight's
    path integral -sum g * dtheta equals the drop of its part of the loss, and its importance is that divided by
    (its displacement**2 + xi)."""
    si = SI(c=1.0, xi=1e-3)
    a = torch.tensor([[0.5, 2.0, 0.0, 1.0]])          # (S=1, 4): the loss is sum a (theta - target)**2
    target = torch.tensor([[1.0, -1.0, 3.0, 0.5]])
    theta = torch.zeros(1, 4, requires_grad=True)
    params = {"w": theta}
    si.begin_day(None, params)
    start_loss = (a * (theta.detach() - target) ** 2)
    for _ in range(2000):  # small plain gradient steps
        step = Step(None, torch.zeros(1, 1), 0, params, None)
        si._before = {"w": theta.detach().clone()}
        theta.grad = None
        (a * (theta - target) ** 2).sum().backward()
        with torch.no_grad():
            theta -= 1e-3 * theta.grad
        si.after_step(step)
    drop = start_loss - a * (theta.detach() - target) ** 2
    torch.testing.assert_close(si.path["w"], drop, rtol=2e-3, atol=1e-6)
    assert float(si.path["w"][0, 2]) == 0.0  # a weight the loss does not depend on gains no importance
    si.end_of_day(None, params, None)
    expected = drop / (theta.detach() ** 2 + 1e-3)
    torch.testing.assert_close(si.importance["w"], expected, rtol=2e-3, atol=1e-6)
    torch.testing.assert_close(si.anchor["w"], theta.detach())


def test_si_importance_accumulates_over_tasks_in_training(two_tasks):
    pop = Population([RunConfig(strategy="si", seed=0, **SMALL)], two_tasks)
    seen = []
    pop.fit(on_day_end=lambda p, day: seen.append({n: t.clone() for n, t in p.strategy.importance.items()}))
    assert set(seen[0]) == {n for n in pop.params if not n.startswith("head.")}
    for n in seen[0]:
        assert bool((seen[1][n] >= seen[0][n]).all()) and float(seen[1][n].sum()) > float(seen[0][n].sum()) > 0


def test_reservoir_keeps_each_sample_with_equal_probability():
    """Vitter's Algorithm R: after n samples (offered in batches), each is in a buffer of M with probability M/n."""
    capacity, batches, batch, trials = 10, 12, 7, 3000
    n = batches * batch
    counts = torch.zeros(n)
    g = torch.Generator().manual_seed(0)
    for _ in range(trials):
        slot_of = {}
        for k in range(batches):
            slots, sources = reservoir_slots(k * batch, batch, capacity, g)
            for slot, i in zip(slots, sources):
                slot_of[slot] = k * batch + i
        assert len(slot_of) == capacity
        counts[list(slot_of.values())] += 1
    freq = counts / trials
    assert float((freq - capacity / n).abs().max()) < 0.035, freq  # 5 s.e. of a binomial at p = 0.12


def test_er_never_stores_more_than_its_buffer_and_replays_it(mnist5k, tmp_path):
    bench = dataclasses.replace(mnist5k, train=tuple(t[::4] for t in mnist5k.train[:3]), val=mnist5k.val[:3],
                                test=mnist5k.test[:3], classes=mnist5k.classes[:3])
    config = RunConfig(strategy="er", seed=0, strategy_options={"buffer": 50}, **dict(SMALL, n_tasks=3))
    pop = Population([config], bench)
    stored, batch_sizes = [], []
    step = pop.strategy.training_batch
    pop.strategy.training_batch = lambda b: (lambda out: batch_sizes.append(out[1].shape[1]) or out)(step(b))
    [result] = pop.fit(on_day_end=lambda p, day: stored.append(p.strategy.stored))
    assert stored == [50, 50, 50] and pop.strategy.x.shape[:2] == (1, 50)
    tasks = pop.strategy.task[0].tolist()
    assert set(tasks) == {0, 1, 2} and all(tasks.count(t) >= 8 for t in range(3))  # each ~1/3 of 50
    steps_day1 = sum(d.steps_per_epoch * d.train_epochs for d in pop.days()[:1])
    assert set(batch_sizes[:steps_day1]) == {32} and set(batch_sizes[steps_day1:]) == {64}  # replay from day 2
    assert result.strategy_memory == {"stored_samples": 50, "buffer": 50, "bytes": 50 * (784 * 4 + 16)}
    # the record says what the buffer holds
    from sleepcl.runs.records import make_record
    assert make_record(result, {})["strategy_memory"]["stored_samples"] == 50
    assert "strategy_memory" not in make_record(dataclasses.replace(result, strategy_memory={}), {})


def test_options_at_their_default_are_one_run_and_stored_hashes_stay():
    ewc = RunConfig(strategy="ewc")
    assert ewc.hash() == RunConfig(strategy="ewc", strategy_options={"lambda": 100}).hash() == \
        RunConfig(strategy="ewc", strategy_options={"lambda": 100.0}).hash()
    # hashes of runs stored before options were filled in (printed by this branch's parent, 8474fd5)
    assert ewc.hash() == "cae83c2ae31abdccf79177bc46be13759b05836e5a2d1cea4f57fa3fcd5c0fd8"
    assert RunConfig(strategy="ewc", strategy_options={"lambda": 5}).hash() == \
        "55678460307b2f9fef761c9705c86c0eceef62aefe61ce2a88fc40508038898b"
    assert RunConfig(strategy="finetune").hash() == "4e12ba29b8e67833fd742c47d8b07643c4af4ea3f73ae48481978e8d3ca47760"
    assert RunConfig(strategy="multinet", final_free=0.5, rounds=3).hash() == \
        "a1494f21ff8c79c4c9b867561795bc8a345436c92ac96cd142c9c8202b6792a6"
    assert RunConfig(strategy="si").hash() == RunConfig(strategy="si", strategy_options={"c": 1, "xi": 1e-3}).hash()


def test_a_night_is_a_choice_hashed_only_when_it_differs_from_the_strategys():
    assert RunConfig(strategy="ewc", night="none").hash() == RunConfig(strategy="ewc").hash()
    assert RunConfig(strategy="packnet", night="rounds").hash() == RunConfig().hash()
    assert RunConfig(strategy="ewc", night="rounds").hash() != RunConfig(strategy="ewc").hash()
    assert RunConfig(strategy="ewc", night="rounds").resolved().night == "rounds"
    assert get_strategy("ewc", night="rounds").prunes and not get_strategy("ewc").prunes
    with pytest.raises(ValueError, match="packnet' freezes what its night keeps"):
        RunConfig(night="none").resolved()
    with pytest.raises(ValueError, match="unknown --night 'sometimes'"):
        RunConfig(night="sometimes").resolved()


USER = '''
from sleepcl.strategies import Strategy


class Plain(Strategy):
    """Sequential training with Memory's nights, no rehearsal."""
    name = "plain"
    options = {"unused": 1}
'''


def test_a_users_strategy_file_trains_through_the_command_line(tmp_path, capsys, monkeypatch):
    path = tmp_path / "mine.py"
    path.write_text(textwrap.dedent(USER))
    out = tmp_path / "runs.json"
    args = ["run", "--strategy", f"{path}:Plain", "--tasks", "2", "--widths", "16,16", "--epochs", "1",
            "--retrain-epochs", "1", "--batch-size", "128", "--quiet", "--no-store", "--output", str(out)]
    assert main(args) == 0
    [record] = json.loads(out.read_text())
    config = RunConfig.from_dict(record["config"])
    assert config.strategy == f"{path}:Plain" and record["config_hash"] == config.hash()
    assert "strategy_source" in config.identity()
    # the same spec from the folder that holds it, as a module (the way --model finds package.module:function)
    monkeypatch.chdir(tmp_path)
    assert main([*args[:2], "mine:Plain", *args[3:-1], str(tmp_path / "runs2.json")]) == 0
    [again] = json.loads((tmp_path / "runs2.json").read_text())
    assert again["accuracy_matrix"] == record["accuracy_matrix"]
    # bad specs are refused before training, naming the problem
    for spec, message in ((f"{path}:Nope", "has no 'Nope'"), ("torch.nn:Linear", "not a subclass"),
                          ("no_such_module:X", "cannot import 'no_such_module'")):
        assert main([*args[:2], spec, *args[3:]]) == 2
        assert message in capsys.readouterr().err


def test_a_changed_strategy_file_is_another_run(tmp_path):
    from sleepcl.strategies.user import strategy_digest

    path = tmp_path / "changing.py"
    path.write_text(textwrap.dedent(USER))
    first = strategy_digest(f"{path}:Plain")
    path.write_text(textwrap.dedent(USER) + "\n# changed\n")
    strategy_digest.cache_clear()
    import hashlib

    assert strategy_digest(f"{path}:Plain") != first
    assert strategy_digest(f"{path}:Plain") == hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def test_a_strategys_state_is_saved_with_a_nightly_model(two_tasks):
    """A deployed model keeps its member's strategy state (here EWC's importance and anchor) across save and load."""
    import numpy as np

    from sleepcl.nightly.model import NightlyModel
    from sleepcl.nightly.policy import make_policy

    pop = Population([RunConfig(strategy="ewc", seed=0, **SMALL)] * 2, two_tasks)
    pop.fit()
    state = pop.strategy.state()
    model = NightlyModel.create(network="mlp", widths=(32, 32), input_shape=(28, 28), kind="uint8",
                                mean=np.zeros(1, np.float32), std=np.ones(1, np.float32), normalisation="global",
                                policy=make_policy(None, final_free=None, expected_tasks=None, tolerance=None,
                                                   min_keep=None, model=None), training={"lr": 1e-3, "batch_size": 32}, seed=0)
    model.strategy = {k: v[1].clone() for k, v in state.items()}
    loaded = NightlyModel.from_bytes(model.to_bytes())
    assert set(loaded.strategy) == set(state) and all(torch.equal(loaded.strategy[k], state[k][1]) for k in state)
    again = get_strategy("ewc")
    again.load_state({k: v[None] for k, v in loaded.strategy.items()})
    assert all(torch.equal(again.importance[n], pop.strategy.importance[n][1:]) for n in again.importance)


@pytest.mark.parametrize("strategy", ["lwf", "si", "er"])
def test_the_new_strategies_train_through_the_command_line_with_and_without_a_night(tmp_path, strategy):
    out = tmp_path / "runs.json"
    common = ["run", "--strategy", strategy, "--tasks", "2", "--widths", "16,16", "--epochs", "1", "--retrain-epochs",
              "2", "--batch-size", "128", "--quiet", "--no-store", "--output", str(out)]
    assert main([*common, "--night", "rounds", "--final-free", "0.8", "--rounds", "2"]) == 0
    [record] = json.loads(out.read_text())
    assert record["free_fraction_after_task"][-1] == pytest.approx(0.8, abs=1e-3)
    assert [len(r) for r in record["free_fraction_after_round"]] == [2, 2]
    assert main(common) == 0
    [record] = json.loads(out.read_text())
    assert record["free_fraction_after_task"] == [0.0, 0.0] and record["config"]["night"] is None
    assert ("strategy_memory" in record) == (strategy == "er")


def test_the_night_ranks_weights_by_the_strategys_prune_scores(two_tasks):
    """prune_scores replaces magnitude: a strategy that scores 1 / |w| frees the largest weights, and the weights it
    frees are exactly zero, as under magnitude pruning."""
    from sleepcl.engine import ownership
    from sleepcl.strategies import Strategy

    class KeepSmallest(Strategy):
        name = "keep-smallest"

        def prune_scores(self, params):
            return {n: 1 / (params[n].detach().abs() + 1e-12) for n in ("fc0.weight", "fc1.weight", "fc2.weight")
                    if n in params}

    pop = Population([RunConfig(seed=0, **SMALL)], two_tasks)
    pop.strategy = KeepSmallest()
    day = pop.days()[0]
    session = pop.session(day, 0)
    streams, pool = pop.data_streams(day)
    pop.run_epoch(session, streams, pool)
    before = {n: pop.params[n].detach()[0].clone() for n in pop.owner}
    keep = {n: o[0].numel() // 4 for n, o in pop.owner.items()}
    session.prune(0, keep)
    for n, o in pop.owner.items():
        kept = o[0] != ownership.FREE
        assert int(kept.sum()) == keep[n]
        assert float(before[n].abs()[kept].max()) <= float(before[n].abs()[~kept].min())  # the smallest were kept
        assert bool((pop.params[n].detach()[0][~kept] == 0).all())
        assert torch.equal(pop.params[n].detach()[0][kept], before[n][kept])


def test_the_example_strategy_file_trains_with_a_night(two_tasks):
    """examples/strategy.py (the README's example) as a user would name it; its night prunes to p."""
    from pathlib import Path

    spec = f"{Path(__file__).parents[1] / 'examples' / 'strategy.py'}:Anchored"
    config = RunConfig(strategy=spec, night="rounds", final_free=0.8, strategy_options={"strength": 0.5}, **SMALL)
    pop = Population([config], two_tasks)
    [result] = pop.fit()
    assert result.free_fraction_after_task[-1] == pytest.approx(0.8, abs=1e-3)
    assert min(result.accuracy_matrix[-1]) > 0.6
