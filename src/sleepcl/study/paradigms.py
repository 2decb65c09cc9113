"""The study the paper left open: do sleep cycles help the other paradigms of continual learning too?

The paper studies cyclical pruning (a night of N prune-then-retrain rounds in a fixed budget B) on PackNet only.
Here every paradigm takes the same nights, to the same capacity schedule (``r**t`` of the weights free after task
t, ``p`` after the last) and the same equal-time budget (E training and B retraining epochs a task):

=========================  ===================================================================================
freezing                   PackNet: the night frees part of the task's weights and freezes the rest
full replay (idealised)    Memory: every earlier sample rehearsed; the night re-selects all weights
bounded replay             ER: a reservoir of a fixed number of samples (:mod:`sleepcl.strategies.er`)
regularisation             EWC (Fisher) and SI (path integral): a penalty holds important weights in place
distillation               LwF: old heads' outputs held near the model's before the task
no protection              fine-tuning
=========================  ===================================================================================

Each paradigm runs at every ``p`` of a grid with ``N = 1`` and with more rounds in the same budget; the ones that
take no night by default also run without one (the whole network, no pruning: where pruning's cost shows). The
report answers, per paradigm and scoped to the runs it read:

* **does the night help** (more rounds against one, paired by seed at each p: the paper's Figure 2 question);
* **how many more weights than Memory** it needs to reach Memory's accuracy at p: the p' where its accuracy,
  fitted as a non-decreasing function of log(1 - p) over the grid (:func:`sleepcl.study.matching.match_by_monotone_fit`),
  equals Memory's at p; ``(1 - p') / (1 - p)`` is the ratio (below 1: fewer weights than Memory). A paradigm that
  stays below Memory's accuracy over the whole grid is reported as not matched, with the bound the grid gives.

Runs live in the results store like any other, so an interrupted study resumes; the report is written from the
store alone (``runs.csv``, ``runs.jsonl.gz``, ``report.md``, one figure).
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from ..config import RunConfig
from ..runs.records import write_records
from ..runs.runner import run_configs
from ..runs.store import RunStore
from .analysis import mean_se, records_frame
from .matching import MatchResult, match_by_monotone_fit
from .report import md_table
from .run import RecordLookup
from .stats import ALPHA, Comparison, compare_by_seed

__all__ = ["PARADIGMS", "PRESETS", "ParadigmSettings", "analyse", "paradigm_configs", "paradigm_settings",
           "run_paradigms", "write_paradigms_report"]

# strategy: (paradigm, label)
PARADIGMS: dict[str, tuple[str, str]] = {
    "packnet": ("freezing", "PackNet"),
    "memory": ("full replay (idealised)", "Memory"),
    "er": ("bounded replay", "ER"),
    "ewc": ("regularisation", "EWC"),
    "si": ("regularisation", "SI"),
    "lwf": ("distillation", "LwF"),
    "finetune": ("no protection", "fine-tuning"),
}
REFERENCE = "memory"  # the paradigm the others are matched against
CONFIDENCE = 0.95


@dataclass(frozen=True)
class ParadigmSettings:
    """One preset of the paradigms study: everything its run configs and analysis need."""

    preset: str
    benchmark: str
    strategies: tuple[str, ...]
    grid: tuple[float, ...]          # final free fractions p
    rounds: tuple[int, ...]          # N, each dividing B (the same budget)
    seeds: tuple[int, ...]
    epochs: int                      # E
    retrain_epochs: int              # B
    batch_size: int | None = None    # None: the paper's (128)
    widths: tuple[int, ...] | None = None  # None: the paper's MLP, 784-256-256
    er_buffer: int = 200
    n_bootstrap: int = 1000

    def __post_init__(self) -> None:
        bad = [n for n in self.rounds if self.retrain_epochs % n]
        if bad:
            raise ValueError(f"rounds {bad} do not divide B = {self.retrain_epochs} (the same budget for every N)")
        if 1 not in self.rounds or len(self.rounds) < 2:
            raise ValueError("the paradigms study compares N = 1 with more rounds: give 1 and at least one other N")
        unknown = [s for s in self.strategies if s not in PARADIGMS]
        if unknown or REFERENCE not in self.strategies:
            raise ValueError(f"strategies must be among {', '.join(PARADIGMS)} and include {REFERENCE}")

    def describe(self) -> str:
        arch = "x".join(map(str, self.widths)) if self.widths else "784-256-256 (the paper's)"
        return (f"MLP {arch}, E = {self.epochs}, B = {self.retrain_epochs}, N in {', '.join(map(str, self.rounds))} "
                f"(uniform rounds in the same B), batch {self.batch_size or 128}, Adam lr 1e-3; p in "
                f"{', '.join(f'{p:g}' for p in self.grid)}; ER buffer {self.er_buffer} samples; seeds "
                f"{', '.join(map(str, self.seeds))}")

    def with_seeds(self, seeds: Sequence[int] | None) -> "ParadigmSettings":
        return dataclasses.replace(self, seeds=tuple(seeds)) if seeds else self


PRESETS: dict[str, ParadigmSettings] = {
    # Sized to this project's 2-core CPU shared with other jobs: its 305 runs trained in 14.3 min with --threads 1
    # beside five other sessions (load average ~6): seeds 0-2 in 6.9 min, then seeds 3-4 in 7.4 min.
    "quick": ParadigmSettings(
        preset="quick", benchmark="mnist-5k", strategies=tuple(PARADIGMS), grid=(0.5, 0.9, 0.95, 0.99),
        rounds=(1, 4), seeds=(0, 1, 2, 3, 4), epochs=4, retrain_epochs=8),
    # The paper's Table 2 for the MLP (E = B = 72) and its seed count for Figure 1; N = 8 as its budget experiment's
    # many rounds (72 % 8 == 0). Not run on this project's CPU (about 60 times the quick preset's steps).
    "paper": ParadigmSettings(
        preset="paper", benchmark="mnist-5k", strategies=tuple(PARADIGMS), grid=(0.5, 0.9, 0.95, 0.99, 0.995),
        rounds=(1, 8), seeds=(0, 1, 2, 3, 4), epochs=72, retrain_epochs=72),
    "tiny": ParadigmSettings(
        preset="tiny", benchmark="mnist-5k", strategies=("packnet", "memory", "er", "lwf"), grid=(0.5, 0.9),
        rounds=(1, 2), seeds=(0, 1), epochs=1, retrain_epochs=2, batch_size=512, widths=(8, 8), er_buffer=20,
        n_bootstrap=50),
}


# Fashion-MNIST's tasks are ~12 times mnist-5k's (~10,800 training images, 85 steps a task-epoch): the quick
# preset keeps its grid and seeds but takes E = 1, B = 4 there (N = 4 still divides B), as the main study's quick
# preset does on the large datasets.
LARGE_QUICK = {"epochs": 1, "retrain_epochs": 4}
BENCHMARKS = ("mnist-5k", "fashion-mnist")


def paradigm_settings(preset: str, benchmark: str = "mnist-5k") -> ParadigmSettings:
    """The preset's settings on ``benchmark`` (quick: mnist-5k or fashion-mnist; paper and tiny: mnist-5k)."""
    try:
        s = PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown preset {preset!r} for the paradigms study; choose one of {', '.join(PRESETS)}") \
            from None
    if benchmark == s.benchmark:
        return s
    if preset != "quick" or benchmark not in BENCHMARKS:
        raise ValueError(f"the paradigms study's {preset!r} preset runs on {s.benchmark}"
                         + (f"; the quick preset also on {', '.join(b for b in BENCHMARKS if b != s.benchmark)}"
                            if preset == "quick" else "") + f", not {benchmark!r}")
    return dataclasses.replace(s, benchmark=benchmark, **LARGE_QUICK)


