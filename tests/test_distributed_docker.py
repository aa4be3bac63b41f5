"""Distributed runs through real containers: 2 nodes x 2 processes, gloo on the CPU."""
from __future__ import annotations

import json
import time

import pytest

from celltrain import states
from celltrain.workspace import supervisor_alive

pytestmark = pytest.mark.docker

ENV_NAMES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NODE_RANK", "GROUP_RANK",
             "MASTER_ADDR", "MASTER_PORT", "CELLTRAIN_NODE")

DDP = """
import hashlib, json, os, sys
import torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from celltrain import Run

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
os.makedirs("outputs", exist_ok=True)
json.dump({k: os.environ.get(k) for k in %(names)r},
          open(f"outputs/env-{rank}.json", "w"))
for cg in ("/sys/fs/cgroup/cpu/cpu.shares", "/sys/fs/cgroup/cpu.weight"):   # v1, v2
    if os.path.exists(cg):
        open(f"outputs/cpu-{rank}.txt", "w").write(cg + " " + open(cg).read().strip())
        break
if rank == int(os.environ.get("FAIL_RANK", "-1")):
    raise ValueError(f"boom on rank {rank}")
torch.manual_seed(0)
model = DDP(torch.nn.Linear(8, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
gen = torch.Generator().manual_seed(100 + rank)      # every rank its own shard
for step in range(5):
    x = torch.randn(16, 8, generator=gen)
    loss = ((model(x) - x.sum(1, keepdim=True)) ** 2).mean()
    opt.zero_grad(); loss.backward(); opt.step()
    Run.get_context().log("loss", loss.item(), step=step)
digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes()
                                 for p in model.parameters())).hexdigest()
open(f"outputs/params-{rank}.txt", "w").write(digest)
print("params", digest)
dist.destroy_process_group()
""" % {"names": ENV_NAMES}


def _src(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "ddp.py").write_text(DDP)
    return src


def _leftovers(docker_client, workspace, run):
    """The run's containers and networks once its supervisor has finished (it removes them
    after recording the final state)."""
    deadline = time.monotonic() + 60
    while supervisor_alive(run.folder) and time.monotonic() < deadline:
        time.sleep(0.1)
    label = {"label": f"celltrain.workspace={workspace.path}"}
    return (docker_client.containers.list(all=True, filters=label),
            docker_client.networks.list(filters=label))


