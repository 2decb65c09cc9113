"""Continual-learning metrics from an accuracy matrix ``A[i][j]`` (accuracy on task j after learning task i).

Rows are the moments of evaluation (one per task for sequential strategies, one for Multinet); entries
for tasks not yet learnt are ``None``. All functions are pure and take plain lists.
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["average_accuracy", "backward_transfer", "final_accuracy", "forgetting"]

Matrix = Sequence[Sequence[float | None]]


def final_accuracy(a: Matrix) -> list[float]:
    """Accuracy on every task after the last one was learnt (the last row)."""
    row = a[-1]
    if any(v is None for v in row):
        raise ValueError("the last row of the accuracy matrix must cover every task")
    return [float(v) for v in row]  # type: ignore[arg-type]


def average_accuracy(a: Matrix) -> float:
    """Mean final accuracy over all tasks: the paper's "average performance"."""
    final = final_accuracy(a)
    return sum(final) / len(final)


def forgetting(a: Matrix) -> float:
    """Mean over earlier tasks of the drop from their best accuracy to their final accuracy (>= 0)."""
    if len(a) < 2:
        return 0.0
    final = final_accuracy(a)
    drops = []
    for j in range(len(final) - 1):
        seen = [row[j] for row in a[:-1] if row[j] is not None]
        if seen:
            drops.append(max(seen) - final[j])
    return sum(drops) / len(drops) if drops else 0.0


def backward_transfer(a: Matrix) -> float:
    """Mean over earlier tasks of final accuracy minus accuracy just after learning it (Lopez-Paz & Ranzato).

    Negative values are forgetting; it is 0 by construction for a method that freezes old tasks.
    """
    if len(a) < 2:
        return 0.0
    final = final_accuracy(a)
    gaps = [final[j] - a[j][j] for j in range(min(len(a), len(final)) - 1) if a[j][j] is not None]
    return sum(gaps) / len(gaps) if gaps else 0.0
