"""One night: add a task to a deployed model -- train its free weights, then prune and retrain in rounds.

A night on ``S`` stacked copies of the model (``S = 1`` normally; a small population for the probe of
``--schedule auto``) follows the core engine's rules exactly: the new task takes every free weight, a
gradient mask keeps every other weight bit-identical, biases are trained on the first task only, Adam
moments of pruned weights are cleared, and pruning frees the smallest-magnitude weights of the task, per
layer, to exact counts (:mod:`sleepcl.engine.ownership`, :mod:`sleepcl.schedule`). What differs from the study's
engine: each task has its own head with as many outputs as it has classes, and nights may be measured in
seconds (:mod:`sleepcl.nightly.planner`).

**Capacity policies.**

* ``fixed`` (the paper's): ``--final-free p --expected-tasks T``. After task ``t`` each layer has
  ``round(n * p ** (t / T))`` free weights (Algorithm 2's ``r ** t``). A task beyond ``T`` is refused
  (it would eat into the ``p`` kept for later); raise ``--expected-tasks`` to re-plan from the current
  state: the remaining tasks then share what is free down to ``p`` geometrically.
* ``tolerance``: ``--tolerance 0.01``. The night prunes along the schedule towards a floor
  (``--min-keep``, default 1 % of the free weights) and evaluates the validation accuracy after every
  round's retraining; the model keeps the round-end state with the *fewest* weights whose accuracy is
  within the tolerance of the unpruned network's (the trained state before the first prune, which is
  the fallback when no round-end state qualifies).

**Schedules.** ``uniform`` (the paper's), ``lengthening`` (rounds of length 1:2:...:N) and ``cubic``
(prune hard early, gently late), each with ``--rounds N``; ``auto`` probes candidates (default
uniform N = 1, 2, 4, 8, lengthening 4, cubic 4) as one population on a short night (``probe_share`` of
the night's time), keeps the best on validation (fixed policy: accuracy; tolerance: fewest weights
within tolerance), then runs the full night with it from the trained state and keeps whichever of the
two ends better on validation.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..engine import ownership
from ..config import PAPER_DEFAULTS
from ..models.paper import NETWORKS, Dropout, Network
from ..engine.population import IndexStream
from ..threads import torch_threads
from ..schedule import SCHEDULES, free_after_task, night_targets, sleep_schedule
from ..data.user import DataFormatError, fingerprint, load_data, split_validation
from .model import ModelError, NightlyModel, check_fits, check_night_memory, check_task_name, json_safe, lock_model, \
    now_iso, prev_path, write_scratch
from .planner import Costs, Phase, due, margin_for, night_positions, parse_duration, relative_schedule, split_time

__all__ = ["DEFAULT_CANDIDATES", "POLICIES", "Candidate", "learn"]

POLICIES = ("fixed", "tolerance")
DEFAULT_FINAL_FREE = 0.9
DEFAULT_EXPECTED_TASKS = 5
DEFAULT_TOLERANCE = 0.01
DEFAULT_MIN_KEEP = 0.01
WARMUP_STEPS = 8
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Candidate:
    schedule: str
    rounds: int

    @property
    def label(self) -> str:
        return f"{self.schedule}:{self.rounds}"

    @classmethod
    def parse(cls, text: str) -> "Candidate":
        name, _, n = text.partition(":")
        if name not in SCHEDULES or not n.isdigit() or int(n) < 1:
            raise ValueError(f"candidate {text!r} is not SCHEDULE:N with SCHEDULE one of {', '.join(SCHEDULES)} "
                             "and N >= 1 (e.g. uniform:4)")
        return cls(name, int(n))


DEFAULT_CANDIDATES = tuple(Candidate(s, n) for s, n in
                           (("uniform", 1), ("uniform", 2), ("uniform", 4), ("uniform", 8),
                            ("lengthening", 4), ("cubic", 4)))


# -- the stacked state of one night --------------------------------------------------------------------

class Members:
    """``S`` copies of the model learning task ``task`` (owner index) together, each with its own schedule."""

    def __init__(self, net: Network, params: dict[str, Tensor], owner: dict[str, Tensor], head_w: Tensor,
                 head_b: Tensor, task: int, *, lr: float, batch_size: int, device: torch.device,
                 dropout_seed: int):
        self.net, self.task, self.lr, self.batch_size, self.device = net, task, lr, batch_size, device
        self.params = {k: v.to(device).requires_grad_() for k, v in params.items()}
        self.owner = {k: v.to(device) for k, v in owner.items()}
        self.head_w = head_w.to(device).requires_grad_()
        self.head_b = head_b.to(device).requires_grad_()
        self.train_bias = task == 1  # PackNet: biases are shared, trained on the first task, then frozen
        self.masks = {name: (o == task).to(self.params[name].dtype) for name, o in self.owner.items()}
        rate = getattr(net, "dropout_rate", 0.0)
        gens = [torch.Generator(device=device).manual_seed(dropout_seed + m) for m in range(self.size)]
        self.dropout = Dropout(rate, gens) if rate > 0 else None
        self.optimizer = torch.optim.Adam(self.trainable(), lr=lr, foreach=True)

    @property
    def size(self) -> int:
        return self.head_w.shape[0]

    def trainable(self) -> list[Tensor]:
        out = [self.params[n] for n in self.params if n in self.owner or self.train_bias]
        return out + [self.head_w, self.head_b]

    @classmethod
    def start(cls, model: NightlyModel, n_classes: int, *, lr: float, batch_size: int, device: torch.device,
              seed: int) -> "Members":
        """One member: the model's trunk with every free weight handed to the new task, and a fresh head."""
        net = model.network
        task = len(model.tasks) + 1
        params = {k: v.detach().clone()[None] for k, v in model.trunk.items()}
        owner = {k: v.clone()[None] for k, v in model.owner.items()}
        ownership.assign(owner, task, only_free=True)
        g = torch.Generator().manual_seed(seed)
        f = net.feature_dim
        bound = 1.0 / math.sqrt(f)
        head_w = ((torch.rand((1, n_classes, f), generator=g) * 2 - 1) * bound)
        head_b = ((torch.rand((1, n_classes), generator=g) * 2 - 1) * bound)
        return cls(net, params, owner, head_w, head_b, task, lr=lr, batch_size=batch_size, device=device,
                   dropout_seed=seed + 1)

    def replicate(self, size: int, dropout_seed: int) -> "Members":
        """``size`` copies of member 0, optimizer moments included (the probe starts from the trained state)."""
        rep = lambda t: t.detach()[:1].repeat(size, *([1] * (t.dim() - 1)))  # noqa: E731
        out = Members(self.net, {k: rep(v) for k, v in self.params.items()}, {k: rep(v) for k, v in self.owner.items()},
                      rep(self.head_w), rep(self.head_b), self.task, lr=self.lr, batch_size=self.batch_size,
                      device=self.device, dropout_seed=dropout_seed)
        for src, dst in zip(self.trainable(), out.trainable()):
            state = self.optimizer.state.get(src)
            if state:
                out.optimizer.state[dst] = {"step": state["step"].clone(), "exp_avg": rep(state["exp_avg"]),
                                            "exp_avg_sq": rep(state["exp_avg_sq"])}
        return out

    # -- training --------------------------------------------------------------------------------------

    def step(self, x: Tensor, y: Tensor) -> None:
        """One optimizer step on a batch ``x`` ``(S, B, ...)`` (or ``(B, ...)`` shared by all), ``y`` likewise."""
        if x.dim() == len(self.net.input_shape) + 1:
            x = x.expand(self.size, *x.shape)
            y = y.expand(self.size, *y.shape)
        h = self.net.features(self.params, x, self.dropout)
        logits = torch.baddbmm(self.head_b[:, None, :], h, self.head_w.transpose(1, 2))
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum") / x.shape[1]
        self.optimizer.zero_grad(set_to_none=False)
        loss.backward()
        for name, mask in self.masks.items():
            self.params[name].grad.mul_(mask)
        self.optimizer.step()

    def prune(self, member: int, keep: dict[str, int]) -> None:
        ownership.prune(self.params, self.owner, self.task, member, keep, "layer")
        for name, o in self.owner.items():
            self.masks[name][member] = (o[member] == self.task).to(self.masks[name].dtype)
            state = self.optimizer.state.get(self.params[name])
            if state:
                state["exp_avg"][member].mul_(self.masks[name][member])
                state["exp_avg_sq"][member].mul_(self.masks[name][member])

    def held(self, member: int) -> int:
        return int(sum((o[member] == self.task).sum() for o in self.owner.values()))

    # -- evaluation and snapshots ----------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, member: int, x: Tensor, y: Tensor, chunk: int = 4096) -> float:
        """Validation accuracy of one member (the new task sees every weight it can: no mask is needed,
        since no later task exists and freed weights are exactly zero)."""
        params = {k: v[member:member + 1] for k, v in self.params.items()}
        w, b = self.head_w[member], self.head_b[member]
        correct = 0
        for start in range(0, len(x), chunk):
            h = self.net.features(params, x[start:start + chunk][None])[0]
            correct += int((torch.addmm(b, h, w.t()).argmax(1) == y[start:start + chunk]).sum())
        return correct / max(1, len(x))

    @torch.no_grad()
    def snapshot(self, member: int) -> dict[str, Any]:
        return {"params": {k: v[member].clone() for k, v in self.params.items()},
                "owner": {k: v[member].clone() for k, v in self.owner.items()},
                "head_w": self.head_w[member].clone(), "head_b": self.head_b[member].clone()}

    @torch.no_grad()
    def restore(self, member: int, snap: dict[str, Any]) -> None:
        for k, v in snap["params"].items():
            self.params[k][member] = v
        for k, v in snap["owner"].items():
            self.owner[k][member] = v
        self.head_w[member] = snap["head_w"]
        self.head_b[member] = snap["head_b"]
        for name, o in self.owner.items():
            self.masks[name][member] = (o[member] == self.task).to(self.masks[name].dtype)

    def to_model(self, member: int, model: NightlyModel) -> NightlyModel:
        """A copy of ``model`` with member ``member``'s trunk, owner map and the new head (metadata copied)."""
        import copy

        snap = self.snapshot(member)
        return NightlyModel(copy.deepcopy(model.meta), {k: v.cpu().contiguous() for k, v in snap["params"].items()},
                            {k: v.cpu().contiguous() for k, v in snap["owner"].items()},
                            [*model.heads, (snap["head_w"].cpu().contiguous(), snap["head_b"].cpu().contiguous())],
                            model.mean, model.std)


