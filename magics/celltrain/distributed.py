"""Several processes and nodes per run: the checks, the GPU split and the launch commands.

Host side and free of Docker: a target asks this module what each node runs (``torchrun`` with
the c10d rendezvous on node 0, or ``mpirun``) and what it sees (GPUs, NCCL settings); the
in-container side of a rank is ``celltrain.runtime.rankrun``.
"""
from __future__ import annotations

import dataclasses
import shlex
from typing import Any

from .runtime.wire import NODE_ENV, NODES_ENV

LAUNCHERS = ("torchrun", "mpi")
RDZV_PORT = 29400
MAX_NODES = 64
RANKRUN = "celltrain.runtime.rankrun"    # torchrun -m: the per-rank wrapper (prefixes, rank status)
TORCH_CHECK = "import torch.distributed.run"
NO_TORCH = ("torch is not installed in the run's image, and launcher='torchrun' needs it "
            "(python -m torch.distributed.run): use an image with torch, e.g. "
            "Environment(pip=['torch'])")
NO_MPI = ("Open MPI's mpirun is not installed in the run's image, and launcher='mpi' needs it: "
          "use Environment(apt=['openmpi-bin'])")


def asked(dist) -> bool:
    """Whether a distribution was asked for at all (then it is checked, bad values too)."""
    return dist.nodes != 1 or dist.procs_per_node is not None or dist.launcher is not None


def settle(spec, gpu_count_per_node: int | None = None):
    """The spec with its distribution checked and its defaults settled: ``procs_per_node``
    is the node's GPU count where GPUs are given, else 1; ``launcher`` is torchrun when more
    than one process runs.  Bad values are refused naming the value and the fix."""
    dist = spec.distribution
    nodes = _count("nodes", dist.nodes, MAX_NODES)
    procs = dist.procs_per_node
    if procs is not None:
        procs = _count("procs_per_node", procs, 1024)
    elif gpu_count_per_node:
        procs = gpu_count_per_node
    else:
        procs = 1
    launcher = dist.launcher
    if launcher is not None and launcher not in LAUNCHERS:
        raise ValueError(f"launcher takes one of {', '.join(LAUNCHERS)} (or None), not "
                         f"{launcher!r}")
    if launcher is None and (nodes > 1 or procs > 1):
        launcher = "torchrun"
    if gpu_count_per_node and procs > gpu_count_per_node:
        raise ValueError(f"procs_per_node={procs} is more than the {gpu_count_per_node} GPU(s) "
                         "each node has: each local rank needs its own GPU; lower "
                         "procs_per_node or give more gpus=")
    return spec.replace(distribution=dataclasses.replace(
        dist, nodes=nodes, procs_per_node=procs, launcher=launcher))


