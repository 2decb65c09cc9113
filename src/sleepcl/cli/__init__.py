"""The ``sleepcl`` command line: one parser that registers every subcommand. Every subcommand checks its
input fully before doing any work.

============= ====================================================================
module        subcommands
============= ====================================================================
``run``       ``sleepcl run`` (train runs), ``sleepcl results`` (list, export)
``study``     ``sleepcl study``, ``sleepcl report`` (the paper's experiments)
``sequences`` ``sleepcl sequences`` (the study across the number of tasks; registered by ``study``)
``paradigms`` ``sleepcl paradigms``, also ``sleepcl study paradigms`` (sleep cycles for every paradigm)
``nightly``   ``sleepcl learn``, ``sleepcl predict``, ``sleepcl inspect``
``common``    what they share: the store, the console, the progress bar
============= ====================================================================
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from typing import Sequence

__all__ = ["PROCESS_DEFAULTS", "build_parser", "main"]


# Settings of the libraries under torch that the command gives its own process, only where the user has not set
# them, before torch is first imported (both are read once, at start-up). A library must not change its host
# process, so the Python API leaves them to the caller (README, "Python").
PROCESS_DEFAULTS = (
    # libgomp's threads spin (~300,000 times) at the end of each parallel region before they sleep. When other
    # processes hold the cores, that spinning takes the time slices the working threads need: measured on this
    # project's 2-core machine beside a busy study, the README's main job took 470 s with torch's two threads
    # instead of 61 s with one; with a spin count of 1,000 it took 51 s, and about 30 s either way when quiet.
    ("GOMP_SPINCOUNT", "1000"),
    # MKL's strict conditional numerical reproducibility: a matmul gives the same bits whatever the number of
    # threads. Without it, on an Intel Xeon with AVX-512 (2026-12-03), a (64 x 784) @ (784 x 48) product
    # differed between one and two threads, so a member trained in a group (one thread) was not the member
    # trained alone (two threads). Measured no slower (benchmarks/README.md); where MKL is not the BLAS it is
    # ignored.
    ("MKL_CBWR", "AUTO,STRICT"),
)


def build_parser() -> argparse.ArgumentParser:
    from . import nightly, run, study

    parser = argparse.ArgumentParser(prog="sleepcl", description="Efficient continual learning with sleep-cycle pruning.")
    sub = parser.add_subparsers(dest="command", required=True)
    run.add_run_parser(sub)
    run.add_results_parser(sub)
    study.add_parsers(sub)
    nightly.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    for name, value in PROCESS_DEFAULTS:
        os.environ.setdefault(name, value)
    from ..data.datasets import DataCorruptError, DataNotFoundError

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["study", "paradigms"]:  # the paradigms study, options of its own: ``sleepcl paradigms``
        argv = argv[1:]
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, DataNotFoundError, DataCorruptError) as e:
        print(f"sleepcl {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno != errno.ENAMETOOLONG:
            raise
        print(f"sleepcl {args.command}: error: a file name is too long for the file system ({e.filename}); "
              "choose a shorter name (most file systems allow 255 bytes a name)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nsleepcl {args.command}: interrupted; every population that had finished is in the results "
              "store, and running the same command again resumes from there", file=sys.stderr)
        return 130

