"""Host side of the metric API: ingest a run's events file into the workspace store.

The run writes length-prefixed frames (see ``context.encode_frame``); ingestion reads from the
offset stored with the run, inserts every complete frame in one transaction together with the new
offset, and so is safe to repeat: a supervisor that dies mid-way and a reconciling process that
picks up after it never insert a point twice.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .context import EVENTS_FILE, decode_frames
from .store import Store

TELEMETRY_DIR = "telemetry"


def events_path(store: Store, run_id: str) -> Path:
    return store.run_dir(run_id) / TELEMETRY_DIR / EVENTS_FILE


def ingest(store: Store, run_id: str, last_steps: dict[str, int] | None = None) -> int:
    """Move new events of ``run_id`` into SQLite; returns the number of metric points added.

    ``last_steps`` caches each metric's last step between calls (for points logged without one).
    """
    path = events_path(store, run_id)
    run = store.get_run(run_id)
    offset = run["events_offset"]
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return 0
    if size <= offset:
        return 0
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(size - offset)
    records, used = decode_frames(data)
    if not records:
        return 0
    if last_steps is None:
        last_steps = store.last_steps(run_id)
    points, rows, images, progress = [], [], [], None
    for kind, payload in records:
        if kind == "m":
            for name, step, value, t in payload:
                if step is None:
                    step = last_steps.get(name, -1) + 1
                last_steps[name] = step
                points.append((name, step, value, t))
        elif kind == "row":
            rows.append(payload)
        elif kind == "img":
            name, path_in_run, step, t = payload
            images.append((name, f"{TELEMETRY_DIR}/{path_in_run}", step, t))
        elif kind == "progress":
            progress = payload
    with store.write() as conn:
        current = conn.execute("SELECT events_offset FROM runs WHERE id=?",
                               (run_id,)).fetchone()[0]
        if current != offset:        # somebody else ingested this stretch meanwhile
            return 0
        store.add_metrics(run_id, points, conn=conn)
        store.add_table_rows(run_id, rows, conn)
        store.add_images(run_id, images, conn)
        if progress is not None:
            conn.execute("UPDATE runs SET progress=? WHERE id=?", (json.dumps(progress), run_id))
        conn.execute("UPDATE runs SET events_offset=? WHERE id=?", (offset + used, run_id))
    return len(points)
