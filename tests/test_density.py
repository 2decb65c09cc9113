"""Layer-wise density: how the weights tasks keep are shared out among the layers (``--layer-density``).

Under uniform density (the paper's protocol) a small conv net at p = 0.9 over 5 tasks kept 3 of its first
convolution's 144 weights per task: 13 of 16 channels answered a constant, 93 of the 96 weights task 1 kept in the
second convolution read those constant channels, and task 1 answered one class for every input (0.500 right
after its own night). Erdős–Rényi-Kernel density gives small layers a larger share (issue 18)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conftest import assert_task1_weights_stay
from sleepcl.config import RunConfig
from sleepcl.engine.density import erk_densities, erk_free_counts
from sleepcl.engine.population import Population
from sleepcl.schedule import free_after_task

shapes_st = st.dictionaries(st.sampled_from([f"l{i}.weight" for i in range(6)]),
                            st.lists(st.integers(1, 9), min_size=2, max_size=4).map(tuple), min_size=1)


def schedule_totals(shapes, n_tasks: int, p: float) -> list[int]:
    total = sum(math.prod(s) for s in shapes.values())
    return [round(total * free_after_task(t, n_tasks, p)) for t in range(1, n_tasks + 1)]


@given(shapes_st, st.integers(1, 8), st.floats(0.01, 0.99))
def test_erk_counts_add_up_to_the_schedule_and_no_layer_takes_back_weights(shapes, n_tasks, p):
    totals = schedule_totals(shapes, n_tasks, p)
    counts = erk_free_counts(shapes, totals)
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    assert len(counts) == n_tasks
    for free, step in zip(totals, counts):
        assert sum(step.values()) == free  # exactly the schedule's count, to the weight
        assert all(0 <= step[n] <= sizes[n] for n in sizes)
    for before, after in zip([sizes, *counts], counts):
        assert all(after[n] <= before[n] for n in sizes)  # kept weights are never freed again
    # after the last task the free fraction is p, to one weight of the whole network
    assert abs(sum(counts[-1].values()) / sum(sizes.values()) - p) <= 0.5 / sum(sizes.values()) + 1e-12


@given(shapes_st, st.floats(0.0, 1.0))
def test_erk_densities_follow_the_layer_scores_and_use_exactly_the_budget(shapes, share):
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    used = round(share * sum(sizes.values()))
    d = erk_densities(shapes, used)
    assert sum(d[n] * sizes[n] for n in d) == pytest.approx(used, abs=1e-6 * max(1, used))
    assert all(0.0 <= v <= 1.0 + 1e-12 for v in d.values())
    score = {n: sum(s) / sizes[n] for n, s in shapes.items()}
    sparse = [n for n in d if d[n] < 1.0]
    for a in sparse:  # below 1, densities are in the ratio of the scores
        for b in sparse:
            assert d[a] * score[b] == pytest.approx(d[b] * score[a], rel=1e-9, abs=1e-12)
    for a in d:  # a layer is used whole only where its score is at least every partly used layer's
        if d[a] >= 1.0 and sparse:
            assert score[a] >= max(score[n] for n in sparse) * (1 - 1e-9)


def test_erk_gives_a_small_conv_nets_first_layer_ten_times_the_weights_per_task():
    shapes = {"0.weight": (16, 1, 3, 3), "4.weight": (32, 16, 3, 3)}  # examples/models.py:small_convnet, grey
    counts = erk_free_counts(shapes, schedule_totals(shapes, 5, 0.9))
    kept = [{n: before[n] - after[n] for n in shapes} for before, after in
            zip([{"0.weight": 144, "4.weight": 4608}, *counts], counts)]
    assert [k["0.weight"] for k in kept] == [30, 29, 28, 28, 27]  # uniform: 3 per task
    assert [k["4.weight"] for k in kept] == [69, 68, 67, 65, 64]  # uniform: 92 per task
    assert sum(counts[-1].values()) == round(4752 * 0.9)


def test_bad_totals_are_refused():
    shapes = {"a": (4, 4)}
    with pytest.raises(ValueError, match="never grow"):
        erk_free_counts(shapes, [3, 5])
    with pytest.raises(ValueError, match="never grow"):
        erk_free_counts(shapes, [17])
    with pytest.raises(ValueError, match="cannot use"):
        erk_densities(shapes, 17)


# -- the option -------------------------------------------------------------------------------------------------

def test_uniform_density_keeps_every_stored_hash_and_erk_is_a_new_run():
    base = RunConfig(benchmark="mnist-5k", network="mlp", seed=3)
    assert RunConfig(benchmark="mnist-5k", network="mlp", seed=3, layer_density="uniform").hash() == base.hash()
    assert "layer_density" not in base.identity()
    erk = RunConfig(benchmark="mnist-5k", network="mlp", seed=3, layer_density="erk")
    assert erk.hash() != base.hash() and erk.identity()["layer_density"] == "erk"


@pytest.mark.parametrize("kw,match", [(dict(layer_density="dense"), "unknown --layer-density 'dense'"),
                                      (dict(layer_density="erk", prune_scope="global"), "choose one of the two")])
def test_bad_layer_density_is_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        RunConfig(benchmark="mnist-5k", **kw).resolved()


def test_a_strategy_without_a_night_refuses_layer_density(no_training, capsys):
    from test_hardening import RUN, refused

    refused(capsys, ["run", "--benchmark", "mnist-5k", *RUN, "--strategy", "ewc", "--layer-density", "erk",
                     "--no-store"], "--layer-density erk: ewc has no night here")


def test_the_command_line_passes_layer_density_on_and_a_users_model_takes_erk_by_default():
    import argparse

    from sleepcl.cli.run import add_run_parser, run_configs_from_args

    parser = argparse.ArgumentParser()
    add_run_parser(parser.add_subparsers())

    def density(*argv: str) -> str:
        [config] = run_configs_from_args(parser.parse_args(["run", "--benchmark", "mnist-5k", *argv]))
        return config.layer_density

    model = ("--model", "examples/models.py:small_convnet")
    assert density("--layer-density", "erk") == "erk" and density() == "uniform"  # the paper's networks: uniform
    assert density(*model) == "erk" and density(*model, "--layer-density", "uniform") == "uniform"
    # where the density decides nothing, the default leaves it out of the run's identity
    assert density(*model, "--strategy", "ewc") == "uniform" and density(*model, "--prune-scope", "global") == "uniform"


# -- a population under ERK density --------------------------------------------------------------------------

def test_a_population_under_erk_follows_the_counts_and_keeps_earlier_tasks_exact(mnist5k):
    from sleepcl.data.split import load_split_benchmark

    bench = load_split_benchmark("mnist-5k", n_tasks=3, train_size=96, test_size=40)
    configs = [RunConfig(benchmark="mnist-5k", network="examples/models.py:small_convnet", n_tasks=3, seed=s,
                         final_free=0.8, rounds=2, epochs=1, retrain_epochs=2, batch_size=32, layer_density="erk",
                         extra={"train_size": 96, "test_size": 40}) for s in (0, 1)]
    pop = Population(configs, bench)
    shapes = {n: tuple(o.shape[1:]) for n, o in pop.owner.items()}
    expected = erk_free_counts(shapes, schedule_totals(shapes, 3, 0.8))
    seen = []
    pop.fit(on_day_end=lambda p, day: seen.append({n: (o == 0).flatten(1).sum(1).tolist() for n, o in p.owner.items()}))
    assert seen == [{n: [c[n]] * 2 for n in c} for c in expected]
    assert_task1_weights_stay(Population(configs[:1], bench), "erk")
    free = sum(int((o[0] == 0).sum()) for o in pop.owner.values())
    assert free == round(sum(math.prod(s) for s in shapes.values()) * 0.8)
    assert all(torch.count_nonzero(pop.params[n][m][pop.owner[n][m] == 0]) == 0 for n in pop.owner for m in (0, 1))


def test_the_issues_batchnorm_conv_net_keeps_every_task_well_above_chance_under_erk():
    """Issue 18's command (``--model examples/models.py:small_convnet`` on Fashion-MNIST 32x32, 500 training images
    per task, p = 0.9, N = 2, E = B = 2) with ``--layer-density erk``. Under uniform density task 1 answered 0.500
    right after its own night: 3 of the first convolution's 16 channels kept a weight, 3 of the 96 weights it
    kept in the second read one of them."""
    from sleepcl.data import datasets
    from sleepcl.runs.runner import BenchmarkCache

    if not datasets.FASHION_MNIST_SYSTEM_DIR.is_dir():
        pytest.skip("Debian package dataset-fashion-mnist not installed")
    config = RunConfig(benchmark="fashion-mnist-32", network="examples/models.py:small_convnet", final_free=0.9,
                       rounds=2, epochs=2, retrain_epochs=2, batch_size=32, seed=0, layer_density="erk",
                       extra={"train_size": 500, "test_size": 200})
    pop = Population([config], BenchmarkCache(None, False).get(config.resolved()))
    live = {}

    def after(p: Population, day: int) -> None:
        if day == 0:
            first, second = p.owner["0.weight"][0] == 1, p.owner["4.weight"][0] == 1  # (16, 1, 3, 3), (32, 16, 3, 3)
            channels = first.flatten(1).any(1)
            live.update(channels=int(channels.sum()), second=int(second.sum()),
                        reading_live=int((second & channels.view(1, -1, 1, 1)).sum()))

    [r] = pop.fit(on_day_end=after)
    assert live["channels"] >= 12 and live["reading_live"] >= 0.9 * live["second"], live
    assert r.accuracy_matrix[0][0] >= 0.85, r.accuracy_matrix  # task 1 right after its own night
    assert min(r.accuracy_matrix[-1]) >= 0.75, r.accuracy_matrix  # every task at the end (chance 0.5)


# -- said before training --------------------------------------------------------------------------------------

SMALL_CONVNET = {"0.weight": (16, 1, 3, 3), "4.weight": (32, 16, 3, 3)}


def _issue_config(**kw) -> RunConfig:
    base = dict(benchmark="mnist-5k", network="examples/models.py:small_convnet", final_free=0.9, rounds=2, epochs=2,
                retrain_epochs=2, batch_size=32)
    return RunConfig(**{**base, **kw}).resolved()


def test_a_starved_layer_is_named_before_training_with_the_fix():
    from sleepcl.runs.runner import starvation_notice

    notice = starvation_notice(_issue_config(), SMALL_CONVNET, [450] * 5)
    assert "task 1 0.weight keeps 3 of 144 (16 outputs)" in notice and "--layer-density erk" in notice
    assert starvation_notice(_issue_config(layer_density="erk"), SMALL_CONVNET, [450] * 5) is None
    assert starvation_notice(_issue_config(final_free=0.5), SMALL_CONVNET, [450] * 5) is None  # 17 of 144
    assert starvation_notice(_issue_config(prune_scope="global"), SMALL_CONVNET, [450] * 5) is None


def test_check_models_warns_about_a_starved_layer(mnist5k):
    from sleepcl.runs.runner import BenchmarkCache, check_models

    with pytest.warns(UserWarning, match="0.weight keeps 3 of 144"):
        check_models([_issue_config()], BenchmarkCache(None, False))


def test_explain_shows_what_each_task_keeps_of_every_owned_layer(no_training, capsys, monkeypatch):
    from sleepcl.cli import main

    monkeypatch.setenv("COLUMNS", "250")
    argv = ["run", "--benchmark", "mnist-5k", "--model", "examples/models.py:small_convnet", "--final-free", "0.9",
            "--rounds", "2", "--explain"]
    for density, first, second, notice in (("uniform", "2-3", "89-96", True), ("erk", "27-30", "64-69", False)):
        assert main([*argv, "--layer-density", density]) == 0
        out = capsys.readouterr().out
        rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")] for line in out.splitlines()
                if line.count("│") >= 5}
        assert rows["0.weight"][5] == first and rows["4.weight"][5] == second and rows["0.bias"][5] == ""
        assert ("notice: examples/models.py:small_convnet" in out) == notice
