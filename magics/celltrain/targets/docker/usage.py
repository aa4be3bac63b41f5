"""CPU and memory of a run's containers, from Docker's stats (the supervisor samples them).

One ``stats(stream=False, one_shot=True)`` call per container and sample: a single read of the
cgroup, no wait for a second reading (Docker's own CPU percentage waits a second for it).  The
CPU percentage is computed here between this sample and the one before, as ``docker stats``
computes it: the container's CPU time over the host's, times the host's CPUs.
"""
from __future__ import annotations


class ContainerUsage:
    """``sample_usage`` for the Docker target (a mix-in of ``DockerTarget``)."""

    _usage_before: dict | None = None

    def sample_usage(self, handle) -> dict | None:
        ids = handle.ids.get("containers") or [handle.ids["container"]]
        cpu = system = 0
        online = 1
        mem = limit = 0
        for cid in ids:
            stats = self.client.api.stats(cid, stream=False, one_shot=True)
            cpu_stats = stats.get("cpu_stats") or {}
            cpu += (cpu_stats.get("cpu_usage") or {}).get("total_usage") or 0
            system = max(system, cpu_stats.get("system_cpu_usage") or 0)
            online = max(online, cpu_stats.get("online_cpus") or 1)
            mem += memory_used(stats.get("memory_stats") or {})
            limit += (stats.get("memory_stats") or {}).get("limit") or 0
        usage = {"mem_bytes": mem}
        if self.spec.resources.memory and limit:   # without memory= the limit is the host's
            usage["mem_limit_bytes"] = limit
        before, self._usage_before = self._usage_before, {"cpu": cpu, "system": system}
        if before and system > before["system"] and cpu >= before["cpu"]:
            usage["cpu_percent"] = (cpu - before["cpu"]) / (system - before["system"]) \
                * online * 100.0
        return usage


def memory_used(memory_stats: dict) -> int:
    """Memory in use as ``docker stats`` shows it: the usage less the page cache that can be
    dropped (``inactive_file`` on cgroup v2, ``total_inactive_file`` on v1)."""
    usage = memory_stats.get("usage") or 0
    stats = memory_stats.get("stats") or {}
    cache = stats.get("inactive_file", stats.get("total_inactive_file", 0)) or 0
    return max(0, usage - cache)
