"""Talking to the Ray cluster: connecting, the run's placement group, its node agents.

A run of ``nodes`` nodes asks for a placement group of ``nodes`` bundles (CPUs, GPUs, memory of
one node; STRICT_SPREAD, one bundle per Ray node, when there are several) and waits while the
cluster makes room (its autoscaler adds nodes), saying what is missing.  The group holds the
bundles' resources for the nodes' containers; on each bundle's node the run gets an agent
(``agent.NodeAgent``) from that node's long-lived host (``host.adopt``).  The group is detached and
named after the run, and the hosts are detached and named after their nodes, so both outlive a
supervisor that dies and the next one finds them.
"""
from __future__ import annotations

import time

from ...errors import CelltrainError
from ..base import PrepareStopped

NAMESPACE = "celltrain"
RAY_MISSING = ("the ray target needs Ray in this Python: pip install 'celltrain[ray]' (the "
               "same Ray version as the cluster's)")
DEFAULT_SCALE_TIMEOUT_S = 600.0
PROBE_S = 5.0              # a cluster address that does not take a connection within this is down
CALL_TIMEOUT_S = 60.0       # an agent that does not answer a call within this is lost
CONNECTED = None            # the address this process is connected to (``connect``)


class ClusterError(CelltrainError):
    """The cluster cannot carry the run (unreachable, no room, a node lost); the message is
    the run's reason."""


class RunUnknown(LookupError):
    """A node's host holds no such run: the host that held it died (its node was lost)."""


def require_ray():
    try:
        import ray
    except ImportError:
        raise CelltrainError(RAY_MISSING) from None
    return ray


def skip_slow_imports() -> None:
    """For celltrain's own processes only (the spare, a supervisor), before Ray's import: Ray
    imports jsonschema, which imports rfc3987-syntax where it is installed (Jupyter's
    jsonschema extra brings it), and that builds a grammar on import: ~3.5 s of CPU.  Without
    it jsonschema only skips checking the "iri" format, which these processes never use."""
    import sys
    if "ray" not in sys.modules and "jsonschema" not in sys.modules:
        sys.modules.setdefault("rfc3987_syntax", None)   # its import raises ImportError


def connect(address: str):
    """The ``ray`` module, connected to the cluster at ``address`` in celltrain's namespace.
    A process stays connected (one Ray driver): the spare supervisor connects ahead of the
    run it is handed; a run for another address is connected afresh."""
    global CONNECTED
    ray = require_ray()
    if ray.is_initialized() and CONNECTED == address:
        return ray
    if ray.is_initialized():
        ray.shutdown()
    CONNECTED = None
    try:
        _answers(address)    # ray.init would retry a dead address for minutes
        # A Ray Client (ray://) passes other arguments on to ray.init on the server, where
        # they fail the connection: give it the namespace only.
        quiet = {} if address.startswith("ray://") else dict(
            log_to_driver=False, logging_level="WARNING", include_dashboard=False)
        ray.init(address=address, namespace=NAMESPACE, **quiet)
        CONNECTED = address
    except Exception as e:  # ConnectionError, RuntimeError, ValueError: all say "no cluster"
        raise ClusterError(f"the Ray cluster at {address!r} does not answer ({short(e)}): "
                           "start it (`ray start --head` on the head node), or give the "
                           "saved target's address= (a GCS address host:6379, ray://host:10001 "
                           "or auto)") from e
    return ray


def disconnect() -> None:
    """Leave the cluster this process is connected to, if any."""
    global CONNECTED
    CONNECTED = None
    import sys
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def _answers(address: str) -> None:
    """ConnectionError unless something listens at ``address`` ("host:port", "ray://host:port";
    "auto" and other forms are left to Ray)."""
    import socket
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_S).close()
    except OSError as e:
        raise ConnectionError(f"nothing answers at {host}:{port} ({e})") from None


def group_name(run_id: str) -> str:
    return f"celltrain-{run_id}"


def container_name(run_id: str, node: int) -> str:
    return f"celltrain-{run_id}-node{node}"


def custom_resources(value) -> dict:
    """A target's ``resources=``: Ray custom resources every node of its runs needs, e.g.
    {"a100": 1} for the nodes started with ``ray start --resources='{"a100": 1}'``."""
    if isinstance(value, str):
        import json
        try:
            value = json.loads(value)
        except ValueError:
            value = None
    if not isinstance(value, dict) or not value or not all(
            isinstance(k, str) and k not in ("CPU", "GPU", "memory") and not isinstance(v, bool)
            and isinstance(v, (int, float)) and v > 0 for k, v in value.items()):
        raise ValueError(f"resources={value!r}: give the Ray custom resources each node needs "
                         "as a dict of positive numbers, e.g. resources={'a100': 1} (CPUs, GPUs "
                         "and memory come from the run's cpus=, gpus=, memory=)")
    return {k: float(v) for k, v in value.items()}


