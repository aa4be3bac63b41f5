"""Fault injection on processes: kill -9, out of memory, timeouts.  Nothing lost, nothing leaked.

Each fault is a real one: a real supervisor or submitting process killed with SIGKILL, a real
container OOM-killed by its memory= limit, a real timeout.  Where the target matters the test
runs for target="local" and for Docker.

Also covered elsewhere: a Docker run's supervisor killed mid-run
(test_docker_runs.py::test_container_run_outlives_its_supervisor), and a %%train cell whose
run's supervisor dies while it waits (test_magics.py::test_a_dead_supervisor_does_not_leave_
the_cell_waiting).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from celltrain import Workspace, states
from celltrain import workspace as workspace_module
from celltrain.targets.docker.engine import LABEL_RUN
from celltrain.registry.names import TMP_PREFIX
from celltrain.workspace import supervisor_alive
from procs import process_with

POINTS = """
import time
from celltrain import log
for i in range(20):
    log("x", i)
    time.sleep(0.05)
print("finished")
"""


@pytest.fixture(params=["local", "docker"])
def target(request):
    """The target, and a workspace fit for it (Docker's removes its containers afterwards)."""
    if request.param == "docker":
        return "docker", request.getfixturevalue("docker_workspace")
    return "local", request.getfixturevalue("workspace")


def submit_kwargs(target: str) -> dict:
    return {"target": "local"} if target == "local" else {"gpus": "none"}


def wait_for(predicate, what: str, within: float = 120.0):
    """Poll until predicate() is true; fails with `what` if it never is (no timing asserted)."""
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


def supervisor_pid(folder) -> int:
    pid = process_with(b"celltrain.supervisor", folder.name.encode())
    assert pid is not None, "no supervisor process found"
    return pid


def container_gone(docker_client, run_id: str) -> bool:
    return not docker_client.api.containers(all=True, filters={"label": f"{LABEL_RUN}={run_id}"})


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


class Submitter:
    """A kernel-like process: opens the workspace, submits, then waits to be killed.

    ``hook`` is Python run in it before the submission, to pause or kill it mid-way."""

    def __init__(self, ws: Workspace, src: Path, kwargs: dict, hook: str = ""):
        code = textwrap.dedent(f"""
            import sys, time
            from celltrain import Workspace
            {textwrap.indent(textwrap.dedent(hook), '            ').strip()}
            run = Workspace({str(ws.path)!r}).experiment("faults").submit(
                "train.py", {str(src)!r}, **{kwargs!r})
            print("submitted", run.id, flush=True)
            time.sleep(600)
        """)
        # Its own session, like a kernel: killpg takes it and any child it did not detach.
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)

    def read_until(self, word: str) -> str:
        for line in self.proc.stdout:
            if line.startswith(word):
                return line.split()[-1] if word == "submitted" else line
        raise AssertionError(f"the submitter ended before {word!r} (exit {self.proc.wait()})")

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


@pytest.fixture
def start_submitter():
    """Start a Submitter; whatever the test's outcome, it is killed at the end."""
    started = []

    def start(*args, **kwargs) -> Submitter:
        started.append(Submitter(*args, **kwargs))
        return started[-1]
    yield start
    for one in started:
        one.kill()


# -- kill -9 of the supervisor --------------------------------------------------------------------
def test_supervisor_killed_mid_run_is_reconciled_and_keeps_every_point(workspace, make_source):
    """Kill the supervisor mid-run; whoever opens the workspace next finishes the job."""
    run = workspace.experiment("exp").submit("train.py", make_source(POINTS), target="local")
    wait_for(lambda: run.status == states.RUNNING, "the run runs")
    os.kill(supervisor_pid(run.folder), signal.SIGKILL)
    wait_for(lambda: not supervisor_alive(run.folder), "the kernel reaps the supervisor")
    reopened = Workspace(workspace.path)          # a new kernel, say
    assert reopened.run(run.id).wait(timeout=60) == states.COMPLETED
    assert reopened.run(run.id).metrics()["x"] == list(range(20))
    assert "finished" in reopened.run(run.id).logs()


# -- kill -9 of the submitter ---------------------------------------------------------------------
def test_submitter_killed_right_after_submit_the_run_still_completes(target, make_source,
                                                                   start_submitter):
    """The kernel dies the moment submit returns: the run is detached and finishes alone."""
    name, ws = target
    kernel = start_submitter(ws, make_source(POINTS), submit_kwargs(name))
    run_id = kernel.read_until("submitted")
    kernel.kill()
    run = Workspace(ws.path, reconcile=False).run(run_id)   # nobody adopts it: no need
    assert run.wait(timeout=300) == states.COMPLETED, run.reason
    assert run.metrics()["x"] == list(range(20))
    assert "finished" in run.logs()


