"""From stored runs to the study's numbers: means and standard errors over seeds, matches, best N, claims.

Everything here is computed from records (the dicts :func:`sleepcl.runs.records.make_record` writes and the
store returns); nothing trains. Each ``analyse_*`` function takes the preset's :class:`StudySettings`
and a :class:`~sleepcl.study.run.RecordLookup`, reads exactly the runs the experiment's configs name
(so unrelated runs in the same store never leak in), and says how many are still missing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from .matching import MatchResult, agreement
from . import paper
from .experiments import (
    BASELINES,
    STRATEGIES,
    StudySettings,
    budget_configs,
    make_config,
    matching_point_configs,
    nobudget_configs,
    pruning_configs,
    schedules_configs,
)
from .run import MatchingSearch, RecordLookup, baseline_grid, matching_searches, monotone_match

__all__ = [
    "Claim",
    "analyse_budget",
    "analyse_matching",
    "analyse_nobudget",
    "analyse_pruning",
    "analyse_schedules",
    "check_claims",
    "mean_se",
    "records_frame",
]

NAN = float("nan")
SUPPORTED, PARTLY, NOT_SUPPORTED, NO_DATA = "supported", "partly supported", "not supported", "no data"


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


def per_task(df: pd.DataFrame) -> tuple[list[float], list[float]]:
    """Mean and standard error over runs of each task's final accuracy."""
    if df.empty:
        return [], []
    a = np.array(df["task_accuracy"].tolist(), dtype=float)
    means = a.mean(axis=0).tolist()
    ses = (a.std(axis=0, ddof=1) / math.sqrt(len(a))).tolist() if len(a) > 1 else [NAN] * a.shape[1]
    return means, ses


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


def analyse_pruning(s: StudySettings, lookup: RecordLookup) -> PruningResult:
    loaded = load(lookup, pruning_configs(s))
    table = summarize(loaded.frame, ["strategy", "p"])
    order = {st: i for i, st in enumerate(STRATEGIES)}
    if not table.empty:
        table = table.sort_values(["strategy", "p"], key=lambda c: c.map(order) if c.name == "strategy" else c)
        table = table.reset_index(drop=True)
    rows = []
    for p in s.pruning_grid:
        at = {st: table[(table.strategy == st) & (table.p == p)] for st in STRATEGIES} if not table.empty else {}
        if not at or any(at[st].empty for st in STRATEGIES):
            continue
        pn = float(at["packnet"]["mean"].iloc[0])
        base = {b: float(at[b]["mean"].iloc[0]) for b in BASELINES}
        rows.append({"p": p, "packnet": pn, **base, "gap_memory": base["memory"] - pn,
                     "gap_multinet": base["multinet"] - pn, "gap_best": max(base.values()) - pn})
    return PruningResult(loaded, table, pd.DataFrame(rows))


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

    @property
    def scalar(self) -> MatchResult | None:
        return self.search.result


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

    def table(self) -> pd.DataFrame:
        """Table 1: one row per (PackNet p, baseline), both methods and the paper's ratio."""
        out = []
        for r in self.rows:
            sc, fit = r.scalar, r.fit
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


