"""System metrics: the store's ``sys/`` series, the /proc and Docker samplers on real runs, and
the GPU path (a fake NVML and a fake nvidia-smi: there is no GPU on this machine)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import types

import pytest

from celltrain import states, sysmetrics
from celltrain.store import Store
from celltrain.targets.proctree import SessionSampler, session_usage

BUSY = """
import time
from celltrain import log
block = bytearray(64 * 2**20)          # 64 MiB, touched so that it is resident
for i in range(0, len(block), 4096):
    block[i] = 1
end = time.time() + 3
n = 0
while time.time() < end:
    n += 1
log("loss", 0.5)
log("cpu_seconds", time.process_time())     # what the samples may add up to, at most
"""


def _cpu_seconds(series) -> float:
    """The CPU time the samples account for: each CPU sample is the mean since the sample
    before it (every sample has a memory value, so those give the times)."""
    times = series["sys/mem_bytes"]["t"]
    cpu = series["sys/cpu_percent"]
    return sum(v / 100 * (t - max(x for x in times if x < t)) for t, v in zip(cpu["t"], cpu["v"]))


def _check_cpu(series, run) -> None:
    """The busy loop shows as CPU use, and the samples never add up to more CPU time than the
    run's process used (how much of a core it got depends on the machine's load)."""
    used = run.latest_metrics()["cpu_seconds"]
    assert max(series["sys/cpu_percent"]["v"]) > 1, series
    assert 0 < _cpu_seconds(series) <= used * 1.1 + 0.1, (used, series)


def _run_row(store: Store, run_id: str = "r1") -> str:
    store.conn.execute("INSERT OR IGNORE INTO experiments (id, name, created) VALUES (1, 'e', 0)")
    store.conn.execute("INSERT INTO runs (id, experiment_id, number, status, created) "
                       "VALUES (?, 1, 1, 'Running', 0)", (run_id,))
    return run_id


def test_store_keeps_system_series_apart_from_the_users_metrics(tmp_path):
    store = Store(tmp_path)
    run = _run_row(store)
    store.add_metrics(run, [("loss", 0, 1.0, 100.0)])
    for i in range(10):
        store.add_system_sample(run, 100.0 + i, {"sys/cpu_percent": 10.0 * i,
                                                 "sys/mem_bytes": 1000 + i})
    assert store.metric_names(run) == ["loss"] and list(store.latest_metrics(run)) == ["loss"]
    assert store.system_names(run) == ["sys/cpu_percent", "sys/mem_bytes"]
    assert store.latest_system(run) == {"sys/cpu_percent": 90.0, "sys/mem_bytes": 1009}
    whole = store.system_series(run, since=99.0)
    assert whole["sys/cpu_percent"] == {"t": [float(i + 1) for i in range(10)],
                                        "v": [10.0 * i for i in range(10)]}
    short = store.system_series(run, max_points=4)    # averaged over equal stretches of time
    assert len(short["sys/mem_bytes"]["v"]) <= 4
    assert short["sys/cpu_percent"]["t"][0] == pytest.approx(1.0)   # the mean of 0, 1, 2 s
    assert sum(short["sys/mem_bytes"]["v"]) / len(short["sys/mem_bytes"]["v"]) \
        == pytest.approx(1004.5, abs=1.0)
    with pytest.raises(ValueError, match="start with 'sys/', not 'cpu'"):
        store.add_system_sample(run, 1.0, {"cpu": 1.0})
    assert store.system_series("other") == {}


def test_session_usage_counts_every_process_of_a_busy_session():
    code = ("import subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'while True: pass'])\n"
            "x = bytearray(32 * 2**20)\nfor i in range(0, len(x), 4096): x[i] = 1\n"
            "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        sampler = SessionSampler(proc.pid, time.monotonic)
        assert "cpu_percent" not in (sampler.sample() or {})     # the first sample: no delta
        time.sleep(1.5)
        usage = sampler.sample()
        cpu, rss, count = session_usage(proc.pid)
        assert count == 2                                       # the parent and its child
        assert usage["mem_bytes"] > 32 * 2**20 and rss > 32 * 2**20
        assert usage["cpu_percent"] > 1 and cpu > 0     # the child spins (as the load allows)
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()
    assert SessionSampler(proc.pid, time.monotonic).sample() is None     # all gone


def test_local_run_gets_cpu_and_memory_series(workspace, make_source, monkeypatch):
    monkeypatch.setenv("CELLTRAIN_SYS_INTERVAL", "0.5")
    run = workspace.experiment("exp").submit("train.py", make_source(BUSY), target="local")
    assert run.wait(timeout=90) == states.COMPLETED
    series = workspace.store.system_series(run.id)
    _check_cpu(series, run)
    assert max(series["sys/mem_bytes"]["v"]) > 64 * 2**20, series
    assert "sys/mem_percent" not in series          # a local run has no memory limit
    assert sorted(run.latest_metrics()) == ["cpu_seconds", "loss"]   # no sys/ among them


def test_docker_run_gets_cpu_memory_and_percent_of_its_limit(docker_workspace, make_source,
                                                            monkeypatch):
    monkeypatch.setenv("CELLTRAIN_SYS_INTERVAL", "0.5")
    run = docker_workspace.experiment("exp").submit(
        "train.py", make_source(BUSY), target="docker", gpus="none", memory="512m",
        network="none")   # it needs none (and the shared engine's bridge may be down)
    assert run.wait(timeout=300) == states.COMPLETED, run.reason
    series = docker_workspace.store.system_series(run.id)
    _check_cpu(series, run)
    assert max(series["sys/mem_bytes"]["v"]) > 64 * 2**20, series
    top = max(series["sys/mem_percent"]["v"])
    assert 64 / 512 * 100 < top < 100, series           # of the 512 MiB limit
    assert sorted(run.latest_metrics()) == ["cpu_seconds", "loss"]


def test_bad_interval_is_refused_by_name():
    assert sysmetrics.interval_s({}) == sysmetrics.DEFAULT_INTERVAL_S
    assert sysmetrics.interval_s({"CELLTRAIN_SYS_INTERVAL": "0"}) == 0
    with pytest.raises(ValueError, match="CELLTRAIN_SYS_INTERVAL .* not 'often'"):
        sysmetrics.interval_s({"CELLTRAIN_SYS_INTERVAL": "often"})


# -- GPUs: faked, because this machine has none --------------------------------------------------
class _FakeNvml(types.ModuleType):
    """pynvml's calls the sampler makes, over two GPUs (a stand-in: no GPU here)."""

    def __init__(self):
        super().__init__("pynvml")
        self.shut = False

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        self.shut = True

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetUtilizationRates(self, device):
        return types.SimpleNamespace(gpu=[35, 80][device])

    def nvmlDeviceGetMemoryInfo(self, device):
        return types.SimpleNamespace(used=[1, 3][device] * 2**30, total=16 * 2**30)


