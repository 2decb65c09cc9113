"""The schema of a run record (what :func:`sleepcl.runs.records.make_record` writes), for records that come from
outside: ``sleepcl results --import`` stores a record only if it could have been written by sleepcl.

Checked: every field's type; accuracies and free fractions in [0, 1]; timings finite and >= 0; the accuracy
matrices ``rows x T`` for the config's ``T`` tasks (one row per task, or one for Multinet; a row may be null
when it was not evaluated, the last row complete); and the summary metrics (final and average accuracy,
forgetting, backward transfer) equal to what the matrix gives, so that a report never publishes a figure the
matrix does not hold. Fields a newer sleepcl adds are kept as they are.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Optional

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from ..metrics import average_accuracy, backward_transfer, final_accuracy, forgetting

__all__ = ["RunRecord", "check_record_fields"]

# strict: a number, never a string or a bool (an int is a number: a hand-made record may say 1 for 1.0)
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Difference = Annotated[float, Field(ge=-1, le=1, allow_inf_nan=False)]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Row = Optional[list[Optional[Fraction]]]
Short = Annotated[str, StringConstraints(max_length=1000)]
TOLERANCE = 1e-9  # the summary metrics are sums of at most 255 fractions, recomputed in the same order


class RunRecord(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    config_hash: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    config: dict[str, Any]
    environment: Optional[dict[Short, Any]] = None
    accuracy_matrix: list[Row]
    val_accuracy_matrix: Optional[list[Row]] = None
    final_accuracy: list[Fraction]
    average_accuracy: Fraction
    forgetting: Optional[Difference] = None
    backward_transfer: Optional[Difference] = None
    free_fraction_after_task: list[Fraction] = []
    free_fraction_after_round: list[list[Fraction]] = []
    layer_free_fraction: dict[Short, Fraction] = {}
    timings: dict[Short, Seconds] = {}
    created: Optional[Short] = None


def _matrix_problem(name: str, a: list, n_tasks: int) -> str | None:
    if not 1 <= len(a) <= n_tasks:
        return f"{name} has {len(a)} rows; a run of {n_tasks} tasks has 1 to {n_tasks}"
    for i, row in enumerate(a):
        if row is not None and len(row) != n_tasks:
            return f"{name} row {i + 1} has {len(row)} entries, not one per task ({n_tasks})"
    if a[-1] is None or any(v is None for v in a[-1]):
        return f"the last row of {name} must cover every task"
    return None


def check_record_fields(record: dict[str, Any], n_tasks: int) -> str | None:
    """None if ``record`` fits the schema for a run of ``n_tasks`` tasks, else the first problem, in words."""
    if record.get("diverged"):
        return f"the run diverged ({record['diverged']}); its figures are not results"
    try:
        r = RunRecord.model_validate(record)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "the record"
        return f"{where}: {err['msg']}"
    for name in ("accuracy_matrix", "val_accuracy_matrix"):
        a = getattr(r, name)
        if a is not None and (problem := _matrix_problem(name, a, n_tasks)):
            return problem
    if len(r.free_fraction_after_task) > n_tasks or len(r.free_fraction_after_round) > n_tasks:
        return f"free fractions are given for more than the run's {n_tasks} tasks"
    a = r.accuracy_matrix
    expected = {"final_accuracy": final_accuracy(a), "average_accuracy": average_accuracy(a),
                "forgetting": forgetting(a), "backward_transfer": backward_transfer(a)}
    for name, value in expected.items():
        got = getattr(r, name)
        if got is None and name in ("forgetting", "backward_transfer"):
            continue
        pairs = zip(got, value) if isinstance(value, list) else [(got, value)]
        if (isinstance(value, list) and len(got) != len(value)) or any(
                not math.isclose(x, y, rel_tol=0, abs_tol=TOLERANCE) for x, y in pairs):
            return f"{name} is {got}, but the accuracy matrix gives {value}"
    return None
