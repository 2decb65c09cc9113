"""Every committed study report reproduces from its own runs.jsonl.gz: its Reproduce command, run on a fresh store
holding just those runs, trains nothing and writes the same tables; its Resume line names the same settings (every
run of the report's fixed grids is among its runs, so resuming trains none of them again)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pandas as pd
import pytest

from sleepcl.cli import build_parser, main
from sleepcl.study import experiments as ex
from sleepcl.study.run import RecordLookup

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
COMMITTED = sorted(p for p in RESULTS.glob("*/report.md") if (p.parent / "claims.csv").exists())


def _line(text: str, label: str) -> str:
    found = re.search(rf"^- \*\*{label}:\*\* `([^`]*)`", text, flags=re.M)
    assert found, f"no {label} line"
    return found.group(1)


def _swap(args: list[str], flag: str, value: str) -> list[str]:
    i = args.index(flag)
    return [*args[: i + 1], value, *args[i + 2:]]


@pytest.mark.parametrize("page", COMMITTED, ids=lambda p: p.parent.name)
def test_the_reproduce_command_rewrites_the_same_tables_from_the_reports_runs(page: Path, tmp_path, no_training,
                                                                              monkeypatch) -> None:
    from sleepcl.study import report

    monkeypatch.setattr(report._Writer, "figure", lambda self, name, fig: [])  # the tables are compared, not plots
    text = page.read_text()
    importing, reporting = (shlex.split(part) for part in _line(text, "Reproduce").split(" && "))
    assert importing[:2] == ["sleepcl", "results"] and reporting[:2] == ["sleepcl", "report"]
    store, out = tmp_path / "runs.sqlite", tmp_path / "out"
    monkeypatch.chdir(ROOT)  # the commands name the report's folder relative to the repository
    assert main(_swap(importing[1:], "--store", str(store))) == 0
    assert main(_swap(_swap(reporting[1:], "--store", str(store)), "--out", str(out))) == 0
    committed = page.parent
    assert Path(reporting[reporting.index("--out") + 1]).resolve() == committed.resolve()
    compared = 0
    for f in sorted(committed.glob("*.csv")):
        pd.testing.assert_frame_equal(pd.read_csv(out / f.name), pd.read_csv(f), check_exact=True, obj=f.name)
        compared += 1
    for f in sorted(committed.glob("*.md")):
        if f.name != "report.md":
            assert (out / f.name).read_text() == f.read_text(), f.name
            compared += 1
    table = [line for line in text.splitlines() if line.startswith("| (")]  # the claims table
    assert table and table == [line for line in (out / "report.md").read_text().splitlines() if line.startswith("| (")]
    assert compared >= 3


@pytest.mark.parametrize("page", COMMITTED, ids=lambda p: p.parent.name)
def test_the_resume_line_names_the_settings_of_the_reports_runs(page: Path) -> None:
    from sleepcl.cli.study import _names, _settings
    from sleepcl.runs.records import read_records

    resume = shlex.split(_line(page.read_text(), "Resume or extend"))
    assert resume[:2] == ["sleepcl", "study"]
    args = build_parser().parse_args(resume[1:])
    lookup = RecordLookup(None)
    lookup.add(read_records(page.parent / "runs.jsonl.gz"))
    missing = lookup.records(ex.study_configs(_names(args), _settings(args)))[1]
    assert not missing, f"resuming would train {len(missing)} runs of the fixed grids again"


def test_the_sequences_report_reproduces_from_its_own_runs(tmp_path, no_training, monkeypatch) -> None:
    """The study across T: its Reproduce command (importing its runs.jsonl.gz into a fresh store, or re-analysing
    its runs.csv where the full records were not kept) trains nothing and writes the same runs.csv and tables."""
    import shutil

    from sleepcl.study import sequences_report

    monkeypatch.setattr(sequences_report, "_save_figure", lambda fig, path: None)  # tables compared, not plots
    committed = RESULTS / "permuted-mnist-5k-sequences-cpu"
    text = (committed / "report.md").read_text()
    commands = [shlex.split(part) for part in _line(text, "Reproduce").split(" && ")]
    *importing, args = commands
    assert args[:2] == ["sleepcl", "sequences"]
    out, store = tmp_path / "out", tmp_path / "runs.sqlite"
    out.mkdir()
    shutil.copy(committed / "memory.json", out / "memory.json")  # the peak memory measured while training
    monkeypatch.chdir(ROOT)
    if importing:  # the full records: imported into a fresh store, then the report written from it alone
        assert importing[0][:2] == ["sleepcl", "results"] and (committed / "runs.jsonl.gz").exists()
        assert main(_swap(importing[0][1:], "--store", str(store))) == 0
        args = _swap(args, "--store", str(store))
        assert "--no-train" in args
    else:
        assert "--from-runs-csv" in args
    assert main(_swap(args[1:], "--out", str(out))) == 0
    assert (out / "runs.csv").read_text() == (committed / "runs.csv").read_text()
    new = (out / "report.md").read_text().splitlines()
    kept = [line for line in text.splitlines() if line.startswith(("| ", "- Compression trends", "- Accuracy gap"))]
    assert kept and kept == [line for line in new if line.startswith(("| ", "- Compression trends", "- Accuracy gap"))]
