"""The study's Figure 1 with the task never told: the class-incremental score beside the task-aware one (issue 22)."""

from __future__ import annotations

import pandas as pd

from sleepcl.runs.store import RunStore
from sleepcl.study import experiments as ex
from sleepcl.study.report import write_report
from sleepcl.study.run import run_study
from sleepcl.threads import torch_threads


def test_the_report_shows_the_score_with_the_task_never_told(tmp_path):
    s = ex.settings("tiny", "mnist-5k", seeds=[0, 1])
    with torch_threads(1), RunStore(tmp_path / "runs.sqlite") as store:
        run_study(["pruning"], s, store=store, device="cpu")
        out = write_report(s, store, tmp_path / "out", names=["pruning"]).out_dir
        records = store.query()
    told = pd.read_csv(out / "pruning.csv")
    untold = pd.read_csv(out / "pruning_untold.csv")
    assert len(untold) == len(told) == len(s.strategies) * len(s.pruning_grid)
    both = told.merge(untold, on=["strategy", "p"], suffixes=("_told", "_untold"))
    # a sample is right untold only when its task is inferred right and then its class: never above told
    assert (both["mean_untold"] <= both["mean_told"] + 1e-12).all()
    assert (both["mean_untold"] > 0).all() and (both["n_untold"] == 2).all()
    by_run = {r["config_hash"]: r for r in records}
    assert all(r["class_incremental_accuracy"] <= r["average_accuracy"] + 1e-12 for r in by_run.values())
    report = (out / "report.md").read_text()
    assert "task untold, mean ± s.e." in report and "the class-incremental score" in report