# -- data on the device ---------------------------------------------------------------------------------

@dataclass
class TaskData:
    x: Tensor            # normalised training samples on the device
    y: Tensor            # class index
    x_val: Tensor
    y_val: Tensor
    batch_size: int
    generator: torch.Generator
    stream: IndexStream = field(init=False)

    def __post_init__(self) -> None:
        self.stream = IndexStream(len(self.x), self.generator)
        self.buffer: Tensor | None = None
        self.used = 0

    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(len(self.x) / self.batch_size))

    def batch(self) -> tuple[Tensor, Tensor]:
        """The next batch of the endless shuffled stream (indices drawn an epoch at a time)."""
        if self.buffer is None or self.used >= len(self.buffer):
            self.buffer = self.stream.take(self.steps_per_epoch * self.batch_size).to(self.x.device)
            self.used = 0
        idx = self.buffer[self.used:self.used + self.batch_size]
        self.used += self.batch_size
        return self.x[idx], self.y[idx]


# -- the night loop -------------------------------------------------------------------------------------

@dataclass
class MemberPlan:
    """One member's night: prune positions (fractions of the night), keep counts per round, and for the
    tolerance policy the reference accuracy it must stay within."""

    candidate: Candidate
    positions: list[Fraction]
    targets: list[dict[str, int]]
    reference: float | None = None      # tolerance policy: unpruned validation accuracy
    tolerance: float | None = None
    rounds_done: int = 0
    round_log: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None  # tolerance: snapshot of the accepted state
    best_kept: int | None = None
    best_accuracy: float | None = None


