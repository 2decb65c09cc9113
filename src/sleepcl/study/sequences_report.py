"""The report of the study across the number of tasks (:mod:`.sequences`): report.md, runs.csv and figures.

Every number is computed from the runs in the results store (and the peak memory measured while they trained);
the verdict is worded from the trend tests only, naming the network, the data, the seeds and the interval method.
"""

from __future__ import annotations

import io
import json
import math
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..data.split import load_split_benchmark
from ..files import atomic_open, atomic_write_bytes
from ..runs.records import write_records
from ..runs.store import RunStore
from .report import md_table
from .run import RecordLookup
from .sequences import BASELINES, CONFIDENCE, SEQUENCE_STRATEGIES, SequenceAnalysis, SequenceSettings, analyse, \
    analyse_frame, read_costs, sequence_configs

__all__ = ["COSTS_FILE", "default_out_dir", "write_sequences_report"]

COSTS_FILE = "memory.json"
COLORS = {"packnet": "#d62728", "memory": "#1f77b4", "multinet": "#2ca02c"}
LABELS = {"packnet": "PackNet", "memory": "Memory", "multinet": "Multinet"}
MARKERS = ["o", "s", "^", "D", "v"]


def default_out_dir(s: SequenceSettings) -> Path:
    return Path("docs") / "results" / f"{s.benchmark}-sequences-{s.preset}"


def _f(v: float, digits: int = 3) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def reproduce(s: SequenceSettings) -> str:
    """The command that trains and reports this study (the preset's, with any other T or seeds)."""
    from .sequences import sequence_settings

    preset = sequence_settings(s.preset)
    extra = "" if s.tasks == preset.tasks else f" --tasks {','.join(map(str, s.tasks))}"
    extra += "" if s.seeds == preset.seeds else f" --seeds {','.join(map(str, s.seeds))}"
    return f"sleepcl sequences --preset {s.preset}{extra} --threads 2"


def _save_figure(fig: Figure, path: Path) -> None:
    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "sleepcl"}):
        fig.savefig(buffer, format="png", dpi=130, bbox_inches="tight", metadata={"Software": None})
    atomic_write_bytes(path, buffer.getvalue(), fsync=False)


def accuracy_figure(s: SequenceSettings, a: SequenceAnalysis) -> Figure:
    """Figure 1 at every T: average final accuracy against p, one panel per T."""
    fig = Figure(figsize=(4.2 * len(s.tasks), 4.0), layout="constrained")
    axes = fig.subplots(1, len(s.tasks), squeeze=False, sharey=True)[0]
    for ax, t in zip(axes, s.tasks):
        for st in SEQUENCE_STRATEGIES:
            g = a.accuracy[(a.accuracy["T"] == t) & (a.accuracy.strategy == st)].sort_values("p")
            if not g.empty:
                ax.errorbar(1 - g.p, g["mean"], yerr=np.nan_to_num(g.se), color=COLORS[st], label=LABELS[st],
                            marker="o", ms=3, capsize=2)
        ax.set_xscale("log")
        ax.invert_xaxis()
        every = s.ps(BASELINES[0])
        ax.set_xticks([1 - p for p in every])
        ax.set_xticklabels([f"{p:g}" for p in every], rotation=60, fontsize=7)
        ax.minorticks_off()
        ax.set_title(f"T = {t} tasks")
        ax.set_xlabel("final free fraction p")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("average final test accuracy")
    axes[0].legend()
    return fig


