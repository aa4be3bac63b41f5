"""System metrics: a run's CPU, memory and GPU use over time, sampled by its supervisor
(``celltrain.sysmetrics``), in the ``system_metrics`` table.

Names carry the ``sys/`` namespace (``sys/cpu_percent``, ``sys/mem_bytes``, ``sys/gpu0_util``);
the table is apart from ``metrics``, so these never show among the user's metrics (summaries,
sweeps' objectives, ``%train list``).  Points are (time, value), time in seconds since the epoch;
reads give seconds since the run started.
"""
from __future__ import annotations

from typing import Any

PREFIX = "sys/"


class SystemTables:
    """The store's system metrics (a part of ``Store``)."""

    def add_system_sample(self, run_id: str, time: float, values: dict[str, float]) -> None:
        """One sample: each name (``sys/...``) with its value at ``time``."""
        bad = [n for n in values if not n.startswith(PREFIX)]
        if bad:
            raise ValueError(f"system metric names start with {PREFIX!r}, not {bad[0]!r}")
        if not values:
            return
        with self.write() as c:
            c.executemany("INSERT INTO system_metrics (run_id, name, time, value) "
                          "VALUES (?, ?, ?, ?)",
                          [(run_id, name, time, value) for name, value in values.items()])

    def system_names(self, run_id: str) -> list[str]:
        rows = self.conn.execute("SELECT DISTINCT name FROM system_metrics WHERE run_id=? "
                                 "ORDER BY name", (run_id,)).fetchall()
        return [r[0] for r in rows]

    def latest_system(self, run_id: str) -> dict[str, float]:
        """The last sampled value of each system metric."""
        rows = self.conn.execute(
            "SELECT name, value FROM system_metrics AS s WHERE run_id=?1 AND time = "
            "(SELECT MAX(time) FROM system_metrics WHERE run_id=?1 AND name=s.name)",
            (run_id,)).fetchall()
        return {r[0]: r[1] for r in rows}

    def system_series(self, run_id: str, since: float | None = None,
                      max_points: int = 500) -> dict[str, dict[str, Any]]:
        """Each system metric as {"t": seconds since ``since`` (the run's start, else the first
        sample), "v": values}; a long run's samples averaged over equal stretches of time so
        that each series has at most ``max_points`` points."""
        if max_points < 2:
            raise ValueError(f"max_points must be 2 or more, not {max_points!r}")
        first, last, count = self.conn.execute(
            "SELECT MIN(time), MAX(time), COUNT(*) FROM system_metrics WHERE run_id=?",
            (run_id,)).fetchone()
        if not count:
            return {}
        origin = first if since is None else since
        width = (last - first) / (max_points - 1) if last > first else 1.0
        rows = self.conn.execute(
            "SELECT name, AVG(time), AVG(value) FROM system_metrics WHERE run_id=? "
            "GROUP BY name, CAST((time - ?) / ? AS INTEGER) ORDER BY name, MIN(time)",
            (run_id, first, width)).fetchall()
        out: dict[str, dict[str, Any]] = {}
        for name, t, v in rows:
            series = out.setdefault(name, {"t": [], "v": []})
            series["t"].append(round(t - origin, 3))
            series["v"].append(v)
        return out
