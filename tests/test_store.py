"""The workspace store: schema, migrations, and many writers at once."""
from __future__ import annotations

import multiprocessing
import sqlite3

import pytest

from celltrain import states
from celltrain.store import MIGRATIONS, SCHEMA_VERSION, Store
from celltrain.workspace import new_run_id


def test_new_store_is_wal_and_current(tmp_path):
    store = Store(tmp_path)
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.schema_version() == SCHEMA_VERSION


def test_old_workspace_is_migrated_and_keeps_its_runs(tmp_path):
    db = sqlite3.connect(tmp_path / "celltrain.db")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    db.executescript(MIGRATIONS[0])
    db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    db.execute("INSERT INTO experiments (name, created) VALUES ('old', 0)")
    db.execute("INSERT INTO runs (id, experiment_id, number, status, created) "
               "VALUES ('old-1', 1, 1, 'Completed', 0)")
    db.commit()
    db.close()
    store = Store(tmp_path)
    assert store.schema_version() == SCHEMA_VERSION
    assert store.get_run("old-1")["status"] == "Completed"
    store.conn.execute("SELECT * FROM models").fetchall()  # the newer tables exist


def test_newer_workspace_is_refused_with_the_fix(tmp_path):
    Store(tmp_path).conn.execute("UPDATE meta SET value='999' WHERE key='schema_version'")
    with pytest.raises(RuntimeError, match="upgrade celltrain"):
        Store(tmp_path)


def _writer(root: str, worker: int, count: int) -> None:
    store = Store(root)
    for i in range(count):
        run = store.create_run("shared", run_id_for=new_run_id, status=states.QUEUED,
                               params={"worker": worker, "i": i})
        store.add_metrics(run["id"], [("loss", s, 1.0 / (s + 1), 0.0) for s in range(20)])
        store.set_status(run["id"], states.RUNNING)


def test_concurrent_writers_lose_nothing(tmp_path):
    """Four processes writing at once: every run, number and point arrives; no 'locked' error."""
    Store(tmp_path)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    store = Store(tmp_path)
    runs = store.list_runs(experiment="shared")
    assert len(runs) == 160
    assert sorted(r["number"] for r in runs) == list(range(1, 161))
    assert all(r["status"] == states.RUNNING for r in runs)
    total = store.conn.execute("SELECT COUNT(*) FROM metrics").fetchone()[0]
    assert total == 160 * 20


def test_list_runs_filters_sorts_and_pages(tmp_path):
    store = Store(tmp_path)
    for exp in ("a", "b"):
        for _ in range(3):
            store.create_run(exp, run_id_for=new_run_id, status=states.QUEUED)
    assert store.count_runs(experiment="a") == 3
    page = store.list_runs(order_by="number", descending=False, limit=2, offset=2)
    assert [r["number"] for r in page] == [2, 2]
    with pytest.raises(ValueError, match="cannot sort runs by 'bogus'"):
        store.list_runs(order_by="bogus")
