"""``sleepcl study`` (train what an experiment needs, then write its report) and ``sleepcl report``."""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path

from .common import MEMORY_HELP, THREADS_HELP, add_cluster_argument, check_report_folder
from ..study.experiments import EXPERIMENTS, PRESETS

__all__ = ["PARADIGMS", "add_parsers"]

PARADIGMS = "paradigms"  # `sleepcl study paradigms` is `sleepcl paradigms` (cli.main)


def _common(p: argparse.ArgumentParser) -> None:
    from ..config import BENCHMARK_NAMES

    p.add_argument("name", nargs="*", default="all", choices=[*EXPERIMENTS, "all", PARADIGMS], metavar="EXPERIMENT",
                   help="one or more of: pruning (Figure 1), matching (Table 1, Figure 3), budget (Figure 2), "
                        "nobudget (Figure 4), schedules (sleep schedules); or all. `sleepcl study paradigms "
                        "[options]` is `sleepcl paradigms` (sleep cycles for every paradigm, options of its own)")
    p.add_argument("--preset", default="quick", choices=PRESETS,
                   help="quick: minutes on a CPU; paper: the paper's Table 2 settings and seed counts; "
                        "tiny: a seconds-long smoke test")
    p.add_argument("--benchmark", default="mnist-5k", choices=BENCHMARK_NAMES, help="the Split benchmark")
    p.add_argument("--model", default=None, metavar="NETWORK",
                   help="your own model (a function returning an nn.Module, as package.module:function or "
                        "path/to/file.py:function) in place of the paper's network for the benchmark, on the same "
                        "protocol")
    p.add_argument("--seeds", default=None,
                   help="replace every experiment's seeds, e.g. 0-4 (default: the preset's)")
    p.add_argument("--baselines", default=None, metavar="S,S,...",
                   help="the strategies matched against PackNet in Figure 1 and Table 1 (default: memory,multinet), "
                        "e.g. memory,memory-grow,multinet")
    p.add_argument("--store", default=None, metavar="FILE",
                   help="results store (SQLite); default $SLEEPCL_STORE or ~/.cache/sleepcl/runs.sqlite")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="report folder (default docs/results/<benchmark>-<preset>/)")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study", help="run an experiment of the paper's study (resumable), then write its report",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train every run the experiment needs that the results store does not hold yet (so an "
                    "interrupted study resumes where it stopped), then write plots, tables and report.md.")
    _common(p)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, or auto")
    p.add_argument("--data-dir", default=None, help="folder with the dataset's files")
    p.add_argument("--download", action="store_true", help="download missing dataset files (needs a network)")
    p.add_argument("--threads", type=int, default=None,
                   help=THREADS_HELP)
    p.add_argument("--max-population", type=int, default=None,
                   help="split populations larger than this (less memory; finer-grained resume)")
    p.add_argument("--max-memory", default=None, metavar="SIZE", help=MEMORY_HELP)
    add_cluster_argument(p)
    p.add_argument("--force", action="store_true", help="retrain the fixed grids even if stored")
    p.add_argument("--no-report", action="store_true", help="train only")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_study)

    r = sub.add_parser(
        "report", help="write the study's plots, tables and report.md from the stored runs",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Read the runs of a preset from the results store (training nothing) and write, per "
                    "experiment, plots (PNG, SVG) and tables (Markdown, CSV), and report.md beside the paper's "
                    "numbers. Runs that are missing are listed with the command that trains them.")
    _common(r)
    r.set_defaults(func=cmd_report)

    from . import sequences  # the study across the number of tasks, in its own module (study/sequences.py)

    sequences.add_parser(sub)

    from . import paradigms  # sleep cycles for every paradigm (study/paradigms.py)

    paradigms.add_parser(sub)


def _names(args: argparse.Namespace) -> list[str]:
    # nargs="*" with a default: argparse gives the default string when no experiment is named
    names = [args.name] if isinstance(args.name, str) else list(args.name)
    if PARADIGMS in names:  # `sleepcl study paradigms ...` never gets here (cli.main hands it to `paradigms`)
        raise ValueError("paradigms is a study of its own, with its own options: run `sleepcl study paradigms "
                         "[options]` (the same as `sleepcl paradigms`), naming it first and alone")
    return names


