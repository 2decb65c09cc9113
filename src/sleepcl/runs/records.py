"""The JSON record of a finished run: its full config, the environment that ran it, and its metrics.

One record per population member. The record is the unit the results store keeps and the report reads.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

import torch

from ..files import atomic_write_bytes
from ..metrics import average_accuracy, backward_transfer, final_accuracy, forgetting
from ..engine.population import MemberResult

__all__ = ["environment", "make_record", "read_records", "records_json", "write_records"]


def environment(device: torch.device | str) -> dict[str, Any]:
    """Package versions and the device, so a figure can be traced to what produced it."""
    device = torch.device(device)
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "mkl_cbwr": os.environ.get("MKL_CBWR"),  # matmuls independent of the thread count when "...,STRICT"
    }
    for pkg in ("sleepcl", "numpy"):
        try:
            env[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            env[pkg] = None
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
    env["source_digest"] = source_digest()
    return env


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """sha256 (first 16 hex digits) of the package's own source files.

    The store finds runs by config alone, so a record must say which code produced it: two records with
    different digests came from different code, whatever the version number says.
    """
    root = Path(__file__).resolve().parents[1]  # the sleepcl package, not just runs/ where this module lives
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def make_record(result: MemberResult, env: dict[str, Any]) -> dict[str, Any]:
    config = result.config
    a = result.accuracy_matrix
    return {
        "config_hash": config.hash(),
        "config": config.to_dict(),
        "environment": env,
        "accuracy_matrix": a,
        "val_accuracy_matrix": result.val_accuracy_matrix,
        "final_accuracy": final_accuracy(a),
        "average_accuracy": average_accuracy(a),
        "forgetting": forgetting(a),
        "backward_transfer": backward_transfer(a),
        "free_fraction_after_task": result.free_fraction_after_task,
        "free_fraction_after_round": result.free_fraction_after_round,
        "layer_free_fraction": result.layer_free_fraction,
        "timings": result.timings,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def records_json(records: Iterable[dict[str, Any]]) -> bytes:
    """The JSON list of ``records`` that ``--output`` files hold."""
    return (json.dumps(list(records), indent=1) + "\n").encode()


def write_records(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Write a JSON list of records atomically (:mod:`sleepcl.files`: a private temporary file, then rename)."""
    atomic_write_bytes(path, records_json(records))


def read_records(path: str | Path) -> list[dict[str, Any]]:
    data = json.loads(Path(path).read_text())
    return data if isinstance(data, list) else [data]
