"""The matching experiment (paper Appendix B, Table 1): how many weights does PackNet waste?

PackNet at final pruning amount ``p`` reaches mean accuracy ``PerfPN_p``. We look for the
amount ``p'`` at which an idealized baseline (Memory or Multinet) reaches the same mean
accuracy; the compression ratio ``(1 - p) / (1 - p')`` then says how many times more
weights PackNet needs for that accuracy.

Two ways to find ``p'``:

* :func:`match_by_minimize_scalar` -- the paper's way: ``scipy.optimize.minimize_scalar``
  on ``(target - evaluate(p))**2``, where every ``evaluate`` is a fresh set of seeded
  runs. Evaluations are cached (and the cache can be shared between matches against
  the same baseline), so no ``p`` is ever trained twice.
* :func:`match_by_monotone_fit` -- the cheap way: reuse a grid of baseline runs that the
  study already has, fit accuracy as a non-decreasing function of ``u = log(1 - p)``
  (isotonic regression, then a monotone interpolant) and invert it; bootstrap over seeds
  for a confidence interval. Both sides are uncertain -- PackNet's target is a mean over
  seeds too -- so each bootstrap replicate resamples PackNet's seeds as well as the
  baseline's (:func:`matched_u_replicates`); where the two share their seeds, one draw of
  seeds serves both (a paired bootstrap).

Both work in ``u = log(1 - p)`` by default: the interesting region is ``p -> 1``
(95%..99.5% pruned), where accuracy changes over orders of magnitude of ``1 - p`` and is
roughly smooth in ``log(1 - p)`` but very steep in ``p``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from scipy.interpolate import PchipInterpolator
from scipy.optimize import brentq, isotonic_regression, minimize_scalar
from scipy.stats import t as t_dist

from .stats import Interval, jackknife_t, percentile_bootstrap

__all__ = [
    "MatchResult",
    "agreement",
    "bootstrap_draws",
    "compression_ratio",
    "fit_monotone",
    "invert_monotone",
    "log_compression_statistic",
    "MonotoneFit",
    "match_by_minimize_scalar",
    "match_by_monotone_fit",
    "matched_u_replicates",
]

NAN = float("nan")
_TIE_TOL = 1e-12  # accuracies closer than this are one block of the monotone fit


def compression_ratio(p_a: float, p_b: float) -> float:
    """How many times more weights a network pruned by ``p_a`` keeps than one pruned by ``p_b``.

    ``(1 - p_a) / (1 - p_b)``. The paper's example: PackNet needing 60% pruning where the
    baseline reaches the same accuracy at 90% gives ``(1 - 0.60) / (1 - 0.90) = 4``.
    NaN in gives NaN out (an unmatched result has no ratio); ``p`` outside ``[0, 1)`` is an error.
    """
    if math.isnan(p_a) or math.isnan(p_b):
        return NAN
    for p in (p_a, p_b):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"pruning amount must lie in [0, 1), got {p}")
    return (1.0 - p_a) / (1.0 - p_b)


def _compression_or_nan(p_packnet: float | None, p_match: float) -> float:
    return NAN if p_packnet is None else compression_ratio(p_packnet, p_match)


def _p_to_u(p: float) -> float:
    """``u = log(1 - p)``: the search/fit coordinate (see module docstring)."""
    return math.log1p(-p)


def _u_to_p(u: float) -> float:
    return -math.expm1(u)


@dataclass(frozen=True)
class MatchResult:
    """Outcome of one match: the baseline pruning ``p_match`` whose accuracy equals ``target``.

    ``compression`` is ``compression_ratio(p_packnet, p_match)`` (NaN without ``p_packnet``);
    ``ci_low``/``ci_high`` bound ``p_match`` and ``compression_ci_low``/``_high`` bound the
    ratio (NaN where the method gives no interval, or where the interval runs off the
    grid). ``evaluations`` are the ``(p, mean accuracy)`` pairs the method looked at.
    When ``in_range`` is False the target could not be matched inside the searched range:
    ``p_match`` is NaN and ``message`` says which side to extend.
    """

    method: str
    target: float
    p_match: float
    in_range: bool
    message: str
    p_packnet: float | None = None
    compression: float = NAN
    ci_low: float = NAN
    ci_high: float = NAN
    compression_ci_low: float = NAN
    compression_ci_high: float = NAN
    evaluations: list[tuple[float, float]] = field(default_factory=list)

    def compression_vs(self, p_packnet: float) -> float:
        """Compression ratio of this match against PackNet pruned by ``p_packnet``."""
        return compression_ratio(p_packnet, self.p_match)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON reports."""
        return asdict(self)