def analyse_matching(s: StudySettings, lookup: RecordLookup) -> MatchingResult:
    key, caption = paper.paper_reference(s.benchmark)
    paper_table = paper.TABLE1_COMPRESSION.get(key, {})
    paper_perf = paper.FIGURE3_AVERAGE_PERFORMANCE.get(key, {})
    searches = {(x.p_packnet, x.baseline): x for x in matching_searches(s, lookup)}
    notes: list[str] = []

    # targets: PackNet at each matching p
    target_rows, targets = [], {}
    missing_static = 0
    for p in s.matching_ps:
        ld = load(lookup, [make_config(s, "packnet", p, seed) for seed in s.seeds])
        missing_static += ld.missing
        m, se, n = mean_se(ld.frame["accuracy"])
        targets[p] = m if ld.missing == 0 else None
        target_rows.append({"p": p, "mean": m, "se": se, "n": n, "paper": paper_perf.get(p, NAN)})

    # baselines over the grid: the monotone fit (grid points lacking a seed are left out)
    for b in BASELINES:
        missing_static += len(lookup.records([make_config(s, b, p, seed) for p in s.pruning_grid
                                              for seed in s.seeds])[1])
        _, _, left_out = baseline_grid(s, lookup, b)
        if left_out:
            notes.append(f"{b}: {left_out} grid point(s) not fully stored, left out of the fit")

    rows = []
    for p in s.matching_ps:
        for b in BASELINES:
            fit = None
            if targets[p] is not None:
                fit = monotone_match(s, lookup, b, p, targets[p], n_bootstrap=s.n_bootstrap)
            search = searches[(p, b)]
            agree = agreement(search.result, fit) if search.result is not None and fit is not None else None
            paper_c = paper_table.get(p, {}).get(b)
            rows.append(MatchRow(p, b, targets[p], search, fit, agree, paper_c))

    # Figure 3: per-task accuracy of PackNet at p and of each baseline at the p' its search found
    per_task_rows = []
    for p in s.matching_ps:
        ld = load(lookup, [make_config(s, "packnet", p, seed) for seed in s.seeds])
        m, se = per_task(ld.frame)
        per_task_rows.append({"p_packnet": p, "who": "packnet", "p": p, "task_mean": m, "task_se": se,
                              "mean": mean_se(ld.frame["accuracy"])[0]})
        for b in BASELINES:
            res = searches[(p, b)].result
            if res is None or not res.in_range:
                continue
            ldb = load(lookup, matching_point_configs(s, b, res.p_match))
            mb, seb = per_task(ldb.frame)
            per_task_rows.append({"p_packnet": p, "who": b, "p": res.p_match, "task_mean": mb, "task_se": seb,
                                  "mean": mean_se(ldb.frame["accuracy"])[0]})
    pending = sum(1 for x in searches.values() if x.result is None)
    return MatchingResult(pd.DataFrame(target_rows), rows, per_task_rows, missing_static, pending, key, caption,
                          notes)


# --------------------------------------------------------------------------------------------- Figure 2


@dataclass
class BudgetResult:
    loaded: Loaded
    table: pd.DataFrame   # p, N, R, mean, se, n, error, seeds, best
    best: pd.DataFrame    # p, best_N, best_mean, worst_N, worst_mean, gap, gap_se, error_ratio, significant


def _best_worst(table: pd.DataFrame, by: str, rounds_col: str = "N") -> pd.DataFrame:
    rows = []
    for p, g in table.groupby(by, sort=True):
        g = g.dropna(subset=["mean"])
        if len(g) < 2:
            continue
        b, w = g.loc[g["mean"].idxmax()], g.loc[g["mean"].idxmin()]
        gap = float(b["mean"] - w["mean"])
        gap_se = math.sqrt(np.nan_to_num(b["se"]) ** 2 + np.nan_to_num(w["se"]) ** 2)
        ratio = float(w["error"] / b["error"]) if b["error"] > 0 else math.inf
        rows.append({by: p, "best_N": int(b[rounds_col]), "best_mean": float(b["mean"]), "best_se": float(b["se"]),
                     "worst_N": int(w[rounds_col]), "worst_mean": float(w["mean"]), "worst_se": float(w["se"]),
                     "gap": gap, "gap_se": gap_se, "error_ratio": ratio,
                     "significant": bool(gap_se > 0 and gap > 2 * gap_se)})
    return pd.DataFrame(rows, columns=[by, "best_N", "best_mean", "best_se", "worst_N", "worst_mean", "worst_se",
                                       "gap", "gap_se", "error_ratio", "significant"])


