"""What every subcommand shares: the results store's location, the console, the progress bar, checks of
output paths, and the help texts of options that several commands take."""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Any, Callable, ContextManager, Sequence

__all__ = ["MEMORY_HELP", "STORE_ENV", "THREADS_HELP", "ClusterProgressBar", "PlainProgress", "Progress",
           "add_cluster_argument",
           "check_writable", "cluster_executor", "console", "default_store", "finite_float", "mean_se", "open_store",
           "positive_int_list", "progress_bar"]

STORE_ENV = "SLEEPCL_STORE"

# Shared by every command that trains (sleepcl run, sleepcl study).
THREADS_HELP = ("torch CPU threads (default: torch's choice, one per core); on CPU a population of several "
                "members trains as one group of members per thread, side by side; 1 is often faster on a busy "
                "machine")
MEMORY_HELP = ("memory the command may use, e.g. 4G or 500M (default: the memory available now, from /proc/meminfo, "
               "or the GPU's free memory); populations and data are sized to fit it and refused if they cannot")


CLUSTER_HELP = ("train on a Ray cluster, one task per population: HOST:PORT of a running cluster (what "
                "`ray start --head` printed), auto (the cluster this machine belongs to), or local (a throwaway "
                "cluster on this machine for this command); needs pip install 'sleepcl[ray]'. Each population "
                "takes --threads CPUs (default 1) and, on CUDA, one GPU")


def add_cluster_argument(p: Any) -> None:
    """``--cluster`` (sleepcl run, sleepcl study)."""
    p.add_argument("--cluster", default=None, type=cluster_address, metavar="ADDRESS|auto|local", help=CLUSTER_HELP)


def add_report_study_options(p: Any, report: str) -> None:
    """The options of a study command that trains what the store lacks and writes one report folder
    (``sleepcl sequences``, ``sleepcl paradigms``): where runs are kept and the report goes, how they train."""
    p.add_argument("--store", default=None, metavar="FILE",
                   help="results store (SQLite); default $SLEEPCL_STORE or ~/.cache/sleepcl/runs.sqlite")
    p.add_argument("--out", default=None, metavar="DIR", help=f"report folder (default docs/results/{report}/)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, or auto")
    p.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    p.add_argument("--max-population", type=int, default=None,
                   help="split populations larger than this (less memory; finer-grained resume)")
    p.add_argument("--max-memory", default=None, metavar="SIZE", help=MEMORY_HELP)
    p.add_argument("--no-train", action="store_true", help="only write the report, from the runs already stored")
    p.add_argument("--no-report", action="store_true", help="train only")


def report_study_command(head: list[str], args: Any, value_flags: Sequence[str]) -> str:
    """The command line that reproduces a report study's invocation: ``head``, then every option of
    ``value_flags`` that was given, ``--device`` unless auto, and ``--no-train`` / ``--no-report``."""
    import shlex

    parts = list(head)
    for flag in value_flags:
        value = getattr(args, flag)
        if value is not None:
            parts += ["--" + flag.replace("_", "-"), str(value)]
    if args.device != "auto":
        parts += ["--device", args.device]
    parts += [flag for flag in ("--no-train", "--no-report") if getattr(args, flag[2:].replace("-", "_"))]
    return shlex.join(parts)


def check_report_folder(out: Path, write: bool = True) -> None:
    """Refuse a report folder that is a file, or (``write``) one that cannot be written, before anything trains."""
    from ..files import check_writable

    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the report")
    if write:
        check_writable(out / "report.md", "--out", "report.md")


def cluster_address(text: str) -> str:
    """argparse type of ``--cluster``: auto, local, or HOST:PORT with a port in 1..65535."""
    import argparse

    host, colon, port = text.rpartition(":")
    if colon and host and not text.startswith(("ray://", "http")):
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise argparse.ArgumentTypeError(f"{text!r}: the port must be a number in 1..65535 (what `ray start "
                                             "--head` printed, 6379 by default)")
    return text


