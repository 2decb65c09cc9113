"""What the nightly commands spend importing, by package (``python -X importtime``), and the whole start-up.

Runs, each in a fresh interpreter, ``sleepcl --help`` and a one-night ``sleepcl learn`` + ``sleepcl predict``
(a tiny network on 80 synthetic samples, so that what is measured is the start-up) under ``-X importtime``,
and prints the import time summed by top-level package (each module's own time, so nothing is counted twice),
the modules' total, and the command's wall and CPU time (``resource``'s user + system of the child). Repeats
``--repeat`` times and prints the medians: the machine is shared and its load is printed with them.

    python benchmarks/import_time.py
    python benchmarks/import_time.py --repeat 5
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

WATCH = ("torch", "numpy", "sympy", "pydantic", "pydantic_core", "safetensors", "rich", "scipy", "pandas",
         "matplotlib", "sleepcl")


def run(args: list[str], cwd: Path) -> tuple[dict[str, float], float, float]:
    """Seconds of import by top-level package, wall seconds, CPU seconds of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "sleepcl.cli", *args], cwd=cwd,
                         capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise SystemExit(f"sleepcl {' '.join(args)} failed:\n{out.stderr[-2000:]}")
    by = defaultdict(float)
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, _, name = line[len("import time:"):].split("|")
        top = name.strip().split(".")[0]
        by[top if top in WATCH else "other"] += int(own) / 1e6
    return by, wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="import-time-"))
    g = np.random.default_rng(0)
    y = np.arange(80) % 2
    np.savez(work / "a.npz", x=(g.integers(0, 60, (80, 6, 6)) + 150 * y[:, None, None]).astype(np.uint8), y=y)
    commands = {
        "sleepcl --help": ["--help"],
        "sleepcl learn (1 night, tiny)": ["learn", "m.st", "--task", "a", "--data", "a.npz", "--widths", "8,8",
                                          "--epochs", "1", "--retrain-epochs", "1", "--threads", "1", "--quiet"],
        "sleepcl predict (task inferred)": ["predict", "m.st", "--data", "a.npz"],
    }
    print(f"python -X importtime, medians of {args.repeat}; load average {os.getloadavg()[0]:.2f}, "
          f"{os.cpu_count()} CPUs")
    cols = [*WATCH, "other"]
    print("| command | wall s | CPU s | imports s | " + " | ".join(cols) + " |")
    print("|---|---|---|---|" + "---|" * len(cols))
    for label, argv in commands.items():
        runs = []
        for _ in range(args.repeat):
            for f in work.glob("m.st*"):
                if label.startswith("sleepcl learn"):
                    f.unlink()
            runs.append(run(argv, work))
        med = lambda xs: statistics.median(xs)  # noqa: E731
        by = {c: med([r[0].get(c, 0.0) for r in runs]) for c in cols}
        total = med([sum(r[0].values()) for r in runs])
        print(f"| {label} | {med([r[1] for r in runs]):.2f} | {med([r[2] for r in runs]):.2f} | {total:.2f} | "
              + " | ".join(f"{by[c]:.2f}" if by[c] >= 0.005 else "-" for c in cols) + " |", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} after")


if __name__ == "__main__":
    main()
