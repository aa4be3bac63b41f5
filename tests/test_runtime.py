"""The in-container runtime (celltrain.runtime): its wire contract with the host, ranks (one
events file per process, points stored with their rank, rank 0 shown), and schema 6."""
from __future__ import annotations

import ast
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from celltrain import states, telemetry
from celltrain.runtime import context, wire
from celltrain.runtime.wire import EVENTS_FILE, encode_frame
from celltrain.server.manager import CelltrainManager
from celltrain.store import Store
from celltrain.store.schema import MIGRATIONS, SCHEMA_VERSION
from celltrain.store.series import MetricSeries
from celltrain.views.widget import RunWidget
from celltrain.workspace import new_run_id

PACKAGE = Path(__file__).resolve().parent.parent / "magics" / "celltrain"
WIRE = PACKAGE / "runtime" / "wire.py"
# Settings of the host (the notebook, the supervisor, the CLI, the demo data), never read by a
# run's process on celltrain's behalf: they are spelled where they are used.
HOST_SETTINGS = {"CELLTRAIN_WORKSPACE", "CELLTRAIN_SPARE", "CELLTRAIN_SPARE_IDLE",
                 "CELLTRAIN_SPARE_CONNECT",     # the spare: connect to saved clusters ahead of a run
                 "CELLTRAIN_ENGINE_WAIT", "CELLTRAIN_WARM", "CELLTRAIN_WARM_IDLE",
                 "CELLTRAIN_VERBOSE", "CELLTRAIN_DATA",
                 "CELLTRAIN_AZUREML_COMPUTE",   # the v1 layer: what new compute maps to
                 "CELLTRAIN_RAY_DIR",           # a Ray node: where its agents keep runs' files
                 "CELLTRAIN_SYS_INTERVAL"}      # the supervisor: seconds between system samples
WIRE_FILES = {"events.bin", "failure.txt", "cell-results.pkl"}


