"""The ray target on a real Ray cluster on this machine (tests/ray_cluster.py: a head without
CPUs and two workers of 1 CPU each, separate raylets): runs of several nodes land on different
Ray nodes, cancel reaches every node, a run that cannot fit says what is missing.  The shared
target suite (tests/targets) runs against the same cluster."""
from __future__ import annotations

import json
import os
import signal
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
    yield docker_workspace
    import ray
    if ray.is_initialized():     # this process joined the cluster (reconcile, a check)
        ray.shutdown()


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
    ({"adress": "auto"}, "a ray target takes address, scale_timeout, image_from, resources, "
                         "not adress"),
    ({"address": ""}, "address='' is not a Ray address"),
    ({"scale_timeout": "soon"}, "scale_timeout='soon' is not a number of seconds"),
    ({"image_from": "hub"}, "image_from='hub': give 'submitter'"),
    ({"resources": {"CPU": 2}}, "resources=.*give the Ray custom resources"),
    ({"resources": '{"a100": -1}'}, "resources=.*positive numbers"),
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


def test_celltrain_targets_says_when_a_cluster_does_not_answer(workspace):
    require_ray()
    workspace.add_target("gone", "ray", address="127.0.0.1:1")
    out = subprocess.run([sys.executable, "-m", "celltrain.cli", "-w", str(workspace.path),
                          "targets"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "gone (ray):\n  the Ray cluster at '127.0.0.1:1' does not answer" in out.stdout, \
        out.stdout


@pytest.mark.parametrize("form", ["gcs", "ray-client", "auto"])
def test_two_nodes_ddp_ranks_land_on_different_ray_nodes(cluster_ws, ray_cluster, docker_client,
                                                         tmp_path, monkeypatch, form):
    """The same run and result whichever address form the target saved: the GCS address, the
    head's Ray Client address (ray://, the supervisor a client driver: placement group,
    detached agents and the snapshot's object ref through the client server) or "auto" (Ray's
    RAY_ADDRESS, which the detached supervisor inherits)."""
    target = "cluster"
    if form == "ray-client":
        target = "client"
        cluster_ws.add_target(target, "ray", address=ray_cluster.client_address)
    elif form == "auto":
        target = "auto"
        monkeypatch.setenv("RAY_ADDRESS", ray_cluster.address)
        cluster_ws.add_target(target, "ray", address="auto")
    src = tmp_path / "src"
    src.mkdir()
    (src / "ddp.py").write_text(DDP)
    run = cluster_ws.experiment("ddp").submit("ddp.py", src, target=target, nodes=2,
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


def test_each_gpu_bundle_gets_the_gpu_ids_ray_gave_it(ray_cluster):
    """The ids a run's containers get are the ones Ray reserved for its bundle: two runs on
    one node of two GPUs get one each, and asking again in a bundle gives the same one.  The
    node declares 2 GPUs it does not have (a stand-in: no GPU here; Ray only counts them)."""
    from ray.util.placement_group import placement_group, remove_placement_group
    from celltrain.targets.ray import cluster, host
    node = ray_cluster.add_node("gpus", resources={"celltrain-test-fake-gpus": 2}, gpus=2)
    ray = cluster.connect(ray_cluster.address)
    groups = []
    try:
        wanted = [{"GPU": 1.0, "celltrain-test-fake-gpus": 1.0}]
        for _ in range(2):
            groups.append(placement_group(wanted, strategy="PACK"))
            assert ray.get(groups[-1].ready(), timeout=WAIT_S)
        ids = [host.gpu_ids(ray, g, wanted) for g in groups]
        assert sorted(i[0][0] for i in ids) == ["0", "1"], ids
        assert [host.gpu_ids(ray, g, wanted) for g in groups] == ids
        assert host.gpu_ids(ray, groups[0], [{"CPU": 1.0}]) == [[]]     # no GPU: no task
    finally:
        for g in groups:
            remove_placement_group(g)
        cluster.disconnect()
        ray_cluster.remove_node(node)


def test_celltrain_targets_lists_the_clusters_nodes_and_free_gpus(cluster_ws, ray_cluster):
    out = subprocess.run([sys.executable, "-m", "celltrain.cli", "-w", str(cluster_ws.path),
                          "targets"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "cluster (ray):" in text, text
    rows = [line.split() for line in text.split("cluster (ray):")[1].splitlines()
            if "alive" in line.split() or "dead" in line.split()]
    alive = [r for r in rows if r[2] == "alive"]    # a node an earlier test removed: dead
    assert len(alive) == len(ray_cluster.nodes), text          # head and workers
    assert all(r[1].count(".") == 3 for r in rows), text        # their addresses
    assert sorted(r[3] for r in alive) == ["0", "1", "1"], text       # CPUs: head, w1, w2
    assert all(r[4:6] == ["0", "(0)"] and r[6] == "Docker" for r in alive), text
    assert f"{len(alive)} of {len(rows)} nodes alive; GPUs: 0 free of 0" in text, text


def test_a_sweep_on_the_cluster_runs_trials_at_once_on_different_nodes(cluster_ws, make_source):
    from celltrain import choice
    from test_sweeps import most_at_once
    src = make_source("import sys, time\n"
                      "from celltrain import Run\n"
                      "time.sleep(30)   # long enough for the other trial to start\n"
                      "Run.get_context().log('score', float(sys.argv[-1]))\n")
    sweep = cluster_ws.experiment("sweep").sweep(
        "train.py", src, target="cluster", gpus="none", params={"x": choice([1, 2])},
        metric="score", sampler="grid", max_runs=2, max_concurrent=2)
    assert sweep.wait(timeout=WAIT_S * 2) == states.COMPLETED, sweep.reason
    children = cluster_ws.store.child_runs(sweep.id)
    assert [c["status"] for c in children] == [states.COMPLETED] * 2, \
        [c["reason"] for c in children]
    assert most_at_once([(c["started"], c["ended"]) for c in children]) == 2
    nodes = [json.loads((cluster_ws.store.run_dir(c["id"]) / "nodes.json").read_text())[0]
             for c in children]
    assert nodes[0]["node_id"] != nodes[1]["node_id"], nodes


def _held(ray, run_id: str) -> list:
    """[run id, node] of the run's agents the nodes' hosts hold."""
    from celltrain.targets.ray import host
    hosts = [host.host(ray, n, start=False) for n in host.live_nodes(ray)]
    return sorted(h for found in hosts if found is not None
                  for h in ray.get(found.held.remote()) if h[0] == run_id)


def test_opening_the_workspace_removes_an_ended_runs_group_agents_and_containers(
        cluster_ws, docker_client, tmp_path):
    """A supervisor killed after its run ended, before its clean-up, leaves them behind."""
    from ray.util.placement_group import get_placement_group
    from celltrain import Workspace
    from celltrain.targets.ray import cluster
    from test_runs_local import _supervisor_pid
    run = _two_waiting_nodes(cluster_ws, tmp_path)
    os.kill(_supervisor_pid(run.folder), signal.SIGKILL)
    cluster_ws.store.set_status(run.id, states.FAILED, "its supervisor died after the end")
    ray = cluster.connect(cluster_ws.store.saved_target("cluster")["settings"]["address"])
    try:
        assert _held(ray, run.id) == [[run.id, 0], [run.id, 1]]
        Workspace(cluster_ws.path)
        assert _held(ray, run.id) == []
        with pytest.raises(ValueError):
            get_placement_group(cluster.group_name(run.id))
    finally:
        ray.shutdown()
    label = {"label": f"celltrain.run={run.id}"}
    assert docker_client.containers.list(all=True, filters=label) == []
    assert not (cluster_ws.path / "ray-leftovers" / run.id).exists()


def test_train_magic_nodes_2_on_the_cluster_from_a_real_kernel(cluster_ws, tmp_path):
    from jupyter_client.manager import start_new_kernel
    from test_distributed_magics import ALL_REDUCE
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(tmp_path))

    def execute(code):
        reply = kc.execute_interactive(code, timeout=WAIT_S * 2, output_hook=out.append)
        assert reply["content"]["status"] == "ok", reply["content"]
        return "".join(m["content"].get("text", "") for m in out if m["msg_type"] == "stream")

    out: list = []
    try:
        execute(f"%load_ext celltrain\n%train config workspace={cluster_ws.path} "
                "experiment=ray")
        execute("%%train --target cluster --nodes 2 --gpus none --out world -o r\n" + ALL_REDUCE)
        out.clear()
        text = execute("print(world, r.status, len({x['host']['node_id'] for x in r.ranks()}))")
        assert text.strip() == "(0, 2, '0') Completed 2", text
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


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
        assert (cluster_ws.path / "ray-leftovers" / run.id).is_file()
    finally:
        lost.restart()
    # the node is back: opening the workspace removes the stopped container and its folder
    from celltrain import Workspace
    Workspace(cluster_ws.path)
    assert docker_client.containers.list(all=True, filters=label) == []
    assert not (lost.folder / f"{run.id}-node0").exists()
    assert not (cluster_ws.path / "ray-leftovers" / run.id).exists()


def _ready_spare(workspace) -> subprocess.Popen:
    """A spare supervisor of ``workspace``, once it waits for a run (its warm-up done)."""
    from celltrain.spare import SPARE_FIFO
    spare = subprocess.Popen([sys.executable, "-m", "celltrain.spare", str(workspace.path)],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and spare.poll() is None:
        try:
            os.close(os.open(workspace.path / SPARE_FIFO, os.O_WRONLY | os.O_NONBLOCK))
            return spare
        except OSError:      # nobody reads the fifo yet
            time.sleep(0.1)
    spare.kill()
    raise AssertionError(f"the spare did not get ready (exit code {spare.poll()})")


def _imported_ray(pid: int) -> bool:
    with open(f"/proc/{pid}/maps") as maps:
        return "_raylet" in maps.read()


def test_the_spare_of_a_workspace_with_a_ray_target_joins_the_cluster_before_the_run(
        cluster_ws, ray_cluster, make_source):
    spare = _ready_spare(cluster_ws)
    try:
        assert _imported_ray(spare.pid)
        drivers = list(ray_cluster.root.glob(f"head/ray/session_*/logs/"
                                             f"python-core-driver-*_{spare.pid}.log"))
        assert drivers, "the spare is not a driver of the cluster"
        run = cluster_ws.experiment("spare").submit(
            "train.py", make_source("print('via the spare')"), target="cluster")
        assert run.wait(timeout=WAIT_S) == states.COMPLETED, (run.reason, run.logs()[-2000:])
        assert "via the spare" in run.logs()
        log = (run.folder / "supervisor.log").read_text()
        assert f"spare supervisor {spare.pid} was handed the run" in log, log
        spare.wait(timeout=60)
    finally:
        if spare.poll() is None:
            spare.kill()
            spare.wait()


def test_a_spare_handed_a_docker_run_leaves_the_cluster_before_running_it(
        cluster_ws, ray_cluster, make_source):
    """The spare joined the saved Ray target's cluster ahead of a run (above); handed a run of
    another target it leaves the cluster (``cool_down``), so that run does not hang on it."""
    import ray
    spare = _ready_spare(cluster_ws)
    try:
        run = cluster_ws.experiment("spare").submit("train.py", make_source(
            "import time\nprint('up', flush=True)\ntime.sleep(60)\n"), target="docker",
            gpus="none")
        deadline = time.monotonic() + WAIT_S
        while "up" not in run.logs() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "up" in run.logs(), (run.status, run.reason)
        log = (run.folder / "supervisor.log").read_text()
        assert f"spare supervisor {spare.pid} was handed the run" in log, log
        ray.init(address=ray_cluster.address, namespace="celltrain-test", log_to_driver=False)
        try:
            spares = [j for j in ray._private.state.jobs() if j["DriverPid"] == spare.pid]
        finally:
            ray.shutdown()
        assert spares, "the spare never joined the cluster"
        assert all(j["IsDead"] for j in spares), spares
        assert spare.poll() is None              # it supervises the Docker run all the same
        assert run.cancel(grace=1) == states.CANCELED
    finally:
        if spare.poll() is None:
            spare.kill()
            spare.wait()


def test_a_workspace_without_a_ray_target_never_imports_ray(workspace):
    spare = _ready_spare(workspace)
    try:
        assert not _imported_ray(spare.pid)
    finally:
        spare.kill()
        spare.wait()

