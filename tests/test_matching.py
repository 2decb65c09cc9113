"""Tests for sleepcl.study.matching on synthetic accuracy curves with a known matching point."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sleepcl.study.matching import (
    MatchResult,
    agreement,
    bootstrap_draws,
    compression_ratio,
    fit_monotone,
    invert_monotone,
    match_by_minimize_scalar,
    match_by_monotone_fit,
    matched_u_replicates,
)

# Baseline ("Memory") accuracy: logistic in u = log(1 - p), centre at p ~ 0.993.
U0, SCALE = -5.0, 0.7
# PackNet is the same curve but needs C times more kept weights: acc_PN(p) = acc_mem(1 - (1 - p) / C).
C = 1.6
P_PN = 0.95
P_TRUE = 1 - (1 - P_PN) / C  # 0.96875: where Memory matches PackNet at 0.95
GRID = [0.5, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999]


def acc_mem(p: float | np.ndarray) -> np.ndarray:
    u = np.log1p(-np.asarray(p, dtype=float))
    return 0.5 + 0.49 / (1 + np.exp(-(u - U0) / SCALE))


def acc_packnet(p: float) -> float:
    return float(acc_mem(1 - (1 - p) / C))


TARGET = acc_packnet(P_PN)


def noisy_grid(sigma: float, n_seeds: int, rng: np.random.Generator) -> np.ndarray:
    return acc_mem(GRID)[None, :] + rng.normal(0.0, sigma, size=(n_seeds, len(GRID)))


class CountingEvaluate:
    """An 'expensive' evaluate that remembers every call."""

    def __init__(self, fn=lambda p: float(acc_mem(p))) -> None:
        self.fn = fn
        self.calls: list[float] = []

    def __call__(self, p: float) -> float:
        self.calls.append(p)
        return self.fn(p)


# ----------------------------------------------------------------------------- compression ratio


def test_compression_ratio_paper_example() -> None:
    assert compression_ratio(0.6, 0.9) == pytest.approx(4.0)
    assert compression_ratio(0.9, 0.9) == 1.0
    assert compression_ratio(P_PN, P_TRUE) == pytest.approx(C)
    assert math.isnan(compression_ratio(0.9, float("nan")))
    with pytest.raises(ValueError):
        compression_ratio(0.9, 1.0)
    with pytest.raises(ValueError):
        compression_ratio(-0.1, 0.5)


def test_synthetic_truth_is_consistent() -> None:
    assert float(acc_mem(P_TRUE)) == pytest.approx(TARGET)
    # PackNet is worse at equal p: the baseline reaches its accuracy with fewer weights
    assert float(acc_mem(P_PN)) > TARGET


# ----------------------------------------------------------------------------- minimize_scalar


@pytest.mark.parametrize("space", ["log1m", "p"])
def test_minimize_scalar_recovers_known_match(space: str) -> None:
    ev = CountingEvaluate()
    r = match_by_minimize_scalar(TARGET, ev, (0.5, 0.999), space=space, p_packnet=P_PN)
    assert r.in_range and r.method == f"minimize_scalar[{space}]"
    assert r.p_match == pytest.approx(P_TRUE, abs=2e-4)
    assert r.compression == pytest.approx(C, rel=0.01)
    assert r.compression_vs(P_PN) == r.compression
    assert math.isnan(r.ci_low) and math.isnan(r.ci_high)
    assert "matched" in r.message


def test_minimize_scalar_caches_and_records_evaluations() -> None:
    ev = CountingEvaluate()
    maxiter = 8
    r = match_by_minimize_scalar(TARGET, ev, (0.5, 0.999), maxiter=maxiter, xatol=1e-9)
    assert len(ev.calls) <= maxiter + 2
    assert len(ev.calls) == len(set(ev.calls)), "a p was evaluated twice"
    assert [p for p, _ in r.evaluations] == ev.calls  # every objective call recorded, in order
    assert all(a == pytest.approx(float(acc_mem(p))) for p, a in r.evaluations)


def test_minimize_scalar_never_reruns_a_cached_p() -> None:
    ev = CountingEvaluate()
    cache: dict[float, float] = {}
    r1 = match_by_minimize_scalar(TARGET, ev, (0.5, 0.999), cache=cache)
    n_first = len(ev.calls)
    # the same search again: everything comes from the shared cache
    r2 = match_by_minimize_scalar(TARGET, ev, (0.5, 0.999), cache=cache)
    assert len(ev.calls) == n_first
    assert r2.p_match == r1.p_match and r2.evaluations == r1.evaluations
    # another target against the same baseline still only evaluates new points
    match_by_minimize_scalar(acc_packnet(0.9), ev, (0.5, 0.999), cache=cache)
    assert len(ev.calls) == len(set(ev.calls)) == len(cache)


def test_minimize_scalar_with_noisy_evaluate() -> None:
    """Seed-averaged runs are noisy; the match is still close (within the noise's effect)."""

    def noisy(p: float) -> float:
        rng = np.random.default_rng(int(p * 1e9))
        return float(acc_mem(p)) + rng.normal(0, 0.001)

    r = match_by_minimize_scalar(TARGET, CountingEvaluate(noisy), (0.5, 0.999), p_packnet=P_PN)
    assert r.in_range
    assert r.p_match == pytest.approx(P_TRUE, abs=2e-3)


@pytest.mark.parametrize(("target", "side"), [(0.9999, "above"), (0.2, "below")])
def test_minimize_scalar_flags_unreachable_target(target: float, side: str) -> None:
    r = match_by_minimize_scalar(target, CountingEvaluate(), (0.5, 0.999), p_packnet=P_PN)
    assert not r.in_range
    assert math.isnan(r.p_match) and math.isnan(r.compression)
    assert side in r.message and "widen the bounds" in r.message
    assert r.message.startswith("out of range")
    # the message names the end of the compression range the match lies beyond
    edge = compression_ratio(P_PN, 0.5 if side == "above" else 0.999)
    assert f"{edge:.3g}x compression" in r.message
    assert r.evaluations


def test_minimize_scalar_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        match_by_minimize_scalar(TARGET, CountingEvaluate(), (0.9, 1.0))
    with pytest.raises(ValueError):
        match_by_minimize_scalar(TARGET, CountingEvaluate(), (0.9, 0.5))
    with pytest.raises(ValueError, match="space"):
        match_by_minimize_scalar(TARGET, CountingEvaluate(), (0.5, 0.9), space="logit")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN"):
        match_by_minimize_scalar(TARGET, CountingEvaluate(lambda p: float("nan")), (0.5, 0.9))


# ----------------------------------------------------------------------------- monotone fit


@pytest.mark.parametrize("interpolation", ["pchip", "linear"])
def test_monotone_fit_recovers_known_match_noise_free(interpolation: str) -> None:
    r = match_by_monotone_fit(GRID, acc_mem(GRID)[None, :], TARGET, p_packnet=P_PN, interpolation=interpolation)
    assert r.in_range
    tol = 2e-4 if interpolation == "pchip" else 1e-3
    assert r.p_match == pytest.approx(P_TRUE, abs=tol)
    assert r.compression == pytest.approx(C, rel=0.04)
    assert math.isnan(r.ci_low)  # one seed: no bootstrap
    assert [p for p, _ in r.evaluations] == sorted(GRID)


def test_monotone_fit_accepts_unsorted_grid_and_1d_accuracy() -> None:
    order = np.random.default_rng(1).permutation(len(GRID))
    grid = [GRID[i] for i in order]
    r = match_by_monotone_fit(grid, acc_mem(grid), TARGET)
    assert r.p_match == pytest.approx(P_TRUE, abs=2e-4)


def test_interval_covers_truth_at_low_noise_and_widens_with_noise() -> None:
    """Across independent low-noise data sets the CI mostly contains the truth; noisier data -> wider CIs."""
    covered = 0
    widths = {0.002: [], 0.01: []}
    n_rep = 12
    for rep in range(n_rep):
        for sigma in widths:
            acc = noisy_grid(sigma, n_seeds=8, rng=np.random.default_rng(rep))
            r = match_by_monotone_fit(GRID, acc, TARGET, n_bootstrap=200, seed=rep, p_packnet=P_PN)
            assert r.in_range
            assert r.ci_low <= r.p_match <= r.ci_high
            assert r.compression_ci_low <= r.compression <= r.compression_ci_high
            widths[sigma].append(r.ci_high - r.ci_low)
            if sigma == 0.002:
                covered += r.ci_low <= P_TRUE <= r.ci_high
    assert covered >= 0.75 * n_rep
    assert np.median(widths[0.01]) > 2 * np.median(widths[0.002])


def test_bootstrap_is_reproducible_and_default_size_runs() -> None:
    acc = noisy_grid(0.003, n_seeds=5, rng=np.random.default_rng(0))
    a = match_by_monotone_fit(GRID, acc, TARGET, seed=3, p_packnet=P_PN)
    b = match_by_monotone_fit(GRID, acc, TARGET, seed=3, p_packnet=P_PN)
    assert a == b
    assert a.ci_low < P_TRUE < a.ci_high
    assert "jackknife-t CI over 5 seeds, each left out in turn (PackNet's target held fixed)" in a.message
    old = match_by_monotone_fit(GRID, acc, TARGET, seed=3, p_packnet=P_PN, interval="percentile")
    assert old.p_match == a.p_match and old.ci_low < P_TRUE < old.ci_high
    assert "1000 resamples of the baseline's seeds (PackNet's target held fixed)" in old.message


def test_bootstrap_of_both_sides_widens_the_interval_by_packnets_noise() -> None:
    """PackNet's target is a mean over seeds too: resampling its seeds widens the interval."""
    rng = np.random.default_rng(4)
    acc = noisy_grid(0.002, n_seeds=6, rng=rng)
    packnet = TARGET + rng.normal(0, 0.01, size=6)
    packnet += TARGET - packnet.mean()  # the same target, noisy seeds
    fixed = match_by_monotone_fit(GRID, acc, TARGET, p_packnet=P_PN, n_bootstrap=400)
    both = match_by_monotone_fit(GRID, acc, TARGET, target_samples=packnet, p_packnet=P_PN, n_bootstrap=400)
    assert both.p_match == fixed.p_match and both.compression == fixed.compression  # the same point estimate
    assert both.compression_ci_low <= both.compression <= both.compression_ci_high
    width = lambda r: r.compression_ci_high - r.compression_ci_low  # noqa: E731
    assert width(both) > 2 * width(fixed)
    assert "the baseline's and PackNet's seeds left out in turn" in both.message


def test_paired_bootstrap_cancels_effects_the_two_sides_share() -> None:
    """A seed that is good for PackNet is good for the baseline too: drawing seeds once for both cancels it."""
    rng = np.random.default_rng(5)
    seed_effect = rng.normal(0, 0.01, size=6)
    acc = acc_mem(np.array(GRID))[None, :] + seed_effect[:, None]
    packnet = TARGET + seed_effect
    target = float(packnet.mean())
    paired = match_by_monotone_fit(GRID, acc, target, target_samples=packnet, paired=True, p_packnet=P_PN,
                                   n_bootstrap=300)
    independent = match_by_monotone_fit(GRID, acc, target, target_samples=packnet, p_packnet=P_PN, n_bootstrap=300)
    assert paired.compression_ci_high - paired.compression_ci_low < 0.5 * (
        independent.compression_ci_high - independent.compression_ci_low)
    assert "each left out in turn of both sides" in paired.message


def test_matched_u_replicates_use_the_given_draws() -> None:
    acc = noisy_grid(0.003, n_seeds=4, rng=np.random.default_rng(2))
    u = np.log1p(-np.array(GRID))[::-1]
    rows = bootstrap_draws(4, 50, seed=9)
    assert rows.shape == (50, 4) and np.array_equal(rows, bootstrap_draws(4, 50, seed=9))
    packnet = np.full(4, TARGET)
    reps = matched_u_replicates(u, acc[:, ::-1], packnet, rows, rows)
    one = invert_monotone(fit_monotone(u, acc[rows[7]][:, ::-1].mean(axis=0)), TARGET)
    assert reps.shape == (50,) and reps[7] == pytest.approx(one)


def test_target_samples_must_agree_with_the_target() -> None:
    acc = noisy_grid(0.003, n_seeds=4, rng=np.random.default_rng(2))
    with pytest.raises(ValueError, match="not the mean"):
        match_by_monotone_fit(GRID, acc, TARGET, target_samples=[TARGET + 0.1] * 4)
    with pytest.raises(ValueError, match="as many target samples"):
        match_by_monotone_fit(GRID, acc, TARGET, target_samples=[TARGET] * 3, paired=True)
    with pytest.raises(ValueError, match="needs target_samples"):
        match_by_monotone_fit(GRID, acc, TARGET, paired=True)


@pytest.mark.parametrize(("target", "side", "need"), [(0.9999, "above", "lower p"), (0.3, "below", "higher p")])
def test_monotone_fit_flags_out_of_range_target(target: float, side: str, need: str) -> None:
    acc = noisy_grid(0.002, n_seeds=5, rng=np.random.default_rng(0))
    r = match_by_monotone_fit(GRID, acc, target, p_packnet=P_PN)
    assert not r.in_range
    assert math.isnan(r.p_match) and math.isnan(r.compression) and math.isnan(r.ci_low)
    assert side in r.message and need in r.message and "not extrapolating" in r.message


def test_ci_end_off_the_grid_is_nan_not_clamped() -> None:
    """A target just below the best grid accuracy: without some seed the fit cannot reach it."""
    acc = noisy_grid(0.01, n_seeds=5, rng=np.random.default_rng(0))
    u = np.log1p(-np.array(GRID))[::-1]  # increasing u
    top = fit_monotone(u, acc.mean(axis=0)[::-1]).acc[-1]
    target = float(top) - 0.002
    r = match_by_monotone_fit(GRID, acc, target, n_bootstrap=300)
    assert r.in_range and not math.isnan(r.p_match)
    assert math.isnan(r.ci_low) and not math.isnan(r.ci_high)
    assert "runs off the grid" in r.message and "off the fitted range" in r.message


def test_monotone_fit_pools_violations() -> None:
    """Noise that breaks monotonicity is pooled, not inverted into a multi-valued answer."""
    u = np.log1p(-np.array([0.99, 0.95, 0.9, 0.8]))  # increasing u
    fit = fit_monotone(u, np.array([0.6, 0.8, 0.7, 0.9]))
    assert fit.acc.tolist() == pytest.approx([0.6, 0.75, 0.9])
    assert fit.u[1] == pytest.approx(u[1:3].mean())
    assert np.all(np.diff(fit.u) > 0) and np.all(np.diff(fit.acc) > 0)
    assert invert_monotone(fit, 0.75) == pytest.approx(fit.u[1])
    assert invert_monotone(fit, 0.5) == -math.inf and invert_monotone(fit, 0.95) == math.inf
    flat = fit_monotone(u, np.array([0.7, 0.7, 0.7, 0.7]))
    assert len(flat.u) == 1 and not math.isfinite(invert_monotone(flat, 0.7))


def test_monotone_fit_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="shape"):
        match_by_monotone_fit(GRID, np.zeros((3, 4)), 0.5)
    with pytest.raises(ValueError, match="distinct"):
        match_by_monotone_fit([0.5, 0.5], np.zeros((3, 2)), 0.5)
    with pytest.raises(ValueError, match="distinct"):
        match_by_monotone_fit([0.5, 1.0], np.zeros((3, 2)), 0.5)
    with pytest.raises(ValueError, match="NaN"):
        match_by_monotone_fit([0.5, 0.9], np.array([[0.5, np.nan]]), 0.5)
    with pytest.raises(ValueError, match="confidence"):
        match_by_monotone_fit([0.5, 0.9], np.ones((3, 2)), 0.5, confidence=95)


