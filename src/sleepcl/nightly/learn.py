"""``learn``: add a task to a deployed model in one night, as a short pipeline.

1. **check** the arguments (:class:`Request`), then, holding the model's lock, load the model (or plan a new
   one) and the data, and check them against each other: nothing is trained before every check passed;
2. **plan**: with a wall-clock budget, a warm-up times real steps, a prune, an evaluation and a save, and the
   rest of the budget is split between training and the night (:mod:`.planner`); with epoch budgets, the
   paper's fixed step counts;
3. **train** the free weights, then **sleep**: the night's rounds of prune-and-retrain (:mod:`.night`), after
   a probe of candidate schedules with ``--schedule auto``;
4. **save** the new model atomically (the previous night's file kept as ``MODEL.prev``) with the night's
   history entry.

Everything that trains is the shared engine's: the model's member is a population of one
(:meth:`Population.of_members <sleepcl.engine.population.Population.of_members>`), its day a
:class:`~sleepcl.engine.day.DaySession`, every step taken by the one loop (:mod:`sleepcl.engine.loop`), the same
code and guarantees as ``sleepcl run`` and the study. nightly/ plans (the budget, the schedule) and keeps the
model file; it has no training loop of its own.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..config import FLOAT32_MAX, MAX_EPOCHS, paper_defaults
from ..data.user import DataFormatError, Dataset, fingerprint, load_data, split_validation
from ..models import NETWORKS, is_factory
from ..schedule import SCHEDULES, sleep_schedule
from ..threads import torch_threads
from .model import (ModelError, NightlyModel, check_fits, check_night_memory, check_task_name, json_safe, lock_model,
                    now_iso, prev_path, task_score_stats)
from .night import (DEFAULT_CANDIDATES, WARMUP_STEPS, Candidate, MemberPlan, TaskData, pending_night_costs, pick,
                    plan_member, run_night, start_night, train, val_accuracy, warm_up)
from .planner import Costs, Phase, margin_for, parse_duration, split_time
from .policy import capacity_targets, describe_free, make_policy
from .rhythm import ADAPTIVE, Rhythm

__all__ = ["Request", "learn"]

Progress = Callable[[str], None]


@dataclass
class Request:
    """What a night is asked to do; :meth:`check` refuses what cannot work before anything is read."""

    task: str
    budget: str | float | None = None
    epochs: int | None = None
    retrain_epochs: int | None = None
    rounds: int | None = None
    schedule: str = "uniform"
    candidates: Sequence[Candidate | str] | None = None
    probe_share: float = 0.3
    adaptive_target: float = 0.05
    adaptive_lookahead: float | None = None
    night_share: float = 0.5
    max_epochs: int = 72
    network: str | None = None
    widths: Sequence[int] | None = None
    head: str | None = None
    policy: str | None = None
    final_free: float | None = None
    expected_tasks: int | None = None
    tolerance: float | None = None
    min_keep: float | None = None
    lr: float | None = None
    batch_size: int | None = None
    seed: int | None = None
    budget_s: float | None = field(init=False, default=None)
    cands: list[Candidate] = field(init=False, default_factory=list)

    @property
    def auto(self) -> bool:
        return self.schedule == "auto"

    @property
    def adaptive(self) -> bool:
        return self.schedule == ADAPTIVE

    def check(self) -> None:
        if self.budget is not None and self.epochs is not None:
            raise ValueError("give either --budget (a wall-clock budget) or --epochs/--retrain-epochs (the paper's "
                             "epoch budgets), not both")
        self.budget_s = parse_duration(self.budget) if self.budget is not None else None
        if not self.auto and not self.adaptive and self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose uniform, lengthening, cubic, adaptive or auto")
        if not 0 < self.adaptive_target < math.inf:
            raise ValueError(f"--adaptive-target must be a positive number of nats, got {self.adaptive_target}")
        if self.adaptive_lookahead is not None and not 0 < self.adaptive_lookahead < math.inf:
            raise ValueError(f"--adaptive-lookahead must be a positive number of nats, got {self.adaptive_lookahead}")
        if self.adaptive and self.rounds is not None:
            raise ValueError("--rounds does not go with --schedule adaptive, which decides each round as the night goes")
        if self.adaptive and (self.policy == "tolerance" or self.tolerance is not None or self.min_keep is not None):
            raise ValueError("--schedule adaptive goes with the fixed capacity policy, not --policy tolerance")
        if self.rounds is not None and self.rounds < 1:
            raise ValueError(f"--rounds N must be >= 1, got {self.rounds}")
        if self.auto and self.rounds is not None:
            raise ValueError("--rounds does not go with --schedule auto, which picks N itself (see --candidates)")
        self.cands = [c if isinstance(c, Candidate) else Candidate.parse(c)
                      for c in (self.candidates or DEFAULT_CANDIDATES)]
        if self.auto and len(set(self.cands)) < 2:
            raise ValueError("--schedule auto needs at least two different --candidates")
        for name, v in (("--night-share", self.night_share), ("--probe-share", self.probe_share)):
            if not 0.0 < v < 1.0:
                raise ValueError(f"{name} must lie strictly between 0 and 1, got {v}")
        if self.max_epochs < 1:
            raise ValueError(f"--max-epochs must be >= 1, got {self.max_epochs}")
        for flag, v in (("--epochs", self.epochs), ("--retrain-epochs", self.retrain_epochs)):
            if v is not None and not 0 <= v <= MAX_EPOCHS:
                raise ValueError(f"{flag} must be >= 0 and at most {MAX_EPOCHS:,} (the paper trains 72), got {v:,}")
        check_task_name(self.task)
        if self.network is not None and self.network not in NETWORKS and not is_factory(self.network):
            raise ValueError(f"unknown network {self.network!r}; choose one of {', '.join(NETWORKS)} or give a "
                             "model factory as package.module:function")


def learn(model_path: str | os.PathLike, task: str, data: Any, *, val_data: Any = None, val_fraction: float = 0.1,
          label_column: str = "label", device: str = "cpu", threads: int | None = None, max_memory: int | None = None,
          started: float | None = None, progress: Progress | None = None,
          clock: Callable[[], float] = time.perf_counter, **options: Any) -> dict[str, Any]:
    """Add task ``task`` learnt from ``data`` to the model at ``model_path`` (created if absent) in one night.

    Give either ``budget`` (seconds or a duration string such as ``"45m"``; the night ends, model saved,
    before it runs out) or ``epochs`` (``E`` training and ``retrain_epochs`` ``B`` night epochs, the paper's
    setting); the other ``options`` are :class:`Request`'s fields. The network (``"mlp"``, ``"vgg"`` or a model
    factory ``"package.module:function"``), widths, lr, batch size and seed given on the first night become the
    model's; the capacity policy options given on a later night re-plan the capacity from the current state.
    ``threads`` sets torch's intra-op threads for the night. ``max_memory`` (bytes; default: the memory available
    now): data that would not fit in it together with the network is refused before it is read. ``started`` is
    the ``clock()`` time the budget counts from (default: now; the CLI passes the process start). ``progress``
    receives one line per phase.

    Returns the night's history entry (also stored in the model) plus ``total_seconds``, ``save_seconds``,
    ``overrun_s``, ``path`` and ``file_bytes``. Raises ``ValueError`` (``ModelError``, ``DataFormatError``)
    before any training for input that cannot work; with a budget, one too short for even the warm-up's
    measured costs is refused after the warm-up, the model unchanged.
    """
    t0 = clock() if started is None else started
    entered = clock()
    request = Request(task, **options)
    request.check()
    path = Path(model_path)
    from ..runs.runner import resolve_device

    dev = resolve_device(device)
    with lock_model(path), torch_threads(threads):
        model = _open_model(path, request)
        created = model is None
        check_night_memory(model, data, val_data, network=request.network, widths=request.widths,
                           batch_size=request.batch_size, label_column=label_column,
                           members=len(request.cands) + 1 if request.auto else 1, device=str(dev),
                           max_memory=max_memory)
        train_set, val_set, val_source = _task_sets(model, data, val_data, val_fraction, label_column, request)
        policy_changed = None
        if model is None:
            model = _new_model(request, train_set)
        else:
            policy_changed = make_policy(request.policy, final_free=request.final_free,
                                         expected_tasks=request.expected_tasks, tolerance=request.tolerance,
                                         min_keep=request.min_keep, model=model)
            if policy_changed is not None:
                model.meta["policy"] = policy_changed
        night = _Night(model, train_set, val_set, val_source, request, path, dev, clock, progress, t0)
        # Where the budget went before the warm-up: starting Python, torch and sleepcl (from the process start
        # when the CLI passes it), then reading the model and the data and setting up the night.
        night.timings.update(startup=entered - t0, load=clock() - entered)
        night.plan()
        night.train()
        night.sleep()
        return night.save(created, policy_changed)


def _open_model(path: Path, request: Request) -> NightlyModel | None:
    """The model at ``path``, or None for a new one; refuses a task name in use and a change of network."""
    model = NightlyModel.load(path, factory=request.network) if path.exists() else None
    if model is None and prev_path(path).exists():
        raise ModelError(f"{path} is missing but {prev_path(path)} exists: restore it (cp {prev_path(path)} "
                         f"{path}) or choose another model path; not starting a new model over it")
    if model is None:
        return None
    if any(t["name"] == request.task for t in model.tasks):
        raise ModelError(f"the model already has a task called {request.task!r} (tasks: "
                         f"{', '.join(t['name'] for t in model.tasks)}); choose a new name")
    spec = model.meta["network"]
    if request.network is not None and request.network != spec["name"] and model.factory != request.network:
        raise ValueError(f"the model is a {spec['name']} network; --network is chosen when a model is created")
    if request.widths is not None and list(request.widths) != list(spec["widths"]):
        raise ValueError(f"the model's widths are {spec['widths']}; --widths is chosen when a model is created")
    return model


def _task_sets(model: NightlyModel | None, data: Any, val_data: Any, val_fraction: float, label_column: str,
               request: Request) -> tuple[Dataset, Dataset, str]:
    """The night's training and validation sets, checked against each other and the model."""
    train_set = load_data(data, label_column=label_column, require_labels=True)
    seed = 0 if request.seed is None else request.seed
    if val_data is not None:
        val_set = load_data(val_data, label_column=label_column, require_labels=True)
        val_source = val_set.source
    else:
        train_set, val_set = split_validation(train_set, val_fraction, seed=seed)
        val_source = f"{val_fraction:g} of {train_set.source} (stratified, seed {seed})"
    classes = train_set.classes()
    if len(classes) < 2:
        raise DataFormatError(f"{train_set.source}: a task needs at least two classes, found {classes}")
    unknown = sorted(set(val_set.classes()) - set(classes), key=str)
    if unknown:
        raise DataFormatError(f"{val_set.source}: validation labels {unknown} are not among the training classes "
                              f"{classes}")
    if val_set.sample_shape != train_set.sample_shape or val_set.kind != train_set.kind:
        raise DataFormatError(f"{val_set.source}: validation samples are {val_set.kind} {val_set.sample_shape} but "
                              f"the training samples are {train_set.kind} {train_set.sample_shape}")
    if model is not None:
        check_fits(model, train_set)
        check_fits(model, val_set)
    return train_set, val_set, val_source


