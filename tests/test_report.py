"""The report: every plot and table comes from stored runs, and the claims checks follow the data."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sleepcl.cli import main
from sleepcl.runs.store import RunStore
from sleepcl.study import analysis as an
from sleepcl.study import claims as cl
from sleepcl.study import experiments as ex
from sleepcl.study import paper
from sleepcl.study.report import write_report
from sleepcl.study.run import RecordLookup, run_study
from sleepcl.study.synthetic import SyntheticWorld


def tiny(**changes) -> ex.StudySettings:
    s = ex.settings("tiny", "mnist-5k")
    # a precise search, a fixed-budget experiment whose no-budget runs (B = 2N) differ from it at N = 2, and
    # 6 seeds: differences are tested, and best N is chosen on 3 seeds and tested on the other 3
    base = dict(matching_xatol=1e-3, matching_maxiter=30, matching_compression_bounds=(0.3, 8.0),
                nobudget_round_epochs=2, seeds=tuple(range(6)), budget_seeds=tuple(range(6)))
    return dataclasses.replace(s, **{**base, **changes})


def stored(tmp_path, s: ex.StudySettings, world: SyntheticWorld, names="all") -> RunStore:
    store = RunStore(tmp_path / f"runs-{id(world)}.sqlite")
    run_study(names, s, store=store, run=world.runner)
    return store


GROWING = {0.8: 1.5, 0.9: 2.5}


def good_world(s: ex.StudySettings, **kw) -> SyntheticWorld:
    """PackNet wastes weights, more so at larger p; one N is clearly best; more rounds help without a budget."""
    args = dict(packnet_compression=lambda p: GROWING.get(round(p, 6), 1.2), multinet_factor=1.4, noise=0.001,
                budget=s.retrain_epochs,
                # one-shot (N = 1) costs 0.05 at the largest budget p (0.95, not a matching p)
                budget_penalty=lambda p, n: 0.05 if n == 1 and p == max(s.budget_ps) else 0.0,
                nobudget_gain=lambda p, n: 0.02 * n, schedule_offset={"lengthening": 0.01})
    return SyntheticWorld(**{**args, **kw})


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    s = tiny()
    store = stored(tmp, s, good_world(s))
    res = write_report(s, store, tmp / "out", command="sleepcl study all --preset tiny --benchmark mnist-5k")
    yield s, store, res
    store.close()


# ----------------------------------------------------------------------------------- files and tables


def test_every_experiment_has_plots_and_tables(report) -> None:
    s, _, res = report
    out = res.out_dir
    for name in ex.EXPERIMENTS:
        for ext in ("png", "svg", "csv", "md"):
            assert (out / f"{name}.{ext}").stat().st_size > 0, f"{name}.{ext}"
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "<svg" in (out / f"{name}.svg").read_text()
    assert (out / "matching_tasks.png").exists() and (out / "matching_tasks.svg").exists()
    assert res.page == out / "report.md"
    assert set(res.files) >= {out / "report.md", out / "claims.csv"}


def _stored_mean(store: RunStore, **filters) -> float:
    recs = [r for r in store.query(**filters)]
    assert recs, filters
    return float(np.mean([r["average_accuracy"] for r in recs]))


def test_tables_hold_the_stored_values(report) -> None:
    s, store, res = report
    out = res.out_dir
    pruning = pd.read_csv(out / "pruning.csv")
    assert len(pruning) == 3 * len(s.pruning_grid)
    for row in pruning.itertuples():
        want = _stored_mean(store, strategy=row.strategy, final_free=row.p, rounds=1, seed=list(s.seeds),
                            epochs=s.epochs, retrain_epochs=s.retrain_epochs)
        assert row.mean == pytest.approx(want, abs=1e-6)
        assert row.n == len(s.seeds)
    budget = pd.read_csv(out / "budget.csv")
    assert len(budget) == len(s.budget_ps) * len(s.budget_rounds)
    for row in budget.itertuples():
        want = _stored_mean(store, strategy="packnet", final_free=row.p, rounds=row.N, schedule="uniform",
                            retrain_epochs=s.retrain_epochs, seed=list(s.budget_seeds))
        assert row.mean == pytest.approx(want, abs=1e-6)
    assert budget[budget.best].groupby("p").size().eq(1).all()   # one best N per p
    nob = pd.read_csv(out / "nobudget.csv")
    assert list(nob.B) == [s.nobudget_round_epochs * n for n in nob.N]
    for row in nob.itertuples():
        assert row.mean == pytest.approx(_stored_mean(store, strategy="packnet", final_free=row.p, rounds=row.N,
                                                      retrain_epochs=row.B, seed=list(s.seeds)), abs=1e-6)
    sched = pd.read_csv(out / "schedules.csv")
    assert set(sched.schedule) == {"uniform", "lengthening", "cubic"}
    matching = pd.read_csv(out / "matching.csv")
    searches = {(x.p, x.baseline): x for x in res.analyses["matching"].rows}
    for row in matching.itertuples():
        sc = searches[(row.p_packnet, row.baseline)].scalar
        assert row.compression_minimize_scalar == pytest.approx(sc.compression, rel=1e-5)
        # its p' was trained and stored: the mean accuracy there is what the search saw
        acc = _stored_mean(store, strategy=row.baseline, final_free=sc.p_match, seed=list(s.seeds))
        assert (sc.p_match, pytest.approx(acc)) in [(q, a) for q, a in sc.evaluations]
    tasks = pd.read_csv(out / "matching_tasks.csv")
    assert set(tasks.who) == {"packnet", "memory", "multinet"}
    assert set(tasks.task) == set(range(1, s.n_tasks + 1))


def test_report_page_states_provenance_and_the_papers_numbers(report) -> None:
    s, _, res = report
    text = res.page.read_text()
    assert "sleepcl study all --preset tiny --benchmark mnist-5k" in text.splitlines()[2]  # the command, at the top
    assert "synthetic-platform" in text                      # the machine, from the records' environment
    assert "`tiny`" in text and "mnist-5k" in text and "seeds 0–5 (6)" in text
    for p, row in paper.TABLE1_COMPRESSION["mnist"].items():
        if p in s.matching_ps:
            assert f"{row['memory']:.2f}×" in text
    assert "paper" in text.lower()
    for c in res.claims:
        assert f"**{c.verdict}**" in text
    assert {c.key for c in res.claims} == {"a", "b", "c", "d"}


# ----------------------------------------------------------------------------------- claims follow the data


def _claims(tmp_path, s, world) -> dict[str, str]:
    store = stored(tmp_path, s, world)
    look = RecordLookup(store)
    budget = an.analyse_budget(s, look)
    claims = cl.check_claims(s, matching=an.analyse_matching(s, look), pruning=an.analyse_pruning(s, look),
                             budget=budget, nobudget=an.analyse_nobudget(s, look))
    store.close()
    return {c.key: c.verdict for c in claims}


def test_claims_supported_by_supporting_data(tmp_path) -> None:
    s = tiny(budget_ps=(0.95, 0.99), schedules_ps=(0.95,))  # not the matching p, whose PackNet runs (N = 1) set the compressions
    everywhere = good_world(s, budget_penalty=lambda p, n: 0.05 if n == 1 and p in s.budget_ps else 0.0)
    assert _claims(tmp_path, s, everywhere) == {k: cl.SUPPORTED for k in "abcd"}


def test_claim_c_is_judged_over_every_p(tmp_path) -> None:
    """good_world's one-shot penalty is at the largest p only: the pattern holds there and nowhere else."""
    s = tiny()
    assert _claims(tmp_path, s, good_world(s))["c"] == cl.PARTLY


