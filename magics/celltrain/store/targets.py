"""Compute targets saved by name in the workspace: a kind and its settings (a Ray address...)."""
from __future__ import annotations

import json
import time
from typing import Any


class TargetTables:
    """Rows of ``targets``; what a kind's settings mean is the target's business."""

    def save_target(self, name: str, kind: str, settings: dict[str, Any]) -> None:
        with self.write() as conn:
            conn.execute("INSERT INTO targets (name, kind, settings, created) VALUES (?, ?, ?, ?) "
                         "ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, "
                         "settings = excluded.settings",
                         (name, kind, json.dumps(settings), time.time()))

    def saved_target(self, name: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT name, kind, settings, created FROM targets WHERE name=?",
                                (name,)).fetchone()
        return _decode(row) if row else None

    def saved_targets(self) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT name, kind, settings, created FROM targets "
                                 "ORDER BY name").fetchall()
        return [_decode(r) for r in rows]

    def remove_target(self, name: str) -> bool:
        with self.write() as conn:
            return conn.execute("DELETE FROM targets WHERE name=?", (name,)).rowcount > 0


def _decode(row) -> dict[str, Any]:
    out = dict(row)
    out["settings"] = json.loads(out["settings"])
    return out
