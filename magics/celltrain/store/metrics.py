"""Metric points and their rollups: the ``metrics`` and ``metric_blocks`` tables, and the
ranks that logged."""
from __future__ import annotations

import sqlite3
from itertools import groupby, islice
from operator import itemgetter
from typing import Iterable

from .schema import METRIC_BLOCK_BITS

_NAME = itemgetter(1)     # a metric row's name
_METRICS_CHUNK = 65536   # rows per executemany: bounds memory for a generator of 1M points
_INSERT_METRIC = ("INSERT INTO metrics (run_id, name, step, value, time, rank) "
                  "VALUES (?, ?, ?, ?, ?, ?)")
_UPSERT_BLOCK = (
    "INSERT INTO metric_blocks (run_id, name, block, n, first_step, min_value, max_value) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, name, block) DO UPDATE SET "
    "n = n + excluded.n, "
    "min_value = COALESCE(MIN(min_value, excluded.min_value), min_value, excluded.min_value), "
    "max_value = COALESCE(MAX(max_value, excluded.max_value), max_value, excluded.max_value)")


class MetricTables:
    """The store's metrics: points, their blocks, names and last values (a part of ``Store``).

    Every read is one rank's, rank 0's unless told (``rank=``): what views show."""

    # -- metrics ----------------------------------------------------------------------------
    def add_metrics(self, run_id: str, rows: Iterable[tuple],
                    conn: sqlite3.Connection | None = None) -> None:
        """Rows are (name, step, value, time), rank 0's, or (name, step, value, time, rank).
        The blocks of rank 0's series (``metric_blocks``) are updated in the same transaction,
        so they always agree with the points."""
        if conn is None:
            with self.write() as c:
                return self.add_metrics(run_id, rows, conn=c)
        it = iter(rows)
        while True:
            chunk = list(islice(it, _METRICS_CHUNK))
            if not chunk:
                return
            try:
                data = [(run_id, n, s, v, t, 0) for n, s, v, t in chunk]
                ranked = False
            except ValueError:      # some rows carry their rank
                data = [(run_id, *r[:4], r[4] if len(r) > 4 else 0) for r in chunk]
                ranked = True
            del chunk
            last = conn.execute("SELECT MAX(id) FROM metrics").fetchone()[0] or 0
            conn.executemany(_INSERT_METRIC, data)
            if conn.execute("SELECT MAX(id) FROM metrics").fetchone()[0] != last + len(data):
                raise RuntimeError(f"metric ids of run {run_id} are not consecutive after id "
                                   f"{last}: the workspace database {self.db_path} needs "
                                   f"checking (PRAGMA integrity_check)")
            if not ranked:
                conn.executemany(_UPSERT_BLOCK, _blocks(data, last + 1))
                continue
            for first, part in _rank0_stretches(data):     # only rank 0's points have blocks
                conn.executemany(_UPSERT_BLOCK, _blocks(part, last + 1 + first))

    def metric_names(self, run_id: str, rank: int = 0) -> list[str]:
        rows = self.conn.execute("SELECT DISTINCT name FROM metrics WHERE run_id=? AND rank=? "
                                 "ORDER BY name", (run_id, rank)).fetchall()
        return [r[0] for r in rows]

    def metric_series(self, run_id: str, name: str | None = None, after_id: int = 0, *,
                      rank: int = 0) -> list[tuple[int, str, int, float, float]]:
        """Points as (id, name, step, value, time), oldest first; ``after_id`` for increments."""
        if name is None:
            sql = ("SELECT id, name, step, value, time FROM metrics WHERE run_id=? AND rank=? "
                   "AND id>? ORDER BY id")
            args: tuple = (run_id, rank, after_id)
        else:
            sql = ("SELECT id, name, step, value, time FROM metrics WHERE run_id=? AND rank=? "
                   "AND name=? AND id>? ORDER BY id")
            args = (run_id, rank, name, after_id)
        return [tuple(r) for r in self.conn.execute(sql, args).fetchall()]

    def latest_metrics(self, run_id: str, rank: int = 0) -> dict[str, float]:
        """The last value of each metric (by step, then by arrival)."""
        rows = self.conn.execute(
            "SELECT name, value FROM metrics WHERE id IN (SELECT MAX(id) FROM metrics "
            "WHERE run_id=? AND rank=? GROUP BY name)", (run_id, rank)).fetchall()
        return {r[0]: r[1] for r in rows}

    def last_steps(self, run_id: str, rank: int = 0) -> dict[str, int]:
        rows = self.conn.execute("SELECT name, MAX(step) FROM metrics WHERE run_id=? AND rank=? "
                                 "GROUP BY name", (run_id, rank)).fetchall()
        return {r[0]: r[1] for r in rows}

    def run_ranks(self, run_id: str) -> list[int]:
        """The ranks that logged metrics, table rows or images, in order (the metrics' by
        hopping through their index: one seek per rank)."""
        found = self.conn.execute(
            "WITH RECURSIVE r(rank) AS (SELECT MIN(rank) FROM metrics WHERE run_id = ?1 "
            "UNION ALL SELECT (SELECT MIN(rank) FROM metrics WHERE run_id = ?1 AND rank > r.rank)"
            " FROM r WHERE r.rank IS NOT NULL) SELECT rank FROM r WHERE rank IS NOT NULL "
            "UNION SELECT DISTINCT rank FROM table_rows WHERE run_id = ?1 "
            "UNION SELECT DISTINCT rank FROM images WHERE run_id = ?1", (run_id,)).fetchall()
        return sorted(r[0] for r in found)


def _rank0_stretches(data: list[tuple]) -> list[tuple[int, list[tuple]]]:
    """(index of the first, rows) of each stretch of consecutive rank-0 rows in ``data``."""
    out: list = []
    start = None
    for i, row in enumerate(data):
        if row[5] == 0:
            if start is None:
                start = i
        elif start is not None:
            out.append((start, data[start:i]))
            start = None
    if start is not None:
        out.append((start, data[start:]))
    return out


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
