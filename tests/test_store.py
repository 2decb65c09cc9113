"""Tests for sleepcl.runs.store: roundtrip, queries, exports, atomicity, crashes, concurrent writers."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import sleepcl.runs.store as store_mod
from sleepcl.runs.store import SCHEMA_VERSION, RunStore, StoreError


def make_record(
    seed: int = 0, final_free: float = 0.9, strategy: str = "packnet", n_tasks: int = 5, **extra: Any
) -> dict[str, Any]:
    config = {
        "benchmark": "mnist-5k",
        "strategy": strategy,
        "network": "mlp",
        "final_free": final_free,
        "rounds": 2,
        "epochs": 72,
        "retrain_epochs": 72,
        "seed": seed,
        "batch_size": 128,
        "lr": 0.001,
        "val_size": 0.1,
        "class_order_seed": None,
        "n_tasks": n_tasks,
        "prune_scope": "layer",
        "widths": [256, 256],
        "schedule": "uniform",
        **extra,
    }
    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
    acc = [0.9 + 0.01 * j for j in range(n_tasks)]
    return {
        "config_hash": key,
        "config": config,
        "environment": {"python": "3.11.7", "torch": "2.13.0", "device": "cpu", "platform": "x", "sleepcl": "0.1.0"},
        "accuracy_matrix": [[acc[j] if j <= i else None for j in range(n_tasks)] for i in range(n_tasks)],
        "final_accuracy": acc,
        "average_accuracy": sum(acc) / n_tasks,
        "forgetting": 0.0,
        "backward_transfer": 0.0,
        "free_fraction_after_task": [1 - (1 - final_free) * (i + 1) / n_tasks for i in range(n_tasks)],
        "free_fraction_after_round": [[0.99, 0.98]] * n_tasks,
        "timings": {"train": 1.2, "prune": 0.01, "retrain": 1.1, "evaluate": 0.2, "total": 2.6, "population_size": 10},
        "created": f"2026-11-23T15:40:{seed % 60:02d}+00:00",
    }


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    with RunStore(tmp_path / "sub" / "runs.sqlite") as s:
        yield s


def _run_python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True, timeout=timeout
    )


# ---------------------------------------------------------------- basics


def test_schema_pragmas_and_parent_folder(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "runs.sqlite"
    with RunStore(path) as s:
        assert path.exists()
        assert s.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s.conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    # reopening an existing store keeps its schema and data
    with RunStore(path) as s:
        s.put(make_record())
    with RunStore(path) as s:
        assert len(s) == 1


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    RunStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="schema version 2; this sleepcl knows up to 1: upgrade sleepcl"):
        RunStore(path)


def test_closed_store_raises(tmp_path: Path) -> None:
    s = RunStore(tmp_path / "r.sqlite")
    s.close()
    s.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        len(s)


def test_roundtrip(store: RunStore) -> None:
    rec = make_record()
    store.put(rec)
    assert len(store) == 1
    assert rec["config_hash"] in store
    assert "nope" not in store and 3 not in store
    assert store.get(rec["config_hash"]) == rec
    assert store.get("nope") is None


def test_numpy_values_and_nan_are_stored_as_plain_json(store: RunStore) -> None:
    rec = make_record()
    rec["final_accuracy"] = np.array([0.5, 0.25])
    rec["forgetting"] = float("nan")
    rec["backward_transfer"] = np.float32(0.5)
    rec["config"]["rounds"] = np.int64(3)
    store.put(rec)
    got = store.get(rec["config_hash"])
    assert got["final_accuracy"] == [0.5, 0.25]
    assert got["forgetting"] is None
    assert got["backward_transfer"] == 0.5
    assert store.query(rounds=3)[0]["config"]["rounds"] == 3


def test_upsert_replaces(store: RunStore) -> None:
    rec = make_record()
    store.put(rec)
    rec2 = {**rec, "average_accuracy": 0.5}
    store.put_many([rec2])
    assert len(store) == 1
    assert store.get(rec["config_hash"])["average_accuracy"] == 0.5
    # the indexed column follows the upsert too
    assert store.conn.execute("SELECT average_accuracy FROM runs").fetchone()[0] == 0.5


def test_malformed_record_rejected(store: RunStore) -> None:
    with pytest.raises(ValueError, match="config_hash"):
        store.put({"config": {}})
    with pytest.raises(ValueError, match="config"):
        store.put({"config_hash": "abc"})
    assert len(store) == 0


def test_missing(store: RunStore) -> None:
    recs = [make_record(seed=s) for s in range(3)]
    store.put_many(recs)
    hashes = [r["config_hash"] for r in recs]
    assert store.missing(hashes) == []
    assert store.missing(["x", hashes[1], "y", "x"]) == ["x", "y"]
    assert store.missing([]) == []
    many = [f"h{i}" for i in range(1200)] + hashes  # more than one IN chunk
    assert store.missing(many) == many[:1200]
    assert sorted(store.hashes()) == sorted(hashes)


# ---------------------------------------------------------------- queries


@pytest.fixture
def filled(store: RunStore) -> RunStore:
    recs = [
        make_record(seed=s, final_free=p, strategy=st)
        for s in range(3)
        for p in (0.9, 0.95)
        for st in ("packnet", "memory")
    ]
    recs.append(make_record(seed=9, widths=[128], prune_scope="global"))
    store.put_many(recs)
    return store


def test_query_filters(filled: RunStore) -> None:
    assert len(filled.query()) == 13
    assert len(filled.query(strategy="packnet")) == 7
    assert len(filled.query(strategy="packnet", final_free=0.95)) == 3
    assert {r["config"]["seed"] for r in filled.query(strategy="memory", final_free=0.9)} == {0, 1, 2}
    # list / tuple -> IN
    assert len(filled.query(seed=[0, 2])) == 8
    assert len(filled.query(seed=(9,), final_free=[0.9])) == 1
    assert filled.query(seed=[]) == []
    # keys without a column go through json_extract
    assert len(filled.query(prune_scope="global")) == 1
    assert len(filled.query(lr=0.001)) == 13
    assert len(filled.query(batch_size=[64, 128], strategy="memory")) == 6
    # None matches a null value; an unknown key is "absent" = null
    assert len(filled.query(class_order_seed=None)) == 13
    assert filled.query(no_such_key=1) == []
    # list-valued config: wrap it in a list (a bare list means IN)
    assert len(filled.query(widths=[[128]])) == 1
    assert len(filled.query(widths=[[256, 256], [128]])) == 13
    # the config hash itself
    h = filled.query(seed=9)[0]["config_hash"]
    assert [r["config_hash"] for r in filled.query(config_hash=h)] == [h]


def test_query_rejects_injection(filled: RunStore) -> None:
    with pytest.raises(ValueError, match="invalid filter key"):
        filled.query(**{"seed') OR 1=1 --": 0})


def test_query_uses_index(filled: RunStore) -> None:
    plan = filled.conn.execute(
        "EXPLAIN QUERY PLAN SELECT record FROM runs WHERE benchmark = ? AND strategy = ?", ("a", "b")
    ).fetchall()
    assert any("runs_member" in str(row) for row in plan)


def test_to_dataframe_columns(filled: RunStore) -> None:
    df = filled.to_dataframe()
    assert len(df) == 13
    for col in (
        "config_hash",
        "benchmark",
        "strategy",
        "network",
        "final_free",
        "rounds",
        "seed",
        "epochs",
        "retrain_epochs",
        "batch_size",
        "widths",
        "average_accuracy",
        "forgetting",
        "backward_transfer",
        "final_free_fraction",
        "acc_task_1",
        "acc_task_5",
        "time_train",
        "time_prune",
        "time_retrain",
        "time_evaluate",
        "time_total",
    ):
        assert col in df.columns, col
    assert "acc_task_6" not in df.columns
    assert json.loads(df["widths"].iloc[0]) in ([256, 256], [128])
    assert df["final_free_fraction"].tolist() == pytest.approx(df["final_free"].tolist())
    sub = filled.to_dataframe(strategy="memory")
    assert set(sub["strategy"]) == {"memory"} and len(sub) == 6


def test_to_dataframe_grows_with_new_config_keys_and_task_counts(store: RunStore) -> None:
    store.put_many([make_record(seed=0), make_record(seed=1, n_tasks=7, new_knob="x", average_accuracy=3)])
    df = store.to_dataframe().set_index("seed")
    assert df.loc[1, "new_knob"] == "x" and pd.isna(df.loc[0, "new_knob"])
    assert pd.isna(df.loc[0, "acc_task_7"]) and not pd.isna(df.loc[1, "acc_task_7"])
    # a config key named like a metric column does not overwrite the metric
    assert df.loc[1, "config_average_accuracy"] == 3
    assert df.loc[1, "average_accuracy"] < 1


def test_empty_dataframe(store: RunStore) -> None:
    df = store.to_dataframe()
    assert len(df) == 0 and "config_hash" in df.columns and "average_accuracy" in df.columns


def test_export_csv_and_json(filled: RunStore, tmp_path: Path) -> None:
    csv_path = filled.export(tmp_path / "out" / "runs.csv")
    back = pd.read_csv(csv_path)
    df = filled.to_dataframe()
    assert list(back.columns) == list(df.columns)
    assert sorted(back["config_hash"]) == sorted(df["config_hash"])
    assert back["average_accuracy"].to_numpy() == pytest.approx(df["average_accuracy"].to_numpy())

    json_path = filled.export(tmp_path / "runs.json", strategy="packnet")
    recs = json.loads(json_path.read_text())
    assert len(recs) == 7 and all(r == filled.get(r["config_hash"]) for r in recs)

    forced = filled.export(tmp_path / "runs.txt", fmt="json")
    assert len(json.loads(forced.read_text())) == 13
    with pytest.raises(ValueError, match="format"):
        filled.export(tmp_path / "runs.parquet")
    assert not list(tmp_path.glob(".*.tmp")) and not list((tmp_path / "out").glob(".*.tmp"))


# ---------------------------------------------------------------- atomicity


def test_put_many_unserialisable_record_stores_none_of_the_batch(store: RunStore) -> None:
    store.put(make_record(seed=100))
    bad = make_record(seed=2)
    bad["timings"]["train"] = object()
    batch = [make_record(seed=1), bad, make_record(seed=3)]
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        store.put_many(batch)
    assert len(store) == 1
    assert store.missing([r["config_hash"] for r in batch]) == [r["config_hash"] for r in batch]
    # the connection is usable afterwards (the transaction was rolled back, not left open)
    store.put_many([batch[0]])
    assert len(store) == 2


def test_put_many_exception_between_inserts_rolls_back(store: RunStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.put(make_record(seed=100))
    real = store_mod.encode_record
    calls = {"n": 0}

    def flaky(record: dict[str, Any]) -> tuple[Any, ...]:
        calls["n"] += 1
        if calls["n"] == 3:  # two rows already inserted inside the open transaction
            raise RuntimeError("boom")
        return real(record)

    monkeypatch.setattr(store_mod, "encode_record", flaky)
    batch = [make_record(seed=s) for s in range(4)]
    with pytest.raises(RuntimeError, match="boom"):
        store.put_many(batch)
    assert calls["n"] == 3
    assert len(store) == 1
    # a second connection sees the same thing
    with RunStore(store.path) as other:
        assert len(other) == 1


_WRITER_DIES_IN_TRANSACTION = """
import os, sys
import sleepcl.runs.store as sm
sys.path.insert(0, sys.argv[2])
from test_store import make_record
s = sm.RunStore(sys.argv[1])
s.put_many([make_record(seed=k) for k in range(5)])       # committed
real = sm.encode_record
n = {"n": 0}
def dying(rec):
    n["n"] += 1
    if n["n"] == 4:
        os._exit(3)                                          # no rollback, no close, no atexit
    return real(rec)
