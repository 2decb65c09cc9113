"""Start-up of the commands a nightly job runs: `learn`, `predict`, `inspect` and `--help` load neither scipy, pandas
nor matplotlib (they cost a short night's seconds: benchmarks/README.md, "Start-up"), and progress written to a log
is whole lines."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np

from sleepcl.cli.common import PlainProgress, Progress

HEAVY = ("scipy", "pandas", "matplotlib")


def loaded_after(code: str, cwd) -> list[str]:
    """The heavy modules loaded once ``code`` has run in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", code + f"\nimport sys, json\nprint(json.dumps([m for m in {HEAVY!r} "
                                                       "if m in sys.modules]))"],
                         cwd=cwd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_help_and_the_nightly_commands_load_no_scipy_pandas_or_matplotlib(tmp_path):
    g = np.random.default_rng(0)
    y = np.arange(80) % 2
    x = (g.integers(0, 60, (80, 6, 6)) + 150 * y[:, None, None]).astype(np.uint8)
    np.savez(tmp_path / "a.npz", x=x, y=y)
    code = """
import contextlib, io
from sleepcl.cli import main
for argv in (["--help"], ["learn", "--help"], ["predict", "--help"], ["sequences", "--help"]):
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            main(argv)
        except SystemExit:
            pass
with contextlib.redirect_stdout(io.StringIO()):
    assert main(["learn", "m.st", "--task", "a", "--data", "a.npz", "--widths", "8,8", "--epochs", "1",
                 "--retrain-epochs", "1", "--threads", "1", "--quiet"]) == 0
    assert main(["predict", "m.st", "--task", "a", "--data", "a.npz"]) == 0
    assert main(["predict", "m.st", "--data", "a.npz"]) == 0
    assert main(["inspect", "m.st"]) == 0
"""
    assert loaded_after(code, tmp_path) == []
    assert loaded_after("import sleepcl.study.analysis", tmp_path) == ["scipy", "pandas"]  # the check can fail


def test_progress_in_a_log_is_whole_lines():
    now = [0.0]
    out = io.StringIO()
    p = PlainProgress(out, interval=10.0, clock=lambda: now[0])
    text = "population 1/1 (8 members) · task 3/5 · retrain 2/72 · a description much longer than eighty columns"
    for step in range(0, 101):
        now[0] = step * 0.5  # 50 s in all: a line at 0, 10, 20, 30, 40 s and one at 100 %
        p.update(0, text, step, 100)
    p.update(1, "population 2/2", 3, 50)
    p.finish()
    lines = out.getvalue().splitlines()
    assert len(lines) == 7, lines
    assert all(text in line for line in lines[:6]) and "100/100 (100%)" in lines[5]
    assert "20/100 (20%)" in lines[1] and "ETA 0:00:40" in lines[1]
    assert "population 2/2" in lines[6] and "3/50" in lines[6]


def test_progress_bar_goes_plain_when_output_is_not_a_terminal():
    out = io.StringIO()
    with Progress(False, terminal=False, stream=out) as update:
        assert update is not None
    with Progress(True, terminal=False, stream=out) as update:
        assert update is None
