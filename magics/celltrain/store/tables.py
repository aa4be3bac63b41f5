"""What a run logs besides metrics: the ``table_rows`` and ``images`` tables (each read is one
rank's, rank 0's unless told)."""
from __future__ import annotations

import json
import sqlite3
from typing import Iterable


class LoggedTables:
    """The store's logged tables and images (a part of ``Store``)."""

    def add_table_rows(self, run_id: str, rows: Iterable[tuple[str, dict, float]],
                       conn: sqlite3.Connection, rank: int = 0) -> None:
        conn.executemany("INSERT INTO table_rows (run_id, name, row, time, rank) "
                         "VALUES (?, ?, ?, ?, ?)",
                         ((run_id, n, json.dumps(r), t, rank) for n, r, t in rows))

    def table(self, run_id: str, name: str, rank: int = 0) -> list[dict]:
        rows = self.conn.execute("SELECT row FROM table_rows WHERE run_id=? AND rank=? AND "
                                 "name=? ORDER BY id", (run_id, rank, name)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def table_names(self, run_id: str, rank: int = 0) -> list[str]:
        rows = self.conn.execute("SELECT DISTINCT name FROM table_rows WHERE run_id=? AND "
                                 "rank=? ORDER BY name", (run_id, rank)).fetchall()
        return [r[0] for r in rows]

    def add_images(self, run_id: str, rows: Iterable[tuple[str, str, int | None, float]],
                   conn: sqlite3.Connection, rank: int = 0) -> None:
        conn.executemany("INSERT INTO images (run_id, name, path, step, time, rank) "
                         "VALUES (?, ?, ?, ?, ?, ?)", ((run_id, *r, rank) for r in rows))

    def images(self, run_id: str, rank: int = 0) -> list[dict]:
        rows = self.conn.execute("SELECT name, path, step, time FROM images WHERE run_id=? "
                                 "AND rank=? ORDER BY id", (run_id, rank)).fetchall()
        return [dict(r) for r in rows]