# ----------------------------------------------------------------------------- the paper's way


def match_by_minimize_scalar(
    target: float,
    evaluate: Callable[[float], float],
    bounds: tuple[float, float],
    *,
    xatol: float = 1e-3,
    maxiter: int = 20,
    space: Literal["log1m", "p"] = "log1m",
    p_packnet: float | None = None,
    cache: MutableMapping[float, float] | None = None,
) -> MatchResult:
    """Find ``p'`` in ``bounds`` with ``evaluate(p') ~= target`` the way the paper did.

    Minimises ``(target - evaluate(p))**2`` with ``minimize_scalar(method="bounded")``.
    ``space="log1m"`` (default) searches over ``t = log(1 - p)``, where accuracy curves are
    far better conditioned as ``p -> 1`` and where ``xatol`` means a *relative* tolerance on
    the kept fraction ``1 - p``; ``space="p"`` searches ``p`` itself (``xatol`` absolute in p).

    ``evaluate`` is expensive (a set of seeded training runs), so every value goes through
    ``cache`` (a fresh dict unless given -- pass the same dict to reuse baseline runs across
    several targets); no ``p`` is evaluated twice. Each call is recorded in
    ``evaluations`` in call order, cached or not.

    The target counts as matched only if the evaluations bracket it (some at or below, some
    at or above). Otherwise the best ``p`` sits on a bound, ``in_range`` is False and
    ``p_match`` is NaN; the message names the closest point.
    """
    lo, hi = bounds
    if not 0.0 <= lo < hi < 1.0:
        raise ValueError(f"bounds must satisfy 0 <= lo < hi < 1, got {bounds}")
    if space not in ("log1m", "p"):
        raise ValueError(f"space must be 'log1m' or 'p', got {space!r}")
    seen: MutableMapping[float, float] = {} if cache is None else cache
    evaluations: list[tuple[float, float]] = []
    n_new = 0

    def accuracy(p: float) -> float:
        nonlocal n_new
        if p not in seen:
            acc = float(evaluate(p))
            if math.isnan(acc):
                raise ValueError(f"evaluate({p}) returned NaN")
            seen[p] = acc
            n_new += 1
        evaluations.append((p, seen[p]))
        return seen[p]

    if space == "log1m":
        to_p: Callable[[float], float] = _u_to_p
        search_bounds = (_p_to_u(hi), _p_to_u(lo))  # log(1-p) decreases in p
    else:
        to_p = float
        search_bounds = (lo, hi)
    res = minimize_scalar(
        lambda x: (target - accuracy(to_p(float(x)))) ** 2,
        bounds=search_bounds,
        method="bounded",
        options={"xatol": xatol, "maxiter": maxiter},
    )
    p_best = to_p(float(res.x))
    # res.x is always a point minimize_scalar evaluated, so this is a cache hit
    acc_best = seen[p_best] if p_best in seen else accuracy(p_best)
    accs = [a for _, a in evaluations]
    bracketed = min(accs) <= target <= max(accs)
    method = f"minimize_scalar[{space}]"
    if not bracketed:
        side = "above" if target > max(accs) else "below"
        edge = ""
        if p_packnet is not None:  # the same range as compressions: out of range means beyond this end
            edge = (f" (the match lies {'below' if side == 'above' else 'beyond'} "
                    f"{compression_ratio(p_packnet, lo if side == 'above' else hi):.3g}x compression)")
        msg = (
            f"out of range: target {target:.4f} is {side} every accuracy seen in p in [{lo:.6g}, {hi:.6g}]{edge} "
            f"(closest: p={p_best:.5f} with {acc_best:.4f}); widen the bounds "
            f"{'towards lower p' if side == 'above' else 'towards p -> 1'}"
        )
        return MatchResult(method, target, NAN, False, msg, p_packnet, evaluations=evaluations)
    msg = (
        f"matched at p'={p_best:.5f} (accuracy {acc_best:.4f}, target {target:.4f}) "
        f"after {len(evaluations)} objective calls ({n_new} new evaluations)"
        + ("" if res.success else f"; optimizer: {res.message}")
    )
    return MatchResult(
        method,
        target,
        p_best,
        True,
        msg,
        p_packnet,
        compression=_compression_or_nan(p_packnet, p_best),
        evaluations=evaluations,
    )