@st.composite
def monotone_curves(draw: st.DrawFn) -> tuple[list[float], np.ndarray, float]:
    """Random strictly increasing accuracies (in u) on a random grid, and a target inside their range."""
    n = draw(st.integers(2, 12))
    # kept fractions 1 - p on a log lattice between 0.75 and 1e-4 (realistic grids are not 1e-16 apart)
    ks = draw(st.lists(st.integers(1, 32), min_size=n, max_size=n, unique=True))
    p = [1 - 10 ** (-k / 8) for k in ks]
    steps = draw(st.lists(st.floats(1e-3, 0.2), min_size=n - 1, max_size=n - 1))
    start = draw(st.floats(0.0, 0.5))
    acc_sorted = start + np.r_[0.0, np.cumsum(steps)]  # for decreasing p (increasing kept fraction)
    acc = acc_sorted[np.argsort(np.argsort(-np.asarray(p)))]
    frac = draw(st.floats(0.0, 1.0))
    target = float(acc_sorted[0] + frac * (acc_sorted[-1] - acc_sorted[0]))
    return p, acc, target


@settings(max_examples=60, deadline=None)
@given(monotone_curves())
def test_property_inversion_brackets_and_hits_target(curve: tuple[list[float], np.ndarray, float]) -> None:
    p, acc, target = curve
    for interpolation in ("pchip", "linear"):
        r = match_by_monotone_fit(p, acc, target, interpolation=interpolation)
        assert r.in_range, r.message
        # p' lies between the two grid points whose accuracies bracket the target
        # (accuracy falls as p rises: the nearest point above the target has the largest such p)
        below = [pi for pi, a in zip(p, acc) if a <= target]
        above = [pi for pi, a in zip(p, acc) if a >= target]
        assert max(above) - 1e-9 <= r.p_match <= min(below) + 1e-9
        # and the fitted curve passes through the target there
        u = np.log1p(-np.asarray(p))
        fit = fit_monotone(np.sort(u), acc[np.argsort(u)], interpolation=interpolation)
        assert fit(math.log1p(-r.p_match)) == pytest.approx(target, abs=1e-7)
        if interpolation == "linear":
            order = np.argsort(acc)
            assert math.log1p(-r.p_match) == pytest.approx(np.interp(target, acc[order], u[order]), abs=1e-9)


