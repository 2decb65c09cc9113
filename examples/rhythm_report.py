"""The report of ``examples/nightly_rhythm.py``: does the adaptive night match the best fixed N chosen in hindsight?

Reads ``runs.csv`` (trains nothing) and writes ``report.md`` beside it: per p, every schedule's mean test accuracy
(mean over the five tasks, then mean +- s.e. over seeds); the best fixed N (uniform N) chosen on the *selection*
seeds; and on the *held-out* seeds, paired by seed, the adaptive night against that N and against N = 1 (paired
t-test, two-sided). "Matches" means the difference to the best fixed N is not significant at 0.05 *and* lies
within one seed-to-seed standard deviation of the best fixed N's held-out accuracies; with several adaptive
variants, one is chosen for all settings on the selection seeds.

    python examples/rhythm_report.py docs/results/nightly-rhythm --selection 0-3
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
from collections import defaultdict
from pathlib import Path

from scipy import stats


def seeds_of(text: str) -> list[int]:
    a, _, b = text.partition("-")
    return list(range(int(a), int(b) + 1)) if b else [int(s) for s in text.split(",")]


def ms(v: list[float]) -> str:
    se = statistics.stdev(v) / math.sqrt(len(v)) if len(v) > 1 else float("nan")
    return f"{statistics.fmean(v):.4f} ± {se:.4f}"


def paired(a: dict[int, float], b: dict[int, float]) -> tuple[float, float, float, int]:
    """Mean difference a - b over the seeds both have, its s.e., the paired t-test's p, n."""
    seeds = sorted(set(a) & set(b))
    d = [a[s] - b[s] for s in seeds]
    se = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
    p = float(stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue) if len(d) > 1 and se > 0 else 1.0
    return statistics.fmean(d), se, p, len(d)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--selection", default="0-3", help="seeds that choose the best fixed N (the rest are held out)")
    args = ap.parse_args()
    folder = Path(args.folder)
    with open(folder / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    sel = set(seeds_of(args.selection))
    acc: dict[tuple[float, str], dict[int, float]] = defaultdict(dict)
    rounds: dict[tuple[float, str], list[str]] = defaultdict(list)
    for r in rows:
        acc[(float(r["p"]), r["schedule"])][int(r["seed"])] = float(r["accuracy"])
        rounds[(float(r["p"]), r["schedule"])].append(r["rounds"])
    E = {r["E"] for r in rows}
    out = ["# The adaptive night against fixed N (mnist-5k, five nights)", "",
           f"- **Command:** `python examples/rhythm_report.py {args.folder} --selection {args.selection}` (reads "
           "`runs.csv`, trains nothing)",
           f"- **Reproduce the runs:** `python examples/nightly_rhythm.py --out {args.folder} --seeds "
           f"{min(int(r['seed']) for r in rows)}-{max(int(r['seed']) for r in rows)} --epochs {'/'.join(sorted(E))} "
           f"--jobs 2 --schedules {','.join(sorted({r['schedule'] for r in rows}))}` (then the command above)",
           "- **Setting:** five nights of `sleepcl learn` on the mnist-5k digit pairs, the paper's MLP (256, 256), "
           f"E = B = {'/'.join(sorted(E))} epochs (a budget in steps: the machine's load decides nothing), fixed "
           "capacity policy `--final-free p --expected-tasks 5`; accuracy = mean over the five tasks of `predict`'s "
           "test accuracy (told the task).",
           f"- **Seeds:** selection {sorted(sel)} choose the best fixed N (uniform N in 1, 2, 4, 8); the others are "
           "held out and decide the comparison, paired by seed.", ""]
    # One adaptive variant for every setting, chosen on the selection seeds (mean over the settings' p)
    names = sorted({k[1] for k in acc if k[1].startswith("adaptive")})
    ps = sorted({k[0] for k in acc})
    pick = max(names, key=lambda v: statistics.fmean(
        [statistics.fmean([x for k, x in acc[(p, v)].items() if k in sel]) for p in ps])) if names else None
    if len(names) > 1:
        out += [f"- **Adaptive variants:** {', '.join(names)}; one is chosen for every setting on the selection seeds "
                f"(highest mean over the settings): **{pick}**. The others are shown, not chosen. \"matches\": not "
                "significantly different from the best fixed N (paired t, 0.05) and within one seed-to-seed s.d. of "
                "it; with 4 held-out seeds only large differences can be significant.", ""]
    for p in ps:
        scheds = sorted({k[1] for k in acc if k[0] == p}, key=lambda s: (s == "adaptive", s))
        out += [f"## p = {p}", "", "| schedule | all seeds | selection seeds | held-out seeds | rounds per night |",
                "|---|---|---|---|---|"]
        for s in scheds:
            a = acc[(p, s)]
            hs = [v for k, v in a.items() if k not in sel]
            ss = [v for k, v in a.items() if k in sel]
            rr = sorted(set(rounds[(p, s)]))
            out.append(f"| {s} | {ms(list(a.values()))} (n={len(a)}) | {ms(ss) if ss else '-'} | "
                       f"{ms(hs) if hs else '-'} | {'; '.join(rr[:3])}{' …' if len(rr) > 3 else ''} |")
        fixed = [s for s in scheds if s.startswith("uniform:") and any(k not in sel for k in acc[(p, s)])]
        variants = [s for s in scheds if s.startswith("adaptive")]
        if not variants or not fixed:
            continue
        best = max(fixed, key=lambda s: statistics.fmean([v for k, v in acc[(p, s)].items() if k in sel]))
        held = lambda s: {k: v for k, v in acc[(p, s)].items() if k not in sel}  # noqa: E731
        sd = statistics.stdev(held(best).values()) if len(held(best)) > 1 else float("nan")
        out += ["", f"- best fixed N on the selection seeds: **{best}**; the seed-to-seed s.d. of its held-out "
                    f"accuracies is {sd:.4f}"]
        if "uniform:1" in scheds:
            db, seb, pvb, nb = paired(held(best), held("uniform:1"))
            out.append(f"- held out (n = {nb}): {best} − uniform:1 = {db:+.4f} ± {seb:.4f} (paired t, p = {pvb:.3g})")
        for v in variants:
            d, se, pv, n = paired(held(v), held(best))
            verdict = ("is significantly above" if d > 0 and pv < 0.05 else "matches" if pv >= 0.05 and abs(d) <= sd
                       else "is significantly below" if pv < 0.05 else "is not shown to match")
            chosen = " (the variant chosen on the selection seeds)" if v == pick else ""
            line = (f"- held out (n = {n}): {v}{chosen} − {best} = {d:+.4f} ± {se:.4f} (paired t, p = {pv:.3g}): "
                    f"**{verdict}** the best fixed N")
            if "uniform:1" in scheds:
                d1, se1, pv1, _ = paired(held(v), held("uniform:1"))
                line += f"; {v} − uniform:1 = {d1:+.4f} ± {se1:.4f} (p = {pv1:.3g})"
            out.append(line)
        out.append("")
    (folder / "report.md").write_text("\n".join(out) + "\n")
    print("\n".join(out))


if __name__ == "__main__":
    main()
