"""Where a training step's time goes: the batched matmuls timed inside the step against the same calls alone,
and the rest of the step op by op.

Runs one epoch of the fast path at S = --size members in the phase given (day 1: nothing frozen yet;
night 1: after the first prune; day 2: some weights and the biases frozen) three ways: unprofiled (the
step's time); with torch.bmm and torch.baddbmm wrapped in a clock (each matmul's time inside the step,
by input shapes, next to the same call on fresh tensors alone); and under torch.profiler, for the other
ops. The profiler's own overhead inflates short ops and, in our measurements, the matmuls too (the
backward's weight-gradient bmm read 11.6 ms per step under the profiler and 3.4 ms by the clock): its
column is for ranking the non-matmul ops, not for adding up.

    python benchmarks/step_profile.py --threads 2 --phase "day 2"
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))

from population_speed import PeakMeter, _epoch_state, make_workload  # noqa: E402

MATMULS = {"aten::bmm", "aten::baddbmm", "aten::mm", "aten::addmm"}


def flops(name: str, shapes: list) -> float:
    """FLOPs of one batched matmul call from its input shapes (bmm: a, b; baddbmm: bias, a, b)."""
    a, b = (shapes[0], shapes[1]) if name in ("aten::bmm", "aten::mm") else (shapes[1], shapes[2])
    batch = a[0] if len(a) == 3 else 1
    return 2.0 * batch * a[-2] * a[-1] * b[-1]


def alone_seconds(name: str, shapes: list, repeats: int = 20) -> float:
    """Best time of the call on fresh contiguous tensors of the same shapes."""
    a, b = (shapes[0], shapes[1]) if name in ("aten::bmm", "aten::mm") else (shapes[1], shapes[2])
    x, y = torch.randn(*a), torch.randn(*b)
    fn = torch.bmm if len(a) == 3 else torch.mm
    fn(x, y)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x, y)
        best = min(best, time.perf_counter() - t0)
    return best


def timed_matmuls(epoch) -> dict[tuple, list[float]]:
    """Run ``epoch`` with torch.bmm and torch.baddbmm timed per call; seconds by (op, input shapes)."""
    seen: dict[tuple, list[float]] = {}
    originals = {"aten::bmm": torch.bmm, "aten::baddbmm": torch.baddbmm}

    def wrap(name, fn):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            key = (name, tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor)))
            seen.setdefault(key, []).append(time.perf_counter() - t0)
            return out
        return timed

    torch.bmm, torch.baddbmm = wrap("aten::bmm", torch.bmm), wrap("aten::baddbmm", torch.baddbmm)
    try:
        epoch()
    finally:
        torch.bmm, torch.baddbmm = originals["aten::bmm"], originals["aten::baddbmm"]
    return seen


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=10, help="population size S (default 10)")
    ap.add_argument("--phase", default="day 2", choices=("day 1", "night 1", "day 2"))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rows", type=int, default=10, help="other ops shown (default 10)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ns = argparse.Namespace(tasks=2, epochs=1, retrain_epochs=1, rounds=1, final_free=0.9, vgg_train=256,
                            vgg_epochs=1, vgg_retrain_epochs=1)
    w = make_workload("mlp", ns)
    epoch = _epoch_state(w, w.configs(args.size), torch.device("cpu"), "fast", args.phase, False)
    steps = -(-w.bench.train[0].numel() // w.base.resolved().batch_size)
    walls = []
    for _ in range(3):
        t0 = time.perf_counter()
        epoch()
        walls.append(time.perf_counter() - t0)
    step_s = sorted(walls)[1] / steps
    matmuls = timed_matmuls(epoch)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        epoch()
    peak = PeakMeter(torch.device("cpu")).measure(3.0)

    print(f"# one epoch of the fast path: paper MLP on Split Fashion-MNIST, S = {args.size}, {args.phase}, "
          f"{torch.get_num_threads()} threads, {steps} steps")
    print(f"step (median of 3 unprofiled epochs): {step_s * 1e3:.2f} ms; fp32 matmul peak {peak:.1f} GFLOP/s\n")
    print("| matmul | input shapes | calls/step | ms/step in the step (median call) | ms/step alone | "
          "GFLOP/s in step | GFLOP/s alone |")
    print("|---|---|---|---|---|---|---|")
    in_step = alone_total = 0.0
    for (name, shapes), ts in sorted(matmuls.items(), key=lambda kv: -sum(kv[1])):
        per_step = len(ts) / steps
        med = sorted(ts)[len(ts) // 2]
        a = alone_seconds(name, [list(s) for s in shapes])
        f = flops(name, [list(s) for s in shapes])
        in_step += med * per_step
        alone_total += a * per_step
        print(f"| {name} | {', '.join(map(str, shapes))} | {per_step:.0f} | {med * per_step * 1e3:.3f} | "
              f"{a * per_step * 1e3:.3f} | {f / med / 1e9:.0f} | {f / a / 1e9:.0f} |")
    print(f"\nmatmuls: {in_step * 1e3:.2f} ms of the {step_s * 1e3:.2f} ms step ({in_step / step_s:.0%}); alone they "
          f"take {alone_total * 1e3:.2f} ms; the other {(step_s - in_step) * 1e3:.2f} ms go to the ops below")

    events = [e for e in prof.key_averages(group_by_input_shape=True)
              if e.key.startswith("aten::") and e.key not in MATMULS]
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    print("\n| other op (profiled) | input shapes | calls/step | ms/step (profiled, inflated) |")
    print("|---|---|---|---|")
    for e in events[:args.rows]:
        shown = ", ".join(str(tuple(s)) for s in e.input_shapes if s)
        print(f"| {e.key} | {shown[:70]} | {e.count / steps:.1f} | {e.self_cpu_time_total / 1e3 / steps:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