def test_claims_flip_when_the_data_flips(tmp_path) -> None:
    s = tiny()
    flipped = good_world(
        s,
        packnet_compression=lambda p: {0.8: 0.7, 0.9: 0.5}.get(round(p, 6), 1.0),  # PackNet the MOST efficient
        multinet_factor=1.2,                                                        # ... and less so at larger p
        budget_penalty=lambda p, n: 0.05 if n > 1 else 0.0,                        # one-shot best (the MLP's opposite)
        nobudget_gain=lambda p, n: -0.02 * n)                                       # more rounds hurt
    verdicts = _claims(tmp_path, s, flipped)
    assert verdicts == {"a": cl.OPPOSITE, "b": cl.OPPOSITE, "c": cl.OPPOSITE, "d": cl.OPPOSITE}


def test_claim_b_alone_flips(tmp_path) -> None:
    s = tiny()
    shrinking = good_world(s, packnet_compression=lambda p: {0.8: 2.5, 0.9: 1.5}.get(round(p, 6), 1.2))
    v = _claims(tmp_path, s, shrinking)
    assert v["a"] == cl.SUPPORTED and v["b"] == cl.OPPOSITE


def test_empty_store_gives_a_report_that_says_so(tmp_path) -> None:
    s = tiny()
    with RunStore(tmp_path / "empty.sqlite") as store:
        res = write_report(s, store, tmp_path / "out", names=["budget", "nobudget"])
    text = res.page.read_text()
    assert "not in the store yet" in text and "sleepcl study budget --preset tiny" in text
    assert {c.verdict for c in res.claims} == {cl.NO_DATA}
    assert not (tmp_path / "out" / "budget.png").exists()
    assert not any(math.isfinite(v) for v in pd.read_csv(tmp_path / "out" / "budget.csv").get("mean", []))


