"""An adaptive night: each round's size decided from what the last one cost (``--schedule adaptive``).

A fixed schedule fixes the night's ``N`` rounds in advance: round ``k`` prunes the task from ``held`` weights
towards ``keep`` along the geometric path ``held * (keep/held) ** u`` (Algorithm 2), ``u`` advancing by ``1/N``
a round, and every round gets ``1/N`` of the night's steps. Which ``N`` is best depends on the network, the data
and how hard the night prunes, and is known only in hindsight. The adaptive night decides as it goes, within
the same step budget:

* it starts at the pace of ``N = 4`` (``u`` advances by ``1/4``);
* at the end of each round's retraining it measures the validation loss (cross-entropy) and compares it with
  the trained network's before the first prune: if the round cost little (excess loss <= ``target``), the next
  round prunes twice as far along the path; if it cost more than twice ``target``, half as far; else as far;
* each round gets an equal share of the steps left, shared among the rounds the current pace still needs;
* or, with ``lookahead``, the next round's size is chosen before it is paid: the longest of 2x, 1x, 1/2x, ... the
  current pace whose prune, tried on a copy, adds at most ``lookahead`` nats of validation loss at once;
* the night always ends on the capacity target: a round is forced onto it when the pace would need more than
  ``max_rounds`` rounds in all, when a round would get fewer than ``min_share`` of the night's steps, or when the
  night's steps are spent.

This module is the decision alone (pure, tested on its own); :mod:`.night` measures the losses and prunes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable

__all__ = ["ADAPTIVE", "Rhythm", "share_targets"]

ADAPTIVE = "adaptive"  # the schedule name (``--schedule adaptive``)


@dataclass
class Rhythm:
    """The adaptive night's state: how far along the path (``u``, 0 to 1), the current pace, the positions
    (fractions of the night's steps) of the prunes so far and of the next one."""

    target: float = 0.05          # excess validation loss (nats) a round may cost before the pace slows
    lookahead: float | None = None  # look-ahead: the loss a prune may add at once (nats), tried on a copy
    first_pace: float = 0.25      # u's step of the first round: the pace of N = 4
    max_rounds: int = 16
    min_share: float = 1 / 32     # the shortest round, as a share of the night's steps
    u: float = 0.0
    pace: float = field(init=False)
    reference_loss: float | None = None
    log: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 0 < self.first_pace <= 1 or self.max_rounds < 1 or not 0 < self.min_share < 1 or self.target <= 0:
            raise ValueError("an adaptive rhythm needs 0 < first_pace <= 1, max_rounds >= 1, 0 < min_share < 1 and "
                             "target > 0")
        self.pace = self.first_pace

    @property
    def done(self) -> bool:
        return self.u >= 1.0

    def next_share(self, loss: float | None, position: Fraction, final: bool,
                   damage: Callable[[float], float] | None = None) -> float:
        """The path share ``u`` to prune to now, at ``position`` of the night (the validation ``loss`` of the
        round that ends here; None before the first prune), ``final`` when the night's steps are spent.

        With ``lookahead`` (and ``damage``: the validation loss right after pruning to a share, measured on a
        copy), the pace is instead the longest of twice, once, half, ... the current one (at most five tries)
        whose prune adds at most ``lookahead`` nats to ``loss`` at once: the round's size from the loss it would
        cost, before it is paid."""
        rounds = len(self.log)
        if loss is not None and self.reference_loss is not None and rounds:
            excess = loss - self.reference_loss
            if excess <= self.target:
                self.pace *= 2.0
            elif excess > 2 * self.target:
                self.pace /= 2.0
            self.log[-1].update(loss=loss, excess=excess)
        elif loss is not None and self.reference_loss is None:
            self.reference_loss = loss
        if self.lookahead is not None and damage is not None and loss is not None and not final:
            tries = [self.pace * 2.0 / 2**k for k in range(5)]
            for pace in tries:
                if damage(min(1.0, self.u + pace)) - loss <= self.lookahead:
                    break
            self.pace = pace
        u = min(1.0, self.u + self.pace)
        left = 1 - float(position)
        needed = math.ceil((1.0 - u) / self.pace - 1e-9) if u < 1 else 0  # rounds after this one
        if final or rounds + 1 >= self.max_rounds or (needed and left / (needed + 1) < self.min_share):
            u = 1.0
        self.u = u
        self.log.append({"round": rounds + 1, "position": float(position), "u": u, "pace": self.pace})
        return u

    def next_position(self, position: Fraction) -> Fraction | None:
        """Where the next prune falls, once this one is done at ``position``: the steps left shared equally among
        the rounds the pace still needs (None when the target is reached)."""
        if self.done:
            return None
        needed = max(1, math.ceil((1.0 - self.u) / self.pace - 1e-9))
        return position + (1 - position) / (needed + 1) if needed else None

    def rounds_left(self) -> int:
        """An upper bound on the prunes still to come (for a wall-clock budget's reserve)."""
        if self.done:
            return 0
        return min(self.max_rounds - len(self.log), max(1, math.ceil((1.0 - self.u) / self.pace - 1e-9)))


def share_targets(held: dict[str, int], keep: dict[str, int], u: float) -> dict[str, int]:
    """Weights each layer keeps at path share ``u``: ``held * (keep/held) ** u`` rounded, exactly ``keep`` at 1."""
    out = {}
    for name, h in held.items():
        k = keep[name]
        if u >= 1.0 or k == h:
            out[name] = k
        elif k == 0:
            out[name] = round(h * (1 - u))
        else:
            out[name] = max(k, min(h, round(h * (k / h) ** u)))
    return out
