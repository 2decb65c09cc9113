"""The study's report: per experiment a plot (PNG and SVG) and tables (Markdown and CSV), and one page.

``write_report`` reads the stored runs of the preset (through :mod:`sleepcl.study.analysis`), so every
number in the report is computed from runs in the store; the paper's numbers come from
:mod:`sleepcl.study.paper` and are labelled "paper" wherever they appear. Plots use matplotlib's
object API with the Agg canvas (no pyplot, no global backend switch), and SVGs are written without a
date and with a fixed id salt, so rerunning a report on the same runs gives the same files.
"""

from __future__ import annotations

import io
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..config import PAPER_DEFAULTS
from ..files import atomic_open, atomic_write_bytes
from ..runs.records import write_records
from ..runs.store import RunStore
from ..task_inference import DEFAULT_RULE
from . import analysis as an
from . import claims as cl
from . import paper
from .experiments import (
    TITLES,
    StudySettings,
    expand_names,
    experiment_configs,
    matching_point_configs,
    settings,
)
from .run import RecordLookup
from .stats import ALPHA, MIN_N, Comparison

__all__ = ["ReportResult", "default_out_dir", "write_report"]

COLORS = {"packnet": "#d62728", "memory": "#1f77b4", "multinet": "#2ca02c", "memory-grow": "#17becf",
          "uniform": "#444444", "lengthening": "#9467bd", "cubic": "#ff7f0e"}
LABELS = {"packnet": "PackNet", "memory": "Memory", "multinet": "Multinet", "memory-grow": "Memory (grow-only)"}


def _label(strategy: str) -> str:
    """A strategy's name in tables and legends (a baseline added later shows under its own name)."""
    return LABELS.get(strategy, strategy)


def _color(strategy: str) -> str | None:
    return COLORS.get(strategy)  # None: matplotlib's next colour


def default_out_dir(benchmark: str, preset: str, network: str | None = None) -> Path:
    """``docs/results/<benchmark>-<preset>/``, with the function's name appended for a user's model."""
    name = f"{benchmark}-{preset}"
    if network is not None and ":" in network:
        name += "-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", network.rpartition(":")[2])
    return Path("docs") / "results" / name


@dataclass
class ReportResult:
    out_dir: Path
    page: Path
    files: list[Path] = field(default_factory=list)
    claims: list[an.Claim] = field(default_factory=list)
    analyses: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- helpers


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if math.isnan(v):
            return "–"
        if math.isinf(v):
            return "∞"
        return f"{v:.{digits}f}"
    return str(v)


def _pm(m: float, se: float, digits: int = 4) -> str:
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return "–"
    return f"{m:.{digits}f}" if se is None or math.isnan(se) else f"{m:.{digits}f} ± {se:.{digits}f}"


def md_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """A Markdown pipe table from already formatted cells."""
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    out = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


class _Writer:
    """Writes files into the output folder and remembers them."""

    def __init__(self, out: Path):
        self.out = out
        self.files: list[Path] = []

    # Every file is replaced atomically (sleepcl.files): a reader never sees half a table, and a link planted in
    # a shared report folder is replaced, not written through. Not fsync'ed: the report can be written again.
    def csv(self, name: str, df: pd.DataFrame) -> Path:
        path = self.out / f"{name}.csv"
        with atomic_open(path, "w", fsync=False, newline="") as f:
            df.to_csv(f, index=False, float_format="%.6g")
        self.files.append(path)
        return path

    def md(self, name: str, text: str) -> Path:
        path = self.out / f"{name}.md"
        atomic_write_bytes(path, text.encode(), fsync=False)
        self.files.append(path)
        return path

    def figure(self, name: str, fig: Figure) -> list[Path]:
        paths = []
        with matplotlib.rc_context({"svg.hashsalt": "sleepcl", "svg.fonttype": "path"}):
            for ext, kw in (("png", {"dpi": 130, "metadata": {"Software": None}}),
                            ("svg", {"metadata": {"Date": None, "Creator": None}})):
                path = self.out / f"{name}.{ext}"
                buffer = io.BytesIO()
                fig.savefig(buffer, format=ext, bbox_inches="tight", **kw)
                atomic_write_bytes(path, buffer.getvalue(), fsync=False)
                paths.append(path)
        self.files.extend(paths)
        return paths