# ----------------------------------------------------------------------------------- command line


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()  # `sleepcl study --threads 1` sets torch's thread count for the process
    yield
    torch.set_num_threads(before)


def test_cli_report_and_study_end_to_end(tmp_path, report, restore_threads) -> None:
    s, store, _ = report
    out = tmp_path / "rep"
    assert main(["report", "budget", "--preset", "tiny", "--benchmark", "mnist-5k", "--store", str(store.path),
                 "--out", str(out)]) == 0
    assert (out / "budget.png").exists() and "sleepcl report budget" in (out / "report.md").read_text()
    assert main(["report", "--preset", "tiny", "--store", str(tmp_path / "nope.sqlite"), "--out", str(out)]) == 2
    both = tmp_path / "both"  # several experiments in one report, in the study's order whatever the order given
    assert main(["report", "budget", "pruning", "--preset", "tiny", "--benchmark", "mnist-5k", "--store",
                 str(store.path), "--out", str(both)]) == 0
    text = (both / "report.md").read_text()
    assert "sleepcl report budget pruning" in text
    assert 0 < text.index("*Figure 1, MLP (widths 16x16) on mnist-5k") < text.index("*Figure 2, MLP (widths 16x16)")

    # real training: the tiny budget experiment, end to end, then a rerun that trains nothing
    path, out2 = tmp_path / "real.sqlite", tmp_path / "real"
    args = ["study", "budget", "--preset", "tiny", "--benchmark", "mnist-5k", "--store", str(path), "--out",
            str(out2), "--device", "cpu", "--quiet", "--threads", "1"]
    assert main(args) == 0
    text = (out2 / "report.md").read_text()
    assert "sleepcl study budget --preset tiny" in text and "cpu" in text
    with RunStore(path) as st:
        n = len(st)
        assert n == len(ex.budget_configs(ex.settings("tiny", "mnist-5k")))
    assert main(args) == 0
    with RunStore(path) as st:
        assert len(st) == n
    table = pd.read_csv(out2 / "budget.csv")
    assert table["n"].eq(2).all() and table["mean"].between(0.4, 1.0).all()


# ----------------------------------------------------------------------------------- per-run data


def _cell(m: float, se: float) -> str:
    return f"{m:.4f} ± {se:.4f}"


def test_runs_csv_recomputes_the_reports_numbers_with_pandas_alone(report) -> None:
    s, store, res = report
    text = res.page.read_text()
    runs = pd.read_csv(res.out_dir / "runs.csv")
    assert len(runs) == runs["config_hash"].nunique() == len(store)  # every run the report uses, once
    assert list(runs.columns[:9]) == list(an.RUN_COLUMNS)
    tasks = [c for c in runs.columns if c.startswith("acc_task_")]
    assert len(tasks) == s.n_tasks and [c for c in runs.columns if c.startswith("free_after_task_")]
    assert np.allclose(runs[tasks].mean(axis=1), runs["average_accuracy"])
    # Figure 2: mean ± s.e. over seeds of one (p, N) cell
    budget = runs[runs["experiments"].str.contains("budget")]
    cell = budget[(budget.final_free == 0.95) & (budget.rounds == 2)]["average_accuracy"]
    assert f"| 0.95 | 2 | 1 | {_cell(cell.mean(), cell.sem())} | 6 |" in text
    # Figure 1: PackNet's row at p = 0.9
    fig1 = runs[runs["experiments"].str.contains("pruning") & (runs.final_free == 0.9) & (runs.rounds == 1)
                & (runs.retrain_epochs == s.retrain_epochs) & (runs.schedule == "uniform")]
    row = fig1.groupby("strategy")["average_accuracy"].agg(["mean", "sem"])
    cells = [_cell(row.loc[st, "mean"], row.loc[st, "sem"]) for st in ("packnet", "memory", "multinet")]
    assert "| 0.9 | " + " | ".join(cells) + " |" in text
    # Table 1: baseline - PackNet at the same p, paired by seed
    pn = fig1[fig1.strategy == "packnet"].set_index("seed")["average_accuracy"]
    mem = fig1[fig1.strategy == "memory"].set_index("seed")["average_accuracy"]
    d = (mem - pn).dropna()
    assert f"| 0.9 | Memory | {pn.mean():.4f} | {d.mean():+.4f} ± {d.sem():.4f} (paired t, n = 6" in text