def test_two_nodes_two_procs_ddp_ends_with_identical_parameters(docker_workspace, docker_client,
                                                                tmp_path):
    run = docker_workspace.experiment("ddp").submit(
        "ddp.py", _src(tmp_path), gpus="none", nodes=2, procs_per_node=2)
    run.wait(timeout=300)
    assert run.status == states.COMPLETED, (run.reason, run.logs()[-3000:])
    out = run.folder / "outputs"
    # which node a rank lands on is torchrun's rendezvous's choice: find each rank's file
    digests, envs = {}, {}
    for rank in range(4):
        found = [p for p in (out, out / "node-1") if (p / f"params-{rank}.txt").exists()]
        assert len(found) == 1, (rank, sorted(str(p) for p in out.rglob("*")))
        digests[rank] = (found[0] / f"params-{rank}.txt").read_text()
        envs[rank] = json.loads((found[0] / f"env-{rank}.json").read_text())
        assert (found[0] == out) == (envs[rank]["CELLTRAIN_NODE"] == "0")
    assert len(set(digests.values())) == 1, digests   # the all-reduce really happened
    assert sorted(int(e["RANK"]) for e in envs.values()) == [0, 1, 2, 3]
    for env in envs.values():
        assert env["WORLD_SIZE"] == "4" and env["LOCAL_WORLD_SIZE"] == "2"
        assert env["LOCAL_RANK"] in ("0", "1")
        assert env["NODE_RANK"] == env["GROUP_RANK"] == str(int(env["RANK"]) // 2)
        assert env["MASTER_ADDR"] and env["MASTER_PORT"].isdigit()
    # every rank's lines keep their rank in the stored log
    for rank in range(4):
        assert f"params {digests[rank]}" in run.logs(rank=rank)
        assert f"[rank {rank}] params" in run.logs()
    ranks = run.ranks()
    assert [r["rank"] for r in ranks] == [0, 1, 2, 3]
    assert all(r["state"] == "completed" and r["exit_code"] == 0 for r in ranks)
    assert {r["node"] for r in ranks} == {0, 1}
    assert all(r["last_line"].startswith("params ") for r in ranks)
    assert len(run.metrics()["loss"]) == 5                           # rank 0's series
    assert len(run.metrics(rank=3)["loss"]) == 5                     # and every other rank's
    assert run.metrics(rank=3)["loss"] != run.metrics()["loss"]      # its own shard's losses
    assert _leftovers(docker_client, docker_workspace, run) == ([], [])   # containers, network


def test_a_failing_rank_fails_the_run_naming_rank_and_node(docker_workspace, docker_client,
                                                          tmp_path):
    run = docker_workspace.experiment("ddp").submit(
        "ddp.py", _src(tmp_path), gpus="none", nodes=2, procs_per_node=2,
        env_vars={"FAIL_RANK": "3"})
    run.wait(timeout=300)
    assert run.status == states.FAILED
    ranks = {r["rank"]: r for r in run.ranks()}
    assert ranks[3]["state"] == "failed" and ranks[3]["exit_code"] == 1
    assert run.reason.startswith(f"rank 3 (node {ranks[3]['node']}, local rank 1) failed "
                                 "with exit code 1"), run.reason
    assert "ValueError: boom on rank 3" in run.reason
    assert _leftovers(docker_client, docker_workspace, run) == ([], [])


def test_one_node_two_procs_runs_torchrun_standalone(docker_workspace, tmp_path):
    run = docker_workspace.experiment("ddp").submit(
        "ddp.py", _src(tmp_path), gpus="none", procs_per_node=2)
    run.wait(timeout=300)
    assert run.status == states.COMPLETED, (run.reason, run.logs()[-3000:])
    digests = {(run.folder / "outputs" / f"params-{r}.txt").read_text() for r in (0, 1)}
    assert len(digests) == 1
    assert [r["node"] for r in run.ranks()] == [0, 0]
    # the node's container weighs as two processes with the CPU scheduler, not as one
    where, weight = (run.folder / "outputs" / "cpu-0.txt").read_text().split()
    shares = 2 * 1024
    assert int(weight) == (shares if where.endswith("cpu.shares")
                           else 1 + (shares - 2) * 9999 // 262142)    # runc's v1 -> v2 map


def test_cancel_stops_every_node(docker_workspace, docker_client, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "wait.py").write_text("import os, time\nprint('up', flush=True)\ntime.sleep(300)\n")
    run = docker_workspace.experiment("ddp").submit("wait.py", src, gpus="none", nodes=2)
    deadline = time.monotonic() + 120
    while len(run.ranks()) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert run.cancel(grace=2) == states.CANCELED
    assert {r["state"] for r in run.ranks()} == {"stopped"}
    assert _leftovers(docker_client, docker_workspace, run) == ([], [])


def test_a_missing_launcher_is_the_reason(docker_workspace, tmp_path):
    from celltrain import Environment
    src = _src(tmp_path)
    run = docker_workspace.experiment("ddp").submit(
        "ddp.py", src, gpus="none", procs_per_node=2,
        environment=Environment(base_image="celltrain/debian:bookworm"))
    run.wait(timeout=120)
    assert run.status == states.FAILED
    assert run.reason.startswith("torch is not installed in the run's image"), run.reason


def test_a_new_supervisor_reattaches_to_every_node(docker_workspace, docker_client, tmp_path,
                                                   monkeypatch):
    import os
    import signal

    import celltrain.workspace
    from celltrain import Workspace
    from test_runs_local import _supervisor_pid
    monkeypatch.setattr(celltrain.workspace, "SPARES", False)
    src = tmp_path / "src"
    src.mkdir()
    (src / "gate.py").write_text(
        "import os, sys, time\n"
        "print('waiting', flush=True)\n"
        "while not os.path.exists(sys.argv[1]):\n"
        "    time.sleep(0.1)\n"
        "os.makedirs('outputs', exist_ok=True)\n"
        "open(f\"outputs/done-{os.environ['RANK']}\", 'w').write('1')\n"
        "print('done', flush=True)\n")
    gate = "/celltrain-run/telemetry/go"
    run = docker_workspace.experiment("ddp").submit("gate.py", src, args=[gate], gpus="none",
                                                    nodes=2)
    deadline = time.monotonic() + 120
    while len(run.ranks()) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    os.kill(_supervisor_pid(run.folder), signal.SIGKILL)
    while supervisor_alive(run.folder):
        time.sleep(0.05)
    (run.folder / "telemetry" / "go").write_text("")     # the ranks finish while unsupervised
    again = Workspace(docker_workspace.path).run(run.id)  # a new kernel: a new supervisor
    assert again.wait(timeout=120) == states.COMPLETED, again.reason
    assert (again.folder / "outputs" / "done-0").exists()
    assert (again.folder / "outputs" / "node-1" / "done-1").exists()
    assert "[rank 1] done" in again.logs()                # Docker's logs, taken at the end
    assert _leftovers(docker_client, docker_workspace, again) == ([], [])


MPI_JOB = """
import os, torch, torch.distributed as dist
dist.init_process_group("gloo")      # env://: RANK, WORLD_SIZE from OMPI_COMM_WORLD_*
t = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(t)
print("sum", int(t.item()), os.environ["OMPI_COMM_WORLD_RANK"], os.environ["OMPI_COMM_WORLD_SIZE"],
      os.environ["MASTER_ADDR"], flush=True)
dist.destroy_process_group()
"""


def test_mpi_launcher_runs_a_2x1_job_without_ssh(docker_workspace, docker_client, tmp_path):
    from celltrain import Environment
    src = tmp_path / "src"
    src.mkdir()
    (src / "mpi.py").write_text(MPI_JOB)
    env = Environment(apt=["openmpi-bin"], base_image="celltrain/base:offline")
    run = docker_workspace.experiment("mpi").submit("mpi.py", src, gpus="none", nodes=2,
                                                    launcher="mpi", environment=env)
    run.wait(timeout=900)
    assert run.status == states.COMPLETED, (run.reason, run.logs()[-3000:])
    node0 = f"celltrain-{run.id}-node0"
    assert run.logs(rank=0).strip() == f"sum 3 0 2 {node0}"
    assert run.logs(rank=1).strip() == f"sum 3 1 2 {node0}"
    assert [(r["rank"], r["node"], r["state"]) for r in run.ranks()] == [
        (0, 0, "completed"), (1, 1, "completed")]
    assert _leftovers(docker_client, docker_workspace, run) == ([], [])


MPI_FAILING = """
import torch.distributed as dist
dist.init_process_group("gloo")
if dist.get_rank() == 3:
    raise SystemExit("rank 3 gives up: bad shard")
dist.barrier()                        # the others would wait here for ever
"""


def test_mpi_with_two_procs_per_node_and_a_failing_rank_fails_naming_it(
        docker_workspace, docker_client, tmp_path):
    from celltrain import Environment
    src = tmp_path / "src"
    src.mkdir()
    (src / "mpi.py").write_text(MPI_FAILING)
    env = Environment(apt=["openmpi-bin"], base_image="celltrain/base:offline")
    run = docker_workspace.experiment("mpi").submit("mpi.py", src, gpus="none", nodes=2,
                                                    procs_per_node=2, launcher="mpi",
                                                    environment=env)
    run.wait(timeout=900)
    assert run.status == states.FAILED, (run.reason, run.logs()[-3000:])
    assert "rank 3" in run.reason and "node 1" in run.reason, run.reason
    assert "bad shard" in run.reason, run.reason
    ranks = {r["rank"]: r for r in run.ranks()}
    assert sorted(ranks) == [0, 1, 2, 3]
    assert [ranks[r]["node"] for r in range(4)] == [0, 0, 1, 1]
    assert ranks[3]["state"] == "failed" and ranks[3]["exit_code"] == 1
    assert _leftovers(docker_client, docker_workspace, run) == ([], [])


def test_mpi_launcher_without_open_mpi_is_the_reason(docker_workspace, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "mpi.py").write_text(MPI_JOB)
    run = docker_workspace.experiment("mpi").submit("mpi.py", src, gpus="none", nodes=2,
                                                    launcher="mpi")
    run.wait(timeout=300)
    assert run.status == states.FAILED
    assert run.reason.startswith("Open MPI's mpirun is not installed in the run's image"), \
        run.reason


def test_bad_distributions_are_refused_before_the_run_exists(docker_workspace, tmp_path):
    exp = docker_workspace.experiment("ddp")
    src = _src(tmp_path)
    with pytest.raises(ValueError, match="network='host' cannot be given with nodes=2"):
        exp.submit("ddp.py", src, gpus="none", nodes=2, network="host")
    with pytest.raises(ValueError, match="nodes takes a whole number from 1 to 64, not 0"):
        exp.submit("ddp.py", src, gpus="none", nodes=0)
    with pytest.raises(ValueError, match="launcher takes one of torchrun, mpi"):
        exp.submit("ddp.py", src, gpus="none", nodes=2, launcher="horovod")
    assert docker_workspace.runs() == []


def test_an_oom_killed_node_is_named(docker_workspace, docker_client, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "oom.py").write_text(
        "import os, time\n"
        "if os.environ['CELLTRAIN_NODE'] == '1':\n"
        "    hog = []\n"
        "    while True:\n"
        "        hog.append(bytearray(50 << 20))\n"
        "time.sleep(300)\n")
    run = docker_workspace.experiment("ddp").submit("oom.py", src, gpus="none", nodes=2,
                                                    memory="300m")
    run.wait(timeout=300)
    assert run.status == states.FAILED
    assert run.reason.startswith("out of memory: the container of node 1 was OOM-killed"), \
        run.reason
    assert _leftovers(docker_client, docker_workspace, run) == ([], [])