def _new_figure(ncols: int = 1, nrows: int = 1, width: float = 6.4, height: float = 4.2, **kw: Any):
    fig = Figure(figsize=(width * ncols if ncols > 1 else width, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def _kept_axis(ax, ps: Sequence[float]) -> None:
    """x = 1 - p on a log scale, reversed so that p grows to the right; ticks labelled with p."""
    ax.set_xscale("log")
    kept = sorted({1 - p for p in ps})
    ax.set_xticks(kept)
    ax.set_xticklabels([f"{1 - k:g}" for k in kept], rotation=45, ha="right")
    ax.minorticks_off()
    ax.invert_xaxis()
    ax.set_xlabel("final free fraction p (log scale in 1 - p, the weights kept)")


def _accuracy_by_rounds_panel(ax, p: float, ns: Sequence[int], legend_size: int,
                              label: str = "pruning rounds per night N (log scale)") -> None:
    """Axes, title and legend of one panel of accuracy against N at one final free fraction p."""
    _rounds_axis(ax, ns, label)
    ax.set_title(f"p = {p:g}")
    ax.set_ylabel("average final test accuracy")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=legend_size)


def _rounds_axis(ax, ns: Sequence[int], label: str = "pruning rounds per night N (log scale)") -> None:
    ns = sorted(set(int(n) for n in ns))
    if len(ns) > 1:
        ax.set_xscale("log", base=2)
    ax.set_xticks(ns)
    ax.set_xticklabels([str(n) for n in ns])
    ax.minorticks_off()
    ax.set_xlabel(label)


def _err(se: pd.Series) -> np.ndarray:
    return np.nan_to_num(np.asarray(se, dtype=float))


def _missing_note(loaded: an.Loaded, cmd: str) -> str:
    if loaded.missing == 0:
        return ""
    return (f"\n> **{loaded.missing} of {loaded.total} runs are not in the store yet**; the numbers below use "
            f"the {loaded.total - loaded.missing} that are. Run `{cmd}` to train the rest.\n")


# --------------------------------------------------------------------------------------------- sections


def _pruning(s: StudySettings, res: an.PruningResult, w: _Writer, cmd: str) -> str:
    t = res.table
    w.csv("pruning", t)
    rows = []
    by = {(r.strategy, r.p): r for r in t.itertuples()}
    for p in s.pruning_grid:
        cells = [f"{p:g}"]
        for st in s.strategies:
            r = by.get((st, p))
            cells.append(_pm(r.mean, r.se) if r else "–")
        g = res.gap[res.gap.p == p] if not res.gap.empty else res.gap
        cells.append(_fmt(float(g["gap_best"].iloc[0])) if not g.empty else "–")
        rows.append(cells)
    header = ["p", *[f"{_label(st)} mean ± s.e." for st in s.strategies], "best baseline − PackNet"]
    table_md = md_table(rows, header) + _untold(s, res.untold, w)
    w.md("pruning", table_md)
    if not t.empty:
        fig, axes = _new_figure()
        ax = axes[0, 0]
        for st in s.strategies:
            g = t[t.strategy == st].sort_values("p")
            if g.empty:
                continue
            ax.errorbar(1 - g["p"], g["mean"], yerr=_err(g["se"]), marker="o", ms=4, capsize=3,
                        color=_color(st), label=_label(st))
        _kept_axis(ax, s.pruning_grid)
        ax.set_ylabel("average final test accuracy over tasks")
        ax.set_title(f"{s.benchmark}: accuracy vs final free fraction (mean ± s.e., {len(s.seeds)} seeds)")
        ax.grid(alpha=0.3)
        ax.legend()
        w.figure("pruning", fig)
    return (f"Each strategy trained on the {s.n_tasks} tasks with the capacity schedule of Algorithm 2 ending at "
            f"free fraction p; seeds {_seeds(s.seeds)}." + _missing_note(res.loaded, cmd)
            + ("\n![accuracy against p](pruning.png)\n\n" if not t.empty else "\n") + table_md)


def _untold(s: StudySettings, untold: pd.DataFrame, w: _Writer) -> str:
    """Figure 1's runs again with the task never told (absent for runs from before the score was recorded)."""
    if untold.empty:
        return ""
    w.csv("pruning_untold", untold)
    by = {(r.strategy, r.p): r for r in untold.itertuples()}
    rows = [[f"{p:g}", *[_pm(r.mean, r.se) if (r := by.get((st, p))) else "–" for st in s.strategies]]
            for p in s.pruning_grid]
    return ("\nThe same runs with the task never told: each test sample's task inferred (rule "
            f"`{DEFAULT_RULE}`, `sleepcl predict` without `--task`), then its class; the score counts a sample right "
            "when both are (the class-incremental score over all classes seen):\n\n"
            + md_table(rows, ["p", *[f"{_label(st)} task untold, mean ± s.e." for st in s.strategies]]))


def _matching(s: StudySettings, res: an.MatchingResult, w: _Writer, cmd: str) -> str:
    table = res.table()
    w.csv("matching", table)
    w.csv("matching_targets", res.targets)
    tasks_rows = []
    for r in res.per_task:
        for j, (m, se) in enumerate(zip(r["task_mean"], r["task_se"]), start=1):
            tasks_rows.append({"p_packnet": r["p_packnet"], "who": r["who"], "p": r["p"], "task": j,
                               "mean": m, "se": se})
    tasks_df = pd.DataFrame(tasks_rows, columns=["p_packnet", "who", "p", "task", "mean", "se"])
    w.csv("matching_tasks", tasks_df)

    rows = []
    for r in res.rows:
        sc, fit = r.scalar, r.fit
        sc_txt = (f"{sc.p_match:.5f} / **{sc.compression:.2f}×**" if sc is not None and sc.in_range
                  else an.match_status(r))
        fit_txt = "–"
        if fit is not None and fit.in_range:
            ci = (f" [{_fmt(fit.compression_ci_low, 2)}, {_fmt(fit.compression_ci_high, 2)}]"
                  if not (math.isnan(fit.compression_ci_low) and math.isnan(fit.compression_ci_high)) else "")
            fit_txt = f"{fit.p_match:.5f} / **{fit.compression:.2f}×**{ci}"
        elif fit is not None:
            fit_txt = "out of grid range"
        agree = "–"
        if r.agreement and r.agreement["both_in_range"]:
            inside = r.agreement["a_in_b_ci"]
            agree = (f"{100 * r.agreement['compression_rel_diff']:.0f}% apart"
                     + ("" if inside is None else ("; inside the CI" if inside else "; outside the CI")))
        paper_txt = f"{r.paper_compression:.2f}×" if r.paper_compression is not None else "–"
        gap_txt = r.accuracy_gap.describe() if r.accuracy_gap is not None else "–"
        rows.append([f"{r.p:g}", _label(r.baseline), _fmt(r.target), gap_txt, sc_txt, fit_txt, agree, paper_txt])
    header = ["PackNet p", "baseline", "PackNet accuracy", "baseline − PackNet at the same p",
              "minimize_scalar: p' / compression", "monotone fit: p' / compression [95% jackknife-t CI]", "agreement",
              "compression (paper)"]
    table_md = md_table(rows, header)
    growth_md = "".join(
        f"- {_label(g.baseline)}: the compression at p = {g.p_high:g} is {g.ratio:.2f} times that at p = {g.p_low:g} "
        + (f"(95% CI [{_fmt(g.ci_low, 2)}, {_fmt(g.ci_high, 2)}], jackknife-t over {g.n_seeds} seeds"
           + (f"; without {g.dropped} of the seeds a match falls off the grid, so the data cannot bound it"
              if g.dropped else "") + ")\n"
           if not (math.isnan(g.ci_low) and math.isnan(g.ci_high)) else "(no interval)\n")
        for g in res.growth)
    trows = [[f"{t.p:g}", _pm(t.mean, t.se), _fmt(t.paper, 3)] for t in res.targets.itertuples()]
    targets_md = md_table(trows, ["PackNet p", "our average performance (mean ± s.e.)",
                                  f"paper (Figure 3, {paper_name(res.paper_key)})"])
    w.md("matching", table_md + "\n" + targets_md)

    figs = []
    if any(r.scalar is not None or r.fit is not None for r in res.rows):
        _matching_plot(s, res, w)
        figs.append("![compression ratios](matching.png)")
    if res.per_task:
        _matching_tasks_plot(s, res, w)
        figs.append("![per-task accuracy at the matched p'](matching_tasks.png)")
    notes = ""
    if res.missing_static:
        notes += (f"\n> **{res.missing_static} runs of the fixed grid are not stored yet**; run `{cmd}` to "
                  "train them.\n")
    if res.pending_searches:
        notes += (f"\n> **{res.pending_searches} minimize_scalar search(es) unfinished**: they need more runs; "
                  f"`{cmd}` resumes them.\n")
    for n in res.notes:
        notes += f"\n> {n}\n"
    unmatched = [f"- {_label(r.baseline)} at PackNet p={r.p:g}: {r.scalar.message}" for r in res.rows
                 if r.scalar is not None and not r.scalar.in_range]
    unmatched += [f"- {_label(r.baseline)} at PackNet p={r.p:g} (monotone fit): {r.fit.message}" for r in res.rows
                  if r.fit is not None and not r.fit.in_range]
    unmatched_md = ("\nNot matched (no number is guessed for these):\n\n" + "\n".join(unmatched) + "\n"
                    if unmatched else "")
    lo, hi = s.matching_compression_bounds
    where = f"where the compression lies in [{lo:g}, {hi:g}]"
    if s.matching_bounds_factor:
        where = (f"where the compression lies within a factor {s.matching_bounds_factor:g} of the monotone fit's "
                 f"estimate (in [{lo:g}, {hi:g}] where the fit has none)")
    return (
        f"For each PackNet p, the target is PackNet's mean average accuracy over seeds {_seeds(s.seeds)}. "
        f"**minimize_scalar** (the paper's way): SciPy's bounded `minimize_scalar` on (target − acc(p'))² over "
        f"log(1 − p'), p' searched {where}, xatol {s.matching_xatol:g}, "
        f"at most {s.matching_maxiter} iterations; each evaluation is a set of runs of the baseline at p' "
        f"(seeds {_seeds(s.seeds)}), stored like every other run. **monotone fit** (the cheap way): the "
        f"baseline's accuracy over the Figure 1 grid, fitted as a non-decreasing function of log(1 − p) and "
        f"inverted at the target; 95% jackknife-t interval over the seeds (each seed left out of PackNet's target "
        f"and the baseline's grid at once, the fit redone; the estimate ± t(n − 1) delete-one standard errors, on "
        f"log(1 − p')), so the interval carries PackNet's uncertainty as well as the baseline's; the coverage "
        f"simulation `benchmarks/interval_coverage.py` chose it over the percentile bootstrap, which covers 71-75% "
        f"at 3 seeds (the jackknife-t 93-97% at 3, 5 and 10). An interval end beyond the grid is not extrapolated (–). "
        f"Compression = (1 − p) / (1 − p'): how many times more weights PackNet needs for the same accuracy. "
        f"**baseline − PackNet at the same p**: the accuracy difference in the Figure 1 runs, {_test_words()}"
        + (f"; the average accuracy moves in steps of {res.step:.3g} (one test image of one task), so a difference "
           f"of d is d / {res.step:.3g} test images. " if res.step > 0 else ". ")
        + f"Paper column: {res.paper_caption}."
        + notes + "\n" + "\n\n".join(figs) + "\n\n" + table_md + unmatched_md
        + ("\nHow the compression changes from the smallest to the largest matched p (monotone fit; the "
           "interval leaves each seed out of PackNet at both p and of the baseline's grid at once):\n\n" + growth_md
           if growth_md else "")
        + "\nPackNet's average performance at the matched p (the targets; Figure 3's captions):\n\n" + targets_md
    )


def _test_words() -> str:
    return (f"tested by seed: a paired t-test where both groups hold the same seeds, Welch's t-test otherwise, "
            f"stated with n and the two-sided p-value; significant means p < {ALPHA:g} with at least {MIN_N} seeds")


def paper_name(key: str) -> str:
    return {"mnist": "Split MNIST", "cifar10": "Split CIFAR-10"}.get(key, key)


def _matching_plot(s: StudySettings, res: an.MatchingResult, w: _Writer) -> None:
    fig, axes = _new_figure(ncols=len(s.baselines), width=5.0, sharey=True)
    xs = np.arange(len(s.matching_ps))
    for ax, b in zip(axes[0], s.baselines):
        rows = [r for r in res.rows if r.baseline == b]
        sc = [r.scalar.compression if r.scalar is not None and r.scalar.in_range else np.nan for r in rows]
        fit = [r.fit.compression if r.fit is not None and r.fit.in_range else np.nan for r in rows]
        lo = [r.fit.compression_ci_low if r.fit is not None else np.nan for r in rows]
        hi = [r.fit.compression_ci_high if r.fit is not None else np.nan for r in rows]
        ax.plot(xs - 0.12, sc, "o", color=_color(b), ms=8, label="ours: minimize_scalar")
        yerr = np.array([[f - l if not math.isnan(l) else 0 for f, l in zip(fit, lo)],
                         [h - f if not math.isnan(h) else 0 for f, h in zip(fit, hi)]])
        yerr = np.nan_to_num(yerr)
        ax.errorbar(xs + 0.12, fit, yerr=yerr, fmt="s", mfc="white", color=_color(b), ms=7, capsize=3,
                    label="ours: monotone fit (95% CI)")
        pap = [r.paper_compression if r.paper_compression is not None else np.nan for r in rows]
        if not all(math.isnan(v) for v in pap):
            ax.plot(xs, pap, "x", color="black", ms=9, mew=2, label=f"paper ({paper_name(res.paper_key)})")
        ax.axhline(1.0, color="grey", lw=1, ls="--")
        ax.set_xticks(xs)
        ax.set_xticklabels([f"{p:g}" for p in s.matching_ps])
        ax.set_xlabel("PackNet final free fraction p")
        ax.set_title(f"{_label(b)} vs PackNet")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # a baseline without matches has nothing to label
            ax.legend(fontsize=8)
    axes[0, 0].set_ylabel("compression (1 - p) / (1 - p')  [>1: PackNet wastes weights]")
    fig.suptitle(f"{s.benchmark}: weights PackNet needs relative to the baselines at equal accuracy")
    w.figure("matching", fig)


def _matching_tasks_plot(s: StudySettings, res: an.MatchingResult, w: _Writer) -> None:
    ps = s.matching_ps
    fig, axes = _new_figure(ncols=len(ps), width=4.2, height=3.8)
    for ax, p in zip(axes[0], ps):
        entries = [r for r in res.per_task if r["p_packnet"] == p and r["task_mean"]]
        n_tasks = max((len(r["task_mean"]) for r in entries), default=0)
        width = 0.8 / max(1, len(entries))
        lows = []
        for k, r in enumerate(entries):
            x = np.arange(n_tasks) + (k - (len(entries) - 1) / 2) * width
            label = f"{_label(r['who'])} p={r['p']:.4g}"
            ax.bar(x, r["task_mean"], width, yerr=_err(r["task_se"]), capsize=2, color=_color(r["who"]),
                   label=label)
            lows.append(min(r["task_mean"]))
        if lows:
            ax.set_ylim(max(0.0, min(lows) - 0.05), 1.0)
        ax.set_xticks(np.arange(n_tasks))
        ax.set_xticklabels([f"task {j + 1}" for j in range(n_tasks)])
        pn = next((r["mean"] for r in entries if r["who"] == "packnet"), math.nan)
        pap = paper.FIGURE3_AVERAGE_PERFORMANCE.get(res.paper_key, {}).get(p)
        ax.set_title(f"PackNet p={p:g}: ave. perf. {pn:.3f}" + (f" (paper {pap:.3f})" if pap else ""), fontsize=9)
        ax.set_ylabel("final test accuracy")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=min(len(entries), 3) or 1,
                  frameon=False)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(f"{s.benchmark}: per-task accuracy of PackNet and of the baselines at the p' matching it "
                 f"(minimize_scalar)")
    w.figure("matching_tasks", fig)


