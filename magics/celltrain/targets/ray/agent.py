"""The node agent: one per node of a run, held by that node's host (``host.NodeHost``).

It runs the node's container on the node's own Docker engine (``docker.remote.NodeContainer``)
and answers the supervisor's calls: what is new in the output and telemetry since the offsets
it already has, the container's state, and at the end ``./outputs`` and ``./logs`` as tars.
Everything travels as bytes through Ray; nothing is shared between the machines but the
cluster.  The class is plain Python; the host's actor calls it for the run's supervisor.
"""
from __future__ import annotations

import fcntl
import os
import posixpath
import shutil
import socket
import struct
import tempfile
from pathlib import Path

from ...runfiles import OUTPUT_LOG, STDERR_LOG
from ...runtime.wire import WORKDIR_NOTE
from ..docker.remote import NodeContainer

ROOT_ENV = "CELLTRAIN_RAY_DIR"     # where agents keep runs' folders on a node
PULL_CAP = 8 << 20                 # bytes one pull hands back at most
APPENDED = ("events", ".bin")      # telemetry files that only grow: sent from an offset
STREAMS = (OUTPUT_LOG, STDERR_LOG)
DEFAULT_WORKDIR = "/celltrain-run/src"


def node_root() -> Path:
    return Path(os.environ.get(ROOT_ENV) or Path(tempfile.gettempdir()) / "celltrain-ray")


