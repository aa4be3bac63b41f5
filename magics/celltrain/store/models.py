"""The model registry's tables: ``models`` (one row per version) and ``model_aliases``.

The registry (``celltrain.registry``) validates, moves the files and decides; every read and
write of these tables is here.  Methods that take ``conn`` run inside the caller's write
transaction (``with store.write() as conn``), so a version's row commits only together with
the caller's folder moves.
"""
from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

NEXT_VERSION_KEY = "model_next_version:"  # meta row: version numbers are never reused


class ModelTables:
    """The store's models and aliases (a part of ``Store``)."""

    # -- reads --------------------------------------------------------------------------------
    def model_version(self, name: str, version: int) -> dict | None:
        """One version's row with its aliases, experiment, run number and image; None if gone."""
        row = self.conn.execute(
            "SELECT m.*, r.experiment_id, e.name AS experiment, r.number AS run_number, "
            "r.image AS image FROM models m LEFT JOIN runs r ON r.id = m.run_id "
            "LEFT JOIN experiments e ON e.id = r.experiment_id WHERE m.name=? AND m.version=?",
            (name, version)).fetchone()
        if row is None:
            return None
        out = dict(row)
        for key in ("tags", "metrics", "environment", "artifacts"):
            out[key] = json.loads(out[key]) if out[key] else {}
        out["archived"] = bool(out["archived"])
        out["aliases"] = self.model_aliases(name, version)
        return out

    def model_aliases(self, name: str,
                      version: int | None = None) -> list[str] | dict[str, int]:
        """The aliases of model ``name`` as {alias: version}, or those of one version (a list)."""
        rows = self.conn.execute("SELECT alias, version FROM model_aliases WHERE name=? "
                                 "ORDER BY alias", (name,)).fetchall()
        if version is None:
            return {r[0]: r[1] for r in rows}
        return [r[0] for r in rows if r[1] == version]

    def model_versions(self, name: str) -> list[tuple[int, bool]]:
        """(version, archived) of every version of model ``name``, oldest first."""
        rows = self.conn.execute("SELECT version, archived FROM models WHERE name=? "
                                 "ORDER BY version", (name,)).fetchall()
        return [(r[0], bool(r[1])) for r in rows]

    def model_names(self) -> list[str]:
        return [r[0] for r in self.conn.execute(
            "SELECT DISTINCT name FROM models ORDER BY name").fetchall()]

    def model_versions_of_run(self, run_id: str) -> list[tuple[str, int]]:
        """(name, version) of the versions registered from one run, oldest first."""
        rows = self.conn.execute("SELECT name, version FROM models WHERE run_id=? "
                                 "ORDER BY created", (run_id,)).fetchall()
        return [(r[0], r[1]) for r in rows]

    def model_exists(self, name: str, version: int,
                     conn: sqlite3.Connection | None = None) -> bool:
        return (conn or self.conn).execute("SELECT 1 FROM models WHERE name=? AND version=?",
                                           (name, version)).fetchone() is not None

    def aliases_pointing_at(self, name: str, version: int,
                            conn: sqlite3.Connection | None = None) -> list[str]:
        return [r[0] for r in (conn or self.conn).execute(
            "SELECT alias FROM model_aliases WHERE name=? AND version=?",
            (name, version)).fetchall()]

    def model_version_rows(self, name: str | None = None) -> list[sqlite3.Row]:
        """Every version's row (of one model, or of all), by name and newest first, with its
        JSON columns as stored (the server's model list)."""
        where, args = ("WHERE name = ? ", (name,)) if name is not None else ("", ())
        return self.conn.execute("SELECT name, version, run_id, created, path, sha256, "
                                 "description, tags, metrics, image_digest, archived, artifacts "
                                 "FROM models " + where + "ORDER BY name, version DESC",
                                 args).fetchall()

    def model_alias_rows(self, name: str | None = None) -> list[sqlite3.Row]:
        """(name, alias, version) of every alias (of one model, or of all), by alias."""
        where, args = ("WHERE name = ? ", (name,)) if name is not None else ("", ())
        return self.conn.execute("SELECT name, alias, version FROM model_aliases " + where
                                 + "ORDER BY alias", args).fetchall()

    # -- writes inside the registry's transaction ---------------------------------------------
    def next_model_version(self, name: str, conn: sqlite3.Connection) -> int:
        """One more than any version this name ever had, deleted ones included."""
        key = NEXT_VERSION_KEY + name
        row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        highest = conn.execute("SELECT COALESCE(MAX(version), 0) FROM models WHERE name=?",
                               (name,)).fetchone()[0]
        version = max(int(row[0]) if row else 1, highest + 1)
        conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, str(version + 1)))
        return version

    def keep_model_counter_past(self, name: str, version: int,
                                conn: sqlite3.Connection) -> None:
        key = NEXT_VERSION_KEY + name
        row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                     (key, str(max(int(row[0]) if row else 1, version + 1))))

    def insert_model_version(self, name: str, version: int, *, run_id: str, path: str,
                             sha256: str, description: str | None, tags: dict, metrics: dict,
                             environment: dict, image_digest: str | None,
                             conn: sqlite3.Connection) -> None:
        """The row of a new version (its files are moved into place by the caller)."""
        conn.execute(
            "INSERT INTO models (name, version, run_id, created, path, sha256, description, "
            "tags, metrics, environment, image_digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, "
            "?, ?)",
            (name, version, run_id, time.time(), path, sha256, description,
             json.dumps(tags), json.dumps(metrics), json.dumps(environment), image_digest))

    def set_model_alias(self, name: str, alias: str, version: int,
                        conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO model_aliases (name, alias, version) VALUES (?, ?, ?) "
                     "ON CONFLICT (name, alias) DO UPDATE SET version=excluded.version",
                     (name, alias, version))

    def add_model_artifact(self, name: str, version: int, fmt: str, info: dict[str, Any],
                           conn: sqlite3.Connection) -> bool:
        """Record ``info`` as the version's artifact of format ``fmt`` (replacing one);
        False when the version no longer exists."""
        row = conn.execute("SELECT artifacts FROM models WHERE name=? AND version=?",
                           (name, version)).fetchone()
        if row is None:
            return False
        artifacts = json.loads(row[0] or "{}")
        artifacts[fmt] = info
        conn.execute("UPDATE models SET artifacts=? WHERE name=? AND version=?",
                     (json.dumps(artifacts), name, version))
        return True

    def delete_model_version(self, name: str, version: int, conn: sqlite3.Connection) -> bool:
        """Delete the version's row and keep the name's counter past it (numbers are never
        given out again); False when there was no such row."""
        if not conn.execute("DELETE FROM models WHERE name=? AND version=?",
                            (name, version)).rowcount:
            return False
        self.keep_model_counter_past(name, version, conn)
        return True

    # -- writes in their own transaction ------------------------------------------------------
    def remove_model_alias(self, name: str, alias: str, version: int) -> bool:
        """Remove ``alias`` if it points at ``version``; False when it does not."""
        with self.write() as conn:
            return bool(conn.execute("DELETE FROM model_aliases WHERE name=? AND alias=? AND "
                                     "version=?", (name, alias, version)).rowcount)

    def set_model_archived(self, name: str, version: int, archived: bool) -> bool:
        """False when the version no longer exists."""
        with self.write() as conn:
            return bool(conn.execute("UPDATE models SET archived=? WHERE name=? AND version=?",
                                     (int(archived), name, version)).rowcount)