@settings(max_examples=25, deadline=None)
@given(
    centre=st.floats(-6.0, -2.0),
    scale=st.floats(0.4, 1.5),
    c=st.floats(1.05, 3.0),
)
def test_property_recovers_known_match_of_smooth_curves(centre: float, scale: float, c: float) -> None:
    """For random logistic baselines and random true compressions, both methods find p' = 1 - (1 - p)/c."""

    def curve(p: float | np.ndarray) -> np.ndarray:
        return 0.1 + 0.89 / (1 + np.exp(-(np.log1p(-np.asarray(p, dtype=float)) - centre) / scale))

    p_pn = 0.9
    p_true = 1 - (1 - p_pn) / c
    target = float(curve(p_true))
    grid = 1 - np.geomspace(0.5, 5e-4, 25)
    fit = match_by_monotone_fit(grid, curve(grid), target, p_packnet=p_pn)
    assert fit.p_match == pytest.approx(p_true, abs=5e-4)
    assert fit.compression == pytest.approx(c, rel=0.02)
    opt = match_by_minimize_scalar(target, lambda p: float(curve(p)), (0.5, 1 - 5e-4), p_packnet=p_pn)
    assert opt.p_match == pytest.approx(p_true, abs=5e-4)


# ----------------------------------------------------------------------------- agreement


