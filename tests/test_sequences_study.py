"""The study across the number of tasks (sleepcl sequences): configs, the matching and trend analysis, the report."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from sleepcl.cli import main
from sleepcl.runs.store import RunStore
from sleepcl.study.run import RecordLookup
from sleepcl.study.sequences import (PRESETS, SEQUENCE_STRATEGIES, SequenceSettings, Trend, analyse, eval_every,
                                     match, sequence_configs, trend_of_compression)
from sleepcl.study.sequences_report import COSTS_FILE

TINY = PRESETS["tiny"]


def test_configs_of_the_study():
    s = PRESETS["cpu"]
    configs = sequence_configs(s)
    assert len(configs) == len(s.tasks) * (3 * len(s.grid) + 2 * len(s.baseline_grid)) * len(s.seeds)
    assert {c.final_free for c in configs if c.strategy == "packnet"} == set(s.grid)
    assert {c.final_free for c in configs if c.strategy == "memory"} == set(s.grid + s.baseline_grid)
    assert len({c.hash() for c in configs}) == len(configs)
    assert {c.n_tasks for c in configs} == {5, 10, 20, 50} and {c.benchmark for c in configs} == {"permuted-mnist-5k"}
    assert [eval_every(s, t) for t in s.tasks] == [1, 2, 4, 10]
    assert all(c.rounds == 1 and c.epochs == s.epochs for c in configs)
    for c in configs[:: len(s.seeds)]:
        c.resolved()
    with pytest.raises(ValueError, match="grid"):
        SequenceSettings("x", "permuted-mnist-5k", (5,), (0.5, 0.9), (0.8,), (0,), 1, 1)


# --------------------------------------------------------------------------------------------- analysis


def synthetic_frame(compressions: dict[int, float], p: float = 0.9, noise: float = 0.002) -> pd.DataFrame:
    """Runs whose answer is known: the baseline's accuracy is linear in log(1 - p) (so the monotone fit is exact),
    and PackNet at ``p`` has the baseline's accuracy at p' = 1 - (1 - p) / compression[T]."""
    grid = PRESETS["cpu"].grid
    g = np.random.default_rng(0)
    rows = []
    for t, c in compressions.items():
        for seed in range(4):
            for q in grid:
                rows.append({"T": t, "strategy": "memory", "p": q, "seed": seed,
                             "accuracy": 1 + 0.1 * math.log1p(-q) + noise * g.standard_normal()})
            rows.append({"T": t, "strategy": "packnet", "p": p, "seed": seed,
                         "accuracy": 1 + 0.1 * math.log((1 - p) / c) + noise * g.standard_normal()})
    return pd.DataFrame(rows)


def test_match_recovers_a_known_compression_and_the_trend_its_growth():
    truth = {5: 2.0, 10: 4.0, 20: 8.0, 50: 20.0}  # compression proportional to T: slope 1 in log-log
    df = synthetic_frame(truth)
    s = SequenceSettings("x", "permuted-mnist-5k", tuple(truth), PRESETS["cpu"].grid, (0.9,), (0, 1, 2, 3), 1, 1,
                         n_bootstrap=300)
    matches = [match(df, s, t, "memory", 0.9) for t in truth]
    for m, c in zip(matches, truth.values()):
        assert m.matched and m.compression == pytest.approx(c, rel=0.05)
        lo, hi = m.interval()
        assert lo <= m.compression <= hi and hi / lo < 1.5
    trend = trend_of_compression(s, matches, "memory", 0.9)
    assert trend.slope == pytest.approx(1.0, abs=0.05) and trend.low > 0 and trend.verdict == "grows with T"
    flat = [match(synthetic_frame({t: 3.0 for t in truth}), s, t, "memory", 0.9) for t in truth]
    assert trend_of_compression(s, flat, "memory", 0.9).verdict.startswith("no clear trend")
    assert Trend("memory", 0.9, "accuracy gap", (5,), math.nan, math.nan, math.nan).verdict == "no data"


def test_a_target_off_the_grid_is_not_matched_and_the_seeds_off_the_grid_are_counted():
    df = synthetic_frame({5: 2.0, 10: 1e6})  # at T = 10 PackNet is worse than the baseline at every grid point
    s = SequenceSettings("x", "permuted-mnist-5k", (5, 10), PRESETS["cpu"].grid, (0.9,), (0, 1, 2, 3), 1, 1,
                         n_bootstrap=100)
    m = match(df, s, 10, "memory", 0.9)
    assert not m.matched and "not extrapolating" in m.message and m.bound() == f">= {0.1 / (1 - 0.995):.4g}"
    assert m.censored_high == 4 and m.censored_low == 0  # every seed left out: still below the grid
    assert trend_of_compression(s, [match(df, s, 5, "memory", 0.9), m], "memory",
                                0.9).verdict == "no data"  # one matched T is no trend


# --------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sequences")
    store, out = folder / "runs.sqlite", folder / "report"
    args = ["sequences", "--preset", "tiny", "--store", str(store), "--out", str(out), "--threads", "1", "--quiet"]
    assert main(args) == 0
    return store, out, args


def test_the_tiny_study_writes_its_report_and_per_run_data(tiny_study):
    store, out, args = tiny_study
    page = (out / "report.md").read_text()
    assert page.startswith("# Freezing's cost across the number of tasks")
    assert f"**Command:** `sleepcl {' '.join(args[:-1])}`" in page  # --quiet is not part of the command
    assert "## Verdict" in page and "jackknife-t interval" in page and "2 seeds per point" in page
    for name in ("accuracy_by_T.png", "compression_by_T.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    runs = pd.read_csv(out / "runs.csv")
    n = len(sequence_configs(TINY))
    assert len(runs) == n and set(runs["T"]) == set(TINY.tasks) and set(runs.strategy) == set(SEQUENCE_STRATEGIES)
    for column in ("config_hash", "seed", "p", "accuracy", "final_accuracy", "free_fraction", "layer_free_fraction"):
        assert column in runs.columns
    assert all(len(json.loads(v)) == t for v, t in zip(runs.final_accuracy, runs["T"]))
    assert np.allclose(runs.free_fraction, runs.p, atol=0.01)
    costs = json.loads((out / COSTS_FILE).read_text())
    assert set(costs) == {f"{t}/{st}" for t in TINY.tasks for st in SEQUENCE_STRATEGIES}
    assert all(len(c) == 1 and c[0]["peak_rss_bytes"] > 0 and c[0]["p"] == list(TINY.ps(key.split("/")[1]))
               and c[0]["members"] == len(TINY.ps(key.split("/")[1])) * len(TINY.seeds) for key, c in costs.items())
    assert set(runs[runs.strategy == "memory"].p) == {0.5, 0.8, 0.95, 0.98} and 0.98 not in set(runs[runs.strategy == "packnet"].p)
    a = analyse(TINY, RecordLookup(RunStore(store, read_only=True)))
    assert a.missing == 0 and len(a.costs) == len(TINY.tasks) * 3 and len(a.trends) == 4


def test_the_study_resumes_from_the_store(tiny_study, capsys):
    store, out, args = tiny_study
    assert main(args) == 0
    assert "trained 0 runs" in capsys.readouterr().out
    assert main([*args, "--no-train"]) == 0


def test_the_reproduce_line_imports_the_reports_records_and_trains_nothing(tiny_study, tmp_path, no_training):
    import shlex

    from sleepcl.runs.records import read_records

    store, out, args = tiny_study
    records = read_records(out / "runs.jsonl.gz")
    assert sorted(r["config_hash"] for r in records) == sorted(pd.read_csv(out / "runs.csv").config_hash)
    line = next(x for x in (out / "report.md").read_text().splitlines() if x.startswith("- **Reproduce:**"))
    importing, reporting = (shlex.split(part) for part in line.split("`")[1].split(" && "))
    fresh, again = tmp_path / "fresh.sqlite", tmp_path / "again"
    again.mkdir()
    (again / COSTS_FILE).write_text((out / COSTS_FILE).read_text())
    swap = {"runs.sqlite": str(fresh)}
    assert main([swap.get(a, a) for a in importing[1:]]) == 0
    reporting = [swap.get(a, a) for a in reporting[1:]]
    reporting[reporting.index("--out") + 1] = str(again)
    assert main(reporting) == 0
    assert (again / "runs.csv").read_text() == (out / "runs.csv").read_text()


def test_bad_input_is_refused_before_training(no_training, tmp_path, capsys):
    base = ["sequences", "--preset", "tiny", "--store", str(tmp_path / "s.sqlite"), "--out", str(tmp_path / "r")]
    assert main([*base, "--tasks", "2,300"]) == 2
    assert "at most 255 tasks fit" in capsys.readouterr().err
    assert main([*base, "--threads", "0"]) == 2
    assert "--threads must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--preset", "huge"])
    (tmp_path / "file").write_text("")
    assert main([*base[:-1], str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_memory_measurements_of_each_training_are_kept(tmp_path):
    from sleepcl.study.sequences import read_costs, run_sequences

    asked = []

    def fake_run(configs, **kwargs):
        asked.append(len(configs))
        return []

    costs = tmp_path / COSTS_FILE
    for _ in range(2):  # a store that keeps nothing: every group is trained again, and measured again
        assert run_sequences(TINY, store=None, costs=costs, run=fake_run) == len(sequence_configs(TINY))
    measured = read_costs(costs)
    assert asked == [6, 8, 8, 6, 8, 8] * 2 and all(len(v) == 2 for v in measured.values())
    assert measured["4/memory"][1]["members"] == 8 and measured["4/memory"][1]["p"] == [0.5, 0.8, 0.95, 0.98]