class NodeAgent:
    def __init__(self, run_id: str, node: int, labels: dict, gpus=(), holding=None):
        """``holding(run_id)``: whether this node's host holds that run (warm claims)."""
        self.run_id, self.node, self.gpus = run_id, node, [str(g) for g in gpus]
        self.folder = node_root() / f"{run_id}-node{node}"
        self.box = NodeContainer(self.folder, labels)
        self.labels, self.holding = dict(labels), holding or (lambda run: False)
        self.warm = self.cold = None     # a NodeWarm when the run may start warm; (image, kwargs)

    # -- where it is ----------------------------------------------------------------------------
    def where(self) -> dict:
        """The Ray node, its address on the cluster network and that address's interface, the
        GPU ids Ray gave the run's bundle here."""
        import ray
        ip = ray.util.get_node_ip_address()
        return {"node_id": ray.get_runtime_context().get_node_id(), "ip": ip,
                "hostname": socket.gethostname(), "ifname": interface_of(ip),
                "gpus": list(self.gpus)}

    def free_port(self) -> int:
        """A TCP port free on this node now (node 0's rendezvous)."""
        with socket.socket() as s:
            s.bind(("", 0))
            return s.getsockname()[1]

    # -- the container --------------------------------------------------------------------------
    def prepare(self, environment: dict) -> tuple:
        return self.box.prepare(environment)

    def has_image(self, image_id: str, tag: str) -> bool:
        return self.box.has_image(image_id, tag)

    def receive_image(self, piece: bytes, first: bool) -> int:
        return self.box.receive_image(piece, first)

    def load_image(self) -> list[str]:
        return self.box.load_image()

    def create(self, image: str, kwargs: dict, snapshot_tar: bytes, telemetry_host: str,
               snapshot_host: str, warm_spec: dict | None = None) -> dict:
        """The node's container, created; with ``warm_spec`` (``warmnode.NodeWarm``) an idle
        warm worker here is claimed instead, when there is one.  {"container": its id,
        "warm": whether it is a worker's}."""
        kwargs = self.box.unpack(kwargs, snapshot_tar, telemetry_host, snapshot_host)
        self.cold = (image, kwargs)
        if warm_spec is not None:
            from ...targets.docker.engine import LABEL_WORKSPACE
            from .warmnode import NodeWarm
            self.warm = NodeWarm(self.run_id, self.folder, self.box.client,
                                 self.labels.get(LABEL_WORKSPACE, ""), warm_spec, self.holding)
            worker = self.warm.claim(warm_spec["image"] or image, kwargs)
            if worker is not None:
                self.box.container_id = worker.id     # for ./outputs, at the end
                return {"container": worker.id, "warm": True}
        return {"container": self.box.create_container(image, kwargs), "warm": False}

    def start(self) -> bool:
        """Hand the run to its claimed worker (cold if it never reached it), or start the
        container; whether it started warm."""
        if self.warm is not None and self.warm.key is not None:
            if self.warm.hand():
                self.box.follower = self.warm.run.pump(False)
                return True
            self.box.create_container(*self.cold)
        self.box.start()
        return False

    def started_warm(self) -> bool:
        return self.warm is not None and self.warm.run is not None

    def state(self) -> dict:
        if self.started_warm():
            follower = self.box.follower
            return {**self.warm.state(),
                    "logs_done": follower is None or not follower.is_alive()}
        return self.box.state()

    def stop(self, grace: float) -> None:
        if self.started_warm():
            return self.warm.run.stop(grace)
        self.box.stop(grace)

    def usage(self) -> dict:
        """What the container uses now, as raw counters (the supervisor makes percentages of
        two samples, as for a Docker run: ``docker/usage.py``), and its GPUs' use:
        {"cpu", "system", "online", "mem", "limit", "gpus": [[id, util %, bytes], ...]}."""
        from ..docker.usage import memory_used
        stats = self.box.client.api.stats(self.box.container_id, stream=False, one_shot=True)
        cpu, memory = stats.get("cpu_stats") or {}, stats.get("memory_stats") or {}
        return {"cpu": (cpu.get("cpu_usage") or {}).get("total_usage") or 0,
                "system": cpu.get("system_cpu_usage") or 0, "online": cpu.get("online_cpus") or 1,
                "mem": memory_used(memory), "limit": memory.get("limit") or 0,
                "gpus": self._gpu_use()}

    def _gpu_use(self) -> list:
        """[GPU id, utilisation %, memory bytes] of the run's GPUs on this node (NVML or
        nvidia-smi, as the supervisor samples a local run's); none without a GPU tool."""
        from ...sysmetrics import gpu_source
        if not self.gpus:
            return []
        if getattr(self, "gpu_tool", "find") == "find":
            self.gpu_tool = gpu_source()
        if self.gpu_tool is None:
            return []
        devices = self.gpu_tool.sample()
        return [[g, *devices[int(g)]] for g in self.gpus if g.isdigit() and int(g) in devices]

    def pull(self, offsets: dict) -> tuple[dict, dict]:
        """What is new since ``offsets`` ({name: offset} for the streams and the growing
        telemetry files, {name: [size, mtime_ns]} for the others): ({name: bytes}, the new
        offsets).  Only regular files, never through a link the container made."""
        data, marks, budget = {}, {}, PULL_CAP
        for name in STREAMS:
            chunk = _read_from(self.folder / name, int(offsets.get(name, 0)), budget)
            budget -= len(chunk)
            data[name], marks[name] = chunk, int(offsets.get(name, 0)) + len(chunk)
        for rel, path in _telemetry_files(self.box.telemetry):
            key = "telemetry/" + rel
            base = posixpath.basename(rel)
            if base.startswith(APPENDED[0]) and base.endswith(APPENDED[1]):
                start = int(offsets.get(key, 0))
                chunk = _read_from(path, start, budget)
                budget -= len(chunk)
                data[key], marks[key] = chunk, start + len(chunk)
                continue
            st = path.lstat()
            seen = [st.st_size, st.st_mtime_ns]
            marks[key] = seen
            if offsets.get(key) != seen and st.st_size <= budget:
                data[key] = _read_from(path, 0, st.st_size)
                budget -= st.st_size
            elif offsets.get(key) != seen:
                marks[key] = offsets.get(key)   # next time, with room for it
        return {k: v for k, v in data.items() if v}, marks

    def collect(self) -> dict:
        """``./outputs`` and ``./logs`` of the workdir the script ran in, as Docker's tars."""
        if self.started_warm():
            self.warm.run.sync()
        note = (self.box.telemetry / WORKDIR_NOTE)
        workdir = DEFAULT_WORKDIR
        if note.is_file() and not note.is_symlink():
            text = note.read_text(errors="replace").strip()
            if text.startswith("/") and posixpath.normpath(text) == text and text.isprintable():
                workdir = text
        folders = ("outputs", "logs")
        present = self.warm.run.present(folders) if self.started_warm() else folders
        return {folder: self.box.archive(f"{workdir}/{folder}") if folder in present else None
                for folder in folders}

    def remove(self) -> dict:
        """The container (a warm run: its folder in the worker's, the worker kept) and this
        node's folder of the run; after a cold run that may start warm, the worker for the
        next.  {"worker": whether this environment's worker now waits here}."""
        worker = False
        if self.started_warm():
            self.box.beating.set()
            self.warm.run.cleanup()
            worker = True
        else:
            self.box.retire()
            if self.warm is not None and self.cold is not None:
                worker = self.warm.after_cold(self.warm.spec["image"] or self.cold[0],
                                              self.cold[1])
        shutil.rmtree(self.folder, ignore_errors=True)
        return {"worker": worker}


def tidy_node(run_id: str, workspace: str) -> int:
    """On one node: an ended run's containers (nobody watches them any more) and folders
    removed; how many containers."""
    from ..docker.engine import LABEL_RUN, LABEL_WORKSPACE
    from ..docker.remote import remove_all
    for folder in node_root().glob(f"{run_id}-node*"):
        shutil.rmtree(folder, ignore_errors=True)
    return remove_all({LABEL_RUN: run_id, LABEL_WORKSPACE: workspace})


def _read_from(path: Path, offset: int, cap: int) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return b""
    with os.fdopen(fd, "rb") as f:
        f.seek(offset)
        return f.read(max(cap, 0))


def _telemetry_files(root: Path):
    """(relative name, path) of the regular files under ``root``, links not followed."""
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in sorted(files):
            path = Path(folder) / name
            if path.is_file() and not path.is_symlink():
                yield path.relative_to(root).as_posix(), path


def interface_of(ip: str) -> str | None:
    """The network interface that holds ``ip`` (gloo and NCCL bind to it), None if unknown."""
    siocgifaddr = 0x8915
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(s.fileno(), siocgifaddr,
                                     struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue
            if socket.inet_ntoa(packed[20:24]) == ip:
                return name
    return None
