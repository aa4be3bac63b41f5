"""Issue 9, telemetry: what a fault-injection pass found, each fault made into a test.

Nothing lost at exit (16 parallel runs of 100k points, every exit path, local and in Docker);
bad values refused at the call, naming the value; garbage, cut frames and a 2 GB header in the
events file skipped and reported while everything logged afterwards arrives; an events file
that is a link to a host file not read.
"""
from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch

from celltrain import Environment, states, telemetry
from celltrain.runtime import context, wire
from celltrain.runtime.wire import EVENTS_FILE, MAGIC, NO_STEP, decode_body, decode_frames
from celltrain.store import Store
from celltrain.views.summary import summary_text
from celltrain.views.widget import RunWidget

RUNS = 16
POINTS = 100_000

EXITS = """
import os, signal, sys, threading, time
from celltrain import log
mode, disk = sys.argv[1:]
if disk == "slow":   # a slow disk: the flusher thread is mid-write when the script ends
    real_write, writing = os.write, threading.Event()
    def slow_write(fd, data):
        if threading.current_thread().name == "celltrain-flush":
            writing.set()
            time.sleep(0.5)
        return real_write(fd, data)
    os.write = slow_write
for i in range(100_000):
    log("x", i * 0.5)
if disk == "slow":
    writing.wait(60)
if mode == "raise":
    raise RuntimeError("boom")
if mode == "sys.exit":
    sys.exit(3)
if mode == "sigterm":
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(60)
"""
# mode: (final state, exit code)
MODES = {"return": (states.COMPLETED, 0), "raise": (states.FAILED, 1),
         "sys.exit": (states.FAILED, 3), "sigterm": (states.FAILED, 143)}
