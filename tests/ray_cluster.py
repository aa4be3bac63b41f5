"""A real Ray cluster on this machine for the tests: a head and two worker nodes, each its own
``ray start`` (its own raylet, temp folder, resources and folder for the agents' files).

The head has no CPUs, so a run's bundles land on the workers (1 CPU each): a run of 2 nodes
has one container on each.  The head serves Ray Client (``ray://``, needs ``ray[client]``) on a
port of its own: with grpcio installed ``ray start --head`` would take 10001, which two clusters
on one machine cannot share.  Everything is stopped by the process groups and the marker this
fixture started, never by ``ray stop`` (other users' clusters on the machine live on).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from missing import unavailable

START_S = 180
TRIES = 5
STOP_S = 45
OBJECT_STORE = str(100 * 2**20)    # Ray's smallest is 75 MiB


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RayNode:
    name: str
    process: subprocess.Popen
    log: Path
    folder: Path     # CELLTRAIN_RAY_DIR of the node: where its agents keep runs' files
    args: list = field(default_factory=list)
    env: dict = field(default_factory=dict)

    def kill_raylet(self) -> None:
        """The node's raylet dies (the machine lives on): Ray loses the node."""
        for pid in self.raylet_pids():
            os.kill(pid, signal.SIGKILL)

    def restart(self) -> None:
        """Stop what is left of the node and start it again (a new Ray node)."""
        _signal_group(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.process, self.log = _start(self.name, self.args, self.env, self.log.parent)

    def raylet_pids(self) -> list[int]:
        return [pid for pid in _group_pids(self.process.pid)
                if "raylet" in _cmdline(pid).split(" ")[0]]


@dataclass
class RayCluster:
    address: str
    root: Path
    marker: str
    nodes: list[RayNode] = field(default_factory=list)
    client_port: int = 0

    @property
    def client_address(self) -> str:
        """The head's Ray Client address, ray://host:port."""
        return f"ray://127.0.0.1:{self.client_port}"

    @property
    def workers(self) -> list[RayNode]:
        return self.nodes[1:]

    def add_node(self, name: str, head_port: int | None = None, env: dict | None = None,
                 resources: dict | None = None, gpus: int = 0) -> RayNode:
        """Start one more node: the head (``head_port``) or a worker of 1 CPU with the custom
        resources {"celltrain-test-<name>": 1, **resources}; ``env``: its raylet's extra
        environment (its agents inherit it); ``gpus``: GPUs the node declares to Ray (none
        here: Ray only counts them and hands out their ids)."""
        import json
        ray_cli = Path(sys.executable).with_name("ray")
        folder = self.root / name
        (folder / "agents").mkdir(parents=True)
        args = [str(ray_cli), "start", "--block", "--disable-usage-stats",
                "--include-log-monitor=false",
                f"--temp-dir={folder / 'ray'}", f"--object-store-memory={OBJECT_STORE}",
                # ports given: the raylet does not wait for its agents to report theirs
                # (on a loaded machine that wait times out and the raylet gives up)
                f"--dashboard-agent-grpc-port={free_port()}",
                f"--dashboard-agent-listen-port={free_port()}",
                f"--metrics-export-port={free_port()}",
                f"--runtime-env-agent-port={free_port()}"]
        if head_port:
            self.client_port = free_port()
            args += ["--head", f"--port={head_port}", "--num-cpus=0",
                     "--include-dashboard=false", f"--ray-client-server-port={self.client_port}"]
        else:
            custom = {f"celltrain-test-{name}": 1, **(resources or {})}
            args += [f"--address={self.address}", "--num-cpus=1", f"--num-gpus={gpus}",
                     f"--resources={json.dumps(custom)}"]
        node_env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0",
                    "RAY_agent_register_timeout_ms": "300000",
                    # how long the raylet waits for its agents' port files (a loaded machine)
                    "RAY_raylet_start_wait_time_s": "120",
                    "CELLTRAIN_RAY_DIR": str(folder / "agents"), "CELLTRAIN_TEST_RAY": self.marker,
                    "CELLTRAIN_TEST_RAY_NODE": f"{self.marker}-{name}", **(env or {})}
        node_env.pop("RAY_ADDRESS", None)
        process, log = _start(name, args, node_env, folder)
        node = RayNode(name, process, log, folder / "agents", args, node_env)
        self.nodes.append(node)
        return node

    def remove_node(self, node: RayNode) -> None:
        """Stop one worker (its process group and the workers it started) for good."""
        _signal_group(node.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_S
        while time.monotonic() < deadline and _group_pids(node.process.pid):
            time.sleep(0.5)
        _signal_group(node.process.pid, signal.SIGKILL)
        node.process.wait()
        for pid in _marked_pids(node.env["CELLTRAIN_TEST_RAY_NODE"], "CELLTRAIN_TEST_RAY_NODE"):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.nodes.remove(node)

    def stop(self) -> None:
        for node in reversed(self.nodes):       # workers first, then the head
            _signal_group(node.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_S
        while time.monotonic() < deadline and any(_group_pids(n.process.pid)
                                                  for n in self.nodes):
            time.sleep(0.5)
        for node in self.nodes:
            _signal_group(node.process.pid, signal.SIGKILL)
            try:
                node.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for pid in _marked_pids(self.marker):    # Ray's workers run in sessions of their own
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)


def require_ray() -> None:
    """Ray importable, else a failure under CI (which installs it) and a skip elsewhere."""
    try:
        import ray  # noqa: F401
    except ImportError:
        unavailable("Ray is not installed: pip install 'celltrain[ray]'")


def start_cluster() -> RayCluster:
    """Start the head and two workers; skips (fails under CI) without Ray installed."""
    require_ray()
    root = Path(tempfile.mkdtemp(prefix="ctray-"))   # short: Ray's socket paths live under it
    marker = f"celltrain-test-ray-{os.getpid()}-{root.name}"
    port = free_port()
    cluster = RayCluster(address=f"127.0.0.1:{port}", root=root, marker=marker)
    try:
        for name in ("head", "w1", "w2"):
            cluster.add_node(name, head_port=port if name == "head" else None)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _start(name: str, args: list, env: dict, folder: Path):
    """``ray start`` of one node, tried again when Ray gives up on a loaded machine."""
    for attempt in range(TRIES):
        log = folder / f"ray-start-{time.monotonic_ns()}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env,
                                       stdin=subprocess.DEVNULL, start_new_session=True,
                                       preexec_fn=_favoured)
        node = RayNode(name, process, log, folder / "agents")
        if _wait_started(node, last=attempt == TRIES - 1):
            return process, log
        _signal_group(process.pid, signal.SIGKILL)
        process.wait()
    raise AssertionError("unreachable")


