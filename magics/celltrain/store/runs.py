"""Runs and experiments, their status history and warnings: the ``experiments``, ``runs``,
``status_history`` and ``run_warnings`` tables, and the one-query run listing the server sends."""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable

from .search import where as search_where

JSON_COLUMNS = ("args", "params", "tags", "environment", "options", "progress", "spec",
                "handle")
RUN_SUMMARY = ("id", "experiment", "number", "status", "target", "created", "started", "ended",
               "script", "reason", "exit_code", "progress", "params", "tags", "cancel_requested",
               "kind", "parent_id")


def _run_json_column(key: str) -> str:
    if key == "experiment":
        return "json_quote(e.name)"
    if key in ("id", "status", "target", "script", "reason", "kind", "parent_id"):
        return f"json_quote(r.{key})"
    return f"COALESCE(r.{key}, 'null')"   # numbers, and JSON text stored by json.dumps


# One run's summary as JSON text, written by SQLite: the JSON columns are pasted in as they are
# stored, never parsed, which keeps a page of 10,000 runs close to the cost of the raw query.
_RUN_JSON = "'{' || " + " || ',' || ".join(f"'\"{k}\":' || {_run_json_column(k)}"
                                          for k in RUN_SUMMARY) + " || '}'"


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


class RunTables:
    """The store's runs: experiments, runs, status history, warnings (a part of ``Store``)."""

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

    def count_experiments(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM experiments").fetchone()[0]

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
                  offset: int = 0, search: str | None = None) -> list[dict[str, Any]]:
        """Runs, newest first; ``search`` is a query of ``store.search`` (e.g. "lr=0.01")."""
        sql_where, args = _run_filter(experiment, status, search)
        sql = self.RUN_SELECT + sql_where + _run_order(order_by, descending)
        if limit is not None:
            sql += "LIMIT ? OFFSET ?"
            args += [int(limit), int(offset)]
        return [_decode_run(r) for r in self.conn.execute(sql, args).fetchall()]

    def count_runs(self, *, experiment: str | None = None,
                   status: Iterable[str] | None = None, search: str | None = None) -> int:
        sql_where, args = _run_filter(experiment, status, search)
        return self.conn.execute(_COUNT_RUNS + sql_where, args).fetchone()[0]

    def run_summaries_json(self, *, experiment: str | None = None,
                           status: list[str] | None = None, order_by: str = "created",
                           descending: bool = True, limit: int = 100,
                           offset: int = 0, search: str | None = None) -> tuple[int, str]:
        """How many runs match, and one page of them as a JSON array of ``RUN_SUMMARY`` objects.
        SQLite writes each run's JSON itself (its JSON columns are embedded, never parsed in
        Python): 10,000 runs stay fast.  ``order_by`` is one of ``list_runs``' keys."""
        sql_where, args = _run_filter(experiment, status, search)
        order = _run_order(order_by, descending)
        conn = self.conn
        total = conn.execute(_COUNT_RUNS + sql_where, args).fetchone()[0]
        rows = conn.execute(
            f"SELECT {_RUN_JSON} FROM runs r JOIN experiments e ON e.id = r.experiment_id "
            f"{sql_where}{order}LIMIT ? OFFSET ?", [*args, limit, offset]).fetchall()
        return total, "[" + ",".join(r[0] for r in rows) + "]"

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

    def target_kinds_used(self) -> list[str]:
        """The kinds of target the workspace's runs used (whose leftovers reconcile tidies)."""
        return [r[0] for r in self.conn.execute("SELECT DISTINCT target FROM runs ORDER BY target")]

    def child_runs(self, parent_id: str) -> list[dict[str, Any]]:
        """The runs of a sweep (or any parent), oldest first."""
        rows = self.conn.execute(self.RUN_SELECT + "WHERE r.parent_id=? ORDER BY r.created, r.id",
                                 (parent_id,)).fetchall()
        return [_decode_run(r) for r in rows]

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

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


def format_warning(w: dict) -> str:
    """One warning row as a line: its message, and how often it happened when more than once."""
    return w["message"] + (f" ({w['count']} times)" if w["count"] > 1 else "")


_COUNT_RUNS = "SELECT COUNT(*) FROM runs r JOIN experiments e ON e.id = r.experiment_id "
_RUN_ORDERS = {"created", "started", "ended", "number", "status", "id"}


def _run_filter(experiment: str | None, status: Iterable[str] | None,
                search: str | None = None) -> tuple[str, list]:
    """The WHERE clause (or nothing) shared by listing, counting and paging runs; a bad
    ``search`` raises ``search.SearchError`` naming the word."""
    where, args = search_where(search)
    if experiment is not None:
        where.append("e.name = ?")
        args.append(experiment)
    if status:
        status = list(status)
        where.append(f"r.status IN ({', '.join('?' for _ in status)})")
        args.extend(status)
    return (f"WHERE {' AND '.join(where)} " if where else ""), args


def _run_order(order_by: str, descending: bool) -> str:
    """ORDER BY for one of ``_RUN_ORDERS``, ties broken by id so pages never overlap."""
    if order_by not in _RUN_ORDERS:
        raise ValueError(f"cannot sort runs by {order_by!r}")
    return f"ORDER BY r.{order_by} {'DESC' if descending else 'ASC'}, r.id "


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
