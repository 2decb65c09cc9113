"""Coverage of the study's 95% intervals at 3, 5 and 10 seeds, in a simulation of the study's own setting.

Which interval should the study put on a compression ratio, on its growth over p, on its slope over T? Each is a
ratio read off monotone fits of a few seeds' runs, and the seeds are the unit. This script draws many synthetic
studies whose truth is known and counts how often each interval holds it.

The setting, from committed reports (nothing is invented):

* **matching** (compression and growth): the per-p means and seed standard deviations of PackNet, Memory and
  Multinet in ``docs/results/<report>/runs.csv`` (Figure 1's grid; default mnist-5k-paper) are the truth. A
  synthetic seed draws each strategy's accuracy at every p as mean + sd x (a seed effect shared across p, correlation
  ``--rho``, plus noise), rounded to the report's accuracy step (1 / (tasks x test images per task)). The true
  compression is the monotone fit of the true means inverted at PackNet's true mean; the growth is the compression at
  the largest matched p over that at the smallest.
* **slope** (the study across T): the same from ``docs/results/permuted-mnist-5k-sequences-cpu/runs.csv``: the slope
  of log compression against log T over the T where the truth matches.
* **difference** (claim (a)'s accuracy difference at the same p): the paired t-test's interval, for reference.

Intervals compared, every one over seeds as units (all a seed's runs go together): the percentile bootstrap (the
study's interval before), BCa, the studentized bootstrap (each resample's jackknife s.e.), the jackknife-t (estimate
+- t(n-1) x delete-one jackknife s.e.), and a t-interval on per-seed values (each seed's own fit and ratio). A side
the data cannot bound (+-inf) counts as holding the truth on that side; the table also gives how often an interval
was unbounded and its median width (log scale).

    # the tables in benchmarks/README.md (each 20-40 min on this shared 2-core machine)
    python benchmarks/interval_coverage.py --quantities compression,growth,difference --reps 100 --boot 200 \
        --methods "percentile,BCa,jackknife-t,per-seed t"
    python benchmarks/interval_coverage.py --quantities slope --reps 60 --boot 100 \
        --methods "percentile,BCa,jackknife-t,per-seed t"
    python benchmarks/interval_coverage.py --quantities compression --seeds 3 --reps 100 --methods studentized,jackknife-t
    python benchmarks/interval_coverage.py --reps 20 --boot 100 --seeds 3  # a first look in a few minutes
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sleepcl.study.matching import fit_monotone, invert_monotone, log_compression_statistic  # noqa: E402
from sleepcl.study.stats import (  # noqa: E402
    Interval,
    bootstrap_rows,
    jackknife_t,
    percentile_bootstrap,
    studentized_bootstrap,
    t_interval,
)

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
METHODS = ("percentile", "BCa", "studentized", "jackknife-t", "per-seed t")
Statistic = Callable[[np.ndarray], float]


@dataclass
class Truth:
    """Per-strategy true mean and seed sd at each p (a dict per strategy: p -> (mean, sd))."""

    curves: dict[str, dict[float, tuple[float, float]]]
    step: float


def truth_from_runs(csv: Path, strategy_col: str = "strategy", p_col: str = "final_free",
                    acc_col: str = "average_accuracy", experiment: str | None = "pruning",
                    by: str | None = None) -> dict:
    df = pd.read_csv(csv)
    if experiment is not None and "experiments" in df:
        df = df[df["experiments"].str.split(";").apply(lambda e: experiment in e)]
    if "rounds" in df:
        df = df[df["rounds"] == 1]
    keys = [by] if by else []
    out: dict = {}
    for key, g in df.groupby([*keys, strategy_col, p_col]):
        *outer, st, p = key if isinstance(key, tuple) else (key,)
        stats = (float(g[acc_col].mean()), float(g[acc_col].std(ddof=1)))
        out.setdefault(tuple(outer), {}).setdefault(st, {})[float(p)] = stats
    return out


def accuracy_step(csv: Path) -> float:
    """The report's accuracy step: the finest difference between two runs' average accuracies."""
    acc = np.unique(np.round(pd.read_csv(csv).filter(like="acc").select_dtypes("number").to_numpy().ravel(), 9))
    d = np.diff(acc)
    return float(d[d > 1e-9].min())


def draw(curve: dict[float, tuple[float, float]], ps: list[float], n: int, rho: float, step: float,
         rng: np.random.Generator) -> np.ndarray:
    """``(n, len(ps))`` synthetic accuracies: mean + sd x (shared seed effect + noise), rounded to ``step``."""
    mu = np.array([curve[p][0] for p in ps])
    sd = np.array([curve[p][1] for p in ps])
    z = math.sqrt(rho) * rng.standard_normal((n, 1)) + math.sqrt(1 - rho) * rng.standard_normal((n, len(ps)))
    return np.clip(np.round((mu + sd * z) / step) * step, 0.0, 1.0)


def true_log_compression(curve: dict, ps: list[float], target: float, p: float) -> float:
    u = np.log1p(-np.array(ps))[::-1]
    means = np.array([curve[q][0] for q in ps])[::-1]
    return math.log1p(-p) - invert_monotone(fit_monotone(u, means), target)


def intervals(stat: Statistic, n: int, per_seed: np.ndarray, boot: int, seed: int, methods: tuple[str, ...]
              ) -> dict[str, Interval]:
    out: dict[str, Interval] = {}
    if "percentile" in methods or "BCa" in methods:
        reps = np.array([stat(r) for r in bootstrap_rows(n, boot, seed)], dtype=float)
        if "percentile" in methods:
            out["percentile"] = percentile_bootstrap(stat, n, boot, replicates=reps)
        if "BCa" in methods:
            out["BCa"] = percentile_bootstrap(stat, n, boot, bca=True, replicates=reps)
    if "studentized" in methods:
        out["studentized"] = studentized_bootstrap(stat, n, max(50, boot // 4), seed=seed)
    if "jackknife-t" in methods:
        out["jackknife-t"] = jackknife_t(stat, n)
    if "per-seed t" in methods:
        out["per-seed t"] = t_interval(per_seed)
    return out


def _covers(ci: Interval, truth: float) -> bool:
    if math.isnan(ci.low) or math.isnan(ci.high):
        return False
    return ci.low <= truth <= ci.high


# --------------------------------------------------------------------------------------------- the quantities


def matching_cases(truth: dict, baselines: list[str], match_ps: list[float]):
    """Yield (name, true value, make(rng, n) -> (statistic, per-seed values)) for compression and growth."""
    grid = sorted(truth["packnet"])
    for b in baselines:
        curve = truth[b]
        ps = sorted(curve)
        u = np.log1p(-np.array(ps))[::-1]
        true_c = {p: true_log_compression(curve, ps, truth["packnet"][p][0], p) for p in match_ps}
        ok = [p for p in match_ps if math.isfinite(true_c[p])]
        for p in ok:
            yield ("compression", f"{b} p={p:g}", true_c[p], _matching_maker(truth, b, ps, u, [p], grid))
        if len(ok) >= 2:
            lo, hi = ok[0], ok[-1]
            yield ("growth", f"{b} p={lo:g}->{hi:g}", true_c[hi] - true_c[lo],
                   _matching_maker(truth, b, ps, u, [lo, hi], grid))


def _matching_maker(truth, b, ps, u, at, grid):
    def make(rng, n, rho, step):
        acc = draw(truth[b], ps, n, rho, step, rng)[:, ::-1]
        targets = {p: draw(truth["packnet"], [p], n, rho, step, rng)[:, 0] for p in at}
        stats = [log_compression_statistic(u, acc, targets[p], p) for p in at]
        stat = stats[0] if len(stats) == 1 else (lambda rows: _diff(stats[1](rows), stats[0](rows)))
        per_seed = np.array([stat(np.array([i])) for i in range(n)])
        return stat, per_seed
    return make


def _diff(a: float, b: float) -> float:
    with np.errstate(invalid="ignore"):
        return float(np.float64(a) - np.float64(b))


def slope_cases(by_T: dict, baselines: list[str], match_ps: list[float]):
    Ts = sorted(by_T)
    x = np.log(np.array(Ts, dtype=float))
    for b in baselines:
        for p in match_ps:
            true = {}
            for T in Ts:
                curve = by_T[T][b]
                ps = sorted(curve)
                true[T] = true_log_compression(curve, ps, by_T[T]["packnet"][p][0], p)
            use = [T for T in Ts if math.isfinite(true[T])]
            if len(use) < 2:
                continue
            xs = np.log(np.array(use, dtype=float))
            slope = float(np.polyfit(xs, [true[T] for T in use], 1)[0])
            yield ("slope", f"{b} p={p:g} T={','.join(map(str, use))}", slope, _slope_maker(by_T, b, p, use))
    del x


def _slope_maker(by_T, b, p, Ts):
    xs = np.log(np.array(Ts, dtype=float))
    xc = xs - xs.mean()

    def make(rng, n, rho, step):
        stats = []
        for T in Ts:
            curve = by_T[T][b]
            ps = sorted(curve)
            u = np.log1p(-np.array(ps))[::-1]
            acc = draw(curve, ps, n, rho, step, rng)[:, ::-1]
            target = draw(by_T[T]["packnet"], [p], n, rho, step, rng)[:, 0]
            stats.append(log_compression_statistic(u, acc, target, p))

        def stat(rows):
            y = np.array([s(rows) for s in stats])
            if not np.all(np.isfinite(y)):
                return math.nan if np.any(np.isnan(y)) else (math.inf if y[-1] > y[0] else -math.inf)
            return float(((y - y.mean()) * xc).sum() / (xc ** 2).sum())
        per_seed = np.array([stat(np.array([i])) for i in range(n)])
        return stat, per_seed
    return make


def difference_cases(truth: dict, baselines: list[str], match_ps: list[float]):
    for b in baselines:
        for p in match_ps:
            yield ("difference", f"{b} - packnet p={p:g}", truth[b][p][0] - truth["packnet"][p][0],
                   _difference_maker(truth, b, p))


def _difference_maker(truth, b, p):
    def make(rng, n, rho, step):
        d = draw(truth[b], [p], n, rho, step, rng)[:, 0] - draw(truth["packnet"], [p], n, rho, step, rng)[:, 0]
        return (lambda rows: float(d[rows].mean())), d
    return make


# --------------------------------------------------------------------------------------------- the run


def simulate(cases, seeds: list[int], reps: int, boot: int, rho: float, step: float, methods: tuple[str, ...],
             rng_seed: int = 0, log=print) -> pd.DataFrame:
    rows = []
    for quantity, name, true, make in cases:
        for n in seeds:
            rng = np.random.default_rng([rng_seed, n, zlib.crc32(name.encode())])  # the same draws every run
            use = ("per-seed t",) if quantity == "difference" else methods
            hits = {m: [] for m in use}
            unbounded = {m: 0 for m in use}
            widths = {m: [] for m in use}
            started = time.perf_counter()
            for r in range(reps):
                stat, per_seed = make(rng, n, rho, step)
                for m, ci in intervals(stat, n, per_seed, boot, r, use).items():
                    hits[m].append(_covers(ci, true))
                    unbounded[m] += not ci.bounded
                    if ci.bounded:
                        widths[m].append(ci.high - ci.low)
            for m in use:
                rows.append({"quantity": quantity, "case": name, "n": n, "method": m if quantity != "difference"
                             else "paired t", "coverage": float(np.mean(hits[m])), "reps": reps,
                             "unbounded": unbounded[m] / reps,
                             "median_width": float(np.median(widths[m])) if widths[m] else math.nan})
            log(f"{quantity:11s} {name:32s} n={n:2d}: " + ", ".join(
                f"{m} {np.mean(hits[m]):.2f}" for m in use) + f"  ({time.perf_counter() - started:.0f} s)")
    return pd.DataFrame(rows)


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Coverage pooled over the cases of each quantity (and the worst case), per method and seed count."""
    g = df.groupby(["quantity", "method", "n"])
    out = g.agg(coverage=("coverage", "mean"), worst=("coverage", "min"), cases=("case", "count"),
                unbounded=("unbounded", "mean"), median_width=("median_width", "median")).reset_index()
    return out


