"""The report of ``examples/nightly_rhythm.py``: does the adaptive night match the best fixed N chosen in hindsight?

Reads ``runs.csv`` (trains nothing) and writes ``report.md`` beside it: per p, every schedule's mean test accuracy
(mean over the five tasks, then mean +- s.e. over seeds); the best fixed N (uniform N) chosen on the *selection*
seeds; and on the *held-out* seeds, paired by seed, the adaptive night against that N and against N = 1 (paired
t-test, two-sided). "Matches" means the difference to the best fixed N is not significant at 0.05 *and* lies
within one seed-to-seed standard deviation of the best fixed N's held-out accuracies; with several adaptive
variants, one is chosen for all settings on the selection seeds. For runs that recorded the nights' validation
accuracy (the conv network's), a second table shows where the nights lose: each night's task accuracy on the held-out seeds, paired against the best
fixed N, with the rounds it ran and (from ``runs.jsonl.gz`` where present) the steps per round and the validation
loss its rounds cost.

    python examples/rhythm_report.py docs/results/nightly-rhythm --selection 0-3
    python examples/rhythm_report.py docs/results/nightly-rhythm-vgg --selection 0-3
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import math
import statistics
from collections import Counter, defaultdict
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


def setting_of(rows: list[dict[str, str]]) -> dict[str, str]:
    """The runs' common setting (columns written with the conv network's runs; absent: the MLP on mnist-5k)."""
    def one(col: str, default: str = "") -> str:
        vals = sorted({r.get(col) or default for r in rows})
        return "/".join(vals)
    return {"benchmark": one("benchmark", "mnist-5k"), "network": one("network", "mlp"), "widths": one("widths"),
            "train_size": one("train_size"), "val_size": one("val_size"), "test_size": one("test_size"),
            "lr": one("lr"), "batch_size": one("batch_size"), "commit": one("commit"),
            "E": one("E"), "B": one("B")}


def network_name(st: dict[str, str]) -> str:
    if st["network"] == "vgg":
        return f"the VGG (widths {st['widths'].replace(',', 'x')})" if st["widths"] else "the paper's VGG"
    return "the paper's MLP (256, 256)" if not st["widths"] else f"the MLP ({st['widths'].replace(',', ', ')})"


def reproduce_options(st: dict[str, str]) -> str:
    """nightly_rhythm.py's options for a setting other than its defaults (the MLP on all of mnist-5k)."""
    out = []
    for col, flag in (("benchmark", "--benchmark"), ("network", "--network"), ("widths", "--widths")):
        if st[col] and st[col] != {"benchmark": "mnist-5k", "network": "mlp"}.get(col):
            out.append(f"{flag} {st[col]}")
    if st["B"] != st["E"]:
        out.append(f"--retrain-epochs {st['B']}")
    for col, flag in (("lr", "--lr"), ("batch_size", "--batch-size"), ("train_size", "--train-size"),
                      ("val_size", "--val-size"), ("test_size", "--test-size")):
        if st[col]:
            out.append(f"{flag} {st[col]}")
    return "".join(" " + o for o in out)


def seed_range(seeds: set[int]) -> str:
    lo, hi = min(seeds), max(seeds)
    if lo == hi:
        return str(lo)
    return f"{lo}-{hi}" if set(range(lo, hi + 1)) == seeds else ",".join(map(str, sorted(seeds)))


def held_schedules(rows: list[dict[str, str]], sel: set[int]) -> dict[str, list[str]]:
    """Per p, the schedules run on the held-out seeds, where that is fewer than on the selection seeds."""
    out = {}
    for p in sorted({r["p"] for r in rows}, key=float):
        on = lambda pick: sorted({r["schedule"] for r in rows if r["p"] == p and pick(int(r["seed"]))})  # noqa: E731
        held, chosen = on(lambda s: s not in sel), on(lambda s: s in sel)
        if held and held != chosen:
            out[p] = held
    return out


def held_out_note(rows: list[dict[str, str]], sel: set[int]) -> str:
    fewer = held_schedules(rows, sel)
    if not fewer:
        return ""
    return (" To save time the held-out seeds ran only " + "; ".join(f"{', '.join(v)} at p = {p}"
                                                                   for p, v in fewer.items())
            + " (N = 1, the best fixed N chosen on the selection seeds before they ran, and the adaptive night).")


