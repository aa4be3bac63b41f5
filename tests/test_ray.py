"""The ray target on a real Ray cluster on this machine (tests/ray_cluster.py: a head without
CPUs and two workers of 1 CPU each, separate raylets): runs of several nodes land on different
Ray nodes, cancel reaches every node, a run that cannot fit says what is missing.  The shared
target suite (tests/targets) runs against the same cluster."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from celltrain import states
from celltrain.workspace import supervisor_alive
from ray_cluster import require_ray
from test_distributed_docker import DDP

pytestmark = pytest.mark.docker
WAIT_S = 300


@pytest.fixture
def cluster_ws(ray_cluster, docker_workspace):
    docker_workspace.add_target("cluster", "ray", address=ray_cluster.address)
    return docker_workspace


def _settled(run, docker_client, workspace):
    """The run's containers once its supervisor has finished."""
    deadline = time.monotonic() + 60
    while supervisor_alive(run.folder) and time.monotonic() < deadline:
        time.sleep(0.2)
    label = {"label": f"celltrain.workspace={workspace.path}"}
    return docker_client.containers.list(all=True, filters=label)


def _two_waiting_nodes(workspace, tmp_path):
    """A run of 2 nodes that waits, once both its ranks have started."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "wait.py").write_text("import time\nprint('up', flush=True)\ntime.sleep(600)\n")
    run = workspace.experiment("wait").submit("wait.py", src, target="cluster", nodes=2)
    deadline = time.monotonic() + WAIT_S
    while len(run.ranks()) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(run.ranks()) == 2, run.logs()
    return run


def test_without_ray_naming_the_target_says_how_to_install_it(tmp_path):
    code = ("import sys; sys.modules['ray'] = None\n"
            "from celltrain import Workspace\n"
            f"ws = Workspace({str(tmp_path / 'ws')!r})\n"
            "try:\n"
            "    ws.add_target('gpu-cluster', 'ray', address='auto')\n"
            "except Exception as e:\n"
            "    print(type(e).__name__, e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert "pip install 'celltrain[ray]'" in out.stdout, out.stdout + out.stderr


@pytest.mark.parametrize("settings, words", [
    ({"adress": "auto"}, "a ray target takes address, scale_timeout, not adress"),
    ({"address": ""}, "address='' is not a Ray address"),
    ({"scale_timeout": "soon"}, "scale_timeout='soon' is not a number of seconds"),
])
def test_bad_settings_are_refused_naming_them(workspace, settings, words):
    require_ray()
    with pytest.raises(ValueError, match=words):
        workspace.add_target("c", "ray", **settings)


def test_gpu_ids_are_refused_on_a_cluster(workspace, make_source):
    require_ray()
    workspace.add_target("c", "ray", address="127.0.0.1:1")
    with pytest.raises(ValueError, match="give the GPUs each node needs as a count"):
        workspace.experiment("e").submit("train.py", make_source("pass"), target="c",
                                         gpus=[0, 1])
    with pytest.raises(ValueError, match="launcher='mpi'"):
        workspace.experiment("e").submit("train.py", make_source("pass"), target="c",
                                         nodes=2, launcher="mpi")


def test_two_nodes_ddp_ranks_land_on_different_ray_nodes(cluster_ws, ray_cluster, docker_client,
                                                         tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "ddp.py").write_text(DDP)
    run = cluster_ws.experiment("ddp").submit("ddp.py", src, target="cluster", nodes=2,
                                              procs_per_node=1)
    assert run.wait(timeout=WAIT_S) == states.COMPLETED, (run.reason, run.logs()[-3000:])
    out = run.folder / "outputs"
    digests = {(out / "params-0.txt").read_text() if (out / "params-0.txt").exists() else None,
               *(p.read_text() for p in out.rglob("params-*.txt"))} - {None}
    assert len(list(out.rglob("params-*.txt"))) == 2, sorted(map(str, out.rglob("*")))
    assert len(digests) == 1, digests                  # the all-reduce crossed the nodes
    ranks = run.ranks()
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r["state"] == "completed" for r in ranks)
    hosts = [r["host"]["node_id"] for r in ranks]
    assert len(set(hosts)) == 2, ranks                 # one Ray node each (STRICT_SPREAD)
    head = json.loads((run.folder / "nodes.json").read_text())
    assert {h["node_id"] for h in head} == set(hosts)
    assert len(run.metrics()["loss"]) == 5 and len(run.metrics(rank=1)["loss"]) == 5
    assert "[rank 1] params" in run.logs()
    assert _settled(run, docker_client, cluster_ws) == []
    for node in ray_cluster.workers:                   # the agents' folders are gone too
        assert not any(node.folder.iterdir()), list(node.folder.iterdir())


def test_cancel_reaches_every_node(cluster_ws, docker_client, tmp_path):
    run = _two_waiting_nodes(cluster_ws, tmp_path)
    assert run.cancel(grace=2) == states.CANCELED
    assert {r["state"] for r in run.ranks()} == {"stopped"}
    assert _settled(run, docker_client, cluster_ws) == []


def test_a_run_the_cluster_cannot_hold_waits_scaling_then_fails_saying_what_is_missing(
        cluster_ws, ray_cluster, make_source):
    cluster_ws.add_target("small", "ray", address=ray_cluster.address, scale_timeout=8)
    run = cluster_ws.experiment("big").submit("train.py", make_source("print('never')"),
                                              target="small", nodes=3)
    assert run.wait(timeout=WAIT_S) == states.FAILED
    details = [h["detail"] or "" for h in run.history()]
    assert any(d.startswith("Scaling: waiting for 3 nodes with 1 CPU each; 2 of the "
                            "cluster's 3 nodes could hold one") for d in details), details
    assert "had no room for 3 nodes with 1 CPU each within 8s" in run.reason, run.reason
    # Notes before the run starts go to the build log, which the views show as the detail.
    assert "# Scaling: waiting for 3 nodes" in run.build_log()


def test_a_lost_node_fails_the_run_naming_it_and_its_container_stops_itself(
        cluster_ws, ray_cluster, docker_client, tmp_path):
    """Runs last: it kills a worker's raylet (the machine lives on), then starts it again."""
    run = _two_waiting_nodes(cluster_ws, tmp_path)
    hosts = {r["node"]: r["host"] for r in run.ranks()}
    # node 0's raylet dies: its container serves torchrun's store, so nothing else ends it
    lost = next(n for n in ray_cluster.workers if (n.folder / f"{run.id}-node0").exists())
    label = {"label": f"celltrain.run={run.id}"}
    try:
        lost.kill_raylet()
        killed = time.monotonic()
        assert run.wait(timeout=120) == states.FAILED
        assert time.monotonic() - killed < 60, "the loss took over a minute to notice"
        assert f"node 0 of the run (Ray node {hosts[0]['node_id'][:12]}" in run.reason, \
            run.reason
        assert "was lost" in run.reason
        # node 1's container was stopped and removed by the supervisor; node 0's, whose agent
        # died with the raylet, stops itself (its watchdog) and waits there to be removed
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and any(
                c.status == "running" for c in docker_client.containers.list(filters=label)):
            time.sleep(1)
        left = docker_client.containers.list(all=True, filters=label)
        assert [c.name for c in left] == [f"celltrain-{run.id}-node0"], left
        assert left[0].status == "exited"
        assert b"agent is gone" in left[0].logs()
    finally:
        lost.restart()
