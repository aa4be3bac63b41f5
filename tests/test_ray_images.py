"""The run's image on a Ray node whose Docker engine lacks it: a third worker node uses a second
engine (tests/second_engine.py: its own data root, socket and containerd namespace), so the nodes
really have separate image stores; the image is streamed from the submitter through Ray, or
with the target's image_from="nodes" built on the node from the same environment."""
from __future__ import annotations

import time

import docker
import pytest

from celltrain import Environment, states
from second_engine import start_engine

pytestmark = pytest.mark.docker
WAIT_S = 300
IMAGE = "celltrain/debian:bookworm"      # small (the offline base is ~6 GB) and has python3
ONLY_NODE2 = {"celltrain-engine2": 1}


@pytest.fixture(scope="module")
def engine2(ray_cluster, tmp_path_factory):
    """The second engine, and a Ray worker node "w3" whose raylet (and so its agents) uses it
    through DOCKER_HOST; only runs asking for the resource "celltrain-engine2" land there."""
    engine = start_engine(tmp_path_factory.mktemp("engine2"))
    try:
        node = ray_cluster.add_node("w3", env={"DOCKER_HOST": engine.host},
                                    resources=ONLY_NODE2)
    except BaseException:
        engine.stop()
        raise
    yield engine
    try:
        ray_cluster.remove_node(node)
    finally:
        engine.stop()


def test_a_node_whose_engine_lacks_the_image_gets_it_through_ray(
        ray_cluster, engine2, docker_workspace, docker_client, make_source):
    here = docker_client.images.get(IMAGE)
    there = engine2.client()
    with pytest.raises(docker.errors.ImageNotFound):
        there.images.get(IMAGE)
    docker_workspace.add_target("node2", "ray", address=ray_cluster.address,
                                resources=ONLY_NODE2)
    since = int(time.time()) - 1
    run = docker_workspace.experiment("image").submit(
        "train.py", make_source("print('ran', flush=True)"), target="node2", gpus="none",
        environment=Environment(base_image=IMAGE))
    assert run.wait(timeout=WAIT_S) == states.COMPLETED, (run.reason, run.build_log())
    assert "ran" in run.logs()
    assert there.images.get(IMAGE).id == here.id           # the same image, bit for bit
    log = run.build_log()
    assert f"image {IMAGE} is not on node 0" in log, log
    assert f"image {IMAGE} sent to node 0" in log, log
    # the run's container was made, run and removed by the second engine
    events = {e["Action"] for e in there.events(
        since=since, until=int(time.time()) + 1, decode=True,
        filters={"type": "container", "label": f"celltrain.run={run.id}"})}
    assert {"create", "start", "die", "destroy"} <= events, events


def test_image_from_nodes_builds_the_image_on_the_node_from_the_same_environment(
        ray_cluster, engine2, docker_workspace, docker_client, make_source):
    """Offline, the node's engine needs the base image first: it is loaded there (as a node
    would pull it), then the environment's image is built there, not sent from here."""
    there = engine2.client()
    there.images.load(b"".join(docker_client.images.get(IMAGE).save()))
    docker_workspace.add_target("node2-builds", "ray", address=ray_cluster.address,
                                resources=ONLY_NODE2, image_from="nodes")
    mark = f"built-on-the-node-{time.time_ns()}"        # an environment no engine has built
    env = Environment(base_image=IMAGE, setup=[f"echo {mark} > /celltrain-built"])
    run = docker_workspace.experiment("image").submit(
        "train.py", make_source("print(open('/celltrain-built').read(), flush=True)"),
        target="node2-builds", gpus="none", environment=env)
    assert run.wait(timeout=WAIT_S) == states.COMPLETED, (run.reason, run.build_log())
    assert mark in run.logs()
    log = run.build_log()
    assert "image built on node 0" in log, log
    assert "is not on node 0" not in log, log              # nothing streamed
    built = [t for i in there.images.list("celltrain/env") for t in i.tags]
    assert len(built) == 1, built
    with pytest.raises(docker.errors.ImageNotFound):       # and nothing built here
        docker_client.images.get(built[0])
