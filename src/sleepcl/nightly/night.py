"""One night of the nightly model, on the engine every run trains through.

The model's members are a :class:`~sleepcl.engine.population.Population` of one (of one per candidate in a
probe), and the day's training and the night's rounds are a :class:`~sleepcl.engine.day.DaySession` of PackNet
trained by the engine's one loop (:meth:`Population.train <sleepcl.engine.population.Population.train>`), as
``sleepcl run`` trains: the new task takes every free weight, a gradient mask keeps every other weight
bit-identical, shared parameters are trained on the first task only, Adam moments of pruned weights are
cleared, and pruning frees the smallest-magnitude weights of the task, per layer, to exact counts. What is the
nightly's own: each task has its own head with as many outputs as it has classes; the task's data is one
stream of batches (:class:`~sleepcl.engine.streams.SampleStream`); each phase's steps are a budget that the
planner re-plans against the wall clock (:class:`~sleepcl.nightly.planner.Phase`); and the schedule policy
decides where each round falls and what it keeps (fixed schedules, the adaptive one from the validation loss
of each round, the tolerance policy's snapshots), through the engine's hooks before and after every prune
(:class:`~sleepcl.engine.loop.Night`).

**Schedules.** ``uniform`` (the paper's), ``lengthening`` (rounds of length 1:2:...:N) and ``cubic`` (prune hard
early, gently late), each with ``--rounds N``; ``auto`` probes candidates (default uniform N = 1, 2, 4, 8,
lengthening 4, cubic 4) as one population on a short night (``probe_share`` of the night's time), keeps the best
on validation (fixed policy: accuracy; tolerance: fewest weights within tolerance), then runs the full night
with it from the trained state and keeps whichever of the two ends better on validation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor

from ..engine import norms, ownership
from ..engine.adam import fused_adam_available
from ..engine.day import DaySession
from ..engine.loop import MemberNight, Night, night_positions
from ..engine.members import Members
from ..engine.population import Population
from ..engine.streams import SampleStream
from ..schedule import SCHEDULES, night_targets, sleep_schedule
from ..strategies import Batch, Day, get_strategy
from .model import NightlyModel, write_scratch
from .planner import Costs, Phase, relative_schedule
from .rhythm import ADAPTIVE, Rhythm, share_targets

__all__ = ["DEFAULT_CANDIDATES", "NIGHT_PARTS", "Candidate", "MemberPlan", "TaskData", "plan_member", "run_night",
           "start_night", "train"]

Progress = Callable[[str], None]
WARMUP_STEPS = 8
# The engine's fast-path parts a night uses (and fused_adam, except with a probe: start_night).
NIGHT_PARTS = frozenset({"stacked_kernels", "skip_full_masks", "no_untrained_grads"})


@dataclass(frozen=True)
class Candidate:
    schedule: str
    rounds: int

    @property
    def label(self) -> str:
        return ADAPTIVE if self.schedule == ADAPTIVE else f"{self.schedule}:{self.rounds}"

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


# -- the task's data on the device ------------------------------------------------------------------------

@dataclass
class TaskData:
    x: Tensor            # normalised training samples on the device
    y: Tensor            # class index
    x_val: Tensor
    y_val: Tensor
    batch_size: int
    generator: torch.Generator
    stream: SampleStream = field(init=False)  # the training samples as the engine's endless stream of batches

    def __post_init__(self) -> None:
        self.stream = SampleStream(self.x, self.y, self.batch_size, self.generator)

    @property
    def steps_per_epoch(self) -> int:
        return self.stream.steps_per_epoch

    def passes(self, size: int) -> list[tuple[Tensor, Tensor, None]]:
        return self.stream.passes(size)

    def batches(self, session: DaySession) -> Iterator[Batch]:
        """The stream's batches for ``session``'s members, every sample of its day's task."""
        return self.stream.batches(session.members.size, session.day.head_task)  # type: ignore[arg-type]


# -- the day ------------------------------------------------------------------------------------------------

def start_night(model: NightlyModel, data: TaskData, n_classes: int, *, lr: float, device: torch.device,
                seed: int, probe: bool = False) -> tuple[Population, DaySession]:
    """The model, about to learn a new task of ``n_classes`` classes: a population of its one member and a day
    of PackNet on it.

    Adam is the engine's fused one (:class:`~sleepcl.engine.adam.MemberAdam`, as ``sleepcl run`` trains) where
    it runs, except for a night with a probe (``probe``), whose copies take torch's Adam moments
    (:meth:`Population.replicate <sleepcl.engine.population.Population.replicate>`). torch's Adam also costs a
    short night its first use: it imports ``torch._dynamo`` (1.5-2 s on a loaded 2-core machine;
    benchmarks/README.md, "Start-up")."""
    members = model.members(n_classes, device, seed)
    t = len(model.tasks)
    day = Day(owner=t + 1, pool=(t,), head_task=t, steps_per_epoch=data.steps_per_epoch, train_epochs=0,
              night_epochs=0, evaluate=(t,), capacity_step=t + 1)
    fused = not probe and fused_adam_available(device)
    population = Population.of_members(members, get_strategy("packnet"), lr,
                                       parts=NIGHT_PARTS | ({"fused_adam"} if fused else set()),
                                       adam="fused" if fused else "foreach")
    return population, population.session(day, t)


