"""Docker faults: cancel in every state, a failing supervisor, build isolation, leftovers, and an
engine restart (last in this module: it restarts the shared engine and brings it back as it was).

Holds and faults come from tests/fault_hooks/sitecustomize.py, loaded by the supervisors these
tests spawn: a run waits at a real point of its life until the test lets it go on.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from celltrain import Environment, Workspace, states
from celltrain.targets.docker.engine import LABEL_BUILD, LABEL_RUN
from celltrain.workspace import supervisor_alive
from missing import unavailable

pytestmark = pytest.mark.docker

HOOKS = str(Path(__file__).parent / "fault_hooks")
SLEEPER = """
    import time
    from celltrain import log
    print("started", flush=True)
    log("before", 1.0)
    print("ready", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def hooks(monkeypatch):
    """Supervisors of this test load the fault hooks; no spare (it would carry the hooks on)."""
    import celltrain.workspace
    monkeypatch.setattr(celltrain.workspace, "SPARES", False)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (HOOKS, os.environ.get("PYTHONPATH")) if p))

    def hold(variable: str, path: Path) -> Path:
        monkeypatch.setenv(variable, str(path))
        return path
    return hold


def until(condition, within: float = 120, what: str = "the condition"):
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def containers_of(client, run_id: str, *labels: str) -> list:
    """The run's containers that carry ``labels`` with a value (run containers blank the build
    label their image inherited, so a filter on the name alone would match them too)."""
    found = client.containers.list(all=True, filters={"label": f"{LABEL_RUN}={run_id}"})
    return [c for c in found if all(c.labels.get(label) for label in labels)]


def supervisor_pid(folder: Path) -> int:
    from test_runs_local import _supervisor_pid
    return _supervisor_pid(folder)


# -- cancel in every state -------------------------------------------------------------------------
def test_cancel_while_queued_never_starts_anything(docker_workspace, make_source, hooks,
                                                   tmp_path, docker_client):
    gate = hooks("CELLTRAIN_TEST_HOLD_SUPERVISOR", tmp_path / "go")
    run = docker_workspace.experiment("c").submit("train.py", make_source(SLEEPER), gpus="none")
    until(lambda: Path(f"{gate}.reached").exists(), what="the supervisor to start")
    assert run.cancel(grace=2, wait=False) == states.QUEUED     # answers at once
    gate.touch()
    assert run.wait(timeout=60) == states.CANCELED
    assert run.reason == "canceled before the run started"
    assert run.record["container_id"] is None and containers_of(docker_client, run.id) == []


def test_cancel_while_preparing_stops_the_build_and_commits_nothing(docker_workspace, make_source,
                                                                   docker_client, offline_image):
    env = Environment(setup=[f"echo {uuid.uuid4().hex}", "sleep 120"], base_image=offline_image)
    tag = f"celltrain/env:{env.content_hash(docker_client.images.get(offline_image).id)[:20]}"
    run = docker_workspace.experiment("c").submit("train.py", make_source(SLEEPER),
                                                  environment=env, gpus="none")
    until(lambda: "+ sleep 120" in run.build_log(), what="the build to run its setup step")
    assert containers_of(docker_client, run.id, LABEL_BUILD)   # labelled with the run
    assert run.cancel(grace=2) == states.CANCELED       # was: TimeoutError, Canceled after 74 s
    assert run.reason.startswith("canceled while preparing the image")
    assert containers_of(docker_client, run.id) == []
    assert not docker_client.images.list(name=tag), "a canceled build committed its image"
    assert "canceled: the build was stopped" in run.build_log()


def test_cancel_while_starting_runs_nothing(docker_workspace, make_source, hooks, tmp_path,
                                            docker_client):
    gate = hooks("CELLTRAIN_TEST_HOLD_START", tmp_path / "go")
    run = docker_workspace.experiment("c").submit("train.py", make_source(SLEEPER), gpus="none")
    until(lambda: Path(f"{gate}.reached").exists(), what="the run to be Starting")
    assert run.cancel(grace=2, wait=False) == states.STARTING
    gate.touch()
    assert run.wait(timeout=60) == states.CANCELED
    assert states.RUNNING not in [h["status"] for h in run.history()]  # it never ran
    assert run.record["started"] is None and run.metrics() == {}
    until(lambda: containers_of(docker_client, run.id) == [], within=20,
          what="the created container to be removed")