def _panels_by_p(t: pd.DataFrame, wanted: Sequence[float]):
    """One panel for each p of ``wanted`` that table ``t`` holds: the figure and its (axes, p) pairs."""
    ps = [p for p in wanted if p in set(t["p"])]
    fig, axes = _new_figure(ncols=len(ps), width=4.0, height=3.6) if len(ps) > 1 else _new_figure()
    return fig, list(zip(axes[0], ps))


def _held_out(r: Any) -> str:
    return Comparison(r.gap, r.gap_se, int(r.n), r.pvalue, r.test).describe()


def _budget(s: StudySettings, res: an.BudgetResult, w: _Writer, cmd: str) -> str:
    t = res.table
    w.csv("budget", t)
    w.csv("budget_best", res.best)
    rows = [[f"{r.p:g}", str(r.N), str(r.R), _pm(r.mean, r.se), str(r.n), "**best**" if r.best else ""]
            for r in t.itertuples()]
    table_md = md_table(rows, ["p", "N", "R = B/N", "accuracy mean ± s.e.", "seeds", ""])
    n_lo, n_hi = min(s.budget_rounds), max(s.budget_rounds)
    brows = [[f"{r.p:g}", f"{r.best_N} ({r.best_mean:.4f})", f"{r.worst_N} ({r.worst_mean:.4f})",
              f"{r.held_best:.4f} vs {r.held_worst:.4f}", _held_out(r), f"×{r.error_ratio:.2f}",
              f"{r.vs_one_diff:+.4f} (p = {_pval(r.vs_one_pvalue)})", f"{r.vs_most_diff:+.4f} (p = {_pval(r.vs_most_pvalue)})",
              r.tied or "none"]
             for r in res.best.itertuples()]
    sel, tested = _seeds(res.selection.choose), _seeds(res.selection.test)
    best_md = md_table(brows, ["p", f"best N: chosen on seeds {sel}; mean of all seeds", "worst N: mean of all seeds",
                               f"best vs worst on seeds {tested}", "best − worst (tested)", "error worst/best (tested)",
                               f"best − N={n_lo} (tested)", f"best − N={n_hi} (tested)",
                               "N not significantly below the best (tested)"])
    w.md("budget", table_md + "\n" + best_md)
    if not t.empty:
        fig, panels = _panels_by_p(t, s.budget_ps)
        for ax, p in panels:
            g = t[t.p == p].sort_values("N")
            ax.errorbar(g["N"], g["mean"], yerr=_err(g["se"]), marker="o", capsize=3, color=COLORS["packnet"])
            b = g[g["best"]]
            if not b.empty:
                ax.plot(b["N"], b["mean"], "*", ms=16, color="gold", mec="black",
                        label=f"best N on seeds {sel}: {int(b['N'].iloc[0])}")
            _accuracy_by_rounds_panel(ax, p, g["N"], 8)
        fig.suptitle(f"{s.benchmark}: PackNet with N rounds in a fixed budget B = {s.retrain_epochs} epochs "
                     f"(mean ± s.e., {len(s.budget_seeds)} seeds)")
        w.figure("budget", fig)
    return (f"PackNet with a night of B = {s.retrain_epochs} retraining epochs per task split into N rounds of "
            f"R = B/N epochs, N over the divisors of B; seeds {_seeds(s.budget_seeds)}. **Best N** (and worst) is "
            f"{res.selection.describe()}, so that the luck that picks an N does not also confirm it; the star marks "
            f"it. Differences are {_test_words()}. The last column lists the N whose tested accuracy is not "
            f"significantly below the chosen one: where it is long, \"the best N\" is one of several near-ties." + _missing_note(res.loaded, cmd)
            + ("\n![fixed budget](budget.png)\n\n" if not t.empty else "\n") + best_md + "\n" + table_md)


