"""Runs in real containers on a real Docker engine (the offline base image)."""
from __future__ import annotations

import os
import time

import pytest

from celltrain import DockerUnavailable, Environment, GPUUnavailable, states
from celltrain.targets.docker.engine import LABEL_RUN, device_requests

pytestmark = pytest.mark.docker

PROBE = """
import json, os, sys
from celltrain import Run
run = Run.get_context()
for i in range(5):
    run.log("loss", 1.0 / (i + 1))
status = open("/proc/self/status").read()
facts = {
    "no_new_privs": "NoNewPrivs:\\t1" in status,
    "docker_socket": os.path.exists("/var/run/docker.sock"),
    "shm_bytes": os.statvfs("/dev/shm").f_blocks * os.statvfs("/dev/shm").f_frsize,
    "env": os.environ.get("GREETING"),
    "data": open("/data/hello.txt").read(),
    "params": run.params,
}
try:
    open("/data/new.txt", "w")
    facts["data_writable"] = True
except OSError:
    facts["data_writable"] = False
os.makedirs("outputs", exist_ok=True)
os.makedirs("logs", exist_ok=True)
json.dump(facts, open("outputs/facts.json", "w"))
open("logs/train.log", "w").write("epoch 1\\n")
print("argv", sys.argv[1:])
"""


def test_container_run_end_to_end(docker_workspace, make_source, tmp_path, docker_client):
    src = make_source(PROBE)
    data = tmp_path / "data"
    data.mkdir()
    (data / "hello.txt").write_text("hi")
    run = docker_workspace.experiment("probe").submit(
        "train.py", src, args=["--num_epochs", 2], gpus="none",
        env_vars={"GREETING": "hello"}, mounts={str(data): "/data"}, params={"lr": 0.5},
        memory="2g", cpus=1)
    assert run.wait(timeout=300) == states.COMPLETED, run.reason
    import json
    facts = json.loads((run.folder / "outputs" / "facts.json").read_text())
    assert facts["no_new_privs"] and not facts["docker_socket"]
    assert facts["shm_bytes"] >= 2 * 1024**3
    assert facts["env"] == "hello" and facts["data"] == "hi" and not facts["data_writable"]
    assert facts["params"] == {"lr": 0.5}
    assert run.metrics()["loss"] == [1.0, 0.5, 1 / 3, 0.25, 0.2]
    assert {"outputs/facts.json", "logs/train.log", "output.log"} <= set(run.files())
    assert "argv ['--num_epochs', '2']" in run.logs()
    record = run.record
    assert record["image_digest"].startswith("sha256:")
    assert [h["status"] for h in run.history()] == list(states.ORDER)
    # the container is removed right after the run is finalized
    deadline = time.time() + 20
    while docker_client.api.containers(all=True, filters={"label": f"{LABEL_RUN}={run.id}"}):
        assert time.time() < deadline, "the finished run's container was not removed"
        time.sleep(0.2)


def test_failure_reports_exit_code_and_stderr(docker_workspace, make_source):
    src = make_source("import sys\nraise ValueError('bad learning rate 7')\n")
    run = docker_workspace.experiment("fail").submit("train.py", src, gpus="none")
    assert run.wait(timeout=300) == states.FAILED
    assert run.exit_code == 1
    assert "exit code 1" in run.reason and "ValueError: bad learning rate 7" in run.reason


def test_cancel_stops_the_container_and_keeps_metrics(docker_workspace, make_source):
    src = make_source("""
        import time
        from celltrain import log
        log("before", 1.0)
        print("ready", flush=True)
        time.sleep(120)
    """)
    run = docker_workspace.experiment("cancel").submit("train.py", src, gpus="none")
    deadline = time.time() + 120
    while "ready" not in run.logs() and time.time() < deadline:
        time.sleep(0.1)
    assert run.cancel(grace=5) == states.CANCELED
    assert run.metrics() == {"before": [1.0]}


