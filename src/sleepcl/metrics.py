"""Continual-learning metrics from an accuracy matrix ``A[i][j]`` (accuracy on task j after learning task i).

Rows are the moments of evaluation (one per task for sequential strategies, one for Multinet); entries
for tasks not yet learnt are ``None``, and a whole row is ``None`` when the tasks were not evaluated after
that task (``RunConfig.eval_every > 1``): such rows are skipped, never filled in. The last row must be
complete. All functions are pure and take plain lists.
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["average_accuracy", "backward_transfer", "final_accuracy", "forgetting"]

Matrix = Sequence[Sequence[float | None] | None]


def final_accuracy(a: Matrix) -> list[float]:
    """Accuracy on every task after the last one was learnt (the last row)."""
    row = a[-1]
    if row is None or any(v is None for v in row):
        raise ValueError("the last row of the accuracy matrix must cover every task")
    return [float(v) for v in row]  # type: ignore[arg-type]


def average_accuracy(a: Matrix) -> float:
    """Mean final accuracy over all tasks: the paper's "average performance"."""
    final = final_accuracy(a)
    return sum(final) / len(final)


def forgetting(a: Matrix) -> float:
    """Mean over earlier tasks of the drop from their best accuracy to their final accuracy (>= 0).

    The best is taken over the rows that were evaluated: with rows skipped (``eval_every > 1``) a peak between
    two evaluations is missed, so the value can only be lower than with every row.
    """
    if len(a) < 2:
        return 0.0
    final = final_accuracy(a)
    drops = []
    for j in range(len(final) - 1):
        seen = [row[j] for row in a[:-1] if row is not None and row[j] is not None]
        if seen:
            drops.append(max(seen) - final[j])
    return sum(drops) / len(drops) if drops else 0.0


def backward_transfer(a: Matrix) -> float:
    """Mean over earlier tasks of final accuracy minus accuracy just after learning it (Lopez-Paz & Ranzato).

    Negative values are forgetting; it is 0 by construction for a method that freezes old tasks. With rows
    skipped (``eval_every > 1``) the mean is over the tasks whose row just after learning them was evaluated.
    """
    if len(a) < 2:
        return 0.0
    final = final_accuracy(a)
    gaps = [final[j] - a[j][j] for j in range(min(len(a), len(final)) - 1) if a[j] is not None and a[j][j] is not None]
    return sum(gaps) / len(gaps) if gaps else 0.0
