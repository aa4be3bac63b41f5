"""A Ray cluster as compute target: the run's nodes gang-scheduled, a container on each node.

``ws.add_target("gpu-cluster", "ray", address="ray://head:10001")`` (or a GCS address, or
"auto").  Ray does membership, placement and failure detection; celltrain keeps its own
container per node, made as the Docker target makes it (``DockerTarget.container_kwargs``), so
a run behaves the same as on one host.  The supervisor stays on the submitter's machine and is
a Ray driver; what it calls on the nodes is in ``agent``, what travels in ``transfer``.

Several nodes talk over their hosts' networks: their containers use host networking, torchrun's
rendezvous is node 0's Ray address on a port free there, and gloo/NCCL bind to the interface
that holds each node's address.
"""
from __future__ import annotations

import dataclasses
import threading
import time

from ... import copyback, distributed
from ...errors import CelltrainError
from ..base import ComputeTarget, Handle, Prepared, Result
from . import cluster, host, leftovers, usage, warmnode
from .cluster import ClusterError, container_name
from .images import on_every_node
from .settings import check_settings
from .transfer import Inbox, extract_outputs, snapshot_tar, write_nodes

ALIVE = ("created", "running", "restarting", "paused")
PULL_S = 0.2
STOP_OTHERS_S = 3