def test_gpus_without_gpu_runtime_is_refused(docker_workspace, make_source, docker_client):
    """This engine has no NVIDIA runtime (no GPU here): asking for GPUs is a clear error.
    The GPU path itself is only checked on a machine with an accelerator."""
    from celltrain.targets.docker.engine import gpu_runtime_available
    if gpu_runtime_available(docker_client):
        pytest.skip("this engine has a GPU runtime: the refusal cannot happen here")
    src = make_source("print(1)")
    with pytest.raises(GPUUnavailable, match="gpus='all' was asked for.*NVIDIA Container Toolkit"):
        docker_workspace.experiment("gpu").submit("train.py", src, gpus="all")
    assert docker_workspace.runs() == []


def test_device_requests_by_construction():
    """What Docker gets for each gpus value (the requests are only honoured on a GPU host)."""
    assert device_requests("none") == []
    [every] = device_requests("all")
    assert every["Count"] == -1 and every["Capabilities"] == [["gpu"]]
    [two] = device_requests(2)
    assert two["Count"] == 2
    [ids] = device_requests(["0", "3"])
    assert ids["DeviceIDs"] == ["0", "3"]


def test_docker_down_is_a_clear_error_and_leaves_no_run(workspace, make_source, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    src = make_source("print(1)")
    with pytest.raises(DockerUnavailable, match="Docker is not reachable at "
                                                "unix:///nonexistent/docker.sock"):
        workspace.experiment("down").submit("train.py", src)
    assert workspace.runs() == []


def test_default_base_falls_back_to_the_offline_image_with_a_notice(docker_workspace,
                                                                   make_source):
    src = make_source("print('hello')")
    run = docker_workspace.experiment("default").submit("train.py", src, gpus="none")
    assert run.wait(timeout=300) == states.COMPLETED
    assert run.record["image"] == "celltrain/base:offline"
    # Said once, in words, in the run's warnings (the views' status line), not in its log.
    assert "offline base image" not in run.logs()
    notices = [w for w in run.warnings if "offline base image" in w]
    assert len(notices) == 1, run.warnings
    assert notices[0].startswith("ran on the offline base image celltrain/base:offline: ")
    assert "Server Error" not in notices[0]


def test_container_run_outlives_its_supervisor(docker_workspace, make_source):
    """The supervisor dies mid-run; the container goes on; the next opener re-attaches."""
    import signal

    from celltrain import Workspace
    from celltrain.workspace import supervisor_alive
    from test_runs_local import _supervisor_pid
    src = make_source("""
        import time
        from celltrain import log
        for i in range(20):
            log("x", i)
            time.sleep(0.1)
        print("finished")
    """)
    run = docker_workspace.experiment("orphan").submit("train.py", src, gpus="none")
    deadline = time.time() + 120
    while run.status != states.RUNNING and time.time() < deadline:
        time.sleep(0.05)
    os.kill(_supervisor_pid(run.folder), signal.SIGKILL)
    while supervisor_alive(run.folder):       # until the kernel has reaped it
        time.sleep(0.05)
    reopened = Workspace(docker_workspace.path)
    again = reopened.run(run.id)
    assert again.wait(timeout=120) == states.COMPLETED
    assert again.metrics()["x"] == list(range(20))
    assert "finished" in again.logs()


def test_an_image_whose_user_is_not_root_runs_and_keeps_its_outputs(docker_workspace, make_source,
                                                                   nonroot_image):
    """Users bring their own images, often with a non-root USER: Docker's workdir is root's."""
    src = make_source("""
        import os
        from celltrain import log
        log("uid", os.getuid())
        os.makedirs("outputs", exist_ok=True)
        open("outputs/model.txt", "w").write("trained by " + str(os.getuid()))
    """)
    try:
        run = docker_workspace.experiment("nonroot").submit(
            "train.py", src, gpus="none", environment=Environment(base_image=nonroot_image))
        assert run.wait(timeout=300) == states.COMPLETED, run.reason
    finally:
        time.sleep(1)   # the supervisor removes the run's container right after the end
    assert run.metrics()["uid"] == [65534.0]
    assert (run.folder / "outputs" / "model.txt").read_text() == "trained by 65534"