def _strings(path: Path):
    """(line, text) of every string literal that is not a docstring (f-string parts too)."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {id(node.value) for node in ast.walk(tree)
                  if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                and id(node) not in docstrings):
            yield node.lineno, node.value


# -- the wire contract -----------------------------------------------------------------------------
def test_the_wire_is_the_only_place_the_run_environment_and_telemetry_files_are_spelled():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == WIRE:
            continue
        for line, text in _strings(path):
            names = set(re.findall(r"CELLTRAIN_[A-Z0-9_]+", text)) - HOST_SETTINGS
            if names or text in WIRE_FILES:
                found.append(f"{path.relative_to(PACKAGE)}:{line}: {text[:60]!r}")
    assert not found, "spelled outside runtime/wire.py:\n" + "\n".join(found)
    spelled = {text for _, text in _strings(WIRE)}
    assert {wire.RUN_ID_ENV, wire.EXPERIMENT_ENV, wire.PARAMS_ENV, wire.TELEMETRY_ENV,
            wire.EXIT_FILE_ENV} <= spelled and not spelled & HOST_SETTINGS


def test_the_runtime_imports_with_the_standard_library_alone(tmp_path):
    """`from celltrain import Run, log, progress, get_context` in a bare Python: no site
    packages, only the package's folder on the path, and nothing outside the stdlib loaded."""
    code = (f"import sys; sys.path.insert(0, {str(PACKAGE.parent)!r})\n"
            "from celltrain import Run, log, progress, get_context\n"
            "import celltrain.runtime.wire, celltrain.runtime.cellrunner\n"
            "log('x', 1.0); assert get_context().offline and Run.get_context().offline\n"
            "std = set(sys.stdlib_module_names) | {'celltrain', '__main__'}\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} - std))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELLTRAIN", "PYTHON"))}
    out = subprocess.run([sys.executable, "-S", "-E", "-c", code], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_ranks_from_the_launchers_and_their_events_files():
    assert wire.rank_from({}) == 0
    assert wire.rank_from({"RANK": "3"}) == 3
    assert wire.rank_from({"OMPI_COMM_WORLD_RANK": "2"}) == 2
    assert wire.rank_from({"RANK": "1", "OMPI_COMM_WORLD_RANK": "5"}) == 1
    assert wire.rank_from({"RANK": "one"}) == wire.rank_from({"RANK": "-1"}) == 0
    assert [wire.events_file(r) for r in (0, 1, 12)] == ["events.bin", "events-1.bin",
                                                           "events-12.bin"]
    for rank in (0, 1, 12, 999):
        assert wire.events_rank(wire.events_file(rank)) == rank
    for name in ("events-0.bin", "events-01.bin", "events-x.bin", "events.bin.tmp", "x.bin"):
        assert wire.events_rank(name) is None


def test_a_process_with_a_rank_writes_its_own_events_file(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "2")
    run = context.Run(str(tmp_path))
    assert run.rank == 2
    run.log("loss", 1.5)
    run._close()
    assert sorted(os.listdir(tmp_path)) == ["events-2.bin"]
    bodies, _, _ = wire.decode_frames((tmp_path / "events-2.bin").read_bytes(), final=True)
    kind, (names, _, _, values, _) = wire.decode_body(bodies[0])
    assert (kind, names, list(values)) == ("m", ["loss"], [1.5])


# -- ingestion of every rank's file ---------------------------------------------------------------
def _points(name, values, step=None):
    return encode_frame("m", [(name, step, float(v), 1.0) for v in values])


def _store_with_run(tmp_path):
    store = Store(tmp_path / "ws")
    run_id = store.create_run("e", run_id_for=new_run_id, status=states.RUNNING,
                              target="local")["id"]
    (store.run_dir(run_id) / "telemetry").mkdir(parents=True)
    return store, run_id


def test_each_events_file_is_ingested_from_its_own_offset_under_its_rank(tmp_path):
    store, run_id = _store_with_run(tmp_path)
    folder = store.run_dir(run_id) / "telemetry"
    (folder / "events.bin").write_bytes(_points("a", range(5)))
    (folder / "events-1.bin").write_bytes(_points("a", [10, 11]) + b"garbage" * 3
                                          + encode_frame("row", ["t", {"r": 1}, 1.0]))
    (folder / "events-x.bin").write_bytes(_points("a", [99]))        # not an events file
    assert telemetry.ingest(store, run_id) == 7
    assert [s[2:4] for s in store.metric_series(run_id)] == [(i, float(i)) for i in range(5)]
    assert [s[2:4] for s in store.metric_series(run_id, rank=1)] == [(0, 10.0), (1, 11.0)]
    assert store.table(run_id, "t") == [] and store.table(run_id, "t", rank=1) == [{"r": 1}]
    assert store.run_ranks(run_id) == [0, 1]
    offsets = store.ingest_offsets(run_id)
    assert offsets == {name: (folder / name).stat().st_size
                       for name in ("events.bin", "events-1.bin")}
    [warning] = store.warnings(run_id)
    assert warning["kind"] == "skipped-bytes" and "events-1.bin" in warning["message"]
    assert telemetry.ingest(store, run_id) == 0                      # idempotent
    with open(folder / "events-1.bin", "ab") as f:                  # steps count on per rank
        f.write(_points("a", [12]))
    (folder / "events-3.bin").write_bytes(_points("b", [30]))
    assert telemetry.ingest(store, run_id) == 2
    assert [s[2:4] for s in store.metric_series(run_id, rank=1)][-1] == (2, 12.0)
    assert store.last_steps(run_id) == {"a": 4} and store.last_steps(run_id, 3) == {"b": 0}
    assert store.run_ranks(run_id) == [0, 1, 3]


def test_an_events_file_that_is_a_link_is_not_read(tmp_path):
    store, run_id = _store_with_run(tmp_path)
    secret = tmp_path / "secret"
    secret.write_bytes(_points("secret", range(3)))
    os.symlink(secret, store.run_dir(run_id) / "telemetry" / "events-1.bin")
    assert telemetry.ingest(store, run_id) == 0
    [warning] = store.warnings(run_id)
    assert "events-1.bin was not read" in warning["message"] and "link" in warning["message"]


def test_the_watch_stats_the_folder_and_every_events_file(tmp_path, monkeypatch):
    store, run_id = _store_with_run(tmp_path)
    folder = store.run_dir(run_id) / "telemetry"
    now = [0.0]
    watch = telemetry.TelemetryWatch(store, run_id, lambda: now[0])
    calls = []
    real = telemetry.ingest_files
    monkeypatch.setattr(telemetry, "ingest_files",
                        lambda *a, **k: calls.append(1) or real(*a, **k))

    def ingests(final=False):
        """How many ingests a few polls made (the first after a new file is found re-reads:
        its size was not known before)."""
        start = len(calls)
        for _ in range(3):
            watch.ingest(final=final)
        return len(calls) - start

    (folder / "events.bin").write_bytes(_points("a", range(3)))
    assert ingests() >= 1 and ingests() == 0               # nothing grew: stats only
    with open(folder / "events.bin", "ab") as f:
        f.write(_points("a", [3]))
    assert ingests() == 1 and len(store.metric_series(run_id)) == 4
    before = folder.stat().st_mtime_ns
    (folder / "events-1.bin").write_bytes(_points("a", [7]))
    os.utime(folder, ns=(before, before))                  # as if made in the same tick
    assert ingests() == 0
    now[0] += telemetry.TelemetryWatch.RELIST_S            # listed again all the same
    assert ingests() >= 1 and store.run_ranks(run_id) == [0, 1]
    assert ingests() == 0
    with open(folder / "events-1.bin", "ab") as f:         # a known rank's file grows
        f.write(_points("a", [8]))
    assert ingests() == 1
    assert [s[3] for s in store.metric_series(run_id, rank=1)] == [7.0, 8.0]
    assert ingests(final=True) == 3                         # the last one always reads


# -- a run of two processes ------------------------------------------------------------------------
RANKED = """
import os, subprocess, sys
WORKER = '''
import os, sys
from celltrain import Run, log
rank = int(os.environ["RANK"])
for i in range(5):
    log("loss", rank * 10.0 + i)
    log("acc", rank + i / 10)
if rank:
    log("only_rank_1", 1.0)
Run.get_context().log_row("summary", rank=rank)
'''
procs = [subprocess.Popen([sys.executable, "-c", WORKER], env={**os.environ, "RANK": str(r)})
         for r in (0, 1)]
assert [p.wait() for p in procs] == [0, 0]
print("both ranks done")
"""


def test_a_run_of_two_ranks_keeps_both_and_shows_rank_0(workspace, make_source):
    run = workspace.experiment("ranks").submit("train.py", make_source(RANKED), target="local")
    assert run.wait(timeout=120) == states.COMPLETED, run.reason
    assert "both ranks done" in run.logs()
    rank0 = {"loss": [float(i) for i in range(5)], "acc": [i / 10 for i in range(5)]}
    rank1 = {"loss": [10.0 + i for i in range(5)], "acc": [1 + i / 10 for i in range(5)],
             "only_rank_1": [1.0]}
    assert run.metrics() == run.metrics(rank=0) == rank0
    assert run.metrics(rank=1) == rank1
    assert [s for s, _, _ in run.metric("loss", rank=1)] == list(range(5))
    assert run.logged_ranks() == [0, 1] and [r["rank"] for r in run.ranks()] == [0, 1]
    assert run.table("summary") == [{"rank": 0}] and run.table("summary", rank=1) == [{"rank": 1}]
    assert run.latest_metrics() == {"loss": 4.0, "acc": 0.4}
    assert not any("events" in f for f in run.files())
    assert run.warnings == []
    # The sidebar's series and the run's detail: rank 0's.
    manager = CelltrainManager(workspace.path)
    series = {s["name"]: s["y"] for s in manager.metrics(run.id)["series"]}
    assert series == rank0
    detail = manager.run(run.id)
    assert detail["metric_names"] == ["acc", "loss"] and detail["metrics"]["loss"] == 4.0
    # The widget: rank 0's.
    w = RunWidget(run, poll_s=0.05).start()
    assert w.wait(60)
    w.close()
    assert set(w.model.series) == {"loss", "acc"}
    assert w.model.series["loss"].values.tolist() == rank0["loss"]


# -- rank 0's charts never hold another rank's points -----------------------------------------------
@pytest.fixture(scope="module")
def interleaved(tmp_path_factory):
    """A long rank-0 series with rank 1's points interleaved (batches, and one mixed call)."""
    store = Store(tmp_path_factory.mktemp("ranks") / "ws")
    run_id = store.create_run("e", run_id_for=new_run_id, status=states.COMPLETED)["id"]
    step = 0
    for batch in range(30):
        store.add_metrics(run_id, [("loss", s, -1.0 - s % 7, 0.0)
                                   for s in range(step, step + 1000)])
        store.add_metrics(run_id, [("loss", s, 1000.0 + s % 5, 0.0, 1)
                                   for s in range(step, step + 700)])
        step += 1000
    store.add_metrics(run_id, [("loss", step + i // 2, (-1.0, 1000.0)[i % 2], 0.0, i % 2)
                               for i in range(3000)])
    return store, run_id


@pytest.mark.parametrize("max_points", [500, 4000])      # block path, SQLite aggregates
def test_rank_0_charts_never_hold_another_ranks_points(interleaved, max_points):
    store, run_id = interleaved
    reader = MetricSeries(store)
    zero = reader.series(run_id, "loss", max_points)
    assert zero["count"] == 31_500 and zero["downsampled"]
    assert max(zero["y"]) == -1.0 and min(zero["y"]) == -7.0
    one = reader.series(run_id, "loss", max_points, rank=1)
    assert one["count"] == 30 * 700 + 1500 and min(one["y"]) == 1000.0
    assert reader.metric_names(run_id) == ["loss"]
    assert reader.latest_metrics(run_id, ["loss"]) == {"loss": -1.0}


def test_rollups_are_rank_0_only_and_agree_with_its_points(interleaved):
    store, run_id = interleaved
    conn = store.conn
    blocks = conn.execute("SELECT block, n, first_step, min_value, max_value FROM metric_blocks "
                          "WHERE run_id=? ORDER BY block", (run_id,)).fetchall()
    fresh = conn.execute(
        "SELECT g.block, g.n, m.step, g.lo, g.hi FROM (SELECT id >> 8 AS block, COUNT(*) AS n, "
        "MIN(id) AS first_id, MIN(value) AS lo, MAX(value) AS hi FROM metrics WHERE run_id=? "
        "AND rank=0 GROUP BY id >> 8) AS g JOIN metrics AS m ON m.id = g.first_id "
        "ORDER BY g.block", (run_id,)).fetchall()
    assert [tuple(b) for b in blocks] == [tuple(f) for f in fresh]
    assert sum(b[1] for b in blocks) == 31_500


def test_rank_0_reads_use_the_rank_index(interleaved):
    store, run_id = interleaved
    plan = " ".join(r[3] for r in store.conn.execute(
        "EXPLAIN QUERY PLAN SELECT MAX(id) FROM metrics WHERE run_id=? AND rank=0 AND "
        "name='loss'", (run_id,)))
    assert "metrics_by_run_rank_name" in plan


# -- schema 6 ------------------------------------------------------------------------------------------
def test_a_v5_workspace_migrates_to_6_keeping_every_point(tmp_path):
    db = sqlite3.connect(tmp_path / "celltrain.db")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    db.executescript(MIGRATIONS[0])
    db.execute("INSERT INTO experiments (name, created) VALUES ('old', 0)")
    db.execute("INSERT INTO runs (id, experiment_id, number, status, created, events_offset) "
               "VALUES ('old-1', 1, 1, 'Completed', 0, 4242)")
    db.execute("INSERT INTO runs (id, experiment_id, number, status, created) "
               "VALUES ('old-2', 1, 2, 'Completed', 0)")
    points = [("old-1", "loss" if i % 3 else "acc", i, i / 7, 0.0) for i in range(5000)]
    db.executemany("INSERT INTO metrics (run_id, name, step, value, time) "
                   "VALUES (?, ?, ?, ?, ?)", points)
    db.execute("INSERT INTO table_rows (run_id, name, row, time) VALUES ('old-1', 't', "
               "'{\"a\": 1}', 0)")
    db.execute("INSERT INTO images (run_id, name, path, step, time) VALUES ('old-1', 'p', "
               "'telemetry/images/00000-p.png', 3, 0)")
    for migration in MIGRATIONS[1:5]:       # 3 fills the blocks of the points already there
        db.executescript(migration)
    db.execute("INSERT INTO meta VALUES ('schema_version', '5')")
    db.commit()
    blocks = db.execute("SELECT * FROM metric_blocks ORDER BY block, name").fetchall()
    db.close()

    store = Store(tmp_path)
    assert store.schema_version() == SCHEMA_VERSION
    assert [("old-1", *p[1:]) for p in store.metric_series("old-1")] == points
    assert store.conn.execute("SELECT COUNT(*) FROM metrics WHERE rank != 0").fetchone()[0] == 0
    assert store.run_ranks("old-1") == [0] and store.run_ranks("old-2") == []
    assert store.ingest_offsets("old-1") == {EVENTS_FILE: 4242}
    assert store.ingest_offsets("old-2") == {}
    assert store.table("old-1", "t") == [{"a": 1}]
    assert store.images("old-1")[0]["path"] == "telemetry/images/00000-p.png"
    assert [tuple(b) for b in store.conn.execute(
        "SELECT * FROM metric_blocks ORDER BY block, name")] == [tuple(b) for b in blocks]
    fresh = Store(tmp_path / "fresh")
    fresh_id = fresh.create_run("e", run_id_for=new_run_id, status=states.COMPLETED)["id"]
    fresh.add_metrics(fresh_id, [p[1:] for p in points])
    after, want = (MetricSeries(s).series(r, "loss", 400) for s, r in ((store, "old-1"),
                                                                        (fresh, fresh_id)))
    assert after == want and after["count"] == 3333
    indexes = {r[1] for r in store.conn.execute("PRAGMA index_list(metrics)")}
    assert "metrics_by_run_rank_name" in indexes and "metrics_by_run_name" not in indexes
