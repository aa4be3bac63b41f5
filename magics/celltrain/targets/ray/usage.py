"""What a Ray run's containers use, sampled through the nodes' agents (README "System metrics").

The supervisor's sampler asks the target every few seconds; the agents read Docker's stats of
their container and NVML (or nvidia-smi) for the run's GPUs on their node, as raw counters, and
the percentages are made here between two samples, node by node, as for a Docker run.
"""
from __future__ import annotations

SAMPLE_S = 10.0     # a usage sample a node has not answered within this is skipped


def sample(target) -> dict | None:
    """Every live node's container (CPU % summed over the nodes, memory summed) and GPUs
    (numbered across the nodes in node order), asked of the agents; a node that does
    not answer within SAMPLE_S is left out of this sample, never taken for lost."""
    refs = {k: a.usage.remote() for k, a in enumerate(target.agents)
            if a is not None and k not in target.lost}
    now = {}
    for k, ref in refs.items():
        try:
            now[k] = target.ray.get(ref, timeout=SAMPLE_S)
        except Exception:  # noqa: BLE001  (an ended container, a slow engine: next time)
            continue
    if not now:
        return None
    before, target.usage_before = target.usage_before, {**target.usage_before, **now}
    usage = {"mem_bytes": sum(u["mem"] for u in now.values())}
    if target.spec.resources.memory:
        usage["mem_limit_bytes"] = sum(u["limit"] for u in now.values())
    shares = [(u["cpu"] - b["cpu"]) / (u["system"] - b["system"]) * u["online"] * 100.0
              for k, u in now.items() if (b := before.get(k))
              and u["system"] > b["system"] and u["cpu"] >= b["cpu"]]
    if shares:
        usage["cpu_percent"] = sum(shares)
    gpus = [g for k in sorted(now) for g in now[k]["gpus"]]
    if gpus:
        usage["gpus"] = {i: (util, used) for i, (_, util, used) in enumerate(gpus)}
    return usage
