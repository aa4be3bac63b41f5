"""Warm starts on the Docker target (README "Warm starts"): the second run of an environment is
forked from a worker container that imported torch after the first; everything a user sees of
a run is as for a cold one.  Real Docker, the offline image."""
from __future__ import annotations

import shutil
import time

import pytest

from celltrain import Workspace, states
from celltrain.targets.docker.warm import LABEL_WARM, WARM_DIR

from procs import until_held, with_fault_hooks
from test_azureml import make_compute, v1  # noqa: F401  (v1 is a fixture)

SCRIPT = """
import os, sys, tempfile, torch
mode = sys.argv[1] if len(sys.argv) > 1 else "plain"
from celltrain import log
x = torch.arange(10, dtype=torch.float32)
log("loss", float(x.sum()), step=0)
log("loss", float((x * 2).sum()), step=1)
print("out line", x.tolist()[:3], "run", os.environ["CELLTRAIN_RUN_ID"])
print("err line", file=sys.stderr)
os.makedirs("outputs", exist_ok=True)
open("outputs/result.txt", "w").write(f"{float(x.mean())}")
if mode == "dirty":
    open("leftover.txt", "w").write("from the first run")
    open(os.path.join(tempfile.gettempdir(), "leftover-tmp"), "w").write("x")
    torch.celltrain_mark = "dirty"
    os.environ["CELLTRAIN_DIRTY"] = "1"
if mode == "check":
    seen = [os.path.exists("leftover.txt"),
            os.path.exists(os.path.join(tempfile.gettempdir(), "leftover-tmp")),
            hasattr(torch, "celltrain_mark"), "CELLTRAIN_DIRTY" in os.environ,
            os.path.exists("/celltrain-warm/" + sys.argv[2]),
            os.path.exists("/celltrain-run/" + sys.argv[2])]
    print("seen", seen)
    sys.exit(3 if any(seen) else 0)
if mode == "sleep":
    print("sleeping", flush=True)
    import time; time.sleep(600)
if mode == "hog":
    hog = []
    while True:
        hog.append(bytearray(50 << 20))
"""


@pytest.fixture
def warm_env(monkeypatch):
    monkeypatch.setenv("CELLTRAIN_WARM", "1")
    monkeypatch.setenv("CELLTRAIN_WARM_IDLE", "120")


def submit(ws, src, *args, **kwargs):
    return ws.experiment("warm").submit("train.py", src, args=list(args), gpus="none",
                                        **kwargs)


def worker(client, ws, wait=True):
    """The workspace's warm worker container once it is ready (None if there is none)."""
    deadline = time.monotonic() + 120
    while True:
        found = client.containers.list(filters={"label": [f"celltrain.workspace={ws.path}",
                                                          LABEL_WARM]})
        if found:
            key = found[0].labels[LABEL_WARM]
            if (ws.path / WARM_DIR / key / "ready").exists() or not wait:
                return found[0]
        elif not wait:
            return None
        assert time.monotonic() < deadline, "no warm worker came up"
        time.sleep(0.2)


def gives_the_cold_result(run, cold) -> None:
    """SCRIPT's run gave what its cold run gave: metrics, output lines, outputs."""
    assert run.metrics() == cold.metrics()
    assert f"out line [0.0, 1.0, 2.0] run {run.id}" in run.logs()
    assert (run.folder / "outputs" / "result.txt").read_text() == "4.5"


def finished(run, status=states.COMPLETED):
    run.wait(timeout=300)
    assert run.status == status, (run.status, run.reason, run.logs())
    return run


def test_second_run_starts_warm_and_gives_what_a_cold_one_gives(
        docker_workspace, docker_client, make_source, warm_env):
    src = make_source(SCRIPT)
    cold = finished(submit(docker_workspace, src))
    assert not cold.started_warm
    worker(docker_client, docker_workspace)
    hot = finished(submit(docker_workspace, src))
    assert hot.started_warm
    assert hot.metrics() == cold.metrics()
    for run in (cold, hot):
        assert (run.folder / "outputs" / "result.txt").read_text() == "4.5"
        assert f"out line [0.0, 1.0, 2.0] run {run.id}" in run.logs()
        assert run.logs(stderr_only=True).strip() == "err line"
        assert run.exit_code == 0
    # the worker stays for the next run; the run's own files left its folder
    key = worker(docker_client, docker_workspace).labels[LABEL_WARM]
    assert not (docker_workspace.path / WARM_DIR / key / hot.id).exists()
    third = finished(submit(docker_workspace, src))
    assert third.started_warm