sm.encode_record = dying
s.put_many([make_record(seed=k) for k in range(10, 20)])
"""


def test_process_exiting_inside_transaction_leaves_previous_records(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    proc = _run_python(_WRITER_DIES_IN_TRANSACTION, str(path), str(Path(__file__).parent))
    assert proc.returncode == 3, proc.stderr
    with RunStore(path) as s:
        assert s.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert len(s) == 5
        assert {r["config"]["seed"] for r in s.query()} == set(range(5))
        assert s.get(make_record(seed=3)["config_hash"]) == make_record(seed=3)
        s.put(make_record(seed=50))  # and the file is writable again
        assert len(s) == 6


_WRITER_LOOP = """
import sys
from sleepcl.runs.store import RunStore
s = RunStore(sys.argv[1])
pad = "x" * 2000
b = 0
while True:  # batches of 50 tagged records until killed
    s.put_many([{"config_hash": f"{b}-{i}", "config": {"batch": b, "i": i}, "pad": pad} for i in range(50)])
    b += 1
"""


def test_sigkill_mid_writing_leaves_only_whole_batches(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_WRITER_LOOP), str(path)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        n = 0
        while n < 200 and time.monotonic() < deadline:
            time.sleep(0.05)
            if path.exists():
                with RunStore(path) as s:
                    n = len(s)
        assert n >= 200, proc.stderr.read().decode() if proc.poll() is not None else "writer too slow"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    with RunStore(path) as s:
        assert s.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        counts = pd.Series([r["config"]["batch"] for r in s.query()]).value_counts()
        assert (counts == 50).all(), counts[counts != 50]
        assert len(s) == 50 * len(counts) >= 200


# ---------------------------------------------------------------- concurrency


_CONCURRENT_WRITER = """
import sys
from sleepcl.runs.store import RunStore
tag, n = sys.argv[2], int(sys.argv[3])
with RunStore(sys.argv[1]) as s:
    for i in range(0, n, 5):
        s.put_many([{"config_hash": f"{tag}-{k}", "config": {"writer": tag, "k": k}} for k in range(i, i + 5)])
    for k in range(n):  # single puts too, interleaving with the other writer
        s.put({"config_hash": f"{tag}-single-{k}", "config": {"writer": tag, "k": k}})