def _config(s: ParadigmSettings, strategy: str, night: str, p: float, n: int, seed: int) -> RunConfig:
    options = {"buffer": s.er_buffer} if strategy == "er" else {}
    return RunConfig(benchmark=s.benchmark, strategy=strategy, night=night, final_free=p, rounds=n, epochs=s.epochs,
                     retrain_epochs=s.retrain_epochs, seed=seed, batch_size=s.batch_size, widths=s.widths,
                     strategy_options=options)


def paradigm_configs(s: ParadigmSettings, strategy: str | None = None) -> list[RunConfig]:
    """Every run of the study (or of one strategy): with a night at every (p, N), and without one where the
    strategy has none by default (p and N then change nothing: one run per seed, at the defaults)."""
    from ..strategies import STRATEGIES

    out = []
    for st in s.strategies:
        if strategy not in (None, st):
            continue
        out += [_config(s, st, "rounds", p, n, seed) for p in s.grid for n in s.rounds for seed in s.seeds]
        if not STRATEGIES[st].prunes:
            out += [_config(s, st, "none", 0.9, 1, seed) for seed in s.seeds]
    return out


def run_paradigms(s: ParadigmSettings, *, store: RunStore | None, log: Callable[[str], None] | None = None,
                  run: Callable[..., list[dict[str, Any]]] = run_configs, **run_kwargs: Any) -> int:
    """Train every run ``s`` needs that ``store`` lacks, one group per strategy; return how many trained."""
    say = log or (lambda msg: None)
    lookup = RecordLookup(store)
    trained = 0
    for st in s.strategies:
        group = paradigm_configs(s, st)
        _, todo = lookup.records(group)
        if todo:
            say(f"{st}: {len(todo)} of {len(group)} runs to train")
            lookup.add(run(todo, store=store, **run_kwargs))
            trained += len(todo)
    return trained