def test_submitter_killed_mid_snapshot_fails_the_run_and_never_runs_half_of_it(
        workspace, make_source, start_submitter):
    src = make_source(POINTS)
    (src / "data.txt").write_text("part of the code\n")
    hook = """
        from celltrain import snapshot as snap, workspace as w
        def paused(source, dest, limit, files):      # copy one file, then hang
            snap.snapshot(source, dest, limit, files[:1])
            print("copying", flush=True)
            time.sleep(600)
        w.snapshot = paused
    """
    kernel = start_submitter(workspace, src, {"target": "local"}, hook)
    kernel.read_until("copying")
    # Meanwhile another process opens the workspace: the run being submitted is left alone.
    assert Workspace(workspace.path, reconcile=False).reconcile() == []
    [run] = workspace.runs()
    assert run.status == states.QUEUED
    kernel.kill()
    reopened = Workspace(workspace.path)
    run = reopened.run(run.id)
    assert run.status == states.FAILED
    assert "ended before its code snapshot was complete" in run.reason
    assert "submit it again" in run.reason
    assert not (run.folder / "supervisor.log").exists()     # no supervisor ever ran it
    assert not (run.folder / "snapshot.partial").exists()


def test_submitter_killed_before_the_supervisor_started_is_adopted(workspace, make_source,
                                                                  start_submitter):
    hook = """
        import os, signal
        from celltrain.workspace import Workspace as W
        W.spawn_supervisor = lambda self, run_id: os.kill(os.getpid(), signal.SIGKILL)
    """
    kernel = start_submitter(workspace, make_source(POINTS), {"target": "local"}, hook)
    assert kernel.proc.wait() == -signal.SIGKILL
    [run] = workspace.runs()
    assert run.status == states.QUEUED
    reopened = Workspace(workspace.path)
    assert reopened.run(run.id).wait(timeout=60) == states.COMPLETED
    assert reopened.run(run.id).metrics()["x"] == list(range(20))


# -- a spare supervisor writes the run's log ------------------------------------------------------
def test_a_run_taken_by_the_spare_supervisor_has_its_supervisor_log(target, make_source,
                                                                   monkeypatch):
    name, ws = target
    monkeypatch.setattr(workspace_module, "SPARES", True)
    src = make_source("print('hi')\n")
    first = ws.experiment("spare").submit("train.py", src, **submit_kwargs(name))
    assert first.wait(timeout=300) == states.COMPLETED, first.reason
    wait_for(lambda: _spare_waiting(ws.path), "a spare supervisor waits")
    second = ws.experiment("spare").submit("train.py", src, **submit_kwargs(name))
    assert second.wait(timeout=300) == states.COMPLETED, second.reason
    log = (second.folder / "supervisor.log").read_text()
    assert "was handed the run" in log
    assert "Running" in log and "Completed" in log


def _spare_waiting(root: Path) -> bool:
    try:
        fd = os.open(root / "spare.fifo", os.O_WRONLY | os.O_NONBLOCK)
    except OSError:      # no fifo yet, or nobody reading it
        return False
    os.close(fd)
    return True


# -- out of memory --------------------------------------------------------------------------------
@pytest.mark.docker
def test_out_of_memory_fails_with_the_limit_keeps_points_and_removes_the_container(
        docker_workspace, make_source, docker_client):
    src = make_source("""
        from celltrain import Run
        run = Run.get_context()
        run.log("before", 1.0)
        run.flush()       # a SIGKILL gives no chance to flush: what was flushed is kept
        x = bytearray(400 * 2**20)
        x[::4096] = b'1' * len(x[::4096])
    """)
    run = docker_workspace.experiment("oom").submit("train.py", src, gpus="none", memory="64m")
    assert run.wait(timeout=300) == states.FAILED
    assert run.reason.startswith("out of memory: the container was OOM-killed")
    assert "raise memory= (now 64m)" in run.reason
    assert run.metrics() == {"before": [1.0]}
    wait_for(lambda: container_gone(docker_client, run.id), "the container is removed")


# -- timeout --------------------------------------------------------------------------------------
def test_timeout_fails_with_the_reason_keeps_points_and_leaves_nothing_running(
        target, make_source, request, tmp_path):
    name, ws = target
    src = make_source("""
        import os, time
        from celltrain import log
        if os.environ.get("PID_FILE"):
            open(os.environ["PID_FILE"], "w").write(str(os.getpid()))
        log("before", 1.0)
        time.sleep(120)
    """)
    kwargs = submit_kwargs(name)
    if name == "local":
        kwargs["env_vars"] = {"PID_FILE": str(tmp_path / "pid")}
    run = ws.experiment("slow").submit("train.py", src, timeout=2, **kwargs)
    assert run.wait(timeout=300) == states.FAILED
    assert run.reason == "timed out after 2s (timeout=2); the run was stopped"
    assert run.metrics() == {"before": [1.0]}
    if name == "docker":
        client = request.getfixturevalue("docker_client")
        wait_for(lambda: container_gone(client, run.id), "the container is removed")
    else:
        wait_for(lambda: process_gone(int((tmp_path / "pid").read_text())),
                 "the script's process ends")
        assert not (run.folder / "work").exists()        # its work folder is cleaned up