EXIT_ARGS = [[mode, disk] for disk in ("fast", "slow") for mode in MODES] * (RUNS // 8)


def in_target(request, target):
    """The workspace and submit options for a target: local, or Docker (offline image)."""
    if target == "docker":
        # The offline image named, not reached by the default's fallback (whose notice would be
        # one more warning on every run).
        offline = request.getfixturevalue("offline_image")
        return (request.getfixturevalue("docker_workspace"),
                {"gpus": "none", "environment": Environment(base_image=offline)})
    return request.getfixturevalue("workspace"), {"target": "local"}


def count_points(store, run_id, name):
    """(points, distinct steps, first step, last step, points whose value is step / 2)."""
    return tuple(store.conn.execute(
        "SELECT COUNT(*), COUNT(DISTINCT step), MIN(step), MAX(step), "
        "TOTAL(value = step * 0.5) FROM metrics WHERE run_id=? AND name=?",
        (run_id, name)).fetchone())


@pytest.mark.parametrize("target", ["local", pytest.param("docker", marks=pytest.mark.docker)])
def test_sixteen_runs_that_log_and_exit_at_once_lose_no_point(request, target, make_source):
    """Finding 1: atexit's flush (and SIGTERM's) did not wait for the one the flusher thread
    was writing, so its batch was lost.  Half the runs make that certain with a slow disk."""
    ws, options = in_target(request, target)
    src = make_source(EXITS)
    runs = [ws.experiment("exits").submit("train.py", src, args=args, **options)
            for args in EXIT_ARGS]
    for run, (mode, disk) in zip(runs, EXIT_ARGS):
        assert run.wait(timeout=900) == MODES[mode][0], (mode, disk, run.reason)
        assert run.exit_code == MODES[mode][1], (mode, disk, run.reason)
    lost = {run.id: count_points(ws.store, run.id, "x") for run in runs}
    assert lost == {run.id: (POINTS, POINTS, 0, POINTS - 1, POINTS) for run in runs}
    assert all(run.warnings == [] for run in runs)


def events_points(folder):
    """(name, value) of every metric point in an events file, in order."""
    data = (folder / EVENTS_FILE).read_bytes()
    bodies, used, skipped = decode_frames(data, final=True)
    assert (used, skipped) == (len(data), 0)
    points = []
    for body in bodies:
        kind, payload = decode_body(body)
        if kind == "m":
            names, ids, steps, values, times = payload
            points += [(names[i], v) for i, v in zip(ids, values)]
    return points


SIGTERM_IN_FLUSH = """
import os, signal, sys, threading
from celltrain import Run, log
run = Run.get_context()
run._stop.set()
run._thread.join()          # only the main thread flushes: the signal lands inside its flush()
for i in range(10_000):     # three frames
    log("x", float(i))
real_write = os.write
def write_then_sigterm(fd, data):
    written = real_write(fd, data)
    if not getattr(write_then_sigterm, "sent", False):
        write_then_sigterm.sent = True
        os.kill(os.getpid(), signal.SIGTERM)
    return written
os.write = write_then_sigterm
try:
    run.flush()
finally:
    print("flush returned", flush=True)
"""


def test_sigterm_inside_the_main_threads_flush_neither_loses_nor_repeats_a_frame(tmp_path):
    """The SIGTERM handler flushes; if the main thread was already flushing, a second flush
    inside it would write the frame being written again.  It finishes that flush, then exits."""
    script = tmp_path / "s.py"
    script.write_text(SIGTERM_IN_FLUSH)
    env = {**os.environ, context.TELEMETRY_ENV: str(tmp_path / "t")}
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 143, proc.stderr
    assert "flush returned" in proc.stdout
    assert events_points(tmp_path / "t") == [("x", float(i)) for i in range(10_000)]


FORKS = """
import os, sys
from celltrain import Run, log
run = Run.get_context()
for i in range(1000):
    log("parent", float(i))
pid = os.fork()
if pid == 0:                 # a worker (a DataLoader's, say): its own buffer and flusher
    for i in range(5000):
        log("child", float(i))
    sys.exit(0)
os.waitpid(pid, 0)
for i in range(1000, 2000):
    log("parent", float(i))
"""


def test_a_forked_child_logs_through_its_own_flusher(tmp_path):
    script = tmp_path / "s.py"
    script.write_text(FORKS)
    env = {**os.environ, context.TELEMETRY_ENV: str(tmp_path / "t")}
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    points = events_points(tmp_path / "t")
    assert [v for n, v in points if n == "parent"] == [float(i) for i in range(2000)]
    assert [v for n, v in points if n == "child"] == [float(i) for i in range(5000)]


# -- finding 2: bad values are refused at the call, naming the value -----------------------------
REFUSED = [
    (lambda r: r.log("acc", [0.9, 0.8]), TypeError,
     r"log\('acc', \[0\.9, 0\.8\]\): the value must be a number .* not a list; "
     r"log a list with log_list\('acc', values\)"),
    (lambda r: r.log("n", 10**400), ValueError, r"log\('n', 1000.*\): the value is too large"),
    (lambda r: r.log(None, 1.0), TypeError, r"log\(None, 1\.0\): the name must be a str"),
    (lambda r: r.log(7, 1.0), TypeError, r"log\(7, 1\.0\): the name must be a str .* not an int"),
    (lambda r: r.log("", 1.0), ValueError, r"log\('', 1\.0\): the name must not be empty"),
    (lambda r: r.log("a", 1.0, step="3"), TypeError,
     r"log\('a', 1\.0, step='3'\): the step must be an int .* not a str"),
    (lambda r: r.log("a", 1.0, step=2.0), TypeError, r"not a float; pass int\(step\)"),
    (lambda r: r.log("a", 1.0, step=2**63), ValueError, r"step=9223372036854775808.* 64 bits"),
    (lambda r: r.log("a", "0.5"), TypeError, r"log\('a', '0\.5'\): .* not a str"),
    (lambda r: r.log("a", b"0.5"), TypeError, r"log\('a', b'0\.5'\): .* not a bytes"),
    (lambda r: r.log("a", None), TypeError, r"log\('a', None\): .* not None"),
    (lambda r: r.log("a", np.array([1.0, 2.0])), TypeError,
     r"not a ndarray of shape \(2,\); log one element \(value\.item\(\)\)"),
    (lambda r: r.log("a", torch.tensor([1.0])), TypeError, r"not a Tensor of shape \(1,\)"),
    (lambda r: r.log("a", 1 + 2j), TypeError, r"not a complex"),
    (lambda r: r.log_list("a", [1.0, "x"]), TypeError, r"log\('a', 'x'\)"),
    (lambda r: r.log_row(None, acc=1.0), TypeError, r"log_row\(None, \.\.\.\): the name"),
    (lambda r: r.log_image("plot", __file__, step="1"), TypeError, r"log_image\(.*step='1'"),
]


@pytest.mark.parametrize("call, error, message", REFUSED)
def test_a_bad_value_is_refused_at_the_call_naming_it(tmp_path, call, error, message):
    run = context.Run(str(tmp_path))
    with pytest.raises(error, match=message):
        call(run)
    run.log("a", 2.0)          # what follows a refused call is logged as usual
    run.flush()
    bodies = decode_frames((tmp_path / EVENTS_FILE).read_bytes(), final=True)[0]
    kind, (names, ids, steps, values, times) = decode_body(bodies[-1])
    assert (names[ids[-1]], steps[-1], values[-1]) == ("a", NO_STEP, 2.0)


def test_unambiguous_numbers_are_converted():
    run = context.OfflineRun()
    run.log("np", np.float32(0.25))
    run.log("np", np.int64(3), step=np.int64(7))
    run.log("tensor", torch.tensor(0.75), step=torch.tensor(2))
    run.log("big", 10**30)                # a float column stores it as 1e30 anyway
    run.log("flag", True)
    assert run.get_metrics() == {"np": [0.25, 3.0], "tensor": [0.75], "big": [1e30],
                                 "flag": [1.0]}
    assert run.metrics["np"][1] == (7, 3.0) and run.metrics["tensor"][0][0] == 2
    assert all(type(v) is float for series in run.get_metrics().values() for v in series)


def test_bytes_in_progress_become_text(monkeypatch, tmp_path):
    run = context.Run(str(tmp_path))
    monkeypatch.setattr(context, "_context", run)
    list(context.progress(range(3), desc=b"epoch \xff"))
    run.flush()
    run.set_progress(n=np.int64(1), rate=float("inf"), note=object)
    run.flush()
    monkeypatch.setattr(context, "_context", None)
    records = [decode_body(b) for b in decode_frames((tmp_path / EVENTS_FILE).read_bytes())[0]]
    assert {kind for kind, _ in records} == {"progress"}
    assert any(state.get("desc") == "epoch \ufffd" for _, state in records)
    state = records[-1][1]
    assert state["n"] == 1.0 and state["rate"] is None and "object" in state["note"]
    first = context.OfflineRun()
    monkeypatch.setattr(context, "_context", first)
    list(context.progress(range(3), desc=b"epoch"))
    first.flush()
    assert first.progress_state["desc"] == "epoch"
    monkeypatch.setattr(context, "_context", None)


# -- findings 2 and 3 on the host: frames that cannot be stored, garbage, cut frames -------------
def frame(body: bytes) -> bytes:
    """A frame with a valid header and checksum, whatever its body says."""
    head = MAGIC + struct.pack("<II", len(body), zlib.crc32(body))
    return head + struct.pack("<I", zlib.crc32(head)) + body


def good(name, n=3):
    return wire.encode_frame("m", [(name, None, float(i), 1.0) for i in range(n)])


def test_a_frame_being_written_waits_and_a_cut_one_is_skipped():
    whole = good("a")
    half = whole[:len(whole) // 2]
    assert decode_frames(half) == ([], 0, 0)             # the writer is mid-write: wait
    assert decode_frames(MAGIC[:2]) == ([], 0, 0)        # even mid-marker
    bodies, used, skipped = decode_frames(half + good("b"))
    assert (len(bodies), used, skipped) == (1, len(half + good("b")), len(half))
    assert decode_body(bodies[0])[1][0] == ["b"]
    assert decode_frames(half, final=True) == ([], len(half), len(half))  # the writer is gone


def test_garbage_and_a_2gb_header_are_skipped_up_to_the_next_frame():
    garbage = random.Random(9).randbytes(4096)
    old_header = struct.pack("<I", 0x7FFFFFFF)            # the old format's length prefix
    head = MAGIC + struct.pack("<II", 0x7FFFFFFF, 0)
    huge = head + struct.pack("<I", zlib.crc32(head))     # a valid header announcing 2 GB
    junk = garbage + old_header + huge
    bodies, used, skipped = decode_frames(junk + good("a"))
    assert (len(bodies), used, skipped) == (1, len(junk + good("a")), len(junk))
    assert decode_frames(garbage + b"\0" * 16) == ([], 4112, 4112)   # no stall on garbage alone


def events_store(tmp_path, data: bytes):
    store = Store(tmp_path / "ws")
    run_id = store.create_run("e", run_id_for=lambda exp, n: f"run-{n}",
                              status=states.RUNNING)["id"]
    path = telemetry.events_path(store, run_id)
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    return store, run_id, path


def test_ingestion_refuses_bad_records_counts_them_and_goes_on(tmp_path):
    """Hand-written frames (an old runner, a script writing its own events) never reach
    SQLite unchecked, and never stop ingestion of the good frames around them."""
    bad = [
        frame(b"Jnot json"),
        frame(b'J{"a": 1}'),                              # not [kind, payload]
        frame(b"M\x01\x00\x00\x00"),                      # a metric frame cut inside
        frame(b"Xwhat"),                                  # an unknown kind
        frame(b'J["row", "oops"]'),                       # a row of the wrong shape
        frame(b'J["img", ["plot", "../../../../etc/passwd", null, 1.0]]'),
        frame(b'J["progress", [1, 2]]'),
        frame(b'J["mystery", 1]'),
        frame(b"J" + b"[" * 100_000 + b"]" * 100_000),    # nesting deeper than JSON parses
        wire.encode_frame("m", [("\ud800", None, 1.0, 1.0), ("ok", None, 5.0, 1.0)]),
    ]
    store, run_id, path = events_store(tmp_path, good("a") + b"".join(bad) + good("a", 2))
    assert telemetry.ingest(store, run_id) == 3 + 1 + 2
    series = [(n, s, v) for _, n, s, v, _ in store.metric_series(run_id)]
    assert series == [("a", 0, 0.0), ("a", 1, 1.0), ("a", 2, 2.0), ("ok", 0, 5.0),
                      ("a", 3, 0.0), ("a", 4, 1.0)]
    warnings = {w["kind"]: w["count"] for w in store.warnings(run_id)}
    assert warnings == {"bad-frame": 6, "bad-value": 4}
    assert store.ingest_offset(run_id, EVENTS_FILE) == path.stat().st_size
    assert store.images(run_id) == [] and store.get_run(run_id)["progress"] is None


def test_a_partial_frame_is_ingested_when_complete_and_the_offset_never_sticks(tmp_path):
    whole = good("a", 5)
    garbage = random.Random(3).randbytes(4096) + b"\0" * 16
    store, run_id, path = events_store(tmp_path, garbage + whole[:20])
    assert telemetry.ingest(store, run_id) == 0
    assert store.ingest_offset(run_id, EVENTS_FILE) == len(garbage)     # past the garbage
    with open(path, "ab") as f:
        f.write(whole[20:])
    assert telemetry.ingest(store, run_id) == 5
    with open(path, "ab") as f:
        f.write(whole[:30])                                         # cut short: the run ends
    assert telemetry.ingest(store, run_id) == 0
    assert telemetry.ingest(store, run_id, final=True) == 0
    assert store.ingest_offset(run_id, EVENTS_FILE) == path.stat().st_size
    [w] = store.warnings(run_id)
    assert (w["kind"], w["count"]) == ("skipped-bytes", len(garbage) + 30)


GARBAGE_RUN = """
import os, random, struct, sys, tempfile, zlib
from celltrain import Run, log, progress
from celltrain.runtime.wire import EVENTS_FILE, MAGIC, encode_frame

def frame(body):
    head = MAGIC + struct.pack("<II", len(body), zlib.crc32(body))
    return head + struct.pack("<I", zlib.crc32(head)) + body

run = Run.get_context()
for i in range(10):
    log("before", float(i))
run.flush()
fd = os.open(os.path.join(os.environ["CELLTRAIN_TELEMETRY_DIR"], EVENTS_FILE),
             os.O_WRONLY | os.O_APPEND)
rng = random.Random(9)
garbage = bytes(rng.getrandbits(8) for _ in range(4096))
head = MAGIC + struct.pack("<II", 0x7FFFFFFF, 0)
cut = encode_frame("m", [("cut", None, 1.0, 0.0)] * 100)
skipped = [garbage, struct.pack("<I", 0x7FFFFFFF) + b"old style",
           head + struct.pack("<I", zlib.crc32(head)), cut[:len(cut) // 2]]
malformed = [frame(b"Jnot json"), frame(b"M\\x00"), frame(b'J["row", "oops"]'),
             encode_frame("m", [("\\ud800", None, 1.0, 0.0)])]
for chunk in skipped + malformed:
    os.write(fd, chunk)
os.close(fd)
print("skipped", sum(map(len, skipped)), flush=True)
for i in progress(range(1000), desc=b"after"):
    log("after", float(i))
plot = os.path.join(tempfile.mkdtemp(), "plot.png")
open(plot, "wb").write(b"\\x89PNG fake")
run.log_image("plot", plot, step=3)
run.log_row("summary", best=1.5, note=b"bytes")
"""


@pytest.mark.parametrize("target", ["local", pytest.param("docker", marks=pytest.mark.docker)])
def test_a_run_that_writes_garbage_into_its_events_file_keeps_every_later_point(
        request, target, make_source):
    """Finding 3: random bytes or a 2 GB header left the offset stuck and the run Completed
    without the points logged afterwards; bad frames ended it "could not carry the run"."""
    ws, options = in_target(request, target)
    run = ws.experiment("garbage").submit("train.py", make_source(GARBAGE_RUN), **options)
    assert run.wait(timeout=300) == states.COMPLETED, run.reason
    assert run.reason is None
    metrics = run.metrics()
    assert metrics["before"] == [float(i) for i in range(10)]
    assert metrics["after"] == [float(i) for i in range(1000)]
    assert [s for s, _, _ in run.metric("after")] == list(range(1000))
    assert set(metrics) == {"before", "after"}
    assert run.record["progress"]["desc"] == "after" and run.record["progress"]["done"]
    assert run.table("summary") == [{"best": 1.5, "note": "bytes"}]
    [image] = ws.store.images(run.id)
    assert (image["name"], image["step"]) == ("plot", 3)
    assert (run.folder / image["path"]).read_bytes() == b"\x89PNG fake"
    skipped = int(run.logs().split("skipped ")[1].split()[0])
    warnings = {w["kind"]: w["count"] for w in ws.store.warnings(run.id)}
    assert warnings == {"skipped-bytes": skipped, "bad-frame": 2, "bad-value": 2}
    assert any("skipped bytes that belong to no valid frame" in line for line in run.warnings)
    supervisor_log = (run.folder / "supervisor.log").read_text()
    assert "could not carry" not in supervisor_log and "Traceback" not in supervisor_log


LINK_RUN = """
import os, sys
events = os.path.join(os.environ["CELLTRAIN_TELEMETRY_DIR"], "events.bin")
os.symlink(sys.argv[1], events)
print("linked", os.readlink(events))
"""


@pytest.mark.parametrize("target", ["local", pytest.param("docker", marks=pytest.mark.docker)])
def test_events_file_linked_to_a_host_file_is_not_read(request, target, make_source, tmp_path):
    """Finding 4 (telemetry part): the supervisor read events.bin through a link the container
    made, i.e. any host file it can read; it must not, and the run says why its metrics lack."""
    ws, options = in_target(request, target)
    secret = tmp_path / "secret"
    secret.write_bytes(good("secret", 5) + b"root:hunter2\n")
    run = ws.experiment("link").submit("train.py", make_source(LINK_RUN),
                                       args=[str(secret)], **options)
    assert run.wait(timeout=300) == states.COMPLETED, run.reason
    assert "linked" in run.logs()
    assert run.metrics() == {}
    [warning] = run.warnings
    assert "events.bin was not read" in warning and "link" in warning
    assert secret.read_bytes().endswith(b"root:hunter2\n")


def test_the_widget_shows_the_runs_warnings(workspace, make_source):
    run = workspace.experiment("w").submit("train.py", make_source("print('hi')"),
                                           target="local")
    assert run.wait(timeout=60) == states.COMPLETED
    workspace.store.add_warning(run.id, "skipped-bytes", "skipped 12 bytes", count=3)
    workspace.store.add_warning(run.id, "bad-value", "dropped a point")
    w = RunWidget(run, live=False)
    w.refresh(force=True)
    assert "⚠ 2 warnings: skipped 12 bytes (3 times)" in w.header.value
    assert "dropped a point" in w.header.value          # in its tooltip
    assert "<li>skipped 12 bytes (3 times)</li>" in w.summary.value
    assert "<li>dropped a point</li>" in w.summary.value
    assert "warning: dropped a point" in summary_text(w.model.summary())
    w.close()