def _settings(args: argparse.Namespace):
    from ..config import parse_int_list
    from ..study.experiments import settings

    seeds = parse_int_list(args.seeds, "--seeds") if args.seeds else None
    baselines = [b.strip() for b in args.baselines.split(",") if b.strip()] if args.baselines else None
    if args.baselines is not None and not baselines:
        raise ValueError(f"--baselines names no strategy: {args.baselines!r}; e.g. memory,memory-grow,multinet")
    return settings(args.preset, args.benchmark, seeds=seeds, network=args.model, baselines=baselines)


def _store(args: argparse.Namespace, read_only: bool):
    from .common import open_store

    return open_store(args.store, read_only=read_only)


def _check_out(args: argparse.Namespace, s) -> None:
    """Refuse a report folder that cannot be written before anything is trained."""
    from ..study.report import default_out_dir

    check_report_folder(Path(args.out) if args.out is not None else default_out_dir(s.benchmark, s.preset, s.network))


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this invocation: every option that differs from its default.

    Rebuilt from the parsed arguments rather than ``sys.argv``, so it is exact however ``main`` was called.
    """
    parts = ["sleepcl", args.command, *_names(args), "--preset", args.preset, "--benchmark", args.benchmark]
    for flag, dest in (("--model", "model"), ("--seeds", "seeds"), ("--baselines", "baselines"), ("--store", "store"),
                       ("--out", "out"),
                       ("--device", "device"), ("--data-dir", "data_dir"), ("--threads", "threads"),
                       ("--max-population", "max_population"), ("--max-memory", "max_memory"), ("--cluster", "cluster")):
        value = getattr(args, dest, None)
        if value is not None and not (dest == "device" and value == "auto"):
            parts += [flag, str(value)]
    for flag, dest in (("--download", "download"), ("--force", "force"), ("--no-report", "no_report")):
        if getattr(args, dest, False):
            parts.append(flag)
    return shlex.join(parts)


def cmd_study(args: argparse.Namespace) -> int:
    from .common import cluster_executor, console, progress_bar
    from ..runs.runner import resolve_device
    from ..study.report import write_report
    from ..threads import check_threads, torch_threads
    from ..study.run import run_study

    s = _settings(args)
    check_threads(args.threads)
    from ..runs.memory import parse_size

    max_memory = parse_size(args.max_memory) if args.max_memory else None
    con = console()
    started = time.perf_counter()
    with torch_threads(args.threads), cluster_executor(args) as executor:
        # refuse a missing GPU (here or on the cluster) before opening anything
        (executor.resolve_device if executor is not None else resolve_device)(args.device)
        store = _store(args, read_only=False)
        if not args.no_report:
            _check_out(args, s)
        con.print(f"[bold]sleepcl study {' '.join(_names(args))}[/] · {args.benchmark} · preset {args.preset} · "
                  f"store {store.path}" + (f" · cluster {args.cluster}" if executor is not None else ""))
        with progress_bar(args) as progress:
            summary = run_study(_names(args), s, store=store, device=args.device, data_dir=args.data_dir,
                                download=args.download, max_population=args.max_population, max_memory=max_memory,
                                force=args.force, progress=progress, log=con.print, executor=executor)
    wall = time.perf_counter() - started
    con.print(f"trained {summary['trained']} runs in {wall / 60:.1f} min")
    if not args.no_report:
        res = write_report(s, store, args.out, names=_names(args), command=_command(args), wall_seconds=wall,
                           trained=summary["trained"])
        _print_claims(res, con)
        con.print(f"report: {res.page}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .common import console
    from ..study.report import write_report

    s = _settings(args)
    store = _store(args, read_only=True)
    _check_out(args, s)
    res = write_report(s, store, args.out, names=_names(args), command=_command(args))
    con = console()
    _print_claims(res, con)
    con.print(f"report: {res.page} ({len(res.files)} files)")
    return 0


def _print_claims(res, con) -> None:
    for c in res.claims:
        con.print(f"claim ({c.key}): [bold]{c.summary()}[/] — {c.statement}")
