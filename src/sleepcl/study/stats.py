"""Tests of differences between groups of seeded runs, and the rules for calling one significant.

Why a module of its own: every experiment compares means over seeds (one N against another, a baseline
against PackNet), and each comparison must fit the design. Runs of the study that share a seed share their
initial weights and data order, so where two groups hold the same seeds the test is paired by seed
(:func:`scipy.stats.ttest_rel`); otherwise it is Welch's t-test (:func:`scipy.stats.ttest_ind` with unequal
variances). A difference is called significant only with at least :data:`MIN_N` seeds a side and a two-sided
p-value below :data:`ALPHA`.

Choosing "the best N" and then testing it on the same seeds would favour whichever N was lucky on those
seeds. :func:`selection_for` holds half of the seeds out, so that the choice is made on one half and tested
on the other -- where that half has at least :data:`MIN_N` seeds; with fewer seeds it chooses and tests on
all of them and multiplies every p-value by the number of pairs the choice ranged over (Bonferroni), and
:class:`Selection` says which was done.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
from scipy import stats

__all__ = ["ALPHA", "MIN_N", "Comparison", "Interval", "Selection", "bootstrap_rows", "compare_by_seed", "holm",
           "jackknife_t", "percentile_bootstrap", "selection_for", "split_seeds", "studentized_bootstrap", "t_interval"]

ALPHA = 0.05
"""Two-sided significance level."""
MIN_N = 3
"""Fewest seeds (pairs, or runs a side for Welch) with which any difference may be called significant."""

NAN = float("nan")


@dataclass(frozen=True)
class Comparison:
    """``a - b`` of two groups of seeded runs: the difference of means, its standard error and a t-test."""

    diff: float
    se: float
    n: int            # pairs (paired) or the smaller group (Welch)
    pvalue: float     # two-sided; NaN where there is no test (n < 2)
    test: str         # "paired t" or "Welch t" ("" without a test)

    @property
    def significant(self) -> bool:
        """A test was possible with at least :data:`MIN_N` seeds and its p-value is below :data:`ALPHA`."""
        return self.n >= MIN_N and not math.isnan(self.pvalue) and self.pvalue < ALPHA

    def describe(self, digits: int = 4) -> str:
        """E.g. ``+0.0123 ± 0.0040 (paired t, n = 5, p = 0.031)``."""
        d = f"{self.diff:+.{digits}f}" + ("" if math.isnan(self.se) else f" ± {self.se:.{digits}f}")
        if not self.test:
            return f"{d} (n = {self.n}: no test)"
        return f"{d} ({self.test}, n = {self.n}, p = {_fmt_p(self.pvalue)})"


def _fmt_p(p: float) -> str:
    if math.isnan(p):
        return "–"
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def compare_by_seed(a: Mapping[int, float], b: Mapping[int, float]) -> Comparison:
    """Compare the runs ``a`` and ``b`` (seed -> value): paired by seed when both hold the same seeds,
    Welch's t-test otherwise. Zero spread with a non-zero difference gives p = 0; none at all, p = 1."""
    if not a or not b:
        return Comparison(NAN, NAN, 0, NAN, "")
    if set(a) == set(b):
        seeds = sorted(a)
        d = np.array([a[s] - b[s] for s in seeds], dtype=float)
        n = d.size
        se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else NAN
        if n < 2:
            return Comparison(float(d.mean()), se, n, NAN, "")
        p = _degenerate_p(d.mean(), se) if se == 0 else _quiet(lambda: stats.ttest_rel(
            [a[s] for s in seeds], [b[s] for s in seeds]).pvalue)
        return Comparison(float(d.mean()), se, n, p, "paired t")
    x, y = np.array(list(a.values()), dtype=float), np.array(list(b.values()), dtype=float)
    n = int(min(x.size, y.size))
    diff = float(x.mean() - y.mean())
    if n < 2:
        return Comparison(diff, NAN, n, NAN, "")
    se = math.sqrt(x.var(ddof=1) / x.size + y.var(ddof=1) / y.size)
    p = _degenerate_p(diff, se) if se == 0 else _quiet(lambda: stats.ttest_ind(x, y, equal_var=False).pvalue)
    return Comparison(diff, se, n, p, "Welch t")


def _quiet(pvalue) -> float:  # noqa: ANN001
    # accuracies that agree to the last digits but one make scipy warn of lost precision; the p-value stands
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(pvalue())


def _degenerate_p(diff: float, se: float) -> float:
    return 0.0 if diff != 0 else 1.0


