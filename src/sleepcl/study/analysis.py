"""From stored runs to the study's numbers: means and standard errors over seeds, matches, best N, tests.

Everything here is computed from records (the dicts :func:`sleepcl.runs.records.make_record` writes and the
store returns); nothing trains. Each ``analyse_*`` function takes the preset's :class:`StudySettings`
and a :class:`~sleepcl.study.run.RecordLookup`, reads exactly the runs the experiment's configs name
(so unrelated runs in the same store never leak in), and says how many are still missing. Differences
between groups of runs are tested as :mod:`sleepcl.study.stats` says (paired by seed where the seeds are
shared); "the best N" is chosen on one half of the seeds and tested on the other. The verdicts on the
paper's claims are :mod:`sleepcl.study.claims`'.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from . import paper
from .experiments import (
    StudySettings,
    budget_configs,
    make_config,
    matching_point_configs,
    nobudget_configs,
    pruning_configs,
    schedules_configs,
)
from .matching import MatchResult, agreement, log_compression_statistic
from .run import MatchingSearch, RecordLookup, baseline_grid, matching_searches, monotone_match
from .stats import Comparison, Selection, compare_by_seed, jackknife_t, selection_for

__all__ = [
    "BudgetResult",
    "MatchingResult",
    "NoBudgetResult",
    "PruningResult",
    "RUN_COLUMNS",
    "SchedulesResult",
    "accuracy_step",
    "analyse_budget",
    "analyse_matching",
    "analyse_nobudget",
    "analyse_pruning",
    "analyse_schedules",
    "mean_se",
    "records_frame",
    "runs_table",
    "spearman",
]

NAN = float("nan")


# --------------------------------------------------------------------------------------------- basics


def mean_se(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, standard error of the mean (sample std / sqrt(n); NaN for one value) and count."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    if v.size == 0:
        return NAN, NAN, 0
    se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else NAN
    return float(v.mean()), se, int(v.size)


def records_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per run: the varied config fields, metrics, per-task final accuracy and cost."""
    rows = []
    for r in records:
        c = r["config"]
        t = r.get("timings") or {}
        size = t.get("population_size") or 1
        rows.append({
            "config_hash": r["config_hash"], "strategy": c["strategy"], "p": float(c["final_free"]),
            "N": int(c["rounds"]), "schedule": c.get("schedule", "uniform"), "E": c.get("epochs"),
            "B": c.get("retrain_epochs"), "seed": int(c["seed"]), "accuracy": float(r["average_accuracy"]),
            "task_accuracy": list(r["final_accuracy"]),
            "free_fraction": (r.get("free_fraction_after_task") or [NAN])[-1],
            "member_seconds": (t.get("total") or 0.0) / size,
        })
    cols = ["config_hash", "strategy", "p", "N", "schedule", "E", "B", "seed", "accuracy", "task_accuracy",
            "free_fraction", "member_seconds"]
    return pd.DataFrame(rows, columns=cols)


def summarize(df: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Mean, standard error and seed count of ``accuracy`` per group of ``keys`` (sorted by the keys)."""
    rows = []
    if not df.empty:
        for key, g in df.groupby(list(keys), sort=True):
            key = key if isinstance(key, tuple) else (key,)
            m, se, n = mean_se(g["accuracy"])
            rows.append({**dict(zip(keys, key)), "mean": m, "se": se, "n": n,
                         "error": 1.0 - m, "seeds": ",".join(str(s) for s in sorted(g["seed"]))})
    return pd.DataFrame(rows, columns=[*keys, "mean", "se", "n", "error", "seeds"])


def accuracy_step(df: pd.DataFrame) -> float:
    """The step of the average accuracy: one test image of one task, ``1 / (tasks x test images per task)``,
    read off the runs' per-task accuracies (the finest non-zero difference of each task's values; NaN without
    two distinct values). A difference of a few steps is a few test images."""
    if df.empty:
        return NAN
    a = np.array(df["task_accuracy"].tolist(), dtype=float)
    steps = []
    for col in a.T:
        d = np.diff(np.unique(np.round(col, 9)))
        d = d[d > 1e-9]
        if d.size:
            steps.append(float(d.min()))
    if not steps:
        return NAN
    per_task = min(steps)
    return 1.0 / (round(1.0 / per_task) * a.shape[1])


def per_task(df: pd.DataFrame) -> tuple[list[float], list[float]]:
    """Mean and standard error over runs of each task's final accuracy."""
    if df.empty:
        return [], []
    a = np.array(df["task_accuracy"].tolist(), dtype=float)
    means = a.mean(axis=0).tolist()
    ses = (a.std(axis=0, ddof=1) / math.sqrt(len(a))).tolist() if len(a) > 1 else [NAN] * a.shape[1]
    return means, ses


