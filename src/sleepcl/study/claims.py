"""The paper's claims (a)-(d), checked against the runs of one report.

A verdict covers only what the report holds: the network and dataset it trained. The paper shows its claims
for two networks (the MLP on MNIST, the VGG on CIFAR-10; claim (d) for the VGG alone), so every verdict names
its scope and calls the paper's other networks *untested* -- e.g. "supported for the MLP on mnist-5k; VGG:
untested".

Each claim rests on a family of tests (one per baseline and p, or per p), each two-sided at :data:`ALPHA` with at
least :data:`MIN_N` seeds, their p-values corrected together by Holm's method
(:func:`sleepcl.study.stats.holm`). Each test then says *for* (significant in the paper's direction), *against*
(significant the other way) or nothing, and the verdict is

* **supported**: every test of the family for, **partly supported**: some for, none against;
* **opposite**: some against, none for; **mixed**: some of each;
* **inconclusive**: none significant -- with the power the tests had (the smallest effect a test would have found
  with 80% power, :func:`detectable`), so that "not shown" is never read as "opposite".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from scipy import optimize
from scipy import stats as sps

from . import paper
from .analysis import BudgetResult, MatchingResult, NoBudgetResult, PruningResult, spearman
from .experiments import BASELINES, StudySettings
from .stats import ALPHA, MIN_N, Comparison, holm

__all__ = ["Claim", "INCONCLUSIVE", "MIXED", "NOT_SUPPORTED", "NO_DATA", "OPPOSITE", "PARTLY", "SUPPORTED",
           "UNTESTED", "VERDICTS", "ClaimTest", "check_claims", "detectable", "paper_table1_trend", "scope_of", "verdict_of"]

SUPPORTED, PARTLY, OPPOSITE, MIXED = "supported", "partly supported", "opposite", "mixed"
INCONCLUSIVE, NO_DATA = "inconclusive", "no data"
NOT_SUPPORTED = OPPOSITE  # the old name: a claim is "not supported" only where the data say the opposite
VERDICTS = (SUPPORTED, PARTLY, OPPOSITE, MIXED, INCONCLUSIVE, NO_DATA)
UNTESTED = "untested"
POWER = 0.8


@dataclass
class Claim:
    key: str          # a, b, c, d
    statement: str    # the paper's claim
    verdict: str      # for `scope` only: one of VERDICTS
    evidence: str     # what in our data decided it, with the numbers and tests
    scope: str = ""   # what the verdict covers, e.g. "MLP on mnist-5k"
    untested: str = ""  # the paper's networks this report holds no runs of, e.g. "VGG: untested"
    power: str = ""   # for an inconclusive verdict: what the tests could have found

    def summary(self) -> str:
        """E.g. ``supported for the MLP on mnist-5k; VGG: untested``."""
        out = f"{self.verdict} for the {self.scope}" if self.scope else self.verdict
        return out + (f"; {self.untested}" if self.untested else "")


@dataclass
class ClaimTest:
    """One test of a claim's family: ``estimate`` in the paper's direction is positive; ``se`` its standard error
    with ``n`` seeds (t with n - 1 degrees of freedom); ``pvalue`` two-sided, raw; ``adjusted`` after Holm."""

    label: str
    estimate: float
    se: float
    n: int
    pvalue: float
    adjusted: float = math.nan
    unit: str = ""    # how to print a detectable effect: "" (accuracy) or "x" (a ratio on the log scale)

    @property
    def direction(self) -> int:
        """+1 for the claim, -1 against, 0 not significant (or fewer than MIN_N seeds)."""
        if self.n < MIN_N or math.isnan(self.adjusted) or self.adjusted >= ALPHA:
            return 0
        return 1 if self.estimate > 0 else -1

    def detectable(self) -> str:
        d = detectable(self.se, self.n)
        if math.isnan(d):
            return "no test"
        return f"x{math.exp(d):.2f}" if self.unit == "x" else f"{d:.4f}"


def detectable(se: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true effect a two-sided t-test (n - 1 degrees of freedom, standard error ``se``) finds with
    probability ``power``: the non-central t's shift, in units of the effect (NaN with too few seeds)."""
    if n < 2 or not math.isfinite(se) or se <= 0:
        return math.nan
    df = n - 1
    crit = sps.t.ppf(1 - alpha / 2, df)

    def short(nc: float) -> float:
        got = sps.nct.sf(crit, df, nc) + sps.nct.cdf(-crit, df, nc)
        return (1.0 if math.isnan(got) else got) - power

    return float(optimize.brentq(short, 0.0, 50.0)) * se  # the shift in standard errors, then in the effect's units