"""


def test_two_processes_writing_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "shared" / "runs.sqlite"
    n = 100
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(_CONCURRENT_WRITER), str(path), tag, str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("a", "b")
    ]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    with RunStore(path) as s:
        assert len(s) == 4 * n
        for tag in ("a", "b"):
            assert len(s.query(writer=tag)) == 2 * n
        expected = [f"{t}-{k}" for t in "ab" for k in range(n)] + [f"{t}-single-{k}" for t in "ab" for k in range(n)]
        assert s.missing(expected) == []


def test_reader_sees_committed_state_while_writer_holds_lock(tmp_path: Path) -> None:
    """WAL: a reader is not blocked by an open write transaction and never sees its rows."""
    path = tmp_path / "runs.sqlite"
    with RunStore(path) as writer, RunStore(path, busy_timeout=0.1) as reader:
        writer.put(make_record(seed=0))
        with writer._transaction() as conn:
            conn.execute(
                "INSERT INTO runs (config_hash, record) VALUES (?, ?)", ("pending", json.dumps({"config": {}}))
            )
            assert len(reader) == 1 and "pending" not in reader
            # a second writer times out instead of corrupting anything
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                reader.put(make_record(seed=1))
        assert len(reader) == 2 and "pending" in reader


def test_processes_creating_one_new_store_at_once_all_open_it(tmp_path: Path) -> None:
    """Two races of a new file: the switch to WAL ("database is locked" at once, without the busy wait) and
    the schema check reading a store half-way through another process's creation (called foreign)."""
    code = ("import sys\nfrom sleepcl.runs.store import RunStore\n"
            "RunStore(sys.argv[1]).put({'config_hash': sys.argv[2], 'config': {}})")
    for attempt in range(4):
        path = tmp_path / f"new-{attempt}.sqlite"
        procs = [subprocess.Popen([sys.executable, "-c", code, str(path), f"r{k}"], stderr=subprocess.PIPE, text=True)
                 for k in range(4)]
        for p in procs:
            _, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
        with RunStore(path) as s:
            assert len(s) == 4
