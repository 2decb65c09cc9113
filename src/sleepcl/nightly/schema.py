"""The schema of a model file's JSON metadata (pydantic), checked whole on every load.

Why a schema rather than key lookups where the values are used: a file edited by hand, or damaged, must be
refused at once with a message that says where it is wrong ("tasks[1].classes: ..."), not fail half-way through
``inspect``, ``predict`` or -- worst -- ``learn``, which would save a new night on top of it. The checks that
involve the tensors (head shapes against the class lists, the owner map against the task count, finite weights)
are :func:`sleepcl.nightly.model.check_consistent`'s.

Unknown keys are allowed everywhere (a later sleepcl may add some within the same format version); every key a
command reads is required, with its type and range.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator, model_validator

__all__ = ["ModelMeta", "check_task_name", "describe_errors", "validate_meta"]

Finite = Annotated[float, Field(allow_inf_nan=False)]
Fraction01 = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Positive = Annotated[StrictInt, Field(ge=1)]
Count = Annotated[StrictInt, Field(ge=0)]
MAX_TASK_NAME = 200


def check_task_name(name: Any) -> str:
    """A task name sleepcl can show and look up: non-empty, no surrounding spaces, no control characters."""
    if not isinstance(name, str) or not name or not name.strip() or name != name.strip():
        raise ValueError(f"task names must be non-empty without surrounding spaces, got {name!r}")
    bad = sorted({c for c in name if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")})
    if bad:
        raise ValueError(f"task name {name!r} holds control characters ({', '.join(map(repr, bad))}, such as a "
                         "newline or a tab); choose a name without them")
    if len(name) > MAX_TASK_NAME:
        raise ValueError(f"task names may be at most {MAX_TASK_NAME} characters long, got {len(name)}")
    return name


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class NetworkSpec(_Open):
    name: Annotated[str, Field(pattern=r"^(mlp|vgg|[^:\s]+:[A-Za-z_][\w.]*)$")]  # built-in, or a model factory
    widths: list[Positive]
    net_input_shape: Annotated[list[Positive], Field(min_length=1)]


class InputSpec(_Open):
    shape: Annotated[list[Positive], Field(min_length=1)]
    kind: Literal["uint8", "float32"]
    normalisation: Literal["per-feature", "per-channel", "global"]


class FixedPolicy(_Open):
    kind: Literal["fixed"]
    final_free: Annotated[float, Field(gt=0.0, lt=1.0, allow_inf_nan=False)]
    expected_tasks: Positive
    base_tasks: Count = 0
    base_free: dict[str, Fraction01] | None = None


class TolerancePolicy(_Open):
    kind: Literal["tolerance"]
    tolerance: Annotated[float, Field(ge=0.0, lt=1.0, allow_inf_nan=False)]
    min_keep: Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)]
    base_tasks: Count = 0


class Training(_Open):
    lr: Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
    batch_size: Positive
    seed: Count


class Task(_Open):
    name: str
    owner: Positive
    classes: Annotated[Union[list[StrictInt], list[str]], Field(min_length=2)]
    n_train: Positive
    n_val: Positive
    val_accuracy: Fraction01
    kept_weights: Count
    night: Positive

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_task_name(v)

    @field_validator("classes")
    @classmethod
    def _distinct(cls, v: list) -> list:
        if len(set(v)) != len(v):
            raise ValueError("a class is listed twice")
        return v


class Night(_Open):
    """A history entry: what ``inspect`` and ``predict`` read is required."""

    night: Positive
    task: str
    started: str
    seconds: Finite
    budget_s: Finite | None = None
    planned_s: Finite | None = None
    train_steps: Count
    train_epochs: Finite
    night_steps: Count
    night_epochs: Finite
    schedule: str
    rounds: Positive
    val_accuracy: Fraction01
    free_after: Fraction01


class ModelMeta(_Open):
    format: Literal["sleepcl-nightly"]
    version: Positive
    created: str
    updated: str
    network: NetworkSpec
    input: InputSpec
    policy: Annotated[Union[FixedPolicy, TolerancePolicy], Field(discriminator="kind")]
    training: Training
    tasks: list[Task]
    history: list[Night]

    @model_validator(mode="after")
    def _tasks_in_order(self) -> "ModelMeta":
        for j, t in enumerate(self.tasks):
            if t.owner != j + 1:
                raise ValueError(f"task {j + 1} ({t.name!r}) says it owns weights of task {t.owner}")
        names = [t.name for t in self.tasks]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"task name(s) {twice} appear twice")
        return self


def describe_errors(e: ValidationError, limit: int = 3) -> str:
    """pydantic's errors as ``where: what`` phrases (``tasks[1].classes: ...``), the first ``limit`` of them."""
    parts = []
    for err in e.errors()[:limit]:
        where = ""
        for key in err["loc"]:
            if isinstance(key, int):
                where += f"[{key}]"
            elif key in ("FixedPolicy", "TolerancePolicy", "list[int]", "list[str]", "fixed", "tolerance"):
                continue  # pydantic names the union member it tried; the path is what the reader needs
            else:
                where += f".{key}" if where else str(key)
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where or 'metadata'}: {msg}")
    more = len(e.errors()) - limit
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def validate_meta(meta: Any) -> str | None:
    """None if ``meta`` follows the schema, else where and how it does not."""
    try:
        ModelMeta.model_validate(meta)
    except ValidationError as e:
        return describe_errors(e)
    return None