def test_cancel_while_finalizing_keeps_the_finished_result(docker_workspace, make_source, hooks,
                                                          tmp_path, docker_client):
    gate = hooks("CELLTRAIN_TEST_HOLD_COLLECT", tmp_path / "go")
    src = make_source("from celltrain import log\nlog('x', 1.0)\nprint('done')\n")
    run = docker_workspace.experiment("c").submit("train.py", src, gpus="none")
    until(lambda: Path(f"{gate}.reached").exists(), what="the run to be Finalizing")
    assert run.cancel(grace=2, wait=False) == states.FINALIZING
    gate.touch()
    assert run.wait(timeout=60) == states.COMPLETED     # the script had ended with exit code 0
    assert run.exit_code == 0 and run.metrics() == {"x": [1.0]}


def test_cancel_of_a_finished_run_answers_its_state_and_changes_nothing(docker_workspace,
                                                                       make_source):
    run = docker_workspace.experiment("c").submit("train.py", make_source("print(1)"),
                                                  gpus="none")
    assert run.wait(timeout=120) == states.COMPLETED
    before = (run.record, run.history())
    assert run.cancel(grace=2) == states.COMPLETED
    assert (run.record, run.history()) == before


# -- a supervisor that fails anyway -----------------------------------------------------------------
@pytest.mark.parametrize("target", ["docker", "local"])
def test_a_failing_supervisor_stops_and_removes_the_container(docker_workspace, make_source, hooks,
                                                              monkeypatch, docker_client, target):
    monkeypatch.setenv("CELLTRAIN_TEST_FAIL_WATCH", "1")
    run = docker_workspace.experiment("crash").submit("train.py", make_source(SLEEPER),
                                                      gpus="none", target=target)
    assert run.wait(timeout=120) == states.FAILED
    what = "container" if target == "docker" else "process"
    assert "celltrain could not carry the run" in run.reason
    assert "fault injected by the test" in run.reason
    assert run.reason.endswith(f"the run's {what} was stopped and removed"), run.reason
    assert run.exit_code in (137, 143)        # SIGTERM'd (or killed) by its supervisor
    assert "ready" in run.logs()              # its output was kept
    if target == "docker":
        assert containers_of(docker_client, run.id) == []
    else:
        pid = int(run.record["container_id"].split(":")[1])
        until(lambda: not Path(f"/proc/{pid}").exists(), within=20,
              what="the run's process to be gone")


def test_a_run_of_a_built_image_outlives_its_supervisor(docker_workspace, make_source,
                                                        offline_image, docker_client):
    """Its container inherits the build label from the image its build committed: reopening
    the workspace must re-attach to it, not remove it as a leftover build."""
    env = Environment(setup=["echo built > /built.txt"], base_image=offline_image)
    run = docker_workspace.experiment("built").submit("train.py", make_source("""
        import time
        from celltrain import log
        print("ready", flush=True)
        for i in range(30):
            log("x", i)
            time.sleep(0.1)
        print(open("/built.txt").read().strip())
    """), environment=env, gpus="none")
    until(lambda: "ready" in run.logs(), within=300, what="the run to start")
    os.kill(supervisor_pid(run.folder), signal.SIGKILL)
    until(lambda: not supervisor_alive(run.folder), what="the supervisor to die")
    again = Workspace(docker_workspace.path).run(run.id)
    assert again.wait(timeout=180) == states.COMPLETED, again.reason
    assert again.metrics()["x"] == list(range(30)) and "built" in again.logs()


# -- builds ------------------------------------------------------------------------------------------
def test_a_build_cannot_reach_the_hosts_loopback_services(docker_workspace, make_source,
                                                         offline_image):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    probe = (f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), "
             "timeout=5); print('REACHED', 'THE HOST')\"")
    env = Environment(setup=["grep NoNewPrivs /proc/self/status", probe],
                      base_image=offline_image)
    run = docker_workspace.experiment("b").submit("train.py", make_source("print(1)"),
                                                  environment=env, gpus="none")
    try:
        assert run.wait(timeout=300) == states.FAILED, "the build reached the host's 127.0.0.1"
        with pytest.raises(BlockingIOError):
            listener.accept()                     # nobody connected
    finally:
        listener.close()
    assert "ConnectionRefusedError" in run.build_log()
    assert "REACHED THE HOST" not in run.build_log()
    assert "NoNewPrivs:\t1" in run.build_log()    # hardened like a run