# ----------------------------------------------------------------------------- the cheap way


@dataclass(frozen=True)
class MonotoneFit:
    """Strictly increasing knots ``(u, acc)`` of a fitted accuracy curve, plus the interpolant."""

    u: np.ndarray
    acc: np.ndarray
    curve: Callable[[float], float] | None  # None: linear (np.interp on the knots)

    def __call__(self, u: float) -> float:
        if self.curve is None:
            return float(np.interp(u, self.u, self.acc))
        return float(self.curve(u))


def fit_monotone(
    u: np.ndarray, mean_acc: np.ndarray, *, interpolation: Literal["pchip", "linear"] = "pchip"
) -> MonotoneFit:
    """Non-decreasing fit of ``mean_acc`` against increasing ``u``, reduced to strictly increasing knots.

    Isotonic regression (PAVA) pools neighbouring points that violate monotonicity into flat
    blocks. Each block becomes one knot at its mean ``u`` ("centred isotonic regression",
    Oron & Flournoy 2017, built for exactly this inverse problem), so the knots are strictly
    increasing and the interpolant through them -- PCHIP (monotone, smooth) or linear -- has
    a unique inverse.
    """
    fitted = isotonic_regression(mean_acc).x
    # block boundaries: wherever the fitted value rises (this also merges equal neighbouring
    # blocks; the tolerance absorbs rounding in PAVA's pooled means)
    starts = np.flatnonzero(np.r_[True, np.diff(fitted) > _TIE_TOL])
    ends = np.r_[starts[1:], len(fitted)]
    knots_u = np.array([u[s:e].mean() for s, e in zip(starts, ends)])
    knots_acc = np.array([fitted[s:e].mean() for s, e in zip(starts, ends)])
    curve = PchipInterpolator(knots_u, knots_acc) if interpolation == "pchip" and len(knots_u) >= 2 else None
    return MonotoneFit(knots_u, knots_acc, curve)


def invert_monotone(fit: MonotoneFit, target: float) -> float:
    """``u`` at which the fitted curve equals ``target``; ``-inf``/``+inf`` below/above its range.

    Returning an infinite side rather than clamping keeps an out-of-range target visible (and
    lets the bootstrap count such resamples on the correct side of its interval).
    """
    if len(fit.u) < 2:  # a flat fit has no inverse
        return -math.inf if target < fit.acc[0] else math.inf
    if target < fit.acc[0]:
        return -math.inf
    if target > fit.acc[-1]:
        return math.inf
    k = int(np.searchsorted(fit.acc, target))  # knot k is the first with acc >= target
    if fit.acc[k] == target:
        return float(fit.u[k])
    if fit.curve is None:
        return float(np.interp(target, fit.acc, fit.u))
    return float(brentq(lambda x: fit(x) - target, fit.u[k - 1], fit.u[k], xtol=1e-12))


def bootstrap_draws(n_seeds: int, n_bootstrap: int, seed: int = 0) -> np.ndarray:
    """``(n_bootstrap, n_seeds)`` row indices: each row one resample of the seeds, with replacement.

    The same ``(n_seeds, n_bootstrap, seed)`` always gives the same draws, so replicates computed
    separately (two targets, two baselines) are replicates of the same resamples and can be combined.
    """
    return np.random.default_rng(seed).integers(0, n_seeds, size=(n_bootstrap, n_seeds))


