"""The study's intervals and multiple-comparison correction (sleepcl.study.stats), and a small run of the coverage
simulation (benchmarks/interval_coverage.py): the jackknife-t keeps its coverage at 3 seeds where the percentile
bootstrap does not."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from sleepcl.study.claims import ClaimTest, detectable, verdict_of
from sleepcl.study.stats import holm, jackknife_t, percentile_bootstrap, t_interval

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_jackknife_t_of_a_mean_is_students_t_interval() -> None:
    x = np.array([0.91, 0.95, 0.90, 0.97, 0.93])
    jk = jackknife_t(lambda rows: float(x[rows].mean()), x.size)
    t = t_interval(x)
    assert jk.estimate == pytest.approx(x.mean())
    assert (jk.low, jk.high, jk.se) == pytest.approx((t.low, t.high, t.se))
    half = stats.t.ppf(0.975, 4) * x.std(ddof=1) / math.sqrt(5)
    assert jk.high - jk.estimate == pytest.approx(half)


def test_a_seed_whose_removal_leaves_the_grid_makes_the_interval_unbounded() -> None:
    x = np.array([1.0, 2.0, 3.0])
    ci = jackknife_t(lambda rows: math.inf if 0 not in rows else float(x[rows].mean()), 3)
    assert not ci.bounded and ci.low == -math.inf and ci.high == math.inf and ci.excludes(0.0) == 0
    assert math.isnan(jackknife_t(lambda rows: 1.0, 1).low)  # one seed: no interval


def test_percentile_bootstrap_at_three_seeds_is_narrower_than_the_t_interval() -> None:
    x = np.array([0.2, 0.5, 0.9])
    boot = percentile_bootstrap(lambda rows: float(x[rows].mean()), 3, 2000)
    t = t_interval(x)
    assert boot.high - boot.low < 0.5 * (t.high - t.low)  # why the study stopped using it


def test_holm_adjusts_step_down() -> None:
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    out = holm([0.02, math.nan, 0.5])
    assert out[0] == pytest.approx(0.04) and math.isnan(out[1]) and out[2] == pytest.approx(0.5)


def test_verdicts_tell_opposite_from_inconclusive() -> None:
    def t(estimate: float, p: float, n: int = 5) -> ClaimTest:
        return ClaimTest("x", estimate, 0.01, n, p)

    assert verdict_of([t(0.1, 0.001), t(0.1, 0.002)]) == "supported"
    assert verdict_of([t(0.1, 0.001), t(0.1, 0.6)]) == "partly supported"
    assert verdict_of([t(-0.1, 0.001), t(0.1, 0.6)]) == "opposite"
    assert verdict_of([t(-0.1, 0.001), t(0.1, 0.001)]) == "mixed"
    assert verdict_of([t(0.1, 0.03), t(0.1, 0.04)]) == "inconclusive"  # each below 0.05, neither after Holm
    assert verdict_of([t(0.1, 1e-6, n=2)]) == "inconclusive"  # too few seeds to test
    # the power note: fewer seeds, larger effects needed
    assert detectable(0.01, 3) > detectable(0.01, 5) > detectable(0.01, 10) > 2.8 * 0.01


def test_the_coverage_simulation_favours_the_jackknife_t_at_three_seeds() -> None:
    import interval_coverage as ic

    runs = ic.RESULTS / "mnist-5k-paper" / "runs.csv"
    truth = ic.truth_from_runs(runs)[()]
    cases = [c for c in ic.matching_cases(truth, ["memory"], [0.99]) if c[0] == "compression"]
    df = ic.simulate(cases, [3], reps=60, boot=200, rho=0.2, step=ic.accuracy_step(runs),
                     methods=("percentile", "jackknife-t"), log=lambda *_: None)
    cover = dict(zip(df["method"], df["coverage"]))
    assert cover["jackknife-t"] >= 0.85
    assert cover["percentile"] < cover["jackknife-t"] - 0.1
