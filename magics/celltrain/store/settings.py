"""What a person chose for the views of a workspace, kept in the store (the source of truth the
sidebar, ``celltrain runs`` and ``%train list`` all read): the metric columns of the run list.

Kept in the ``meta`` table under ``view.<name>`` as JSON, so no migration is needed.
"""
from __future__ import annotations

import json
from typing import Any

MAX_COLUMNS = 8
MAX_NAME = 200


def check_columns(columns: Any) -> list[str]:
    """``columns`` as a list of metric names, or ValueError naming what is wrong."""
    if isinstance(columns, str):
        columns = [c.strip() for c in columns.split(",") if c.strip()]
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise ValueError(f"metric columns are a list of metric names, not {columns!r}")
    columns = [c.strip() for c in columns]
    bad = [c for c in columns if not c or len(c) > MAX_NAME]
    if bad:
        raise ValueError(f"metric column {bad[0]!r} is not a metric name (1 to {MAX_NAME} "
                         f"characters)")
    if len(columns) > MAX_COLUMNS:
        raise ValueError(f"{len(columns)} metric columns ({', '.join(columns)}): at most "
                         f"{MAX_COLUMNS}")
    return list(dict.fromkeys(columns))


class ViewSettings:
    """The store's view settings (a part of ``Store``)."""

    def run_columns(self) -> list[str]:
        """The metric columns chosen for run lists; [] when none were chosen."""
        row = self.conn.execute("SELECT value FROM meta WHERE key='view.run_columns'").fetchone()
        try:
            return check_columns(json.loads(row[0])) if row else []
        except ValueError:      # written by hand or by something else: as if never chosen
            return []

    def set_run_columns(self, columns: Any) -> list[str]:
        """Choose the run lists' metric columns ([] for the default); returns them checked."""
        columns = check_columns(columns)
        with self.write() as conn:
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('view.run_columns', ?)",
                         (json.dumps(columns),))
        return columns
