"""The paper's claims (a)-(d), checked against the runs of one report.

A verdict covers only what the report holds: the network and dataset it trained. The paper shows its claims
for two networks (the MLP on MNIST, the VGG on CIFAR-10; claim (d) for the VGG alone), so every verdict names
its scope and calls the paper's other networks *untested* -- e.g. "supported for the MLP on mnist-5k; VGG:
untested". A difference counts only when a test says so (:mod:`sleepcl.study.stats`: paired by seed, at
least 3 seeds, p < 0.05); with fewer seeds the verdict is *inconclusive*, whatever the means say.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from . import paper
from .analysis import BudgetResult, MatchingResult, NoBudgetResult, PruningResult, spearman
from .experiments import BASELINES, StudySettings
from .stats import MIN_N, Comparison

__all__ = ["Claim", "INCONCLUSIVE", "NOT_SUPPORTED", "NO_DATA", "PARTLY", "SUPPORTED", "UNTESTED", "check_claims",
           "paper_table1_trend", "scope_of"]

SUPPORTED, PARTLY, NOT_SUPPORTED, NO_DATA = "supported", "partly supported", "not supported", "no data"
INCONCLUSIVE = "inconclusive (fewer than 3 seeds to test)"
UNTESTED = "untested"


@dataclass
class Claim:
    key: str          # a, b, c, d
    statement: str    # the paper's claim
    verdict: str      # for `scope` only
    evidence: str     # what in our data decided it, with the numbers and tests
    scope: str = ""   # what the verdict covers, e.g. "MLP on mnist-5k"
    untested: str = ""  # the paper's networks this report holds no runs of, e.g. "VGG: untested"

    def summary(self) -> str:
        """E.g. ``supported for the MLP on mnist-5k; VGG: untested``."""
        out = f"{self.verdict} for the {self.scope}" if self.scope else self.verdict
        return out + (f"; {self.untested}" if self.untested else "")


def scope_of(s: StudySettings) -> str:
    return f"{paper.network_name(s.network, s.widths)} on {s.benchmark}"


def _untested(key: str, network: str) -> str:
    others = [paper.network_name(n) for n in paper.CLAIM_NETWORKS[key] if n != network]
    note = "" if network in paper.CLAIM_NETWORKS[key] else " (the paper's evidence)"
    return "; ".join(f"{o}{note}: {UNTESTED}" for o in others)


def _verdict(flags: Sequence[bool], testable: bool = True) -> str:
    if not flags:
        return NO_DATA
    if not testable:
        return INCONCLUSIVE
    if all(flags):
        return SUPPORTED
    return NOT_SUPPORTED if not any(flags) else PARTLY


def _testable(comparisons: Sequence[Comparison]) -> bool:
    return any(c.n >= MIN_N for c in comparisons)


def claim_a(matching: MatchingResult | None) -> Claim:
    """Each baseline more accurate than PackNet at the same p (paired test), with the compression it implies."""
    statement = paper.CLAIMS["a"]
    rows = [r for r in (matching.rows if matching else []) if r.accuracy_gap is not None]
    if not rows:
        return Claim("a", statement, NO_DATA, "no PackNet and baseline runs at the same p")
    parts = []
    for r in rows:
        fit, sc = r.fit, r.scalar
        comp = []
        if fit is not None and fit.in_range:
            ci = "" if math.isnan(fit.compression_ci_low) and math.isnan(fit.compression_ci_high) else (
                f" [{_num(fit.compression_ci_low)}, {_num(fit.compression_ci_high)}]")
            comp.append(f"{fit.compression:.2f}x{ci} (monotone fit)")
        if sc is not None and sc.in_range:
            comp.append(f"{sc.compression:.2f}x (minimize_scalar)")
        parts.append(f"{r.baseline} at p={r.p:g}: accuracy {r.accuracy_gap.describe()} over PackNet"
                     + (f", compression {', '.join(comp)}" if comp else ""))
    flags = [r.accuracy_gap.significant and r.accuracy_gap.diff > 0 for r in rows]
    ev = (f"{sum(flags)} of {len(flags)} baseline-p pairs significantly more accurate than PackNet at the same p: "
          + "; ".join(parts))
    return Claim("a", statement, _verdict(flags, _testable([r.accuracy_gap for r in rows])), ev)


def _num(x: float) -> str:
    return "–" if math.isnan(x) else ("∞" if math.isinf(x) else f"{x:.2f}")


def claim_b(matching: MatchingResult | None, pruning: PruningResult | None = None) -> Claim:
    """The compression at the largest matched p over that at the smallest: its bootstrap interval above 1."""
    statement = paper.CLAIMS["b"]
    growth = matching.growth if matching else []
    parts = []
    for g in growth:
        ci = "no interval" if math.isnan(g.ci_low) and math.isnan(g.ci_high) else (
            f"95% CI [{_num(g.ci_low)}, {_num(g.ci_high)}]")
        parts.append(f"{g.baseline}: compression x{g.ratio:.2f} from p={g.p_low:g} to p={g.p_high:g} ({ci}, "
                     f"{g.n_seeds} seeds; monotone fit)")
    if matching:
        for b in dict.fromkeys(r.baseline for r in matching.rows):
            found = [(r.p, r.scalar.compression) for r in matching.rows
                     if r.baseline == b and r.scalar is not None and r.scalar.in_range]
            if len(found) >= 2:
                parts.append(f"{b} (minimize_scalar): " + " -> ".join(f"{c:.2f}" for _, c in sorted(found)))
    if pruning is not None and len(pruning.gap) >= 2:
        rho = spearman(pruning.gap["p"], pruning.gap["gap_best"])
        parts.append(f"accuracy gap best baseline - PackNet over p (Figure 1 grid, descriptive): Spearman {rho:+.2f}, "
                     f"from {pruning.gap['gap_best'].iloc[0]:+.4f} at p={pruning.gap['p'].iloc[0]:g} to "
                     f"{pruning.gap['gap_best'].iloc[-1]:+.4f} at p={pruning.gap['p'].iloc[-1]:g}")
    if not growth:
        return Claim("b", statement, NO_DATA, "; ".join(parts) or "fewer than two matched p per baseline")
    flags = [bool(g.ci_low > 1) for g in growth]
    testable = any(g.n_seeds >= MIN_N for g in growth)
    return Claim("b", statement, _verdict(flags, testable), "; ".join(parts))


def claim_c(budget: BudgetResult | None, network: str) -> Claim:
    """A bad N costs a lot (best minus worst significant at the largest p) and the best N follows the paper's
    pattern for this network: MLP, a best N > 1 significantly above N = 1; VGG, a best N among the fewest
    rounds significantly above the most rounds. Best and worst are chosen on one half of the seeds and tested
    on the other."""
    statement = paper.CLAIMS["c"]
    if budget is None or budget.best.empty:
        return Claim("c", statement, NO_DATA, "no budget runs with two or more N")
    best = budget.best.sort_values("p")
    top = best.iloc[-1]
    n_values = sorted(int(n) for n in budget.table["N"].unique())
    if network == "vgg":
        pattern = int(top["best_N"]) in n_values[: max(1, len(n_values) // 2)] and bool(top["vs_most_significant"])
        expect = (f"few rounds best for the VGG: the best N among the fewest {max(1, len(n_values) // 2)} and "
                  f"significantly above N={n_values[-1]}")
    else:
        pattern = int(top["best_N"]) > n_values[0] and bool(top["vs_one_significant"])
        expect = f"many rounds best for the MLP: the best N above N={n_values[0]} and significantly better than it"
    per_p = "; ".join(
        f"p={r.p:g}: best N={r.best_N}, worst N={r.worst_N}; on the tested seeds "
        f"{r.held_best:.4f} vs {r.held_worst:.4f}, gap {_cmp_text(r.gap, r.gap_se, r.n, r.pvalue, r.test)}, "
        f"error x{r.error_ratio:.2f}; best - N={n_values[0]}: {r.vs_one_diff:+.4f} (p = {_p(r.vs_one_pvalue)}); "
        f"best - N={n_values[-1]}: {r.vs_most_diff:+.4f} (p = {_p(r.vs_most_pvalue)}); "
        f"N not significantly below the best: {r.tied or 'none'}" for r in best.itertuples())
    ev = (f"Best and worst N {budget.selection.describe()} (paired by seed). {per_p}. "
          f"At the largest p the gap is {'' if top['significant'] else 'not '}significant; best N={int(top['best_N'])} "
          f"{'matches' if pattern else 'does not match'} the paper's pattern ({expect}).")
    testable = int(top["n"]) >= MIN_N
    return Claim("c", statement, _verdict([bool(top["significant"]), pattern], testable), ev)


def _p(p: float) -> str:
    return "–" if math.isnan(p) else (f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}")


def _cmp_text(diff: float, se: float, n: int, pvalue: float, test: str) -> str:
    return Comparison(diff, se, int(n), pvalue, test).describe()


def claim_d(nobudget: NoBudgetResult | None) -> Claim:
    statement = paper.CLAIMS["d"]
    if nobudget is None or nobudget.trend.empty:
        return Claim("d", statement, NO_DATA, "no no-budget runs with two or more N")
    flags = [bool(r.gain > 0 and r.significant) for r in nobudget.trend.itertuples()]
    ev = "; ".join(f"p={r.p:g}: N={r.first_N} {r.first_mean:.4f} -> N={r.last_N} {r.last_mean:.4f}, gain "
                   f"{_cmp_text(r.gain, r.gain_se, r.n, r.pvalue, r.test)}, Spearman {r.spearman:+.2f}"
                   for r in nobudget.trend.itertuples())
    testable = bool((nobudget.trend["n"] >= MIN_N).any())
    return Claim("d", statement, _verdict(flags, testable), ev)


def check_claims(s: StudySettings, *, matching: MatchingResult | None = None, pruning: PruningResult | None = None,
                 budget: BudgetResult | None = None, nobudget: NoBudgetResult | None = None) -> list[Claim]:
    """The verdict on each of the paper's claims (a)-(d) for the network and data of ``s``."""
    claims = [claim_a(matching), claim_b(matching, pruning), claim_c(budget, s.network), claim_d(nobudget)]
    for c in claims:
        c.scope = scope_of(s)
        if s.network not in paper.CLAIM_NETWORKS[c.key]:
            c.scope += f" (an analogue: the paper shows ({c.key}) for the {', '.join(paper.network_name(n) for n in paper.CLAIM_NETWORKS[c.key])} only)"
        c.untested = _untested(c.key, s.network)
    return claims


def paper_table1_trend(key: str) -> str:
    """What the paper's own Table 1 says about claim (b) (its last p against its first)."""
    table = paper.TABLE1_COMPRESSION.get(key)
    if not table:
        return ""
    ps = sorted(table)
    parts = []
    for b in BASELINES:
        if b not in table[ps[0]]:
            continue
        first, last = table[ps[0]][b], table[ps[-1]][b]
        parts.append(f"{b} {' -> '.join(f'{table[p][b]:.2f}' for p in ps)} ({'grows' if last > first else 'does not grow'})")
    return "; ".join(parts)
