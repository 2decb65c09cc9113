"""``sleepcl paradigms``: every paradigm with nights of N = 1 and more rounds, its report from the store alone."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from sleepcl.cli import main
from sleepcl.runs.records import read_records
from sleepcl.study.paradigms import PRESETS, ParadigmSettings, analyse, paradigm_configs, paradigm_settings
from sleepcl.study.run import RecordLookup


def test_every_paradigm_takes_the_same_nights_and_budget():
    s = PRESETS["quick"]
    configs = [c.resolved() for c in paradigm_configs(s)]
    nights = [c for c in configs if c.night != "none"]
    assert {c.strategy for c in nights} == set(s.strategies)
    assert {(c.epochs, c.retrain_epochs, c.batch_size) for c in configs} == {(4, 8, 128)}
    assert {c.rounds for c in nights} == {1, 4} and {c.final_free for c in nights} == set(s.grid)
    # PackNet's and Memory's runs are the main study's runs (the night is their default: the same hash)
    assert all(c.night is None for c in configs if c.strategy in ("packnet", "memory"))
    assert len(configs) == len({c.hash() for c in configs}) == 7 * 4 * 2 * 5 + 5 * 5
    fashion = [c.resolved() for c in paradigm_configs(paradigm_settings("quick", "fashion-mnist"))]
    assert {(c.benchmark, c.epochs, c.retrain_epochs) for c in fashion} == {("fashion-mnist", 1, 4)}
    assert {(c.epochs, c.retrain_epochs) for c in paradigm_configs(PRESETS["paper"])} == {(72, 72)}
    with pytest.raises(ValueError, match="'paper' preset runs on mnist-5k, not 'fashion-mnist'"):
        paradigm_settings("paper", "fashion-mnist")
    with pytest.raises(ValueError, match="do not divide B"):
        dataclasses.replace(s, rounds=(1, 3))
    with pytest.raises(ValueError, match="compares N = 1 with more rounds"):
        dataclasses.replace(s, rounds=(2, 4))


def test_the_tiny_preset_trains_then_reports_from_the_store(tmp_path):
    store, out = tmp_path / "s.sqlite", tmp_path / "report"
    args = ["paradigms", "--preset", "tiny", "--store", str(store), "--out", str(out), "--quiet", "--threads", "1"]
    assert main(args) == 0
    s = PRESETS["tiny"]
    n = len(paradigm_configs(s))
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == n == len(read_records(out / "runs.jsonl.gz"))
    assert set(runs.night) == {"rounds", "none"}
    assert (runs[runs.strategy == "er"].memory_bytes > 0).all()
    page = (out / "report.md").read_text()
    for label in ("PackNet — freezing", "ER — bounded replay", "LwF — distillation", "### Without a night"):
        assert label in page
    assert "against N = 1 in the same budget" in page and "not shown" in page  # 2 seeds: nothing is called
    before = (out / "runs.csv").read_bytes()
    assert main([*args, "--no-train"]) == 0  # the report from the store alone, the same runs
    assert (out / "runs.csv").read_bytes() == before


def test_analysis_compares_rounds_by_seed_and_matches_against_memory(tmp_path):
    s = ParadigmSettings(preset="t", benchmark="mnist-5k", strategies=("packnet", "memory"), grid=(0.5, 0.9),
                         rounds=(1, 2), seeds=(0, 1, 2), epochs=1, retrain_epochs=2, n_bootstrap=20)
    records = []
    for c in paradigm_configs(s):  # made-up accuracies: two rounds better by 0.01 + seed/1000, Memory by 0.05
        c = c.resolved()
        acc = 0.8 + 0.1 * (c.final_free == 0.5) + 0.01 * (c.rounds == 2) + c.seed / 1000 + 0.05 * (c.strategy == "memory")
        records.append({"config_hash": c.hash(), "config": c.to_dict(), "average_accuracy": acc,
                        "final_accuracy": [acc], "timings": {}})
    lookup = RecordLookup(None)
    lookup.add(records)
    a = analyse(s, lookup)
    assert a.missing == 0
    c = a.nights[("packnet", 0.9)]
    assert c.diff == pytest.approx(0.01) and c.n == 3 and c.test == "paired t" and c.significant
    [m05, m09] = sorted((m for m in a.matches if m.n == 2), key=lambda m: m.p)
    assert not m05.result.in_range  # Memory at p = 0.5 beats PackNet everywhere on the grid
    assert m09.result.in_range and m09.ratio > 1  # PackNet needs more weights than Memory at p = 0.9