class _NoUsageTarget:
    """A target that reports no CPU or memory (as the Ray target), given ``gpus``."""

    def __init__(self, gpus):
        self.spec = types.SimpleNamespace(resources=types.SimpleNamespace(gpus=gpus))

    def sample_usage(self, handle):
        return None


def test_gpus_through_nvml_sample_only_the_runs_gpus(tmp_path, monkeypatch):
    fake = _FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    source = sysmetrics.gpu_source()
    assert source.name == "nvml"
    assert sysmetrics.sample_once(_NoUsageTarget([1]), None, source) == {
        "sys/gpu1_util": 80.0, "sys/gpu1_mem_bytes": 3 * 2**30}
    assert set(sysmetrics.sample_once(_NoUsageTarget("all"), None, source)) == {
        "sys/gpu0_util", "sys/gpu0_mem_bytes", "sys/gpu1_util", "sys/gpu1_mem_bytes"}
    assert sysmetrics.sample_once(_NoUsageTarget(1), None, source) == {
        "sys/gpu0_util": 35.0, "sys/gpu0_mem_bytes": 2**30}
    assert sysmetrics.sample_once(_NoUsageTarget("none"), None, source) == {}
    store = Store(tmp_path)
    sampler = sysmetrics.Sampler(store, _run_row(store), _NoUsageTarget("all"), None, 0.05,
                                 gpus="find").start()
    while not sampler.samples:
        time.sleep(0.05)
    sampler.stop()
    sampler.thread.join(timeout=5)
    assert fake.shut and store.latest_system("r1")["sys/gpu1_util"] == 80.0


class _ClusterTarget(_NoUsageTarget):
    """A cluster target (as the Ray target): its nodes' agents sample the GPUs there."""

    one_machine = False

    def sample_usage(self, handle):
        return {"mem_bytes": 5, "gpus": {0: (12.0, 2**30), 1: (90.0, 2**31)}}


def test_a_cluster_runs_gpus_are_its_nodes_never_the_submitters(tmp_path, monkeypatch):
    """The submitter has GPUs (a stand-in NVML), the run's are on the cluster's nodes: the
    series are what the nodes' agents read, numbered across the nodes."""
    fake = _FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert sysmetrics.sample_once(_ClusterTarget(1), None, None) == {
        "sys/mem_bytes": 5, "sys/gpu0_util": 12.0, "sys/gpu0_mem_bytes": 2**30,
        "sys/gpu1_util": 90.0, "sys/gpu1_mem_bytes": 2**31}
    store = Store(tmp_path)
    sampler = sysmetrics.Sampler(store, _run_row(store), _ClusterTarget(1), None, 0.05,
                                 gpus="find").start()
    while not sampler.samples:
        time.sleep(0.05)
    sampler.stop()
    sampler.thread.join(timeout=5)
    assert sampler.gpus is None          # the submitter's NVML was never opened
    assert store.latest_system("r1")["sys/gpu1_util"] == 90.0


def test_a_ray_nodes_agent_reads_the_gpus_ray_gave_the_run(monkeypatch):
    """On the node, the agent samples its run's GPU ids (stand-in NVML: no GPU here)."""
    from celltrain.targets.ray.agent import NodeAgent
    monkeypatch.setitem(sys.modules, "pynvml", _FakeNvml())
    agent = NodeAgent.__new__(NodeAgent)      # without a container: only its GPUs asked
    agent.gpus = ["1"]
    assert agent._gpu_use() == [["1", 80.0, 3 * 2**30]]
    agent.gpus, agent.gpu_tool = [], "find"
    assert agent._gpu_use() == []


def test_gpus_through_nvidia_smi_when_nvml_is_missing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)       # import pynvml fails
    smi = tmp_path / "nvidia-smi"                           # a stand-in: no GPU here
    smi.write_text("#!/bin/sh\necho '0, 12, 1024'\necho '1, [N/A], [N/A]'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    source = sysmetrics.gpu_source()
    assert source.name == "nvidia-smi"
    assert source.sample() == {0: (12.0, 2**30)}
    monkeypatch.setenv("PATH", "/nonexistent")
    assert sysmetrics.gpu_source() is None