def cluster_executor(args: Any) -> ContextManager[Any]:
    """The executor ``--cluster`` asks for, connected on entering (``None``: train in this process)."""
    if not getattr(args, "cluster", None):
        return contextlib.nullcontext(None)
    from ..runs.cluster import RayCluster

    return RayCluster(args.cluster, cpus_per_population=args.threads, log=None if args.quiet else print)


def progress_bar(args: Any) -> ContextManager[Callable | None]:
    """One bar per population in this process; one bar for all the work on a cluster."""
    return ClusterProgressBar(args.quiet) if getattr(args, "cluster", None) else Progress(args.quiet)


def default_store() -> Path:
    """Where finished runs are kept unless ``--store`` says otherwise: ``$SLEEPCL_STORE`` or the user cache."""
    env = os.environ.get(STORE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "sleepcl" / "runs.sqlite"


def console():
    """A rich console; when output goes to a file or pipe, wide enough that tables are not truncated."""
    from rich.console import Console

    c = Console()
    return c if c.is_terminal else Console(width=200)


def open_store(path: str | None, read_only: bool = False):
    """The results store at ``path`` (default :func:`default_store`); ``read_only`` for commands that only read."""
    from ..runs.store import RunStore

    return RunStore(Path(path) if path else default_store(), read_only=read_only)


def check_writable(path: Path, flag: str = "--output", example: str = "runs.json") -> None:
    """Refuse an ``--output`` that cannot be written, before any work (:func:`sleepcl.files.check_writable`)."""
    from ..files import check_writable as check

    check(path, flag, example)


def finite_float(text: str) -> float:
    """argparse type: a finite number (``inf`` and ``nan`` are refused, naming the flag)."""
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_int_list(text: str, flag: str, example: str = "256,256") -> list[int]:
    """``"256,256"`` -> ``[256, 256]``; anything but positive integers is refused with a message naming ``flag``."""
    parts = [x.strip() for x in text.split(",")]
    try:
        out = [int(x) for x in parts if x]
    except ValueError:
        raise ValueError(f"{flag} takes positive integers like {example}, got {text!r}") from None
    if not out or any(v < 1 for v in out) or len(out) != len(parts):
        raise ValueError(f"{flag} takes positive integers like {example}, got {text!r}")
    return out


def mean_se(values: Sequence[float]) -> str:
    n = len(values)
    m = sum(values) / n
    se = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1) / n) if n > 1 else 0.0
    return f"{m:.4f}±{se:.4f}"


class _Bar:
    """A progress display that exists only when not quiet: entering gives the callback for progress reports
    (None when quiet). On a terminal, a rich progress bar; otherwise (a log file, a pipe, CI), where rich would
    print one last line cut to the console's width, :class:`PlainProgress`'s whole, timestamped lines.
    Subclasses say the bar's columns, what it starts with, how a report moves it, and its plain line."""

    def __init__(self, quiet: bool, *, terminal: bool | None = None, stream: Any = None, interval: float = 15.0):
        self.quiet = quiet
        self.bar = None
        self.plain: PlainProgress | None = None
        self.terminal, self.stream, self.interval = terminal, stream, interval

    def columns(self) -> tuple:
        raise NotImplementedError

    def start(self) -> None:
        """Called once the bar is shown."""

    def update(self, report: Any) -> None:
        raise NotImplementedError

    def line(self, report: Any) -> tuple[Any, str, int, int | None]:
        """For plain output: (what a bar stands for, its description, work done, total work)."""
        raise NotImplementedError

    def __enter__(self) -> Callable | None:
        if self.quiet:
            return None
        terminal = self.terminal if self.terminal is not None else console().is_terminal
        if not terminal:
            self.plain = PlainProgress(self.stream, self.interval)
            return lambda report: self.plain.update(*self.line(report))  # type: ignore[union-attr]
        from rich.progress import Progress as RichProgress

        self.bar = RichProgress(*self.columns(), transient=False)
        self.bar.__enter__()
        self.start()
        return self.update

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
        if self.plain is not None:
            self.plain.finish()


