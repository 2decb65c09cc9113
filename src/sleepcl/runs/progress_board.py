"""How far each population on a Ray cluster has got, told by its task to the driver through the cluster's own
key-value store (the GCS's, which every worker and driver is connected to already).

Why not an actor: an actor is a process of its own, started for each command (a Python that imports Ray, on
a node's CPU while the populations start), and each report is a call to it; a key written in the GCS costs one
small request and no process (what the actor cost: benchmarks/README.md, "Ray cluster"). The key-value store is Ray's
internal one (``ray.experimental.internal_kv``, which Ray's own libraries use); where it is missing (another
Ray), tasks report nothing and the bar advances as populations finish.
"""

from __future__ import annotations

from typing import Any

__all__ = ["NAMESPACE", "clear", "read", "write"]

NAMESPACE = "sleepcl-progress"


def _kv() -> Any:
    try:
        from ray.experimental import internal_kv

        return internal_kv if internal_kv._internal_kv_initialized() else None
    except (ImportError, AttributeError):
        return None


def write(board: str, key: Any, fraction: float) -> None:
    """In a task: the fraction of its population's steps done, under ``board`` (one per command) and ``key``."""
    kv = _kv()
    if kv is not None:
        kv._internal_kv_put(f"{board}/{key!r}", repr(float(fraction)), True, namespace=NAMESPACE)


def read(board: str, keys: list[Any]) -> dict[Any, float]:
    """On the driver: the latest fraction each of ``keys`` reported (those that reported)."""
    kv = _kv()
    out: dict[Any, float] = {}
    if kv is None:
        return out
    for key in keys:
        value = kv._internal_kv_get(f"{board}/{key!r}", namespace=NAMESPACE)
        if value is not None:
            out[key] = float(value)
    return out


def clear(board: str, key: Any | None = None) -> None:
    """Remove one population's report, or (``key`` None) every report of ``board``."""
    kv = _kv()
    if kv is not None:
        name = f"{board}/" if key is None else f"{board}/{key!r}"
        kv._internal_kv_del(name, del_by_prefix=key is None, namespace=NAMESPACE)
