"""Results store: every finished run, keyed by its ``config_hash``, in one SQLite file.

Why SQLite rather than a folder of JSON files: the study runs many members in parallel
processes, resumes after crashes and filters results by config. SQLite gives all three
for free -- atomic multi-record transactions, a write lock shared between processes,
and indexed queries -- from the standard library, in a single file that is easy to copy.

Layout (schema version 1, recorded in ``PRAGMA user_version``): one table ``runs`` with
the full record as JSON text plus a few indexed columns (:data:`INDEXED_CONFIG_KEYS`
and ``average_accuracy``, ``created``). Config keys without a column are still
queryable through ``json_extract(record, '$.config.KEY')``, so new config keys need no
schema change.

Durability choice: WAL journal with ``synchronous=NORMAL``. In WAL mode NORMAL never
corrupts the database and a commit survives the writing *process* being killed (the
commit is in the WAL file once ``COMMIT`` returns); only an OS crash or power loss can
roll back the last few commits. That is acceptable here because a lost run is simply
reported by :meth:`RunStore.missing` and recomputed, while FULL would fsync on every
batch. WAL also lets readers (reports, the resume check) run while a writer commits.
"""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas is loaded by to_dataframe, not by every command that opens a store
    import pandas as pd

from ..files import atomic_open

__all__ = ["APPLICATION_ID", "EXPORT_FORMATS", "INDEXED_CONFIG_KEYS", "SCHEMA_VERSION", "RunStore", "StoreError",
           "encode_record"]

SCHEMA_VERSION = 1
#: ``PRAGMA application_id`` of a sleepcl store ("slcl"): tells it from another application's SQLite file.
APPLICATION_ID = 0x736C636C
EXPORT_FORMATS = ("csv", "json", "jsonl", "jsonl.gz")

#: Config keys copied into their own indexed columns (name -> SQLite column type).
INDEXED_CONFIG_KEYS: dict[str, str] = {
    "benchmark": "TEXT",
    "strategy": "TEXT",
    "network": "TEXT",
    "final_free": "REAL",
    "rounds": "INTEGER",
    "seed": "INTEGER",
    "epochs": "INTEGER",
    "retrain_epochs": "INTEGER",
}
#: Top-level record fields that also get a column.
_INDEXED_RECORD_KEYS: dict[str, str] = {"average_accuracy": "REAL", "created": "TEXT"}
_COLUMNS: list[str] = ["config_hash", *INDEXED_CONFIG_KEYS, *_INDEXED_RECORD_KEYS, "record"]

_BUSY_TIMEOUT_S = 60.0
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_IN_CHUNK = 500  # stays far below SQLite's bound-parameter limit

# Metric columns of the DataFrame; a config key with one of these names becomes ``config_<key>``.
_METRIC_COLUMNS = (
    "average_accuracy",
    "forgetting",
    "backward_transfer",
    "class_incremental_accuracy",
    "final_free_fraction",
    "created",
)


class StoreError(ValueError):
    """The results store cannot be used as asked; the message names the problem and the fix."""


_OTHER_STORE = "pass another --store FILE (or --no-store to train without one)"


def _check_location(path: Path, read_only: bool) -> None:
    """Refuse a folder, a missing store to read, and a store or folder this process cannot write."""
    if path.is_dir():
        raise StoreError(f"the results store {path} is a folder; give --store a file name such as "
                         f"{path / 'runs.sqlite'}")
    if read_only:
        if not path.exists():
            raise StoreError(f"no results store at {path}: run `sleepcl run` or `sleepcl study` first, or pass "
                             "--store FILE")
        return
    if path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            raise StoreError(f"the results store {path} is read-only for this user: `sleepcl results` and "
                             f"`sleepcl report` can read it, but nothing can be added; make it writable or "
                             f"{_OTHER_STORE}")
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(f"cannot create the results store {path}: {e.strerror or e}; {_OTHER_STORE}") from None


def _connect(path: Path, busy_timeout: float, read_only: bool) -> sqlite3.Connection:
    """A connection in autocommit mode (every write below is an explicit BEGIN IMMEDIATE ... COMMIT).

    Read-only: SQLite's ``mode=ro``; a WAL store in a folder this process cannot write has no ``-shm`` file to
    share, so it is then read as ``immutable`` (nobody can be writing it either).
    """
    if not read_only:
        return sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    uri = path.absolute().as_uri()
    conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=busy_timeout, isolation_level=None)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError:
        conn.close()
        if os.access(path.parent, os.W_OK):
            raise
    return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, timeout=busy_timeout, isolation_level=None)


