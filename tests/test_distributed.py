"""Distributed runs without Docker: the checks, the GPU split, NCCL settings by construction
(no GPU here: the split and the env are unit-tested, the device check runs where one is lent),
the per-rank wrapper, and target='local' running torchrun --standalone for real (gloo)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from celltrain import states
from celltrain.distributed import (NO_TORCH, node_env, settle, split_gpus, torchrun_args,
                                   gpu_count)
from celltrain.ranks import lines_of, read_ranks
from celltrain.spec import Distribution, RunSpec

MAGICS = str(Path(__file__).resolve().parent.parent / "magics")


def spec(**dist):
    return RunSpec(script="train.py", args=["--lr", "0.1"], distribution=Distribution(**dist))


def test_procs_per_node_defaults_to_the_nodes_gpus_else_one():
    assert settle(spec(nodes=2), gpu_count_per_node=4).distribution.procs_per_node == 4
    assert settle(spec(nodes=2)).distribution.procs_per_node == 1
    assert settle(spec(nodes=2)).distribution.launcher == "torchrun"
    assert settle(spec()).distribution.launcher is None          # one process: no launcher
    assert not settle(spec()).distribution.distributed


@pytest.mark.parametrize("dist, words", [
    ({"nodes": 0}, "nodes takes a whole number from 1 to 64, not 0"),
    ({"nodes": "2"}, "nodes takes a whole number from 1 to 64, not '2'"),
    ({"procs_per_node": True}, "procs_per_node takes a whole number"),
    ({"launcher": "horovod"}, "launcher takes one of torchrun, mpi (or None), not 'horovod'"),
])
def test_bad_distribution_is_refused_naming_the_value(dist, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        settle(spec(**dist))


def test_more_processes_than_gpus_is_refused():
    with pytest.raises(ValueError, match="procs_per_node=3 is more than the 2 GPU"):
        settle(spec(procs_per_node=3), gpu_count_per_node=2)


def test_gpus_are_split_between_the_nodes_of_one_host_never_shared():
    host = ["0", "1", "2", "3"]
    assert split_gpus(2, 2, host) == [["0", "1"], ["2", "3"]]          # gpus is per node
    assert split_gpus("all", 2, host) == [["0", "1"], ["2", "3"]]
    assert split_gpus([3, 1], 2, host) == [["3"], ["1"]]
    assert split_gpus("none", 3, host) == [None, None, None]
    assert gpu_count("all", 2, 4) == 2 and gpu_count(1, 2, 4) == 1
    with pytest.raises(ValueError, match="gpus=3 for 2 nodes needs 6 GPUs and there are 4"):
        split_gpus(3, 2, host)
    with pytest.raises(ValueError, match="gpus='all' for 2 nodes needs 2 GPUs and there are 0"):
        split_gpus("all", 2, [])


def test_node_env_gives_each_local_rank_its_own_device_and_nccl_the_private_network():
    env = node_env(1, 2, ["2", "3"])
    # the container sees only its node's GPUs, numbered from 0: local rank r uses cuda:r
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert env["NCCL_SOCKET_IFNAME"] == env["GLOO_SOCKET_IFNAME"] == "eth0"
    assert env["CELLTRAIN_NODE"] == "1" and env["CELLTRAIN_NODES"] == "2"
    single = node_env(0, 1, None)
    assert "CUDA_VISIBLE_DEVICES" not in single and "NCCL_SOCKET_IFNAME" not in single


def test_torchrun_args_carry_the_c10d_contract():
    s = settle(spec(nodes=2, procs_per_node=4))
    args = torchrun_args(s, 1, "celltrain-r-node0", "r-1-abc")
    joined = " ".join(args)
    assert joined.startswith("-m torch.distributed.run --nproc-per-node 4 --max-restarts 0")
    assert ("--nnodes 2 --node-rank 1 --rdzv-backend c10d --rdzv-endpoint "
            "celltrain-r-node0:29400 --rdzv-id r-1-abc") in joined
    assert args[-5:] == ["-m", "celltrain.runtime.rankrun", "train.py", "--lr", "0.1"]
    one = " ".join(torchrun_args(settle(spec(procs_per_node=2)), 0, None, "r"))
    assert "--standalone --nnodes 1" in one and "rdzv" not in one


def test_lines_of_picks_one_ranks_output():
    text = "[rank 0] a\n[rank 1] b\n[celltrain] note\n[rank 10] c\n[rank 1] d\n"
    assert lines_of(text, 1) == "b\nd\n"
    with pytest.raises(ValueError, match="rank takes a rank number .* not '1'"):
        lines_of(text, "1")


def _rankrun(tmp_path, body, rank=1, **kwargs):
    script = tmp_path / "s.py"
    script.write_text(body)
    telemetry = tmp_path / "telemetry"
    telemetry.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": MAGICS, "RANK": str(rank), "LOCAL_RANK": "1",
           "CELLTRAIN_NODE": "1", "GROUP_RANK": "1", "CELLTRAIN_TELEMETRY_DIR": str(telemetry)}
    return subprocess.Popen([sys.executable, "-m", "celltrain.runtime.rankrun", str(script)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def test_rankrun_prefixes_lines_and_records_a_failure_naming_rank_and_node(tmp_path):
    proc = _rankrun(tmp_path, "import os\nprint('node', os.environ['NODE_RANK'])\n"
                              "raise KeyError('no shard')\n", rank=3)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert out.decode() == "[rank 3] node 1\n"
    assert err.decode().splitlines()[-1] == "[rank 3] KeyError: 'no shard'"
    failure = (tmp_path / "telemetry" / "failure.txt").read_text()
    assert failure.startswith("rank 3 (node 1, local rank 1) failed with exit code 1; last "
                              "lines of its stderr:\nTraceback")
    (row,) = read_ranks(tmp_path, "Failed")
    assert row.pop("started") <= row.pop("ended")
    assert row == {"rank": 3, "node": 1, "local_rank": 1, "state": "failed", "exit_code": 1,
                   "last_line": "KeyError: 'no shard'"}


def test_rankrun_stopped_by_sigterm_is_stopped_not_the_failure(tmp_path):
    proc = _rankrun(tmp_path, "import time\nprint('up', flush=True)\ntime.sleep(60)\n")
    assert proc.stdout.readline() == b"[rank 1] up\n"
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert not (tmp_path / "telemetry" / "failure.txt").exists()
    assert read_ranks(tmp_path)[0]["state"] == "stopped"


def test_rank_files_are_read_without_following_links(tmp_path):
    ranks = tmp_path / "telemetry" / "ranks"
    ranks.mkdir(parents=True)
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"state": "completed", "last_line": "host secret"}))
    (ranks / "0.json").symlink_to(secret)
    (ranks / "1.json").write_text("not json")
    (ranks / "2.json").write_text(json.dumps({"node": 0, "state": "running"}))
    assert read_ranks(tmp_path, "Canceled") == [
        {"rank": 2, "node": 0, "local_rank": None, "state": "stopped", "exit_code": None,
         "last_line": None, "started": None, "ended": None}]


def test_local_target_refuses_several_nodes_and_bad_values(workspace, tmp_path):
    (tmp_path / "t.py").write_text("print(1)\n")
    with pytest.raises(ValueError, match="target='local' runs one node, not nodes=2: use "
                                         "target='docker'"):
        workspace.experiment("d").submit("t.py", tmp_path, target="local", nodes=2)
    with pytest.raises(ValueError, match="nodes takes a whole number from 1 to 64, not 0"):
        workspace.experiment("d").submit("t.py", tmp_path, target="local", nodes=0)
    with pytest.raises(ValueError, match="procs_per_node takes a whole number .* not -2"):
        workspace.experiment("d").submit("t.py", tmp_path, target="local", procs_per_node=-2)
    assert workspace.runs() == []


def test_local_target_runs_torchrun_standalone(workspace, tmp_path):
    (tmp_path / "t.py").write_text(
        "import os, torch, torch.distributed as dist\n"
        "dist.init_process_group('gloo')\n"
        "t = torch.tensor([float(dist.get_rank() + 1)])\n"
        "dist.all_reduce(t)\n"
        "print('sum', int(t.item()), os.environ['LOCAL_WORLD_SIZE'], os.environ['NODE_RANK'])\n"
        "dist.destroy_process_group()\n")
    run = workspace.experiment("d").submit("t.py", tmp_path, target="local", procs_per_node=2)
    run.wait(timeout=240)
    assert run.status == states.COMPLETED, (run.reason, run.logs())
    assert run.logs(rank=0) == run.logs(rank=1) == "sum 3 2 0\n"
    assert [(r["rank"], r["state"], r["exit_code"]) for r in run.ranks()] == [
        (0, "completed", 0), (1, "completed", 0)]
    assert NO_TORCH.startswith("torch is not installed")


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mpiagent_runs_one_command_for_the_token_holder_only(tmp_path):
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": MAGICS, "CELLTRAIN_MPI_PORT": str(port),
           "CELLTRAIN_MPI_TOKEN": "s3cret"}
    server = subprocess.Popen([sys.executable, "-m", "celltrain.runtime.mpiagent", "serve"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wrong = subprocess.run([sys.executable, "-m", "celltrain.runtime.mpiagent", "127.0.0.1",
                                "touch", str(tmp_path / "pwned")],
                               env={**env, "CELLTRAIN_MPI_TOKEN": "guess"},
                               capture_output=True, timeout=60)
        assert wrong.returncode == 255 and not (tmp_path / "pwned").exists()
        ok = subprocess.run([sys.executable, "-m", "celltrain.runtime.mpiagent", "127.0.0.1",
                             "echo", "out;", "echo", "err", ">&2;", "exit", "7"],
                            env=env, capture_output=True, timeout=60)
        assert (ok.returncode, ok.stdout, ok.stderr) == (7, b"out\n", b"err\n")
        assert server.poll() is None                 # it serves the next command too
    finally:
        server.kill()
