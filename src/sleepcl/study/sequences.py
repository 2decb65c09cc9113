"""The study across the number of tasks: does weight freezing waste more capacity as tasks pile up?

Figure 1 (PackNet, Memory and Multinet over a grid of final free fractions p) and the matching experiment
(the p' at which a baseline reaches PackNet's accuracy, and the compression ratio ``(1 - p) / (1 - p')``) are
run at several sequence lengths T on a Permuted benchmark (every task all 10 classes, its own pixel
permutation). Then:

* the **compression ratio against T**, each with a jackknife-t interval over the seeds;
* the **trend**: the slope of log(compression) against log(T), and of the accuracy gap (baseline - PackNet at
  the same p) against log(T), each with a jackknife-t interval; a trend is called only when its interval excludes 0;
* **what the baselines cost**: seconds per member, training and evaluation per task, and each population's peak
  resident memory (Memory rehearses every task seen, so its pool of training data grows with T).

Uncertainty. Seeds are the unit: seed i's runs (PackNet's and the baseline's, at every T) go together. Every
interval is the jackknife-t (:func:`sleepcl.study.stats.jackknife_t`): each seed left out in turn, the baseline's
accuracy refitted as a non-decreasing function of log(1 - p) and inverted at PackNet's mean
(:func:`sleepcl.study.matching.fit_monotone`, :func:`~sleepcl.study.matching.invert_monotone`, the monotone fit
the main study uses), the estimate +- t(n - 1) times the delete-one standard error. The percentile bootstrap this
study used before covered 71% at 3 seeds in benchmarks/interval_coverage.py's simulation of this study's slopes;
the jackknife-t 95%. A seed whose removal puts a target off the fitted range leaves the interval unbounded on
that side (counted in the report); a point estimate off the range is reported as unmatched and left out of the trend.

Runs live in the results store like any other (:func:`sleepcl.runs.runner.run_configs`), so an interrupted study
resumes; the report (:mod:`.sequences_report`) is written from the store alone.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..config import RunConfig
from ..runs.runner import run_configs
from ..runs.store import RunStore
from .analysis import mean_se, summarize
from .matching import fit_monotone, invert_monotone, log_compression_statistic, match_by_monotone_fit
from .stats import Interval, jackknife_t
from .run import RecordLookup

__all__ = ["PRESETS", "SEQUENCE_STRATEGIES", "SequenceSettings", "analyse", "analyse_frame", "eval_every", "peak_rss", "run_sequences",
           "sequence_configs", "sequence_settings"]

SEQUENCE_STRATEGIES = ("packnet", "memory", "multinet")
BASELINES = ("memory", "multinet")
CONFIDENCE = 0.95


@dataclass(frozen=True)
class SequenceSettings:
    """One preset of the study across T: everything its run configs and analysis need."""

    preset: str
    benchmark: str
    tasks: tuple[int, ...]           # the sequence lengths T
    grid: tuple[float, ...]          # final free fractions p of Figure 1 (and of the baselines' fits)
    matching_ps: tuple[float, ...]   # PackNet's p whose accuracy the baselines are matched to
    seeds: tuple[int, ...]
    epochs: int                      # E
    retrain_epochs: int              # B (N = 1: one-shot pruning, the original PackNet)
    batch_size: int | None = None    # None: the paper's (128)
    widths: tuple[int, ...] | None = None  # None: the paper's MLP, 784-256-256
    evaluations: int = 5             # rows of the accuracy matrix evaluated per run (eval_every = T // this)
    n_bootstrap: int = 1000
    # More pruned points for the baselines only: at large T PackNet at p falls below what a baseline reaches even
    # at the grid's most pruned point, and the match needs the baseline's curve to go lower (PackNet there would
    # be near chance, so it is not run).
    baseline_grid: tuple[float, ...] = ()

    def ps(self, strategy: str) -> tuple[float, ...]:
        """The final free fractions ``strategy`` runs at, in increasing order."""
        return tuple(sorted(self.grid + (self.baseline_grid if strategy in BASELINES else ())))

    def __post_init__(self) -> None:
        missing = [p for p in self.matching_ps if p not in self.grid]
        if missing:
            raise ValueError(f"matching p {missing} must be points of the grid {self.grid}")
        if not self.tasks or min(self.tasks) < 1 or not self.seeds:
            raise ValueError("the study needs at least one sequence length T >= 1 and one seed")

    def describe(self) -> str:
        arch = "x".join(map(str, self.widths)) if self.widths else "784-256-256 (the paper's)"
        extra = f" (Memory and Multinet also {', '.join(f'{p:g}' for p in self.baseline_grid)})" \
            if self.baseline_grid else ""
        return (f"MLP {arch}, N = 1, E = {self.epochs}, B = {self.retrain_epochs}, batch {self.batch_size or 128}, "
                f"Adam lr 1e-3; T = {', '.join(map(str, self.tasks))}; p in {', '.join(f'{p:g}' for p in self.grid)}"
                f"{extra}; seeds {', '.join(map(str, self.seeds))}")

    def with_overrides(self, tasks: Sequence[int] | None = None, seeds: Sequence[int] | None = None) -> "SequenceSettings":
        """The same preset with other sequence lengths or seeds (``--tasks``, ``--seeds``)."""
        return dataclasses.replace(self, tasks=tuple(tasks) if tasks else self.tasks,
                                   seeds=tuple(seeds) if seeds else self.seeds)


# Matching at p = 0.5, 0.8, 0.9 with the baselines also at 0.998-0.9995: T = 5, 10 and 20 of this grid, run first,
# showed PackNet's accuracy at a fixed p falling fast with T while the baselines' barely moved, so that at T = 20
# Memory at p = 0.995 still beat PackNet at p = 0.9 (and at T = 10 at p = 0.95): no match on the grid.
# Sized to this project's 2-core CPU shared with other jobs: with E = B = 2, T = 5's 21 PackNet runs took 153 s
# beside three other busy processes, which put the whole study near 2 h 10 min; E = B = 1 halves it. Cost grows
# with the sum of the T (85 tasks of steps per run), so T = 50 is well over half of it; Memory and Multinet draw each
# batch from every task seen (a pixel map per sample, and every task's head computed for every sample).
PRESETS: dict[str, SequenceSettings] = {
    "cpu": SequenceSettings(
        preset="cpu", benchmark="permuted-mnist-5k", tasks=(5, 10, 20, 50),
        grid=(0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995), matching_ps=(0.5, 0.8, 0.9),
        seeds=(0, 1, 2), epochs=1, retrain_epochs=1, baseline_grid=(0.998, 0.999, 0.9995)),
    "tiny": SequenceSettings(
        preset="tiny", benchmark="permuted-mnist-5k", tasks=(2, 4), grid=(0.5, 0.8, 0.95), matching_ps=(0.5,),
        seeds=(0, 1), epochs=1, retrain_epochs=1, batch_size=512, widths=(8, 8), evaluations=2, n_bootstrap=200,
        baseline_grid=(0.98,)),
}


def sequence_settings(preset: str) -> SequenceSettings:
    try:
        return PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown preset {preset!r} for the study across T; choose one of {', '.join(PRESETS)}") from None


def eval_every(s: SequenceSettings, n_tasks: int) -> int:
    """Evaluate after every k-th task so that about ``s.evaluations`` rows are evaluated (and always the last)."""
    return max(1, n_tasks // s.evaluations)


def make_config(s: SequenceSettings, n_tasks: int, strategy: str, p: float, seed: int) -> RunConfig:
    return RunConfig(benchmark=s.benchmark, strategy=strategy, final_free=p, rounds=1, epochs=s.epochs,
                     retrain_epochs=s.retrain_epochs, seed=seed, batch_size=s.batch_size, widths=s.widths,
                     n_tasks=n_tasks, eval_every=eval_every(s, n_tasks))


def sequence_configs(s: SequenceSettings, n_tasks: int | None = None, strategy: str | None = None) -> list[RunConfig]:
    """Every run of the study (or of one T, or one strategy at one T)."""
    return [make_config(s, t, st, p, seed) for t in s.tasks if n_tasks in (None, t)
            for st in SEQUENCE_STRATEGIES if strategy in (None, st) for p in s.ps(st) for seed in s.seeds]


# --------------------------------------------------------------------------------------------- running


def peak_rss(reset: bool = False) -> int | None:
    """This process's peak resident memory in bytes since the last reset (Linux: VmHWM; ``reset`` clears it
    through /proc/self/clear_refs first), or None where /proc does not tell."""
    try:
        if reset:
            Path("/proc/self/clear_refs").write_text("5")
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def run_sequences(s: SequenceSettings, *, store: RunStore | None, costs: Path | None = None,
                  log: Callable[[str], None] | None = None, run: Callable[..., list[dict[str, Any]]] = run_configs,
                  **run_kwargs: Any) -> int:
    """Train every run ``s`` needs that ``store`` lacks, one group per (T, strategy); return how many trained.

    Each group's populations train in one ``run`` call (:func:`sleepcl.runs.runner.run_configs`; its
    ``run_kwargs``: device, max_population, progress, ...) with the process's peak resident memory reset before
    and read after; with ``costs`` (a JSON file) those measurements are added there, a list per group (the store
    keeps the runs, and a resumed or extended study keeps the measurements of what it trained before).
    """
    say = log or (lambda msg: None)
    lookup = RecordLookup(store)
    trained = 0
    measured = read_costs(costs)
    for n_tasks in s.tasks:
        for strategy in SEQUENCE_STRATEGIES:
            group = sequence_configs(s, n_tasks, strategy)
            _, todo = lookup.records(group)
            if not todo:
                continue
            say(f"T = {n_tasks}, {strategy}: {len(todo)} of {len(group)} runs to train")
            before = peak_rss(reset=True)
            started = time.perf_counter()
            lookup.add(run(todo, store=store, **run_kwargs))
            trained += len(todo)
            measured.setdefault(f"{n_tasks}/{strategy}", []).append({
                "peak_rss_bytes": peak_rss(), "rss_at_start_bytes": before, "members": len(todo),
                "p": sorted({c.final_free for c in todo}), "seconds": time.perf_counter() - started})
            if costs is not None:
                write_costs(costs, measured)
    return trained


def read_costs(path: Path | None) -> dict[str, list[dict[str, Any]]]:
    """The measurements of each (T, strategy) group's training, ``{"T/strategy": [measurement, ...]}``."""
    import json

    if path is None or not path.exists():
        return {}
    return {k: v if isinstance(v, list) else [v] for k, v in json.loads(path.read_text()).items()}


