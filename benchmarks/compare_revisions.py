"""Has a change made the engine slower? ``population_speed.py`` of two revisions, alternately, in one run.

Each run of ``population_speed.py`` measures sleepcl against the plain PyTorch loop on the same machine in the same
minutes, so its *ratio* (sleepcl's time per member-epoch over the plain loop's) and its *share of the matmul
peak* (measured in the same run) can be compared across revisions even while the machine's speed drifts. This
script checks out ``--base`` in a temporary git worktree, then runs the script of the base and of the working tree
one after the other, ``--repeats`` times, the order alternating, and prints both revisions' figures side by side.

    python benchmarks/compare_revisions.py --base ee49e83 -- --workloads mlp --threads 2 --sizes "" --no-reference
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROW = re.compile(r"^\|\s*sleepcl population \(fast path\)\s*\|(.*)\|$")
PLAIN = re.compile(r"^\|\s*plain loop \(one run after another\)\s*\|(.*)\|$")


def run(tree: Path, args: list[str]) -> dict[str, float]:
    """One run of ``tree``'s population_speed.py: from its fast-path row, ms per member-epoch, the ratio to the
    plain loop and the share of the matmul peak, in wall time; and the same ratio and share in CPU seconds (what
    the process itself got: less sensitive to other jobs on the machine)."""
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    env.setdefault("MKL_CBWR", "AUTO,STRICT")
    out = subprocess.run([sys.executable, str(tree / "benchmarks" / "population_speed.py"), *args], env=env,
                         capture_output=True, text=True, check=True).stdout
    rows = {}
    for line in out.splitlines():
        for name, pattern in (("fast", ROW), ("plain", PLAIN)):
            m = pattern.match(line)
            if m:  # method | wall min | wall median | CPU min | ms/member-epoch | vs plain | GFLOP/s | of peak | per CPU s
                rows[name] = [c.strip() for c in m.group(1).split("|")]
    if set(rows) != {"fast", "plain"}:
        raise RuntimeError(f"no fast-path or plain-loop row in the output of {tree}:\n{out[-2000:]}")
    fast, plain = rows["fast"], rows["plain"]
    return {"ms": float(fast[3]), "ratio": float(fast[4]), "peak": float(fast[6].rstrip("%")),
            "cpu_ratio": float(fast[2]) / float(plain[2]), "cpu_peak": float(fast[7].rstrip("%"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="the revision to compare with (a commit, tag or branch)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("speed_args", nargs=argparse.REMAINDER, help="after --: population_speed.py's arguments")
    args = ap.parse_args()
    speed_args = [a for a in args.speed_args if a != "--"]
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(base), args.base], check=True)
        try:
            results: dict[str, list[dict[str, float]]] = {args.base: [], "working tree": []}
            trees = {args.base: base, "working tree": ROOT}
            for r in range(args.repeats):
                for label in (list(trees) if r % 2 == 0 else list(trees)[::-1]):
                    results[label].append(run(trees[label], speed_args))
                    print(f"  run {r + 1} {label}: {results[label][-1]}", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)
    print(f"\npopulation_speed.py {' '.join(speed_args)}; {args.repeats} alternating runs of each revision\n")
    print("| revision | ms / member-epoch | vs plain loop, wall | of matmul peak, wall | vs plain loop, CPU s | of peak "
          "per CPU s |")
    print("|---|---|---|---|---|---|")
    def cells(runs: list[dict[str, float]], key: str, fmt: str) -> str:
        return ", ".join(format(x[key], fmt) for x in runs)

    for label, runs in results.items():
        print(f"| {label} | {cells(runs, 'ms', '.1f')} | {cells(runs, 'ratio', '.2f')} | {cells(runs, 'peak', '.0f')} | "
              f"{cells(runs, 'cpu_ratio', '.3f')} | {cells(runs, 'cpu_peak', '.0f')} |")
    b, w = results[args.base], results["working tree"]
    mean = lambda runs, k: sum(x[k] for x in runs) / len(runs)  # noqa: E731
    for key, what in (("ratio", "ratio to the plain loop (wall)"), ("cpu_ratio", "ratio to the plain loop (CPU s)")):
        print(f"mean {what}: {mean(b, key):.3f} ({args.base}) and {mean(w, key):.3f} (working tree): "
              f"{100 * (mean(w, key) / mean(b, key) - 1):+.1f}%")
    for key, what in (("peak", "share of the matmul peak (wall)"), ("cpu_peak", "share of the peak per CPU s")):
        print(f"mean {what}: {mean(b, key):.1f}% ({args.base}) and {mean(w, key):.1f}% (working tree): "
              f"{mean(w, key) - mean(b, key):+.1f} points")


if __name__ == "__main__":
    main()
