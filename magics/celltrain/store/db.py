"""``Store``: one SQLite connection per thread, write transactions, migrations on open.

SQLite runs in WAL mode so readers never block the writer; every write opens with
``BEGIN IMMEDIATE`` so a second writer waits on the busy timeout instead of failing with
"database is locked" when a read transaction would otherwise have to be upgraded.
"""
from __future__ import annotations

import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .ingest import IngestOffsets
from .metrics import MetricTables
from .models import ModelTables
from .runs import RunTables
from .schema import MIGRATIONS, SCHEMA_VERSION
from .settings import ViewSettings
from .system import SystemTables
from .tables import LoggedTables
from .targets import TargetTables

BUSY_TIMEOUT_S = 60.0


class Store(RunTables, MetricTables, LoggedTables, ModelTables, TargetTables, IngestOffsets,
            ViewSettings, SystemTables):
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