def _pval(p: float) -> str:
    return "–" if p is None or math.isnan(p) else (f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}")


def _nobudget(s: StudySettings, res: an.NoBudgetResult, w: _Writer, cmd: str,
              budget: an.BudgetResult | None = None) -> str:
    t = res.table
    w.csv("nobudget", t)
    w.csv("nobudget_trend", res.trend)
    rows = [[f"{r.p:g}", str(r.N), str(r.R), str(r.B), _pm(r.mean, r.se), str(r.n)] for r in t.itertuples()]
    table_md = md_table(rows, ["p", "N", "R", "B = R·N (cost)", "accuracy mean ± s.e.", "seeds"])
    trows = [[f"{r.p:g}", f"{r.first_mean:.4f}", f"{r.last_mean:.4f} (N={r.last_N})",
              Comparison(r.gain, r.gain_se, int(r.n), r.pvalue, r.test).describe(), f"{r.spearman:+.2f}",
              str(r.best_N)] for r in res.trend.itertuples()]
    trend_md = md_table(trows, ["p", "N=1", "largest N", "gain (largest N − N=1, by seed)", "Spearman(N, accuracy)",
                                "highest mean at N (descriptive)"])
    w.md("nobudget", table_md + "\n" + trend_md)
    if not t.empty:
        fig, panels = _panels_by_p(t, s.nobudget_ps)
        for ax, p in panels:
            g = t[t.p == p].sort_values("N")
            ax.errorbar(g["N"], g["mean"], yerr=_err(g["se"]), marker="o", capsize=3, color=COLORS["packnet"],
                        label=f"no budget: R = {s.nobudget_round_epochs}, B = R·N")
            ns = list(g["N"])
            if budget is not None and not budget.table.empty:
                fixed = budget.table[(budget.table.p == p) & budget.table.N.isin(ns)].sort_values("N")
                if len(fixed) > 1:
                    ax.errorbar(fixed["N"], fixed["mean"], yerr=_err(fixed["se"]), marker="s", ms=4, capsize=3,
                                color="grey", ls="--", label=f"fixed budget B = {s.retrain_epochs} (Figure 2)")
            _accuracy_by_rounds_panel(ax, p, g["N"], 7, "pruning rounds per night N")
        fig.suptitle(f"{s.benchmark}: PackNet without a budget: every round retrains R = "
                     f"{s.nobudget_round_epochs} epochs (mean ± s.e., {len(s.seeds)} seeds)")
        w.figure("nobudget", fig)
    one_shot = " (the whole one-shot night of the budget experiment)" if s.nobudget_round_epochs == s.retrain_epochs else ""
    return (f"Every round retrains R = {s.nobudget_round_epochs} epochs{one_shot}, so the night costs "
            f"B = R·N epochs and grows with N; seeds {_seeds(s.seeds)}. The gain is {_test_words()}."
            + _missing_note(res.loaded, cmd)
            + ("\n![no budget](nobudget.png)\n\n" if not t.empty else "\n") + trend_md + "\n" + table_md)