def by_seed(df: pd.DataFrame, seeds: Iterable[int] | None = None) -> dict[int, float]:
    """``{seed: accuracy}`` of the runs in ``df`` (one run per seed), restricted to ``seeds`` if given."""
    keep = df if seeds is None else df[df["seed"].isin(list(seeds))]
    return {int(a): float(b) for a, b in zip(keep["seed"], keep["accuracy"])}


RUN_COLUMNS: tuple[str, ...] = ("config_hash", "experiments", "strategy", "final_free", "rounds", "schedule",
                                "epochs", "retrain_epochs", "seed")
"""The columns every ``runs.csv`` starts with; every other config field that varies among its runs follows."""


def runs_table(records: Sequence[Mapping[str, Any]], experiments: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """One row per run: its identity, the experiments that use it (``experiments``: hash -> names), every
    config field that varies among ``records``, the final row of its accuracy matrix (``acc_task_j``),
    their average, and the free fraction after each task. Sorted by config, so it diffs well."""
    rows = []
    for r in records:
        c = dict(r["config"])
        extra = c.pop("extra", None) or {}
        row: dict[str, Any] = {k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in c.items()}
        row.update(extra)
        row["config_hash"] = r["config_hash"]
        row["experiments"] = ";".join(experiments.get(r["config_hash"], ()))
        row["average_accuracy"] = float(r["average_accuracy"])
        if r.get("class_incremental_accuracy") is not None:  # the task never told (records from before lack it)
            row["class_incremental_accuracy"] = float(r["class_incremental_accuracy"])
        row.update({f"acc_task_{j}": float(a) for j, a in enumerate(r["final_accuracy"], start=1)})
        row.update({f"free_after_task_{j}": float(f)
                    for j, f in enumerate(r.get("free_fraction_after_task") or [], start=1)})
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=[*RUN_COLUMNS, "average_accuracy"])
    scores = ["average_accuracy", *(["class_incremental_accuracy"] if "class_incremental_accuracy" in df else [])]
    config_keys = [k for k in df.columns if not k.startswith(("acc_task_", "free_after_task_"))
                   and k not in RUN_COLUMNS and k not in scores]
    varying = [k for k in config_keys if df[k].astype(str).nunique() > 1]
    metrics = [*scores, *sorted((k for k in df.columns if k.startswith("acc_task_")), key=_task_index),
               *sorted((k for k in df.columns if k.startswith("free_after_task_")), key=_task_index)]
    df = df[[*RUN_COLUMNS, *varying, *metrics]]
    return df.sort_values(["strategy", "final_free", "rounds", "schedule", "retrain_epochs", "seed", "config_hash"],
                          kind="stable").reset_index(drop=True)


def _task_index(column: str) -> int:
    return int(column.rsplit("_", 1)[1])


@dataclass
class Loaded:
    """The stored runs of one experiment and the configs still missing."""

    frame: pd.DataFrame
    records: list[dict[str, Any]]
    missing: int
    total: int


def load(lookup: RecordLookup, configs: Sequence) -> Loaded:
    records, missing = lookup.records(configs)
    return Loaded(records_frame(records), records, len(missing), len(configs))


# --------------------------------------------------------------------------------------------- Figure 1


@dataclass
class PruningResult:
    loaded: Loaded
    table: pd.DataFrame          # strategy, p, mean, se, n, error, seeds
    gap: pd.DataFrame            # p, packnet, best baseline, gap (baseline - packnet)
    # The same runs with the task never told (the record's class_incremental_accuracy: the task inferred, then
    # the class), as ``table``; empty when the runs predate the score.
    untold: pd.DataFrame = field(default_factory=pd.DataFrame)