def markdown(s: pd.DataFrame) -> str:
    lines = []
    for q, g in s.groupby("quantity", sort=False):
        ns = sorted(g["n"].unique())
        lines.append(f"\n**{q}** ({int(g['cases'].iloc[0])} cases; coverage pooled over them, worst case in brackets, "
                     "share of unbounded intervals after the slash)\n")
        lines.append("| method | " + " | ".join(f"n = {n}" for n in ns) + " |")
        lines.append("|---|" + "---|" * len(ns))
        for m, gm in g.groupby("method", sort=False):
            cells = []
            for n in ns:
                r = gm[gm["n"] == n]
                if r.empty:
                    cells.append("–")
                    continue
                r = r.iloc[0]
                cells.append(f"{r.coverage:.1%} [{r.worst:.0%}]" + (f" / {r.unbounded:.0%}" if r.unbounded else ""))
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--report", default="mnist-5k-paper", help="the committed report whose runs set the truth")
    ap.add_argument("--sequences", default="permuted-mnist-5k-sequences-cpu")
    ap.add_argument("--seeds", default="3,5,10", help="seed counts")
    ap.add_argument("--reps", type=int, default=200, help="synthetic studies per case and seed count")
    ap.add_argument("--boot", type=int, default=400, help="bootstrap resamples (studentized: a quarter)")
    ap.add_argument("--rho", type=float, default=0.2, help="correlation of a seed's runs across p")
    ap.add_argument("--quantities", default="compression,growth,slope,difference")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--csv", default=None, help="write every case's coverage here")
    a = ap.parse_args(argv)
    seeds = [int(x) for x in a.seeds.split(",")]
    methods = tuple(m for m in a.methods.split(",") if m)
    wanted = set(a.quantities.split(","))
    started = time.perf_counter()
    frames = []
    runs = RESULTS / a.report / "runs.csv"
    truth = truth_from_runs(runs)[()]
    step = accuracy_step(runs)
    match_ps = [0.95, 0.99, 0.995] if "paper" in a.report else sorted(truth["packnet"])[-3:]
    baselines = [b for b in ("memory", "multinet") if b in truth]
    print(f"truth: {runs.relative_to(RESULTS.parents[1])}; accuracy step {step:g}; rho {a.rho}; {a.reps} reps; "
          f"{a.boot} resamples")
    cases = [c for c in matching_cases(truth, baselines, match_ps) if c[0] in wanted]
    if "difference" in wanted:
        cases += list(difference_cases(truth, baselines, match_ps))
    frames.append(simulate(cases, seeds, a.reps, a.boot, a.rho, step, methods))
    if "slope" in wanted:
        seq = RESULTS / a.sequences / "runs.csv"
        by_T = {k[0]: v for k, v in truth_from_runs(seq, p_col="p", acc_col="accuracy", experiment=None,
                                                      by="T").items()}
        step_T = accuracy_step(seq)
        print(f"slope truth: {seq.relative_to(RESULTS.parents[1])}; accuracy step {step_T:g}")
        frames.append(simulate(list(slope_cases(by_T, ["memory", "multinet"], [0.5, 0.8, 0.9])), seeds, a.reps,
                               a.boot, a.rho, step_T, methods))
    df = pd.concat(frames, ignore_index=True)
    if a.csv:
        df.to_csv(a.csv, index=False)
    print(markdown(summary(df)))
    print(f"\n{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