def write_costs(path: Path, costs: Mapping[str, Any]) -> None:
    import json

    from ..files import atomic_write_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(costs, indent=1, sort_keys=True) + "\n").encode(), fsync=False)


# --------------------------------------------------------------------------------------------- analysis


def records_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per run: what the per-run CSV holds (config hash, seed, T, strategy, p, accuracies, free fractions,
    seconds)."""
    rows = []
    for r in records:
        c, t = r["config"], r.get("timings") or {}
        size = t.get("population_size") or 1
        rows.append({
            "config_hash": r["config_hash"], "T": int(c["n_tasks"]), "strategy": c["strategy"],
            "p": float(c["final_free"]), "seed": int(c["seed"]), "accuracy": float(r["average_accuracy"]),
            "min_task_accuracy": min(r["final_accuracy"]), "final_accuracy": list(r["final_accuracy"]),
            "free_fraction": r["free_fraction_after_task"][-1],
            "layer_free_fraction": dict(r.get("layer_free_fraction") or {}),
            "member_seconds": (t.get("total") or 0.0) / size,
            "train_seconds": sum(t.get(k, 0.0) for k in ("train", "prune", "retrain")) / size,
            "evaluate_seconds": t.get("evaluate", 0.0) / size, "population_size": size,
            "eval_every": int(c.get("eval_every", 1)),
        })
    return pd.DataFrame(rows, columns=["config_hash", "T", "strategy", "p", "seed", "accuracy", "min_task_accuracy",
                                       "final_accuracy", "free_fraction", "layer_free_fraction", "member_seconds",
                                       "train_seconds", "evaluate_seconds", "population_size", "eval_every"])


@dataclass
class Match:
    """A baseline matched to PackNet at ``p`` for one T: the point estimate and its jackknife-t interval."""

    T: int
    baseline: str
    p: float
    target: float                 # PackNet's mean accuracy at p
    target_se: float
    p_match: float                # NaN when the target is off the baseline's fitted range
    compression: float
    ci: Interval                  # of log(compression), over the seeds
    censored_high: int            # seeds whose removal puts the target below the baseline's fitted range
    censored_low: int             # ... above it
    message: str
    edges: tuple[float, float] = (math.nan, math.nan)  # the compressions at the least and the most pruned grid point
    below: bool = False           # unmatched because the target is below the baseline's whole fitted range
    statistic: Callable[[np.ndarray], float] | None = None  # log compression from a subset of the seeds

    @property
    def matched(self) -> bool:
        return math.isfinite(self.compression)

    def bound(self) -> str:
        """For a target off the grid, what the grid says of the compression: ">= x" when the baseline beat the
        target even at its most pruned point, "<= x" when it fell short even at its least pruned."""
        if self.matched:
            return ""
        return f">= {self.edges[1]:.4g}" if self.below else f"<= {self.edges[0]:.4g}"

    def interval(self) -> tuple[float, float]:
        """The compression's interval: (0, inf) where a seed's removal puts the match off the grid."""
        ci = self.ci.exp()
        return ci.low, ci.high

    def interval_censored(self) -> tuple[bool, bool]:
        """Whether the interval's low / high end is unbounded (a seed's removal puts the target off the grid)."""
        unbounded = self.matched and not self.ci.bounded
        return unbounded, unbounded


@dataclass
class Trend:
    """How a quantity changes with T: the least-squares slope against log T and its jackknife-t interval."""

    baseline: str
    p: float
    quantity: str                 # "log compression" or "accuracy gap"
    Ts: tuple[int, ...]           # the T values it is fitted over
    slope: float
    low: float
    high: float

    @property
    def verdict(self) -> str:
        if len(self.Ts) < 2 or not math.isfinite(self.slope):
            return "no data"
        if self.low > 0:
            return "grows with T"
        if self.high < 0:
            return "shrinks with T"
        return "no clear trend (interval includes 0)"


@dataclass
class SequenceAnalysis:
    records: list[dict[str, Any]]
    frame: pd.DataFrame
    missing: int
    total: int
    accuracy: pd.DataFrame        # T, strategy, p, mean, se, n
    gaps: pd.DataFrame            # T, baseline, p, gap, gap_se
    matches: list[Match]
    trends: list[Trend]
    costs: pd.DataFrame           # T, strategy, member seconds, train / eval seconds per task, peak RSS


def analyse(s: SequenceSettings, lookup: RecordLookup, costs: Mapping[str, Any] | None = None) -> SequenceAnalysis:
    """Everything the report says, from the stored runs of ``s`` (and the peak memory measured while training)."""
    configs = sequence_configs(s)
    records, missing = lookup.records(configs)
    return analyse_frame(s, records_frame(records), costs, records=records, missing=len(missing))


def analyse_frame(s: SequenceSettings, df: pd.DataFrame, costs: Mapping[str, Any] | None = None, *,
                  records: list[dict[str, Any]] | None = None, missing: int = 0) -> SequenceAnalysis:
    """The analysis of the runs in ``df`` (:func:`records_frame`'s columns, as ``runs.csv`` holds them)."""
    accuracy = summarize(df, ["T", "strategy", "p"])
    matches = [m for t in s.tasks for b in BASELINES for p in s.matching_ps
               if (m := match(df, s, t, b, p)) is not None]
    gaps = accuracy_gaps(df, s)
    trends = [trend_of_compression(s, matches, b, p) for b in BASELINES for p in s.matching_ps]
    trends += [trend_of_gap(df, s, b, p) for b in BASELINES for p in s.matching_ps]
    return SequenceAnalysis(records or [], df, missing, len(sequence_configs(s)), accuracy, gaps, matches, trends,
                            cost_table(df, costs or {}))


def seed_matrix(df: pd.DataFrame, T: int, strategy: str, ps: Sequence[float], seeds: Sequence[int]) -> np.ndarray | None:
    """Average accuracy ``(seeds, ps)`` of one strategy at one T; None unless every run is stored."""
    at = df[(df["T"] == T) & (df.strategy == strategy)].set_index(["seed", "p"])["accuracy"]
    try:
        return np.array([[float(at.loc[(seed, p)]) for p in ps] for seed in seeds])
    except KeyError:
        return None


def match(df: pd.DataFrame, s: SequenceSettings, T: int, baseline: str, p: float) -> Match | None:
    """Match ``baseline`` to PackNet at ``p`` at sequence length ``T``, with the jackknife-t interval over the
    seeds (module docstring)."""
    target_runs = seed_matrix(df, T, "packnet", [p], s.seeds)
    ps = s.ps(baseline)
    grid = seed_matrix(df, T, baseline, ps, s.seeds)
    if target_runs is None or grid is None:
        return None
    target, target_se, _ = mean_se(target_runs[:, 0])
    point = match_by_monotone_fit(ps, grid, target, n_bootstrap=0, p_packnet=p)
    u = np.log1p(-np.asarray(ps))
    order = np.argsort(u)
    u, grid = u[order], grid[:, order]
    n = len(s.seeds)
    statistic = log_compression_statistic(u, grid, target_runs[:, 0], p)
    ci = jackknife_t(statistic, n, CONFIDENCE)
    loo = [statistic(np.delete(np.arange(n), i)) for i in range(n)] if n > 1 else []
    edges = ((1.0 - p) / math.exp(u[-1]), (1.0 - p) / math.exp(u[0]))
    below = invert_monotone(fit_monotone(u, grid.mean(axis=0)), target) == -math.inf
    return Match(T, baseline, p, target, target_se, point.p_match, point.compression, ci,
                 sum(x == math.inf for x in loo), sum(x == -math.inf for x in loo), point.message, edges, below,
                 statistic)


def accuracy_gaps(df: pd.DataFrame, s: SequenceSettings) -> pd.DataFrame:
    """Baseline minus PackNet mean accuracy at the same p, per T, with the standard error of the difference."""
    acc = summarize(df, ["T", "strategy", "p"]).set_index(["T", "strategy", "p"])
    rows = []
    for t in s.tasks:
        for b in BASELINES:
            for p in s.grid:
                if (t, "packnet", p) in acc.index and (t, b, p) in acc.index:
                    pn, base = acc.loc[(t, "packnet", p)], acc.loc[(t, b, p)]
                    rows.append({"T": t, "baseline": b, "p": p, "gap": base["mean"] - pn["mean"],
                                 "gap_se": math.hypot(np.nan_to_num(base["se"]), np.nan_to_num(pn["se"]))})
    return pd.DataFrame(rows, columns=["T", "baseline", "p", "gap", "gap_se"])


def _slope(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares slopes of each row of ``y`` against ``x``."""
    xc = x - x.mean()
    return ((y - y.mean(axis=-1, keepdims=True)) * xc).sum(axis=-1) / (xc ** 2).sum()


def _slope_statistic(x: np.ndarray, parts: Sequence[Callable[[np.ndarray], float]]) -> Callable[[np.ndarray], float]:
    """``statistic(rows)``: the slope against ``x`` of the values each part computes from the seeds ``rows``;
    +-inf where a part is off the grid (the slope is then unbounded), NaN where two are on opposite sides."""
    def statistic(rows: np.ndarray) -> float:
        y = np.array([f(rows) for f in parts], dtype=float)
        if np.all(np.isfinite(y)):
            return float(_slope(x, y))
        off = set(np.sign(y[~np.isfinite(y)]).tolist())
        return math.nan if len(off) > 1 else math.inf
    return statistic


def trend_of_compression(s: SequenceSettings, matches: Sequence[Match], baseline: str, p: float) -> Trend:
    """Slope of log(compression) against log(T) over the T where the baseline matched PackNet at p; its interval
    leaves each seed out at every T at once (jackknife-t)."""
    found = sorted((m for m in matches if m.baseline == baseline and m.p == p and m.matched), key=lambda m: m.T)
    Ts = tuple(m.T for m in found)
    if len(found) < 2:
        return Trend(baseline, p, "log compression", Ts, math.nan, math.nan, math.nan)
    x = np.log(np.array(Ts, dtype=float))
    point = float(_slope(x, np.log([m.compression for m in found])))
    ci = jackknife_t(_slope_statistic(x, [m.statistic for m in found]), len(s.seeds), CONFIDENCE)
    return Trend(baseline, p, "log compression", Ts, point, ci.low, ci.high)


def trend_of_gap(df: pd.DataFrame, s: SequenceSettings, baseline: str, p: float) -> Trend:
    """Slope of the accuracy gap (baseline - PackNet at p) against log(T); jackknife-t over the seeds."""
    per_t = [(t, seed_matrix(df, t, "packnet", [p], s.seeds), seed_matrix(df, t, baseline, [p], s.seeds))
             for t in s.tasks]
    per_t = [(t, a[:, 0], b[:, 0]) for t, a, b in per_t if a is not None and b is not None]
    Ts = tuple(t for t, _, _ in per_t)
    if len(per_t) < 2:
        return Trend(baseline, p, "accuracy gap", Ts, math.nan, math.nan, math.nan)
    x = np.log(np.array(Ts, dtype=float))
    parts = [lambda rows, a=a, b=b: float(b[rows].mean() - a[rows].mean()) for _, a, b in per_t]
    ci = jackknife_t(_slope_statistic(x, parts), len(s.seeds), CONFIDENCE)
    return Trend(baseline, p, "accuracy gap", Ts, ci.estimate, ci.low, ci.high)


def cost_table(df: pd.DataFrame, costs: Mapping[str, Any]) -> pd.DataFrame:
    """Per (T, strategy): seconds per member (whole run, and per task training and evaluation) and the peak
    resident memory of the process while that group's populations trained."""
    rows = []
    for (t, strategy), g in df.groupby(["T", "strategy"], sort=True):
        # the peak of the group's largest population trained at once (a resumed or extended study adds others)
        measured = max(costs.get(f"{t}/{strategy}", [{}]), key=lambda c: c.get("members", 0))
        rows.append({"T": int(t), "strategy": strategy, "runs": len(g),
                     "member_seconds": float(g.member_seconds.mean()),
                     "train_seconds_per_task": float(g.train_seconds.mean()) / t,
                     "evaluate_seconds_per_task": float(g.evaluate_seconds.mean()) / t,
                     "population_size": int(g.population_size.max()),
                     "peak_rss_mb": (measured.get("peak_rss_bytes") or math.nan) / 2**20,
                     "start_rss_mb": (measured.get("rss_at_start_bytes") or math.nan) / 2**20,
                     "accuracy": float(g.accuracy.mean())})
    return pd.DataFrame(rows, columns=["T", "strategy", "runs", "member_seconds", "train_seconds_per_task",
                                       "evaluate_seconds_per_task", "population_size", "peak_rss_mb", "start_rss_mb",
                                       "accuracy"])