def _favoured() -> None:
    """A little ahead of the machine's other work, where allowed: Ray's raylet gives its Python
    agents ~30 s to start (not configurable for all of them) and a loaded 2-core machine
    does not always give them that (the raylet waits ~15 s for its dashboard agent's port
    file).  The run containers are dockerd's children: not affected.  With the kernel's
    autogroups (one per session, and ``ray start`` gets a session of its own) a process's nice
    value only ranks it within its session: the session's own nice value is set as well."""
    try:
        os.nice(-10)
    except PermissionError:
        return
    try:
        with open("/proc/self/autogroup", "w") as f:
            f.write("-10")
    except OSError:     # no autogroups in this kernel
        pass


def _wait_started(node: RayNode, last: bool) -> bool:
    """Whether the node came up.  Ray's raylet waits ~30 s for its Python agents, which a
    loaded 2-core machine does not always give them: then the caller tries again."""
    deadline = time.monotonic() + START_S
    while b"Ray runtime started" not in node.log.read_bytes():
        if node.process.poll() is not None or time.monotonic() > deadline:
            if not last:
                return False
            raise RuntimeError(f"ray start of {node.name} did not come up:\n"
                               + node.log.read_text(errors="replace")[-3000:])
        time.sleep(0.5)
    return True


def _group_pids(pgid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getpgid(int(entry)) == pgid:
                out.append(int(entry))
        except ProcessLookupError:
            continue
    return out


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return ""


def _marked_pids(marker: str, key: str = "CELLTRAIN_TEST_RAY") -> list[int]:
    """Processes whose environment carries this cluster's (or node's) marker."""
    needle = f"{key}={marker}".encode()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if needle in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                out.append(int(entry))
        except OSError:
            continue
    return out


def remove_node_workers(workspace, docker_client, cluster) -> None:
    """The warm workers the Ray nodes keep for ``workspace`` and their folders (they would
    leave when idle, and the next run on the node would remove the folders)."""
    import shutil
    from celltrain.targets.ray.warmnode import folder_name
    for container in docker_client.containers.list(all=True, filters={"label": "celltrain.warm"}):
        if container.labels.get("celltrain.workspace", "").endswith(folder_name(workspace.path)):
            container.remove(force=True)
    for node in cluster.workers:
        shutil.rmtree(node.folder / folder_name(workspace.path), ignore_errors=True)
