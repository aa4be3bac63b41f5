"""Warm starts on the Ray target (README "Ray clusters", "Warm starts"): after a cold one-node
run, its node keeps the environment's worker container, the next run of that environment is
placed on that node and forked from it, and a worker lost after the claim means a cold start,
not a failed run.  A real local cluster (tests/ray_cluster.py), real Docker."""
from __future__ import annotations

import json
import time

import pytest

from celltrain.targets.docker.warm import LABEL_WARM, WARM_DIR
from celltrain.targets.ray.warmnode import HINTS, folder_name

from procs import until_held, with_fault_hooks
from ray_cluster import remove_node_workers
from test_warm_docker import SCRIPT, finished, gives_the_cold_result, submit

pytestmark = pytest.mark.docker


@pytest.fixture
def warm_cluster_ws(ray_cluster, docker_workspace, docker_client, monkeypatch):
    monkeypatch.setenv("CELLTRAIN_WARM", "1")
    monkeypatch.setenv("CELLTRAIN_WARM_IDLE", "120")
    docker_workspace.add_target("cluster", "ray", address=ray_cluster.address)
    yield docker_workspace
    remove_node_workers(docker_workspace, docker_client, ray_cluster)


def _workers(client, ws) -> list:
    """The warm worker containers the nodes keep for ``ws``."""
    return [c for c in client.containers.list(all=True, filters={"label": LABEL_WARM})
            if c.labels.get("celltrain.workspace", "").endswith(folder_name(ws.path))]


def _ready_worker(client, ws, cluster):
    """The node's worker once it has run its imports."""
    deadline = time.monotonic() + 180
    while True:
        for node in cluster.workers:
            if list((node.folder / folder_name(ws.path) / WARM_DIR).glob("*/ready")):
                found = [c for c in _workers(client, ws) if c.status == "running"]
                if found:
                    return found[0]
        assert time.monotonic() < deadline, "no warm worker came up on a node"
        time.sleep(0.2)


def _node(run) -> str:
    return json.loads((run.folder / "nodes.json").read_text())[0]["node_id"]


def test_the_next_run_lands_on_the_node_of_its_worker_and_starts_warm(
        warm_cluster_ws, ray_cluster, docker_client, make_source):
    src = make_source(SCRIPT)
    cold = finished(submit(warm_cluster_ws, src, target="cluster"))
    assert not cold.started_warm
    _ready_worker(docker_client, warm_cluster_ws, ray_cluster)
    assert [p.read_text() for p in (warm_cluster_ws.path / HINTS).iterdir()] == [_node(cold)]
    for _ in range(2):     # the placement is asked for, not luck of one draw of two nodes
        run = finished(submit(warm_cluster_ws, src, target="cluster"))
        assert run.started_warm and _node(run) == _node(cold)
        assert cold.metrics() == {"loss": [45.0, 90.0]}
        gives_the_cold_result(run, cold)
        assert "err line" in (run.folder / "stderr.log").read_text()


def test_a_worker_lost_after_the_claim_means_a_cold_start_not_a_failed_run(
        warm_cluster_ws, ray_cluster, docker_client, make_source, monkeypatch, tmp_path):
    """The node's worker dies between the claim (the run's handle says warm) and the hand-over:
    the node starts the run in a container of its own, the run completes as a cold one."""
    with_fault_hooks(monkeypatch)            # before the first run: no spare supervisor
    src = make_source(SCRIPT)
    cold = finished(submit(warm_cluster_ws, src, target="cluster"))
    worker = _ready_worker(docker_client, warm_cluster_ws, ray_cluster)
    hold = tmp_path / "launch"
    monkeypatch.setenv("CELLTRAIN_TEST_HOLD_LAUNCH", str(hold))
    run = submit(warm_cluster_ws, src, target="cluster")
    until_held(hold, run)
    assert run.started_warm                       # claimed: the handle is the worker's
    worker.kill()
    hold.touch()
    finished(run)
    assert not run.started_warm
    gives_the_cold_result(run, cold)
    assert "warm worker was lost before the run reached it" in (
        run.folder / "supervisor.log").read_text()