def plan_member(candidate: Candidate, held: dict[str, int], keep: dict[str, int], *,
                epochs_budget: int | None) -> MemberPlan:
    """Prune positions and per-layer targets of one candidate schedule, going from ``held`` to ``keep``."""
    if epochs_budget is not None:
        schedule = sleep_schedule(candidate.schedule, epochs_budget, candidate.rounds)
    else:
        schedule = relative_schedule(candidate.schedule, candidate.rounds)
    per_layer = {name: night_targets(held[name], keep[name], schedule) for name in held}
    targets = [{name: per_layer[name][k] for name in held} for k in range(schedule.rounds)]
    return MemberPlan(candidate, night_positions(schedule), targets)


def run_night(members: Members, data: TaskData, plans: list[MemberPlan], phase: Phase, *,
              timings: dict[str, float], clock: Callable[[], float], progress: Progress | None = None) -> None:
    """Prune at each member's positions and retrain all members together until ``phase`` ends.

    Tolerance plans also evaluate every round-end state (after its retraining, before the next prune, and
    at the end) and keep a snapshot of the fewest-weights state within tolerance.
    """
    S = members.size

    def round_end(m: int) -> None:
        plan = plans[m]
        if plan.tolerance is None or plan.rounds_done == 0:
            return
        t0 = clock()
        acc = members.evaluate(m, data.x_val, data.y_val)
        timings["evaluate"] += clock() - t0
        kept = members.held(m)
        plan.round_log[-1]["val_accuracy"] = acc
        if acc >= plan.reference - plan.tolerance - 1e-12 and (plan.best_kept is None or kept <= plan.best_kept):
            plan.best, plan.best_kept, plan.best_accuracy = members.snapshot(m), kept, acc

    def prunes_due() -> None:
        for m in range(S):
            plan = plans[m]
            while due(plan.positions, plan.rounds_done, phase.done, phase.planned):
                round_end(m)
                t0 = clock()
                members.prune(m, plan.targets[plan.rounds_done])
                timings["prune"] += clock() - t0
                plan.rounds_done += 1
                plan.round_log.append({"round": plan.rounds_done, "at_step": phase.done, "kept": members.held(m)})
                if progress and S == 1:
                    progress(f"  round {plan.rounds_done}/{len(plan.targets)}: pruned at step {phase.done} "
                             f"to {members.held(m)} weights")

    t_start = clock()
    while True:
        prunes_due()
        if not phase.keep_going():
            prunes_due()
            break
        phase.step_started()
        x, y = data.batch()
        members.step(x, y)
        phase.step_finished()
    for m in range(S):
        round_end(m)  # the last round's retrained state
        if plans[m].best is not None:
            members.restore(m, plans[m].best)
    timings["retrain"] += clock() - t_start


