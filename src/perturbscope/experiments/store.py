"""A results store for sweeps: one embedded SQLite file (standard library ``sqlite3``, WAL mode).

What it holds
-------------
* ``runs``: one row per distinct configuration: ``run_id``, ``name``, the full configuration
  (JSON), its SHA-256 ``config_hash``, the creation time (UTC, ISO 8601) and the software
  versions that created it.
* ``units``: the units of work of a run, keyed like ``"pair=7-8/split=test"``, with a status
  (``pending``, ``done`` or ``failed``), the finish time, the seconds spent and a JSON ``meta``.
* ``records``: the per-image audit records of every finished unit, one row per image:
  ``(run_id, unit_key, image_index)`` is the primary key and the audit record's columns
  are kept as one JSON object (NaN kept as NaN).
* ``artifacts``: binary blobs of a run (e.g. a trained model's weights), keyed by name.

Crash safety
------------
A unit's records and its ``done`` status are written in ONE transaction
(:meth:`ResultsStore.commit_unit`), with ``synchronous=FULL``: after a crash or ``SIGKILL`` at
any moment a unit is either completely recorded and marked done, or absent. A rerun asks
:meth:`ResultsStore.pending_units` and does only the rest; the primary key makes a duplicate
record impossible. The same configuration (same hash) resumes the same run; a changed
configuration creates a new run, so results of two configurations never mix.

Public API (used by reports)
----------------------------
``ResultsStore(path)``, :meth:`~ResultsStore.runs`, :meth:`~ResultsStore.run_config`,
:meth:`~ResultsStore.records`, :meth:`~ResultsStore.summaries`, :meth:`~ResultsStore.export`,
:meth:`~ResultsStore.versions`. Everywhere a ``run`` is asked for, the full ``run_id``, a
run's exact name, or an unambiguous prefix of either is accepted.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import sqlite3
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perturbscope.audit.schema import dtype_of
from perturbscope.audit.summary import summarize_groups
from perturbscope.fileio import atomic_write

__all__ = ["ResultsStore", "StoreError", "UnitAlreadyDone", "config_hash", "software_versions", "unit_key",
           "parse_unit_key", "UNIT_STATUSES"]

UNIT_STATUSES = ("pending", "done", "failed")


class UnitAlreadyDone(ValueError):
    """:meth:`ResultsStore.commit_unit` on a unit that is already done (e.g. finished by another
    process running the same sweep); nothing was written."""
SCHEMA_VERSION = 1
#: SQLite ``PRAGMA application_id`` of a perturbscope results store (ASCII "PSCP")
APPLICATION_ID = 0x50534350
STORE_FORMAT = "perturbscope-results-store"


class StoreError(ValueError):
    """The store file is missing, not a perturbscope store, damaged, or cannot be written."""


def _db_error(path: Path, exc: BaseException) -> str:
    text = str(exc)
    if "malformed" in text or "corrupt" in text:
        return (f"results store {path} is damaged ({text}); restore it from a copy or start a new "
                f"one with another --store path")
    if "not a database" in text or "file is encrypted" in text:
        return f"{path} is not a perturbscope results store (not an SQLite database: {text})"
    if "readonly" in text or "read-only" in text:
        return f"results store {path} cannot be written ({text}); open it read-only or give a writable path"
    if "disk" in text and "full" in text:
        return f"no space left to write the results store {path} ({text}); nothing of the unit was kept"
    if "unable to open" in text:
        return f"cannot open the results store {path} ({text}); check the path and its permissions"
    return f"results store {path}: {text}"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    config_json TEXT NOT NULL,
    config_hash TEXT NOT NULL UNIQUE,
    created TEXT NOT NULL,
    versions_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS units (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    unit_key TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'done', 'failed')),
    finished TEXT,
    seconds REAL,
    n_records INTEGER,
    meta_json TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, unit_key)
);
CREATE TABLE IF NOT EXISTS records (
    run_id TEXT NOT NULL,
    unit_key TEXT NOT NULL,
    image_index INTEGER NOT NULL,
    data_json TEXT NOT NULL,
    PRIMARY KEY (run_id, unit_key, image_index),
    FOREIGN KEY (run_id, unit_key) REFERENCES units(run_id, unit_key)
);
CREATE TABLE IF NOT EXISTS artifacts (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    key TEXT NOT NULL,
    blob BLOB NOT NULL,
    meta_json TEXT NOT NULL DEFAULT '{}',
    created TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
);
"""


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