def _schedules(s: StudySettings, res: an.SchedulesResult, w: _Writer, cmd: str) -> str:
    t = res.table
    if not t.empty:
        order = {sch: i for i, sch in enumerate(s.schedules)}
        t = t.sort_values(["p", "schedule", "N"], key=lambda c: c.map(order) if c.name == "schedule" else c)
    w.csv("schedules", t)
    w.csv("schedules_best", res.compare)
    rows = [[f"{r.p:g}", r.schedule, str(r.N), _pm(r.mean, r.se), str(r.n)] for r in t.itertuples()]
    table_md = md_table(rows, ["p", "schedule", "N", "accuracy mean ± s.e.", "seeds"])
    crows = [[f"{r.p:g}", r.schedule, str(r.best_N), _pm(r.best_mean, r.best_se),
              f"N={r.budget_best_N} ({r.budget_best_mean:.4f})" if r.budget_best_N is not None else "–",
              Comparison(r.diff_vs_budget_best, r.diff_se, int(r.n), r.pvalue, r.test).describe(),
              "yes" if r.significant else "no"]
             for r in res.compare.itertuples()]
    cmp_md = md_table(crows, ["p", "schedule", "its best N", "accuracy (all seeds)", "best uniform N of Figure 2",
                              "difference on the tested seeds", "significant"])
    w.md("schedules", table_md + "\n" + cmp_md)
    if not t.empty:
        fig, panels = _panels_by_p(t, s.schedules_ps)
        for ax, p in panels:
            for k, sch in enumerate(s.schedules):
                g = t[(t.p == p) & ((t.schedule == sch) | (t.N == 1))].sort_values("N")
                if g.empty:
                    continue
                ax.errorbar(g["N"] * (1 + 0.03 * (k - 1)), g["mean"], yerr=_err(g["se"]), marker="o", capsize=3,
                            color=COLORS[sch], label=sch)
            ref = res.compare[(res.compare.p == p)]
            if not ref.empty and ref["budget_best_N"].iloc[0] is not None:
                ax.axhline(ref["budget_best_mean"].iloc[0], color="black", ls=":", lw=1,
                           label=f"best fixed N of Figure 2 (N={int(ref['budget_best_N'].iloc[0])})")
            _accuracy_by_rounds_panel(ax, p, t[t.p == p]["N"], 7)
        fig.suptitle(f"{s.benchmark}: sleep schedules at B = {s.retrain_epochs} (mean ± s.e., "
                     f"{len(s.budget_seeds)} seeds)")
        w.figure("schedules", fig)
    return ("The same budget B split differently: `uniform` (the paper's: equal rounds, equal pruning), "
            "`lengthening` (rounds of 1 : 2 : … : N epochs, like REM periods through the night) and `cubic` "
            "(Zhu & Gupta: prune most early). At N = 1 all coincide. Each schedule's best N and the budget "
            f"experiment's best uniform N at the same p are {an.schedules_selection(s).describe()}; differences "
            f"{_test_words()}."
            + _missing_note(res.loaded, cmd)
            + ("\n![schedules](schedules.png)\n\n" if not t.empty else "\n") + cmp_md + "\n" + table_md)