# --------------------------------------------------------------------------------------------- analysis


@dataclass
class Match:
    """``strategy`` (N rounds) against Memory at p (same N): the p' where it reaches Memory's accuracy."""

    strategy: str
    n: int
    p: float
    target: float
    result: MatchResult

    @property
    def ratio(self) -> float:
        """How many times Memory's weights the strategy needs: ``(1 - p') / (1 - p)``."""
        return (1 - self.result.p_match) / (1 - self.p) if self.result.in_range else math.nan

    def interval(self) -> tuple[float, float]:
        r = self.result
        return ((1 - r.ci_high) / (1 - self.p) if math.isfinite(r.ci_high) else math.nan,
                (1 - r.ci_low) / (1 - self.p) if math.isfinite(r.ci_low) else math.nan)


@dataclass
class ParadigmAnalysis:
    frame: pd.DataFrame                       # one row per run: strategy, night, p, N, seed, accuracy, ...
    records: list[dict[str, Any]]
    total: int
    missing: int
    nights: dict[tuple[str, float], Comparison]   # (strategy, p): N = max against N = 1
    pruning: dict[tuple[str, float], Comparison]  # (strategy, p): N = max with a night against no night
    matches: list[Match]


def _frame(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    df = records_frame(records)
    from ..strategies import strategy_class

    df["night"] = [r["config"].get("night") or strategy_class(r["config"]["strategy"]).default_night()
                   for r in records]
    df["memory_bytes"] = [(r.get("strategy_memory") or {}).get("bytes", 0) for r in records]
    return df


def _by_seed(df: pd.DataFrame) -> dict[int, float]:
    return {int(s): float(a) for s, a in zip(df.seed, df.accuracy)}


def analyse(s: ParadigmSettings, lookup: RecordLookup) -> ParadigmAnalysis:
    configs = paradigm_configs(s)
    records, todo = lookup.records(configs)
    df = _frame(records)
    top = max(s.rounds)
    nights, pruning, matches = {}, {}, []
    night = df[df.night == "rounds"]
    for st in s.strategies:
        mine = night[night.strategy == st]
        none = df[(df.strategy == st) & (df.night == "none")]
        for p in s.grid:
            at = mine[mine.p == p]
            one, many = at[at.N == 1], at[at.N == top]
            if len(one) and len(many):
                nights[(st, p)] = compare_by_seed(_by_seed(many), _by_seed(one))
            if len(many) and len(none):
                pruning[(st, p)] = compare_by_seed(_by_seed(many), _by_seed(none))
        if st == REFERENCE:
            continue
        for n in s.rounds:
            curve = mine[mine.N == n]
            ref = night[(night.strategy == REFERENCE) & (night.N == n)]
            seeds = sorted(set(curve.seed) & set(ref.seed))
            if len(seeds) < 1 or curve.groupby("p").size().reindex(list(s.grid)).isna().any():
                continue
            acc = np.array([[float(curve[(curve.seed == sd) & (curve.p == p)].accuracy.iloc[0]) for p in s.grid]
                            for sd in seeds])
            for p in s.grid:
                target_rows = ref[ref.p == p].set_index("seed").accuracy
                if not set(seeds) <= set(target_rows.index):
                    continue
                ts = [float(target_rows[sd]) for sd in seeds]
                result = match_by_monotone_fit(list(s.grid), acc, float(np.mean(ts)), target_samples=ts, paired=True,
                                               n_bootstrap=s.n_bootstrap, confidence=CONFIDENCE, p_packnet=p)
                matches.append(Match(st, n, p, float(np.mean(ts)), result))
    return ParadigmAnalysis(df, records, len(configs), len(todo), nights, pruning, matches)


# --------------------------------------------------------------------------------------------- report


def default_out_dir(s: ParadigmSettings) -> Path:
    return Path("docs") / "results" / f"{s.benchmark}-paradigms-{s.preset}"


def _f(v: float, digits: int = 3) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def _bench_flag(s: ParadigmSettings) -> str:
    return "" if s.benchmark == "mnist-5k" else f" --benchmark {s.benchmark}"


def _label(st: str) -> str:
    return f"{PARADIGMS[st][1]} — {PARADIGMS[st][0]}"


def accuracy_table(s: ParadigmSettings, a: ParadigmAnalysis) -> str:
    rows = []
    df = a.frame
    for st in s.strategies:
        for n in s.rounds:
            g = df[(df.strategy == st) & (df.night == "rounds") & (df.N == n)]
            if g.empty:
                continue
            cells = []
            for p in s.grid:
                m, se, k = mean_se(g[g.p == p].accuracy)
                cells.append(f"{_f(m, 4)} ± {_f(se, 4)} ({k})" if k else "–")
            rows.append([PARADIGMS[st][1], f"N = {n}", *cells])
    return md_table(rows, ["strategy", "night", *[f"p = {p:g}" for p in s.grid]])


def no_night_table(s: ParadigmSettings, a: ParadigmAnalysis) -> str:
    """The strategies that take no night by default, without one (the whole network), and what pruning to p
    with N = max rounds costs them (paired by seed)."""
    rows = []
    df = a.frame
    for st in s.strategies:
        g = df[(df.strategy == st) & (df.night == "none")]
        if g.empty:
            continue
        m, se, k = mean_se(g.accuracy)
        rows.append([PARADIGMS[st][1], f"{_f(m, 4)} ± {_f(se, 4)} ({k})",
                     *[a.pruning[(st, p)].describe() if (st, p) in a.pruning else "–" for p in s.grid]])
    return md_table(rows, ["strategy", "no night: accuracy", *[f"N = {max(s.rounds)} at p = {p:g} minus no night"
                                                             for p in s.grid]])


def verdicts(s: ParadigmSettings, a: ParadigmAnalysis) -> list[str]:
    """One line per paradigm: does the night help (N = max vs 1), and the weights it needs against Memory."""
    top = max(s.rounds)
    scope = f"MLP on {s.benchmark}, {s.describe()}"
    lines = [f"Scope: {scope}. A difference counts where a paired t-test over seeds finds it: at least 3 seeds and "
             f"p < 0.05 after multiplying by the {len(s.grid)} values of p each paradigm is tested at (Bonferroni; the "
             "p-values shown are the tests' own); everything else is 'not shown', which is not 'no effect'. Other "
             "networks and data: untested.", ""]
    for st in s.strategies:
        helped = [(p, c) for (x, p), c in a.nights.items() if x == st]
        if not helped:
            lines.append(f"- **{_label(st)}**: no runs yet.")
            continue
        def holds(c: Comparison) -> bool:
            return c.significant and c.pvalue * len(s.grid) < ALPHA

        better = [f"p = {p:g}" for p, c in helped if holds(c) and c.diff > 0]
        worse = [f"p = {p:g}" for p, c in helped if holds(c) and c.diff < 0]
        detail = "; ".join(f"p = {p:g}: {c.describe()}" for p, c in sorted(helped))
        if better and not worse:
            verdict = f"**more rounds help** at {', '.join(better)}"
        elif worse and not better:
            verdict = f"**more rounds hurt** at {', '.join(worse)}"
        elif better and worse:
            verdict = f"**mixed**: better at {', '.join(better)}, worse at {', '.join(worse)}"
        else:
            verdict = "**not shown** (no significant difference)"
        lines.append(f"- **{_label(st)}**, N = {top} against N = 1 in the same budget: {verdict}. {detail}.")
        ms = [m for m in a.matches if m.strategy == st and m.n == top]
        if ms:
            parts = []
            for m in sorted(ms, key=lambda m: m.p):
                if m.result.in_range:
                    lo, hi = m.interval()
                    hi_text = _f(hi, 2) if math.isfinite(hi) else "off the grid"
                    parts.append(f"at Memory's p = {m.p:g}: x{_f(m.ratio, 2)} [{_f(lo, 2)}, {hi_text}]")
                elif m.result.target > max(acc for _, acc in m.result.evaluations):
                    parts.append(f"at Memory's p = {m.p:g}: not reached on the grid (below Memory's accuracy even "
                                 f"with x{(1 - min(s.grid)) / (1 - m.p):.3g} of its weights, at p = {min(s.grid):g})")
                else:
                    parts.append(f"at Memory's p = {m.p:g}: above Memory's accuracy over the whole grid (fewer than "
                                 f"x{(1 - max(s.grid)) / (1 - m.p):.3g} of Memory's weights)")
            lines.append(f"  Weights it needs to reach Memory's accuracy (N = {top}, (1 − p′)/(1 − p), "
                         f"{int(CONFIDENCE * 100)}% bootstrap interval over seeds; an end off the grid is not "
                         "bounded by it): " + "; ".join(parts) + ".")
    return lines


def _figure(s: ParadigmSettings, a: ParadigmAnalysis):  # type: ignore[no-untyped-def]
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * len(s.rounds), 4.0), layout="constrained")
    axes = fig.subplots(1, len(s.rounds), squeeze=False, sharey=True)[0]
    df = a.frame[a.frame.night == "rounds"]
    for ax, n in zip(axes, s.rounds):
        for st in s.strategies:
            g = df[(df.strategy == st) & (df.N == n)]
            stats = [mean_se(g[g.p == p].accuracy) for p in s.grid]
            xs = [1 - p for p, (_, _, k) in zip(s.grid, stats) if k]
            if not xs:
                continue
            ax.errorbar(xs, [m for m, _, k in stats if k], yerr=[0 if math.isnan(e) else e for _, e, k in stats if k],
                        marker="o", capsize=2, label=PARADIGMS[st][1])
        ax.set_xscale("log")
        ax.set_xlabel("weights in use after the last task, 1 − p")
        ax.set_title(f"N = {n} rounds a night")
    axes[0].set_ylabel("average final accuracy")
    axes[-1].legend(fontsize=8)
    return fig


