"""The node host: one long-lived Ray actor per Ray node, holding the node agents of every run
placed on that node.

Starting an actor costs a new Ray worker process (Python, ``import ray``, celltrain's and
Docker's modules: seconds, tens of seconds on a loaded machine); a run that started one agent
actor per node spent nearly all its Preparing on it.  A host is started the first time a run
lands on its node and kept: detached, named after the node and celltrain's code (an upgraded
submitter starts new ones), holding none of the node's resources (the run's placement group
holds them) and answering many runs' calls at once.  When its node is lost the host dies with
it: its runs' calls fail (the supervisor names the node) and their containers' watchdogs stop
them.  A host started afresh on a node knows none of the runs an earlier one held: a call for
such a run raises ``RunUnknown``, which the supervisor takes as that node lost.
"""
from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from . import warmnode
from .agent import NodeAgent, tidy_node
from .cluster import CALL_TIMEOUT_S, NAMESPACE, ClusterError, RunUnknown, short

CONCURRENCY = 64        # calls a host answers at once (every run's pulls, states, image loads)
START_S = 300.0         # a host that has not answered its first call within this never will
CALLS = frozenset({"where", "free_port", "prepare", "has_image", "receive_image", "load_image",
                   "create", "start", "state", "stop", "pull", "collect", "remove", "usage"})


def _code() -> str:
    """celltrain's version and the code a host runs, in 8 hex digits."""
    from ... import __version__
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256(__version__.encode())
    for path in (here / "host.py", here / "agent.py", here.parent / "docker" / "remote.py"):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:8]


CODE = _code()


class NodeHost:
    """The node agents of the runs on this node, by (run id, node index of the run)."""

    def __init__(self):
        self.agents: dict[tuple[str, int], NodeAgent] = {}
        self.lock = threading.Lock()

    def adopt(self, run_id: str, node: int, labels: dict, gpus: list) -> dict:
        """A fresh agent for the run's node (an earlier one of the same run removed first);
        where it is."""
        self.forget(run_id, node)
        agent = NodeAgent(run_id, node, labels, gpus, self.holds)
        with self.lock:
            self.agents[(run_id, node)] = agent
        return agent.where()

    def call(self, run_id: str, node: int, method: str, *args):
        """``method(*args)`` of the run's agent on this node; "remove" also lets it go."""
        if method not in CALLS:
            raise ValueError(f"a node agent has no call {method!r}")
        with self.lock:
            agent = self.agents.get((run_id, node))
        if agent is None:
            raise RunUnknown(f"this node's celltrain host holds no node {node} of run {run_id} "
                             "(the host that held it is gone)")
        answer = getattr(agent, method)(*args)
        if method == "remove":
            with self.lock:
                if self.agents.get((run_id, node)) is agent:
                    del self.agents[(run_id, node)]
            try:
                warmnode.tidy(agent.box.client)
            except Exception:  # noqa: BLE001  (an engine slow to list: the next run's turn)
                pass
        return answer

    def forget(self, run_id: str, node: int | None = None) -> int:
        """The run's agents here (one node's, or all) removed with their containers and
        folders; how many."""
        with self.lock:
            keys = [k for k in self.agents if k[0] == run_id and node in (None, k[1])]
            gone = [self.agents.pop(k) for k in keys]
        for agent in gone:
            agent.remove()
        return len(gone)

    def tidy(self, run_id: str, workspace: str) -> int:
        """An ended run forgotten, its containers and folders on this node removed (the ones
        a lost node's earlier host left too); how many containers."""
        self.forget(run_id)
        return tidy_node(run_id, workspace)

    def holds(self, run_id: str) -> bool:
        with self.lock:
            return any(k[0] == run_id for k in self.agents)

    def held(self) -> list:
        """[run id, node] of every run agent here."""
        with self.lock:
            return sorted([list(k) for k in self.agents])


class RunAgent:
    """A run's agent on one node, called like an actor: ``agent.state.remote()`` is the
    host's ``call`` for that run and node."""

    def __init__(self, host, run_id: str, node: int):
        self.host, self.run_id, self.node = host, run_id, node

    def __getattr__(self, method: str):
        if method not in CALLS:
            raise AttributeError(method)
        return _Call(self, method)


class _Call:
    def __init__(self, agent: RunAgent, method: str):
        self.agent, self.method = agent, method

    def remote(self, *args):
        a = self.agent
        return a.host.call.remote(a.run_id, a.node, self.method, *args)


_ACTOR = None


def host_name(node_id: str) -> str:
    return f"celltrain-host-{node_id[:24]}-{CODE}"


def host(ray, node_id: str, start: bool = True):
    """The host of Ray node ``node_id`` (started if missing and ``start``), None if there is
    none."""
    global _ACTOR
    if not start:
        try:
            return ray.get_actor(host_name(node_id), namespace=NAMESPACE)
        except ValueError:
            return None
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    if _ACTOR is None:
        _ACTOR = ray.remote(NodeHost)
    return _ACTOR.options(
        name=host_name(node_id), namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
        num_cpus=0, max_concurrency=CONCURRENCY, max_restarts=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote()


def run_agent(ray, node_id: str, run_id: str, node: int) -> RunAgent | None:
    """The run's agent on Ray node ``node_id``, None when that node's host is gone."""
    found = host(ray, node_id, start=False)
    return None if found is None else RunAgent(found, run_id, node)


def live_nodes(ray) -> list[str]:
    return [n["NodeID"] for n in ray.nodes() if n.get("Alive")]


def adopt(ray, group, run_id: str, wanted: list[dict], labels: dict) -> tuple[list, list]:
    """The run's agent on each bundle's node, held by that node's host (started the first time
    a run lands there): (agents, where each is)."""
    from ray.util.placement_group import placement_group_table
    on = placement_group_table(group)["bundles_to_node_id"]
    node_ids = [on[k] for k in range(len(wanted))]
    gpus = gpu_ids(ray, group, wanted)
    hosts = [host(ray, node_id) for node_id in node_ids]
    refs = [h.adopt.remote(run_id, k, labels, gpus[k]) for k, h in enumerate(hosts)]
    where = []
    for k, ref in enumerate(refs):
        try:
            where.append(ray.get(ref, timeout=START_S))
        except Exception as e:
            raise ClusterError(f"celltrain's host on Ray node {node_ids[k][:12]} (node {k} of "
                               f"the run) did not answer within {START_S:g}s ({short(e)}): "
                               "is celltrain installed in that node's Python?") from e
    return [RunAgent(h, run_id, k) for k, h in enumerate(hosts)], where


def gpu_ids(ray, group, wanted: list[dict]) -> list[list[str]]:
    """The GPU ids Ray gave each bundle (a task in the bundle asking for all of them reads
    them); no task where a bundle has no GPU."""
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
    out: list = [[] for _ in wanted]
    refs = {k: ray.remote(_gpu_ids).options(
        num_cpus=0, num_gpus=b["GPU"], scheduling_strategy=PlacementGroupSchedulingStrategy(
            group, placement_group_bundle_index=k)).remote()
        for k, b in enumerate(wanted) if b.get("GPU")}
    for k, ref in refs.items():
        out[k] = ray.get(ref, timeout=CALL_TIMEOUT_S)
    return out


def _gpu_ids() -> list[str]:
    import ray
    return [str(g) for g in ray.get_gpu_ids()]
