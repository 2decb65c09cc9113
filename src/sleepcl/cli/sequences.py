"""``sleepcl sequences``: the study across the number of tasks (train what is missing, then write its report)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .common import add_report_study_options, check_report_folder, report_study_command

__all__ = ["add_parser"]


def preset_name(name: str) -> str:
    """``--preset``, checked when the command runs: the presets live beside the study, which needs pandas and
    scipy, and ``sleepcl --help`` must not load them."""
    from ..study.sequences import sequence_settings

    try:
        sequence_settings(name)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return name


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sequences", help="the study across the number of tasks T: Figure 1 and the matching experiment at each T",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train PackNet, Memory and Multinet over a grid of final free fractions p at several sequence "
                    "lengths T on a Permuted benchmark (what the results store lacks: an interrupted study resumes), "
                    "then write report.md, runs.csv and the figures: accuracy against p at every T, the compression "
                    "ratio against T with jackknife-t intervals, whether the gap grows with T, and what each "
                    "strategy cost (time, peak memory).")
    p.add_argument("--preset", default="cpu", type=preset_name,
                   help="cpu: sized to a 2-core CPU (324 runs; 44 min of training here beside other jobs); tiny: a "
                        "seconds-long smoke test")
    p.add_argument("--tasks", default=None, metavar="T,T,...", help="replace the preset's sequence lengths")
    p.add_argument("--seeds", default=None, help="replace the preset's seeds, e.g. 0-4")
    add_report_study_options(p, "<benchmark>-sequences-<preset>")
    p.add_argument("--from-runs-csv", default=None, metavar="FILE",
                   help="write the report from a report's runs.csv (its runs' full records not kept); trains nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sequences)


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this invocation (every option that differs from its default)."""
    return report_study_command(["sleepcl", "sequences", "--preset", args.preset], args,
                                ("tasks", "seeds", "store", "out", "threads", "max_population", "max_memory",
                                 "from_runs_csv"))


def cmd_sequences(args: argparse.Namespace) -> int:
    from ..config import parse_int_list
    from ..runs.memory import parse_size
    from ..runs.runner import resolve_device
    from ..study.sequences import run_sequences, sequence_configs, sequence_settings
    from ..study.sequences_report import COSTS_FILE, default_out_dir, write_sequences_report
    from ..threads import check_threads, torch_threads
    from .common import Progress, console, open_store

    tasks = parse_int_list(args.tasks, "--tasks") if args.tasks else None
    seeds = parse_int_list(args.seeds, "--seeds") if args.seeds else None
    s = sequence_settings(args.preset).with_overrides(tasks, seeds)
    for c in sequence_configs(s, s.tasks[-1])[:1] + sequence_configs(s, s.tasks[0])[:1]:
        c.resolved()  # refuses a T the benchmark or the owner map cannot hold, before anything else
    check_threads(args.threads)
    device = resolve_device(args.device)
    out = Path(args.out) if args.out is not None else default_out_dir(s)
    check_report_folder(out, write=not args.no_report)
    if args.from_runs_csv is not None and not Path(args.from_runs_csv).is_file():
        raise ValueError(f"--from-runs-csv {args.from_runs_csv}: no such file")
    store = None if args.from_runs_csv else open_store(args.store, read_only=args.no_train)
    con = console()
    started = time.perf_counter()
    trained = None
    if not args.no_train and store is not None:
        con.print(f"[bold]sleepcl sequences[/] · {s.benchmark} · preset {s.preset} · {s.describe()} · store {store.path}")
        with torch_threads(args.threads), Progress(args.quiet) as progress:
            trained = run_sequences(s, store=store, costs=out / COSTS_FILE, log=con.print, device=device,
                                    max_population=args.max_population, progress=progress,
                                    max_memory=parse_size(args.max_memory) if args.max_memory else None)
        con.print(f"trained {trained} runs in {(time.perf_counter() - started) / 60:.1f} min")
    if not args.no_report:
        page = write_sequences_report(s, store, out, command=_command(args),
                                      wall_seconds=None if args.no_train else time.perf_counter() - started,
                                      trained=trained, runs_csv=args.from_runs_csv)
        con.print(f"report: {page}")
    return 0