# --------------------------------------------------------------------------------------------- the page


def _seeds(seeds: Sequence[int]) -> str:
    seeds = list(seeds)
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}–{seeds[-1]} ({len(seeds)})"
    return ", ".join(str(x) for x in seeds) + f" ({len(seeds)})"


def _machine(records: Sequence[dict[str, Any]]) -> tuple[str, float, str]:
    envs: Counter = Counter()
    seconds, created = 0.0, []
    for r in records:
        e = r.get("environment") or {}
        dev = e.get("device", "?") + (f" ({e['device_name']})" if e.get("device_name") else "")
        envs[(e.get("platform", "?"), e.get("machine", "?"), dev, e.get("threads"), e.get("torch"),
              e.get("python"), e.get("sleepcl"))] += 1
        t = r.get("timings") or {}
        seconds += (t.get("total") or 0.0) / (t.get("population_size") or 1)
        if r.get("created"):
            created.append(r["created"])
    lines = [f"{n} runs on {plat} ({mach}), device {dev}, {thr} torch threads, torch {torch}, Python {py}, "
             f"sleepcl {ver}" for (plat, mach, dev, thr, torch, py, ver), n in envs.most_common()]
    span = f"{min(created)} to {max(created)}" if created else "–"
    return "; ".join(lines) or "no runs", seconds, span


def _trained_note(trained: int | None, used: int) -> str:
    if trained is None:
        return ""
    if trained == 0:
        return " and trained none of them (all were already in the store)"
    if trained >= used:
        return f" and trained all {trained}"
    return f" and trained {trained} of them (the rest were already in the store)"


def _runs_used(s: StudySettings, names: Sequence[str], analyses: dict[str, Any],
               lookup: RecordLookup) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
    """Every stored run the report's numbers use (by hash), and the experiments each belongs to."""
    used: dict[str, dict[str, Any]] = {}
    experiments: dict[str, list[str]] = {}

    def add(records: Sequence[dict[str, Any]], name: str) -> None:
        for r in records:
            used[r["config_hash"]] = r
            if name not in experiments.setdefault(r["config_hash"], []):
                experiments[r["config_hash"]].append(name)

    # the no-budget and schedules figures draw Figure 2's runs beside their own
    wanted = list(names) + (["budget"] if {"schedules", "nobudget"} & set(names) and "budget" not in names else [])
    for name in wanted:
        add(lookup.records(experiment_configs(name, s))[0], name)
    if "matching" in analyses:
        for row in analyses["matching"].rows:
            for q, _ in row.search.evaluations:
                add(lookup.records(matching_point_configs(s, row.baseline, q))[0], "matching")
    return used, experiments


