"""The JSON record of a finished run: its full config, the environment that ran it, and its metrics.

One record per population member. The record is the unit the results store keeps and the report reads.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

from ..files import atomic_write_bytes
from ..metrics import average_accuracy, backward_transfer, final_accuracy, forgetting
from ..engine.population import MemberResult

__all__ = ["JSONL_SUFFIXES", "MAX_IMPORT_RECORDS", "check_record", "check_records", "environment", "iter_records",
           "make_record", "read_records", "records_json", "write_records"]


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
    """sha256 (first 16 hex digits) of the package's own source files, as this process found them first.

    The store finds runs by config alone, so a record must say which code produced it: two records with
    different digests came from different code, whatever the version number says.
    """
    return package_digest(Path(__file__).resolve().parents[1])  # the sleepcl package, not just runs/


def package_digest(root: Path) -> str:
    """:func:`source_digest` of the package folder ``root`` as it is now on disk."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def make_record(result: MemberResult, env: dict[str, Any]) -> dict[str, Any]:
    config = result.config
    a = result.accuracy_matrix
    record = {
        "config_hash": config.hash(),
        "config": config.to_dict(),
        "environment": env,
        "accuracy_matrix": a,
        "val_accuracy_matrix": result.val_accuracy_matrix,
        "final_accuracy": final_accuracy(a),
        "average_accuracy": average_accuracy(a),
        "forgetting": forgetting(a),
        "backward_transfer": backward_transfer(a),
        **inference_fields(result.task_inference),
        "free_fraction_after_task": result.free_fraction_after_task,
        "free_fraction_after_round": result.free_fraction_after_round,
        "layer_free_fraction": result.layer_free_fraction,
        "timings": result.timings,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **({"diverged": result.diverged} if result.diverged else {}),  # a failed run: never stored
    }
    if result.strategy_memory:  # what the strategy stores beyond the network (ER's buffer); absent when nothing
        record["strategy_memory"] = result.strategy_memory
    return record


def inference_fields(inferred: dict[str, dict[str, float]] | None) -> dict[str, Any]:
    """The task-never-told scores of a record (none when not scored: records without them, older ones
    included, read as "not measured"): the default rule's task-inference and class-incremental accuracy, and
    every rule's under ``task_inference``."""
    from ..task_inference import DEFAULT_RULE

    if not inferred:
        return {}
    return {"task_inference_accuracy": inferred[DEFAULT_RULE]["task"],
            "class_incremental_accuracy": inferred[DEFAULT_RULE]["class_incremental"],
            "task_inference": {"default_rule": DEFAULT_RULE, **inferred}}


JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")
"""Files of one record per line (``.jsonl.gz`` gzipped): the study's committed exports."""


def records_json(records: Iterable[dict[str, Any]]) -> bytes:
    """The JSON list of ``records`` that ``--output`` files hold."""
    return (json.dumps(list(records), indent=1) + "\n").encode()


def write_records(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Write records atomically (:mod:`sleepcl.files`: a private temporary file, then rename): a JSON list,
    or one record per line for ``.jsonl`` and ``.jsonl.gz`` (keys sorted, no timestamp in the gzip header:
    the same records give the same bytes, so a re-export of unchanged runs does not change a committed file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(JSONL_SUFFIXES):
        text = "".join(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n" for r in records).encode()
        atomic_write_bytes(path, gzip.compress(text, mtime=0) if path.name.endswith(".gz") else text)
    else:
        atomic_write_bytes(path, records_json(records))


MAX_LINE_BYTES = 16 * 2**20
"""The longest record line ``results --import`` reads (a record of 255 tasks holds about 3 MB)."""
MAX_JSON_BYTES = 256 * 2**20
"""The largest ``.json`` list of records read whole (larger exports are ``.jsonl[.gz]``, read a line at a time)."""
MAX_IMPORT_RECORDS = 1_000_000
"""The most records one ``results --import`` command takes."""


def iter_records(path: str | Path) -> Iterator[tuple[int, Any]]:
    """``(line or index, parsed JSON)`` for each record in ``path``, streamed: a JSON list (or one object) of at
    most :data:`MAX_JSON_BYTES`, or one record per line (``.jsonl[.gz]``) of at most :data:`MAX_LINE_BYTES`
    each, blank lines skipped. Raises ValueError naming the line for a line too long, JSON that does not parse
    or is nested too deeply; nothing larger than one line (or the bounded list) is held at a time."""
    path = Path(path)
    if path.name.endswith(JSONL_SUFFIXES):
        with (gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")) as fh:
            for number, line in enumerate(iter(lambda: fh.readline(MAX_LINE_BYTES + 1), b""), start=1):
                if len(line) > MAX_LINE_BYTES:
                    raise ValueError(f"line {number} is longer than {MAX_LINE_BYTES:,} bytes, more than any run "
                                     "record holds")
                if line.strip():
                    yield number, _parse(line, f"line {number}")
        return
    with open(path, "rb") as fh:
        text = fh.read(MAX_JSON_BYTES + 1)
    if len(text) > MAX_JSON_BYTES:
        raise ValueError(f"a .json file of records is read whole, up to {MAX_JSON_BYTES:,} bytes; this one is "
                         "larger: export the records as .jsonl.gz (one a line) and import that")
    data = _parse(text, "the file")
    yield from enumerate(data if isinstance(data, list) else [data], start=1)


def _parse(text: bytes, where: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError(f"{where}: JSON nested too deeply to be a run record") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{where}: not valid JSON ({e})") from None


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The records in ``path``: a JSON list (or one object), or one record per line (``.jsonl[.gz]``)."""
    return [r for _, r in iter_records(path)]


def check_records(records: Iterable[dict[str, Any]], source: str) -> list[dict[str, Any]]:
    """The records, each checked by :func:`check_record`; ValueError naming the first that is not one."""
    return [check_record(r, f"{source}: record {i}") for i, r in enumerate(records, start=1)]


def check_record(r: Any, where: str) -> dict[str, Any]:
    """``r`` if it is a run record this sleepcl would have written: every field of the record schema
    (:class:`sleepcl.runs.record_schema.RunRecord`: types, accuracies and free fractions in [0, 1], finite
    timings, an accuracy matrix of the config's task count, summary metrics that follow from the matrix) and
    a config that still hashes to its ``config_hash`` (so that an imported run is found by the study that asks
    for that config). ValueError naming ``where`` and the first problem otherwise."""
    from ..config import RunConfig
    from .record_schema import check_record_fields

    if not isinstance(r, dict) or not {"config_hash", "config", "average_accuracy"} <= set(r):
        raise ValueError(f"{where} is not a run record (needs config_hash, config, average_accuracy)")
    try:
        config = RunConfig.from_dict(r["config"])
        h = config.hash()
    except (TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"{where} has a config this version of sleepcl refuses: {e}") from e
    if h != r["config_hash"]:
        raise ValueError(f"{where}'s config hashes to {h[:12]}…, not its config_hash "
                         f"{str(r['config_hash'])[:12]}… (written by a sleepcl whose configs differ); not importing")
    problem = check_record_fields(r, config.resolved().n_tasks)
    if problem is not None:
        raise ValueError(f"{where} is not a valid run record: {problem}")
    return r