def compression_figure(s: SequenceSettings, a: SequenceAnalysis) -> Figure:
    """The compression ratio against T, one line per (baseline, PackNet's p), with jackknife-t intervals."""
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.subplots()
    for b in BASELINES:
        for k, p in enumerate(s.matching_ps):
            ms = sorted((m for m in a.matches if m.baseline == b and m.p == p and m.matched), key=lambda m: m.T)
            if not ms:
                continue
            ts = np.array([m.T for m in ms], dtype=float) * (1 + 0.03 * (k - 1) + (0.015 if b == "multinet" else 0))
            c = np.array([m.compression for m in ms])
            lo, hi = np.array([m.interval() for m in ms]).T
            ax.errorbar(ts, c, yerr=[np.maximum(c - lo, 0), np.maximum(hi - c, 0)], color=COLORS[b],
                        marker=MARKERS[k % len(MARKERS)], capsize=3, ls="-" if b == "memory" else "--",
                        label=f"{LABELS[b]}, PackNet p = {p:g}")
            for m in (m for m in a.matches if m.baseline == b and m.p == p and not m.matched and m.below):
                ax.plot([m.T], [m.edges[1]], marker=MARKERS[k % len(MARKERS)], mfc="none", color=COLORS[b], ms=9)
                ax.annotate("", (m.T, m.edges[1] * 1.6), (m.T, m.edges[1]),
                            arrowprops={"arrowstyle": "->", "color": COLORS[b]})
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(list(s.tasks))
    ax.set_xticklabels([str(t) for t in s.tasks])
    ax.minorticks_off()
    ax.axhline(1, color="grey", lw=0.8)
    ax.set_xlabel("number of tasks T (log scale)")
    ax.set_ylabel("compression ratio (1 - p) / (1 - p')  (log scale)")
    ax.set_title(f"How many times more weights PackNet needs ({int(CONFIDENCE * 100)}% jackknife-t intervals)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, title="open marker with arrow: off the grid,\nat least this", title_fontsize=7)
    return fig


def verdict(s: SequenceSettings, a: SequenceAnalysis) -> list[str]:
    """The answer to "does the gap grow with T?", from the trend tests only."""
    comp = [t for t in a.trends if t.quantity == "log compression"]
    gap = [t for t in a.trends if t.quantity == "accuracy gap"]
    counts = {v: sum(t.verdict == v for t in comp) for v in ("grows with T", "shrinks with T")}
    tested = [t for t in comp if t.verdict != "no data"]
    method = (f"{len(s.seeds)} seeds per point; trend = least-squares slope of log(compression) against log(T) over "
              f"T = {', '.join(map(str, s.tasks))}; {int(CONFIDENCE * 100)}% jackknife-t interval over the seeds (each "
              "seed's runs of PackNet and of the baseline left out at every T at once, the estimate ± t(n − 1) "
              "delete-one standard errors; chosen by the coverage simulation benchmarks/interval_coverage.py); a "
              "trend is called only when its interval excludes 0")
    if not tested:
        return [f"**No verdict:** no baseline matched PackNet at two or more T ({method})."]
    if counts["grows with T"] == len(tested):
        head = "**The gap grows with T** in every comparison tested"
    elif counts["shrinks with T"] == len(tested):
        head = "**The gap shrinks with T** in every comparison tested"
    elif not counts["grows with T"] and not counts["shrinks with T"]:
        head = "**No evidence that the gap changes with T**: no comparison's interval excludes 0"
    else:
        head = (f"**Mixed:** the compression grows with T in {counts['grows with T']}, shrinks in "
                f"{counts['shrinks with T']} and shows no clear trend in "
                f"{len(tested) - counts['grows with T'] - counts['shrinks with T']} of {len(tested)} comparisons")
    parts = [f"{LABELS[t.baseline]} at p = {t.p:g}: slope {t.slope:+.3f} [{t.low:+.3f}, {t.high:+.3f}] over T = "
             f"{', '.join(map(str, t.Ts))} ({t.verdict})" for t in tested]
    gaps = [f"{LABELS[t.baseline]} at p = {t.p:g}: {t.slope:+.4f} [{t.low:+.4f}, {t.high:+.4f}] per unit of log T "
            f"({t.verdict})" for t in gap if t.verdict != "no data"]
    off = [f"{LABELS[m.baseline]} at p = {m.p:g}, T = {m.T} ({m.bound().replace('>=', '≥').replace('<=', '≤')})"
           for m in sorted(a.matches, key=lambda m: (m.baseline, m.p, m.T)) if not m.matched]
    acc = a.accuracy.set_index(["T", "strategy", "p"])["mean"]
    first, last = min(s.tasks), max(s.tasks)
    moves = [f"{LABELS[st]} " + ", ".join(f"{acc[(first, st, p)]:.3f} → {acc[(last, st, p)]:.3f} (p = {p:g})"
                                          for p in s.matching_ps if (first, st, p) in acc and (last, st, p) in acc)
             for st in SEQUENCE_STRATEGIES]
    return [f"{head} (the compression ratio of {' and '.join(LABELS[b] for b in BASELINES)} against PackNet; "
            f"{s.benchmark}, {s.describe()}).", "",
            f"- Compression trends: {'; '.join(parts)}.",
            f"- Accuracy gap (baseline − PackNet at the same p) against log T: {'; '.join(gaps) or 'no data'}.",
            f"- What moves: average accuracy at a fixed p from T = {first} to T = {last}: {'; '.join(moves)}. Every "
            "strategy takes the same steps per task; the baselines' shared weights train on every day's data, while "
            "a PackNet task trains only its own share of the weights, (1 − r) r^(t − 1) with r = p^(1/T), which "
            "shrinks as T grows.",
            *([f"- Off the grid, so left out of the compression trends (the baseline beat PackNet's accuracy even at "
               f"its most pruned point: the compression is at least the bound): {'; '.join(off)}."] if off else []),
            f"- Method: {method}. Holds for this network, this data and this short training (E = {s.epochs}, "
            f"B = {s.retrain_epochs}); it says nothing about other networks or longer training."]


def _scale(s: SequenceSettings, a: SequenceAnalysis) -> list[str]:
    bench = load_split_benchmark(s.benchmark, n_tasks=1)
    n_train = len(bench.train[0])
    size = int(np.prod(bench.input_shape))
    acc = a.accuracy.set_index(["T", "strategy", "p"])["mean"]
    rows = []
    for r in a.costs.itertuples():
        pool = f"{r.T * n_train:,} samples ({r.T * n_train * size / 2**20:.0f} MB as uint8 images)" \
            if r.strategy != "packnet" else f"{n_train:,} (one task)"
        at = [_f(float(acc.get((r.T, r.strategy, p), math.nan)), 4) for p in s.matching_ps]
        rows.append([r.T, LABELS[r.strategy], *at, f"{r.member_seconds:.1f}", _f(r.train_seconds_per_task, 2),
                     _f(r.evaluate_seconds_per_task, 3), r.population_size,
                     f"{_f(r.peak_rss_mb, 0)} ({_f(r.start_rss_mb, 0)})", pool])
    every = ", ".join(f"{max(1, t // s.evaluations)} (T = {t})" for t in s.tasks)
    return [md_table(rows, ["T", "strategy", *[f"accuracy at p = {p:g}" for p in s.matching_ps], "seconds per member",
                          "training s/task", "evaluation s/task", "population", "peak RSS MB (at start)",
                          "training pool on the last day"]), "",
            "Wall-clock seconds on a machine shared with other jobs move with its load; "
            "`benchmarks/sequence_cost.py` times PackNet and Memory in one interleaved run. "
            f"Seconds are each run's population time divided by its members (from the records' timings); training = "
            f"train + prune + retrain. The tasks are evaluated after every k-th task and the last (RunConfig.eval_every"
            f" = k: {every}). Peak RSS: the process's "
            "peak resident memory (VmHWM, reset before each (T, strategy) group) while that group's largest population "
            "trained, and in brackets the resident memory when it started, with "
            f"`--threads` groups of members side by side; a task has {n_train:,} training images of {size} pixels. "
            "The engine stores the images once and a rehearsal day draws from the pool by index (8 bytes a sample), "
            "so Memory's pool costs little here; a rehearsal buffer that stored the images would hold what the last "
            "column says. Multinet's one day draws from every task at once, like Memory's last day."]


def read_runs_csv(path: str | Path) -> pd.DataFrame:
    """A report's ``runs.csv`` back as the analysis frame (:func:`~sleepcl.study.sequences.records_frame`'s)."""
    df = pd.read_csv(path)
    df["final_accuracy"] = df["final_accuracy"].map(json.loads)
    df["layer_free_fraction"] = df["layer_free_fraction"].map(json.loads)
    return df


def write_sequences_report(s: SequenceSettings, store: RunStore | None, out_dir: str | Path | None = None, *,
                           command: str, wall_seconds: float | None = None, trained: int | None = None,
                           runs_csv: str | Path | None = None) -> Path:
    """Write ``report.md``, ``runs.csv`` and the figures of the study across T into ``out_dir``; return the page.

    ``runs_csv``: analyse the runs of that ``runs.csv`` (a report's own) instead of the store's, for a report whose
    full records were not kept; nothing trains.
    """
    out = Path(out_dir) if out_dir is not None else default_out_dir(s)
    out.mkdir(parents=True, exist_ok=True)
    costs = read_costs(out / COSTS_FILE)
    if runs_csv is not None:
        df = read_runs_csv(runs_csv)
        configs = {c.hash() for c in sequence_configs(s)}
        df = df[df["config_hash"].isin(configs)].reset_index(drop=True)
        a = analyse_frame(s, df, costs, missing=len(configs) - len(df))
    else:
        a = analyse(s, RecordLookup(store), costs)
    runs = a.frame.sort_values(["T", "strategy", "p", "seed"]).assign(
        final_accuracy=lambda d: d.final_accuracy.map(lambda v: json.dumps([round(x, 6) for x in v])),
        layer_free_fraction=lambda d: d.layer_free_fraction.map(lambda v: json.dumps(v, sort_keys=True)))
    with atomic_open(out / "runs.csv", "w", fsync=False, newline="") as f:
        runs.to_csv(f, index=False, float_format="%.6g")
    if runs_csv is None:  # the full records too: a later session imports them instead of retraining
        write_records(out / "runs.jsonl.gz", sorted(a.records, key=lambda r: r["config_hash"]))
    _save_figure(accuracy_figure(s, a), out / "accuracy_by_T.png")
    _save_figure(compression_figure(s, a), out / "compression_by_T.png")
    minutes = float(a.frame.member_seconds.sum()) / 60
    lines = [f"# Freezing's cost across the number of tasks: {s.benchmark}, `{s.preset}` preset", "",
             f"- **Command:** `{command}`",
             (f"- **Reproduce:** `{reproduce(s).removesuffix(' --threads 2')} --from-runs-csv {_posix(out)}/runs.csv "
              f"--out {_posix(out)}` (re-analyses this report's runs.csv; trains nothing)\n"
              f"- **Retrain:** `{reproduce(s)}` (trains only what the results store lacks, then writes this report)"
              if runs_csv is not None else
              f"- **Reproduce:** `sleepcl results --import {_posix(out)}/runs.jsonl.gz --store runs.sqlite && "
              f"{reproduce(s).removesuffix(' --threads 2')} --store runs.sqlite --no-train --out {_posix(out)}` "
              "(imports this report's runs into a fresh store and writes this report from them; trains nothing)\n"
              f"- **Resume or extend:** `{reproduce(s)}` (trains only what the results store lacks, then writes this "
              "report; add `--store FILE` to keep the runs elsewhere than the default store)"),
             f"- **Scale:** {s.describe()}; every strategy at every p, seed and T: {a.total} runs "
             f"({a.total - a.missing} stored" + (f", {a.missing} missing: run the command again" if a.missing else "")
             + ")",
             (f"- **Runs:** {len(a.frame)} from `runs.csv` (their full records were not kept: no machine or dates; "
              f"re-analysed with `--from-runs-csv`); {minutes:.0f} min of " if runs_csv is not None else
              f"- **Runs:** {len(a.frame)} from the results store, {_machine(a.records)}; {minutes:.0f} min of ")
             + "population time per member, summed over the runs"
             + (f"; training them took {sum(c['seconds'] for g in costs.values() for c in g) / 60:.0f} min of "
                "wall-clock time "
                f"(`{COSTS_FILE}`)" if costs else "")
             + (f"; this command trained {trained} of them in {(wall_seconds or 0) / 60:.1f} min" if trained else "")
             + ("; this command found them all in the store" if trained == 0 else ""),
             f"- **Written:** {datetime.now(timezone.utc).isoformat(timespec='seconds')}; per-run data: `runs.csv` "
             "(config hash, seed, T, strategy, p, final accuracies, free fractions, seconds)"
             + ("" if runs_csv is not None else ", full records: `runs.jsonl.gz`") + "; peak memory: "
             f"`{COSTS_FILE}`", ""]
    lines += ["## Verdict", "", *verdict(s, a), ""]
    lines += ["## Compression ratio against T", "", "![compression against T](compression_by_T.png)", "",
              _match_table(a), "",
              "p': where the baseline's fitted accuracy (non-decreasing in log(1 − p), seed means) equals PackNet's "
              "mean accuracy at p; compression = (1 − p) / (1 − p'), how many times more weights PackNet keeps for "
              f"that accuracy. Interval: {int(CONFIDENCE * 100)}% jackknife-t over the seeds (module docstring of "
              "`sleepcl/study/sequences.py`). Off the grid when left out: seeds whose removal puts PackNet's mean off "
              "the baseline's fitted range (high: the baseline then beats it even at its most pruned point; low: "
              "the reverse); with any, the data cannot bound the compression and the interval reads [0, ∞].",
              ""]
    lines += ["## Figure 1 at every T", "", "![accuracy against p at every T](accuracy_by_T.png)", "",
              _accuracy_table(s, a), ""]
    lines += ["## What each strategy cost", "", *_scale(s, a), ""]
    page = out / "report.md"
    atomic_write_bytes(page, "\n".join(lines).encode(), fsync=False)
    return page


def _posix(path: Path) -> str:
    try:
        return Path(path).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return Path(path).as_posix()


def _machine(records: Sequence[dict[str, Any]]) -> str:
    """Where the runs trained, from their records: platform, device, torch threads and version, the dates."""
    seen = Counter()
    for r in records:
        e = r.get("environment") or {}
        seen[f"{e.get('platform', '?')}, {e.get('device', '?')}, {e.get('threads', '?')} torch threads, torch "
             f"{e.get('torch', '?')}"] += 1
    dates = sorted(r["created"] for r in records if r.get("created"))
    where = "; ".join(f"{n} on {k}" for k, n in seen.most_common()) or "none"
    return where + (f", created {dates[0]} to {dates[-1]}" if dates else "")


def _match_table(a: SequenceAnalysis) -> str:
    rows = []
    for m in sorted(a.matches, key=lambda m: (m.baseline, m.p, m.T)):
        (lo, hi), (lo_bound, hi_bound) = m.interval(), m.interval_censored()
        interval = "[0, ∞]" if (lo_bound or hi_bound) else f"[{_f(lo, 2)}, {_f(hi, 2)}]"
        rows.append([LABELS[m.baseline], f"{m.p:g}", m.T, f"{m.target:.4f} ± {m.target_se:.4f}",
                     _f(m.p_match, 5) if m.matched else "off the grid",
                     _f(m.compression, 2) if m.matched else m.bound().replace(">=", "≥").replace("<=", "≤"), interval,
                     f"{m.censored_high} / {m.censored_low}"])
    return md_table(rows, ["baseline", "PackNet p", "T", "PackNet accuracy (mean ± s.e.)", "p'", "compression",
                         "interval", "seeds off the grid when left out (high / low)"])


def _accuracy_table(s: SequenceSettings, a: SequenceAnalysis) -> str:
    acc = a.accuracy.set_index(["T", "strategy", "p"])
    rows = []
    for t in s.tasks:
        for p in s.ps(BASELINES[0]):
            cells = []
            for st in SEQUENCE_STRATEGIES:
                if (t, st, p) in acc.index:
                    r = acc.loc[(t, st, p)]
                    cells.append(f"{r['mean']:.4f} ± {_f(r['se'], 4)}")
                else:
                    cells.append("–")
            rows.append([t, f"{p:g}", *cells])
    return md_table(rows, ["T", "p", *[f"{LABELS[st]} (mean ± s.e.)" for st in SEQUENCE_STRATEGIES]])