def matched_u_replicates(
    u: np.ndarray,
    accuracy: np.ndarray,
    target_samples: np.ndarray,
    baseline_rows: np.ndarray,
    target_rows: np.ndarray,
    *,
    interpolation: Literal["pchip", "linear"] = "pchip",
) -> np.ndarray:
    """Bootstrap replicates of the matched ``u' = log(1 - p')``, resampling both sides.

    ``u`` increasing, ``accuracy`` ``(n_seeds, len(u))`` in that order; ``target_samples`` PackNet's
    per-seed accuracies. Replicate ``b`` fits the baseline's mean over ``baseline_rows[b]`` and inverts
    it at PackNet's mean over ``target_rows[b]``; ``-inf``/``+inf`` where that target lies below/above
    the fitted range (see :func:`invert_monotone`).
    """
    boot_means = accuracy[baseline_rows].mean(axis=1)  # (n_bootstrap, n_grid)
    boot_targets = np.asarray(target_samples, dtype=float)[target_rows].mean(axis=1)
    return np.array([invert_monotone(fit_monotone(u, m, interpolation=interpolation), float(t))
                     for m, t in zip(boot_means, boot_targets)])


def _check_grid(p: np.ndarray, acc: np.ndarray, shape: Any, confidence: float) -> None:
    if p.ndim != 1 or acc.shape[1] != p.size:
        raise ValueError(f"accuracy must have shape (n_seeds, {p.size}), got {shape}")
    if p.size < 2 or np.any((p < 0) | (p >= 1)) or np.unique(p).size != p.size:
        raise ValueError("p_grid needs at least two distinct values in [0, 1)")
    if not np.all(np.isfinite(acc)):
        raise ValueError("accuracy contains NaN/inf; drop or rerun the missing runs first")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")


def _target_samples(target: float, target_samples: Sequence[float] | None, paired: bool,
                    n_seeds: int) -> np.ndarray | None:
    if target_samples is None:
        if paired:
            raise ValueError("paired=True needs target_samples (PackNet's per-seed accuracies)")
        return None
    ts = np.asarray(target_samples, dtype=float)
    if ts.ndim != 1 or ts.size < 1 or not np.all(np.isfinite(ts)):
        raise ValueError("target_samples must be a non-empty 1-D list of finite accuracies")
    if not math.isclose(float(ts.mean()), target, rel_tol=0, abs_tol=1e-9):
        raise ValueError(f"target {target} is not the mean of target_samples ({ts.mean()})")
    if paired and ts.size != n_seeds:
        raise ValueError(f"paired=True needs as many target samples as baseline seeds ({ts.size} vs {n_seeds})")
    return ts


def log_compression_statistic(
    u: np.ndarray,
    accuracy: np.ndarray,
    target_samples: np.ndarray | None,
    p_packnet: float,
    *,
    target: float | None = None,
    interpolation: Literal["pchip", "linear"] = "pchip",
) -> Callable[[np.ndarray], float]:
    """``statistic(rows)``: the log compression ``log((1 - p) / (1 - p'))`` from the seeds ``rows`` alone.

    ``u`` increasing, ``accuracy`` ``(n_seeds, len(u))`` in that order, ``target_samples`` PackNet's accuracy of
    the same seeds (row ``i`` and sample ``i`` one seed), or None with a fixed ``target``. +inf where PackNet's
    mean lies below the fitted range (the baseline beats it even at its most pruned point), -inf above it. The
    unit of every interval of the study (:func:`sleepcl.study.stats.jackknife_t`).
    """
    ts = None if target_samples is None else np.asarray(target_samples, dtype=float)
    base = math.log1p(-p_packnet)

    def statistic(rows: np.ndarray) -> float:
        t = float(ts[rows].mean()) if ts is not None else float(target)
        return base - invert_monotone(fit_monotone(u, accuracy[rows].mean(axis=0), interpolation=interpolation), t)

    return statistic


def _two_group_jackknife(stat_a: Callable[[np.ndarray], float], n_a: int, stat_b: Callable[[np.ndarray], float],
                         n_b: int, confidence: float) -> Interval:
    """Jackknife-t for a statistic of two independent groups of seeds: the delete-one variances of each group
    added, ``t`` with the smaller group's ``n - 1`` degrees of freedom."""
    est = float(stat_a(np.arange(n_a)))
    var = 0.0
    for stat, n in ((stat_a, n_a), (stat_b, n_b)):
        loo = np.array([stat(np.delete(np.arange(n), i)) for i in range(n)], dtype=float)
        if not np.all(np.isfinite(loo)):
            return Interval(est, -math.inf, math.inf, math.inf, min(n_a, n_b), "jackknife-t", confidence)
        var += (n - 1) / n * float(np.sum((loo - loo.mean()) ** 2))
    n = min(n_a, n_b)
    half = float(t_dist.ppf(0.5 + confidence / 2, n - 1)) * math.sqrt(var)
    return Interval(est, est - half, est + half, math.sqrt(var), n, "jackknife-t", confidence)