def untold_table(loaded: Loaded, keys: Sequence[str]) -> pd.DataFrame:
    """Mean, s.e. and seeds of the class-incremental score per group of ``keys``, over the runs that have it."""
    score = {r["config_hash"]: r.get("class_incremental_accuracy") for r in loaded.records}
    df = loaded.frame.assign(accuracy=loaded.frame["config_hash"].map(score))
    return summarize(df[df["accuracy"].notna()].astype({"accuracy": float}), keys)


def analyse_pruning(s: StudySettings, lookup: RecordLookup) -> PruningResult:
    loaded = load(lookup, pruning_configs(s))
    table = summarize(loaded.frame, ["strategy", "p"])
    order = {st: i for i, st in enumerate(s.strategies)}
    if not table.empty:
        table = table.sort_values(["strategy", "p"], key=lambda c: c.map(order) if c.name == "strategy" else c)
        table = table.reset_index(drop=True)
    rows = []
    for p in s.pruning_grid:
        at = {st: table[(table.strategy == st) & (table.p == p)] for st in s.strategies} if not table.empty else {}
        if not at or any(at[st].empty for st in s.strategies):
            continue
        pn = float(at["packnet"]["mean"].iloc[0])
        base = {b: float(at[b]["mean"].iloc[0]) for b in s.baselines}
        rows.append({"p": p, "packnet": pn, **base, **{f"gap_{b}": v - pn for b, v in base.items()},
                     "gap_best": max(base.values()) - pn})
    untold = untold_table(loaded, ["strategy", "p"])
    if not untold.empty:
        untold = untold.sort_values(["strategy", "p"], key=lambda c: c.map(order) if c.name == "strategy" else c)
        untold = untold.reset_index(drop=True)
    return PruningResult(loaded, table, pd.DataFrame(rows), untold)


# --------------------------------------------------------------------------------------------- Table 1


@dataclass
class MatchRow:
    p: float
    baseline: str
    target: float | None
    search: MatchingSearch
    fit: MatchResult | None
    agreement: dict[str, Any] | None
    paper_compression: float | None
    accuracy_gap: Comparison | None = None   # baseline - PackNet at the same p (Figure 1 runs), by seed

    @property
    def scalar(self) -> MatchResult | None:
        return self.search.result


@dataclass(frozen=True)
class Growth:
    """How the compression against one baseline changes from the smallest to the largest matched p."""

    baseline: str
    p_low: float
    p_high: float
    ratio: float        # compression at p_high / at p_low (monotone fit)
    ci_low: float       # 95% jackknife-t interval (log scale), each seed left out of both sides and both p at once
    ci_high: float      # (0 and inf where a seed's removal puts a match off the grid)
    n_seeds: int
    dropped: int        # seeds whose removal puts a match off the grid (the interval is then unbounded)
    log_se: float = NAN  # the jackknife standard error of log(ratio) (inf: unbounded)


@dataclass
class MatchingResult:
    targets: pd.DataFrame                       # p, mean, se, n, paper
    rows: list[MatchRow]
    per_task: list[dict[str, Any]]              # one per (p, who): who in packnet/memory/multinet
    missing_static: int
    pending_searches: int
    paper_key: str
    paper_caption: str
    notes: list[str] = field(default_factory=list)
    growth: list[Growth] = field(default_factory=list)
    step: float = NAN                           # the average accuracy's step: one test image of one task

    def table(self) -> pd.DataFrame:
        """Table 1: one row per (PackNet p, baseline), both methods, the accuracy test and the paper's ratio."""
        out = []
        for r in self.rows:
            sc, fit, gap = r.scalar, r.fit, r.accuracy_gap
            out.append({
                "p_packnet": r.p, "baseline": r.baseline, "packnet_accuracy": r.target,
                "p_match_minimize_scalar": sc.p_match if sc else NAN,
                "compression_minimize_scalar": sc.compression if sc else NAN,
                "evaluations_minimize_scalar": len(r.search.evaluations) if sc else NAN,
                "p_match_monotone_fit": fit.p_match if fit else NAN,
                "p_match_ci_low": fit.ci_low if fit else NAN, "p_match_ci_high": fit.ci_high if fit else NAN,
                "compression_monotone_fit": fit.compression if fit else NAN,
                "compression_ci_low": fit.compression_ci_low if fit else NAN,
                "compression_ci_high": fit.compression_ci_high if fit else NAN,
                "compression_rel_diff": r.agreement["compression_rel_diff"] if r.agreement else NAN,
                "scalar_in_fit_ci": r.agreement["a_in_b_ci"] if r.agreement else None,
                "accuracy_gap_same_p": gap.diff if gap else NAN, "accuracy_gap_se": gap.se if gap else NAN,
                "accuracy_gap_n": gap.n if gap else 0, "accuracy_gap_pvalue": gap.pvalue if gap else NAN,
                "accuracy_gap_test": gap.test if gap else "",
                "compression_paper": NAN if r.paper_compression is None else r.paper_compression,
                "status_minimize_scalar": match_status(r),
            })
        return pd.DataFrame(out)


