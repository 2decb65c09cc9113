"""``sleepcl paradigms``: sleep cycles for every paradigm (train what is missing, then write the report)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .common import add_report_study_options, check_report_folder, report_study_command

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    # presets and benchmarks are checked when the command runs (study.paradigms.paradigm_settings): the study
    # needs pandas and scipy, and ``sleepcl --help`` must not load them
    p = sub.add_parser(
        "paradigms", help="the study the paper left open: do sleep cycles help replay, regularisation and "
                          "distillation as they help PackNet?",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train PackNet, Memory, ER (bounded replay), EWC, SI, LwF and fine-tuning with nights of N = 1 "
                    "and more rounds in the same budget over a grid of final free fractions p (and, for those "
                    "that take none by default, without a night), what the results store lacks; then write "
                    "report.md, runs.csv, runs.jsonl.gz and a figure: per paradigm, whether more rounds help and "
                    "how many more weights than Memory it needs for Memory's accuracy.")
    p.add_argument("--preset", default="quick",
                   help="quick: sized to a 2-core CPU (mnist-5k: 305 runs, ~15 min here beside other jobs); paper: "
                        "the paper's E = B = 72 on mnist-5k; tiny: a seconds-long smoke test")
    p.add_argument("--benchmark", default="mnist-5k",
                   help="the Split benchmark (fashion-mnist: the quick preset only, with E = 1, B = 4)")
    p.add_argument("--seeds", default=None, help="replace the preset's seeds, e.g. 0-4")
    add_report_study_options(p, "<benchmark>-paradigms-<preset>")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_paradigms)


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this invocation (every option that differs from its default)."""
    head = ["sleepcl", "paradigms", "--preset", args.preset]
    if args.benchmark != "mnist-5k":
        head += ["--benchmark", args.benchmark]
    return report_study_command(head, args, ("seeds", "store", "out", "threads", "max_population", "max_memory"))


def cmd_paradigms(args: argparse.Namespace) -> int:
    from ..config import parse_int_list
    from ..runs.memory import parse_size
    from ..runs.runner import resolve_device
    from ..study.paradigms import default_out_dir, paradigm_configs, paradigm_settings, run_paradigms, \
        write_paradigms_report
    from ..threads import check_threads, torch_threads
    from .common import Progress, console, open_store

    s = paradigm_settings(args.preset, args.benchmark).with_seeds(parse_int_list(args.seeds, "--seeds") if args.seeds else None)
    for c in paradigm_configs(s)[:1]:
        c.resolved()
    check_threads(args.threads)
    device = resolve_device(args.device)
    out = Path(args.out) if args.out is not None else default_out_dir(s)
    check_report_folder(out, write=not args.no_report)
    store = open_store(args.store, read_only=args.no_train)
    con = console()
    started = time.perf_counter()
    trained = None
    if not args.no_train:
        con.print(f"[bold]sleepcl paradigms[/] · {s.benchmark} · preset {s.preset} · {s.describe()} · "
                  f"store {store.path}")
        with torch_threads(args.threads), Progress(args.quiet) as progress:
            trained = run_paradigms(s, store=store, log=con.print, device=device, max_population=args.max_population,
                                    progress=progress,
                                    max_memory=parse_size(args.max_memory) if args.max_memory else None)
        con.print(f"trained {trained} runs in {(time.perf_counter() - started) / 60:.1f} min")
    if not args.no_report:
        page = write_paradigms_report(s, store, out, command=_command(args),
                                      wall_seconds=None if args.no_train else time.perf_counter() - started,
                                      trained=trained)
        con.print(f"report: {page}")
    return 0
