"""The study: experiment grids, study-level matching on stored synthetic runs, and resume after a crash."""

from __future__ import annotations

import dataclasses
from pathlib import Path
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

import sleepcl.runs.runner
from sleepcl.config import PAPER_DEFAULTS
from sleepcl.runs.store import RunStore
from sleepcl.study import analysis as an
from sleepcl.study import experiments as ex
from sleepcl.study import stats
from sleepcl.study.run import RecordLookup, matching_searches, run_study
from sleepcl.study.synthetic import SyntheticWorld
from sleepcl.threads import torch_threads

# ----------------------------------------------------------------------------------- experiment grids


def test_divisors() -> None:
    assert ex.divisors(72) == (1, 2, 3, 4, 6, 8, 9, 12, 18, 24, 36, 72)
    assert ex.divisors(6) == (1, 2, 3, 6)
    assert ex.divisors(1) == (1,)
    with pytest.raises(ValueError):
        ex.divisors(0)


@pytest.mark.parametrize("benchmark", ["mnist", "fashion-mnist", "mnist-5k"])
def test_paper_preset_mlp_is_the_papers(benchmark: str) -> None:
    s = ex.settings("paper", benchmark)
    t2 = PAPER_DEFAULTS["mlp"]
    assert (s.network, s.epochs, s.retrain_epochs, s.batch_size, s.lr) == ("mlp", 72, 72, 128, 1e-3) == (
        "mlp", t2["epochs"], t2["retrain_epochs"], t2["batch_size"], t2["lr"])
    assert s.widths is None and s.n_tasks == 5
    assert len(s.seeds) == 5 and len(s.budget_seeds) == 10      # Appendix B: 5 seeds; Figure 2: 10 runs
    assert s.matching_ps == (0.95, 0.99, 0.995)                   # Table 1, MNIST
    assert {0.8, 0.9, 0.95, 0.99, 0.995} <= set(s.pruning_grid)   # Figure 1: 0.8 ... 0.995
    assert s.budget_rounds == ex.divisors(72)                     # Figure 2: N over the divisors of B = 72
    budget = ex.budget_configs(s)
    assert {c.rounds for c in budget} == set(ex.divisors(72))
    assert all(c.retrain_epochs == 72 and c.strategy == "packnet" and c.schedule == "uniform" for c in budget)
    assert len(budget) == len(s.budget_ps) * 12 * 10
    # the search reaches 32x compression (the data shows matches near 10x), and below 1x
    assert min(s.matching_compression_bounds) < 1 and max(s.matching_compression_bounds) >= 32


def test_vgg_cpu_preset_keeps_the_papers_vgg_protocol_on_a_subsample() -> None:
    s = ex.settings("vgg-cpu", "fashion-mnist-32")
    assert (s.network, s.epochs, s.retrain_epochs, s.batch_size) == ("vgg", 12, 6, 32)  # Table 2
    assert s.budget_rounds == (1, 2, 3, 6) and len(s.budget_seeds) == 10 and s.budget_ps == (0.8, 0.9, 0.95)
    configs = ex.study_configs(["pruning", "budget"], s)
    assert all(c.extra == {"train_size": 128, "test_size": 400} and c.network == "vgg" for c in configs)
    assert "128 training samples per task" in s.describe()
    # the other presets' runs keep an empty extra, so their identity (hash) is what it always was
    assert all(c.extra == {} for c in ex.study_configs(["pruning"], ex.settings("paper", "mnist-5k")))


def test_paper_preset_vgg_is_the_papers() -> None:
    s = ex.settings("paper", "cifar10")
    assert (s.network, s.epochs, s.retrain_epochs, s.batch_size, s.lr) == ("vgg", 12, 6, 32, 1e-4)
    assert s.matching_ps == (0.8, 0.9, 0.95)
    assert s.budget_rounds == (1, 2, 3, 6)
    assert len(s.budget_seeds) == 10 and len(s.seeds) == 5
    nob = ex.nobudget_configs(s)  # Figure 4: R fixed (= the one-shot B), B = R * N grows with N
    assert {(c.rounds, c.retrain_epochs) for c in nob} == {(n, 6 * n) for n in s.nobudget_rounds}
    assert len({c.rounds for c in nob}) >= 3
    assert s.nobudget_ps == (0.8, 0.9, 0.95)


