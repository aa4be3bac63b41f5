"""Warm starts on the local target (README "Warm starts"): the second run of an environment is
forked from a worker process of this machine that imported torch after the first; what a user
sees of a run is as for a cold one.  Real processes, this venv's torch."""
from __future__ import annotations

import os
import time

import pytest

from celltrain import states
from celltrain.targets.localwarm import alive
from celltrain.targets.warmhost import WARM_DIR
from procs import stop_local_workers, until_held, with_fault_hooks

SCRIPT = """
import os, subprocess, sys, torch
mode = sys.argv[1] if len(sys.argv) > 1 else "plain"
from celltrain import log
x = torch.arange(10, dtype=torch.float32)
log("loss", float(x.sum()), step=0)
log("loss", float((x * 2).sum()), step=1)
print("out line", x.tolist()[:3], "run", os.environ["CELLTRAIN_RUN_ID"], "pid", os.getpid())
print("err line", file=sys.stderr)
os.makedirs("outputs", exist_ok=True)
open("outputs/result.txt", "w").write(f"{float(x.mean())}")
if mode == "dirty":
    open("leftover.txt", "w").write("from the first run")
    torch.celltrain_mark = "dirty"
    os.environ["CELLTRAIN_DIRTY"] = "1"
    # a process the run leaves behind, in a session of its own
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                             start_new_session=True)
    open(sys.argv[2], "w").write(str(child.pid))
if mode == "check":
    seen = [os.path.exists("leftover.txt"), hasattr(torch, "celltrain_mark"),
            "CELLTRAIN_DIRTY" in os.environ]
    print("seen", seen)
    sys.exit(3 if any(seen) else 0)
if mode == "fail":
    raise ValueError("bad value in the run")
"""


@pytest.fixture
def warm_local(workspace, monkeypatch):
    monkeypatch.setenv("CELLTRAIN_WARM", "1")
    monkeypatch.setenv("CELLTRAIN_WARM_IDLE", "120")
    yield workspace
    stop_local_workers(workspace)


def submit(ws, src, *args, **kwargs):
    return ws.experiment("warm").submit("train.py", src, args=list(args), target="local",
                                        **kwargs)


def worker_pid(ws) -> int:
    """The pid of the workspace's local warm worker once it is ready."""
    deadline = time.monotonic() + 180
    while True:
        found = list((ws.path / WARM_DIR).glob("local-*/ready"))
        if found:
            return int(found[0].read_text())
        assert time.monotonic() < deadline, "no warm worker came up"
        time.sleep(0.1)


def finished(run, status=states.COMPLETED):
    run.wait(timeout=300)
    assert run.status == status, (run.status, run.reason, run.logs())
    return run


def test_a_local_run_starts_warm_and_gives_what_a_cold_one_gives(warm_local, make_source):
    src = make_source(SCRIPT)
    cold = finished(submit(warm_local, src))
    assert not cold.started_warm
    pid = worker_pid(warm_local)
    hot = finished(submit(warm_local, src))
    assert hot.started_warm
    assert hot.metrics() == cold.metrics()
    for run in (cold, hot):
        assert (run.folder / "outputs" / "result.txt").read_text() == "4.5"
        assert f"out line [0.0, 1.0, 2.0] run {run.id}" in run.logs()
        assert "err line" in run.logs(stderr_only=True)
        assert run.exit_code == 0
    assert f"pid {pid}" not in hot.logs()           # a process of its own, not the worker
    failed = finished(submit(warm_local, src, "fail"), states.FAILED)
    assert failed.started_warm and failed.exit_code == 1
    assert "ValueError: bad value in the run" in failed.reason
    assert 'File "' in failed.logs() and "train.py" in failed.logs()


def test_nothing_of_one_local_warm_run_reaches_the_next(warm_local, make_source, tmp_path):
    src = make_source(SCRIPT)
    finished(submit(warm_local, src))
    worker_pid(warm_local)
    note = tmp_path / "leftover-pid"
    dirty = finished(submit(warm_local, src, "dirty", str(note)))
    assert dirty.started_warm
    leftover = int(note.read_text())
    deadline = time.monotonic() + 30
    while os.path.exists(f"/proc/{leftover}") and \
            open(f"/proc/{leftover}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline, "the run's leftover process outlived it"
        time.sleep(0.1)
    check = finished(submit(warm_local, src, "check"))
    assert check.started_warm
    assert "seen [False, False, False]" in check.logs()


def test_a_local_worker_lost_after_the_claim_means_a_cold_start(warm_local, make_source,
                                                                monkeypatch, tmp_path):
    with_fault_hooks(monkeypatch)
    src = make_source(SCRIPT)
    cold = finished(submit(warm_local, src))
    pid = worker_pid(warm_local)
    hold = tmp_path / "launch"
    monkeypatch.setenv("CELLTRAIN_TEST_HOLD_LAUNCH", str(hold))
    run = submit(warm_local, src)
    until_held(hold, run)
    assert run.started_warm                       # claimed: the handle is the worker's
    os.kill(pid, 9)
    hold.touch()
    finished(run)
    assert not run.started_warm
    assert run.metrics() == cold.metrics()
    assert (run.folder / "outputs" / "result.txt").read_text() == "4.5"
    assert not alive(pid, next((warm_local.path / WARM_DIR).glob("local-*")))
