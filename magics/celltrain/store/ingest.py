"""Where ingestion stands in each events file of a run: the ``ingest_offsets`` table."""
from __future__ import annotations

import sqlite3


class IngestOffsets:
    """The byte offset up to which each events file of a run is in the store (a part of
    ``Store``).  Ingestion reads it, then sets it in the transaction that adds the points."""

    def ingest_offsets(self, run_id: str) -> dict[str, int]:
        rows = self.conn.execute("SELECT file, offset FROM ingest_offsets WHERE run_id=?",
                                 (run_id,)).fetchall()
        return {r[0]: r[1] for r in rows}

    def ingest_offset(self, run_id: str, file: str,
                      conn: sqlite3.Connection | None = None) -> int:
        """0 for a file not ingested yet."""
        row = (conn or self.conn).execute(
            "SELECT offset FROM ingest_offsets WHERE run_id=? AND file=?",
            (run_id, file)).fetchone()
        return row[0] if row else 0

    def set_ingest_offset(self, run_id: str, file: str, offset: int,
                          conn: sqlite3.Connection | None = None) -> None:
        if conn is None:
            with self.write() as c:
                return self.set_ingest_offset(run_id, file, offset, conn=c)
        conn.execute("INSERT INTO ingest_offsets (run_id, file, offset) VALUES (?, ?, ?) "
                     "ON CONFLICT (run_id, file) DO UPDATE SET offset = excluded.offset",
                     (run_id, file, offset))