@pytest.mark.parametrize("preset", ex.PRESETS)
@pytest.mark.parametrize("benchmark", ["mnist", "fashion-mnist", "cifar10", "mnist-5k"])
def test_every_preset_is_consistent(preset: str, benchmark: str) -> None:
    s = ex.settings(preset, benchmark)
    assert s.budget_rounds == ex.divisors(s.retrain_epochs)
    configs = ex.study_configs(["all"], s)
    hashes = [c.hash() for c in configs]
    assert len(set(hashes)) == len(hashes)                        # each run once
    for name in ex.EXPERIMENTS:                                   # every experiment's runs are in "all"
        assert {c.hash() for c in ex.experiment_configs(name, s)} <= set(hashes)
    assert all(c.benchmark == benchmark for c in configs)
    # experiments share runs: Figure 2's N = 1 runs are Figure 1's PackNet runs; uniform schedules are Figure 2's
    budget = {c.hash() for c in ex.budget_configs(s)}
    uniform = [c for c in ex.schedules_configs(s) if c.schedule == "uniform"]
    assert {c.hash() for c in uniform} <= budget
    assert {c.schedule for c in ex.schedules_configs(s)} == {"uniform", "lengthening", "cubic"}
    pruning = {c.hash() for c in ex.pruning_configs(s)}
    shared = [c for c in ex.budget_configs(s) if c.rounds == 1 and c.final_free in s.pruning_grid
              and c.seed in s.seeds]
    assert {c.hash() for c in shared} <= pruning
    for p in s.matching_ps:
        lo, hi = ex.matching_bounds(s, p)
        assert lo < p < hi < 1


@pytest.mark.parametrize("benchmark", ["mnist-5k", "fashion-mnist", "mnist"])
def test_quick_presets_have_enough_seeds_to_test_a_difference(benchmark: str) -> None:
    s = ex.settings("quick", benchmark)
    assert min(len(s.seeds), len(s.budget_seeds)) >= stats.MIN_N


def test_quick_preset_is_smaller_than_paper() -> None:
    for b in ("mnist-5k", "fashion-mnist"):
        quick = ex.cost_epochs(ex.study_configs(["all"], ex.settings("quick", b)))
        paper = ex.cost_epochs(ex.study_configs(["all"], ex.settings("paper", b)))
        assert quick * 20 < paper


def test_seeds_override_and_bad_names() -> None:
    s = ex.settings("quick", "mnist-5k", seeds=[7, 8])
    assert s.seeds == s.budget_seeds == (7, 8)
    assert {c.seed for c in ex.study_configs(["all"], s)} == {7, 8}
    with pytest.raises(ValueError, match="preset"):
        ex.settings("huge", "mnist-5k")
    with pytest.raises(ValueError, match="benchmark"):
        ex.settings("quick", "svhn")
    with pytest.raises(ValueError, match="experiment"):
        ex.expand_names(["figure9"])
    assert ex.expand_names("all") == list(ex.EXPERIMENTS)
    assert ex.expand_names(["budget", "pruning"]) == ["pruning", "budget"]
    with pytest.raises(ValueError, match="pruning grid"):
        dataclasses.replace(ex.settings("tiny", "mnist-5k"), matching_ps=(0.77,))


# ----------------------------------------------------------------------------------- matching, synthetic


def _precise(s: ex.StudySettings) -> ex.StudySettings:
    return dataclasses.replace(s, matching_xatol=1e-4, matching_maxiter=40, matching_compression_bounds=(0.3, 8.0))


