"""The time-budget planner: turns "45 minutes" into optimizer steps, prunes and evaluations, and keeps to it.

How a night is planned (``sleepcl learn --budget``):

1. **Clock.** The budget counts from the start of the command (the CLI passes the process start time, so
   loading Python, torch and the data is included) to the moment the model file is in place.
2. **Warm-up.** The first few training steps are timed (they are real steps and count as training); one
   prune (of a copy), one evaluation on the validation data and one save (to a scratch file in the model's
   folder, fsync'ed) are timed too.
3. **Split.** What is left after a *reserve* (the final evaluation, the save and a safety margin of 2 % of
   the budget) and the known costs of the night's prunes and evaluations is split between training
   (``1 - night_share``) and the night (``night_share``, default 0.5, the paper's ``E = B``). The auto
   schedule takes ``probe_share`` of the night for its probe.
4. **Re-planning.** Each phase has a deadline; while it runs, its step count is re-computed from the
   measured step time (mean of the recent steps) every few steps, both down (a slow machine) and up.
   Rounds are placed at fixed *fractions* of the night, so a re-planned night keeps its shape; a step is
   never started if it would cross the phase's deadline, and prunes whose position has passed are done
   at once, so the night always ends on the capacity target.
5. **Caps.** Training and the night are capped at ``max_epochs`` epochs each (default 72, Table 2), so a
   generous budget ends early rather than training forever.

Epoch budgets (``--epochs E --retrain-epochs B``) use the same machinery with fixed step counts and no
deadline: that is the paper's setting, exactly.
"""

from __future__ import annotations

import math
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from ..engine.loop import due, night_positions  # where rounds fall: the engine's (kept importable here)
from ..schedule import SleepSchedule, sleep_schedule

__all__ = ["Costs", "Phase", "due", "night_positions", "parse_duration", "split_time"]

Clock = Callable[[], float]

_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(text: str | float | int) -> float:
    """Seconds in ``"90"``, ``"90s"``, ``"45m"``, ``"1h30m"``, ``"1.5h"``, ``"2m30s"`` (or a number)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        s = str(text).strip().lower().replace(" ", "")
        if not s:
            raise ValueError("empty duration; give seconds (90, 90s) or a duration such as 45m or 1h30m")
        if re.fullmatch(r"\d+(\.\d+)?", s):
            value = float(s)
        else:
            parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", s)
            if not parts or "".join(n + u for n, u in parts) != s or len({u for _, u in parts}) != len(parts):
                raise ValueError(f"cannot read the duration {text!r}: use seconds (90, 90s), minutes (45m), "
                                 "hours (1h) or a combination in the order h, m, s (1h30m, 2m30s)")
            order = [u for _, u in parts]
            if order != sorted(order, key="hms".index):
                raise ValueError(f"cannot read the duration {text!r}: give units in the order h, m, s (1h30m)")
            value = sum(float(n) * _UNITS[u] for n, u in parts)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"a budget must be a positive duration, got {text!r}")
    return value


@dataclass
class Costs:
    """Measured costs, in seconds: one step of the S=1 model, one prune of one member, one evaluation of
    one member on the validation data, one save of the model file."""

    step_s: float
    prune_s: float = 0.0
    eval_s: float = 0.0
    save_s: float = 0.0


def margin_for(budget_s: float) -> float:
    """Safety margin kept unused at the end: 2 % of the budget plus 50 ms."""
    return 0.02 * budget_s + 0.05


def split_time(remaining_s: float, costs: Costs, *, night_share: float, n_prunes: int, n_evals: int) -> tuple[float, float]:
    """(training seconds, night seconds) out of ``remaining_s`` once known costs are taken off."""
    free = remaining_s - n_prunes * costs.prune_s - n_evals * costs.eval_s
    free = max(free, 0.0)
    return (1.0 - night_share) * free, night_share * free


def relative_schedule(name: str, rounds: int) -> SleepSchedule:
    """The named schedule on a fine grid (720720 = lcm(1..16) units), for nights measured in seconds."""
    units = 720720
    if name == "lengthening":
        units = 720720 * (rounds * (rounds + 1) // 2 or 1)
    return sleep_schedule(name, units, rounds)


@dataclass
class Phase:
    """The steps of one phase (training, the probe, the night), re-planned against its deadline.

    ``planned`` is the phase's current step count; :meth:`keep_going` is asked before every step. With
    ``deadline=None`` the count is fixed (epoch budgets). ``pending`` returns the seconds of prunes and
    evaluations still to come inside the phase, which the steps must leave time for.
    """

    name: str
    planned: int
    deadline: float | None = None
    step_s: float = 0.0
    clock: Clock = time.perf_counter
    pending: Callable[[], float] = lambda: 0.0
    max_steps: int | None = None
    done: int = 0
    replans: int = 0
    window: deque = field(default_factory=lambda: deque(maxlen=64))
    _last_plan: float = -math.inf
    _last_step_start: float | None = None

    def __post_init__(self) -> None:
        if self.max_steps is not None:
            self.planned = min(self.planned, self.max_steps)
        self.planned = max(0, int(self.planned))
        self.first_plan = self.planned

    @property
    def rate(self) -> float:
        """Seconds per step: the mean of the recent measured steps, else the warm-up estimate."""
        return sum(self.window) / len(self.window) if self.window else self.step_s

    def keep_going(self) -> bool:
        """Whether to take another step (re-planning first when the phase has a deadline)."""
        if self.deadline is None:
            return self.done < self.planned
        now = self.clock()
        if now - self._last_plan >= 0.25 or self.done % 16 == 0:
            self.replan(now)
        if self.done >= self.planned:
            return False
        if now + self.rate + self.pending() > self.deadline:  # never start a step that would cross it
            self.planned = self.done
            return False
        return True

    def replan(self, now: float | None = None) -> None:
        if self.deadline is None:
            return
        now = self.clock() if now is None else now
        self._last_plan = now
        left = self.deadline - now - self.pending()
        rate = max(self.rate, 1e-6)
        new = self.done + max(0, math.floor(left / rate))
        if self.max_steps is not None:
            new = min(new, self.max_steps)
        if new != self.planned:
            self.replans += 1
            self.planned = new

    def step_started(self) -> None:
        self._last_step_start = self.clock()

    def step_finished(self) -> None:
        if self._last_step_start is not None:
            self.window.append(self.clock() - self._last_step_start)
            self._last_step_start = None
        self.done += 1

    def stop(self) -> None:
        """End the phase now (its remaining prunes still happen)."""
        self.planned = self.done