def reproduce_line(folder: str, rows: list[dict[str, str]], sel: set[int], options: str | None) -> str:
    """The nightly_rhythm.py command(s) that train these runs (one per p for held-out seeds that ran fewer
    schedules); ``options``: the setting's flags (None: the MLP's defaults, the command as first written)."""
    E = "/".join(sorted({r["E"] for r in rows}))
    seeds = {int(r["seed"]) for r in rows}
    scheds = ",".join(sorted({r["schedule"] for r in rows}))
    if options is None:
        return (f"- **Reproduce the runs:** `python examples/nightly_rhythm.py --out {folder} --seeds "
                f"{min(seeds)}-{max(seeds)} --epochs {E} --jobs 2 --schedules {scheds}` (then the command above)")
    ps = ",".join(sorted({r["p"] for r in rows}, key=float))
    fewer = held_schedules(rows, sel)
    base = f"python examples/nightly_rhythm.py --out {folder} --epochs {E}{options}"
    if not fewer:
        return f"- **Reproduce the runs:** `{base} --ps {ps} --seeds {seed_range(seeds)} --jobs 2 --schedules {scheds}` " \
               "(then the command above)"
    held = seeds - sel
    cmds = [f"`{base} --ps {ps} --seeds {seed_range(seeds & sel)} --jobs 2 --schedules {scheds}`"]
    cmds += [f"`{base} --ps {p} --seeds {seed_range(held)} --jobs 2 --schedules {','.join(v)}`"
             for p, v in fewer.items()]
    return "- **Reproduce the runs:** " + ", then ".join(cmds) + " (then the command above)"


def nights_of(folder: Path) -> dict[tuple[float, str, int], list[dict]]:
    """Every run's nights from runs.jsonl.gz (empty when the file is absent)."""
    path = folder / "runs.jsonl.gz"
    if not path.exists():
        return {}
    with gzip.open(path, "rt") as f:
        recs = [json.loads(line) for line in f if line.strip()]
    return {(float(r["p"]), r["schedule"], int(r["seed"])): r["nights"] for r in recs}