def test_timeout_of_a_script_that_ignores_sigterm_ends_with_sigkill(workspace, make_source,
                                                                   tmp_path):
    pid_file = tmp_path / "pid"
    src = make_source(f"""
        import os, signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        open({str(pid_file)!r}, "w").write(str(os.getpid()))
        print("ignoring SIGTERM", flush=True)
        time.sleep(600)
    """)
    run = workspace.experiment("stubborn").submit("train.py", src, target="local", timeout=1)
    try:
        assert run.wait(timeout=120) == states.FAILED
        assert run.reason.startswith("timed out after 1s")
        wait_for(lambda: pid_file.exists() and process_gone(int(pid_file.read_text())),
                 "the script is killed", within=30)
    finally:
        if pid_file.exists() and not process_gone(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)   # leave nothing behind


# -- kill -9 of a model registration --------------------------------------------------------------
def test_registration_killed_mid_copy_leaves_no_temp_folder_after_the_next_open(workspace,
                                                                               make_source):
    src = make_source("""
        import os
        os.makedirs("outputs", exist_ok=True)
        open("outputs/model.pt", "wb").write(os.urandom(2**20))
    """)
    run = workspace.experiment("reg").submit("train.py", src, target="local")
    assert run.wait(timeout=60) == states.COMPLETED, run.reason
    code = textwrap.dedent(f"""
        import shutil, time
        from celltrain import Workspace
        copy = shutil.copy2
        def paused(*args, **kwargs):     # the copy is done; hang before the version commits
            copy(*args, **kwargs)
            print("copied", flush=True)
            time.sleep(600)
        shutil.copy2 = paused
        Workspace({str(workspace.path)!r}, reconcile=False).run({run.id!r}).register_model(
            "birds", "outputs/model.pt")
    """)
    registrar = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert registrar.stdout.readline().startswith("copied")
        models = workspace.path / "models"
        [tmp] = [p for p in models.iterdir() if p.name.startswith(TMP_PREFIX)]
        Workspace(workspace.path)            # opened while the registration is under way:
        assert tmp.is_dir()                  # its temporary folder is kept
    finally:
        registrar.kill()
        registrar.wait()
    Workspace(workspace.path)                # opened after it died: the leftover goes
    assert not tmp.exists()
    assert [p.name for p in models.iterdir() if p.name.startswith(TMP_PREFIX)] == []
    again = workspace.run(run.id).register_model("birds", "outputs/model.pt")
    assert again.version == 1 and again.verify()


def test_export_and_delete_leftovers_are_cleaned_or_put_back(workspace, make_source):
    """Temp folders of an ONNX export or a delete that died: garbage goes, a folder moved
    aside by a transaction that never committed comes back."""
    src = make_source("""
        import os
        os.makedirs("outputs", exist_ok=True)
        open("outputs/model.pt", "wb").write(b"weights")
    """)
    run = workspace.experiment("reg").submit("train.py", src, target="local")
    assert run.wait(timeout=60) == states.COMPLETED, run.reason
    model = run.register_model("birds", "outputs/model.pt")
    artifacts = model.folder / "artifacts"
    (artifacts / f"{TMP_PREFIX}onnx-0badc0de").mkdir(parents=True)      # a dead export
    (artifacts / f"{TMP_PREFIX}onnx-0badc0de" / "model.onnx").write_bytes(b"half")
    (artifacts / f"{TMP_PREFIX}old-onnx-12345678").mkdir()               # died mid-swap
    (artifacts / f"{TMP_PREFIX}old-onnx-12345678" / "model.onnx").write_bytes(b"previous")
    models = workspace.path / "models"
    trash = models / f"{TMP_PREFIX}deleted-birds-1-abcdef01"             # died before commit
    os.rename(model.folder, trash)
    (models / f"{TMP_PREFIX}deleted-gone-7-abcdef02").mkdir()           # its row is deleted
    Workspace(workspace.path)
    assert [p.name for p in models.iterdir() if p.name.startswith(TMP_PREFIX)] == []
    assert model.verify()                                                # put back in place
    assert sorted(p.name for p in artifacts.iterdir()) == ["onnx"]
    assert (artifacts / "onnx" / "model.onnx").read_bytes() == b"previous"
