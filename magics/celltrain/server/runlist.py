"""The run list's metrics and the views' settings: what ``GET runs?metrics=1`` adds to a page
and what ``GET/PUT settings`` read and write.

Each run of the page gets ``metric`` (its last-logged metric: name and latest value, what a
row shows by default) and ``metrics`` (the latest value of each chosen column); the page gets
``columns`` (the columns used: the request's, else the workspace's choice) and
``metric_names`` (every metric the page's runs logged, for a column picker).  All reads are
index seeks: a few per metric of each run on the page.
"""
from __future__ import annotations

from typing import Any

from ..store.settings import check_columns
from .manager import BadRequest, Conflict


def add_metrics(manager, page: dict[str, Any], columns: str | list[str] | None) -> dict[str, Any]:
    """``page`` (a ``list_runs`` answer) with each run's metrics, as the module says;
    ``columns`` (a list, or names joined by commas) overrides the workspace's choice."""
    columns = _columns(columns)
    chosen = manager.store.run_columns() if columns is None and manager.exists else columns
    page["columns"] = chosen or []
    names_seen: dict[str, None] = {}
    series = manager.metric_series if manager.exists else None
    for run in page["runs"]:
        names = series.metric_names(run["id"]) if series else []
        names_seen.update(dict.fromkeys(names))
        run["metric"] = _last_logged(manager.store, run["id"], names) if names else None
        wanted = [c for c in page["columns"] if c in names]
        latest = series.latest_metrics(run["id"], wanted) if wanted else {}
        run["metrics"] = {c: latest.get(c) for c in page["columns"]}
    page["metric_names"] = sorted(names_seen)
    return page


def _last_logged(store, run_id: str, names: list[str]) -> dict[str, Any] | None:
    """The metric whose newest point came last (rank 0's), with that point's value."""
    best = None
    for name in names:
        row = store.conn.execute("SELECT id, value FROM metrics WHERE run_id=? AND rank=0 AND "
                                 "name=? ORDER BY id DESC LIMIT 1", (run_id, name)).fetchone()
        if row is not None and (best is None or row[0] > best[0]):
            best = (row[0], name, row[1])
    if best is None:
        return None
    value = best[2]
    number = isinstance(value, (int, float)) and not isinstance(value, bool) \
        and value == value and abs(value) != float("inf")
    return {"name": best[1], "value": value if number else None}


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