def where_it_loses(p: float, scheds: list[str], best: str, acc_task: dict, rounds: dict,
                   nights: dict, held_seeds: set[int], val: dict) -> list[str]:
    """Per night, on the held-out seeds: each schedule's task accuracy, and each adaptive variant's paired
    difference to the best fixed N; the rounds run and, with the nights' records, steps per round and the
    validation loss the adaptive rounds cost."""
    shown = [s for s in scheds if s == best or s.startswith("adaptive") or s == "uniform:1"]
    n_nights = max(len(v) for v in acc_task.values())
    head = " | ".join(f"night {k + 1}" for k in range(n_nights))
    out = ["", f"Where the nights lose (p = {p}, held-out seeds {sorted(held_seeds)}): each night's task accuracy "
           "at the end (mean over seeds), the rounds run, the steps per round, the validation accuracy after "
           "the night (mean over nights) and, for the adaptive nights, the excess validation loss (nats, over the "
           "trained network's before its first prune) measured at the end of each round but the last (mean, max).",
           "", f"| schedule | {head} | rounds per night | steps per round | validation accuracy | excess loss |",
           "|---|" + "---|" * (n_nights + 4)]
    for s in shown:
        cells = []
        for k in range(n_nights):
            v = [acc_task[(p, s)][k][seed] for seed in held_seeds if seed in acc_task[(p, s)][k]]
            cells.append(f"{statistics.fmean(v):.4f}" if v else "-")
        rr = [int(x) for seed, line in rounds[(p, s)].items() if seed in held_seeds for x in line.split()]
        recs = [nights[(p, s, seed)] for seed in held_seeds if (p, s, seed) in nights]
        steps = [n["night_steps"] / n["rounds"] for rec in recs for n in rec if n.get("rounds")]
        excess = [r["excess"] for rec in recs for n in rec for r in (n.get("rhythm") or []) if "excess" in r]
        va = [v for seed, v in val[(p, s)].items() if seed in held_seeds]
        cells += [f"{statistics.fmean(rr):.2f}" if rr else "-", f"{statistics.fmean(steps):.1f}" if steps else "-",
                  f"{statistics.fmean(va):.4f}" if va else "-",
                  f"{statistics.fmean(excess):.3f}, {max(excess):.3f}" if excess else "-"]
        out.append(f"| {s} | " + " | ".join(cells) + " |")
    for v in (s for s in shown if s.startswith("adaptive")):
        logs = [n.get("rhythm") or [] for seed in held_seeds for n in nights.get((p, v, seed), [])]
        if logs:
            shapes = Counter(" → ".join(f"u {r['u']:.3g} at {r['position']:.3g}" for r in log) for log in logs)
            shape, count = shapes.most_common(1)[0]
            target = float(dict(kv.split("=") for kv in v.partition(":")[2].split(",") if "=" in kv)
                           .get("target", 0.05))
            slow = [next(r["round"] for r in log if r.get("excess", 0) > 2 * target) for log in logs
                    if any(r.get("excess", 0) > 2 * target for r in log)]
            out.append(f"- {v}'s rounds (u: how far along the night's pruning path, at: the share of the night's "
                       f"steps when it prunes): most often {shape} ({count} of {len(logs)} nights; "
                       f"{len(shapes)} different rhythms). A round cost more than twice the target ({2 * target:g} "
                       f"nats: the rule halves the pace) on {len(slow)} of {len(logs)} nights"
                       + (f", first after round {', '.join(f'{k} ({c}x)' for k, c in sorted(Counter(slow).items()))}"
                          if slow else ""))
        diffs = []
        for k in range(n_nights):
            d, se, pv, n = paired({s: a for s, a in acc_task[(p, v)][k].items() if s in held_seeds},
                                  {s: a for s, a in acc_task[(p, best)][k].items() if s in held_seeds})
            diffs.append(f"night {k + 1} {d:+.4f} ± {se:.4f} (p = {pv:.2g})")
        out.append(f"- {v} − {best}, per night (held out, paired t, n = {n}): " + "; ".join(diffs))
    return out


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
    rounds_by_seed: dict[tuple[float, str], dict[int, str]] = defaultdict(dict)
    val: dict[tuple[float, str], dict[int, float]] = defaultdict(dict)
    acc_task: dict[tuple[float, str], list[dict[int, float]]] = defaultdict(lambda: [{} for _ in range(5)])
    for r in rows:
        key, seed = (float(r["p"]), r["schedule"]), int(r["seed"])
        acc[key][seed] = float(r["accuracy"])
        rounds[key].append(r["rounds"])
        rounds_by_seed[key][seed] = r["rounds"]
        for k in range(5):
            acc_task[key][k][seed] = float(r[f"acc_task_{k + 1}"])
        if r.get("val_accuracy"):
            val[key][seed] = float(r["val_accuracy"])
    nights = nights_of(folder)
    st = setting_of(rows)
    sized = bool(st["train_size"] or st["val_size"] or st["test_size"])
    eb = (f"E = B = {st['E']} epochs" if st["E"] == st["B"] else f"E = {st['E']}, B = {st['B']} epochs")
    fixed_ns = sorted({int(k[1].split(":")[1]) for k in acc if k[1].startswith("uniform:")})
    held_n = len({int(r["seed"]) for r in rows} - sel)
    title = ("mnist-5k" if st["benchmark"] == "mnist-5k" and st["network"] == "mlp"
             else f"{network_name(st).removeprefix('the ')} on {st['benchmark']}")
    out = [f"# The adaptive night against fixed N ({title}, five nights)", "",
           f"- **Command:** `python examples/rhythm_report.py {args.folder} --selection {args.selection}` (reads "
           "`runs.csv`, trains nothing)",
           reproduce_line(args.folder, rows, sel, reproduce_options(st) if sized or st["network"] != "mlp" else None),
           f"- **Setting:** five nights of `sleepcl learn` on the {st['benchmark']} "
           f"{'digit ' if st['benchmark'].startswith('mnist') else 'class '}pairs, {network_name(st)}, "
           f"{eb} (a budget in steps: the machine's load decides nothing), fixed "
           "capacity policy `--final-free p --expected-tasks 5`; accuracy = mean over the five tasks of `predict`'s "
           "test accuracy (told the task)."
           + (f" Adam lr {st['lr']}, batch {st['batch_size']}." if st["lr"] or st["batch_size"] else "")
           + (f" **Subsampled:** per task and seed a stratified draw of {st['train_size'] or 'all'} training, "
              f"{st['val_size'] or '10% of the training images as'} validation and {st['test_size'] or 'all'} test "
              "images (every schedule of a seed sees the same images); the validation images steer the adaptive "
              "night only." if sized else ""),
           f"- **Seeds:** selection {sorted(sel)} choose the best fixed N (uniform N in "
           f"{', '.join(map(str, fixed_ns))}); the others are held out and decide the comparison, paired by seed."
           + held_out_note(rows, sel),
           ""]
    if st["commit"]:
        commits = Counter(r["commit"] for r in rows if r.get("commit"))
        out[-1:-1] = ["- **Code that trained the runs:** " + ", ".join(
            f"commit `{c}` ({n} runs)" for c, n in commits.items()) + " (`git rev-parse HEAD` of the work tree when "
            "they ran; `+dirty`: with uncommitted changes)"]
    # One adaptive variant for every setting, chosen on the selection seeds (mean over the settings' p)
    names = sorted({k[1] for k in acc if k[1].startswith("adaptive")})
    ps = sorted({k[0] for k in acc})
    pick = max(names, key=lambda v: statistics.fmean(
        [statistics.fmean([x for k, x in acc[(p, v)].items() if k in sel]) for p in ps])) if names else None
    if len(names) > 1:
        out += [f"- **Adaptive variants:** {', '.join(names)}; one is chosen for every setting on the selection seeds "
                f"(highest mean over the settings): **{pick}**. The others are shown, not chosen. \"matches\": not "
                "significantly different from the best fixed N (paired t, 0.05) and within one seed-to-seed s.d. of "
                f"it; with {held_n} held-out seeds only large differences can be significant.", ""]
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
            out.append("")
            continue
        best = max(fixed, key=lambda s: statistics.fmean([v for k, v in acc[(p, s)].items() if k in sel]))
        held = lambda s: {k: v for k, v in acc[(p, s)].items() if k not in sel}  # noqa: E731
        sd = statistics.stdev(held(best).values()) if len(held(best)) > 1 else float("nan")
        out += ["", f"- best fixed N on the selection seeds: **{best}**; the seed-to-seed s.d. of its held-out "
                    f"accuracies is {sd:.4f}"]
        if "uniform:1" in scheds and best != "uniform:1":
            db, seb, pvb, nb = paired(held(best), held("uniform:1"))
            out.append(f"- held out (n = {nb}): {best} − uniform:1 = {db:+.4f} ± {seb:.4f} (paired t, p = {pvb:.3g})")
        for v in variants:
            d, se, pv, n = paired(held(v), held(best))
            verdict = ("is significantly above" if d > 0 and pv < 0.05 else "matches" if pv >= 0.05 and abs(d) <= sd
                       else "is significantly below" if pv < 0.05 else "is not shown to match")
            chosen = " (the variant chosen on the selection seeds)" if v == pick else ""
            line = (f"- held out (n = {n}): {v}{chosen} − {best} = {d:+.4f} ± {se:.4f} (paired t, p = {pv:.3g}): "
                    f"**{verdict}** the best fixed N")
            if "uniform:1" in scheds and best != "uniform:1":
                d1, se1, pv1, _ = paired(held(v), held("uniform:1"))
                line += f"; {v} − uniform:1 = {d1:+.4f} ± {se1:.4f} (p = {pv1:.3g})"
            out.append(line)
        if val:  # runs that recorded the nights' validation accuracy
            out += where_it_loses(p, scheds, best, acc_task, rounds_by_seed, nights,
                                  {k for k in acc[(p, best)] if k not in sel}, val)
        out.append("")
    (folder / "report.md").write_text("\n".join(out) + "\n")
    print("\n".join(out))


if __name__ == "__main__":
    main()