def match_status(r: MatchRow) -> str:
    if r.target is None:
        return "target not stored"
    if r.scalar is None:
        return "search unfinished" if r.search.waiting_for is not None else "not run"
    return "matched" if r.scalar.in_range else "out of range"


def _packnet_seeds(s: StudySettings, lookup: RecordLookup, p: float) -> Loaded:
    return load(lookup, [make_config(s, "packnet", p, seed) for seed in s.seeds])


def _accuracy_gap(s: StudySettings, lookup: RecordLookup, baseline: str, p: float) -> Comparison | None:
    """Baseline minus PackNet accuracy at the same p, from the Figure 1 runs, compared by seed."""
    pn = by_seed(_packnet_seeds(s, lookup, p).frame)
    base = by_seed(load(lookup, [make_config(s, baseline, p, seed) for seed in s.seeds]).frame)
    return compare_by_seed(base, pn) if pn and base else None


def compression_growth(s: StudySettings, lookup: RecordLookup, baseline: str, fits: Mapping[float, MatchResult],
                       samples: Mapping[float, np.ndarray]) -> Growth | None:
    """Compression at the largest over the smallest matched p, with a jackknife-t interval of its log over the
    seeds (:func:`~sleepcl.study.stats.jackknife_t`): each seed left out of PackNet at both p and of the
    baseline's grid at once (all share seeds), the fits redone."""
    matched = sorted(p for p, f in fits.items() if f is not None and f.in_range)
    if len(matched) < 2:
        return None
    lo_p, hi_p = matched[0], matched[-1]
    ratio = fits[hi_p].compression / fits[lo_p].compression
    ps, acc, _ = baseline_grid(s, lookup, baseline)
    n = acc.shape[0]
    if n < 2 or any(samples[p].size != n for p in (lo_p, hi_p)):
        return Growth(baseline, lo_p, hi_p, ratio, NAN, NAN, n, 0)
    order = np.argsort(-np.asarray(ps))
    u = np.log1p(-np.asarray(ps)[order])
    log_c = {p: log_compression_statistic(u, acc[:, order], samples[p], p) for p in (lo_p, hi_p)}

    def log_growth(rows: np.ndarray) -> float:
        with np.errstate(invalid="ignore"):
            return float(np.float64(log_c[hi_p](rows)) - np.float64(log_c[lo_p](rows)))

    log_ci = jackknife_t(log_growth, n)
    ci = log_ci.exp()
    off = sum(not math.isfinite(log_growth(np.delete(np.arange(n), i))) for i in range(n))
    return Growth(baseline, lo_p, hi_p, ratio, ci.low, ci.high, n, off, log_ci.se)