def bundles(spec, settings: dict | None = None) -> list[dict]:
    """One bundle per node: its CPUs (1 unless cpus= says), GPUs, memory and the target's
    custom resources."""
    from ...options import size_bytes
    res, nodes = spec.resources, spec.distribution.nodes
    bundle = {"CPU": float(res.cpus or 1)}
    gpus = res.gpus if isinstance(res.gpus, int) and not isinstance(res.gpus, bool) else 0
    if gpus:
        bundle["GPU"] = float(gpus)
    if res.memory:
        bundle["memory"] = float(size_bytes("memory", res.memory))
    bundle.update((settings or {}).get("resources") or {})
    return [dict(bundle) for _ in range(nodes)]


def describe(bundle: dict) -> str:
    words = [f"{bundle['CPU']:g} CPU"]
    if bundle.get("GPU"):
        words.append(f"{bundle['GPU']:g} GPU")
    if bundle.get("memory"):
        words.append(f"{bundle['memory'] / 2**30:.1f} GiB memory")
    words += [f"{v:g} {k}" for k, v in bundle.items() if k not in ("CPU", "GPU", "memory")]
    return ", ".join(words)


def shortfall(ray, bundle: dict, count: int) -> str:
    """What the cluster lacks for ``count`` bundles, in words."""
    alive = [n for n in ray.nodes() if n.get("Alive")]
    fit = sum(all(n["Resources"].get(k, 0) >= v for k, v in bundle.items()) for n in alive)
    free = ray.available_resources()
    have = ", ".join(f"{free.get(k, 0):g} {k}" if k != "memory" else
                     f"{free.get(k, 0) / 2**30:.1f} GiB memory" for k in bundle)
    return (f"{fit} of the cluster's {len(alive)} nodes could hold one, and {have} are free "
            f"in all")


def reserve(ray, run_id: str, wanted: list[dict], status, should_stop, timeout: float,
            prefer: str | None = None):
    """The run's placement group once the cluster has room for it; ``status(words)`` shows
    the Scaling wait.  On a cancel or a timeout the group is removed (PrepareStopped, or a
    ClusterError saying what was missing).  ``prefer``: a node a one-node run would rather
    have (its warm worker waits there), if it is alive and has room."""
    from ray.util.placement_group import placement_group, remove_placement_group
    nodes = len(wanted)
    release(ray, run_id)      # an earlier supervisor's, for this same run
    hint = {}
    if nodes == 1 and prefer and any(n["NodeID"] == prefer and n.get("Alive")
                                     for n in ray.nodes()):
        hint = {"strategy": "STRICT_PACK", "_soft_target_node_id": prefer}
    group = placement_group(wanted, **{"strategy": "STRICT_SPREAD" if nodes > 1 else "PACK",
                                       **hint}, name=group_name(run_id), lifetime="detached")
    ready, deadline, shown = group.ready(), time.monotonic() + timeout, ""
    what = (f"{nodes} node{'s' if nodes > 1 else ''} with {describe(wanted[0])}"
            f"{' each' if nodes > 1 else ''}")
    while True:
        done, _ = ray.wait([ready], timeout=1.0)
        if done:
            return group
        if should_stop():
            remove_placement_group(group)
            raise PrepareStopped
        missing = shortfall(ray, wanted[0], nodes)
        if missing != shown:
            status(f"Scaling: waiting for {what}; {missing}")
            shown = missing
        if time.monotonic() > deadline:
            remove_placement_group(group)
            raise ClusterError(f"the Ray cluster had no room for {what} within {timeout:g}s "
                               f"(scale_timeout): {missing}; add nodes, lower nodes=/gpus=/"
                               "cpus=, or raise the target's scale_timeout")


def release(ray, run_id: str) -> None:
    """Remove the run's placement group, if it has one."""
    from ray.util.placement_group import get_placement_group, remove_placement_group
    try:
        group = get_placement_group(group_name(run_id))
    except ValueError:
        return
    try:
        remove_placement_group(group)
    except Exception:  # removed meanwhile
        pass


def lost(error: BaseException) -> bool:
    """Whether ``error`` means an agent (its node) is gone or does not answer."""
    import ray.exceptions as rex
    return isinstance(error, (rex.RayActorError, rex.GetTimeoutError, rex.ActorUnavailableError,
                              rex.NodeDiedError, RunUnknown))


def short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[-1][:200] if text else type(e).__name__