def test_nothing_of_one_warm_run_reaches_the_next(docker_workspace, docker_client,
                                                  make_source, warm_env):
    src = make_source(SCRIPT)
    finished(submit(docker_workspace, src))
    worker(docker_client, docker_workspace)
    dirty = finished(submit(docker_workspace, src, "dirty"))
    assert dirty.started_warm
    check = finished(submit(docker_workspace, src, "check", dirty.id))
    assert check.started_warm
    assert "seen [False, False, False, False, False, False]" in check.logs()


def test_cancel_timeout_and_oom_of_a_warm_run_are_as_cold(docker_workspace, docker_client,
                                                          make_source, warm_env):
    src = make_source(SCRIPT)
    finished(submit(docker_workspace, src))
    worker(docker_client, docker_workspace)
    run = submit(docker_workspace, src, "sleep")
    deadline = time.monotonic() + 120
    while "sleeping" not in run.logs():
        assert time.monotonic() < deadline and run.status in states.ACTIVE, run.reason
        time.sleep(0.2)
    assert run.started_warm
    run.cancel(grace=2)
    assert run.status == states.CANCELED and run.reason == "canceled by the user"
    timed = finished(submit(docker_workspace, src, "sleep", timeout=5), states.FAILED)
    assert timed.started_warm
    assert timed.reason.startswith("timed out after 5s"), timed.reason
    after = finished(submit(docker_workspace, src))
    assert after.started_warm   # the worker outlived both


def test_an_oom_killed_warm_run_fails_as_a_cold_one(docker_workspace, docker_client,
                                                    make_source, warm_env):
    src = make_source(SCRIPT)
    cold = finished(submit(docker_workspace, src, "hog", memory="1g"), states.FAILED)
    worker(docker_client, docker_workspace)
    hot = finished(submit(docker_workspace, src, "hog", memory="1g"), states.FAILED)
    assert hot.started_warm and not cold.started_warm
    for run in (cold, hot):
        assert run.reason.startswith("out of memory: the container was OOM-killed"), run.reason
        assert run.exit_code == 137
    assert finished(submit(docker_workspace, src, memory="1g")).started_warm


def test_a_worker_killed_between_runs_means_a_cold_start(docker_workspace, docker_client,
                                                         make_source, warm_env):
    src = make_source(SCRIPT)
    finished(submit(docker_workspace, src))
    worker(docker_client, docker_workspace).kill()
    run = finished(submit(docker_workspace, src))
    assert not run.started_warm
    assert run.metrics()["loss"] == [45.0, 90.0]


def test_a_worker_lost_after_the_claim_means_a_cold_start_not_a_failed_run(
        docker_workspace, docker_client, make_source, warm_env, monkeypatch, tmp_path):
    """The worker dies between the claim (the run's handle names it) and the hand-over: the
    run starts cold in a container of its own and completes as a cold run would."""
    with_fault_hooks(monkeypatch)
    src = make_source(SCRIPT)
    cold = finished(submit(docker_workspace, src))
    key = worker(docker_client, docker_workspace).labels[LABEL_WARM]
    hold = tmp_path / "launch"
    monkeypatch.setenv("CELLTRAIN_TEST_HOLD_LAUNCH", str(hold))
    run = submit(docker_workspace, src)
    until_held(hold, run)
    assert run.started_warm                       # claimed: the handle is the worker's
    worker(docker_client, docker_workspace).kill()
    hold.touch()
    finished(run)
    assert not run.started_warm
    gives_the_cold_result(run, cold)
    # the next run's worker came up after this cold run, under the same key
    assert worker(docker_client, docker_workspace).labels[LABEL_WARM] == key


