"""The workspace database's schema: its version and the migrations that bring any workspace on
disk forward to it."""
from __future__ import annotations

SCHEMA_VERSION = 7

# Each entry upgrades the schema from version i to i + 1.  Never edit an entry once released:
# append a new one instead, so every workspace on disk can be brought forward.
MIGRATIONS: list[str] = [
    # 0 -> 1: experiments, runs, status history, metrics, tables, images
    """
    CREATE TABLE experiments (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created REAL NOT NULL
    );
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        experiment_id INTEGER NOT NULL REFERENCES experiments(id),
        number INTEGER NOT NULL,
        status TEXT NOT NULL,
        target TEXT NOT NULL DEFAULT 'docker',
        created REAL NOT NULL,
        started REAL,
        ended REAL,
        script TEXT,
        args TEXT NOT NULL DEFAULT '[]',
        params TEXT NOT NULL DEFAULT '{}',
        tags TEXT NOT NULL DEFAULT '{}',
        environment TEXT NOT NULL DEFAULT '{}',
        options TEXT NOT NULL DEFAULT '{}',
        image TEXT,
        image_digest TEXT,
        container_id TEXT,
        exit_code INTEGER,
        reason TEXT,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        events_offset INTEGER NOT NULL DEFAULT 0,
        progress TEXT,
        UNIQUE (experiment_id, number)
    );
    CREATE INDEX runs_by_status ON runs(status);
    CREATE INDEX runs_by_created ON runs(created);
    CREATE TABLE status_history (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        status TEXT NOT NULL,
        time REAL NOT NULL,
        detail TEXT
    );
    CREATE INDEX status_history_by_run ON status_history(run_id);
    CREATE TABLE metrics (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        step INTEGER NOT NULL,
        value REAL,
        time REAL NOT NULL
    );
    CREATE INDEX metrics_by_run_name ON metrics(run_id, name, id);
    CREATE TABLE table_rows (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        row TEXT NOT NULL,
        time REAL NOT NULL
    );
    CREATE INDEX table_rows_by_run ON table_rows(run_id, name);
    CREATE TABLE images (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        path TEXT NOT NULL,
        step INTEGER,
        time REAL NOT NULL
    );
    """,
    # 1 -> 2: the model registry
    """
    CREATE TABLE models (
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        run_id TEXT REFERENCES runs(id),
        created REAL NOT NULL,
        path TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        description TEXT,
        tags TEXT NOT NULL DEFAULT '{}',
        metrics TEXT NOT NULL DEFAULT '{}',
        environment TEXT NOT NULL DEFAULT '{}',
        image_digest TEXT,
        archived INTEGER NOT NULL DEFAULT 0,
        artifacts TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (name, version)
    );
    CREATE TABLE model_aliases (
        name TEXT NOT NULL,
        alias TEXT NOT NULL,
        version INTEGER NOT NULL,
        PRIMARY KEY (name, alias),
        FOREIGN KEY (name, version) REFERENCES models(name, version)
    );
    """,
    # 2 -> 3: min/max rollups of each series per block of 256 consecutive metric ids, kept by
    # add_metrics in the same transaction as the points, so a chart of a long series reads the
    # blocks instead of every point; existing points get their blocks here
    """
    CREATE TABLE metric_blocks (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        block INTEGER NOT NULL,
        n INTEGER NOT NULL,
        first_step INTEGER NOT NULL,
        min_value REAL,
        max_value REAL,
        PRIMARY KEY (run_id, name, block)
    ) WITHOUT ROWID;
    INSERT INTO metric_blocks (run_id, name, block, n, first_step, min_value, max_value)
    SELECT g.run_id, g.name, g.block, g.n, m.step, g.lo, g.hi
    FROM (SELECT run_id, name, id >> 8 AS block, COUNT(*) AS n, MIN(id) AS first_id,
                 MIN(value) AS lo, MAX(value) AS hi
          FROM metrics GROUP BY run_id, name, id >> 8) AS g
    JOIN metrics AS m ON m.id = g.first_id
    """,
    # 3 -> 4: warnings on a run (what the host could not ingest or copy back, counted by kind),
    # so a run that went on despite them says so in show, the widget and the sidebar
    """
    CREATE TABLE run_warnings (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        count INTEGER NOT NULL,
        message TEXT NOT NULL,
        first_time REAL NOT NULL,
        last_time REAL NOT NULL,
        PRIMARY KEY (run_id, kind)
    ) WITHOUT ROWID
    """,
    # 4 -> 5: the typed run spec and the target's handle as JSON, run kinds ("run", "sweep",
    # "trial", "deployment") with parent runs for sweeps, and compute targets saved by name
    """
    ALTER TABLE runs ADD COLUMN kind TEXT NOT NULL DEFAULT 'run';
    ALTER TABLE runs ADD COLUMN parent_id TEXT REFERENCES runs(id);
    ALTER TABLE runs ADD COLUMN spec TEXT;
    ALTER TABLE runs ADD COLUMN handle TEXT;
    CREATE INDEX runs_by_parent ON runs(parent_id);
    CREATE TABLE targets (
        name TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        settings TEXT NOT NULL DEFAULT '{}',
        created REAL NOT NULL
    )
    """,
    # 5 -> 6: ranks (each process of a distributed run logs its own points, rows and images;
    # existing ones are rank 0's) and the ingest offset of each events file of a run (rank r
    # writes telemetry/events-<r>.bin), seeded from runs.events_offset for events.bin.  The
    # points' index leads with the rank: the reads views make are rank 0's.
    """
    ALTER TABLE metrics ADD COLUMN rank INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE table_rows ADD COLUMN rank INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE images ADD COLUMN rank INTEGER NOT NULL DEFAULT 0;
    DROP INDEX metrics_by_run_name;
    CREATE INDEX metrics_by_run_rank_name ON metrics(run_id, rank, name, id);
    DROP INDEX table_rows_by_run;
    CREATE INDEX table_rows_by_run_rank ON table_rows(run_id, rank, name);
    CREATE TABLE ingest_offsets (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        file TEXT NOT NULL,
        offset INTEGER NOT NULL,
        PRIMARY KEY (run_id, file)
    ) WITHOUT ROWID;
    INSERT INTO ingest_offsets (run_id, file, offset)
    SELECT id, 'events.bin', events_offset FROM runs WHERE events_offset > 0
    """,
    # 6 -> 7: system metrics (CPU, memory, GPU of a run, sampled by its supervisor), a table of
    # their own so they never mix with the user's metrics in summaries, sweeps or lists
    """
    CREATE TABLE system_metrics (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        time REAL NOT NULL,
        value REAL
    );
    CREATE INDEX system_metrics_by_run_name ON system_metrics(run_id, name, time)
    """,
]
assert len(MIGRATIONS) == SCHEMA_VERSION

# metric_blocks: block k of a series holds the count, first step, min and max of its points with
# ids k << 8 .. (k << 8) + 255 (NaN and None are stored as NULL and left out of min and max);
# rank 0's points only (schema 6): the charts show rank 0.
# Migration 3 fixes the 8; it cannot change without a new migration rebuilding the blocks.
METRIC_BLOCK_BITS = 8
