"""The run panel's System section: ``GET runs/<id>/system`` (CPU, memory, GPU series)."""
from __future__ import annotations

from typing import Any

from .manager import BadRequest

MAX_SYSTEM_POINTS = 10_000


def system_series(manager, run_id: str, max_points: int = 500) -> dict[str, Any]:
    """Each ``sys/`` series of the run as {"t": seconds since it started, "v": values}, at
    most ``max_points`` points each, and the memory limit's size where the run has one."""
    record = manager.run_record(run_id)
    if not 2 <= max_points <= MAX_SYSTEM_POINTS:
        raise BadRequest(f"max_points must be between 2 and {MAX_SYSTEM_POINTS}, "
                         f"not {max_points!r}")
    store = manager.store
    series = store.system_series(run_id, since=record["started"], max_points=max_points)
    return {"id": run_id, "max_points": max_points, "series": series,
            "latest": store.latest_system(run_id)}