def match_by_monotone_fit(
    p_grid: Sequence[float],
    accuracy: np.ndarray,
    target: float,
    *,
    target_samples: Sequence[float] | None = None,
    paired: bool = False,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    p_packnet: float | None = None,
    interpolation: Literal["pchip", "linear"] = "pchip",
    interval: Literal["jackknife-t", "percentile"] = "jackknife-t",
) -> MatchResult:
    """Match ``target`` by inverting a monotone fit of accuracy over an existing grid of runs.

    ``accuracy`` has shape ``(n_seeds, len(p_grid))`` (one row per seed; a 1-D array is one
    seed). The seed means are fitted as a non-decreasing function of ``u = log(1 - p)``
    (more kept weights -> no lower accuracy; see :func:`fit_monotone`) and inverted at
    ``target``. No extra training is needed, which is why this is the cheap way.

    Uncertainty (``n_bootstrap >= 1`` asks for an interval; 0 gives none): by default the jackknife-t interval of
    ``u' = log(1 - p')`` over the seeds (:func:`sleepcl.study.stats.jackknife_t`; the coverage simulation in
    benchmarks/interval_coverage.py chose it), each seed left out in turn and the fit redone. With
    ``target_samples`` (PackNet's per-seed accuracies, whose mean is ``target``) PackNet's uncertainty enters
    too: ``paired=True`` (row ``i`` of ``accuracy`` and ``target_samples[i]`` the same seed) leaves a seed out of
    both sides at once; unpaired, each side's delete-one variance is added. ``interval="percentile"``: the old
    percentile bootstrap over ``n_bootstrap`` resamples (too narrow at 3-5 seeds; kept for comparison). A seed
    whose removal puts the target off the fitted range leaves the interval unbounded (NaN ends in p').

    A target outside the fitted range is never extrapolated: ``in_range`` is False, ``p_match``
    NaN, and the message names the side of the grid that needs more points.
    """
    p = np.asarray(p_grid, dtype=float)
    acc = np.atleast_2d(np.asarray(accuracy, dtype=float))
    _check_grid(p, acc, np.shape(accuracy), confidence)
    ts = _target_samples(target, target_samples, paired, acc.shape[0])

    order = np.argsort(-p)  # increasing u = log(1 - p) == decreasing p
    u = np.log1p(-p[order])
    acc = acc[:, order]
    method = f"monotone_fit[{interpolation}]"
    means = acc.mean(axis=0)
    evaluations = sorted(zip(p[order].tolist(), means.tolist()))

    fit = fit_monotone(u, means, interpolation=interpolation)
    u_hat = invert_monotone(fit, target)
    if not math.isfinite(u_hat):
        side = "below" if u_hat < 0 else "above"
        need = "higher p (prune more)" if u_hat < 0 else "lower p (keep more weights)"
        msg = (
            f"target {target:.4f} is {side} the fitted accuracy range "
            f"[{fit.acc[0]:.4f}, {fit.acc[-1]:.4f}] over p in [{p.min():.6g}, {p.max():.6g}]; "
            f"not extrapolating -- add grid points at {need}"
        )
        return MatchResult(method, target, NAN, False, msg, p_packnet, evaluations=evaluations)

    p_hat = _u_to_p(u_hat)
    result: dict[str, Any] = {"compression": _compression_or_nan(p_packnet, p_hat)}
    notes = [f"matched at p'={p_hat:.5f} from {acc.shape[0]} seed(s) x {p.size} grid points"]
    n_seeds = acc.shape[0]
    if n_seeds < 2 or n_bootstrap < 1:
        notes.append("no interval (needs >= 2 seeds)")
        return MatchResult(method, target, p_hat, True, "; ".join(notes), p_packnet, evaluations=evaluations,
                           **result)
    # the statistic is -u' (the log compression up to the constant log(1 - p)), so its interval is u''s, negated
    neg_u = log_compression_statistic(u, acc, ts if paired else None, 0.0, target=target,
                                      interpolation=interpolation)
    if interval == "percentile":
        rows = bootstrap_draws(n_seeds, n_bootstrap, seed)
        if ts is None:
            ts_used, target_rows = np.array([target]), np.zeros((n_bootstrap, 1), dtype=np.int64)
            sides = "the baseline's seeds (PackNet's target held fixed)"
        elif paired:
            ts_used, target_rows = ts[:n_seeds], rows
            sides = "the seeds, each resample redrawing PackNet's and the baseline's runs of the same seeds"
        else:
            ts_used, target_rows = ts, bootstrap_draws(ts.size, n_bootstrap, seed + 1)
            sides = "the baseline's seeds and, independently, PackNet's"
        boot = -matched_u_replicates(u, acc, ts_used, rows, target_rows, interpolation=interpolation)
        ci = percentile_bootstrap(neg_u, n_seeds, n_bootstrap, confidence, replicates=boot)
        notes.append(f"{confidence:.0%} percentile bootstrap CI over {n_bootstrap} resamples of {sides}")
    elif ts is not None and not paired:
        target_stat = lambda rows: -invert_monotone(fit, float(ts[rows].mean()))  # noqa: E731
        ci = _two_group_jackknife(neg_u, n_seeds, target_stat, ts.size, confidence)
        notes.append(f"{confidence:.0%} jackknife-t CI, the baseline's and PackNet's seeds left out in turn")
    else:
        ci = jackknife_t(neg_u, n_seeds, confidence)
        notes.append(f"{confidence:.0%} jackknife-t CI over {n_seeds} seeds, each left out in turn"
                     + (" of both sides" if paired else " (PackNet's target held fixed)"))
    # p = 1 - exp(u) decreases in u and u = -statistic: the statistic's low end is p''s low end. An end beyond
    # the grid would be an extrapolation: NaN, as an end the data cannot bound
    on_grid = lambda x: math.isfinite(x) and u[0] - 1e-12 <= -x <= u[-1] + 1e-12  # noqa: E731
    result["ci_low"] = _u_to_p(-ci.low) if on_grid(ci.low) else NAN
    result["ci_high"] = _u_to_p(-ci.high) if on_grid(ci.high) else NAN
    if p_packnet is not None:
        result["compression_ci_low"] = _compression_or_nan(p_packnet, result["ci_low"])
        result["compression_ci_high"] = _compression_or_nan(p_packnet, result["ci_high"])
    if not ci.bounded:
        notes.append("the interval runs off the grid (NaN end): a seed's removal puts the target off the fitted "
                     "range; add grid points beyond it or seeds")
    elif math.isnan(result["ci_low"]) or math.isnan(result["ci_high"]):
        notes.append("the interval runs off the grid (NaN end): it reaches off the fitted range; add grid "
                     "points beyond it or seeds")
    return MatchResult(method, target, p_hat, True, "; ".join(notes), p_packnet, evaluations=evaluations, **result)


# ----------------------------------------------------------------------------- comparing


def agreement(a: MatchResult, b: MatchResult) -> dict[str, Any]:
    """How far two matches of the same target agree (the report puts the two methods side by side).

    Absolute differences in ``p'`` and in compression ratio (NaN if either is unmatched),
    the relative compression difference, and whether each ``p'`` lies in the other's
    confidence interval (None where that result has no interval).
    """

    def inside(x: float, r: MatchResult) -> bool | None:
        if math.isnan(r.ci_low) or math.isnan(r.ci_high) or math.isnan(x):
            return None
        return bool(r.ci_low <= x <= r.ci_high)

    d_comp = abs(a.compression - b.compression)
    return {
        "methods": (a.method, b.method),
        "both_in_range": a.in_range and b.in_range,
        "p_match_abs_diff": abs(a.p_match - b.p_match),
        "compression_abs_diff": d_comp,
        "compression_rel_diff": d_comp / abs(b.compression) if b.compression else NAN,
        "a_in_b_ci": inside(a.p_match, b),
        "b_in_a_ci": inside(b.p_match, a),
    }