def train(population: Population, session: DaySession, data: TaskData, phase: Phase) -> None:
    """The day: the engine trains until ``phase`` says stop."""
    population.train(session, data.batches(session), phase)


def val_accuracy(session: DaySession, member: int, data: TaskData) -> float:
    """Validation accuracy of one member on the new task (which sees every weight: no later task exists, and
    freed weights are exactly zero)."""
    m = session.members
    one = Members(m.net, {n: p[member:member + 1] for n, p in m.params.items()},
                  {n: b[member:member + 1] for n, b in m.buffers.items()}, {}, m.random)
    recalibrate(one, data, session.day.head_task)  # type: ignore[arg-type]
    right = one.correct(data.x_val, data.y_val, session.day.head_task, chunk=4096)  # type: ignore[arg-type]
    return int(right[0]) / max(1, len(data.x_val))


@torch.no_grad()
def val_loss(session: DaySession, member: int, data: TaskData, chunk: int = 4096,
             prune_to: dict[str, int] | None = None) -> float:
    """Mean cross-entropy of one member on the new task's validation data (what the adaptive schedule reads);
    with ``prune_to``, of a copy of it pruned to those counts now (the member itself is left as it is)."""
    m = session.members
    params = {n: p[member:member + 1] for n, p in m.params.items()}
    buffers = {n: b[member:member + 1] for n, b in m.buffers.items()}
    if prune_to is not None:
        owner = {n: o[member:member + 1].clone() for n, o in m.owner.items()}
        params.update({n: params[n].detach().clone() for n in owner})
        ownership.prune(params, owner, session.day.owner, 0, prune_to, "layer")
    total = 0.0
    for xs, ys in zip(data.x_val.split(chunk), data.y_val.split(chunk)):
        logits = m.net.logits(params, xs[None], session.day.head_task, buffers=buffers)[0]  # type: ignore[arg-type]
        total += float(torch.nn.functional.cross_entropy(logits.double(), ys, reduction="sum"))
    return total / max(1, len(data.x_val))
def recalibrate(members: Members, data: TaskData, task: int) -> None:
    """The members' norm-layer statistics of ``task`` recomputed on its training data with the weights they have
    now (:mod:`sleepcl.engine.norms`; training never reads them, so this changes answers, not training)."""
    if members.net.statistics_layers:
        norms.recalibrate(members, data.passes(members.size), task)


# -- the night ---------------------------------------------------------------------------------------------

@dataclass(kw_only=True)
class MemberPlan(MemberNight):
    """One member's night (the engine's :class:`~sleepcl.engine.loop.MemberNight`: prune positions as fractions
    of the night, keep counts per round) with its candidate schedule, and for the tolerance policy the
    reference accuracy it must stay within."""

    candidate: Candidate
    reference: float | None = None      # tolerance policy: unpruned validation accuracy
    tolerance: float | None = None
    round_log: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None  # tolerance: snapshot of the accepted state
    best_kept: int | None = None
    best_accuracy: float | None = None
    rhythm: Rhythm | None = None        # the adaptive schedule: positions and targets decided as the night goes
    held: dict[str, int] = field(default_factory=dict)
    keep: dict[str, int] = field(default_factory=dict)

    def prunes_left(self) -> int:
        return self.rhythm.rounds_left() if self.rhythm is not None else len(self.targets) - self.rounds_done


def plan_member(candidate: Candidate, held: dict[str, int], keep: dict[str, int], *,
                epochs_budget: int | None, rhythm: Rhythm | None = None) -> MemberPlan:
    """Prune positions and per-layer targets of one candidate schedule, going from ``held`` to ``keep``
    (``rhythm``: the adaptive schedule's settings, default :class:`Rhythm`'s)."""
    if candidate.schedule == ADAPTIVE:  # the first prune at once, the rest decided as the night goes
        return MemberPlan([Fraction(0)], [], candidate=candidate, rhythm=rhythm or Rhythm(), held=dict(held),
                          keep=dict(keep))
    if epochs_budget is not None:
        schedule = sleep_schedule(candidate.schedule, epochs_budget, candidate.rounds)
    else:
        schedule = relative_schedule(candidate.schedule, candidate.rounds)
    per_layer = {name: night_targets(held[name], keep[name], schedule) for name in held}
    targets = [{name: per_layer[name][k] for name in held} for k in range(schedule.rounds)]
    return MemberPlan(night_positions(schedule), targets, candidate=candidate)  # type: ignore[arg-type]