def test_export_then_import_continues_the_study_without_training(tmp_path) -> None:
    s = tiny()
    world = good_world(s)
    store = stored(tmp_path, s, world)
    export = tmp_path / "runs" / "mnist-5k.jsonl.gz"
    store.export(export)
    again = tmp_path / "again.jsonl.gz"
    store.export(again)
    assert export.read_bytes() == again.read_bytes()  # deterministic: a re-export does not change the file
    fresh = tmp_path / "fresh.sqlite"
    assert main(["results", "--import", str(export), "--store", str(fresh)]) == 0
    with RunStore(fresh) as st:
        assert sorted(st.hashes()) == sorted(store.hashes())
        later = SyntheticWorld()  # a later session: it must find every run instead of training
        summary = run_study("all", s, store=st, run=later.runner)
        assert summary["trained"] == 0 and later.calls == []
        a, b = write_report(s, st, tmp_path / "out").out_dir, write_report(s, store, tmp_path / "out2").out_dir
        for name in ("runs.csv", "claims.csv", "matching.csv", "budget_best.csv"):
            assert (a / name).read_bytes() == (b / name).read_bytes(), name  # the same report from the import
    assert main(["results", "--import", str(export), "--store", str(fresh)]) == 0  # again: nothing new
    store.close()


def test_a_report_ships_the_records_a_later_study_resumes_from(tmp_path) -> None:
    s = tiny()
    store = stored(tmp_path, s, good_world(s))
    out = write_report(s, store, tmp_path / "out").out_dir
    fresh = tmp_path / "fresh.sqlite"
    assert main(["results", "--import", str(out / "runs.jsonl.gz"), "--store", str(fresh)]) == 0
    with RunStore(fresh) as st:
        assert sorted(st.hashes()) == sorted(pd.read_csv(out / "runs.csv")["config_hash"])
        later = SyntheticWorld()
        assert run_study("all", s, store=st, run=later.runner)["trained"] == 0 and later.calls == []
        again = write_report(s, st, tmp_path / "again").out_dir
        for name in ("runs.csv", "runs.jsonl.gz", "claims.csv", "pruning.csv", "budget.csv"):
            assert (again / name).read_bytes() == (out / name).read_bytes(), name
    store.close()


def test_import_refuses_records_whose_config_does_not_hash_to_their_key(tmp_path, capsys) -> None:
    s = tiny()
    store = stored(tmp_path, s, good_world(s), names="budget")
    recs = store.query()
    recs[1]["config"]["seed"] = 99  # edited by hand: the hash no longer names this config
    bad = tmp_path / "bad.jsonl"
    from sleepcl.runs.records import write_records
    write_records(bad, recs)
    fresh = tmp_path / "fresh.sqlite"
    assert main(["results", "--import", str(bad), "--store", str(fresh)]) == 2
    assert "record 2's config hashes to" in capsys.readouterr().err
    with RunStore(fresh) as st:
        assert len(st) == 0  # nothing imported: every file is checked first
    assert main(["results", "--import", str(tmp_path / "nope.jsonl.gz"), "--store", str(fresh)]) == 2
    store.close()


# ----------------------------------------------------------------------------------- the committed reports

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
COMMITTED = sorted(p for p in RESULTS.glob("*/report.md") if (p.parent / "claims.csv").exists())  # the study's


def _group(runs: pd.DataFrame, experiment: str, **equal: float) -> pd.Series:
    keep = runs["experiments"].str.split(";").apply(lambda names: experiment in names)
    for col, value in equal.items():
        keep &= np.isclose(runs[col], value) if isinstance(value, float) else runs[col] == value
    return runs.loc[keep, "average_accuracy"]