def analyse_matching(s: StudySettings, lookup: RecordLookup) -> MatchingResult:
    key, caption = paper.paper_reference(s.benchmark, s.network, s.widths)
    paper_table = paper.TABLE1_COMPRESSION.get(key, {})
    paper_perf = paper.FIGURE3_AVERAGE_PERFORMANCE.get(key, {})
    searches = {(x.p_packnet, x.baseline): x for x in matching_searches(s, lookup)}
    notes: list[str] = []

    # targets: PackNet at each matching p, and its per-seed accuracies (the target's own uncertainty)
    target_rows, targets, samples = [], {}, {}
    missing_static = 0
    for p in s.matching_ps:
        ld = _packnet_seeds(s, lookup, p)
        missing_static += ld.missing
        m, se, n = mean_se(ld.frame["accuracy"])
        targets[p] = m if ld.missing == 0 else None
        samples[p] = np.array([v for _, v in sorted(by_seed(ld.frame).items())])
        target_rows.append({"p": p, "mean": m, "se": se, "n": n, "paper": paper_perf.get(p, NAN)})

    # baselines over the grid: the monotone fit (grid points lacking a seed are left out)
    for b in s.baselines:
        missing_static += len(lookup.records([make_config(s, b, p, seed) for p in s.pruning_grid
                                              for seed in s.seeds])[1])
        _, _, left_out = baseline_grid(s, lookup, b)
        if left_out:
            notes.append(f"{b}: {left_out} grid point(s) not fully stored, left out of the fit")

    rows, growth = [], []
    for b in s.baselines:
        fits: dict[float, MatchResult | None] = {}
        for p in s.matching_ps:
            fit = None
            if targets[p] is not None:
                fit = monotone_match(s, lookup, b, p, targets[p], n_bootstrap=s.n_bootstrap,
                                     target_samples=samples[p])
            fits[p] = fit
            search = searches[(p, b)]
            agree = agreement(search.result, fit) if search.result is not None and fit is not None else None
            paper_c = paper_table.get(p, {}).get(b)
            rows.append(MatchRow(p, b, targets[p], search, fit, agree, paper_c, _accuracy_gap(s, lookup, b, p)))
        g = compression_growth(s, lookup, b, fits, samples)
        if g is not None:
            growth.append(g)
    rows.sort(key=lambda r: (s.matching_ps.index(r.p), s.baselines.index(r.baseline)))

    # Figure 3: per-task accuracy of PackNet at p and of each baseline at the p' its search found
    per_task_rows = []
    for p in s.matching_ps:
        ld = _packnet_seeds(s, lookup, p)
        m, se = per_task(ld.frame)
        per_task_rows.append({"p_packnet": p, "who": "packnet", "p": p, "task_mean": m, "task_se": se,
                              "mean": mean_se(ld.frame["accuracy"])[0]})
        for b in s.baselines:
            res = searches[(p, b)].result
            if res is None or not res.in_range:
                continue
            ldb = load(lookup, matching_point_configs(s, b, res.p_match))
            mb, seb = per_task(ldb.frame)
            per_task_rows.append({"p_packnet": p, "who": b, "p": res.p_match, "task_mean": mb, "task_se": seb,
                                  "mean": mean_se(ldb.frame["accuracy"])[0]})
    pending = sum(1 for x in searches.values() if x.result is None)
    step = accuracy_step(pd.concat([load(lookup, [make_config(s, st, p, seed) for p in s.pruning_grid
                                                  for seed in s.seeds]).frame for st in s.strategies]))
    return MatchingResult(pd.DataFrame(target_rows), rows, per_task_rows, missing_static, pending, key, caption,
                          notes, growth, step)


# --------------------------------------------------------------------------------------------- best N


BEST_COLUMNS = ["best_N", "worst_N", "best_mean", "best_se", "worst_mean", "worst_se", "held_best", "held_worst",
                "gap", "gap_se", "n", "pvalue", "test", "significant", "error_ratio", "vs_one_diff", "vs_one_se",
                "vs_one_pvalue", "vs_one_significant", "vs_most_diff", "vs_most_se", "vs_most_pvalue",
                "vs_most_significant", "tied"]


def _above(c: Comparison) -> bool:
    """The chosen N confirmed: significantly above the other on the held-out seeds (not merely different)."""
    return c.significant and c.diff > 0