def pending_night_costs(plans: Sequence[MemberPlan], costs: Costs, final_evals: int = 0) -> float:
    """Seconds of prunes and evaluations still to come in a night."""
    prunes = sum(len(p.targets) - p.rounds_done for p in plans)
    evals = sum(len(p.targets) - p.rounds_done + (1 if p.tolerance is not None else 0) for p in plans
                if p.tolerance is not None)
    return prunes * costs.prune_s + (evals + final_evals) * costs.eval_s


# -- capacity policies ----------------------------------------------------------------------------------

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
        if isinstance(T, bool) or int(T) != T or T < 1:
            raise ValueError(f"--expected-tasks must be a whole number >= 1, got {T}")
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
                raise ValueError(f"--final-free {p}: only {_fmt_free(model)} is free now, so {p:.2%} cannot be left "
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
                         f"({_fmt_free(model)}); this model cannot learn another task")
    if policy["kind"] == "fixed":
        T, p = policy["expected_tasks"], policy["final_free"]
        if t > T:
            raise ModelError(
                f"not enough capacity for task {t}: the model was planned for {T} tasks leaving {p:.2%} of its "
                f"weights free, and {_fmt_free(model)} is free now. Re-plan with a larger --expected-tasks (later "
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
                             f"weights in {', '.join(short)} ({_fmt_free(model)} free); use a wider network, a "
                             "smaller --final-free or fewer --expected-tasks")
        return free, keep
    mk = policy["min_keep"]
    keep = {name: max(1, math.ceil(mk * c)) for name, c in free.items()}
    return free, keep


def _fmt_free(model: NightlyModel) -> str:
    sizes = model.layer_sizes()
    free = model.free_counts()
    layers = ", ".join(f"{n} {free[n] / sizes[n]:.2%}" for n in sizes)
    total = sum(free.values())
    return f"{total / sum(sizes.values()):.2%} ({total} weights; {layers})"


# -- learn ----------------------------------------------------------------------------------------------

