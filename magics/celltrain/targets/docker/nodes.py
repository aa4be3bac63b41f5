"""A run of several nodes on one Docker host: one container per node on a private network.

Node k's container is ``celltrain-<run id>-node<k>`` with that hostname, on the network
``celltrain-<run id>`` made for the run (labelled like its containers, removed at cleanup and by
the leftovers' reconcile).  Node 0's name is torchrun's c10d rendezvous endpoint.  The handle
holds every container id and the network id.  The first container to exit non-zero stops the
others: a rank that fails on one node would otherwise leave the others waiting in a collective.
"""
from __future__ import annotations

import datetime
import io
import os
from pathlib import Path
import tarfile
import threading

from ... import copyback, distributed
from ...runfiles import OUTPUT_LOG, STDERR_LOG
from ...runtime.wire import MPI_TOKEN_ENV
from ..base import Handle, Result

ALIVE = ("created", "running", "restarting", "paused")
MPIAGENT = "celltrain.runtime.mpiagent"
STOP_OTHERS_S = 3     # grace for the other nodes once one failed: they only wait on it


def node_name(run_id: str, node: int) -> str:
    return f"celltrain-{run_id}-node{node}"


def create(target, prepared, kwargs_for) -> Handle:
    """Make the network and the (not started) containers; ``kwargs_for(node, gpus)`` gives a
    node's container settings."""
    import docker
    client, run_id, spec = target.client, target.run["id"], target.spec
    nodes = spec.distribution.nodes
    split = distributed.split_gpus(spec.resources.gpus, nodes, host_gpu_ids())
    name = f"celltrain-{run_id}"
    for old in client.networks.list(names=[name]):   # a dead supervisor's, never started
        _remove_network(client, old.id, target.labels)
    network = client.networks.create(name, driver="bridge", labels=target.labels,
                                     check_duplicate=True)
    ids = []
    try:
        for node in range(nodes):
            kwargs = kwargs_for(node, split[node])
            kwargs.update(name=node_name(run_id, node), hostname=node_name(run_id, node),
                          network=network.name)
            try:
                client.containers.get(kwargs["name"]).remove(force=True)
            except docker.errors.NotFound:
                pass
            ids.append(client.containers.create(prepared.image, **kwargs).id)
    except Exception:
        for cid in ids:
            _force_remove(client, cid)
        _remove_network(client, network.id, target.labels)
        raise
    return Handle(target.kind, {"containers": ids, "network": network.id})


def node_command(spec, run_id: str, node: int, python_sh: str, telemetry: str,
                 endpoint: str | None = None) -> list[str]:
    """Node ``node``'s command: the snapshot copied as for one process (``python_sh``), the
    launcher checked in the image (its absence becomes the reason), then torchrun, whose
    rendezvous is ``endpoint`` ("host:port") or node 0's container name."""
    dist = spec.distribution
    check = distributed.shell_check(dist.launcher, f"{telemetry}/failure.txt")
    launch = python_sh.replace('exec "$(command -v python3 || command -v python)" -u "$@"',
                               'PY="$(command -v python3 || command -v python)" && '
                               f'{check} && exec "$PY" "$@"')
    assert launch != python_sh, "the single-process command changed: adapt node_command"
    if dist.launcher == "mpi":
        if node > 0:
            return ["sh", "-c", launch, "sh", "-m", MPIAGENT, "serve"]
        hosts = [node_name(run_id, k) for k in range(dist.nodes)] if dist.nodes > 1 else \
            ["localhost"]
        launch = launch.replace('exec "$PY" "$@"', 'exec "$@"')
        return ["sh", "-c", launch, "sh", *distributed.mpirun_args(spec, hosts)]
    if endpoint is None and dist.nodes > 1:
        endpoint = node_name(run_id, 0)
    return ["sh", "-c", launch, "sh", *distributed.torchrun_args(spec, node, endpoint, run_id)]


def mpi_env(target) -> dict:
    """For launcher="mpi": torch's env:// contract (node 0's address) and the run's secret for
    its nodes' launch servers (``celltrain.runtime.mpiagent``); nothing for torchrun."""
    dist = target.spec.distribution
    if dist.launcher != "mpi":
        return {}
    node0 = node_name(target.run["id"], 0) if dist.nodes > 1 else "localhost"
    return {**distributed.mpi_env(node0), MPI_TOKEN_ENV: _mpi_token(target.run_dir)}


