"""Answering without being told the task: the rules, `sleepcl predict` without --task on a 5-night model, and
the class-incremental score in `sleepcl run` records (old records without it still load)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sleepcl.cli import main
from sleepcl.nightly import NightlyModel, learn, predict
from sleepcl.task_inference import DEFAULT_RULE, RULES, infer, inference_accuracy, score_stats, task_scores

PAIRS = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]


# -- the rules ------------------------------------------------------------------------------------------

def test_rules_pick_the_task_that_answers_surely():
    # one sample, three tasks of 2, 2 and 3 classes (the last output of the 2-class tasks absent)
    ninf = float("-inf")
    logits = torch.tensor([[[0.1, 0.0, ninf], [4.0, -4.0, ninf], [0.2, 0.1, 0.0]]])
    for rule in RULES:
        task, cls = infer(logits, rule)
        assert task.tolist() == [1] and cls.tolist() == [0], rule
    # the entropy is normalised by log k: a 3-class task with a uniform answer scores as low as a 2-class one
    uniform = torch.tensor([[[0.0, 0.0, ninf], [1.0, 1.0, 1.0]]])
    s = task_scores(uniform, "entropy")
    assert torch.allclose(s, torch.tensor([[-1.0, -1.0]], dtype=torch.float64))


def test_calibrated_rule_measures_each_task_against_its_own_scores():
    # task 0 is loud on everything (energy ~ 10 on its own data), task 1 quiet (~ 1): raw energy gives every sample
    # to task 0; standardised by each task's own statistics, a sample on which task 0 is unusually quiet and task 1
    # unusually loud goes to task 1
    g = torch.Generator().manual_seed(0)
    own0 = torch.randn(200, 2, generator=g) + torch.tensor([10.0, 0.0])
    own1 = torch.randn(200, 2, generator=g) + torch.tensor([1.0, 0.0])
    stats = torch.stack([score_stats(own0, "energy"), score_stats(own1, "energy")])  # (T, 2)
    sample = torch.tensor([[[8.0, 0.0], [3.0, 0.0]]])
    assert infer(sample, "energy")[0].item() == 0
    assert infer(sample, "energy-z", stats)[0].item() == 1
    assert infer(sample, "energy-z")[0].item() == 0  # without statistics: the raw rule


def test_inference_accuracy_counts_task_and_class():
    logits = torch.tensor([[[3.0, 0.0], [0.0, 1.0]],     # task 0, class 0
                           [[0.0, 0.1], [0.0, 5.0]],     # task 1, class 1
                           [[0.0, 4.0], [0.0, 0.0]]])    # task 0, class 1
    acc = inference_accuracy(logits, torch.tensor(0), torch.tensor([0, 0, 0]), ("energy",))["energy"]
    assert math.isclose(float(acc["task"]), 2 / 3) and math.isclose(float(acc["class_incremental"]), 1 / 3)


# -- predict without --task ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def five_nights(tmp_path_factory):
    """A 5-night model of the digit pairs of the 5,000 MNIST digits, and each pair's test file."""
    from sleepcl.data.datasets import load_raw

    raw = load_raw("mnist-5k")
    folder = tmp_path_factory.mktemp("five")
    path = folder / "m.st"
    tests = []
    for k, pair in enumerate(PAIRS):
        m = np.isin(raw.train_y, pair)
        np.savez(folder / f"t{k}.npz", x=raw.train_x[m, 0], y=raw.train_y[m])
        mt = np.isin(raw.test_y, pair)
        np.savez(folder / f"t{k}_test.npz", x=raw.test_x[mt, 0], y=raw.test_y[mt])
        tests.append(folder / f"t{k}_test.npz")
        learn(path, f"pair{k}", folder / f"t{k}.npz", widths=(48, 48), epochs=3, retrain_epochs=2, rounds=1,
              final_free=0.3, expected_tasks=5, threads=1)
    xs = [np.load(f)["x"] for f in tests]
    ys = [np.load(f)["y"] for f in tests]
    np.savez(folder / "mixed.npz", x=np.concatenate(xs), y=np.concatenate(ys))
    return path, tests, folder / "mixed.npz"