def _new_model(request: Request, train_set: Dataset) -> NightlyModel:
    network = request.network or "mlp"
    _check_channel_order(network, train_set.sample_shape)
    defaults = paper_defaults(network)
    mean, std, how = normalisation(train_set.x)
    policy = make_policy(request.policy, final_free=request.final_free, expected_tasks=request.expected_tasks,
                         tolerance=request.tolerance, min_keep=request.min_keep, model=None)
    training = {"lr": request.lr if request.lr is not None else defaults["lr"],
                "batch_size": request.batch_size if request.batch_size is not None else defaults["batch_size"]}
    return NightlyModel.create(network=network, widths=tuple(request.widths) if request.widths else None,
                               input_shape=train_set.sample_shape, kind=train_set.kind, mean=mean, std=std,
                               normalisation=how, policy=policy, training=training,
                               seed=0 if request.seed is None else request.seed, head=request.head)


class _Night:
    """One night's state as the pipeline goes: the session on the engine, the plans, phases and timings."""

    def __init__(self, model: NightlyModel, train_set: Dataset, val_set: Dataset, val_source: str, request: Request,
                 path: Path, device: torch.device, clock: Callable[[], float], progress: Progress | None, t0: float):
        self.model, self.request, self.path, self.clock, self.t0 = model, request, path, clock, t0
        self.say = progress or (lambda s: None)
        self.train_set, self.val_set, self.val_source = train_set, val_set, val_source
        self.held, self.keep = capacity_targets(model)
        self.tolerance = model.policy["kind"] == "tolerance"
        self.n_rounds = request.rounds if request.rounds is not None else (8 if self.tolerance else 1)
        training = model.meta["training"]
        self.night_seed = int(training["seed"] if request.seed is None else request.seed) + 1000 * (len(model.tasks) + 1)
        self.lr = request.lr if request.lr is not None else training["lr"]
        self.batch_size = request.batch_size if request.batch_size is not None else training["batch_size"]
        if self.batch_size < 1 or not 0 < self.lr <= FLOAT32_MAX:
            raise ValueError(f"--batch-size must be >= 1 and --lr a finite number > 0 (at most {FLOAT32_MAX:.4g}: "
                             f"the weights are float32), got {self.batch_size} and {self.lr}")
        self._epoch_budgets()
        self.classes = train_set.classes()
        index = {c: i for i, c in enumerate(self.classes)}
        self.y_val = np.array([index[v] for v in val_set.y.tolist()], dtype=np.int64)
        y = np.array([index[v] for v in train_set.y.tolist()], dtype=np.int64)
        self.data = TaskData(model.normalise(train_set.x, device), torch.from_numpy(y).to(device),
                             model.normalise(val_set.x, device), torch.from_numpy(self.y_val).to(device),
                             self.batch_size, torch.Generator().manual_seed(self.night_seed))
        self.timings = {"warmup": 0.0, "train": 0.0, "probe": 0.0, "prune": 0.0, "retrain": 0.0, "evaluate": 0.0,
                        "save": 0.0}
        self.population, self.session = start_night(model, self.data, len(self.classes), lr=self.lr, device=device,
                                                    seed=self.night_seed, probe=request.auto)
        self.costs, self.reserve, self.deadline = Costs(step_s=0.0), 0.0, None
        self.probe_log: dict[str, Any] | None = None
        self.probe_session = None
        self.unpruned: float | None = None

    def _epoch_budgets(self) -> None:
        r = self.request
        self.E = self.B = None
        if r.epochs is not None or r.budget_s is None:
            defaults = paper_defaults(self.model.meta["network"]["name"])
            self.E = r.epochs if r.epochs is not None else defaults["epochs"]
            self.B = r.retrain_epochs if r.retrain_epochs is not None else defaults["retrain_epochs"]
            if self.E < 0 or self.B < 0 or self.E + self.B == 0:
                raise ValueError(f"--epochs and --retrain-epochs must be >= 0 and not both 0, got {self.E} and {self.B}")
            if not r.auto and not r.adaptive:
                sleep_schedule(r.schedule, self.B, self.n_rounds)  # the uniform schedule needs B to be a multiple of N
        elif r.retrain_epochs is not None:
            raise ValueError("--retrain-epochs goes with --epochs (epoch budgets), not with --budget")

    @property
    def spe(self) -> int:
        return self.data.steps_per_epoch

    def _label(self) -> str:
        if self.request.adaptive:
            return "adaptive schedule"
        return "auto schedule" if self.request.auto else f"{self.request.schedule}, N={self.n_rounds}"

    # -- 2. plan -------------------------------------------------------------------------------------

    def plan(self) -> None:
        r, m = self.request, self.model
        self.say(f"night {len(m.history) + 1}: task {r.task!r} ({len(self.classes)} classes, {len(self.train_set)} "
                 f"training / {len(self.val_set)} validation samples) on {'the' if m.tasks or m.history else 'a new'} "
                 f"{m.meta['network']['name']} model {self.path}; free now {describe_free(m)}")
        if r.budget_s is None:
            self.train_phase = Phase("train", self.E * self.spe)
            self.say(f"  epochs: train E={self.E} ({self.E * self.spe} steps), night B={self.B} ({self.B * self.spe} "
                     f"steps, {self._label()})")
            return
        self.deadline = self.t0 + r.budget_s
        self.costs = warm_up(self.population, self.session, self.data, m, self.classes, self.path, self.keep,
                             self.timings, self.clock)
        self.reserve = self.costs.eval_s + self.costs.save_s + margin_for(r.budget_s)
        n_prunes, n_evals = self.n_rounds, 1 + (self.n_rounds + 1 if self.tolerance else 0)
        if r.adaptive:  # at most Rhythm.max_rounds prunes, each after an evaluation of the loss
            n_prunes = Rhythm().max_rounds
            n_evals = 1 + n_prunes
        if r.auto:
            most = max(c.rounds for c in r.cands)
            n_prunes = sum(c.rounds for c in r.cands) + most
            n_evals = 1 + len(r.cands) + (sum(c.rounds + 1 for c in r.cands) + most + 1 if self.tolerance else 0)
        remaining = self.deadline - self.clock() - self.reserve
        train_s, night_s = split_time(remaining, self.costs, night_share=r.night_share, n_prunes=n_prunes,
                                      n_evals=n_evals)
        if train_s + night_s < 10 * self.costs.step_s:
            raise ModelError(
                f"the budget of {r.budget_s:g} s is too short for this night: after {self.clock() - self.t0:.1f} s of "
                f"start-up and warm-up, the final evaluation and save ({self.costs.eval_s + self.costs.save_s:.2f} s) "
                f"and a margin ({margin_for(r.budget_s):.2f} s) leave no time to train (one step takes "
                f"{self.costs.step_s * 1e3:.1f} ms); the model is unchanged. Give a longer --budget")
        self.train_phase = Phase("train", math.floor(train_s / self.costs.step_s) + WARMUP_STEPS,
                                 self.clock() + train_s, self.costs.step_s, self.clock, max_steps=r.max_epochs * self.spe)
        self.train_phase.done = WARMUP_STEPS  # the warm-up's steps were real training steps
        self.say(f"  budget {r.budget_s:g} s: start-up and warm-up took {self.clock() - self.t0:.1f} s; one step "
                 f"{self.costs.step_s * 1e3:.2f} ms, prune {self.costs.prune_s * 1e3:.1f} ms, evaluation "
                 f"{self.costs.eval_s * 1e3:.1f} ms, save {self.costs.save_s * 1e3:.0f} ms; plan: train "
                 f"{self.train_phase.planned} steps ({self.train_phase.planned / self.spe:.1f} epochs) in {train_s:.1f} s, "
                 f"night {night_s:.1f} s ({self._label()}), reserve {self.reserve:.2f} s")

    # -- 3. train and sleep ----------------------------------------------------------------------------

    def train(self) -> None:
        self.say(f"  training ({self.train_phase.planned} steps planned)")
        tt = self.clock()
        train(self.population, self.session, self.data, self.train_phase)
        self.timings["train"] += self.clock() - tt
        if self.tolerance:
            te = self.clock()
            self.unpruned = val_accuracy(self.session, 0, self.data)
            self.timings["evaluate"] += self.clock() - te
            self.say(f"  trained {self.train_phase.done} steps; unpruned validation accuracy {self.unpruned:.4f}")
        else:
            self.say(f"  trained {self.train_phase.done} steps ({self.train_phase.done / self.spe:.1f} epochs)")

    def _plan(self, c: Candidate, epochs_budget: int | None, session: Any, member: int) -> MemberPlan:
        mp = plan_member(c, self.held, self.keep, epochs_budget=epochs_budget,
                         rhythm=Rhythm(target=self.request.adaptive_target, lookahead=self.request.adaptive_lookahead)
                         if c.schedule == ADAPTIVE else None)
        if self.tolerance:
            mp.reference, mp.tolerance = self.unpruned, self.model.policy["tolerance"]
            mp.best, mp.best_kept = session.members.snapshot(member), session.members.held(member, session.day.owner)
            mp.best_accuracy = self.unpruned
        return mp

    def sleep(self) -> None:
        r = self.request
        self.night_deadline = self.deadline - self.reserve if self.deadline is not None else None
        self.chosen, probe_steps = Candidate(r.schedule, self.n_rounds), 0
        if r.auto:
            probe_steps = self._probe()
        self.final_plan = self._plan(self.chosen, self.B if self.deadline is None and not r.auto else None,
                                     self.session, 0)
        if self.deadline is not None:
            now = self.clock()
            self.night_phase = Phase("night", math.floor(max(0.0, self.night_deadline - now) / self.costs.step_s),
                                     self.night_deadline, self.costs.step_s, self.clock,
                                     max_steps=r.max_epochs * self.spe,
                                     pending=lambda: pending_night_costs([self.final_plan], self.costs))
        else:
            self.night_phase = Phase("night", max(0, self.B * self.spe - len(r.cands) * probe_steps))
        self.say(f"  night: {self.chosen.label} ({self.night_phase.planned} steps planned)")
        run_night(self.population, self.session, self.data, [self.final_plan], self.night_phase, timings=self.timings,
                  clock=self.clock, progress=self.say)

    def _probe(self) -> int:
        """``--schedule auto``: every candidate as one population on a short night; picks ``self.chosen``."""
        r = self.request
        cands = r.cands
        plans: list[MemberPlan] = []
        if self.deadline is not None:
            now = self.clock()
            end = now + r.probe_share * (self.night_deadline - now)
            phase = Phase("probe", math.floor((end - now) / (self.costs.step_s * len(cands))), end,
                          self.costs.step_s * len(cands), self.clock, max_steps=r.max_epochs * self.spe,
                          pending=lambda: pending_night_costs(plans, self.costs, final_evals=len(cands)))
        else:
            phase = Phase("probe", math.floor(r.probe_share * self.B * self.spe / len(cands)))
        if phase.planned < 2 * max(c.rounds for c in cands):
            self.chosen = cands[0]
            self.say(f"  probe skipped: only {phase.planned} probe steps fit, too few to tell {len(cands)} schedules "
                     f"apart; using the first candidate, {self.chosen.label}")
            self.probe_log = {"steps": 0, "planned_steps": phase.planned, "scores": [], "chosen": self.chosen.label,
                              "skipped": "too little time"}
            return 0
        self.say(f"  probe: {len(cands)} schedules ({', '.join(c.label for c in cands)}) as one population, "
                 f"{phase.planned} steps planned")
        tp = self.clock()
        probe_population, probe = self.population.replicate(self.session, len(cands),
                                                            [self.night_seed + 7 + m for m in range(len(cands))])
        plans.extend(self._plan(c, None, probe, m) for m, c in enumerate(cands))
        probe_timings = {"prune": 0.0, "retrain": 0.0, "evaluate": 0.0}
        run_night(probe_population, probe, self.data, plans, phase, timings=probe_timings, clock=self.clock)
        self.scores = [{"candidate": c.label, "val_accuracy": val_accuracy(probe, m, self.data),
                        "kept": probe.members.held(m, probe.day.owner)} for m, c in enumerate(cands)]
        self.timings["probe"] += self.clock() - tp
        self.best_m = pick(self.scores, self.tolerance)
        self.chosen = cands[self.best_m]
        self.probe_session = probe
        self.probe_log = {"steps": phase.done, "planned_steps": phase.first_plan, "scores": self.scores,
                          "chosen": self.chosen.label, "timings": probe_timings}
        self.say("  probe results: " + ", ".join(f"{s['candidate']} {s['val_accuracy']:.4f}"
                                                + (f" ({s['kept']} kept)" if self.tolerance else "")
                                                for s in self.scores) + f" -> {self.chosen.label}")
        return phase.done

    # -- 4. save ---------------------------------------------------------------------------------------

    def _result_model(self) -> NightlyModel:
        """The model the night ends with: the night's member, or the probe's winner when it ended better."""
        new = self.model.with_member(self.session.members, 0, self.classes)
        if self.probe_session is not None:
            night = {"val_accuracy": val_accuracy(self.session, 0, self.data),
                     "kept": self.session.members.held(0, self.session.day.owner)}
            kept_from = "night"
            if pick([night, self.scores[self.best_m]], self.tolerance) == 1:
                new = self.model.with_member(self.probe_session.members, self.best_m, self.classes)
                kept_from = "probe"
            self.probe_log.update(night_val_accuracy=night["val_accuracy"], kept_from=kept_from)  # type: ignore[union-attr]
        return new

    def save(self, created: bool, policy_changed: dict[str, Any] | None) -> dict[str, Any]:
        te = self.clock()
        new = self._result_model()
        t_index = len(self.model.tasks)
        val_logits = new.logits(t_index, self.val_set.x)
        val_acc = float((val_logits.argmax(1).numpy() == self.y_val).mean())
        self.timings["evaluate"] += self.clock() - te
        entry = self._history_entry(new, t_index, val_acc, policy_changed)
        # The task's own scores on its validation data: what calibrated task inference (predict without --task)
        # measures its answers against.
        new.meta["tasks"].append({"name": self.request.task, "owner": t_index + 1, "classes": self.classes,
                                  "n_train": len(self.train_set), "n_val": len(self.val_set), "val_accuracy": val_acc,
                                  "kept_weights": entry["kept_weights"], "night": entry["night"], "learnt": now_iso(),
                                  "score_stats": task_score_stats(val_logits)})
        ts = self.clock()
        entry["seconds"] = ts - self.t0  # time to the save; the save itself is measured below and reported
        new.meta["history"].append(json_safe(entry))
        new.save(self.path)
        self.timings["save"] = self.clock() - ts
        total = self.clock() - self.t0
        budget_s = self.request.budget_s
        result = dict(json_safe(entry), total_seconds=total, save_seconds=self.timings["save"],
                      overrun_s=(total - budget_s) if budget_s else None, path=str(self.path),
                      file_bytes=self.path.stat().st_size)
        over = (f"; budget {budget_s:g} s, " + (f"overrun {total - budget_s:.2f} s" if total > budget_s else "within it")
                if budget_s else "")
        self.say(f"  done in {total:.1f} s{over}: validation accuracy {val_acc:.4f}, kept {entry['kept_weights']} "
                 f"weights, free {entry['free_after']:.2%}; saved {self.path} ({result['file_bytes']} bytes)"
                 + (f", previous night kept as {prev_path(self.path)}" if not created else ""))
        return result

    def _history_entry(self, new: NightlyModel, t_index: int, val_acc: float,
                       policy_changed: dict[str, Any] | None) -> dict[str, Any]:
        budget_s, spe = self.request.budget_s, self.spe
        tp, np_ = self.train_phase, self.night_phase
        c = self.costs
        return {
            "night": len(self.model.history) + 1, "task": self.request.task, "started": now_iso(),
            "mode": "budget" if budget_s else "epochs", "budget_s": budget_s,
            "planned_s": (budget_s - margin_for(budget_s)) if budget_s else None, "seconds": None,
            "train_steps": tp.done, "train_planned_steps": tp.first_plan, "train_epochs": tp.done / spe,
            "night_steps": np_.done, "night_planned_steps": np_.first_plan, "night_epochs": np_.done / spe,
            "steps_per_epoch": spe, "schedule": self.chosen.schedule,
            "rounds": self.final_plan.rounds_done if self.final_plan.rhythm is not None else self.chosen.rounds,
            "rhythm": self.final_plan.rhythm.log if self.final_plan.rhythm is not None else None,
            "round_log": self.final_plan.round_log, "probe": self.probe_log, "replans": tp.replans + np_.replans,
            "val_accuracy": val_acc, "unpruned_val_accuracy": self.unpruned,
            "kept_weights": sum(new.held_counts(t_index).values()), "free_after": new.free_fraction(),
            "layer_free_after": {n: k / s for (n, k), s in zip(new.free_counts().items(), new.layer_sizes().values())},
            "policy": dict(self.model.policy), "policy_changed": policy_changed is not None,
            "n_train": len(self.train_set), "n_val": len(self.val_set), "val_source": self.val_source,
            "val_fingerprint": fingerprint(self.val_set), "lr": self.lr, "batch_size": self.batch_size,
            "device": str(self.data.x.device),
            "costs": {"step_ms": c.step_s * 1e3, "prune_ms": c.prune_s * 1e3, "eval_ms": c.eval_s * 1e3,
                      "save_ms": c.save_s * 1e3} if budget_s else None,
            "timings": self.timings,
        }


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