def _plain(obj: Any) -> Any:
    """Numpy scalars/arrays, tuples and paths -> plain JSON data (recursively)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_plain(v) for v in obj.tolist()]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def _canonical(config: dict[str, Any]) -> str:
    return json.dumps(_plain(config), sort_keys=True, separators=(",", ":"), allow_nan=True)


def config_hash(config: dict[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``config`` (sorted keys; tuples as lists)."""
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    return hashlib.sha256(_canonical(config).encode()).hexdigest()


def software_versions(extra: Iterable[str] = ()) -> dict[str, str]:
    """Versions of Python, the platform, perturbscope and its main dependencies (plus ``extra``)."""
    from importlib import metadata

    from perturbscope import __version__

    out = {"python": sys.version.split()[0], "platform": platform.platform(),
           "perturbscope": __version__}
    for pkg in ("torch", "numpy", "scipy", "pandas", "pyarrow", *extra):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def unit_key(pair: str | tuple[int, int], split: str) -> str:
    """``unit_key((7, 8), "test") == "pair=7-8/split=test"``."""
    p = f"{pair[0]}-{pair[1]}" if isinstance(pair, tuple | list) else str(pair)
    return f"pair={p}/split={split}"


def parse_unit_key(key: str) -> dict[str, str]:
    """``"pair=7-8/split=test"`` -> ``{"pair": "7-8", "split": "test"}``."""
    out: dict[str, str] = {}
    for part in key.split("/"):
        k, sep, v = part.partition("=")
        if not sep or not k:
            raise ValueError(f"malformed unit key {key!r}: expected 'name=value/name=value'")
        out[k] = v
    return out


def _record_json(row: dict[str, Any]) -> str:
    return json.dumps(_plain(row), allow_nan=True)


# ---------------------------------------------------------------------------------------------
# the store
# ---------------------------------------------------------------------------------------------

def _typed(df: pd.DataFrame) -> pd.DataFrame:
    """Give record columns read back from JSON the dtypes the audit schema declares."""
    for c in df.columns:
        kind = dtype_of(str(c))
        col = df[c]
        if kind == "bool" and col.map(lambda v: isinstance(v, bool | np.bool_)).all():
            df[c] = col.astype(bool)
        elif kind == "float64":
            df[c] = pd.to_numeric(col, errors="coerce").astype(np.float64)
        elif kind == "int64" and col.notna().all():
            df[c] = pd.to_numeric(col).astype(np.int64)
        elif kind is None and col.dtype == object and col.map(lambda v: isinstance(v, bool)).all():
            df[c] = col.astype(bool)
    return df