def test_predict_without_task_prints_task_inference_accuracy(five_nights, capsys, tmp_path):
    path, tests, mixed = five_nights
    assert main(["predict", str(path), "--data", str(mixed), "--output", str(tmp_path / "p.csv")]) == 0
    out = capsys.readouterr().out
    assert f"task inferred by {DEFAULT_RULE}" in out and "task-inference accuracy" in out
    assert "accuracy over all classes seen" in out
    assert (tmp_path / "p.csv").read_text().splitlines()[0] == "row,task,prediction,confidence,label"

    r = predict(path, None, mixed)
    y = np.load(mixed)["y"]
    truth_task = y // 2
    # the class-incremental score is task and class right, sample by sample
    right = (r["task_index"] == truth_task) & (np.array(r["predictions"]) == y)
    assert r["accuracy"] == pytest.approx(right.mean()) and r["task_accuracy"] == pytest.approx(
        (r["task_index"] == truth_task).mean())
    assert r["accuracy"] <= r["task_accuracy"] and r["accuracy"] <= r["task_aware_accuracy"]
    assert r["task_accuracy"] > 0.25  # above the 0.2 of guessing among 5 tasks (0.286 on this machine)
    # told the task: the same as predicting each task's file with --task
    told = [predict(path, f"pair{k}", f) for k, f in enumerate(tests)]
    n = sum(t["n"] for t in told)
    assert r["task_aware_accuracy"] == pytest.approx(sum(t["accuracy"] * t["n"] for t in told) / n)
    # every rule runs, and the tasks' calibration statistics are in the file
    assert all("score_stats" in t for t in NightlyModel.load(path).tasks)
    for rule in RULES:
        assert predict(path, None, mixed, rule=rule)["rule_used"] == rule


def test_predict_without_task_needs_the_true_task_when_labels_leave_it_open(five_nights, capsys, tmp_path):
    path, tests, _ = five_nights
    # labels 0..1 relabelled as 2..3: still classes of one task each, so scored, as task pair1
    r = predict(path, None, tests[0], true_task="pair0")
    assert r["task_accuracy"] is not None and r["true_task"] == "pair0"
    x = np.load(tests[0])["x"]
    np.savez(tmp_path / "odd.npz", x=x, y=np.full(len(x), 11))
    with pytest.raises(ValueError, match="classes of no task"):
        predict(path, None, tmp_path / "odd.npz")
    with pytest.raises(ValueError, match="not classes of task 'pair1'"):
        predict(path, None, tests[0], true_task="pair1")
    with pytest.raises(ValueError, match="go with predicting without --task"):
        predict(path, "pair0", tests[0], rule="energy")


# -- the class-incremental score in run records ---------------------------------------------------------

def test_run_records_hold_the_class_incremental_score_and_old_records_load(mnist5k, tmp_path):
    from sleepcl.config import RunConfig
    from sleepcl.engine.population import train_population
    from sleepcl.runs.records import check_records, environment, make_record
    from sleepcl.study.analysis import runs_table

    configs = [RunConfig(epochs=1, retrain_epochs=1, seed=s, final_free=0.5) for s in (0, 1)]
    results = train_population(configs, mnist5k)
    recs = [make_record(r, environment("cpu")) for r in results]
    for rec in recs:
        assert 0 <= rec["class_incremental_accuracy"] <= rec["task_inference_accuracy"] <= 1
        assert rec["class_incremental_accuracy"] <= rec["average_accuracy"] + 1e-12
        assert set(RULES) <= set(rec["task_inference"]) and rec["task_inference"]["default_rule"] == DEFAULT_RULE
    assert "class_incremental_accuracy" in runs_table(recs, {}).columns
    old = [{k: v for k, v in r.items() if k not in ("class_incremental_accuracy", "task_inference_accuracy",
                                                     "task_inference")} for r in recs]
    assert check_records(old, "old.json") == old  # config hashes unchanged, records without the score still load
    assert "class_incremental_accuracy" not in runs_table(old, {}).columns