def verdict_of(tests: Sequence[ClaimTest]) -> str:
    """Holm-correct ``tests`` together (in place) and read the verdict (module docstring)."""
    if not tests:
        return NO_DATA
    for t, adj in zip(tests, holm([t.pvalue if t.n >= MIN_N else math.nan for t in tests])):
        t.adjusted = adj
    pos = sum(t.direction > 0 for t in tests)
    neg = sum(t.direction < 0 for t in tests)
    if pos and neg:
        return MIXED
    if neg:
        return OPPOSITE
    if pos:
        return SUPPORTED if pos == len(tests) else PARTLY
    return INCONCLUSIVE


def power_note(tests: Sequence[ClaimTest]) -> str:
    """What the tests of an inconclusive family could have found."""
    if not tests:
        return ""
    if all(t.n < MIN_N for t in tests):
        return f"fewer than {MIN_N} seeds: nothing tested"
    parts = [f"{t.label}: {t.detectable()}" for t in tests if t.n >= MIN_N]
    n = sorted({t.n for t in tests})
    return (f"smallest effects the tests would have found with {POWER:.0%} power (two-sided t, p < {ALPHA:g}, "
            f"n = {', '.join(map(str, n))}, before Holm's correction): " + "; ".join(parts))


def family_text(tests: Sequence[ClaimTest]) -> str:
    """E.g. ``Holm over 6 tests: 4 for, 0 against``."""
    pos = sum(t.direction > 0 for t in tests)
    neg = sum(t.direction < 0 for t in tests)
    return f"Holm's correction over {len(tests)} test(s): {pos} significant for the claim, {neg} against"


def _finish(claim: Claim, tests: Sequence[ClaimTest]) -> Claim:
    claim.verdict = verdict_of(tests)
    if claim.verdict == INCONCLUSIVE:
        claim.power = power_note(tests)
    return claim


def _t_test(label: str, c: Comparison, sign: int = 1) -> ClaimTest:
    return ClaimTest(label, sign * c.diff, c.se, c.n, c.pvalue)


def _adj(t: ClaimTest) -> str:
    return f"Holm p = {_p(t.adjusted)}"


def scope_of(s: StudySettings) -> str:
    return f"{paper.network_name(s.network, s.widths)} on {s.benchmark}"


def _untested(key: str, network: str) -> str:
    others = [paper.network_name(n) for n in paper.CLAIM_NETWORKS[key] if n != network]
    note = "" if network in paper.CLAIM_NETWORKS[key] else " (the paper's evidence)"
    return "; ".join(f"{o}{note}: {UNTESTED}" for o in others)


def claim_a(matching: MatchingResult | None, step: float = math.nan) -> Claim:
    """Each baseline more accurate than PackNet at the same p (paired test per baseline and p, Holm over them),
    with the compression it implies. ``step``: the accuracy step of one test image, printed beside each
    difference (the finite test set: a difference of a few steps is a few images)."""
    statement = paper.CLAIMS["a"]
    rows = [r for r in (matching.rows if matching else []) if r.accuracy_gap is not None]
    if not rows:
        return Claim("a", statement, NO_DATA, "no PackNet and baseline runs at the same p")
    tests = [_t_test(f"{r.baseline} at p={r.p:g}", r.accuracy_gap) for r in rows]
    claim = _finish(Claim("a", statement, "", ""), tests)
    parts = []
    for r, t in zip(rows, tests):
        fit, sc = r.fit, r.scalar
        comp = []
        if fit is not None and fit.in_range:
            ci = f" [{_num(fit.compression_ci_low)}, {_num(fit.compression_ci_high)}]" if r.accuracy_gap.n >= 2 else ""
            comp.append(f"{fit.compression:.2f}x{ci} (monotone fit)")
        if sc is not None and sc.in_range:
            comp.append(f"{sc.compression:.2f}x (minimize_scalar)")
        steps = f", {abs(r.accuracy_gap.diff) / step:.1f} steps of {step:.3g}" if step > 0 else ""
        parts.append(f"{r.baseline} at p={r.p:g}: accuracy {r.accuracy_gap.describe()[:-1]}; {_adj(t)}{steps}) "
                     f"over PackNet" + (f", compression {', '.join(comp)}" if comp else ""))
    step_note = (f" An accuracy step ({step:.3g}) is one test image of one task in the average accuracy."
                 if step > 0 else "")
    claim.evidence = f"{family_text(tests)}: " + "; ".join(parts) + "." + step_note
    return claim


