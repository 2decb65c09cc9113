"""Issue 19's smaller items: ``sleepcl study paradigms`` is ``sleepcl paradigms``, and ER's buffer is counted
when populations are sized (``runs.runner.memory_plan``), as its record counts it."""

from __future__ import annotations

import dataclasses

import torch

from sleepcl.cli import main
from sleepcl.config import RunConfig
from sleepcl.runs.runner import memory_plan


def test_study_paradigms_is_the_paradigms_command(monkeypatch):
    import sleepcl.cli.paradigms as paradigms

    seen = []
    monkeypatch.setattr(paradigms, "cmd_paradigms", lambda args: seen.append(args) or 0)
    argv = ["--preset", "tiny", "--benchmark", "fashion-mnist", "--seeds", "0-1", "--no-report"]
    assert main(["study", "paradigms", *argv]) == 0
    assert main(["paradigms", *argv]) == 0
    alias, direct = (vars(a) for a in seen)
    assert alias == direct and alias["command"] == "paradigms" and alias["preset"] == "tiny"


def test_paradigms_beside_other_experiments_is_refused_with_the_fix(capsys, no_training):
    assert main(["study", "pruning", "paradigms", "--preset", "tiny"]) == 2
    assert "sleepcl study paradigms [options]" in capsys.readouterr().err


def test_ers_buffer_is_counted_when_populations_are_sized():
    base = RunConfig(benchmark="mnist-5k", strategy="finetune", seed=0).resolved()
    er = dataclasses.replace(base, strategy="er", strategy_options={"buffer": 1000}).resolved()
    small = dataclasses.replace(er, strategy_options={"buffer": 10}).resolved()
    cpu = torch.device("cpu")
    plans = [memory_plan(c, cpu, 2**34) for c in (base, small, er)]
    # a buffer of n samples: n MNIST inputs (784 float32) with their label and task (int64), as ER's record says
    assert plans[1].per_member - plans[0].per_member == 10 * (784 * 4 + 16)
    assert plans[2].per_member - plans[0].per_member == 1000 * (784 * 4 + 16)
