"""What a Ray cluster offers runs, as ``celltrain targets`` shows it: every node's address,
whether it is alive, its CPUs, its GPUs (all and free) and whether Docker answers there (asked
by a small task on that node), and the GPUs the cluster has for sweeps."""
from __future__ import annotations

from . import cluster

ASK_S = 30.0      # a node's Docker answer not in by then: "no answer"


def _engine_here() -> str:
    from ..docker.remote import engine_here
    return engine_here()


def nodes(ray) -> list[dict]:
    """{"node_id", "ip", "alive", "cpus", "gpus", "gpus_free", "docker"} per node, head first."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    try:
        from ray._private.state import available_resources_per_node
        free = available_resources_per_node()
    except Exception:  # a Ray without it: free GPUs unknown
        free = {}
    ask = ray.remote(num_cpus=0)(_engine_here)
    out, refs = [], {}
    for node in ray.nodes():
        res, node_id = node.get("Resources") or {}, node["NodeID"]
        row = {"node_id": node_id, "ip": node.get("NodeManagerAddress"),
               "alive": bool(node.get("Alive")), "cpus": res.get("CPU", 0),
               "gpus": res.get("GPU", 0),
               "gpus_free": (free.get(node_id) or {}).get("GPU", 0) if free else None,
               "docker": "-"}
        if row["alive"]:
            refs[len(out)] = ask.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
                node_id, soft=False)).remote()
        out.append(row)
    for k, ref in refs.items():
        try:
            out[k]["docker"] = ray.get(ref, timeout=ASK_S)
        except Exception as e:  # the node died or is too busy to start a worker: say so
            out[k]["docker"] = f"no answer ({type(e).__name__})"
    return out


def overview(address: str) -> list[str]:
    """Lines about the cluster at ``address``: its nodes, then its GPUs."""
    from ...views.tables import format_table
    try:
        ray = cluster.connect(address)
        rows = nodes(ray)
    except Exception as e:  # an unreachable cluster is a line of the listing, not a crash
        return [f"  {str(e).strip()[:300]}"]
    table = format_table([[r["node_id"][:12], r["ip"], "alive" if r["alive"] else "dead",
                           f"{r['cpus']:g}", _gpus(r), r["docker"]] for r in rows],
                         ["NODE", "ADDRESS", "", "CPUS", "GPUS (FREE)", "DOCKER"])
    alive = [r for r in rows if r["alive"]]
    total = sum(r["gpus"] for r in alive)
    if all(r["gpus_free"] is not None for r in alive):
        free = sum(r["gpus_free"] for r in alive)
    else:    # through Ray Client (ray://) free GPUs per node are not served: the cluster's
        free = ray.available_resources().get("GPU", 0)
    return ["  " + line for line in table.splitlines()] + [
        f"  {len(alive)} of {len(rows)} nodes alive; GPUs: {free:g} free of {total:g}"]


def _gpus(row: dict) -> str:
    if row["gpus_free"] is None:
        return f"{row['gpus']:g}"
    return f"{row['gpus']:g} ({row['gpus_free']:g})"


def gpu_count(address: str) -> int:
    """The GPUs of the cluster's live nodes (a sweep's trials share them)."""
    ray = cluster.connect(address)
    return int(ray.cluster_resources().get("GPU", 0))