def _num(x: float) -> str:
    return "–" if math.isnan(x) else ("∞" if math.isinf(x) else f"{x:.2f}")


def claim_b(matching: MatchingResult | None, pruning: PruningResult | None = None) -> Claim:
    """The compression at the largest matched p over that at the smallest, per baseline: a t-test of its log
    on the jackknife standard error (the interval's), Holm over the baselines."""
    statement = paper.CLAIMS["b"]
    growth = matching.growth if matching else []
    tests = []
    for g in growth:
        se = g.log_se
        if math.isfinite(se) and se > 0 and g.n_seeds >= 2:
            pv = float(2 * sps.t.sf(abs(math.log(g.ratio)) / se, g.n_seeds - 1))
        else:
            pv = 1.0 if math.isinf(se) else math.nan
        tests.append(ClaimTest(g.baseline, math.log(g.ratio), se, g.n_seeds, pv, unit="x"))
    claim = _finish(Claim("b", statement, "", ""), tests) if tests else Claim("b", statement, NO_DATA, "")
    parts = []
    for g, t in zip(growth, tests):
        ci = "no interval" if math.isnan(g.ci_low) and math.isnan(g.ci_high) else (
            f"95% CI [{_num(g.ci_low)}, {_num(g.ci_high)}]")
        parts.append(f"{g.baseline}: compression x{g.ratio:.2f} from p={g.p_low:g} to p={g.p_high:g} ({ci}, "
                     f"jackknife-t over {g.n_seeds} seeds, p = {_p(t.pvalue)}, {_adj(t)}; monotone fit)")
    if matching:
        for b in dict.fromkeys(r.baseline for r in matching.rows):
            found = [(r.p, r.scalar.compression) for r in matching.rows
                     if r.baseline == b and r.scalar is not None and r.scalar.in_range]
            if len(found) >= 2:
                parts.append(f"{b} (minimize_scalar, no interval): " + " -> ".join(f"{c:.2f}" for _, c in sorted(found)))
    if pruning is not None and len(pruning.gap) >= 2:
        rho = spearman(pruning.gap["p"], pruning.gap["gap_best"])
        parts.append(f"accuracy gap best baseline - PackNet over p (Figure 1 grid, descriptive): Spearman {rho:+.2f}, "
                     f"from {pruning.gap['gap_best'].iloc[0]:+.4f} at p={pruning.gap['p'].iloc[0]:g} to "
                     f"{pruning.gap['gap_best'].iloc[-1]:+.4f} at p={pruning.gap['p'].iloc[-1]:g}")
    if not growth:
        claim.evidence = "; ".join(parts) or "fewer than two matched p per baseline"
        return claim
    claim.evidence = f"{family_text(tests)}: " + "; ".join(parts)
    return claim