class PlainProgress:
    """Progress as whole lines for a log: ``HH:MM:SS description: done/total (pct), elapsed, ETA``, written when
    a new bar starts, at most every ``interval`` seconds while it moves, and once when it ends; never cut."""

    def __init__(self, stream: Any = None, interval: float = 15.0, clock: Callable[[], float] | None = None):
        import sys
        import time

        self.stream = stream if stream is not None else sys.stdout
        self.interval = interval
        self.clock = clock or time.monotonic
        self.key: Any = object()
        self.last: tuple[str, int, int | None] | None = None
        self.shown: tuple[str, int, int | None] | None = None  # the last line written
        self.started = self.printed = 0.0

    def update(self, key: Any, text: str, done: int, total: int | None) -> None:
        now = self.clock()
        if key != self.key:
            self.finish()
            self.key, self.started, self.printed = key, now, -math.inf
        self.last = (text, done, total)
        reached = total is not None and done >= total and (self.shown is None or self.shown[1] < total)
        if now - self.printed >= self.interval or reached:
            self._write(text, done, total, now)

    def finish(self) -> None:
        """Write the last state if it is not the last line written."""
        if self.last is not None and self.last != self.shown:
            self._write(*self.last, self.clock())
        self.last = self.shown = None

    def _write(self, text: str, done: int, total: int | None, now: float) -> None:
        import time

        elapsed = now - self.started
        parts = [f"{time.strftime('%H:%M:%S')} {text}"]
        if total:
            parts.append(f"{done}/{total} ({done / total:.0%})")
            parts.append(f"{_clock(elapsed)} elapsed")
            if 0 < done < total and elapsed >= 1.0:
                parts.append(f"ETA {_clock(elapsed * (total - done) / done)}")
        print(", ".join(parts), file=self.stream, flush=True)
        self.printed, self.shown = now, (text, done, total)


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class Progress(_Bar):
    """A bar per population, fed by the engine's events (through :class:`~sleepcl.runs.runner.PopulationEvent`)."""

    def columns(self) -> tuple:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        return (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())

    def start(self) -> None:
        self.task = None

    def update(self, pe: Any) -> None:
        e = pe.event
        desc = (f"population {pe.index + 1}/{pe.count} ({pe.size} members) · task {e.day}/{e.n_days} · "
                f"{e.phase} {e.epoch}/{e.epochs}")
        if self.task is None or self.current != pe.index:
            if self.task is not None:
                self.bar.update(self.task, completed=self.bar.tasks[self.task].total)
            self.task = self.bar.add_task(desc, total=e.steps_total)
            self.current = pe.index
        self.bar.update(self.task, completed=e.steps_done, description=desc)

    def line(self, pe: Any) -> tuple[Any, str, int, int | None]:
        e = pe.event
        return (pe.index, f"population {pe.index + 1}/{pe.count} ({pe.size} members) · task {e.day}/{e.n_days} · "
                          f"{e.phase} {e.epoch}/{e.epochs} · steps", e.steps_done, e.steps_total)


class ClusterProgressBar(_Bar):
    """One bar for all of a command's populations on a cluster: populations and members done, an ETA."""

    def columns(self) -> tuple:
        from rich.progress import BarColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        return (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                TextColumn("ETA"), TimeRemainingColumn())

    def start(self) -> None:
        self.task = self.bar.add_task("cluster: waiting for the first population", total=None)

    def update(self, p: Any) -> None:
        desc = (f"cluster: populations {p.populations_done}/{p.populations} ({p.running} running) · "
                f"members {p.members_done}/{p.members}")
        self.bar.update(self.task, total=p.work, completed=p.work_done, description=desc)

    def line(self, p: Any) -> tuple[Any, str, int, int | None]:
        return (None, f"cluster: populations {p.populations_done}/{p.populations} ({p.running} running) · members "
                      f"{p.members_done}/{p.members} · work", p.work_done, p.work)