def write_paradigms_report(s: ParadigmSettings, store: RunStore | None, out_dir: str | Path | None = None, *,
                           command: str, wall_seconds: float | None = None, trained: int | None = None) -> Path:
    """Write ``report.md``, ``runs.csv``, ``runs.jsonl.gz`` and ``accuracy.png`` into ``out_dir``; return the page."""
    from ..files import atomic_open, atomic_write_bytes

    out = Path(out_dir) if out_dir is not None else default_out_dir(s)
    out.mkdir(parents=True, exist_ok=True)
    a = analyse(s, RecordLookup(store))
    runs = a.frame.sort_values(["strategy", "night", "p", "N", "seed"]).assign(
        task_accuracy=lambda d: d.task_accuracy.map(lambda v: json.dumps([round(x, 6) for x in v])))
    with atomic_open(out / "runs.csv", "w", fsync=False, newline="") as f:
        runs.to_csv(f, index=False, float_format="%.6g")
    write_records(out / "runs.jsonl.gz", sorted(a.records, key=lambda r: r["config_hash"]))
    buffer = io.BytesIO()
    _figure(s, a).savefig(buffer, format="png", dpi=130, bbox_inches="tight", metadata={"Software": None})
    atomic_write_bytes(out / "accuracy.png", buffer.getvalue(), fsync=False)
    minutes = float(a.frame.member_seconds.sum()) / 60
    envs = {(e.get("platform"), e.get("device"), e.get("threads"), e.get("torch"))
            for e in (r.get("environment") or {} for r in a.records)}
    er = a.frame[a.frame.strategy == "er"].memory_bytes
    lines = [f"# Sleep for every paradigm: {s.benchmark}, `{s.preset}` preset", "",
             f"- **Command:** `{command}`",
             f"- **Reproduce:** `sleepcl paradigms --preset {s.preset}{_bench_flag(s)} --threads 2` (trains only "
             "what the results store lacks, then writes this report); from these runs alone: `sleepcl results "
             f"--import {(out / 'runs.jsonl.gz').as_posix()} --store FILE`, then `sleepcl paradigms --preset "
             f"{s.preset}{_bench_flag(s)} --no-train --store FILE`",
             f"- **Scale:** {s.describe()}: {a.total} runs ({a.total - a.missing} stored"
             + (f", {a.missing} missing: run the command again" if a.missing else "") + ")",
             f"- **Runs:** {len(a.frame)} from the results store on "
             + "; ".join(f"{p}, {d}, {t} torch threads, torch {v}" for p, d, t, v in sorted(envs, key=str))
             + f"; {minutes:.1f} min of population time per member, summed"
             + (f"; this command trained {trained} of them in {(wall_seconds or 0) / 60:.1f} min" if trained else ""),
             f"- **Written:** {datetime.now(timezone.utc).isoformat(timespec='seconds')}; per-run data: `runs.csv`, "
             "full records: `runs.jsonl.gz`", ""]
    lines += ["## Verdicts", "", *verdicts(s, a), ""]
    lines += ["## Accuracy against p", "", "![accuracy against 1 - p, one panel per N](accuracy.png)", "",
              "Average final accuracy over the tasks, mean ± s.e. (seeds). Every strategy with a night prunes to the "
              "same capacity schedule; 'no night' is the whole network trained E + B epochs a task, unpruned.", "",
              accuracy_table(s, a), "",
              "### Without a night", "",
              "The whole network, unpruned, E + B epochs of training a task (the strategies' own protocol), and what "
              "the night costs them: accuracy with a night of N rounds at p minus without (paired by seed).", "",
              no_night_table(s, a), ""]
    if len(er):
        lines += [f"ER's buffer: {int(er.max()):,} bytes per run at most ({s.er_buffer} samples, their inputs as "
                  "the network reads them, labels and tasks; the record's `strategy_memory`). Memory's "
                  "idealised rehearsal keeps every training sample.", ""]
    page = out / "report.md"
    atomic_write_bytes(page, "\n".join(lines).encode(), fsync=False)
    return page