def _mpi_token(run_dir) -> str:
    """The run's secret for its nodes' MPI launch servers, the same for every node."""
    import secrets
    path = run_dir / "mpi-token"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(16))
    return path.read_text().strip()


def host_gpu_ids() -> list[str]:
    """This host's GPU indices (nvidia-smi), [] without one."""
    import shutil
    import subprocess
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip().isdigit()]


class NodeGroup:
    """The target's steps for a handle with several containers."""

    def __init__(self, target):
        self.target = target

    @property
    def client(self):
        return self.target.client

    @property
    def mpi(self) -> bool:
        return self.target.spec.distribution.launcher == "mpi"

    def containers(self, handle: Handle) -> list:
        return [self.client.containers.get(cid) for cid in handle.ids["containers"]]

    def launch(self, handle: Handle) -> None:
        for container in self.containers(handle):
            container.start()

    def exists(self, handle: Handle) -> bool:
        import docker
        try:
            self.containers(handle)
            return True
        except docker.errors.NotFound:
            return False

    def is_running(self, handle: Handle) -> bool:
        """Whether the run goes on: every node alive, or the live ones after clean exits.
        A node that exited non-zero stops the others at once."""
        containers = self.containers(handle)
        for container in containers:
            container.reload()
        alive = [c for c in containers if c.status in ALIVE]
        failed = [c for c in containers if c.status not in ALIVE
                  and c.attrs["State"].get("ExitCode")]
        if self.mpi and containers[0].status not in ALIVE and alive:
            self._stop_all(alive, STOP_OTHERS_S)   # mpirun is done: the others only serve it
            return False
        if failed and alive:
            k = handle.ids["containers"].index(failed[0].id)
            self.target.notify(f"node {k}'s container exited with code "
                               f"{failed[0].attrs['State'].get('ExitCode')}: stopping the "
                               "other nodes")
            self._stop_all(alive, STOP_OTHERS_S)
            return False
        return bool(alive)

    def stop(self, handle: Handle, grace: float) -> None:
        self._stop_all(self.containers(handle), grace)

    @staticmethod
    def _stop_all(containers, grace: float) -> None:
        threads = [threading.Thread(target=c.stop, kwargs={"timeout": int(max(grace, 0))})
                   for c in containers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def result(self, handle: Handle) -> Result:
        """The exit code of the node that failed first (else 0), and OOM if any node's was;
        the target's noun then names that node, for the supervisor's reason."""
        ended = []
        for k, container in enumerate(self.containers(handle)):
            container.reload()
            state = container.attrs["State"]
            ended.append((_finished(state), k, state.get("ExitCode"), bool(state.get("OOMKilled"))))
        for _, k, code, oom in sorted(ended):
            if oom:
                self.target.noun = f"container of node {k}"
                return Result(code, True)
        if self.mpi and ended:       # mpirun on node 0 has every rank's word
            return Result(ended[0][2], False)
        bad = [e for e in sorted(ended) if e[2]]
        if bad:
            return Result(bad[0][2], False)
        return Result(ended[0][2] if ended else None, False)

    def stream_output(self, handle: Handle, resumed: bool, since) -> threading.Thread:
        """Follow every node's log into output.log and stderr.log, whole lines at a time."""
        lock = threading.Lock()
        run_dir = self.target.run_dir

        def follow(cid: str, name: str, stdout: bool):
            buffered = b""
            try:
                stream = self.client.containers.get(cid).logs(
                    stdout=stdout, stderr=True, stream=True, follow=True, since=since)
                with open(run_dir / name, "ab") as f:
                    for chunk in stream:
                        buffered += chunk
                        whole, sep, buffered = buffered.rpartition(b"\n")
                        if sep:
                            with lock:
                                f.write(whole + sep)
                                f.flush()
                    if buffered:
                        with lock:
                            f.write(buffered + b"\n")
            except Exception:  # the engine went away; the supervisor notices
                pass

        def every():
            threads = [threading.Thread(target=follow, args=(cid, name, stdout), daemon=True)
                       for cid in handle.ids["containers"]
                       for name, stdout in ((OUTPUT_LOG, True), (STDERR_LOG, False))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        thread = threading.Thread(target=every, daemon=True, name="celltrain-output")
        thread.start()
        return thread

    def collect(self, handle: Handle, workdir: str, extract, resumed: bool) -> None:
        """Node 0's ./outputs and ./logs into the run folder, node k's under node-<k>/ where
        it wrote something; the captured output from Docker's logs if nobody followed it."""
        import docker
        skipped = []
        containers = self.containers(handle)
        for k, container in enumerate(containers):
            for folder in ("outputs", "logs"):
                try:
                    chunks, _ = container.get_archive(f"{workdir}/{folder}")
                except docker.errors.NotFound:
                    continue
                data = b"".join(chunks)
                if k == 0:
                    skipped += extract(data, self.target.run_dir, folder)
                else:
                    dest = self.target.run_dir / folder
                    dest.mkdir(exist_ok=True)
                    skipped += extract(data, dest, folder, rename=f"node-{k}")
        copyback.report(self.target.store, self.target.run["id"], skipped)
        if resumed:
            run_dir = self.target.run_dir
            (run_dir / OUTPUT_LOG).write_bytes(b"".join(
                c.logs(stdout=True, stderr=True) for c in containers))
            (run_dir / STDERR_LOG).write_bytes(b"".join(
                c.logs(stdout=False, stderr=True) for c in containers))

    def cleanup(self, handle: Handle) -> None:
        for cid in handle.ids["containers"]:
            _force_remove(self.client, cid)
        if handle.ids.get("network"):
            _remove_network(self.client, handle.ids["network"], self.target.labels)


def _finished(state: dict) -> datetime.datetime:
    text = (state.get("FinishedAt") or "")[:26].rstrip("Z")
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        return datetime.datetime.max


def _force_remove(client, cid: str) -> None:
    import docker
    try:
        client.containers.get(cid).remove(force=True)
    except docker.errors.APIError:
        pass


def _remove_network(client, network_id: str, labels: dict) -> None:
    """Remove a run's network, only if it carries the run's labels."""
    import docker
    try:
        network = client.networks.get(network_id)
        if all(network.attrs.get("Labels", {}).get(k) == v for k, v in labels.items()):
            network.remove()
    except docker.errors.APIError:
        pass


def renamed(data: bytes, top: str, new: str) -> bytes | None:
    """The archive with ``top/`` renamed ``new/``; None when it holds only the empty folder."""
    out, count = io.BytesIO(), 0

    def swap(name: str) -> str:
        return new + name[len(top):] if name == top or name.startswith(top + "/") else name

    with tarfile.open(fileobj=io.BytesIO(data)) as src, tarfile.open(fileobj=out,
                                                                     mode="w") as dst:
        for member in src:
            member.name = swap(member.name)
            if member.islnk():
                member.linkname = swap(member.linkname)
            count += member.name != new
            dst.addfile(member, src.extractfile(member) if member.isreg() else None)
    return out.getvalue() if count else None


def settle_distribution(spec):
    """Processes and nodes checked, with procs_per_node from each node's GPUs."""
    res, dist = spec.resources, spec.distribution
    if not distributed.asked(dist):
        return spec
    if spec.network and dist.nodes > 1:
        raise ValueError(f"network={spec.network!r} cannot be given with nodes="
                         f"{dist.nodes}: a run of several nodes gets a private network of "
                         "its own; leave network= out")
    host = host_gpu_ids() if res.gpus == "all" else []
    return distributed.settle(spec, distributed.gpu_count(res.gpus, dist.nodes, len(host)))


def extract_archive(data: bytes, dest: Path, top: str, rename: str | None = None) -> list[str]:
    """Extract Docker's archive of ``top`` into ``dest``; returns what was skipped (links
    out, devices), never raising for the run's own files.  ``rename``: under that name
    instead, and only if the folder holds something (another node's outputs)."""
    if rename:
        data = renamed(data, top, rename)
        if data is None:
            return []
        top = rename
    return copyback.extract_tar(io.BytesIO(data), dest, top)