def split_seeds(seeds: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(selection, confirmation): the first half of the sorted seeds chooses, the second half tests.

    The first half holds the extra seed of an odd count. One seed gives no confirmation seeds.
    """
    ordered = tuple(sorted(set(int(s) for s in seeds)))
    cut = (len(ordered) + 1) // 2
    return ordered[:cut], ordered[cut:]


@dataclass(frozen=True)
class Selection:
    """How a best choice among several (e.g. the best N) is made and tested: chosen on ``choose``, tested on
    ``test``; where the two are the same seeds, the p-values are multiplied by ``pairs`` (Bonferroni)."""

    choose: tuple[int, ...]
    test: tuple[int, ...]
    pairs: int = 1

    @property
    def held_out(self) -> bool:
        return not set(self.choose) & set(self.test)

    def adjust(self, c: Comparison) -> Comparison:
        """``c`` with its p-value corrected for the choice (unchanged on held-out seeds)."""
        if self.held_out or math.isnan(c.pvalue):
            return c
        return dataclasses.replace(c, pvalue=min(1.0, c.pvalue * self.pairs))

    def describe(self) -> str:
        if self.held_out:
            return f"chosen on seeds {_seed_list(self.choose)} and tested on the held-out seeds {_seed_list(self.test)}"
        return (f"chosen and tested on seeds {_seed_list(self.choose)} (too few to hold half out), every p-value "
                f"multiplied by the {self.pairs} pairs the choice ranged over (Bonferroni)")


def _seed_list(seeds: Sequence[int]) -> str:
    seeds = list(seeds)
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}–{seeds[-1]}"
    return ", ".join(str(x) for x in seeds) or "none"


def selection_for(seeds: Sequence[int], pairs: int) -> Selection:
    """Held-out halves (:func:`split_seeds`) where the tested half has at least :data:`MIN_N` seeds; otherwise
    all seeds for both, corrected for the ``pairs`` comparisons among which the choice was made."""
    choose, test = split_seeds(seeds)
    if len(test) >= MIN_N:
        return Selection(choose, test)
    every = tuple(sorted(set(int(s) for s in seeds)))
    return Selection(every, every, max(1, int(pairs)))


# --------------------------------------------------------------------------------------------- intervals
#
# Why jackknife-t. The study's ratios (compression from the monotone fit, its growth over p, its slope over T) are
# smooth-ish functions of a few seeds' runs, with 3, 5 or 10 seeds. benchmarks/interval_coverage.py simulates exactly
# that setting (per-seed accuracies drawn around a committed report's means with its seed spread, rounded to the
# test set's accuracy step) and measures each interval's coverage: the percentile bootstrap covers 71-75% at 3 seeds
# (a resample of 3 seeds takes at most 10 distinct values), BCa and the studentized bootstrap are hardly better, and
# the t on per-seed ratios estimates a mean of per-seed ratios, not the ratio of means; the jackknife-t interval --
# the estimate +- t(n-1) times the delete-one-seed jackknife standard error -- covers 93-97% (pooled) at 3, 5 and 10
# seeds. The tables are in benchmarks/README.md, with the commands that printed them.


@dataclass(frozen=True)
class Interval:
    """A point estimate and its two-sided interval at ``confidence``, from ``n`` seeds by ``method``.

    ``low``/``high`` are -inf/+inf where the data cannot bound that side (a seed's removal puts the statistic off
    the grid); NaN where there is no interval at all (fewer than 2 seeds or no estimate).
    """

    estimate: float
    low: float
    high: float
    se: float
    n: int
    method: str
    confidence: float = 0.95

    @property
    def bounded(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    def excludes(self, value: float) -> int:
        """+1 where the whole interval lies above ``value``, -1 below, 0 where it holds it (or is missing)."""
        if math.isnan(self.low) or math.isnan(self.high):
            return 0
        return 1 if self.low > value else (-1 if self.high < value else 0)

    def exp(self) -> "Interval":
        """The interval of ``exp(statistic)`` (a ratio estimated on the log scale)."""
        return dataclasses.replace(self, estimate=_exp(self.estimate), low=_exp(self.low), high=_exp(self.high))


def _exp(x: float) -> float:
    return x if math.isnan(x) else math.exp(x) if x < 700 else math.inf


NO_INTERVAL = "no interval"


def jackknife_t(statistic: Callable[[np.ndarray], float], n: int, confidence: float = 0.95) -> Interval:
    """Jackknife-t interval of ``statistic`` over ``n`` seeds (the units: every run of a seed goes together).

    ``statistic(rows)`` computes the quantity from the seeds ``rows`` (indices into 0..n-1). The interval is the
    full-data estimate +- ``t(n-1)`` times the delete-one jackknife standard error
    ``sqrt((n-1)/n * sum((theta_(i) - mean)^2))``. A delete-one value that is not finite (off the grid) leaves the
    data unable to bound the statistic: the interval is (-inf, inf).
    """
    estimate = float(statistic(np.arange(n)))
    if n < 2 or not math.isfinite(estimate):
        return Interval(estimate, NAN, NAN, NAN, n, NO_INTERVAL, confidence)
    loo = np.array([statistic(np.delete(np.arange(n), i)) for i in range(n)], dtype=float)
    if not np.all(np.isfinite(loo)):
        return Interval(estimate, -math.inf, math.inf, math.inf, n, "jackknife-t", confidence)
    se = float(math.sqrt((n - 1) / n * np.sum((loo - loo.mean()) ** 2)))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * se
    return Interval(estimate, estimate - half, estimate + half, se, n, "jackknife-t", confidence)


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Student's t interval of the mean of per-seed ``values`` (e.g. per-seed slopes or log ratios)."""
    v = np.asarray(values, dtype=float)
    n = v.size
    if n < 2:
        return Interval(float(v.mean()) if n else NAN, NAN, NAN, NAN, n, NO_INTERVAL, confidence)
    if not np.all(np.isfinite(v)):
        return Interval(NAN, -math.inf, math.inf, math.inf, n, "t", confidence)
    se = float(v.std(ddof=1) / math.sqrt(n))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * se
    m = float(v.mean())
    return Interval(m, m - half, m + half, se, n, "t", confidence)


def bootstrap_rows(n: int, n_bootstrap: int, seed: int = 0) -> np.ndarray:
    """``(n_bootstrap, n)`` resamples of the seeds 0..n-1 with replacement (the same arguments, the same draws)."""
    return np.random.default_rng(seed).integers(0, n, size=(n_bootstrap, n))


def percentile_bootstrap(statistic: Callable[[np.ndarray], float], n: int, n_bootstrap: int = 1000,
                         confidence: float = 0.95, seed: int = 0, *, bca: bool = False,
                         replicates: np.ndarray | None = None) -> Interval:
    """The percentile (or, with ``bca``, the bias-corrected and accelerated) bootstrap interval over ``n`` seeds.

    Kept for comparison (benchmarks/interval_coverage.py): at 3-5 seeds both are too narrow. ``replicates``: the
    statistic over :func:`bootstrap_rows` ``(n, n_bootstrap, seed)``, if already computed.
    """
    estimate = float(statistic(np.arange(n)))
    if n < 2 or not math.isfinite(estimate):
        return Interval(estimate, NAN, NAN, NAN, n, NO_INTERVAL, confidence)
    boot = replicates if replicates is not None else np.array(
        [statistic(r) for r in bootstrap_rows(n, n_bootstrap, seed)], dtype=float)
    boot = boot[~np.isnan(boot)]
    alpha = (1.0 - confidence) / 2
    levels = np.array([alpha, 1 - alpha])
    method = "percentile bootstrap"
    if bca:
        method = "BCa bootstrap"
        below = np.mean(boot < estimate) + 0.5 * np.mean(boot == estimate)
        z0 = stats.norm.ppf(min(max(below, 1e-6), 1 - 1e-6))
        loo = np.array([statistic(np.delete(np.arange(n), i)) for i in range(n)], dtype=float)
        d = loo.mean() - loo if np.all(np.isfinite(loo)) else np.zeros(n)
        denom = 6.0 * float(np.sum(d ** 2)) ** 1.5
        a = float(np.sum(d ** 3)) / denom if denom > 0 else 0.0
        z = stats.norm.ppf(levels)
        levels = stats.norm.cdf(z0 + (z0 + z) / (1 - a * (z0 + z)))
    lo, hi = np.quantile(boot, levels, method="inverted_cdf")  # never interpolates across +-inf
    se = float(np.std(boot[np.isfinite(boot)], ddof=1)) if np.sum(np.isfinite(boot)) > 1 else NAN
    return Interval(estimate, float(lo), float(hi), se, n, method, confidence)


def studentized_bootstrap(statistic: Callable[[np.ndarray], float], n: int, n_bootstrap: int = 200,
                          confidence: float = 0.95, seed: int = 0) -> Interval:
    """The bootstrap-t interval: each resample studentized by its own delete-one jackknife standard error.

    For comparison (benchmarks/interval_coverage.py); it costs ``n_bootstrap * (n + 1)`` evaluations.
    """
    full = jackknife_t(statistic, n, confidence)
    if not (math.isfinite(full.se) and full.se > 0):
        return dataclasses.replace(full, method="studentized bootstrap")
    ts = []
    for r in bootstrap_rows(n, n_bootstrap, seed):
        est = statistic(r)
        loo = np.array([statistic(np.delete(r, i)) for i in range(n)], dtype=float)
        if not (math.isfinite(est) and np.all(np.isfinite(loo))):
            continue
        se = math.sqrt((n - 1) / n * np.sum((loo - loo.mean()) ** 2))
        if se > 0:
            ts.append((est - full.estimate) / se)
    if len(ts) < 10:
        return Interval(full.estimate, -math.inf, math.inf, full.se, n, "studentized bootstrap", confidence)
    alpha = (1.0 - confidence) / 2
    q_lo, q_hi = np.quantile(ts, [alpha, 1 - alpha])
    return Interval(full.estimate, full.estimate - q_hi * full.se, full.estimate - q_lo * full.se, full.se, n,
                    "studentized bootstrap", confidence)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error at :data:`ALPHA` when several tests are pooled into
    one verdict); NaN stays NaN and is not counted in the family."""
    p = np.asarray(pvalues, dtype=float)
    ok = np.flatnonzero(~np.isnan(p))
    out = np.full(p.shape, NAN)
    m = ok.size
    running = 0.0
    for rank, i in enumerate(ok[np.argsort(p[ok], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()