def held_out_best(runs: pd.DataFrame, selection: Selection) -> dict[str, Any] | None:
    """Best and worst N of one p's runs (columns ``N``, ``seed``, ``accuracy``), chosen and tested as
    ``selection`` says (on held-out seeds, paired by seed, so that a lucky N is not confirmed by the luck
    that chose it; or corrected for the choice); ``significant`` means confirmed: above the other there, not
    merely different. Also the best against the fewest and the most rounds, and the N whose tested accuracy
    is not significantly below the best's (``tied``). None with fewer than two N."""
    chosen = runs[runs["seed"].isin(list(selection.choose))].groupby("N")["accuracy"].mean()
    if len(chosen) < 2:
        return None
    best, worst = int(chosen.idxmax()), int(chosen.idxmin())  # ties: the fewest rounds
    held = {int(n): by_seed(g, selection.test) for n, g in runs.groupby("N")}
    full = {int(n): mean_se(g["accuracy"]) for n, g in runs.groupby("N")}

    def test(a: int, b: int) -> Comparison:
        return selection.adjust(compare_by_seed(held[a], held[b]))

    gap, vs_one, vs_most = test(best, worst), test(best, min(held)), test(best, max(held))
    held_mean = {n: float(np.mean(list(v.values()))) if v else NAN for n, v in held.items()}
    err_best, err_worst = 1.0 - held_mean[best], 1.0 - held_mean[worst]
    tied = [n for n in sorted(held) if n != best and held[n] and not _above(test(best, n))]
    return {"best_N": best, "worst_N": worst, "best_mean": full[best][0], "best_se": full[best][1],
            "worst_mean": full[worst][0], "worst_se": full[worst][1], "held_best": held_mean[best],
            "held_worst": held_mean[worst], "gap": gap.diff, "gap_se": gap.se, "n": gap.n, "pvalue": gap.pvalue,
            "test": gap.test, "significant": _above(gap),
            "error_ratio": err_worst / err_best if err_best > 0 else (math.inf if err_worst > 0 else NAN),
            "vs_one_diff": vs_one.diff, "vs_one_se": vs_one.se, "vs_one_pvalue": vs_one.pvalue,
            "vs_one_significant": _above(vs_one), "vs_most_diff": vs_most.diff, "vs_most_se": vs_most.se,
            "vs_most_pvalue": vs_most.pvalue, "vs_most_significant": _above(vs_most),
            "tied": ",".join(str(n) for n in tied)}


# --------------------------------------------------------------------------------------------- Figure 2


@dataclass
class BudgetResult:
    loaded: Loaded
    table: pd.DataFrame   # p, N, R, mean, se, n, error, seeds, best
    best: pd.DataFrame    # p and BEST_COLUMNS: best/worst N chosen and tested as `selection` says
    selection: Selection