def test_a_layer_run_with_a_boot_module_starts_warm_with_the_cold_result(
        v1, docker_workspace, docker_client, warm_env, monkeypatch):  # noqa: F811
    """An Azure ML v1 script (the layer's runs go through its boot module, ``RunSpec.boot``)
    runs warm as it ran cold: its azureml imports mapped, the same metrics, tags, outputs."""
    from azureml.core import Experiment, ScriptRunConfig, Workspace
    monkeypatch.setenv("CELLTRAIN_AZUREML_COMPUTE", "docker")
    ws = Workspace.from_config()
    target = make_compute(ws, "box")

    def one():
        run = Experiment(ws, "boot").submit(ScriptRunConfig(
            "src", "train.py", arguments=["--num_epochs", 3], compute_target=target))
        details = run.wait_for_completion(show_output=False)
        assert details["status"] == "Completed", run._handle.logs()[-3000:]
        return run
    cold = one()
    worker(docker_client, docker_workspace)
    hot = one()
    assert hot._handle.started_warm and not cold._handle.started_warm
    assert hot._handle.record["spec"]["boot"] == "celltrain.runtime.azureml_boot"
    for run in (cold, hot):
        assert "online 0" in run._handle.logs()
        assert run.get_tags()["framework"] == "pytorch"
        assert (run._handle.folder / "outputs" / "model.pt").read_text().startswith("weights")
    metrics = [{k: v for k, v in r.get_metrics().items() if k != "curve"} for r in (cold, hot)]
    assert metrics[0] == metrics[1] and len(metrics[0]["val_acc"]) == 3


def test_the_off_switch(docker_workspace, docker_client, make_source, monkeypatch):
    src = make_source(SCRIPT)
    monkeypatch.setenv("CELLTRAIN_WARM", "0")
    off = finished(submit(docker_workspace, src))
    assert off.record["spec"]["warm"] is False
    assert worker(docker_client, docker_workspace, wait=False) is None
    monkeypatch.setenv("CELLTRAIN_WARM", "1")
    finished(submit(docker_workspace, src))
    worker(docker_client, docker_workspace)
    assert not finished(submit(docker_workspace, src, warm=False)).started_warm


def test_no_worker_outlives_its_idle_time_or_its_workspace(docker_workspace, docker_client,
                                                          make_source, monkeypatch):
    monkeypatch.setenv("CELLTRAIN_WARM", "1")
    monkeypatch.setenv("CELLTRAIN_WARM_IDLE", "1")
    src = make_source(SCRIPT)
    finished(submit(docker_workspace, src))
    deadline = time.monotonic() + 120
    while worker(docker_client, docker_workspace, wait=False) is not None:
        assert time.monotonic() < deadline, "the idle worker did not leave"
        time.sleep(0.5)
    monkeypatch.setenv("CELLTRAIN_WARM_IDLE", "120")
    finished(submit(docker_workspace, src))
    key = worker(docker_client, docker_workspace).labels[LABEL_WARM]
    shutil.rmtree(docker_workspace.path / WARM_DIR / key)   # as a deleted workspace would
    Workspace(docker_workspace.path)   # opening it tidies
    deadline = time.monotonic() + 120
    while worker(docker_client, docker_workspace, wait=False) is not None:
        assert time.monotonic() < deadline, "the worker outlived its folder"
        time.sleep(0.5)


def test_warm_idle_must_be_a_positive_number(workspace, make_source, monkeypatch):
    monkeypatch.setenv("CELLTRAIN_WARM_IDLE", "soon")
    with pytest.raises(ValueError, match="CELLTRAIN_WARM_IDLE='soon': give the idle time"):
        workspace.experiment("warm").submit("train.py", make_source(SCRIPT), target="local")


def test_a_warm_run_in_an_image_whose_user_is_not_root(docker_workspace, docker_client,
                                                       make_source, nonroot_image, warm_env):
    from celltrain.environment import Environment
    src = make_source(SCRIPT)
    env = Environment(base_image=nonroot_image)
    cold = finished(submit(docker_workspace, src, environment=env))
    worker(docker_client, docker_workspace)
    hot = finished(submit(docker_workspace, src, environment=env))
    assert hot.started_warm and not cold.started_warm
    assert hot.metrics() == cold.metrics()
    assert (hot.folder / "outputs" / "result.txt").read_text() == "4.5"