def test_agreement_between_methods() -> None:
    acc = noisy_grid(0.002, n_seeds=5, rng=np.random.default_rng(0))
    fit = match_by_monotone_fit(GRID, acc, TARGET, n_bootstrap=200, p_packnet=P_PN)
    opt = match_by_minimize_scalar(TARGET, lambda p: float(acc_mem(p)), (0.5, 0.999), p_packnet=P_PN)
    a = agreement(opt, fit)
    assert a["methods"] == (opt.method, fit.method)
    assert a["both_in_range"] is True
    assert a["p_match_abs_diff"] == pytest.approx(abs(opt.p_match - fit.p_match)) and a["p_match_abs_diff"] < 2e-3
    assert a["compression_abs_diff"] == pytest.approx(abs(opt.compression - fit.compression))
    assert a["compression_rel_diff"] < 0.1
    assert a["a_in_b_ci"] is True and a["b_in_a_ci"] is None


def test_agreement_with_unmatched_result_is_nan() -> None:
    ok = MatchResult("x", 0.9, 0.95, True, "", p_packnet=0.9, compression=2.0)
    bad = MatchResult("y", 0.9, float("nan"), False, "out of range", p_packnet=0.9)
    a = agreement(ok, bad)
    assert a["both_in_range"] is False
    assert math.isnan(a["p_match_abs_diff"]) and math.isnan(a["compression_abs_diff"])
    assert ok.to_dict()["p_match"] == 0.95