def run_night(population: Population, session: DaySession, data: TaskData, plans: list[MemberPlan], phase: Phase,
              *, timings: dict[str, float], clock: Callable[[], float], progress: Progress | None = None) -> None:
    """The engine retrains all members together until ``phase`` ends, pruning each at its plan's positions.

    Before each prune, the adaptive schedule decides the round from the loss of the one that ends; tolerance
    plans also evaluate every round-end state (after its retraining, before the next prune, and at the end)
    and keep a snapshot of the fewest-weights state within tolerance.
    """
    members, owner = session.members, session.day.owner

    def timed(what: str, f: Callable[[], Any]) -> Any:
        t0 = clock()
        out = f()
        timings[what] += clock() - t0
        return out

    def round_end(m: int) -> None:
        plan = plans[m]
        if plan.tolerance is None or plan.rounds_done == 0:
            return
        acc = timed("evaluate", lambda: val_accuracy(session, m, data))
        kept = members.held(m, owner)
        plan.round_log[-1]["val_accuracy"] = acc
        if acc >= plan.reference - plan.tolerance - 1e-12 and (plan.best_kept is None or kept <= plan.best_kept):
            plan.best, plan.best_kept, plan.best_accuracy = members.snapshot(m), kept, acc

    def adapt(m: int, plan: MemberPlan) -> None:
        """The adaptive schedule's next prune: how far, from the loss of the round that ends now; then where the
        one after falls."""
        loss = timed("evaluate", lambda: val_loss(session, m, data))
        at = Fraction(phase.done, max(1, phase.planned))
        damage = None
        if plan.rhythm.lookahead is not None:  # type: ignore[union-attr]
            damage = lambda u: timed("evaluate", lambda: val_loss(  # noqa: E731
                session, m, data, prune_to=share_targets(plan.held, plan.keep, u)))
        u = plan.rhythm.next_share(loss, at, final=phase.done >= phase.planned, damage=damage)  # type: ignore[union-attr]
        plan.targets.append(share_targets(plan.held, plan.keep, u))
        after = plan.rhythm.next_position(at)  # type: ignore[union-attr]
        if after is not None:
            plan.positions.append(after)

    def before_prune(m: int, plan: MemberPlan) -> None:
        round_end(m)
        if plan.rhythm is not None:
            adapt(m, plan)

    def after_prune(m: int, plan: MemberPlan) -> None:
        plan.round_log.append({"round": plan.rounds_done, "at_step": phase.done, "kept": members.held(m, owner)})
        if progress and len(plans) == 1:
            of = "" if plan.rhythm is not None else f"/{len(plan.targets)}"
            progress(f"  round {plan.rounds_done}{of}: pruned at step {phase.done} to {members.held(m, owner)} weights")

    t_start = clock()
    population.train(session, data.batches(session), phase, Night(session, plans, before_prune, after_prune, timed))
    for m, plan in enumerate(plans):
        round_end(m)  # the last round's retrained state
        if plan.best is not None:
            members.restore(m, plan.best)
    recalibrate(members, data, session.day.head_task)  # type: ignore[arg-type]
    timings["retrain"] += clock() - t_start


def pending_night_costs(plans: Sequence[MemberPlan], costs: Costs, final_evals: int = 0) -> float:
    """Seconds of prunes and evaluations still to come in a night."""
    prunes = sum(p.prunes_left() for p in plans)
    evals = sum(p.prunes_left() + (1 if p.tolerance is not None else 0) for p in plans
                if p.tolerance is not None or p.rhythm is not None)
    return prunes * costs.prune_s + (evals + final_evals) * costs.eval_s


def pick(scores: list[dict[str, Any]], tolerance_policy: bool) -> int:
    """Best probe member: highest accuracy (fixed policy) or fewest weights kept (tolerance); ties -> first."""
    if tolerance_policy:
        return min(range(len(scores)), key=lambda m: (scores[m]["kept"], -scores[m]["val_accuracy"], m))
    return max(range(len(scores)), key=lambda m: (scores[m]["val_accuracy"], -m))


# -- the warm-up of a budgeted night ------------------------------------------------------------------------

def warm_up(population: Population, session: DaySession, data: TaskData, model: NightlyModel, classes: list[Any],
            path: Path, keep: dict[str, int], timings: dict[str, float], clock: Callable[[], float]) -> Costs:
    """Time a few real training steps, one prune (of a copy), one evaluation and one save (to a scratch file)."""
    t_start = clock()
    steps = Phase("warm-up", WARMUP_STEPS, clock=clock)  # a fixed count; it keeps each step's time
    population.train(session, data.batches(session), steps)
    times = list(steps.window)
    step_s = sum(times[2:]) / len(times[2:])
    members = session.members
    params = {k: v.detach().clone() for k, v in members.params.items() if k in members.owner}
    owner = {k: v.clone() for k, v in members.owner.items()}
    t0 = clock()
    ownership.prune(params, owner, session.day.owner, 0, keep, "layer")  # a copy: the real weights stay
    prune_s = clock() - t0
    t0 = clock()
    val_accuracy(session, 0, data)
    eval_s = clock() - t0
    t0 = clock()
    draft = model.with_member(members, 0, classes)
    draft.meta["history"].append({"draft": True})
    write_scratch(path, draft.to_bytes())
    save_s = 2.0 * (clock() - t0) + 0.02
    timings["warmup"] = clock() - t_start
    return Costs(step_s=step_s, prune_s=prune_s, eval_s=eval_s * 1.5, save_s=save_s)
