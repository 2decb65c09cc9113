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
from typing import Mapping, Sequence

import numpy as np
from scipy import stats

__all__ = ["ALPHA", "MIN_N", "Comparison", "Selection", "compare_by_seed", "selection_for", "split_seeds"]

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