def test_study_matching_finds_the_known_compression(tmp_path) -> None:
    """Synthetic stored runs where Memory matches PackNet at exactly C(p) times fewer weights, Multinet at
    1.5 C(p): both the paper's search (runs stored as it goes) and the monotone fit recover them."""
    from sleepcl.study.analysis import analyse_matching

    compression = {0.8: 1.6, 0.9: 2.4}
    s = _precise(dataclasses.replace(ex.settings("tiny", "mnist-5k"),
                                     pruning_grid=(0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99)))
    world = SyntheticWorld(packnet_compression=lambda p: compression.get(round(p, 6), 1.0), multinet_factor=1.5)
    with RunStore(tmp_path / "runs.sqlite") as store:
        summary = run_study("matching", s, store=store, run=world.runner)
        for search in summary["searches"]:
            want = compression[search.p_packnet] * (1.5 if search.baseline == "multinet" else 1.0)
            assert search.result is not None and search.result.in_range, search.result
            assert search.result.compression == pytest.approx(want, rel=2e-3)
            # every evaluation of the search is a set of stored, seeded runs
            for q, _ in search.evaluations:
                for c in ex.matching_point_configs(s, search.baseline, q):
                    assert c.hash() in store
        n_trained = len(world.trained)

        # replaying from the store needs no training and gives the same answers
        again = matching_searches(s, RecordLookup(store))
        assert [x.result.p_match for x in again] == [x.result.p_match for x in summary["searches"]]
        assert run_study("matching", s, store=store, run=world.runner)["trained"] == 0
        assert len(world.trained) == n_trained

        res = analyse_matching(s, RecordLookup(store))
        for row in res.rows:
            want = compression[row.p] * (1.5 if row.baseline == "multinet" else 1.0)
            assert row.fit.in_range and row.fit.compression == pytest.approx(want, rel=0.05)
            assert row.agreement["compression_rel_diff"] < 0.05


def test_matching_search_reports_out_of_range(tmp_path) -> None:
    """A baseline that never reaches PackNet's accuracy inside the bounds is reported as unmatched, not guessed."""
    s = ex.settings("tiny", "mnist-5k")
    world = SyntheticWorld(packnet_compression=lambda p: 0.05)  # PackNet far better than any baseline
    with RunStore(tmp_path / "runs.sqlite") as store:
        summary = run_study("matching", s, store=store, run=world.runner)
    assert all(x.result is not None and not x.result.in_range and math.isnan(x.result.p_match)
               for x in summary["searches"])


# ----------------------------------------------------------------------------------- resume (real training)


class Crash(RuntimeError):
    pass


@pytest.fixture
def one_thread():
    """Tiny populations train fastest on one thread, and far more predictably on a busy machine."""
    with torch_threads(1):
        yield


def test_interrupted_study_resumes_without_training_anything_twice(tmp_path, monkeypatch, one_thread) -> None:
    """Kill the study after its first population is stored; the rerun trains exactly the rest."""
    s = ex.settings("tiny", "mnist-5k")
    real = sleepcl.runs.runner.train_population
    trained: list[list[str]] = []

    def crash_on_second(configs, *a, **kw):
        if trained:
            raise Crash("killed")
        trained.append([c.hash() for c in configs])
        return real(configs, *a, **kw)

    path = tmp_path / "runs.sqlite"
    monkeypatch.setattr(sleepcl.runs.runner, "train_population", crash_on_second)
    with RunStore(path) as store:
        with pytest.raises(Crash):
            run_study("all", s, store=store, device="cpu")
        first = set(store.hashes())
    assert first == set(trained[0]) and len(first) > 0   # the finished population is stored, nothing else

    def counting(configs, *a, **kw):
        trained.append([c.hash() for c in configs])
        return real(configs, *a, **kw)

    monkeypatch.setattr(sleepcl.runs.runner, "train_population", counting)
    with RunStore(path) as store:
        summary = run_study("all", s, store=store, device="cpu")
        every = [h for call in trained for h in call]
        assert len(every) == len(set(every))              # nothing trained twice
        assert set(every) == set(store.hashes())          # nothing lost: everything trained is stored
        needed = {c.hash() for c in ex.study_configs(["all"], s)}
        assert needed <= set(store.hashes())
        assert all(x.result is not None for x in summary["searches"])  # the searches finished
        n = len(every)
        # a third run trains nothing at all
        assert run_study("all", s, store=store, device="cpu")["trained"] == 0
        assert len([h for call in trained for h in call]) == n