class ResultsStore:
    """Runs, units of work and per-image records of sweeps, in the SQLite file ``path``.

    The file and its folder are created if missing. Use as a context manager or call
    :meth:`close`. One writer at a time (SQLite's lock); readers may run alongside (WAL).

    Example::

        with ResultsStore("results.sqlite") as store:
            print(store.runs())
            df = store.records("fashion-mnist")      # name prefix accepted
            store.export("fashion-mnist", "records.parquet", fmt="parquet")
    """

    def __init__(self, path: str | os.PathLike, *, read_only: bool = False) -> None:
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        self.path = Path(path)
        self.read_only = bool(read_only)
        self._con: sqlite3.Connection | None = None
        if str(path) == "":
            raise ValueError("store path is empty; give a file name such as results.sqlite")
        if self.path.is_dir():
            raise ValueError(f"store path {self.path} is a directory; give a file name such as "
                             f"{self.path / 'results.sqlite'}")
        if self.read_only:
            self._open_read_only()
            return
        new = not self.path.exists() or self.path.stat().st_size == 0
        with self._closed_on_error():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._con = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            if not new:
                self._check_ours()
            self._con.execute("PRAGMA journal_mode=WAL")
            self._con.execute("PRAGMA synchronous=FULL")
            self._con.execute("PRAGMA foreign_keys=ON")
            with self._tx():
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        self._con.execute(stmt)
                self._con.execute(f"PRAGMA application_id={APPLICATION_ID}")
                row = self._con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                if row is None:
                    self._con.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                    self._con.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (STORE_FORMAT,))
                elif int(row[0]) != SCHEMA_VERSION:
                    raise ValueError(f"{self.path} has store schema {row[0]}, this perturbscope reads "
                                     f"{SCHEMA_VERSION}")

    def _open_read_only(self) -> None:
        if not self.path.is_file():
            raise StoreError(f"results store {self.path} does not exist")
        uri = f"file:{self.path.resolve().as_posix()}?mode=ro"
        with self._closed_on_error():
            self._con = sqlite3.connect(uri, uri=True, timeout=60.0, isolation_level=None)
            try:
                self._check_ours()
            except sqlite3.OperationalError:  # a WAL database on a read-only medium: open it immutable
                self._con.close()
                self._con = sqlite3.connect(uri + "&immutable=1", uri=True, isolation_level=None)
                self._check_ours()

    @contextmanager
    def _closed_on_error(self) -> Iterator[None]:
        """Opening: any error closes the connection; an SQLite one becomes a :class:`StoreError`."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            self.close()
            raise StoreError(_db_error(self.path, exc)) from exc
        except BaseException:
            self.close()
            raise

    def _check_ours(self) -> None:
        """Refuse a database that is not a perturbscope results store (before changing anything)."""
        con = self._con
        assert con is not None
        app = con.execute("PRAGMA application_id").fetchone()[0]
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if app == APPLICATION_ID:
            return
        if app == 0 and not tables:  # an empty database: ours to initialise
            if self.read_only:
                raise StoreError(f"{self.path} is an empty database, not a perturbscope results store")
            return
        ours = {"meta", "runs", "units", "records", "artifacts"}
        legacy = app == 0 and ours <= tables and con.execute(
            "SELECT 1 FROM meta WHERE key='schema_version'").fetchone() is not None
        if legacy:  # a store written before the application id was set
            return
        listed = ", ".join(sorted(tables)) or "none"
        raise StoreError(f"{self.path} is an SQLite database but not a perturbscope results store "
                         f"(application id {app}, tables: {listed}); nothing was changed. Give another "
                         f"--store path")

    # -- plumbing -------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection (idempotent)."""
        if getattr(self, "_con", None) is not None:
            self._con.close()
            self._con = None  # type: ignore[assignment]

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.path)!r})"

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any error)."""
        if self._con is None:
            raise ValueError("the store is closed")
        if self.read_only:
            raise StoreError(f"results store {self.path} was opened read-only")
        try:
            self._con.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as exc:
            raise StoreError(_db_error(self.path, exc)) from exc
        try:
            yield self._con
        except sqlite3.IntegrityError:  # a constraint we rely on (e.g. a test's trigger): as is
            if self._con.in_transaction:
                self._con.execute("ROLLBACK")
            raise
        except sqlite3.DatabaseError as exc:
            if self._con.in_transaction:
                self._con.execute("ROLLBACK")
            raise StoreError(_db_error(self.path, exc)) from exc
        except BaseException:
            if self._con.in_transaction:
                self._con.execute("ROLLBACK")
            raise
        try:
            self._con.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            if self._con.in_transaction:
                self._con.execute("ROLLBACK")
            raise StoreError(_db_error(self.path, exc)) from exc

    def _q(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        if self._con is None:
            raise ValueError("the store is closed")
        try:
            return self._con.execute(sql, tuple(args)).fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreError(_db_error(self.path, exc)) from exc

    # -- runs -----------------------------------------------------------------------------------
    def open_run(self, name: str, config: dict[str, Any], versions: dict[str, str] | None = None
                 ) -> tuple[str, bool]:
        """The run for ``config``: the existing one with the same hash, else a new one.

        Args:
            name: base name (letters, digits, ``-_.``); a new run whose name is taken gets
                ``-2``, ``-3``... appended.
            config: the full configuration, plain JSON data. Its hash identifies the run.
            versions: software versions to record (default :func:`software_versions`).

        Returns:
            ``(run_id, created)``: ``created`` is False when an existing run is resumed.
            ``run_id`` is the first 12 hex digits of the config hash.
        """
        if not isinstance(name, str) or not name or any(not (c.isalnum() or c in "-_.") for c in name):
            raise ValueError(f"run name must be a non-empty string of letters, digits, '-', '_', '.', "
                             f"got {name!r}")
        h = config_hash(config)
        with self._tx() as con:
            row = con.execute("SELECT run_id FROM runs WHERE config_hash=?", (h,)).fetchone()
            if row is not None:
                return row[0], False
            taken = {r[0] for r in con.execute("SELECT name FROM runs")}
            final, k = name, 2
            while final in taken:
                final, k = f"{name}-{k}", k + 1
            run_id = h[:12]
            con.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?)",
                        (run_id, final, _canonical(config), h, _now(),
                         json.dumps(versions if versions is not None else software_versions())))
        return run_id, True

    def resolve(self, run: str) -> str:
        """The ``run_id`` that ``run`` names: an exact run_id or name, else a unique prefix of one.

        Raises:
            ValueError: no run or several runs match (the candidates are listed).
        """
        if not isinstance(run, str) or not run:
            raise TypeError(f"run must be a non-empty string (run_id or name), got {run!r}")
        rows = self._q("SELECT run_id, name FROM runs")
        for rid, name in rows:
            if run in (rid, name):
                return rid
        hits = sorted({rid for rid, name in rows if rid.startswith(run) or name.startswith(run)})
        if len(hits) == 1:
            return hits[0]
        known = ", ".join(f"{n} ({r})" for r, n in rows) or "none"
        if not hits:
            raise ValueError(f"no run matches {run!r} in {self.path}; runs: {known}")
        raise ValueError(f"{run!r} is ambiguous in {self.path}: it matches runs {hits}; runs: {known}")

    def runs(self) -> pd.DataFrame:
        """All runs, oldest first: columns ``run_id, name, config_hash, created`` (+ unit counts
        ``units_done``, ``units_total``)."""
        rows = self._q(
            "SELECT r.run_id, r.name, r.config_hash, r.created, "
            "COALESCE(SUM(u.status='done'), 0), COUNT(u.unit_key) "
            "FROM runs r LEFT JOIN units u ON u.run_id = r.run_id "
            "GROUP BY r.run_id ORDER BY r.created, r.run_id")
        return pd.DataFrame(rows, columns=["run_id", "name", "config_hash", "created", "units_done",
                                           "units_total"])

    def run_config(self, run: str) -> dict[str, Any]:
        """The full configuration of ``run`` (plain JSON data, as given to :meth:`open_run`)."""
        rid = self.resolve(run)
        return json.loads(self._q("SELECT config_json FROM runs WHERE run_id=?", (rid,))[0][0])

    def run_name(self, run: str) -> str:
        """The name of ``run``."""
        rid = self.resolve(run)
        return self._q("SELECT name FROM runs WHERE run_id=?", (rid,))[0][0]

    def versions(self, run: str) -> dict[str, str]:
        """Software versions recorded when ``run`` was created (python, torch, perturbscope, ...)."""
        rid = self.resolve(run)
        return json.loads(self._q("SELECT versions_json FROM runs WHERE run_id=?", (rid,))[0][0])

    # -- units ----------------------------------------------------------------------------------
    def plan_units(self, run: str, keys: Iterable[str]) -> None:
        """Register unit keys as ``pending`` (keys already present keep their status)."""
        rid = self.resolve(run)
        keys = list(keys)
        for k in keys:
            parse_unit_key(k)
        with self._tx() as con:
            con.executemany("INSERT OR IGNORE INTO units (run_id, unit_key, status) VALUES (?, ?, 'pending')",
                            [(rid, k) for k in keys])

    def units(self, run: str) -> pd.DataFrame:
        """Units of ``run``: ``unit_key, status, finished, seconds, n_records, meta`` (meta a dict)."""
        rid = self.resolve(run)
        rows = self._q("SELECT unit_key, status, finished, seconds, n_records, meta_json FROM units "
                       "WHERE run_id=? ORDER BY rowid", (rid,))
        df = pd.DataFrame(rows, columns=["unit_key", "status", "finished", "seconds", "n_records", "meta"])
        df["meta"] = [json.loads(m) for m in df["meta"]]
        return df

    def damaged_units(self, run: str) -> list[str]:
        """Keys of ``done`` units whose stored records do not number ``n_records`` (records deleted
        or added by hand, a store copied in part)."""
        rid = self.resolve(run)
        rows = self._q("SELECT u.unit_key FROM units u WHERE u.run_id=? AND u.status='done' AND "
                       "COALESCE(u.n_records, -1) != (SELECT COUNT(*) FROM records r WHERE "
                       "r.run_id=u.run_id AND r.unit_key=u.unit_key) ORDER BY u.rowid", (rid,))
        return [r[0] for r in rows]

    def pending_units(self, run: str) -> list[str]:
        """Keys of the units of ``run`` not yet ``done`` (pending or failed), in plan order.

        A ``done`` unit whose record count does not match is put back to ``pending`` first (its
        remaining records deleted), so a resumed sweep redoes it.
        """
        rid = self.resolve(run)
        damaged = self.damaged_units(rid)
        if damaged:
            with self._tx() as con:
                for key in damaged:
                    con.execute("DELETE FROM records WHERE run_id=? AND unit_key=?", (rid, key))
                    con.execute("UPDATE units SET status='pending', meta_json=? "
                                "WHERE run_id=? AND unit_key=?",
                                (json.dumps({"redo": "record count did not match"}), rid, key))
        return [r[0] for r in self._q("SELECT unit_key FROM units WHERE run_id=? AND status!='done' "
                                      "ORDER BY rowid", (rid,))]

    def done_units(self, run: str) -> list[str]:
        """Keys of the finished units of ``run``, in plan order."""
        rid = self.resolve(run)
        return [r[0] for r in self._q("SELECT unit_key FROM units WHERE run_id=? AND status='done' "
                                      "ORDER BY rowid", (rid,))]

    def commit_unit(self, run: str, key: str, records: pd.DataFrame, *, seconds: float | None = None,
                    meta: dict[str, Any] | None = None, index_column: str = "index") -> int:
        """Write a finished unit: all its records AND its ``done`` status in one transaction.

        Args:
            run: run id or name.
            key: unit key, e.g. ``"pair=7-8/split=test"``.
            records: one row per image; ``index_column`` (unique ints) becomes ``image_index``.
                Every column is stored (JSON; NaN kept).
            seconds: wall time the unit took. meta: plain data stored with the unit.

        Returns:
            Number of records written.

        Raises:
            UnitAlreadyDone: (a ValueError) the unit is already done; nothing is written.
            ValueError: the index column is missing or has duplicates.
        """
        rid = self.resolve(run)
        parse_unit_key(key)
        if not isinstance(records, pd.DataFrame):
            raise TypeError(f"records must be a pandas DataFrame, got {type(records).__name__}")
        if index_column not in records.columns:
            raise ValueError(f"records lack the index column {index_column!r}")
        idx = records[index_column].to_numpy()
        if len(np.unique(idx)) != len(idx):
            raise ValueError(f"records have duplicate values in {index_column!r}")
        rows = [(rid, key, int(i), _record_json(r))
                for i, r in zip(idx, records.to_dict(orient="records"), strict=True)]
        with self._tx() as con:
            row = con.execute("SELECT status FROM units WHERE run_id=? AND unit_key=?", (rid, key)).fetchone()
            if row is not None and row[0] == "done":
                raise UnitAlreadyDone(f"unit {key!r} of run {rid} is already done")
            con.execute("DELETE FROM records WHERE run_id=? AND unit_key=?", (rid, key))
            con.execute(
                "INSERT INTO units (run_id, unit_key, status, finished, seconds, n_records, meta_json) "
                "VALUES (?, ?, 'done', ?, ?, ?, ?) ON CONFLICT(run_id, unit_key) DO UPDATE SET "
                "status='done', finished=excluded.finished, seconds=excluded.seconds, "
                "n_records=excluded.n_records, meta_json=excluded.meta_json",
                (rid, key, _now(), seconds, len(rows), json.dumps(_plain(meta or {}), allow_nan=True)))
            con.executemany("INSERT INTO records VALUES (?, ?, ?, ?)", rows)
        return len(rows)

    def fail_unit(self, run: str, key: str, error: str) -> None:
        """Mark a unit ``failed`` with its error message (a rerun retries it)."""
        rid = self.resolve(run)
        with self._tx() as con:
            con.execute(
                "INSERT INTO units (run_id, unit_key, status, finished, meta_json) VALUES "
                "(?, ?, 'failed', ?, ?) ON CONFLICT(run_id, unit_key) DO UPDATE SET status='failed', "
                "finished=excluded.finished, meta_json=excluded.meta_json WHERE status != 'done'",
                (rid, key, _now(), json.dumps({"error": str(error)})))

    # -- artifacts ------------------------------------------------------------------------------
    def put_artifact(self, run: str, key: str, blob: bytes, meta: dict[str, Any] | None = None) -> None:
        """Store (or replace) the bytes ``blob`` under ``key`` for ``run``, in one transaction."""
        rid = self.resolve(run)
        if not isinstance(blob, bytes | bytearray | memoryview):
            raise TypeError(f"blob must be bytes, got {type(blob).__name__}")
        with self._tx() as con:
            con.execute("INSERT OR REPLACE INTO artifacts VALUES (?, ?, ?, ?, ?)",
                        (rid, key, bytes(blob), json.dumps(_plain(meta or {}), allow_nan=True), _now()))

    def get_artifact(self, run: str, key: str) -> tuple[bytes, dict[str, Any]] | None:
        """``(blob, meta)`` stored under ``key``, or None."""
        rid = self.resolve(run)
        rows = self._q("SELECT blob, meta_json FROM artifacts WHERE run_id=? AND key=?", (rid, key))
        return (bytes(rows[0][0]), json.loads(rows[0][1])) if rows else None

    def artifact_keys(self, run: str) -> list[str]:
        """Keys of the artifacts of ``run``."""
        rid = self.resolve(run)
        return [r[0] for r in self._q("SELECT key FROM artifacts WHERE run_id=? ORDER BY key", (rid,))]

    # -- reading results ------------------------------------------------------------------------
    def records(self, run: str, unit: str | None = None) -> pd.DataFrame:
        """Per-image records of the finished units of ``run`` (optionally one ``unit`` key).

        Returns:
            One row per image per unit, in plan order then image index: the unit key's parts
            as columns first (``pair`` like ``"7-8"``, ``split``), then ``unit_key``, then every
            column of the audit records as written (``index, label, pred, correct,
            adv_success, eps_l2, eps_l1, eps_linf, eps_source, flips_a{alpha}, rand_frac_a{alpha},
            rand_min_{l2,l1,linf}_a{alpha}, rand_min_index_a{alpha}``, ...). Empty (no rows,
            columns ``pair, split, unit_key``) when nothing is finished.
        """
        rid = self.resolve(run)
        damaged = [k for k in self.damaged_units(rid) if unit is None or k == unit]
        if damaged:
            raise StoreError(f"results store {self.path}: unit(s) {damaged} of run {rid} are marked done "
                             f"but their records do not match the count written; run the sweep again "
                             f"to redo them")
        sql = ("SELECT r.unit_key, r.data_json FROM records r JOIN units u "
               "ON u.run_id = r.run_id AND u.unit_key = r.unit_key "
               "WHERE r.run_id=? AND u.status='done'")
        args: list[Any] = [rid]
        if unit is not None:
            sql += " AND r.unit_key=?"
            args.append(unit)
        rows = self._q(sql + " ORDER BY u.rowid, r.image_index", args)
        if not rows:
            return pd.DataFrame(columns=["pair", "split", "unit_key"])
        keys = [k for k, _ in rows]
        data = pd.DataFrame.from_records([json.loads(d) for _, d in rows])
        parts = pd.DataFrame.from_records([parse_unit_key(k) for k in keys])
        for col in parts.columns:
            if col in data.columns:
                data = data.drop(columns=col)
        out = pd.concat([parts, pd.Series(keys, name="unit_key").to_frame(), data], axis=1)
        return _typed(out)

    def summaries(self, run: str, alphas: Sequence[float] | None = None) -> pd.DataFrame:
        """One row per finished unit (pair x split): :func:`perturbscope.audit.summary.summarize_groups`.

        Columns: ``pair, split, unit_key``, counts, the paper's percentages (eqs 6-8) with their
        95% Clopper-Pearson interval ends (``*_lo``, ``*_hi``), ``random_a{alpha}`` and
        ``n_random_a{alpha}`` per alpha, and the mean and sample sd of the smallest attack's
        norms over the susceptible images, ``eps_{l1,l2,linf}_{mean,sd}`` (pixel units).

        ``alphas`` default: the run config's ``audit.alphas``, else the ``flips_a*`` columns.
        Units streamed in groups (keys ``pair=.../split=.../group=NNNNN``) are summarised per
        pair x split (no ``unit_key`` column then).
        """
        recs = self.records(run)
        if alphas is None:
            cfg = self.run_config(run)
            alphas = (cfg.get("audit") or {}).get("alphas")
        if recs.empty:
            return pd.DataFrame(columns=["pair", "split", "unit_key"])
        keep = [c for c in recs.columns if not c.startswith("flips_a")
                or alphas is None or float(c[len("flips_a"):]) in {float(a) for a in alphas}]
        if "group" in recs.columns:  # a streamed unit is one group of a pair x split: summarise them together
            return summarize_groups(recs[keep], ("pair", "split"))
        return summarize_groups(recs[keep], ("pair", "split", "unit_key"))

    def export(self, run: str, path: str | os.PathLike, fmt: str | None = None) -> Path:
        """Write :meth:`records` of ``run`` to ``path`` (atomically) as CSV or Parquet.

        ``fmt`` (``"csv"`` or ``"parquet"``) defaults to the file's suffix (``.csv``, ``.parquet``,
        ``.pq``, any case); another suffix, or a suffix that contradicts ``fmt``, is refused.
        """
        path = Path(path)
        by_suffix = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}.get(path.suffix.lower())
        if fmt is None:
            if by_suffix is None:
                raise ValueError(f"cannot tell the export format of {path}: use a .csv or .parquet file name")
            fmt = by_suffix
        if fmt not in ("csv", "parquet"):
            raise ValueError(f"fmt must be 'csv' or 'parquet', got {fmt!r}")
        if by_suffix not in (None, fmt) or (by_suffix is None and path.suffix):
            raise ValueError(f"{path} has the suffix {path.suffix!r}, which is not {fmt}; use a matching "
                             f"file name (.csv or .parquet)")
        if path.is_dir():
            raise ValueError(f"export path {path} is a directory; give a file name")
        df = self.records(run)
        if fmt == "csv":
            atomic_write(path, lambda p: df.to_csv(p, index=False))
        else:
            atomic_write(path, lambda p: df.to_parquet(p, index=False))
        return path
