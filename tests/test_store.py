"""The workspace store: schema, migrations, and many writers at once."""
from __future__ import annotations

import math
import multiprocessing
import sqlite3

import pytest

from celltrain import states
from celltrain.store import Store
from celltrain.store.schema import METRIC_BLOCK_BITS, MIGRATIONS, SCHEMA_VERSION
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


# -- metric blocks: the min/max rollups a chart of a long series reads -------------------------
def _blocks_from_points(conn) -> dict:
    """What metric_blocks must hold, computed in Python from every stored point: per run, name
    and 256 ids, the count, the first point's step, min and max (NULL values left out)."""
    expected: dict = {}
    for id_, run_id, name, step, value in conn.execute(
            "SELECT id, run_id, name, step, value FROM metrics ORDER BY id"):
        key = (run_id, name, id_ >> METRIC_BLOCK_BITS)
        n, first, lo, hi = expected.get(key, (0, step, None, None))
        if value is not None:
            lo = value if lo is None else min(lo, value)
            hi = value if hi is None else max(hi, value)
        expected[key] = (n + 1, first, lo, hi)
    return expected


def _stored_blocks(conn) -> dict:
    return {(r[0], r[1], r[2]): tuple(r[3:]) for r in conn.execute(
        "SELECT run_id, name, block, n, first_step, min_value, max_value FROM metric_blocks")}


def test_metric_blocks_agree_with_the_points_after_many_batches(tmp_path):
    """Batches of every size (one point, a block's worth, more than one insert chunk), two runs
    and interleaved series, None, NaN and infinities: the blocks always match the points."""
    store = Store(tmp_path)
    a, b = (store.create_run("blocks", run_id_for=new_run_id, status=states.RUNNING)["id"]
            for _ in range(2))
    step = 0

    def value(i):
        return (None if i % 97 == 0 else math.nan if i % 89 == 0 else math.inf if i == 500
                else -math.inf if i == 501 else math.sin(i))

    for size in (1, 255, 1, 300, 1000, 70_000, 3):
        store.add_metrics(a, [("loss", step + i, value(step + i), 0.0) for i in range(size)])
        store.add_metrics(b, [(("acc", "lr")[i % 2], step + i, value(i), 0.0)
                              for i in range(size // 3 + 1)])
        store.add_metrics(a, [("nan-only", step, math.nan, 0.0), ("acc", step, 0.5, 0.0)])
        step += size
        assert _stored_blocks(store.conn) == _blocks_from_points(store.conn)
    blocks = _stored_blocks(store.conn)
    assert sum(v[0] for v in blocks.values()) == store.conn.execute(
        "SELECT COUNT(*) FROM metrics").fetchone()[0]
    assert blocks[(a, "nan-only", max(k[2] for k in blocks if k[1] == "nan-only"))][2:] == \
        (None, None)
    store.add_metrics(a, [])                             # nothing to add: nothing changes
    assert _stored_blocks(store.conn) == blocks


def test_a_failed_metric_write_leaves_no_blocks_behind(tmp_path):
    store = Store(tmp_path)
    run = store.create_run("blocks", run_id_for=new_run_id, status=states.RUNNING)["id"]
    store.add_metrics(run, [("loss", 0, 1.0, 0.0)])
    with pytest.raises(sqlite3.IntegrityError):          # a step of None is refused ...
        store.add_metrics(run, [("loss", 1, 0.5, 0.0), ("loss", None, 0.2, 0.0)])
    assert _stored_blocks(store.conn) == _blocks_from_points(store.conn) == {
        (run, "loss", 0): (1, 0, 1.0, 1.0)}             # ... and the whole batch with it


def test_a_v2_workspace_gets_blocks_for_its_points(tmp_path):
    db = sqlite3.connect(tmp_path / "celltrain.db")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    db.executescript(MIGRATIONS[0] + ";" + MIGRATIONS[1])
    db.execute("INSERT INTO meta VALUES ('schema_version', '2')")
    db.execute("INSERT INTO experiments (name, created) VALUES ('old', 0)")
    for run in ("old-1", "old-2"):
        db.execute("INSERT INTO runs (id, experiment_id, number, status, created) "
                   "VALUES (?, 1, ?, 'Completed', 0)", (run, int(run[-1])))
    db.executemany("INSERT INTO metrics (run_id, name, step, value, time) VALUES (?, ?, ?, ?, 0)",
                   [(f"old-{1 + i % 2}", ("loss", "acc", "lr")[i % 3], 1000 - i,
                     None if i % 50 == 0 else math.cos(i)) for i in range(3000)])
    db.commit()
    db.close()
    store = Store(tmp_path)
    assert store.schema_version() == SCHEMA_VERSION
    assert len(_stored_blocks(store.conn)) > 6
    assert _stored_blocks(store.conn) == _blocks_from_points(store.conn)
    store.add_metrics("old-1", [("loss", 5000 + i, float(i), 0.0) for i in range(400)])
    assert _stored_blocks(store.conn) == _blocks_from_points(store.conn)


def test_warnings_are_counted_by_kind_and_keep_the_latest_message(tmp_path):
    store = Store(tmp_path)
    run = store.create_run("e", run_id_for=lambda e, n: f"r{n}", status="Running")
    store.add_warning(run["id"], "bad-value", "log('acc'): a list is not a number")
    store.add_warning(run["id"], "bad-value", "log('n'): 10**30 is out of range", count=2)
    store.add_warning(run["id"], "skipped-bytes", "skipped 4096 bytes")
    rows = store.warnings(run["id"])
    assert [(w["kind"], w["count"]) for w in rows] == [("bad-value", 3), ("skipped-bytes", 1)]
    assert rows[0]["message"] == "log('n'): 10**30 is out of range"
    assert store.warnings("nobody") == []