def test_an_orphaned_build_container_is_removed_and_the_run_carried_on(docker_workspace,
                                                                      make_source, docker_client,
                                                                      offline_image):
    env = Environment(setup=[f"echo {uuid.uuid4().hex}", "sleep 5"], base_image=offline_image)
    run = docker_workspace.experiment("b").submit("train.py", make_source("print('trained')"),
                                                  environment=env, gpus="none")
    until(lambda: containers_of(docker_client, run.id, LABEL_BUILD), what="the build to start")
    [orphan] = containers_of(docker_client, run.id, LABEL_BUILD)
    os.kill(supervisor_pid(run.folder), signal.SIGKILL)
    until(lambda: not supervisor_alive(run.folder), what="the supervisor to be gone")
    assert [c.id for c in containers_of(docker_client, run.id, LABEL_BUILD)] == [orphan.id]
    reopened = Workspace(docker_workspace.path)        # a new kernel, say
    assert orphan.id not in [c.id for c in containers_of(docker_client, run.id)]
    again = reopened.run(run.id)
    try:
        assert again.wait(timeout=300) == states.COMPLETED, again.reason
        assert "trained" in again.logs()
    finally:
        if again.record["image"]:
            docker_client.images.remove(again.record["image"], force=True)


# -- the engine restarts (keep this last: it restarts the shared engine) ----------------------------
def _dockerd() -> tuple[int, list[str], str]:
    """The running dockerd: its pid, command line and log file, or a skip (a fail under CI)."""
    problem = None
    try:
        pid = int(Path("/var/run/docker.pid").read_text())
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        log = os.readlink(f"/proc/{pid}/fd/1")
    except (OSError, ValueError) as e:
        problem = f"this test restarts dockerd and needs root and a local dockerd ({e})"
    else:
        info = subprocess.run(["docker", "info", "--format", "{{.LiveRestoreEnabled}}"],
                              capture_output=True, text=True).stdout.strip()
        if info != "true":
            problem = "dockerd runs without --live-restore (.ci/ensure-docker starts it so)"
    if problem:
        unavailable(problem)
    return pid, [c.decode() for c in cmd], log


def _engine_answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


ENGINE_RUN = """
    import os, sys, time
    from celltrain import log
    def wait_for(name):
        while not os.path.exists(os.path.join(os.environ["CELLTRAIN_TELEMETRY_DIR"], name)):
            time.sleep(0.05)
    for i in range(5):
        log("x", i)
    print("ready", flush=True)
    wait_for("engine-down")          # the test stopped the engine
    if {code}:
        sys.exit({code})             # exits while the engine is down
    for i in range(5, 10):
        log("x", i)
    wait_for("engine-up")            # still running when the engine is back
    print("finished", flush=True)
"""


def test_engine_restart_reattaches_running_containers_and_records_exits(
        docker_workspace, make_source, monkeypatch, docker_client):
    """Run `goes` survives a dockerd restart (live-restore) and completes with all its points;
    run `exits` ends while the engine is down, its supervisor gives up (CELLTRAIN_ENGINE_WAIT=2),
    and the next workspace open records its true exit code and removes its container."""
    pid, cmd, log = _dockerd()
    import celltrain.workspace
    monkeypatch.setattr(celltrain.workspace, "SPARES", False)
    exp = docker_workspace.experiment("engine")
    goes = exp.submit("train.py", make_source(ENGINE_RUN.format(code=0), folder="goes"),
                      gpus="none")
    monkeypatch.setenv("CELLTRAIN_ENGINE_WAIT", "2")
    exits = exp.submit("train.py", make_source(ENGINE_RUN.format(code=3), folder="exits"),
                       gpus="none")
    for run in (goes, exits):
        until(lambda: "ready" in run.logs(), what=f"{run.id} to be running")
    telemetry = {run: run.folder / "telemetry" for run in (goes, exits)}
    try:
        os.kill(pid, signal.SIGTERM)
        until(lambda: not Path(f"/proc/{pid}").exists(), within=60, what="dockerd to stop")
        for run in (goes, exits):
            (telemetry[run] / "engine-down").touch()
        until(lambda: exits.status == states.FAILED, within=60,
              what="the supervisor of `exits` to give up")
    finally:
        if not _engine_answers():
            with open(log, "ab") as out:
                subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                 start_new_session=True)
        until(_engine_answers, within=120, what="dockerd to answer again")
    assert "did not come back within 2s" in exits.reason and exits.exit_code is None
    Workspace(docker_workspace.path)                   # the next open, engine up
    assert exits.exit_code == 3
    assert "its container exited with code 3" in exits.reason
    assert containers_of(docker_client, exits.id) == []
    (telemetry[goes] / "engine-up").touch()
    assert goes.wait(timeout=120) == states.COMPLETED, goes.reason
    assert goes.metrics()["x"] == list(range(10))
    assert "finished" in goes.logs() and goes.exit_code == 0
    assert any("Docker engine unreachable since" in (h["detail"] or "") for h in goes.history())
    until(lambda: containers_of(docker_client, goes.id) == [], within=20,
          what="the finished run's container to be removed")