def _schema_state(conn: sqlite3.Connection, path: Path) -> str:
    """``"empty"`` (a new database), ``"sleepcl"`` (a store of ours) or ``"legacy"`` (ours, written before the
    application id was set); anything else -- another application's database -- is refused."""
    own = not conn.in_transaction
    if own:  # one snapshot: another process may be creating the store between these reads
        conn.execute("BEGIN")
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = sorted(r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"))
        columns = [r[1] for r in conn.execute("PRAGMA table_info(runs)")] if tables == ["runs"] else []
    finally:
        if own:
            conn.execute("COMMIT")
    if app_id == APPLICATION_ID:
        state = "sleepcl"
    elif app_id == 0 and version == 0 and not tables:
        return "empty"
    elif app_id == 0 and tables == ["runs"] and version >= 1 and columns == _COLUMNS:
        state = "legacy"
    else:
        shown = ", ".join(tables[:8]) + (", ..." if len(tables) > 8 else "") or "none"
        raise StoreError(f"{path} is an SQLite database of another application (tables: {shown}), not a sleepcl "
                         f"results store; sleepcl leaves it alone: {_OTHER_STORE}")
    if version > SCHEMA_VERSION:
        raise StoreError(f"{path} has schema version {version}; this sleepcl knows up to {SCHEMA_VERSION}: "
                         "upgrade sleepcl to use it")
    return state


def _explain(path: Path, e: sqlite3.Error) -> str:
    """SQLite's error as a message that says what is wrong with the file and what to do."""
    text = str(e)
    if "not a database" in text or isinstance(e, sqlite3.DatabaseError) and "malformed" in text:
        return (f"{path} is not a readable SQLite database (damaged, or another kind of file: {text}); move it "
                f"aside, or {_OTHER_STORE}")
    if "readonly" in text or "read-only" in text:
        return (f"the results store {path} is read-only ({text}): `sleepcl results` and `sleepcl report` can read "
                f"it, but nothing can be added; make it and its folder writable or {_OTHER_STORE}")
    if "unable to open" in text:
        return f"cannot open the results store {path} ({text}); check the path and its permissions, or {_OTHER_STORE}"
    return f"the results store {path} cannot be used: {text}; {_OTHER_STORE}"


def _create_v1(conn: sqlite3.Connection) -> None:
    cols = ",\n  ".join(f"{k} {t}" for k, t in {**INDEXED_CONFIG_KEYS, **_INDEXED_RECORD_KEYS}.items())
    conn.execute(
        f"""CREATE TABLE runs (
  config_hash TEXT PRIMARY KEY NOT NULL,
  {cols},
  record TEXT NOT NULL CHECK (json_valid(record))
)"""
    )
    conn.execute("CREATE INDEX runs_member ON runs (benchmark, strategy, network, final_free, rounds, seed)")
    conn.execute("CREATE INDEX runs_created ON runs (created)")


#: Migration from version ``k`` to ``k + 1``; a future schema change appends one function.
_MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {0: _create_v1}


def _jsonable(obj: Any) -> Any:
    """Plain-JSON copy of ``obj``: numpy scalars/arrays become Python values, NaN/inf become None.

    JSON has no NaN, and SQLite's ``json_extract`` rejects the non-standard ``NaN`` token
    Python would write, so non-finite floats are stored as ``null`` (read back as None).
    Anything else unknown raises :class:`TypeError`, which aborts the whole batch.
    """
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy scalar or array
        return _jsonable(obj.tolist())
    raise TypeError(f"record value of type {type(obj).__name__} is not JSON-serialisable: {obj!r}")


def encode_record(record: Mapping[str, Any]) -> tuple[Any, ...]:
    """Row tuple (in ``_COLUMNS`` order) for one record; raises on a malformed record.

    Kept module-level and pure so tests can inject a failure between the inserts of a batch.
    """
    rec = _jsonable(record)
    key = rec.get("config_hash")
    if not isinstance(key, str) or not key:
        raise ValueError("record has no string 'config_hash'")
    config = rec.get("config")
    if not isinstance(config, dict):
        raise ValueError(f"record {key}: 'config' must be a dict")
    text = json.dumps(rec, allow_nan=False)
    return (
        key,
        *(config.get(k) for k in INDEXED_CONFIG_KEYS),
        *(rec.get(k) for k in _INDEXED_RECORD_KEYS),
        text,
    )


def _filter_clause(key: str, value: Any) -> tuple[str, list[Any]]:
    """SQL condition and parameters for one ``query`` filter.

    Indexed keys compare against their column, others against
    ``json_extract(record, '$.config.KEY')``. A list/tuple value means IN; a list/dict
    element inside it matches a list-valued config (``widths=[[256, 256]]``). ``None``
    matches a null or absent key.
    """
    if not _KEY_RE.match(key):
        raise ValueError(f"invalid filter key {key!r}")
    if key == "config_hash" or key in INDEXED_CONFIG_KEYS:
        lhs = key
    else:
        lhs = f"json_extract(record, '$.config.{key}')"
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        return "0", []
    params = [
        json.dumps(v, separators=(",", ":")) if isinstance(v, (list, tuple, dict)) else v
        for v in values
        if v is not None
    ]
    parts = [f"{lhs} IN ({', '.join('?' * len(params))})"] if params else []
    if len(params) < len(values):
        parts.append(f"{lhs} IS NULL")
    return "(" + " OR ".join(parts) + ")", params


def _flat(value: Any) -> Any:
    """DataFrame cell: lists/dicts as JSON strings, scalars as they are."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def _record_row(rec: Mapping[str, Any]) -> dict[str, Any]:
    """One flat DataFrame row for a record (see :meth:`RunStore.to_dataframe`)."""
    row: dict[str, Any] = {"config_hash": rec["config_hash"]}
    for k, v in rec.get("config", {}).items():
        row[f"config_{k}" if k in _METRIC_COLUMNS or k == "config_hash" else k] = _flat(v)
    free = rec.get("free_fraction_after_task") or [None]
    row.update(
        average_accuracy=rec.get("average_accuracy"),
        forgetting=rec.get("forgetting"),
        backward_transfer=rec.get("backward_transfer"),
        class_incremental_accuracy=rec.get("class_incremental_accuracy"),  # None for records from before it
        final_free_fraction=free[-1],
        created=rec.get("created"),
    )
    for j, acc in enumerate(rec.get("final_accuracy") or [], start=1):
        row[f"acc_task_{j}"] = acc
    for k, v in (rec.get("timings") or {}).items():
        row[f"time_{k}"] = v
    return row


class RunStore:
    """All finished runs of a study in one SQLite file (see module docstring for the why).

    Several processes may open the same file: writes take SQLite's write lock at the start
    of the transaction and wait up to ``busy_timeout`` seconds for it.
    """

    def __init__(self, path: str | Path, *, busy_timeout: float = _BUSY_TIMEOUT_S, read_only: bool = False) -> None:
        """Open (or create) the store at ``path``; ``read_only`` opens an existing one for reading only.

        Raises :class:`StoreError` (a ``ValueError`` whose message names the problem and the fix) for a folder,
        a file that is not an SQLite database, another application's database, or -- unless ``read_only`` --
        a store this process cannot write.
        """
        self.path = Path(path)
        self.read_only = read_only
        _check_location(self.path, read_only)
        try:
            self._conn: sqlite3.Connection | None = _connect(self.path, busy_timeout, read_only)
        except sqlite3.Error as e:
            raise StoreError(_explain(self.path, e)) from None
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            state = _schema_state(self._conn, self.path)  # before any pragma that writes: refuse what is not ours
            if read_only:
                if state == "empty":
                    raise StoreError(f"{self.path} is an empty database, not a results store yet: run `sleepcl run` "
                                     "or `sleepcl study` with --store pointing at it first")
            else:
                self._set_up(busy_timeout)
        except sqlite3.Error as e:
            self.close()
            raise StoreError(_explain(self.path, e)) from None
        except BaseException:
            self.close()
            raise

    def _set_up(self, busy_timeout: float) -> None:
        """WAL mode and the schema. Switching a new file to WAL can fail at once with "database is locked" when
        another process is creating the same store (SQLite does not always wait on the busy handler there),
        so that is retried until ``busy_timeout`` has passed."""
        deadline = time.monotonic() + busy_timeout
        while True:
            try:
                self.conn.execute("PRAGMA journal_mode = WAL")
                self.conn.execute("PRAGMA synchronous = NORMAL")
                self._migrate()
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                if self.conn.in_transaction:
                    self.conn.rollback()
                time.sleep(0.05)

    # -- lifecycle -----------------------------------------------------------------
    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"RunStore({self.path}) is closed")
        return self._conn

    def close(self) -> None:
        """Close the connection; idempotent."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> RunStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RunStore({str(self.path)!r})"

    def _migrate(self) -> None:
        """Bring the schema to :data:`SCHEMA_VERSION` in one transaction (safe when two processes race).

        A database that is neither empty nor a sleepcl store is refused, never given sleepcl's tables.
        """
        with self._transaction() as conn:
            state = _schema_state(conn, self.path)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if state == "empty":
                version = 0
            while version < SCHEMA_VERSION:
                _MIGRATIONS[version](conn)
                version += 1
            conn.execute(f"PRAGMA user_version = {version}")
            if state != "sleepcl":  # a new store, or one written before the application id was set
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` on any exception.

        IMMEDIATE takes the write lock up front, so a concurrent writer waits on the busy
        timeout instead of failing later when its read lock would have to be upgraded.
        """
        conn = self.conn
        if self.read_only:
            raise StoreError(f"the results store {self.path} was opened read-only; it cannot take new runs")
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- writing -------------------------------------------------------------------
    def put_many(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Insert or replace ``records`` in ONE transaction: either all are stored or none.

        A record that fails to serialise, or a crash of the process part-way, leaves the
        store exactly as it was before the call.
        """
        sql = (
            f"INSERT INTO runs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
            f"ON CONFLICT(config_hash) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[1:])
        )
        with self._transaction() as conn:
            for record in records:
                conn.execute(sql, encode_record(record))

    def put(self, record: Mapping[str, Any]) -> None:
        """Insert or replace one record (its own transaction)."""
        self.put_many([record])

    # -- reading -------------------------------------------------------------------
    def get(self, config_hash: str) -> dict[str, Any] | None:
        """The full record stored under ``config_hash``, or None."""
        row = self.conn.execute("SELECT record FROM runs WHERE config_hash = ?", (config_hash,)).fetchone()
        return None if row is None else json.loads(row[0])

    def __contains__(self, config_hash: object) -> bool:
        return (
            isinstance(config_hash, str)
            and self.conn.execute("SELECT 1 FROM runs WHERE config_hash = ?", (config_hash,)).fetchone()
            is not None
        )

    def __len__(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0])

    def hashes(self) -> list[str]:
        """All stored config hashes."""
        return [r[0] for r in self.conn.execute("SELECT config_hash FROM runs ORDER BY config_hash")]

    def missing(self, hashes: Iterable[str]) -> list[str]:
        """The hashes among ``hashes`` not stored yet, in input order without repeats (for resuming)."""
        wanted = list(dict.fromkeys(hashes))
        present: set[str] = set()
        for i in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[i : i + _IN_CHUNK]
            present.update(
                r[0]
                for r in self.conn.execute(
                    f"SELECT config_hash FROM runs WHERE config_hash IN ({', '.join('?' * len(chunk))})", chunk
                )
            )
        return [h for h in wanted if h not in present]

    def _iter_records(self, filters: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        clauses, params = [], []
        for key, value in filters.items():
            clause, p = _filter_clause(key, value)
            clauses.append(clause)
            params.extend(p)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT record FROM runs{where} ORDER BY created, config_hash"
        for (text,) in self.conn.execute(sql, params):
            yield json.loads(text)

    def query(self, **filters: Any) -> list[dict[str, Any]]:
        """Full records whose config matches every filter, oldest first.

        ``strategy="packnet"`` is equality, ``final_free=[0.9, 0.95]`` is IN, ``x=None`` matches
        a null or absent key. Any config key works; those in :data:`INDEXED_CONFIG_KEYS`
        use an index. Floats compare exactly, which is fine since configs come from the
        same literals. ``config_hash=...`` is accepted too.
        """
        return list(self._iter_records(filters))

    def to_dataframe(self, **filters: Any) -> pd.DataFrame:
        """One row per run (filtered as in :meth:`query`), flat columns for analysis.

        Columns: ``config_hash``; every config key (list/dict values as JSON strings; a
        key that clashes with a metric column is renamed ``config_<key>``);
        ``average_accuracy``, ``forgetting``, ``backward_transfer``, ``final_free_fraction``
        (last entry of ``free_fraction_after_task``), ``created``; ``acc_task_1..T`` (final
        accuracy per task); ``time_<key>`` for every entry of ``timings``.
        """
        import pandas as pd

        rows = [_record_row(r) for r in self._iter_records(filters)]
        if not rows:
            return pd.DataFrame(columns=["config_hash", *_METRIC_COLUMNS])
        return pd.DataFrame.from_records(rows)

    def export(self, path: str | Path, fmt: str | None = None, **filters: Any) -> Path:
        """Write the (filtered) runs to ``path`` as CSV (the DataFrame), JSON (list of full records) or
        JSONL (one full record per line; ``.jsonl.gz`` gzipped), the form ``sleepcl results --import`` reads.

        ``fmt`` defaults to the file suffix. The file is written beside the target and moved
        into place, so a reader never sees half an export.
        """
        path = Path(path)
        if fmt is None and path.name.endswith((".jsonl", ".jsonl.gz")):
            from .records import write_records  # records.py needs torch; the store alone does not

            write_records(path, self.query(**filters))
            return path
        fmt = (fmt or path.suffix.lstrip(".")).lower()
        if fmt not in ("csv", "json"):
            raise ValueError(f"cannot export to {path.name}: the formats are {', '.join(EXPORT_FORMATS)} "
                             f"(CSV: one row per run; JSON: the full records; JSONL: one full record a line, what "
                             f"--import reads); give a file name ending in .{' or .'.join(EXPORT_FORMATS)}")
        with atomic_open(path, "w", encoding="utf-8", newline="") as fh:
            if fmt == "csv":
                self.to_dataframe(**filters).to_csv(fh, index=False)
            else:
                json.dump(self.query(**filters), fh, indent=2)
                fh.write("\n")
        return path