def _count(name: str, value: Any, most: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise ValueError(f"{name} takes a whole number from 1 to {most}, not {value!r}")
    return value


def split_gpus(gpus: Any, nodes: int, host_gpus: list[str]) -> list[list[str] | None]:
    """Which of the host's GPUs each node gets (``gpus`` is per node); None: no GPUs.

    A count gives every node that many of its own; "all" or a list of ids is shared out
    evenly.  Nodes never share a GPU: a split that cannot be made is refused, saying why.
    """
    if gpus in (None, "none", 0, "auto"):
        return [None] * nodes
    if gpus == "all":
        pool, each = list(host_gpus), len(host_gpus) // nodes
    elif isinstance(gpus, (list, tuple)):
        pool, each = [str(g) for g in gpus], len(gpus) // nodes
    else:
        pool, each = list(host_gpus), int(gpus)
    if each < 1 or each * nodes > len(pool):
        raise ValueError(f"gpus={gpus!r} for {nodes} nodes needs {max(each, 1) * nodes} "
                         f"GPUs and there are {len(pool)} to share: nodes of one host never "
                         "share a GPU; lower nodes= or gpus=")
    return [pool[k * each:(k + 1) * each] for k in range(nodes)]


def gpu_count(gpus: Any, nodes: int, host_gpus: int) -> int:
    """GPUs of one node, for the procs_per_node default (0 when none are given)."""
    if gpus in (None, "none", 0, "auto"):
        return 0
    if gpus == "all":
        return host_gpus // nodes
    if isinstance(gpus, (list, tuple)):
        return len(gpus) // nodes
    return int(gpus)


def node_env(node: int, nodes: int, gpus: list[str] | None) -> dict[str, str]:
    """What every process of node ``node`` sees, besides torchrun's own variables.  NCCL and
    gloo talk over the run's private network (the container's only interface, eth0 on one
    Docker host); a node with GPUs sees only its own (Docker's device request), numbered from
    0, so local rank r uses cuda:r."""
    env = {NODE_ENV: str(node), NODES_ENV: str(nodes)}
    if nodes > 1:
        env.update(NCCL_SOCKET_IFNAME="eth0", GLOO_SOCKET_IFNAME="eth0")
    if gpus:
        env.update(CUDA_VISIBLE_DEVICES=",".join(str(i) for i in range(len(gpus))),
                   NCCL_DEBUG="WARN")
    return env


def torchrun_args(spec, node: int, endpoint: str | None, run_id: str) -> list[str]:
    """The arguments after ``python``: torchrun with c10d on node 0's endpoint (a host, on
    RDZV_PORT, or "host:port"; ``--standalone``
    for one node), then the per-rank wrapper, the script and its arguments.  No restarts:
    a rank that fails fails the run."""
    dist = spec.distribution
    args = ["-m", "torch.distributed.run", "--nproc-per-node", str(dist.procs_per_node),
            "--max-restarts", "0"]
    if dist.nodes == 1 or endpoint is None:
        args += ["--standalone", "--nnodes", "1"]
    else:
        args += ["--nnodes", str(dist.nodes), "--node-rank", str(node),
                 "--rdzv-backend", "c10d", "--rdzv-endpoint",
                 endpoint if ":" in endpoint else f"{endpoint}:{RDZV_PORT}",
                 "--rdzv-id", run_id]
    return [*args, "-m", RANKRUN, *spec.command()]


def shell_check(launcher: str, failure_file: str) -> str:
    """A shell line that stops a node before launch when its image lacks the launcher, with
    the reason in ``failure_file`` (the supervisor's reason for the run)."""
    if launcher == "mpi":
        test, words = "command -v mpirun >/dev/null", NO_MPI
    else:
        test, words = f'"$PY" -c {shlex.quote(TORCH_CHECK)} 2>/dev/null', NO_TORCH
    return (f'{test} || {{ echo {shlex.quote(words)} > {failure_file}; '
            f'echo {shlex.quote("celltrain: " + words)} >&2; exit 3; }}')


MPI_MASTER_PORT = 29500


def mpirun_args(spec, hosts: list[str]) -> list[str]:
    """Node 0's command for launcher="mpi": Open MPI's ``mpirun`` over every node, its remote
    launch through ``celltrain.runtime.mpiagent`` (no ssh daemons), TCP on the private network, each
    rank under the per-rank wrapper."""
    dist = spec.distribution
    procs = dist.procs_per_node
    return ["mpirun", "--allow-run-as-root", "-np", str(dist.nodes * procs),
            "--host", ",".join(f"{h}:{procs}" for h in hosts), "--bind-to", "none",
            "--mca", "plm_rsh_agent", "python3 -m celltrain.runtime.mpiagent",
            "--mca", "plm_rsh_no_tree_spawn", "1",
            *(["--mca", "btl_tcp_if_include", "eth0", "--mca", "oob_tcp_if_include", "eth0"]
              if dist.nodes > 1 else []),
            "python3", "-u", "-m", RANKRUN, *spec.command()]


def mpi_env(node0: str) -> dict[str, str]:
    """torch.distributed's env:// contract for MPI ranks (RANK etc. come from OMPI_COMM_WORLD_*
    in the rank wrapper)."""
    return {"MASTER_ADDR": node0, "MASTER_PORT": str(MPI_MASTER_PORT),
            "OMPI_MCA_btl_vader_single_copy_mechanism": "none"}
