"""Capacity policies of the nightly model: how many weights each night's task keeps.

* ``fixed`` (the paper's): ``--final-free p --expected-tasks T``. After task ``t`` each layer has
  ``round(n * p ** (t / T))`` free weights (Algorithm 2's ``r ** t``). A task beyond ``T`` is refused
  (it would eat into the ``p`` kept for later); raise ``--expected-tasks`` to re-plan from the current
  state: the remaining tasks then share what is free down to ``p`` geometrically.
* ``tolerance``: ``--tolerance 0.01``. The night prunes along the schedule towards a floor
  (``--min-keep``, default 1 % of the free weights) and evaluates the validation accuracy after every
  round's retraining; the model keeps the round-end state with the *fewest* weights whose accuracy is
  within the tolerance of the unpruned network's (the trained state before the first prune, which is
  the fallback when no round-end state qualifies).
"""

from __future__ import annotations

import math
from typing import Any

from ..data.transforms import MAX_TASKS
from ..schedule import free_after_task
from .model import ModelError, NightlyModel

__all__ = ["DEFAULT_EXPECTED_TASKS", "DEFAULT_FINAL_FREE", "DEFAULT_MIN_KEEP", "DEFAULT_TOLERANCE", "POLICIES",
           "capacity_targets", "describe_free", "make_policy"]

POLICIES = ("fixed", "tolerance")
DEFAULT_FINAL_FREE = 0.9
DEFAULT_EXPECTED_TASKS = 5
DEFAULT_TOLERANCE = 0.01
DEFAULT_MIN_KEEP = 0.01


def make_policy(kind: str | None, *, final_free: float | None, expected_tasks: int | None,
                tolerance: float | None, min_keep: float | None, model: NightlyModel | None) -> dict[str, Any] | None:
    """The policy the flags ask for (``None`` when they ask for nothing new on an existing model)."""
    old = model.policy if model is not None else None
    if kind is None:
        if tolerance is not None or min_keep is not None:
            kind = "tolerance"
        elif final_free is not None or expected_tasks is not None:
            kind = "fixed"
        elif old is not None:
            return None
        else:
            kind = "fixed"
    if kind not in POLICIES:
        raise ValueError(f"unknown capacity policy {kind!r}; choose fixed or tolerance")
    if kind == "fixed":
        if tolerance is not None or min_keep is not None:
            raise ValueError("--tolerance and --min-keep belong to --policy tolerance, not fixed")
        same = old is not None and old["kind"] == "fixed"
        p = final_free if final_free is not None else (old["final_free"] if same else DEFAULT_FINAL_FREE)
        T = expected_tasks if expected_tasks is not None else (old["expected_tasks"] if same else DEFAULT_EXPECTED_TASKS)
        if not 0.0 < p < 1.0:
            raise ValueError(f"--final-free p must lie strictly between 0 and 1, got {p}")
        if isinstance(T, bool) or int(T) != T or not 1 <= T <= MAX_TASKS:
            raise ValueError(f"--expected-tasks must be a whole number in 1..{MAX_TASKS} (each weight's owner is "
                             f"one uint8: at most {MAX_TASKS} tasks fit in one model), got {T}")
        if same and p == old["final_free"] and T == old["expected_tasks"]:
            return None
        n_done = len(model.tasks) if model is not None else 0
        if T <= n_done:
            raise ValueError(f"--expected-tasks {T}: the model already holds {n_done} tasks; the plan must "
                             f"leave room for this one (at least {n_done + 1})")
        base = {name: c / n for (name, c), n in zip(model.free_counts().items(), model.layer_sizes().values())} \
            if model is not None and n_done else None
        if base is not None:
            low = {name: f for name, f in base.items() if f <= p}
            if low:
                raise ValueError(f"--final-free {p}: only {describe_free(model)} is free now, so {p:.2%} cannot be left "
                                 "free after more tasks; choose a smaller --final-free")
        return {"kind": "fixed", "final_free": float(p), "expected_tasks": int(T), "base_tasks": n_done,
                "base_free": base}
    if final_free is not None or expected_tasks is not None:
        raise ValueError("--final-free and --expected-tasks belong to --policy fixed, not tolerance")
    same = old is not None and old["kind"] == "tolerance"
    tol = tolerance if tolerance is not None else (old["tolerance"] if same else DEFAULT_TOLERANCE)
    mk = min_keep if min_keep is not None else (old["min_keep"] if same else DEFAULT_MIN_KEEP)
    if not 0.0 <= tol < 1.0:
        raise ValueError(f"--tolerance must lie in [0, 1) (an accuracy difference, e.g. 0.01), got {tol}")
    if not 0.0 < mk <= 1.0:
        raise ValueError(f"--min-keep must lie in (0, 1] (a fraction of the free weights), got {mk}")
    if same and tol == old["tolerance"] and mk == old["min_keep"]:
        return None
    return {"kind": "tolerance", "tolerance": float(tol), "min_keep": float(mk),
            "base_tasks": len(model.tasks) if model is not None else 0}


def capacity_targets(model: NightlyModel) -> tuple[dict[str, int], dict[str, int]]:
    """(free now, weights the new task keeps) per layer under the model's policy; refuses what cannot fit."""
    policy = model.policy
    free = model.free_counts()
    sizes = model.layer_sizes()
    t = len(model.tasks) + 1
    if t > 255:
        raise ModelError("the model holds 255 tasks, the most a uint8 owner map can tell apart")
    empty = [name for name, c in free.items() if c == 0]
    if empty:
        raise ModelError(f"no capacity left: layer(s) {', '.join(empty)} have no free weights "
                         f"({describe_free(model)}); this model cannot learn another task")
    if policy["kind"] == "fixed":
        T, p = policy["expected_tasks"], policy["final_free"]
        if t > T:
            raise ModelError(
                f"not enough capacity for task {t}: the model was planned for {T} tasks leaving {p:.2%} of its "
                f"weights free, and {describe_free(model)} is free now. Re-plan with a larger --expected-tasks (later "
                "tasks then share what is free), a smaller --final-free, or --policy tolerance")
        b = policy.get("base_tasks", 0)
        keep = {}
        for name, n in sizes.items():
            if b == 0 or not policy.get("base_free"):
                target = round(n * free_after_task(t, T, p))
            else:
                fb = policy["base_free"][name]
                target = round(n * fb * (p / fb) ** ((t - b) / (T - b)))
            keep[name] = free[name] - target
        short = [name for name, k in keep.items() if k < 1]
        if short:
            raise ModelError(f"not enough capacity for task {t}: the policy (p={p}, {T} tasks) would leave it no "
                             f"weights in {', '.join(short)} ({describe_free(model)} free); use a wider network, a "
                             "smaller --final-free or fewer --expected-tasks")
        return free, keep
    mk = policy["min_keep"]
    keep = {name: max(1, math.ceil(mk * c)) for name, c in free.items()}
    return free, keep


def describe_free(model: NightlyModel) -> str:
    sizes = model.layer_sizes()
    free = model.free_counts()
    layers = ", ".join(f"{n} {free[n] / sizes[n]:.2%}" for n in sizes)
    total = sum(free.values())
    return f"{total / sum(sizes.values()):.2%} ({total} weights; {layers})"