def protocol_differences(s: StudySettings, step: float = math.nan) -> list[str]:
    """How the preset's runs differ from the paper's protocol for its network (empty: the paper's): the data, the
    subset and test-set sizes (and the accuracy step they give: ``step``, read off the runs), widths,
    hyperparameters, the length of a retraining round, the seeds, and how the VGG's 'fc8192' is read."""
    d = PAPER_DEFAULTS[s.network]
    out = []
    data = paper.DATA_DIFFERENCES.get(s.benchmark, {}).get(s.network)
    if data:
        out.append(data)
    sizes = _task_sizes(s)
    if sizes:
        out.append(f"per task {sizes[0]} training, {sizes[1]} validation and {sizes[2]} test images"
                   + (f" ({s.train_size} training and {s.test_size} test samples drawn per task, stratified)"
                      if s.train_size or s.test_size else ""))
    elif s.train_size or s.test_size:
        out.append(f"{s.train_size or 'all'} training and {s.test_size or 'all'} test samples per task, a stratified "
                   "subsample")
    if step > 0:
        out.append(f"so the average accuracy moves in steps of {step:.3g} (one test image of one task)")
    if s.widths:
        out.append(f"widths {'x'.join(str(w) for w in s.widths)} instead of the paper's")
    for what, mine, theirs in (("E", s.epochs, d["epochs"]), ("B", s.retrain_epochs, d["retrain_epochs"]),
                               ("batch", s.batch_size, d["batch_size"]), ("Adam lr", s.lr, d["lr"])):
        if mine != theirs:
            out.append(f"{what} = {mine:g} instead of Table 2's {theirs:g}")
    if sizes and s.budget_rounds:
        n = max(s.budget_rounds)
        steps = math.ceil(sizes[0] / s.batch_size) * (s.retrain_epochs // n)
        out.append(f"at the largest N ({n}) a retraining round is {s.retrain_epochs // n} epoch(s) = {steps} Adam steps")
    if s.network == "vgg":
        out.append(paper.FC8192_READING)
    if len(s.seeds) < 5 or len(s.budget_seeds) < 10:
        out.append(f"{len(s.seeds)} and {len(s.budget_seeds)} seeds instead of the paper's 5 and 10")
    return out


def _task_sizes(s: StudySettings) -> tuple[int, int, int] | None:
    """(train, val, test) images of the first task as the runs saw them, or None where the data are not here."""
    from ..data.split import load_split_benchmark

    try:
        b = load_split_benchmark(s.benchmark, n_tasks=s.n_tasks, train_size=s.train_size, test_size=s.test_size)
    except Exception:  # noqa: BLE001 -- data absent here: the box then leaves the sizes out
        return None
    return len(b.train[0]), len(b.val[0]), len(b.test[0])


def cli_flags(s: StudySettings) -> str:
    """The ``sleepcl study``/``report`` options that select the settings ``s``: preset and benchmark, and
    ``--model``, ``--baselines`` and ``--seeds`` where ``s`` differs from the preset's (:func:`reachable` says
    whether they give exactly ``s``)."""
    out = f"--preset {s.preset} --benchmark {s.benchmark}"
    base = settings(s.preset, s.benchmark)
    if s.network != base.network:
        out += f" --model {s.network}"
    if s.baselines != base.baselines:
        out += f" --baselines {','.join(s.baselines)}"
    if (s.seeds, s.budget_seeds) != (base.seeds, base.budget_seeds):
        out += " --seeds " + ",".join(str(x) for x in s.seeds)
    return out


def reachable(s: StudySettings) -> bool:
    """Whether :func:`cli_flags` name exactly ``s`` (not so for settings changed in Python, e.g. other seeds for
    Figure 2 than for the rest)."""
    base = settings(s.preset, s.benchmark)
    try:
        again = settings(s.preset, s.benchmark, network=None if s.network == base.network else s.network,
                         baselines=None if s.baselines == base.baselines else s.baselines,
                         seeds=None if (s.seeds, s.budget_seeds) == (base.seeds, base.budget_seeds) else s.seeds)
    except ValueError:
        return False
    return again == s


def reproduce_command(s: StudySettings, names: Sequence[str], out: Path) -> str:
    """Import the report's ``runs.jsonl.gz`` into a fresh store and write the report from it (nothing trains)."""
    folder = _display_path(out)
    return (f"sleepcl results --import {folder}/runs.jsonl.gz --store runs.sqlite && sleepcl report "
            f"{' '.join(names)} {cli_flags(s)} --store runs.sqlite --out {folder}")


def _display_path(out: Path) -> str:
    """``out`` relative to the working directory where it lies below it (as a report's commands name it)."""
    try:
        return Path(out).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return Path(out).as_posix()


def write_report(s: StudySettings, store: RunStore | None, out_dir: str | Path | None = None, *,
                 names: str | Sequence[str] = "all", command: str | None = None,
                 wall_seconds: float | None = None, trained: int | None = None) -> ReportResult:
    """Write plots, tables and ``report.md`` for experiments ``names`` of preset ``s`` from ``store``.

    ``command`` is the command line to print at the top; ``wall_seconds`` and ``trained`` (how long the
    command that wrote the report ran and how many runs it trained) are stated when given.
    """
    names = expand_names(names)
    out = Path(out_dir) if out_dir is not None else default_out_dir(s.benchmark, s.preset, s.network)
    out.mkdir(parents=True, exist_ok=True)
    w = _Writer(out)
    lookup = RecordLookup(store)
    flags = cli_flags(s)
    resume = f"sleepcl study {{name}} {flags}"
    command = command or f"sleepcl report {' '.join(names) if len(names) < 5 else 'all'} {flags}"

    analyses: dict[str, Any] = {}
    sections: list[tuple[str, str]] = []
    if "pruning" in names or "matching" in names:
        analyses["pruning"] = an.analyse_pruning(s, lookup)
    if "matching" in names:
        analyses["matching"] = an.analyse_matching(s, lookup)
    if "budget" in names or "schedules" in names:
        analyses["budget"] = an.analyse_budget(s, lookup)
    if "nobudget" in names:
        analyses["nobudget"] = an.analyse_nobudget(s, lookup)
    if "schedules" in names:
        analyses["schedules"] = an.analyse_schedules(s, lookup, analyses["budget"])
    writers = {"pruning": _pruning, "matching": _matching, "budget": _budget, "nobudget": _nobudget,
               "schedules": _schedules}
    if "nobudget" in names and "budget" not in analyses:
        analyses["budget"] = an.analyse_budget(s, lookup)
    for name in names:
        extra = {"budget": analyses["budget"]} if name == "nobudget" else {}
        sections.append((name, writers[name](s, analyses[name], w, resume.format(name=name), **extra)))

    claims = cl.check_claims(
        s, matching=analyses.get("matching"), pruning=analyses.get("pruning"),
        budget=analyses.get("budget") if "budget" in names else None, nobudget=analyses.get("nobudget"),
        step=analyses["matching"].step if "matching" in analyses else math.nan)
    relevant = {"a": "matching", "b": "matching", "c": "budget", "d": "nobudget"}
    claims = [c for c in claims if relevant[c.key] in names]
    claims_df = pd.DataFrame([{"claim": c.key, "statement": c.statement, "scope": c.scope, "verdict": c.verdict,
                               "untested": c.untested, "power": c.power, "evidence": c.evidence} for c in claims],
                             columns=["claim", "statement", "scope", "verdict", "untested", "power", "evidence"])
    if claims:
        w.csv("claims", claims_df)

    used, experiments = _runs_used(s, names, analyses, lookup)
    runs = an.runs_table(list(used.values()), experiments)
    runs.to_csv(out / "runs.csv", index=False)  # full precision: recomputed means round as the report's
    w.files.append(out / "runs.csv")
    # the full records too, so that a later session imports them and resumes the study instead of retraining
    write_records(out / "runs.jsonl.gz", [used[h] for h in sorted(used)])
    w.files.append(out / "runs.jsonl.gz")
    machine, seconds, span = _machine(list(used.values()))

    lines = [f"# The study on {s.benchmark}, `{s.preset}` preset",
             "",
             f"- **Command:** `{command}`",
             f"- **Reproduce:** `{reproduce_command(s, names, out)}` (imports this report's runs into a fresh store "
             f"and writes this report from them; `report` trains nothing)"
             + ("" if reachable(s) else "; **these settings were changed in Python and differ from what these "
                "options give**"),
             f"- **Resume or extend:** `{resume.format(name=' '.join(names))}` (the same settings: trains only "
             f"the runs the store lacks, then writes the report)",
             f"- **Benchmark:** {s.benchmark}, {s.n_tasks} binary tasks of class pairs (0,1), (2,3), …; "
             f"network and hyperparameters: {s.describe()}",
             f"- **Preset:** `{s.preset}`; seeds {_seeds(s.seeds)} (Figures 1, 3, 4 and Table 1), "
             f"{_seeds(s.budget_seeds)} (Figure 2 and schedules)",
             f"- **Machine (from the runs' records):** {machine}",
             f"- **Runs used:** {len(used)} stored runs, created {span}; their training took "
             f"{seconds / 60:.1f} min of population time in all"
             + (f"; this command ran for {wall_seconds / 60:.1f} min" if wall_seconds is not None else "")
             + _trained_note(trained, len(used)),
             f"- **Written:** {datetime.now(timezone.utc).isoformat(timespec='seconds')}. Every number below is "
             f"computed from those runs; numbers labelled *paper* are the paper's own (constants in "
             f"`sleepcl/study/paper.py`).",
             ""]
    differences = protocol_differences(s, an.accuracy_step(an.records_frame(list(used.values()))))
    if differences:
        lines += [f"> **Not the paper's protocol.** The `{s.preset}` preset differs from the paper's "
                  f"({', '.join(differences)}), so expect the same *shapes* at most, with larger error bars; "
                  "numbers labelled *paper* are for scale.", ""]
    if claims:
        lines += ["## The paper's claims, checked against these runs", "",
                  f"A verdict covers only the network and data of this report ({cl.scope_of(s)}); the paper's other "
                  f"networks are named untested. Each claim rests on a family of tests (one per baseline and p, or "
                  f"per p; {_test_words()}), corrected together by Holm's method. Each test is *for* the claim "
                  f"(significant in the paper's direction), *against* it (significant the other way) or neither; "
                  f"the verdict is **supported** (all for), **partly supported** (some for, none against), "
                  f"**opposite** (some against, none for), **mixed** (some of each) or **inconclusive** (none "
                  f"significant: then the smallest effects the tests would have found with 80% power are given, "
                  f"since not shown is not opposite).", ""]
        lines.append(md_table([[f"({c.key})", c.statement, f"**{c.verdict}** for the {c.scope}"
                                + (f"; {c.untested}" if c.untested else "")
                                + (f" ({c.power})" if c.power else ""), c.evidence] for c in claims],
                              ["", "claim (paper)", "our data", "evidence (computed from the stored runs)"]))
        if "matching" in analyses:
            key = analyses["matching"].paper_key
            lines += [f"For comparison, the paper's own Table 1 ({paper_name(key)}), its last p against its first: "
                      f"{cl.paper_table1_trend(key)}.", ""]
        if "budget" in names:
            key = paper.PAPER_BENCHMARKS.get(s.network, "mnist")
            lines += [f"The paper on Figure 2 ({paper_name(key)}): {paper.FIGURE2_TEXT[key]}.", ""]
    for i, (name, body) in enumerate(sections, start=1):
        label = paper.figure_label(name, s.network, s.benchmark, s.widths)
        lines += [f"## {i}. {TITLES[name]}", "", f"*{label[0].upper() + label[1:]}.*", "", body.strip(), "",
                  f"Files: `{name}*.csv`, `{name}*.md`" + (f", `{name}.png`, `{name}.svg`"
                                                            if (out / f"{name}.png").exists() else ""), ""]
    lines += ["## Per-run data", "",
              f"`runs.csv`: one row for each of the {len(runs)} runs above: its config hash, the experiments that "
              "use it, every config field that varies among them, the final test accuracy of each task "
              "(`acc_task_j`, the last row of the accuracy matrix), their average, and the free fraction after "
              "each task. Every number in this report can be recomputed from it, e.g. with pandas: "
              "`df.groupby(['strategy', 'final_free', 'rounds'])['average_accuracy'].agg(['mean', 'sem', 'count'])`.",
              "",
              "`runs.jsonl.gz`: the same runs' full records (config, environment, accuracy matrices, timings). "
              f"`sleepcl results --import {(out / 'runs.jsonl.gz').as_posix()} --store FILE` adds them to a results "
              "store; the command above, run on that store, then trains only what is missing (nothing, for this report) "
              "and rewrites this page.", ""]
    page = out / "report.md"
    atomic_write_bytes(page, ("\n".join(lines).rstrip() + "\n").encode(), fsync=False)
    w.files.append(page)
    return ReportResult(out, page, w.files, claims, analyses)