def _pattern_test(r, network: str, n_values: Sequence[int]) -> ClaimTest:  # noqa: ANN001
    """One p's test of the paper's pattern for ``network``, on the held-out seeds (positive: the paper's way).

    MLP (many rounds best): a best N above the fewest is tested against the fewest; a best N at the fewest
    against the most (above it: the opposite pattern). VGG (few rounds best): a best N among the fewest half
    against the most rounds; a best N among the most against the fewest (above it: the opposite)."""
    few = n_values[: max(1, len(n_values) // 2)]
    best = int(r.best_N)
    if network == "vgg":
        if best in few:
            return ClaimTest(f"p={r.p:g}: N={best} - N={n_values[-1]}", r.vs_most_diff, r.vs_most_se, int(r.n),
                        r.vs_most_pvalue)
        return ClaimTest(f"p={r.p:g}: N={n_values[0]} - N={best}", -r.vs_one_diff, r.vs_one_se, int(r.n),
                    r.vs_one_pvalue)
    if best > n_values[0]:
        return ClaimTest(f"p={r.p:g}: N={best} - N={n_values[0]}", r.vs_one_diff, r.vs_one_se, int(r.n),
                    r.vs_one_pvalue)
    return ClaimTest(f"p={r.p:g}: N={n_values[-1]} - N={best}", -r.vs_most_diff, r.vs_most_se, int(r.n),
                r.vs_most_pvalue)


def claim_c(budget: BudgetResult | None, network: str) -> Claim:
    """The best N follows the paper's pattern for this network at every p (MLP: a best N > 1 significantly above
    N = 1; VGG: a best N among the fewest rounds significantly above the most rounds), and a bad N costs a lot
    (best minus worst). Best and worst are chosen on one half of the seeds and tested on the other; one pattern
    test per p, Holm over the p."""
    statement = paper.CLAIMS["c"]
    if budget is None or budget.best.empty:
        return Claim("c", statement, NO_DATA, "no budget runs with two or more N")
    best = budget.best.sort_values("p")
    n_values = sorted(int(n) for n in budget.table["N"].unique())
    tests = [_pattern_test(r, network, n_values) for r in best.itertuples()]
    claim = _finish(Claim("c", statement, "", ""), tests)
    if network == "vgg":
        expect = (f"few rounds best for the VGG: a best N among the fewest {max(1, len(n_values) // 2)} significantly "
                  f"above N={n_values[-1]}")
    else:
        expect = f"many rounds best for the MLP: a best N above N={n_values[0]} significantly above it"
    per_p = "; ".join(
        f"p={r.p:g}: best N={r.best_N}, worst N={r.worst_N}; on the tested seeds "
        f"{r.held_best:.4f} vs {r.held_worst:.4f}, gap {_cmp_text(r.gap, r.gap_se, r.n, r.pvalue, r.test)}, "
        f"error x{r.error_ratio:.2f}; pattern test {t.label}: {t.estimate:+.4f} (p = {_p(t.pvalue)}, {_adj(t)}); "
        f"N not significantly below the best: {r.tied or 'none'}" for r, t in zip(best.itertuples(), tests))
    claim.evidence = (f"The paper's pattern: {expect}. Best and worst N {budget.selection.describe()} (paired by "
                      f"seed). {family_text(tests)}. {per_p}.")
    return claim


def _p(p: float) -> str:
    return "–" if math.isnan(p) else (f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}")


def _cmp_text(diff: float, se: float, n: int, pvalue: float, test: str) -> str:
    return Comparison(diff, se, int(n), pvalue, test).describe()


def claim_d(nobudget: NoBudgetResult | None) -> Claim:
    """More rounds help without a budget: the most rounds against the fewest, per p (paired), Holm over the p."""
    statement = paper.CLAIMS["d"]
    if nobudget is None or nobudget.trend.empty:
        return Claim("d", statement, NO_DATA, "no no-budget runs with two or more N")
    rows = list(nobudget.trend.itertuples())
    tests = [ClaimTest(f"p={r.p:g}: N={r.last_N} - N={r.first_N}", r.gain, r.gain_se, int(r.n), r.pvalue) for r in rows]
    claim = _finish(Claim("d", statement, "", ""), tests)
    claim.evidence = f"{family_text(tests)}: " + "; ".join(
        f"p={r.p:g}: N={r.first_N} {r.first_mean:.4f} -> N={r.last_N} {r.last_mean:.4f}, gain "
        f"{_cmp_text(r.gain, r.gain_se, r.n, r.pvalue, r.test)[:-1]}; {_adj(t)}), Spearman {r.spearman:+.2f}"
        for r, t in zip(rows, tests))
    return claim


def check_claims(s: StudySettings, *, matching: MatchingResult | None = None, pruning: PruningResult | None = None,
                 budget: BudgetResult | None = None, nobudget: NoBudgetResult | None = None,
                 step: float = math.nan) -> list[Claim]:
    """The verdict on each of the paper's claims (a)-(d) for the network and data of ``s``; ``step`` is the
    accuracy step of one test image (printed beside claim (a)'s differences)."""
    claims = [claim_a(matching, step), claim_b(matching, pruning), claim_c(budget, s.network), claim_d(nobudget)]
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