def learn(model_path: str | os.PathLike, task: str, data: Any, *, val_data: Any = None, val_fraction: float = 0.1,
          label_column: str = "label", budget: str | float | None = None, epochs: int | None = None,
          retrain_epochs: int | None = None, rounds: int | None = None, schedule: str = "uniform",
          candidates: Sequence[Candidate | str] | None = None, probe_share: float = 0.3, night_share: float = 0.5,
          max_epochs: int = 72, network: str | None = None, widths: Sequence[int] | None = None,
          policy: str | None = None, final_free: float | None = None, expected_tasks: int | None = None,
          tolerance: float | None = None, min_keep: float | None = None, lr: float | None = None,
          batch_size: int | None = None, seed: int | None = None, device: str = "cpu", threads: int | None = None,
          max_memory: int | None = None, started: float | None = None, progress: Progress | None = None,
          clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Add task ``task`` learnt from ``data`` to the model at ``model_path`` (created if absent) in one night.

    Give either ``budget`` (seconds or a duration string such as ``"45m"``; the night ends, model saved,
    before it runs out) or ``epochs`` (``E`` training and ``retrain_epochs`` ``B`` night epochs, the paper's
    setting). The network, widths, lr, batch size and seed given on the first night become the model's;
    the capacity policy flags given on a later night re-plan the capacity from the current state.
    ``threads`` sets torch's intra-op threads for the night (``None``: unchanged; on a busy machine one
    thread can be much faster for small networks). ``max_memory`` (bytes; default: the memory available now):
    data that would not fit in it together with the network is refused before it is read.
    ``started`` is the ``clock()`` time the budget counts
    from (default: now; the CLI passes the process start). ``progress`` receives one line per phase.

    Returns the night's history entry (also stored in the model) plus ``total_seconds``, ``save_seconds``,
    ``overrun_s``, ``path`` and ``file_bytes``. Raises ``ValueError`` (``ModelError``, ``DataFormatError``)
    before any training for input that cannot work; with a budget, one too short for even the warm-up's
    measured costs is refused after the warm-up, the model unchanged.
    """
    t0 = clock() if started is None else started
    say = progress or (lambda s: None)
    path = Path(model_path)

    # -- arguments
    if budget is not None and epochs is not None:
        raise ValueError("give either --budget (a wall-clock budget) or --epochs/--retrain-epochs (the paper's "
                         "epoch budgets), not both")
    budget_s = parse_duration(budget) if budget is not None else None
    auto = schedule == "auto"
    if not auto and schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose uniform, lengthening, cubic or auto")
    if rounds is not None and rounds < 1:
        raise ValueError(f"--rounds N must be >= 1, got {rounds}")
    if auto and rounds is not None:
        raise ValueError("--rounds does not go with --schedule auto, which picks N itself (see --candidates)")
    cands = [c if isinstance(c, Candidate) else Candidate.parse(c) for c in (candidates or DEFAULT_CANDIDATES)]
    if auto and len(set(cands)) < 2:
        raise ValueError("--schedule auto needs at least two different --candidates")
    for name, v in (("--night-share", night_share), ("--probe-share", probe_share)):
        if not 0.0 < v < 1.0:
            raise ValueError(f"{name} must lie strictly between 0 and 1, got {v}")
    if max_epochs < 1:
        raise ValueError(f"--max-epochs must be >= 1, got {max_epochs}")
    check_task_name(task)
    from ..runs.runner import resolve_device

    dev = resolve_device(device)

    with lock_model(path), torch_threads(threads):
        # -- the model and the data, checked before anything is trained
        model = NightlyModel.load(path) if path.exists() else None
        if model is None and prev_path(path).exists():
            raise ModelError(f"{path} is missing but {prev_path(path)} exists: restore it (cp {prev_path(path)} "
                             f"{path}) or choose another model path; not starting a new model over it")
        if model is not None and any(t["name"] == task for t in model.tasks):
            raise ModelError(f"the model already has a task called {task!r} (tasks: "
                             f"{', '.join(t['name'] for t in model.tasks)}); choose a new name")
        check_night_memory(model, data, val_data, network=network, widths=widths, batch_size=batch_size,
                           label_column=label_column, members=len(cands) + 1 if auto else 1, device=str(dev),
                           max_memory=max_memory)
        train = load_data(data, label_column=label_column, require_labels=True)
        if val_data is not None:
            val = load_data(val_data, label_column=label_column, require_labels=True)
            val_source = val.source
        else:
            train, val = split_validation(train, val_fraction, seed=0 if seed is None else seed)
            val_source = f"{val_fraction:g} of {train.source} (stratified, seed {0 if seed is None else seed})"
        classes = train.classes()
        if len(classes) < 2:
            raise DataFormatError(f"{train.source}: a task needs at least two classes, found {classes}")
        unknown = sorted(set(val.classes()) - set(classes), key=str)
        if unknown:
            raise DataFormatError(f"{val.source}: validation labels {unknown} are not among the training classes {classes}")
        if val.sample_shape != train.sample_shape or val.kind != train.kind:
            raise DataFormatError(f"{val.source}: validation samples are {val.kind} {val.sample_shape} but the training "
                                  f"samples are {train.kind} {train.sample_shape}")

        created = model is None
        if created:
            net_name = network or "mlp"
            if net_name not in NETWORKS:
                raise ValueError(f"unknown network {net_name!r}; choose one of {', '.join(NETWORKS)}")
            _check_channel_order(net_name, train.sample_shape)
            defaults = PAPER_DEFAULTS[net_name]
            mean, std, how = normalisation(train.x)
            new_policy = make_policy(policy, final_free=final_free, expected_tasks=expected_tasks,
                                     tolerance=tolerance, min_keep=min_keep, model=None)
            model = NightlyModel.create(network=net_name, widths=tuple(widths) if widths else None,
                                        input_shape=train.sample_shape, kind=train.kind, mean=mean, std=std,
                                        normalisation=how, policy=new_policy,
                                        training={"lr": lr if lr is not None else defaults["lr"],
                                                  "batch_size": batch_size if batch_size is not None
                                                  else defaults["batch_size"]},
                                        seed=0 if seed is None else seed)
            policy_changed = None
        else:
            spec = model.meta["network"]
            if network is not None and network != spec["name"]:
                raise ValueError(f"the model is a {spec['name']} network; --network is chosen when a model is created")
            if widths is not None and list(widths) != list(spec["widths"]):
                raise ValueError(f"the model's widths are {spec['widths']}; --widths is chosen when a model is created")
            check_fits(model, train)
            check_fits(model, val)
            policy_changed = make_policy(policy, final_free=final_free, expected_tasks=expected_tasks,
                                         tolerance=tolerance, min_keep=min_keep, model=model)
            if policy_changed is not None:
                model.meta["policy"] = policy_changed
        held, keep = capacity_targets(model)
        is_tol = model.policy["kind"] == "tolerance"
        n_rounds = rounds if rounds is not None else (8 if is_tol else 1)
        night_seed = int(model.meta["training"]["seed"] if seed is None else seed) + 1000 * (len(model.tasks) + 1)
        lr_ = lr if lr is not None else model.meta["training"]["lr"]
        bs = batch_size if batch_size is not None else model.meta["training"]["batch_size"]
        if bs < 1 or not lr_ > 0:
            raise ValueError(f"--batch-size must be >= 1 and --lr > 0, got {bs} and {lr_}")
        if epochs is not None or budget_s is None:
            E = epochs if epochs is not None else PAPER_DEFAULTS[model.meta["network"]["name"]]["epochs"]
            B = retrain_epochs if retrain_epochs is not None else \
                PAPER_DEFAULTS[model.meta["network"]["name"]]["retrain_epochs"]
            if E < 0 or B < 0 or E + B == 0:
                raise ValueError(f"--epochs and --retrain-epochs must be >= 0 and not both 0, got {E} and {B}")
            if not auto:
                sleep_schedule(schedule, B, n_rounds)  # the uniform schedule needs B to be a multiple of N
        elif retrain_epochs is not None:
            raise ValueError("--retrain-epochs goes with --epochs (epoch budgets), not with --budget")

        # -- data on the device
        class_index = {c: i for i, c in enumerate(classes)}
        y_idx = np.array([class_index[v] for v in train.y.tolist()], dtype=np.int64)
        yv_idx = np.array([class_index[v] for v in val.y.tolist()], dtype=np.int64)
        gen = torch.Generator().manual_seed(night_seed)
        td = TaskData(model.normalise(train.x, dev), torch.from_numpy(y_idx).to(dev),
                      model.normalise(val.x, dev), torch.from_numpy(yv_idx).to(dev), bs, gen)
        spe = td.steps_per_epoch
        night_no = len(model.history) + 1
        say(f"night {night_no}: task {task!r} ({len(classes)} classes, {len(train)} training / {len(val)} "
            f"validation samples) on {'a new' if created else 'the'} {model.meta['network']['name']} model "
            f"{path}; free now {_fmt_free(model)}")

        timings = {"warmup": 0.0, "train": 0.0, "probe": 0.0, "prune": 0.0, "retrain": 0.0, "evaluate": 0.0,
                   "save": 0.0}
        members = Members.start(model, len(classes), lr=lr_, batch_size=bs, device=dev, seed=night_seed)
        deadline = t0 + budget_s if budget_s is not None else None

        # -- warm-up and the budget split
        costs = Costs(step_s=0.0)
        reserve = 0.0
        if deadline is not None:
            costs = _warm_up(members, td, model, path, keep, timings, clock)
            reserve = costs.eval_s + costs.save_s + margin_for(budget_s)
            n_evals = 1 + (n_rounds + 1 if is_tol else 0)
            n_prunes = n_rounds
            if auto:
                n_prunes = sum(c.rounds for c in cands) + max(c.rounds for c in cands)
                n_evals = 1 + len(cands) + (sum(c.rounds + 1 for c in cands) + max(c.rounds for c in cands) + 1
                                            if is_tol else 0)
            remaining = deadline - clock() - reserve
            train_s, night_s = split_time(remaining, costs, night_share=night_share, n_prunes=n_prunes,
                                          n_evals=n_evals)
            if train_s + night_s < 10 * costs.step_s:
                raise ModelError(
                    f"the budget of {budget_s:g} s is too short for this night: after {clock() - t0:.1f} s of start-up "
                    f"and warm-up, the final evaluation and save ({costs.eval_s + costs.save_s:.2f} s) and a margin "
                    f"({margin_for(budget_s):.2f} s) leave no time to train (one step takes {costs.step_s * 1e3:.1f} ms); "
                    "the model is unchanged. Give a longer --budget")
            train_phase = Phase("train", math.floor(train_s / costs.step_s) + WARMUP_STEPS, clock() + train_s,
                                costs.step_s, clock, max_steps=max_epochs * spe)
            train_phase.done = timings.pop("_warm_steps")
            say(f"  budget {budget_s:g} s: start-up and warm-up took {clock() - t0:.1f} s; one step "
                f"{costs.step_s * 1e3:.2f} ms, prune {costs.prune_s * 1e3:.1f} ms, evaluation {costs.eval_s * 1e3:.1f} ms, "
                f"save {costs.save_s * 1e3:.0f} ms; plan: train {train_phase.planned} steps "
                f"({train_phase.planned / spe:.1f} epochs) in {train_s:.1f} s, night {night_s:.1f} s "
                f"({'auto schedule' if auto else f'{schedule}, N={n_rounds}'}), reserve {reserve:.2f} s")
        else:
            train_phase = Phase("train", E * spe)
            say(f"  epochs: train E={E} ({E * spe} steps), night B={B} ({B * spe} steps, "
                f"{'auto schedule' if auto else f'{schedule}, N={n_rounds}'})")

        # -- day: train the free weights
        say(f"  training ({train_phase.planned} steps planned)")
        tt = clock()
        while train_phase.keep_going():
            train_phase.step_started()
            x, y = td.batch()
            members.step(x, y)
            train_phase.step_finished()
        timings["train"] += clock() - tt
        unpruned = None
        if is_tol:
            te = clock()
            unpruned = members.evaluate(0, td.x_val, td.y_val)
            timings["evaluate"] += clock() - te
            say(f"  trained {train_phase.done} steps; unpruned validation accuracy {unpruned:.4f}")
        else:
            say(f"  trained {train_phase.done} steps ({train_phase.done / spe:.1f} epochs)")

        def make_plan(c: Candidate, epochs_budget: int | None) -> MemberPlan:
            mp = plan_member(c, held, keep, epochs_budget=epochs_budget)
            if is_tol:
                mp.reference, mp.tolerance = unpruned, model.policy["tolerance"]
                mp.best, mp.best_kept, mp.best_accuracy = None, None, None
            return mp

        # -- the night
        night_deadline = deadline - reserve if deadline is not None else None
        probe_log: dict[str, Any] | None = None
        probe: Members | None = None
        probe_steps = 0
        chosen = Candidate(schedule, n_rounds)
        if auto:
            p_plans = [make_plan(c, None) for c in cands]  # auto: rounds at fractions of the night
            if deadline is not None:
                now = clock()
                probe_end = now + probe_share * (night_deadline - now)
                p_phase = Phase("probe", math.floor((probe_end - now) / (costs.step_s * len(cands))), probe_end,
                                costs.step_s * len(cands), clock, max_steps=max_epochs * spe,
                                pending=lambda: pending_night_costs(p_plans, costs, final_evals=len(cands)))
            else:
                p_phase = Phase("probe", math.floor(probe_share * B * spe / len(cands)))
            if p_phase.planned < 2 * max(c.rounds for c in cands):
                chosen = cands[0]
                say(f"  probe skipped: only {p_phase.planned} probe steps fit, too few to tell {len(cands)} "
                    f"schedules apart; using the first candidate, {chosen.label}")
                probe_log = {"steps": 0, "planned_steps": p_phase.planned, "scores": [], "chosen": chosen.label,
                             "skipped": "too little time"}
            else:
                say(f"  probe: {len(cands)} schedules ({', '.join(c.label for c in cands)}) as one population, "
                    f"{p_phase.planned} steps planned")
                tp = clock()
                probe = members.replicate(len(cands), dropout_seed=night_seed + 7)
                if is_tol:
                    for m, mp in enumerate(p_plans):
                        mp.best, mp.best_kept, mp.best_accuracy = probe.snapshot(m), probe.held(m), unpruned
                probe_timings = {"prune": 0.0, "retrain": 0.0, "evaluate": 0.0}
                run_night(probe, td, p_plans, p_phase, timings=probe_timings, clock=clock)
                scores = [{"candidate": c.label, "val_accuracy": probe.evaluate(m, td.x_val, td.y_val),
                           "kept": probe.held(m)} for m, c in enumerate(cands)]
                timings["probe"] += clock() - tp
                best_m = _pick(scores, is_tol)
                chosen = cands[best_m]
                probe_steps = p_phase.done
                probe_log = {"steps": p_phase.done, "planned_steps": p_phase.first_plan, "scores": scores,
                             "chosen": chosen.label, "timings": probe_timings}
                say("  probe results: " + ", ".join(f"{s['candidate']} {s['val_accuracy']:.4f}"
                                                   + (f" ({s['kept']} kept)" if is_tol else "") for s in scores)
                    + f" -> {chosen.label}")
        final_plan = make_plan(chosen, B if deadline is None and not auto else None)
        night_steps_fixed = B * spe - len(cands) * probe_steps if deadline is None else 0
        if is_tol:
            final_plan.best, final_plan.best_kept, final_plan.best_accuracy = \
                members.snapshot(0), members.held(0), unpruned
        if deadline is not None:
            now = clock()
            n_phase = Phase("night", math.floor(max(0.0, night_deadline - now) / costs.step_s), night_deadline,
                            costs.step_s, clock, max_steps=max_epochs * spe,
                            pending=lambda: pending_night_costs([final_plan], costs))
        else:
            n_phase = Phase("night", max(0, night_steps_fixed))
        say(f"  night: {chosen.label} ({n_phase.planned} steps planned)")
        run_night(members, td, [final_plan], n_phase, timings=timings, clock=clock, progress=say)

        # -- the new model, its validation accuracy through the same code as predict, the history entry
        te = clock()
        new = members.to_model(0, model)
        kept_from = "night"
        if probe is not None:
            night_score = {"val_accuracy": members.evaluate(0, td.x_val, td.y_val), "kept": members.held(0)}
            if _pick([night_score, scores[best_m]], is_tol) == 1:  # the probe's winner ended better
                new = probe.to_model(best_m, model)
                kept_from = "probe"
            probe_log["night_val_accuracy"] = night_score["val_accuracy"]
            probe_log["kept_from"] = kept_from
        t_index = len(model.tasks)
        val_acc = new.accuracy(t_index, val.x, yv_idx)
        timings["evaluate"] += clock() - te
        kept_weights = sum(new.held_counts(t_index).values())
        free_after = new.free_fraction()
        entry = {
            "night": night_no, "task": task, "started": now_iso(), "mode": "budget" if budget_s else "epochs",
            "budget_s": budget_s, "planned_s": (budget_s - margin_for(budget_s)) if budget_s else None,
            "seconds": None, "train_steps": train_phase.done, "train_planned_steps": train_phase.first_plan,
            "train_epochs": train_phase.done / spe, "night_steps": n_phase.done,
            "night_planned_steps": n_phase.first_plan, "night_epochs": n_phase.done / spe,
            "steps_per_epoch": spe, "schedule": chosen.schedule, "rounds": chosen.rounds,
            "round_log": final_plan.round_log, "probe": probe_log,
            "replans": train_phase.replans + n_phase.replans, "val_accuracy": val_acc,
            "unpruned_val_accuracy": unpruned, "kept_weights": kept_weights, "free_after": free_after,
            "layer_free_after": {n: c / s for (n, c), s in zip(new.free_counts().items(), new.layer_sizes().values())},
            "policy": dict(model.policy), "policy_changed": policy_changed is not None,
            "n_train": len(train), "n_val": len(val), "val_source": val_source, "val_fingerprint": fingerprint(val),
            "lr": lr_, "batch_size": bs, "device": str(dev),
            "costs": {"step_ms": costs.step_s * 1e3, "prune_ms": costs.prune_s * 1e3, "eval_ms": costs.eval_s * 1e3,
                      "save_ms": costs.save_s * 1e3} if deadline is not None else None,
            "timings": timings,
        }
        new.meta["tasks"].append({"name": task, "owner": t_index + 1, "classes": classes, "n_train": len(train),
                                  "n_val": len(val), "val_accuracy": val_acc, "kept_weights": kept_weights,
                                  "night": night_no, "learnt": now_iso()})
        new.meta["history"].append(entry)
        ts = clock()
        entry["seconds"] = ts - t0  # time to the save; the save itself is measured below and reported
        new.meta["history"][-1] = json_safe(entry)
        new.save(path)
        timings["save"] = clock() - ts
        total = clock() - t0
        result = dict(json_safe(entry))
        result["total_seconds"] = total
        result["save_seconds"] = timings["save"]
        result["overrun_s"] = (total - budget_s) if budget_s else None
        result["path"] = str(path)
        result["file_bytes"] = path.stat().st_size
        over = f"; budget {budget_s:g} s, {'overrun ' + format(total - budget_s, '.2f') + ' s' if total > budget_s else 'within it'}" \
            if budget_s else ""
        say(f"  done in {total:.1f} s{over}: validation accuracy {val_acc:.4f}, kept {kept_weights} weights, "
            f"free {free_after:.2%}; saved {path} ({result['file_bytes']} bytes)"
            + (f", previous night kept as {prev_path(path)}" if not created else ""))
        return result


def _pick(scores: list[dict[str, Any]], tolerance_policy: bool) -> int:
    """Best probe member: highest accuracy (fixed policy) or fewest weights kept (tolerance); ties -> first."""
    if tolerance_policy:
        return min(range(len(scores)), key=lambda m: (scores[m]["kept"], -scores[m]["val_accuracy"], m))
    return max(range(len(scores)), key=lambda m: (scores[m]["val_accuracy"], -m))


def _warm_up(members: Members, td: TaskData, model: NightlyModel, path: Path, keep: dict[str, int],
             timings: dict[str, float], clock: Callable[[], float]) -> Costs:
    """Time a few real training steps, one prune (of a copy), one evaluation and one save (to a scratch file)."""
    t_start = clock()
    times = []
    for _ in range(WARMUP_STEPS):
        t0 = clock()
        x, y = td.batch()
        members.step(x, y)
        times.append(clock() - t0)
    step_s = sum(times[2:]) / len(times[2:])
    # one prune of a copy of the state (the real weights are not touched)
    params = {k: v.detach().clone() for k, v in members.params.items() if k in members.owner}
    owner = {k: v.clone() for k, v in members.owner.items()}
    t0 = clock()
    ownership.prune(params, owner, members.task, 0, keep, "layer")
    prune_s = clock() - t0
    t0 = clock()
    members.evaluate(0, td.x_val, td.y_val)
    eval_s = clock() - t0
    t0 = clock()
    draft = members.to_model(0, model)
    draft.meta["history"].append({"draft": True})
    write_scratch(path, draft.to_bytes())
    save_s = 2.0 * (clock() - t0) + 0.02
    timings["warmup"] = clock() - t_start
    timings["_warm_steps"] = WARMUP_STEPS
    return Costs(step_s=step_s, prune_s=prune_s, eval_s=eval_s * 1.5, save_s=save_s)


def normalisation(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """Mean and std fixed on the first night: per feature for ``(n, D)``, per channel for ``(n, C, H, W)``,
    one pair for ``(n, H, W)``. Constant inputs get std 1."""
    a = x.astype(np.float64)
    if a.ndim == 2:
        mean, std, how = a.mean(0), a.std(0), "per-feature"
    elif a.ndim == 4:
        mean = a.mean(axis=(0, 2, 3))[:, None, None]
        std = a.std(axis=(0, 2, 3))[:, None, None]
        how = "per-channel"
    else:
        mean, std, how = np.array(a.mean()), np.array(a.std()), "global"
    std = np.where(std > 0, std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32), how


def _check_channel_order(network: str, shape: tuple[int, ...]) -> None:
    if network == "vgg":
        if len(shape) not in (2, 3):
            raise DataFormatError(f"the vgg network needs images (n, C, H, W) or (n, H, W), got samples of shape {shape}")
        if len(shape) == 3 and shape[-1] in (1, 3, 4) and shape[0] not in (1, 3, 4):
            raise DataFormatError(f"samples of shape {shape} look channel-last; give (n, C, H, W), e.g. "
                                  "x.transpose(0, 3, 1, 2)")
