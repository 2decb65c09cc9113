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


def run(tree: Path, args: list[str]) -> dict[str, float]:
    """One run of ``tree``'s population_speed.py; its fast-path row: ms per member-epoch, ratio, share of peak."""
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    env.setdefault("MKL_CBWR", "AUTO,STRICT")
    out = subprocess.run([sys.executable, str(tree / "benchmarks" / "population_speed.py"), *args], env=env,
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        m = ROW.match(line)
        if m:
            cells = [c.strip() for c in m.group(1).split("|")]
            # method | wall min | wall median | CPU min | ms/member-epoch | vs plain | GFLOP/s | of peak | ...
            return {"ms": float(cells[3]), "ratio": float(cells[4]), "peak": float(cells[6].rstrip("%"))}
    raise RuntimeError(f"no fast-path row in the output of {tree}:\n{out[-2000:]}")


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
    print("| revision | ms / member-epoch (each run) | vs plain loop (each run) | of matmul peak (each run) |")
    print("|---|---|---|---|")
    def cells(runs: list[dict[str, float]], key: str, fmt: str) -> str:
        return ", ".join(format(x[key], fmt) for x in runs)

    for label, runs in results.items():
        print(f"| {label} | {cells(runs, 'ms', '.1f')} | {cells(runs, 'ratio', '.2f')} | {cells(runs, 'peak', '.0f')}% |")
    b, w = results[args.base], results["working tree"]
    mean = lambda runs, k: sum(x[k] for x in runs) / len(runs)  # noqa: E731
    print(f"\nmean ratio to the plain loop: {mean(b, 'ratio'):.3f} ({args.base}) and {mean(w, 'ratio'):.3f} (working "
          f"tree): {100 * (mean(w, 'ratio') / mean(b, 'ratio') - 1):+.1f}%; mean share of the peak: "
          f"{mean(b, 'peak'):.1f}% and {mean(w, 'peak'):.1f}%: {mean(w, 'peak') - mean(b, 'peak'):+.1f} points")


if __name__ == "__main__":
    main()
