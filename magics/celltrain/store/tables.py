"""What a run logs besides metrics: the ``table_rows`` and ``images`` tables."""
from __future__ import annotations

import json
import sqlite3
from typing import Iterable


class LoggedTables:
    """The store's logged tables and images (a part of ``Store``)."""

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

    def images(self, run_id: str) -> list[dict]:
        rows = self.conn.execute("SELECT name, path, step, time FROM images WHERE run_id=? "
                                 "ORDER BY id", (run_id,)).fetchall()
        return [dict(r) for r in rows]