def test_search_bounds_around_the_monotone_fit(tmp_path) -> None:
    """With a bounds factor the search looks near the cheap estimate, brackets it and agrees with the truth."""
    from sleepcl.study.run import search_bounds

    s = dataclasses.replace(ex.settings("tiny", "mnist-5k"), matching_bounds_factor=2.0, matching_maxiter=8,
                            matching_xatol=0.02, pruning_grid=(0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.99))
    world = SyntheticWorld(packnet_compression=lambda p: 3.0, multinet_factor=1.5)
    with RunStore(tmp_path / "runs.sqlite") as store:
        assert search_bounds(s, RecordLookup(store), "memory", 0.9, 0.9) is None  # no grid yet: wait
        summary = run_study("matching", s, store=store, run=world.runner)
        for x in summary["searches"]:
            want = 3.0 * (1.5 if x.baseline == "multinet" else 1.0)
            lo, hi = x.bounds
            c_lo, c_hi = (1 - x.p_packnet) / (1 - lo), (1 - x.p_packnet) / (1 - hi)
            assert c_lo < want < c_hi and c_hi / c_lo == pytest.approx(4.0, rel=0.05)  # factor 2 either side
            assert len(x.evaluations) <= 8
            assert x.result.in_range and x.result.compression == pytest.approx(want, rel=0.03)


# ----------------------------------------------------------------------------------- tests of differences


def test_compare_by_seed_pairs_shared_seeds_and_uses_welch_otherwise() -> None:
    a = {0: 0.90, 1: 0.92, 2: 0.91, 3: 0.95}
    b = {0: 0.89, 1: 0.90, 2: 0.90, 3: 0.93}
    paired = stats.compare_by_seed(a, b)
    want = scipy_stats.ttest_rel(list(a.values()), list(b.values()))
    assert paired.test == "paired t" and paired.n == 4 and paired.pvalue == pytest.approx(want.pvalue)
    assert paired.diff == pytest.approx(0.015) and paired.significant
    other = {5: 0.89, 6: 0.90, 7: 0.90}
    welch = stats.compare_by_seed(a, other)
    want = scipy_stats.ttest_ind(list(a.values()), list(other.values()), equal_var=False)
    assert welch.test == "Welch t" and welch.n == 3 and welch.pvalue == pytest.approx(want.pvalue)
    assert "Welch t, n = 3, p = " in welch.describe()


def test_nothing_is_significant_with_fewer_than_three_seeds() -> None:
    two = stats.compare_by_seed({0: 0.99, 1: 0.98}, {0: 0.50, 1: 0.51})
    assert two.n == 2 and two.pvalue < 0.05 and not two.significant
    one = stats.compare_by_seed({0: 0.99}, {0: 0.5})
    assert one.test == "" and math.isnan(one.pvalue) and not one.significant and "no test" in one.describe()
    flat = stats.compare_by_seed({0: 0.75, 1: 0.5, 2: 0.25}, {0: 0.5, 1: 0.25, 2: 0.0})  # the same gap every seed
    assert flat.pvalue == 0.0 and flat.significant
    assert not stats.compare_by_seed({0: 0.9, 1: 0.8, 2: 0.7}, {0: 0.9, 1: 0.8, 2: 0.7}).significant


def test_split_seeds_halves() -> None:
    assert stats.split_seeds(range(10)) == ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9))
    assert stats.split_seeds([3, 1, 2]) == ((1, 2), (3,))
    assert stats.split_seeds([0]) == ((0,), ())


def test_best_n_is_chosen_on_some_seeds_and_tested_on_the_others() -> None:
    """N = 4 wins on the choosing seeds by luck; on the held-out seeds it is no better than N = 2."""
    rows = []
    for seed in range(6):
        lucky = 0.02 if seed < 3 else 0.0
        rows += [{"N": 1, "seed": seed, "accuracy": 0.90 + 0.001 * seed},
                 {"N": 2, "seed": seed, "accuracy": 0.93 + 0.001 * (seed % 2)},
                 {"N": 4, "seed": seed, "accuracy": 0.93 + lucky + 0.001 * ((seed + 1) % 2)}]
    selection = stats.selection_for(range(6), pairs=3)
    assert selection == stats.Selection((0, 1, 2), (3, 4, 5)) and selection.held_out
    found = an.held_out_best(pd.DataFrame(rows), selection)
    assert found["best_N"] == 4 and found["worst_N"] == 1
    assert found["n"] == 3 and found["test"] == "paired t" and found["significant"]  # 4 beats 1 on held-out seeds
    assert found["tied"] == "2"  # but not 2: near-ties are named, not ranked
    assert found["held_best"] == pytest.approx(np.mean([0.930, 0.931, 0.930]))
    assert found["vs_one_significant"] and not found["vs_most_significant"]  # N = 4 is the most rounds