@pytest.mark.parametrize("page", COMMITTED, ids=lambda p: p.parent.name)
def test_committed_report_tables_recompute_from_its_runs_csv(page: Path) -> None:
    """Every mean ± s.e. of a committed report's Figure 1, 2 and 4 tables, recomputed with pandas from the
    runs.csv beside it (the store behind the report is not needed)."""
    folder, text = page.parent, page.read_text()
    runs = pd.read_csv(folder / "runs.csv")
    checked = 0
    if (folder / "pruning.csv").exists():
        pruning = pd.read_csv(folder / "pruning.csv")
        for p in sorted(set(pruning["p"])):
            cells = []
            for st in dict.fromkeys(pruning["strategy"]):  # the report's columns, in its order
                acc = _group(runs, "pruning", strategy=st, final_free=float(p), rounds=1)
                cells.append(_cell(acc.mean(), acc.sem()) if len(acc) else "–")
            assert f"| {p:g} | " + " | ".join(cells) + " |" in text
            checked += 1
    if (folder / "budget.csv").exists():
        for r in pd.read_csv(folder / "budget.csv").itertuples():
            acc = _group(runs, "budget", final_free=float(r.p), rounds=int(r.N), retrain_epochs=int(r.R * r.N),
                         schedule="uniform")
            assert f"| {r.p:g} | {r.N} | {r.R} | {_cell(acc.mean(), acc.sem())} | {len(acc)} |" in text
            checked += 1
    if (folder / "nobudget.csv").exists():
        for r in pd.read_csv(folder / "nobudget.csv").itertuples():
            acc = _group(runs, "nobudget", final_free=float(r.p), rounds=int(r.N), retrain_epochs=int(r.B))
            assert f"| {r.p:g} | {r.N} | {r.R} | {r.B} | {_cell(acc.mean(), acc.sem())} | {len(acc)} |" in text
            checked += 1
    assert checked > 0


@pytest.mark.parametrize("page", COMMITTED, ids=lambda p: p.parent.name)
def test_committed_report_ships_the_records_of_its_runs(page: Path) -> None:
    """runs.jsonl.gz holds the full record of every run in runs.csv (what `results --import` resumes from)."""
    from sleepcl.runs.records import check_records, read_records

    records = check_records(read_records(page.parent / "runs.jsonl.gz"), "runs.jsonl.gz")
    runs = pd.read_csv(page.parent / "runs.csv").set_index("config_hash")
    assert sorted(r["config_hash"] for r in records) == sorted(runs.index)
    for r in records[:50]:
        assert r["average_accuracy"] == pytest.approx(runs.loc[r["config_hash"], "average_accuracy"], abs=1e-12)


def test_a_further_baseline_runs_beside_memory_and_multinet(tmp_path, capsys) -> None:
    s = tiny(baselines=("memory", "memory-grow", "multinet"))
    store = stored(tmp_path, s, good_world(s), names=["pruning", "matching"])
    out = write_report(s, store, tmp_path / "out").out_dir
    text = (out / "report.md").read_text()
    assert "| Memory (grow-only) mean ± s.e. |" in text
    assert {"memory", "memory-grow", "multinet"} <= set(pd.read_csv(out / "matching.csv")["baseline"])
    assert "memory-grow at p=" in pd.read_csv(out / "claims.csv").set_index("claim").loc["a", "evidence"]
    # a further baseline only adds runs: the default study's configs (and stored hashes) stay as they were
    default = {c.hash(): c for c in ex.study_configs(["pruning", "matching"], tiny())}
    more = {c.hash(): c for c in ex.study_configs(["pruning", "matching"], s)}
    assert set(default) < set(more) and {more[h].strategy for h in set(more) - set(default)} == {"memory-grow"}
    store.close()
    for bad, message in (("memory,nope", "unknown strategy nope"), ("packnet,memory", "other than packnet"),
                         (",", "names no strategy")):
        assert main(["study", "pruning", "--preset", "tiny", "--baselines", bad, "--store",
                     str(tmp_path / "x.sqlite")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x.sqlite").exists()


def test_the_readme_claims_summary_is_generated_from_the_committed_claims() -> None:
    """The README's claims table and sentences are exactly what sleepcl.study.summary writes from claims.csv."""
    from sleepcl.study import summary

    readme = (RESULTS.parents[1] / "README.md").read_text()
    block = summary.readme_block(RESULTS)
    assert block in readme
    # and the table says what each report's claims.csv says
    rows = [line for line in block.splitlines() if line.startswith("| (")]
    assert len(rows) == 4
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        key = cells[0][1]
        for column, text in zip(summary.COLUMNS, cells[1:]):
            verdicts = [pd.read_csv(RESULTS / f / "claims.csv").set_index("claim").loc[key, "verdict"]
                        for f in summary.COLUMNS[column]
                        if key in set(pd.read_csv(RESULTS / f / "claims.csv")["claim"])]
            assert len(verdicts) == 1 and text.split(" (")[0] == verdicts[0], (key, column, text)