def analyse_budget(s: StudySettings, lookup: RecordLookup) -> BudgetResult:
    loaded = load(lookup, budget_configs(s))
    table = summarize(loaded.frame, ["p", "N"])
    table.insert(2, "R", [s.retrain_epochs // int(n) for n in table["N"]])
    best = _best_worst(table, "p")
    best_n = dict(zip(best["p"], best["best_N"]))
    table["best"] = [best_n.get(p) == n for p, n in zip(table["p"], table["N"])]
    return BudgetResult(loaded, table, best)


# --------------------------------------------------------------------------------------------- Figure 4


@dataclass
class NoBudgetResult:
    loaded: Loaded
    table: pd.DataFrame   # p, N, R, B, mean, se, n, error, seeds
    trend: pd.DataFrame   # p, spearman, first_N, first_mean, last_N, last_mean, gain, gain_se, significant, best_N


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
        rho = _spearman(g["N"], g["mean"])
        first, last = g.iloc[0], g.iloc[-1]
        gain = float(last["mean"] - first["mean"])
        gain_se = math.sqrt(np.nan_to_num(first["se"]) ** 2 + np.nan_to_num(last["se"]) ** 2)
        rows.append({"p": p, "spearman": rho, "first_N": int(first["N"]), "first_mean": float(first["mean"]),
                     "last_N": int(last["N"]), "last_mean": float(last["mean"]), "gain": gain, "gain_se": gain_se,
                     "significant": bool(gain_se > 0 and abs(gain) > 2 * gain_se),
                     "best_N": int(g.loc[g["mean"].idxmax(), "N"])})
    return NoBudgetResult(loaded, table, pd.DataFrame(rows, columns=[
        "p", "spearman", "first_N", "first_mean", "last_N", "last_mean", "gain", "gain_se", "significant", "best_N"]))


def _spearman(x: Iterable[float], y: Iterable[float]) -> float:
    x, y = np.asarray(list(x), float), np.asarray(list(y), float)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0 if len(x) >= 2 else NAN
    return float(spearmanr(x, y).statistic)


# --------------------------------------------------------------------------------------------- schedules


@dataclass
class SchedulesResult:
    loaded: Loaded
    table: pd.DataFrame     # p, schedule, N, mean, se, n, error, seeds
    compare: pd.DataFrame   # p, schedule, best_N, best_mean, best_se, vs_budget_best (diff), budget_best_N, ...


def analyse_schedules(s: StudySettings, lookup: RecordLookup, budget: BudgetResult | None = None) -> SchedulesResult:
    loaded = load(lookup, schedules_configs(s))
    table = summarize(loaded.frame, ["p", "schedule", "N"])
    budget = budget or analyse_budget(s, lookup)
    rows = []
    for p in s.schedules_ps:
        ref = budget.best[budget.best["p"] == p]
        ref_n = int(ref["best_N"].iloc[0]) if not ref.empty else None
        ref_mean = float(ref["best_mean"].iloc[0]) if not ref.empty else NAN
        ref_se = float(ref["best_se"].iloc[0]) if not ref.empty else NAN
        for sch in s.schedules:
            g = table[(table.p == p) & (table.schedule == sch)].dropna(subset=["mean"])
            if g.empty:
                continue
            b = g.loc[g["mean"].idxmax()]
            diff = float(b["mean"] - ref_mean)
            diff_se = math.sqrt(np.nan_to_num(b["se"]) ** 2 + np.nan_to_num(ref_se) ** 2)
            rows.append({"p": p, "schedule": sch, "best_N": int(b["N"]), "best_mean": float(b["mean"]),
                         "best_se": float(b["se"]), "budget_best_N": ref_n, "budget_best_mean": ref_mean,
                         "diff_vs_budget_best": diff, "diff_se": diff_se,
                         "significant": bool(diff_se > 0 and abs(diff) > 2 * diff_se)})
    return SchedulesResult(loaded, table, pd.DataFrame(rows, columns=[
        "p", "schedule", "best_N", "best_mean", "best_se", "budget_best_N", "budget_best_mean",
        "diff_vs_budget_best", "diff_se", "significant"]))


# --------------------------------------------------------------------------------------------- claims


@dataclass
class Claim:
    key: str          # a, b, c, d
    statement: str    # the paper's claim
    verdict: str      # supported / partly supported / not supported / no data
    evidence: str     # what in our data decided it, with the numbers


def _verdict(flags: Sequence[bool]) -> str:
    if not flags:
        return NO_DATA
    if all(flags):
        return SUPPORTED
    return NOT_SUPPORTED if not any(flags) else PARTLY


def _compressions(matching: MatchingResult) -> list[tuple[str, str, float, float]]:
    """(baseline, method, p, compression) for every in-range match of either method."""
    out = []
    for r in matching.rows:
        for method, res in (("minimize_scalar", r.scalar), ("monotone fit", r.fit)):
            if res is not None and res.in_range and not math.isnan(res.compression):
                out.append((r.baseline, method, r.p, res.compression))
    return out


def claim_a(matching: MatchingResult | None) -> Claim:
    statement = paper.CLAIMS["a"]
    found = _compressions(matching) if matching else []
    if not found:
        return Claim("a", statement, NO_DATA, "no finished match")
    flags = [c > 1 for *_, c in found]
    below = [f"{b} at p={p:g} ({m}): {c:.2f}" for b, m, p, c in found if c <= 1]
    ev = (f"{sum(flags)} of {len(flags)} compression ratios (both baselines, both methods) exceed 1; "
          f"range {min(c for *_, c in found):.2f} to {max(c for *_, c in found):.2f}")
    if below:
        ev += "; at or below 1: " + "; ".join(below)
    return Claim("a", statement, _verdict(flags), ev)


def claim_b(matching: MatchingResult | None, pruning: PruningResult | None = None) -> Claim:
    """Compression at the largest matched p above that at the smallest, per baseline and method."""
    statement = paper.CLAIMS["b"]
    found = _compressions(matching) if matching else []
    series: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for b, m, p, c in found:
        series.setdefault((b, m), []).append((p, c))
    flags, parts = [], []
    for (b, m), pts in sorted(series.items()):
        if len(pts) < 2:
            continue
        pts.sort()
        grows = pts[-1][1] > pts[0][1]
        flags.append(grows)
        parts.append(f"{b} ({m}): " + " -> ".join(f"{c:.2f}" for _, c in pts) + (" grows" if grows else " does not grow"))
    if pruning is not None and len(pruning.gap) >= 2:
        rho = _spearman(pruning.gap["p"], pruning.gap["gap_best"])
        parts.append(f"accuracy gap best baseline - PackNet over p (Figure 1 grid): Spearman {rho:+.2f}, from "
                     f"{pruning.gap['gap_best'].iloc[0]:+.4f} at p={pruning.gap['p'].iloc[0]:g} to "
                     f"{pruning.gap['gap_best'].iloc[-1]:+.4f} at p={pruning.gap['p'].iloc[-1]:g}")
    if not flags:
        return Claim("b", statement, NO_DATA, "; ".join(parts) or "fewer than two matched p per baseline")
    return Claim("b", statement, _verdict(flags), "; ".join(parts))


def claim_c(budget: BudgetResult | None, network: str) -> Claim:
    """A bad N costs a lot (best - worst significant at the largest p) and the best N follows the paper's
    pattern for this network (MLP: N > 1 at the largest p; VGG: the smallest N values)."""
    statement = paper.CLAIMS["c"]
    if budget is None or budget.best.empty:
        return Claim("c", statement, NO_DATA, "no budget runs with two or more N")
    best = budget.best.sort_values("p")
    top = best.iloc[-1]
    costly = bool(top["significant"])
    if network == "vgg":
        n_values = sorted(budget.table["N"].unique())
        pattern = int(top["best_N"]) in n_values[: max(1, len(n_values) // 2)]
        expect = "few rounds best for the VGG"
    else:
        pattern = int(top["best_N"]) > 1
        expect = "more than one round best for the MLP"
    per_p = "; ".join(f"p={r.p:g}: best N={r.best_N} ({r.best_mean:.4f}), worst N={r.worst_N} ({r.worst_mean:.4f}), "
                      f"gap {r.gap:.4f} ± {r.gap_se:.4f}, error x{r.error_ratio:.2f}" for r in best.itertuples())
    ev = (f"{per_p}. At the largest p the best-worst gap is {'' if costly else 'not '}larger than 2 s.e.; "
          f"best N={int(top['best_N'])} {'matches' if pattern else 'does not match'} the paper's pattern "
          f"({expect}). Best N per p: " + ", ".join(f"{r.p:g}->{r.best_N}" for r in best.itertuples())
          + " (whether it depends on the network needs both networks; compare the cifar10 report)")
    return Claim("c", statement, _verdict([costly, pattern]), ev)


def claim_d(nobudget: NoBudgetResult | None) -> Claim:
    statement = paper.CLAIMS["d"]
    if nobudget is None or nobudget.trend.empty:
        return Claim("d", statement, NO_DATA, "no no-budget runs with two or more N")
    flags = [bool(r.gain > 0 and r.spearman > 0) for r in nobudget.trend.itertuples()]
    ev = "; ".join(f"p={r.p:g}: N={r.first_N} {r.first_mean:.4f} -> N={r.last_N} {r.last_mean:.4f} "
                   f"({r.gain:+.4f} ± {r.gain_se:.4f}{', > 2 s.e.' if r.significant else ''}), Spearman {r.spearman:+.2f}"
                   for r in nobudget.trend.itertuples())
    return Claim("d", statement, _verdict(flags), ev)


def check_claims(*, matching: MatchingResult | None = None, pruning: PruningResult | None = None,
                 budget: BudgetResult | None = None, nobudget: NoBudgetResult | None = None,
                 network: str = "mlp") -> list[Claim]:
    """The verdict on each of the paper's claims (a)-(d), computed from our analyses."""
    return [claim_a(matching), claim_b(matching, pruning), claim_c(budget, network), claim_d(nobudget)]


def paper_table1_trend(key: str) -> str:
    """What the paper's own Table 1 says about claim (b) (same rule as ours: last p above first p)."""
    table = paper.TABLE1_COMPRESSION.get(key)
    if not table:
        return ""
    ps = sorted(table)
    parts = []
    for b in BASELINES:
        first, last = table[ps[0]][b], table[ps[-1]][b]
        parts.append(f"{b} {' -> '.join(f'{table[p][b]:.2f}' for p in ps)} ({'grows' if last > first else 'does not grow'})")
    return "; ".join(parts)
