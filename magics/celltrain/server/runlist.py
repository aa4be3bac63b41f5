"""The run list's metrics and the views' settings: what ``GET runs?metrics=1`` adds to a page
and what ``GET/PUT settings`` read and write.

Each run of the page gets ``metric`` (its primary metric: a sweep's objective for the sweep and
its trials, else the metric logged last; name and latest value, what a row shows by default)
and ``metrics`` (the latest value of each chosen column); the page gets ``columns`` (the
columns used: the request's, else the workspace's choice) and
``metric_names`` (every metric the page's runs logged, for a column picker).  One statement,
all index seeks: two per metric of each run on the page.
"""
from __future__ import annotations

import json
import math
from typing import Any

from ..store.settings import check_columns
from .manager import BadRequest, Conflict


# Every metric of each run on the page (rank 0's) with its newest point's id and value, in one
# statement: the names by hopping through the (run_id, rank, name, id) index, one seek per name,
# then one seek for each name's newest point.
_LAST_POINTS = """
WITH RECURSIVE ids(run_id) AS (SELECT value FROM json_each(?)),
n(run_id, name) AS (
    SELECT run_id, (SELECT MIN(name) FROM metrics m WHERE m.run_id = ids.run_id AND m.rank = 0)
    FROM ids
    UNION ALL
    SELECT run_id, (SELECT MIN(name) FROM metrics m WHERE m.run_id = n.run_id AND m.rank = 0
                    AND m.name > n.name)
    FROM n WHERE n.name IS NOT NULL)
SELECT n.run_id, n.name, p.id, p.value FROM n JOIN metrics p ON p.id = (
    SELECT id FROM metrics WHERE run_id = n.run_id AND rank = 0 AND name = n.name
    ORDER BY id DESC LIMIT 1)
WHERE n.name IS NOT NULL"""


def add_metrics(manager, page: dict[str, Any], columns: str | list[str] | None) -> dict[str, Any]:
    """``page`` (a ``list_runs`` answer) with each run's metrics, as the module says;
    ``columns`` (a list, or names joined by commas) overrides the workspace's choice."""
    columns = _columns(columns)
    chosen = manager.store.run_columns() if columns is None and manager.exists else columns
    page["columns"] = chosen = chosen or []
    last: dict[str, dict[str, tuple]] = {}
    if manager.exists and page["runs"]:
        rows = manager.store.conn.execute(
            _LAST_POINTS, (json.dumps([r["id"] for r in page["runs"]]),)).fetchall()
        for run_id, name, point_id, value in rows:
            last.setdefault(run_id, {})[name] = (point_id, _number(value))
    primary = _primary_metrics(manager, page["runs"]) if last else {}
    for run in page["runs"]:
        points = last.get(run["id"], {})
        name = primary.get(run["id"])
        if name not in points:
            name = max(points, key=lambda n: points[n][0], default=None)
        run["metric"] = {"name": name, "value": points[name][1]} if name else None
        run["metrics"] = {c: points[c][1] if c in points else None for c in chosen}
    page["metric_names"] = sorted({name for points in last.values() for name in points})
    return page


def _primary_metrics(manager, runs: list[dict[str, Any]]) -> dict[str, str]:
    """The metric a sweep optimises, by run: its trials' ``metric``, the sweep's own
    ``best_<metric>`` (runs of other kinds have none: they show their last-logged one)."""
    sweeps = {r["id"] if r.get("kind") == "sweep" else r.get("parent_id")
              for r in runs if r.get("kind") in ("sweep", "trial")} - {None}
    if not sweeps:
        return {}
    found = dict(manager.store.conn.execute(
        "SELECT id, json_extract(spec, '$.sweep.metric') FROM runs WHERE id IN "
        "(SELECT value FROM json_each(?))", (json.dumps(sorted(sweeps)),)).fetchall())
    out = {}
    for r in runs:
        if r.get("kind") == "sweep" and found.get(r["id"]):
            out[r["id"]] = f"best_{found[r['id']]}"
        elif r.get("kind") == "trial" and found.get(r.get("parent_id")):
            out[r["id"]] = found[r["parent_id"]]
    return out


def _number(value) -> float | int | None:
    """A value JSON can carry: None for NaN, infinities and anything not a number."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value if math.isfinite(value) else None
    return None


def _columns(raw: str | list[str] | None) -> list[str] | None:
    """The ``columns`` asked for: None when absent (the workspace's choice)."""
    if raw is None:
        return None
    try:
        return check_columns(raw)
    except ValueError as e:
        raise BadRequest(str(e)) from None


def settings(manager) -> dict[str, Any]:
    return {"run_columns": manager.store.run_columns() if manager.exists else []}


def save_settings(manager, body: dict[str, Any]) -> dict[str, Any]:
    """Save what ``body`` holds (``run_columns``); anything else is a 400 naming it."""
    if not isinstance(body, dict):
        raise BadRequest(f"settings take a JSON object like {{\"run_columns\": [\"val_loss\"]}}, "
                         f"not {body!r}")
    unknown = sorted(set(body) - {"run_columns"})
    if unknown:
        raise BadRequest(f"unknown setting {unknown[0]!r}: the settings are run_columns")
    if not manager.exists:
        raise Conflict(f"no workspace at {manager.path} yet: settings are kept in it, and it "
                       f"appears with the first run")
    try:
        manager.store.set_run_columns(body.get("run_columns", []))
    except ValueError as e:
        raise BadRequest(str(e)) from None
    return settings(manager)