def test_with_too_few_seeds_to_hold_out_the_choice_is_corrected_instead() -> None:
    """Four seeds: two held out would be too few to test, so all four choose and test, and each p-value is
    multiplied by the number of pairs the choice ranged over."""
    selection = stats.selection_for([0, 1, 2, 3], pairs=15)
    assert selection.choose == selection.test == (0, 1, 2, 3) and not selection.held_out
    assert "multiplied by the 15 pairs" in selection.describe()
    raw = stats.compare_by_seed({0: 0.95, 1: 0.96, 2: 0.94, 3: 0.95}, {0: 0.90, 1: 0.90, 2: 0.91, 3: 0.89})
    assert selection.adjust(raw).pvalue == pytest.approx(min(1.0, 15 * raw.pvalue))
    rows = [{"N": n, "seed": seed, "accuracy": 0.90 + 0.02 * (n == 4) + 0.001 * ((seed * n) % 3)}
            for n in (1, 2, 4) for seed in range(4)]
    found = an.held_out_best(pd.DataFrame(rows), stats.selection_for(range(4), pairs=3))
    assert found["best_N"] == 4 and found["n"] == 4 and found["significant"]


def test_claims_name_what_they_cover_and_what_is_untested(tmp_path) -> None:
    from sleepcl.study import claims as cl

    mlp, vgg = ex.settings("paper", "mnist-5k"), ex.settings("vgg-cpu", "fashion-mnist-32")
    found = {c.key: c for c in cl.check_claims(mlp)}
    assert found["c"].scope == "MLP on mnist-5k" and found["c"].untested == "VGG: untested"
    assert found["c"].summary() == "no data for the MLP on mnist-5k; VGG: untested"
    assert "an analogue: the paper shows (d) for the VGG only" in found["d"].scope
    conv = {c.key: c for c in cl.check_claims(vgg)}
    assert conv["c"].scope == "VGG (widths 16x32x64x64x512) on fashion-mnist-32"
    assert conv["c"].untested == "MLP: untested" and conv["d"].untested == ""


def test_two_seeds_give_inconclusive_verdicts_not_significant_ones(tmp_path) -> None:
    from sleepcl.study import claims as cl

    s = dataclasses.replace(ex.settings("tiny", "mnist-5k"), matching_compression_bounds=(0.3, 8.0))
    world = SyntheticWorld(packnet_compression=lambda p: 2.0, budget=s.retrain_epochs, noise=0.001,
                           budget_penalty=lambda p, n: 0.05 if n == 1 else 0.0, nobudget_gain=lambda p, n: 0.02 * n)
    with RunStore(tmp_path / "runs.sqlite") as store:
        run_study("all", s, store=store, run=world.runner)
        look = RecordLookup(store)
        claims = cl.check_claims(
            s, matching=an.analyse_matching(s, look), pruning=an.analyse_pruning(s, look),
            budget=an.analyse_budget(s, look), nobudget=an.analyse_nobudget(s, look))
    assert {c.key: c.verdict for c in claims} == {k: cl.INCONCLUSIVE for k in "abcd"}  # 2 seeds: nothing is tested
    assert all(c.power == "fewer than 3 seeds: nothing tested" for c in claims)



def test_both_readings_of_the_vggs_fc8192_are_networks() -> None:
    """The built-in VGG reads 'fc8192' as the flattened 128 x 8 x 8 features; examples/models.py has the other
    reading, an 8,192-unit layer, as a user model."""
    import importlib.util

    import torch

    from sleepcl.models.paper import PaperVGG

    flat = PaperVGG((3, 32, 32))
    assert flat.fc0.in_features == 8192 and flat.fc0.out_features == 1024
    spec = importlib.util.spec_from_file_location("models", Path(__file__).resolve().parents[1] / "examples" / "models.py")
    models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(models)
    layer = models.vgg_fc8192_layer((3, 32, 32), num_classes=2)
    linears = [m for m in layer.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(8192, 8192), (8192, 1024), (1024, 2)]
    assert layer(torch.zeros(2, 3, 32, 32)).shape == (2, 2)
