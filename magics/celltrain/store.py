"""The workspace store: one SQLite file plus one folder per run.

Every view (widgets, sidebar, CLI) reads from here and keeps no state of its own.  SQLite runs
in WAL mode so readers never block the writer; every write opens with ``BEGIN IMMEDIATE`` so a
second writer waits on the busy timeout instead of failing with "database is locked" when a read
transaction would otherwise have to be upgraded.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from itertools import groupby, islice
from operator import itemgetter
from pathlib import Path
from typing import Any, Iterable, Iterator

SCHEMA_VERSION = 4
BUSY_TIMEOUT_S = 60.0

# Each entry upgrades the schema from version i to i + 1.  Never edit an entry once released:
# append a new one instead, so every workspace on disk can be brought forward.
MIGRATIONS: list[str] = [
    # 0 -> 1: experiments, runs, status history, metrics, tables, images
    """
    CREATE TABLE experiments (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created REAL NOT NULL
    );
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        experiment_id INTEGER NOT NULL REFERENCES experiments(id),
        number INTEGER NOT NULL,
        status TEXT NOT NULL,
        target TEXT NOT NULL DEFAULT 'docker',
        created REAL NOT NULL,
        started REAL,
        ended REAL,
        script TEXT,
        args TEXT NOT NULL DEFAULT '[]',
        params TEXT NOT NULL DEFAULT '{}',
        tags TEXT NOT NULL DEFAULT '{}',
        environment TEXT NOT NULL DEFAULT '{}',
        options TEXT NOT NULL DEFAULT '{}',
        image TEXT,
        image_digest TEXT,
        container_id TEXT,
        exit_code INTEGER,
        reason TEXT,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        events_offset INTEGER NOT NULL DEFAULT 0,
        progress TEXT,
        UNIQUE (experiment_id, number)
    );
    CREATE INDEX runs_by_status ON runs(status);
    CREATE INDEX runs_by_created ON runs(created);
    CREATE TABLE status_history (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        status TEXT NOT NULL,
        time REAL NOT NULL,
        detail TEXT
    );
    CREATE INDEX status_history_by_run ON status_history(run_id);
    CREATE TABLE metrics (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        step INTEGER NOT NULL,
        value REAL,
        time REAL NOT NULL
    );
    CREATE INDEX metrics_by_run_name ON metrics(run_id, name, id);
    CREATE TABLE table_rows (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        row TEXT NOT NULL,
        time REAL NOT NULL
    );
    CREATE INDEX table_rows_by_run ON table_rows(run_id, name);
    CREATE TABLE images (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        path TEXT NOT NULL,
        step INTEGER,
        time REAL NOT NULL
    );
    """,
    # 1 -> 2: the model registry
    """
    CREATE TABLE models (
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        run_id TEXT REFERENCES runs(id),
        created REAL NOT NULL,
        path TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        description TEXT,
        tags TEXT NOT NULL DEFAULT '{}',
        metrics TEXT NOT NULL DEFAULT '{}',
        environment TEXT NOT NULL DEFAULT '{}',
        image_digest TEXT,
        archived INTEGER NOT NULL DEFAULT 0,
        artifacts TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (name, version)
    );
    CREATE TABLE model_aliases (
        name TEXT NOT NULL,
        alias TEXT NOT NULL,
        version INTEGER NOT NULL,
        PRIMARY KEY (name, alias),
        FOREIGN KEY (name, version) REFERENCES models(name, version)
    );
    """,
    # 2 -> 3: min/max rollups of each series per block of 256 consecutive metric ids, kept by
    # add_metrics in the same transaction as the points, so a chart of a long series reads the
    # blocks instead of every point; existing points get their blocks here
    """
    CREATE TABLE metric_blocks (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        block INTEGER NOT NULL,
        n INTEGER NOT NULL,
        first_step INTEGER NOT NULL,
        min_value REAL,
        max_value REAL,
        PRIMARY KEY (run_id, name, block)
    ) WITHOUT ROWID;
    INSERT INTO metric_blocks (run_id, name, block, n, first_step, min_value, max_value)
    SELECT g.run_id, g.name, g.block, g.n, m.step, g.lo, g.hi
    FROM (SELECT run_id, name, id >> 8 AS block, COUNT(*) AS n, MIN(id) AS first_id,
                 MIN(value) AS lo, MAX(value) AS hi
          FROM metrics GROUP BY run_id, name, id >> 8) AS g
    JOIN metrics AS m ON m.id = g.first_id
    """,
    # 3 -> 4: warnings on a run (what the host could not ingest or copy back, counted by kind),
    # so a run that went on despite them says so in show, the widget and the sidebar
    """
    CREATE TABLE run_warnings (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        count INTEGER NOT NULL,
        message TEXT NOT NULL,
        first_time REAL NOT NULL,
        last_time REAL NOT NULL,
        PRIMARY KEY (run_id, kind)
    ) WITHOUT ROWID
    """,
]
assert len(MIGRATIONS) == SCHEMA_VERSION

# metric_blocks: block k of a series holds the count, first step, min and max of its points with
# ids k << 8 .. (k << 8) + 255 (NaN and None are stored as NULL and left out of min and max).
# Migration 3 fixes the 8; it cannot change without a new migration rebuilding the blocks.
METRIC_BLOCK_BITS = 8
_NAME = itemgetter(1)     # a metric row's name
_METRICS_CHUNK = 65536   # rows per executemany: bounds memory for a generator of 1M points
_INSERT_METRIC = "INSERT INTO metrics (run_id, name, step, value, time) VALUES (?, ?, ?, ?, ?)"
_UPSERT_BLOCK = (
    "INSERT INTO metric_blocks (run_id, name, block, n, first_step, min_value, max_value) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, name, block) DO UPDATE SET "
    "n = n + excluded.n, "
    "min_value = COALESCE(MIN(min_value, excluded.min_value), min_value, excluded.min_value), "
    "max_value = COALESCE(MAX(max_value, excluded.max_value), max_value, excluded.max_value)")

JSON_COLUMNS = ("args", "params", "tags", "environment", "options", "progress")


def _encode(fields: dict[str, Any]) -> dict[str, Any]:
    """JSON columns as text, the rest as given."""
    return {k: json.dumps(v) if k in JSON_COLUMNS and v is not None else v
            for k, v in fields.items()}


def _decode_run(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    for key in JSON_COLUMNS:
        if key in out and out[key] is not None:
            out[key] = json.loads(out[key])
    return out


class Store:
    """SQLite access for one workspace; one connection per thread, opened lazily."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.db_path = self.root / "celltrain.db"
        self.runs_dir = self.root / "runs"
        self.models_dir = self.root / "models"
        self._local = threading.local()
        self.root.mkdir(parents=True, exist_ok=True)
        self.runs_dir.mkdir(exist_ok=True)
        self.models_dir.mkdir(exist_ok=True)
        self._migrate()

    # -- connections and transactions -------------------------------------------------------
    @property
    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the write lock up front (waits, never 'locked')."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _migrate(self) -> None:
        with self.write() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"workspace {self.root} has schema version {version}, newer than this "
                    f"celltrain understands ({SCHEMA_VERSION}): upgrade celltrain")
            for step in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[step].split(";"):
                    if statement.strip():
                        conn.execute(statement)
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
                         (str(SCHEMA_VERSION),))

    def schema_version(self) -> int:
        row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(row[0])

    # -- experiments ------------------------------------------------------------------------
    def experiment_id(self, name: str) -> int:
        with self.write() as conn:
            conn.execute("INSERT OR IGNORE INTO experiments (name, created) VALUES (?, ?)",
                         (name, time.time()))
            return conn.execute("SELECT id FROM experiments WHERE name=?", (name,)).fetchone()[0]

    def experiments(self) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT e.id, e.name, e.created, COUNT(r.id) AS runs, MAX(r.created) AS last_run "
            "FROM experiments e LEFT JOIN runs r ON r.experiment_id = e.id "
            "GROUP BY e.id ORDER BY e.name").fetchall()
        return [dict(r) for r in rows]

    # -- runs -------------------------------------------------------------------------------
    def create_run(self, experiment: str, *, run_id_for, status: str, **fields: Any) -> dict:
        """Insert a run with the next per-experiment number; ``run_id_for(name, n)`` makes its id."""
        exp_id = self.experiment_id(experiment)
        now = time.time()
        fields = _encode(fields)
        with self.write() as conn:
            number = conn.execute("SELECT COALESCE(MAX(number), 0) + 1 FROM runs "
                                  "WHERE experiment_id=?", (exp_id,)).fetchone()[0]
            run_id = run_id_for(experiment, number)
            cols = ["id", "experiment_id", "number", "status", "created", *fields]
            conn.execute(f"INSERT INTO runs ({', '.join(cols)}) VALUES "
                         f"({', '.join('?' for _ in cols)})",
                         (run_id, exp_id, number, status, now, *fields.values()))
            conn.execute("INSERT INTO status_history VALUES (?, ?, ?, ?)",
                         (run_id, status, now, None))
        return self.get_run(run_id)

    RUN_SELECT = ("SELECT r.*, e.name AS experiment FROM runs r "
                  "JOIN experiments e ON e.id = r.experiment_id ")

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        row = self.conn.execute(self.RUN_SELECT + "WHERE r.id=?", (run_id,)).fetchone()
        return _decode_run(row) if row else None

    def find_runs(self, prefix: str) -> list[str]:
        rows = self.conn.execute("SELECT id FROM runs WHERE id = ? OR id LIKE ? ESCAPE '\\' "
                                 "ORDER BY created", (prefix, _like_prefix(prefix))).fetchall()
        exact = [r[0] for r in rows if r[0] == prefix]
        return exact or [r[0] for r in rows]

    def list_runs(self, *, experiment: str | None = None, status: Iterable[str] | None = None,
                  order_by: str = "created", descending: bool = True, limit: int | None = None,
                  offset: int = 0) -> list[dict[str, Any]]:
        if order_by not in {"created", "started", "ended", "number", "status", "id"}:
            raise ValueError(f"cannot sort runs by {order_by!r}")
        where, args = [], []
        if experiment is not None:
            where.append("e.name = ?")
            args.append(experiment)
        if status:
            status = list(status)
            where.append(f"r.status IN ({', '.join('?' for _ in status)})")
            args.extend(status)
        sql = self.RUN_SELECT + (f"WHERE {' AND '.join(where)} " if where else "")
        sql += f"ORDER BY r.{order_by} {'DESC' if descending else 'ASC'}, r.id "
        if limit is not None:
            sql += "LIMIT ? OFFSET ?"
            args += [int(limit), int(offset)]
        return [_decode_run(r) for r in self.conn.execute(sql, args).fetchall()]

    def count_runs(self, *, experiment: str | None = None,
                   status: Iterable[str] | None = None) -> int:
        where, args = [], []
        if experiment is not None:
            where.append("e.name = ?")
            args.append(experiment)
        if status:
            status = list(status)
            where.append(f"r.status IN ({', '.join('?' for _ in status)})")
            args.extend(status)
        sql = "SELECT COUNT(*) FROM runs r JOIN experiments e ON e.id = r.experiment_id "
        sql += f"WHERE {' AND '.join(where)}" if where else ""
        return self.conn.execute(sql, args).fetchone()[0]

    def update_run(self, run_id: str, **fields: Any) -> None:
        fields = _encode(fields)
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self.write() as conn:
            conn.execute(f"UPDATE runs SET {sets} WHERE id = ?", (*fields.values(), run_id))

    def set_status(self, run_id: str, status: str, detail: str | None = None,
                   **fields: Any) -> None:
        """Record a state change and its time; the history is append-only."""
        now = time.time()
        fields = _encode(fields)
        fields["status"] = status
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self.write() as conn:
            conn.execute(f"UPDATE runs SET {sets} WHERE id = ?", (*fields.values(), run_id))
            conn.execute("INSERT INTO status_history VALUES (?, ?, ?, ?)",
                         (run_id, status, now, detail))

    def status_history(self, run_id: str) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT status, time, detail FROM status_history "
                                 "WHERE run_id=? ORDER BY rowid", (run_id,)).fetchall()
        return [dict(r) for r in rows]

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    # -- metrics ----------------------------------------------------------------------------
    def add_metrics(self, run_id: str, rows: Iterable[tuple[str, int, float, float]],
                    conn: sqlite3.Connection | None = None) -> None:
        """Rows are (name, step, value, time).  The series' blocks (``metric_blocks``) are
        updated in the same transaction, so they always agree with the points."""
        if conn is None:
            with self.write() as c:
                return self.add_metrics(run_id, rows, conn=c)
        it = iter(rows)
        while True:
            data = [(run_id, n, s, v, t) for n, s, v, t in islice(it, _METRICS_CHUNK)]
            if not data:
                return
            last = conn.execute("SELECT MAX(id) FROM metrics").fetchone()[0] or 0
            conn.executemany(_INSERT_METRIC, data)
            if conn.execute("SELECT MAX(id) FROM metrics").fetchone()[0] != last + len(data):
                raise RuntimeError(f"metric ids of run {run_id} are not consecutive after id "
                                   f"{last}: the workspace database {self.db_path} needs "
                                   f"checking (PRAGMA integrity_check)")
            conn.executemany(_UPSERT_BLOCK, _blocks(data, last + 1))

    def metric_names(self, run_id: str) -> list[str]:
        rows = self.conn.execute("SELECT DISTINCT name FROM metrics WHERE run_id=? ORDER BY name",
                                 (run_id,)).fetchall()
        return [r[0] for r in rows]

    def metric_series(self, run_id: str, name: str | None = None,
                      after_id: int = 0) -> list[tuple[int, str, int, float, float]]:
        """Points as (id, name, step, value, time), oldest first; ``after_id`` for increments."""
        if name is None:
            sql = ("SELECT id, name, step, value, time FROM metrics WHERE run_id=? AND id>? "
                   "ORDER BY id")
            args: tuple = (run_id, after_id)
        else:
            sql = ("SELECT id, name, step, value, time FROM metrics WHERE run_id=? AND name=? "
                   "AND id>? ORDER BY id")
            args = (run_id, name, after_id)
        return [tuple(r) for r in self.conn.execute(sql, args).fetchall()]

    def latest_metrics(self, run_id: str) -> dict[str, float]:
        """The last value of each metric (by step, then by arrival)."""
        rows = self.conn.execute(
            "SELECT name, value FROM metrics WHERE id IN (SELECT MAX(id) FROM metrics "
            "WHERE run_id=? GROUP BY name)", (run_id,)).fetchall()
        return {r[0]: r[1] for r in rows}

    def last_steps(self, run_id: str) -> dict[str, int]:
        rows = self.conn.execute("SELECT name, MAX(step) FROM metrics WHERE run_id=? "
                                 "GROUP BY name", (run_id,)).fetchall()
        return {r[0]: r[1] for r in rows}

    def add_table_rows(self, run_id: str, rows: Iterable[tuple[str, dict, float]],
                       conn: sqlite3.Connection) -> None:
        conn.executemany("INSERT INTO table_rows (run_id, name, row, time) VALUES (?, ?, ?, ?)",
                         ((run_id, n, json.dumps(r), t) for n, r, t in rows))

    def table(self, run_id: str, name: str) -> list[dict]:
        rows = self.conn.execute("SELECT row FROM table_rows WHERE run_id=? AND name=? "
                                 "ORDER BY id", (run_id, name)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def table_names(self, run_id: str) -> list[str]:
        rows = self.conn.execute("SELECT DISTINCT name FROM table_rows WHERE run_id=? "
                                 "ORDER BY name", (run_id,)).fetchall()
        return [r[0] for r in rows]

    def add_images(self, run_id: str, rows: Iterable[tuple[str, str, int | None, float]],
                   conn: sqlite3.Connection) -> None:
        conn.executemany("INSERT INTO images (run_id, name, path, step, time) "
                         "VALUES (?, ?, ?, ?, ?)", ((run_id, *r) for r in rows))

    def add_warning(self, run_id: str, kind: str, message: str, count: int = 1,
                    conn: sqlite3.Connection | None = None) -> None:
        """Count ``count`` more of warning ``kind`` on the run; the latest message is kept.

        ``kind`` groups repeats ("bad-value", "skipped-bytes", "output-link"), so a script that
        logs a million bad values makes one line with a count, not a million rows.
        """
        if conn is None:
            with self.write() as c:
                return self.add_warning(run_id, kind, message, count, conn=c)
        now = time.time()
        conn.execute("INSERT INTO run_warnings VALUES (?, ?, ?, ?, ?, ?) "
                     "ON CONFLICT (run_id, kind) DO UPDATE SET count = count + excluded.count, "
                     "message = excluded.message, last_time = excluded.last_time",
                     (run_id, kind, int(count), str(message), now, now))

    def warnings(self, run_id: str) -> list[dict[str, Any]]:
        """The run's warnings, oldest kind first: kind, count, message, first_time, last_time."""
        rows = self.conn.execute("SELECT kind, count, message, first_time, last_time "
                                 "FROM run_warnings WHERE run_id=? ORDER BY first_time, kind",
                                 (run_id,)).fetchall()
        return [dict(r) for r in rows]

    def images(self, run_id: str) -> list[dict]:
        rows = self.conn.execute("SELECT name, path, step, time FROM images WHERE run_id=? "
                                 "ORDER BY id", (run_id,)).fetchall()
        return [dict(r) for r in rows]


def _blocks(data: list[tuple], first_id: int) -> list[tuple]:
    """Block rows (run_id, name, block, n, first step, min, max) of metric rows ``data`` whose
    ids are ``first_id``, ``first_id + 1``, ...: a few list operations per block, not per point,
    so that keeping the blocks adds little to the insert itself."""
    size = 1 << METRIC_BLOCK_BITS
    out = []
    start = 0
    while start < len(data):
        end = min(len(data), start + size - ((first_id + start) & (size - 1)))
        block = (first_id + start) >> METRIC_BLOCK_BITS
        part = data[start:end]
        names = set(map(_NAME, part))
        if len(names) == 1:                      # one series (the usual bulk write)
            groups: Iterable = ((names.pop(), part),)
        else:                                    # interleaved series: group them, order kept
            groups = ((k, list(g)) for k, g in groupby(sorted(part, key=_NAME), _NAME))
        for name, rows in groups:
            values = [r[3] for r in rows]
            try:
                total = sum(values)
                clean = total == total                     # no None, no NaN
            except TypeError:
                clean = False
            if not clean:
                values = [v for v in values if isinstance(v, (int, float)) and v == v]
            out.append((rows[0][0], name, block, len(rows), rows[0][2],
                        min(values) if values else None, max(values) if values else None))
        start = end
    return out


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