def analyse_budget(s: StudySettings, lookup: RecordLookup) -> BudgetResult:
    loaded = load(lookup, budget_configs(s))
    table = summarize(loaded.frame, ["p", "N"])
    table.insert(2, "R", [s.retrain_epochs // int(n) for n in table["N"]])
    k = len(s.budget_rounds)
    selection = selection_for(s.budget_seeds, k * (k - 1) // 2)  # the best and worst of k: any of the pairs
    rows = []
    for p, g in loaded.frame.groupby("p", sort=True):
        found = held_out_best(g, selection)
        if found is not None:
            rows.append({"p": p, **found})
    best = pd.DataFrame(rows, columns=["p", *BEST_COLUMNS])
    best_n = dict(zip(best["p"], best["best_N"]))
    table["best"] = [best_n.get(p) == n for p, n in zip(table["p"], table["N"])]
    return BudgetResult(loaded, table, best, selection)


# --------------------------------------------------------------------------------------------- Figure 4


@dataclass
class NoBudgetResult:
    loaded: Loaded
    table: pd.DataFrame   # p, N, R, B, mean, se, n, error, seeds
    trend: pd.DataFrame   # p, spearman, first/last N and mean, gain (last - first, by seed) and its test, best_N


TREND_COLUMNS = ["p", "spearman", "first_N", "first_mean", "last_N", "last_mean", "gain", "gain_se", "n", "pvalue",
                 "test", "significant", "best_N"]


def analyse_nobudget(s: StudySettings, lookup: RecordLookup) -> NoBudgetResult:
    loaded = load(lookup, nobudget_configs(s))
    table = summarize(loaded.frame, ["p", "N"])
    r = s.nobudget_round_epochs
    table.insert(2, "R", [r] * len(table))
    table.insert(3, "B", [r * int(n) for n in table["N"]])
    rows = []
    for p, g in table.groupby("p", sort=True):
        g = g.sort_values("N").dropna(subset=["mean"])
        if len(g) < 2:
            continue
        runs = loaded.frame[loaded.frame["p"] == p]
        first, last = g.iloc[0], g.iloc[-1]
        gain = compare_by_seed(by_seed(runs[runs["N"] == last["N"]]), by_seed(runs[runs["N"] == first["N"]]))
        rows.append({"p": p, "spearman": spearman(g["N"], g["mean"]), "first_N": int(first["N"]),
                     "first_mean": float(first["mean"]), "last_N": int(last["N"]), "last_mean": float(last["mean"]),
                     "gain": gain.diff, "gain_se": gain.se, "n": gain.n, "pvalue": gain.pvalue, "test": gain.test,
                     "significant": gain.significant, "best_N": int(g.loc[g["mean"].idxmax(), "N"])})
    return NoBudgetResult(loaded, table, pd.DataFrame(rows, columns=TREND_COLUMNS))


def spearman(x: Iterable[float], y: Iterable[float]) -> float:
    x, y = np.asarray(list(x), float), np.asarray(list(y), float)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0 if len(x) >= 2 else NAN
    return float(spearmanr(x, y).statistic)


# --------------------------------------------------------------------------------------------- schedules


@dataclass
class SchedulesResult:
    loaded: Loaded
    table: pd.DataFrame     # p, schedule, N, mean, se, n, error, seeds
    compare: pd.DataFrame   # p, schedule, its best N, the uniform schedule's best N, held-out difference and test


COMPARE_COLUMNS = ["p", "schedule", "best_N", "best_mean", "best_se", "budget_best_N", "budget_best_mean",
                   "diff_vs_budget_best", "diff_se", "n", "pvalue", "test", "significant"]


def schedules_selection(s: StudySettings) -> Selection:
    """How a schedule's best N and Figure 2's best N are chosen and compared (a choice among their N pairs)."""
    return selection_for(s.budget_seeds, len(s.schedules_rounds) * len(s.budget_rounds))


def analyse_schedules(s: StudySettings, lookup: RecordLookup, budget: BudgetResult | None = None) -> SchedulesResult:
    """Each schedule's best N against Figure 2's best (uniform) N at the same p: both chosen and compared as
    :func:`~sleepcl.study.stats.selection_for` says (held-out seeds, or corrected), paired by seed."""
    loaded = load(lookup, schedules_configs(s))
    table = summarize(loaded.frame, ["p", "schedule", "N"])
    budget = budget or analyse_budget(s, lookup)
    selection = schedules_selection(s)
    rows = []
    for p in s.schedules_ps:
        ref = budget.best[budget.best["p"] == p]
        ref_n = int(ref["best_N"].iloc[0]) if not ref.empty else None
        ref_runs = budget.loaded.frame[(budget.loaded.frame["p"] == p) & (budget.loaded.frame["N"] == ref_n)]
        for sch in s.schedules:
            runs = loaded.frame[(loaded.frame["p"] == p) & (loaded.frame["schedule"] == sch)]
            chosen = runs[runs["seed"].isin(list(selection.choose))].groupby("N")["accuracy"].mean()
            if chosen.empty:
                continue
            n_best = int(chosen.idxmax())
            mine = runs[runs["N"] == n_best]
            diff = selection.adjust(compare_by_seed(by_seed(mine, selection.test), by_seed(ref_runs, selection.test)))
            m, se, _ = mean_se(mine["accuracy"])
            rows.append({"p": p, "schedule": sch, "best_N": n_best, "best_mean": m, "best_se": se,
                         "budget_best_N": ref_n, "budget_best_mean": mean_se(ref_runs["accuracy"])[0],
                         "diff_vs_budget_best": diff.diff, "diff_se": diff.se, "n": diff.n, "pvalue": diff.pvalue,
                         "test": diff.test, "significant": diff.significant})
    return SchedulesResult(loaded, table, pd.DataFrame(rows, columns=COMPARE_COLUMNS))