class RayTarget(ComputeTarget):
    """One container per node on the nodes of a Ray cluster, through one agent per node."""

    kind = "ray"
    noun = "container"
    unreachable_name = "the Ray cluster"
    one_machine = False

    def __init__(self, store, run: dict, spec, notify, settings: dict | None = None):
        super().__init__(store, run, spec, notify, settings)
        self.ray = None
        self.group = None
        self.agents: list = []
        self.inbox = None
        self.where: list[dict] = []
        self.lost: dict[int, ClusterError] = {}    # node -> why it is lost
        self.told = False                          # the loss was raised once
        self.image_id = None                       # the run's image, by id (warm workers)
        self.usage_before: dict = {}               # node -> its last usage sample

    # -- in the submitting process --------------------------------------------------------------
    @classmethod
    def check_settings(cls, settings: dict) -> dict:
        return check_settings(settings)

    @classmethod
    def validate(cls, spec, settings: dict | None = None):
        """GPUs as a count per node ("auto" is none: the submitter cannot see the nodes'),
        torchrun as the launcher; refused naming the value and the fix."""
        settings = cls.check_settings(dict(settings or {}))
        res, dist = spec.resources, spec.distribution
        gpus = res.gpus
        if gpus in ("auto", "none", None):
            gpus = 0
        if not isinstance(gpus, int) or isinstance(gpus, bool):
            raise ValueError(f"gpus={res.gpus!r}: on a Ray cluster give the GPUs each node "
                             "needs as a count (gpus=1), which Ray reserves; GPU ids and "
                             "'all' name one machine's GPUs")
        if dist.launcher == "mpi":
            raise ValueError("launcher='mpi' does not run on the ray target yet: use "
                             "launcher='torchrun' (the default)")
        if spec.network and dist.nodes > 1:
            raise ValueError(f"network={spec.network!r} cannot be given with nodes="
                             f"{dist.nodes}: a Ray run's nodes use their hosts' networks; "
                             "leave network= out")
        spec = spec.replace(resources=dataclasses.replace(res, gpus=gpus or "none"),
                            target_settings=settings)
        if distributed.asked(dist):
            spec = distributed.settle(spec, gpus)
        return spec

    @classmethod
    def gpu_count(cls, settings: dict | None = None) -> int | None:
        """The GPUs of the cluster's live nodes (a sweep runs at most that many trials of one
        GPU at once; Ray places each on a node with a free one)."""
        from .nodes import gpu_count
        return gpu_count((settings or {}).get("address", "auto"))

    @classmethod
    def describe_environment(cls, environment, cache_dir):
        """As the Docker target: the image is made on the submitter's engine (``images``)."""
        from ..docker.target import DockerTarget
        return DockerTarget.describe_environment(environment, cache_dir)

    @classmethod
    def warm_up(cls, settings: dict | None = None) -> None:
        """Given a saved target's settings (in the spare): Ray's import and ``ray.init`` now,
        not in the run's Queued; without, nothing (other targets' users never import Ray)."""
        if settings is not None and cluster.CONNECTED is None:   # the first saved one
            cluster.skip_slow_imports()
            cluster.connect(settings.get("address", "auto"))

    @classmethod
    def cool_down(cls, kind: str | None, settings: dict) -> None:
        if kind != cls.kind or settings.get("address", "auto") != cluster.CONNECTED:
            cluster.disconnect()     # the spare's run is not for this cluster

    @classmethod
    def overview(cls, settings: dict | None = None) -> list[str]:
        from .nodes import overview
        return overview((settings or {}).get("address", "auto"))

    # -- the cluster ----------------------------------------------------------------------------
    def connect(self) -> None:
        cluster.skip_slow_imports()      # a supervisor's process
        self.ray = cluster.connect(self.settings.get("address", "auto"))

    def explain(self, error: BaseException) -> str | None:
        if isinstance(error, CelltrainError):
            return str(error)
        return None

    def clean_prepare(self) -> None:
        """The agents and placement group an interrupted prepare of this run left (it marked
        the run)."""
        run_id = self.run["id"]
        if self.ray is None or run_id not in leftovers.marked(self.store, run_id):
            return
        hosts = [h for n in host.live_nodes(self.ray)
                 if (h := host.host(self.ray, n, start=False)) is not None]
        self.ray.get([h.forget.remote(run_id) for h in hosts], timeout=cluster.CALL_TIMEOUT_S)
        cluster.release(self.ray, run_id)
        leftovers.unmark(self.store, run_id)

    @property
    def labels(self) -> dict:
        from ..docker.engine import LABEL_RUN, LABEL_WORKSPACE
        return {LABEL_RUN: self.run["id"], LABEL_WORKSPACE: str(self.store.root)}

    # -- Preparing: room on the cluster, then the image on every node ----------------------------
    def prepare(self, should_stop=lambda: None) -> Prepared:
        ray, run_id = self.ray, self.run["id"]
        self.clean_prepare()
        leftovers.mark(self.store, run_id, self.settings.get("address", "auto"))

        def status(words: str) -> None:
            from ... import states
            self.notify(words)
            self.store.set_status(run_id, states.PREPARING, words)

        timeout = float(self.settings.get("scale_timeout", cluster.DEFAULT_SCALE_TIMEOUT_S))
        wanted = cluster.bundles(self.spec, self.settings)
        prefer = warmnode.hint(self.store, self.warm_key) if self.warm_key else None
        self.group = cluster.reserve(ray, run_id, wanted, status, should_stop, timeout, prefer)
        self.agents, self.where = host.adopt(ray, self.group, run_id, wanted, self.labels)
        return on_every_node(self, should_stop)

    @property
    def warm_key(self) -> str | None:
        """What the run's warm worker is known by (None: it may not start warm)."""
        from ..warmhost import eligible
        if not eligible(self.spec):
            return None
        return warmnode.environment_key(self.settings.get("address", "auto"), self.spec)

    def on_all(self, method: str, *args, timeout: float | None = cluster.CALL_TIMEOUT_S) -> list:
        """``method(*args)`` on every agent at once; a lost one raises ClusterError naming it."""
        refs = [getattr(a, method).remote(*args) for a in self.agents]
        out = []
        for k, ref in enumerate(refs):
            try:
                out.append(self.ray.get(ref, timeout=timeout))
            except Exception as e:
                if cluster.lost(e):
                    raise self._lost(k, e) from e
                raise
        return out

    def _lost(self, node: int, error: BaseException) -> ClusterError:
        where = self.where[node] if node < len(self.where) else {}
        at = f" (Ray node {where['node_id'][:12]} at {where['ip']})" if where else ""
        text = str(error).strip().splitlines()
        return ClusterError(f"node {node} of the run{at} was lost: its agent stopped answering "
                            f"({text[0][:200] if text else type(error).__name__})")

    # -- Starting -------------------------------------------------------------------------------
    def start(self, prepared: Prepared) -> Handle:
        from ..docker.target import DockerTarget
        run_id, nodes = self.run["id"], self.spec.distribution.nodes
        self.where = self.where or self.on_all("where")
        endpoint = None
        if nodes > 1:
            port = self.ray.get(self.agents[0].free_port.remote(), timeout=cluster.CALL_TIMEOUT_S)
            endpoint = f"{self.where[0]['ip']}:{port}"
        docker_like = DockerTarget(self.store, self.run, self.spec, self.notify)
        self.image_id = prepared.image_digest or prepared.image
        snapshot = self.ray.put(snapshot_tar(self.run_dir / "snapshot"))
        telemetry_host = str(self.run_dir / "telemetry")
        snapshot_host = str(self.run_dir / "snapshot")
        refs = []
        for k, agent in enumerate(self.agents):
            gpus = self.where[k].get("gpus") or None
            kwargs = docker_like.container_kwargs(k, gpus, endpoint)
            kwargs["name"] = f"{container_name(run_id, k)}"
            kwargs["volumes"] = self._portable(kwargs["volumes"])
            if nodes > 1:
                names = [container_name(run_id, j) for j in range(nodes)]
                kwargs["command"] = _rendezvous(kwargs["command"], k, names[k])
                kwargs["network_mode"] = "host"
                kwargs["hostname"] = names[k]
                kwargs["extra_hosts"] = {n: w["ip"] for n, w in zip(names, self.where)}
                kwargs.pop("ports", None)
                for var in ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME"):
                    if self.where[k].get("ifname"):
                        kwargs["environment"][var] = self.where[k]["ifname"]
                    else:
                        kwargs["environment"].pop(var, None)
            refs.append(agent.create.remote(prepared.image, kwargs, snapshot, telemetry_host,
                                            snapshot_host, warmnode.spec_for(self)))
        made = [self.ray.get(ref, timeout=cluster.CALL_TIMEOUT_S) for ref in refs]
        write_nodes(self.run_dir, self.where)
        return Handle(self.kind, {"address": self.settings.get("address", "auto"),
                                  "containers": [m["container"] for m in made], "nodes": nodes,
                                  "where": [dict(w) for w in self.where],
                                  "warm": self.warm_key if made[0]["warm"] else None})

    def _portable(self, volumes: dict) -> dict:
        """The submitter's package folders as "lib:<name>": each node mounts its own."""
        from pathlib import Path
        from ..docker.remote import LIB_MARK
        out = dict(volumes)
        for name in self.spec.lib_packages:
            folder = str(Path(__import__(name).__file__).resolve().parent)
            if folder in out:
                out[LIB_MARK + name] = out.pop(folder)
        return out

    def _attach(self, handle: Handle) -> None:
        """The handle's agents (after a re-attach, through the hosts of the nodes the handle
        names); one whose host is gone is lost."""
        if len(self.agents) != handle.ids["nodes"]:
            self.where = handle.ids.get("where") or []
            self.agents = [host.run_agent(self.ray, w["node_id"], self.run["id"], k)
                           for k, w in enumerate(self.where)]
        for k, agent in enumerate(self.agents):
            if agent is None and k not in self.lost:
                self.lost[k] = self._lost(k, RuntimeError("its agent is gone"))

    def _live(self, method: str, *args, timeout: float = cluster.CALL_TIMEOUT_S,
              per_node=None) -> dict:
        """``method`` on every agent not known to be lost, at once: {node: answer}.  An agent
        that died or does not answer is noted in ``self.lost``; ``per_node(k)``: the args."""
        refs = {k: getattr(a, method).remote(*(per_node(k) if per_node else args))
                for k, a in enumerate(self.agents) if a is not None and k not in self.lost}
        out = {}
        for k, ref in refs.items():
            try:
                out[k] = self.ray.get(ref, timeout=timeout)
            except Exception as e:
                if not cluster.lost(e):
                    raise
                self.lost[k] = self._lost(k, e)
        return out

    def launch(self, handle: Handle) -> Handle | None:
        """Start every node; a run whose warm worker was lost before it reached it started
        cold: a new handle that says so."""
        self._attach(handle)
        warm = self.on_all("start")
        if handle.ids.get("warm") and not warm[0]:
            self.notify("the warm worker was lost before the run reached it: started cold")
            return Handle(self.kind, {**handle.ids, "warm": None})
        return None

    # -- Running --------------------------------------------------------------------------------
    def exists(self, handle: Handle) -> bool:
        self._attach(handle)
        return any(s["status"] != "gone" for s in self._live("state").values())

    def is_running(self, handle: Handle) -> bool:
        """Every node alive, or the live ones after clean exits; a node that exited non-zero
        stops the others.  A lost node stops the others and fails the run: the first call
        that finds it raises ClusterError naming it."""
        self._attach(handle)
        states = self._live("state")
        if self.lost and not self.told:
            self.told = True
            self._live("stop", STOP_OTHERS_S)
            raise self.lost[min(self.lost)]
        alive = [k for k, s in states.items() if s["status"] in ALIVE]
        failed = [k for k, s in states.items() if s["status"] not in ALIVE and s["exit_code"]]
        if failed and alive:
            self.notify(f"node {failed[0]}'s container exited with code "
                        f"{states[failed[0]]['exit_code']}: stopping the other nodes")
            self._live("stop", STOP_OTHERS_S)
            return False
        return bool(alive)

    def stream_output(self, handle: Handle, resumed: bool) -> threading.Thread:
        """Pull output and telemetry from every agent into the run folder until all nodes
        have ended and nothing new comes."""
        self._attach(handle)
        self.inbox = self.inbox or Inbox(self.run_dir, handle.ids["nodes"])

        def pump():
            while True:
                try:
                    new = self.pull_all()
                    if not new:
                        states = self._live("state")
                        if all(s["status"] not in ALIVE and s["logs_done"]
                               for s in states.values()):
                            self.pull_all()
                            return
                except Exception:  # the supervisor finds out through is_running
                    return
                if not new:
                    time.sleep(PULL_S)

        thread = threading.Thread(target=pump, daemon=True, name="celltrain-ray-pull")
        thread.start()
        return thread

    def pull_all(self) -> bool:
        """What every live node has new, into the run folder; whether there was anything."""
        offsets = self.inbox.offsets
        new = False
        for k, (data, marks) in self._live("pull", per_node=lambda k: (offsets[k],)).items():
            new = self.inbox.take(k, data, marks) or new
        return new

    def sample_usage(self, handle: Handle) -> dict | None:
        self._attach(handle)
        return usage.sample(self)

    def stop(self, handle: Handle, grace: float) -> None:
        self._attach(handle)
        self._live("stop", grace, timeout=grace + cluster.CALL_TIMEOUT_S)

    def result(self, handle: Handle) -> Result:
        """The exit code of the node that failed first (else 0), OOM if any node's was."""
        self._attach(handle)
        ended = sorted((s["finished"] or "9", k, s["exit_code"], s["oom"])
                       for k, s in self._live("state").items())
        for _, k, code, oom in ended:
            if oom:
                self.noun = f"container of node {k}"
                return Result(code, True)
        bad = [e for e in ended if e[2]]
        if bad:
            return Result(bad[0][2], False)
        return Result(ended[0][2] if ended else None, False)

    # -- Finalizing -----------------------------------------------------------------------------
    def collect(self, handle: Handle) -> None:
        """The last output and telemetry, then every live node's ./outputs and ./logs."""
        self._attach(handle)
        self.inbox = self.inbox or Inbox(self.run_dir, handle.ids["nodes"])
        self.pull_all()
        skipped = []
        for k, tars in sorted(self._live("collect").items()):
            skipped += extract_outputs(self.run_dir, k, tars)
        copyback.report(self.store, self.run["id"], skipped)

    def cleanup(self, handle: Handle) -> None:
        """Every live node's container, folder and agent, the placement group."""
        self._attach(handle)
        removed = self._live("remove")
        if self.warm_key and (removed.get(0) or {}).get("worker"):   # the next run goes there
            warmnode.remember(self.store, self.warm_key, self.where[0]["node_id"])
        cluster.release(self.ray, self.run["id"])
        if self.lost:     # their containers and folders: when the workspace is next opened
            leftovers.mark(self.store, self.run["id"], self.settings.get("address", "auto"),
                           [self.where[k]["ip"] for k in self.lost if k < len(self.where)])
        else:
            leftovers.unmark(self.store, self.run["id"])

    @classmethod
    def reconcile(cls, store, supervisor_alive) -> None:
        """Ended runs' placement groups, agents and lost nodes' containers (``leftovers``)."""
        leftovers.clean(store, supervisor_alive)


def _rendezvous(command: list, node: int, name: str) -> list:
    """torchrun's options for nodes sharing host networks: whether this node serves the c10d
    store (it would decide by matching the endpoint against its hostname, which need not
    resolve to its cluster address), and the node's own name as its address (each container
    resolves every node's name to that node's address): torchrun tells nodes apart by address
    and pid, and two containers on one machine share both."""
    if "--rdzv-id" not in command:
        return command
    at = command.index("--rdzv-id") + 2
    return [*command[:at], "--rdzv-conf", f"is_host={'true' if node == 0 else 'false'}",
            "--local-addr", name, *command[at:]]

