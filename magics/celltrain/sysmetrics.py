"""System metrics of a run, sampled by its supervisor on the host: CPU, memory and GPUs.

The target says what the run's processes use (``ComputeTarget.sample_usage``: Docker's stats for
a container, ``/proc`` for a local process tree; the Ray target asks its nodes' agents, GPUs
included); a one-machine target's GPUs are asked of NVML (``pynvml`` from the nvidia-ml-py package when installed, else ``nvidia-smi``, else there
are none).  Every ``CELLTRAIN_SYS_INTERVAL`` seconds (5 by default; 0 turns sampling off) one
sample goes into the store's ``system_metrics`` table under ``sys/`` names:

    sys/cpu_percent      CPU of the run's processes; 100 is one core busy
    sys/mem_bytes        memory in use (resident; a container's less its droppable page cache)
    sys/mem_percent      of the run's memory= limit, when it has one
    sys/gpu<i>_util      GPU i's utilisation, %
    sys/gpu<i>_mem_bytes GPU i's memory in use (the whole device's: NVML does not split it
                         by container)

GPU numbers are the device's as NVML counts them; a run is sampled on the GPUs it was given
(``gpus=[0, 2]``: those, a count n: the first n, "all": every one).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time

from .store.system import PREFIX

DEFAULT_INTERVAL_S = 5.0
SMI_TIMEOUT_S = 5.0


def interval_s(environ=os.environ) -> float:
    """CELLTRAIN_SYS_INTERVAL in seconds; 0 turns sampling off."""
    raw = environ.get("CELLTRAIN_SYS_INTERVAL", "")
    if raw.strip() == "":
        return DEFAULT_INTERVAL_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ValueError(f"CELLTRAIN_SYS_INTERVAL takes seconds between samples (0 turns them "
                         f"off), not {raw!r}: unset it or set e.g. 5")
    return value


# -- GPUs --------------------------------------------------------------------------------------
class NvmlGpus:
    """GPUs through NVML (``import pynvml``, from the nvidia-ml-py package)."""

    name = "nvml"

    def __init__(self, pynvml):
        self.nvml = pynvml
        pynvml.nvmlInit()

    def sample(self) -> dict[int, tuple[float, int]]:
        nvml = self.nvml
        out = {}
        for i in range(nvml.nvmlDeviceGetCount()):
            device = nvml.nvmlDeviceGetHandleByIndex(i)
            util = nvml.nvmlDeviceGetUtilizationRates(device).gpu
            out[i] = (float(util), int(nvml.nvmlDeviceGetMemoryInfo(device).used))
        return out

    def close(self) -> None:
        self.nvml.nvmlShutdown()


class SmiGpus:
    """GPUs through ``nvidia-smi --query-gpu`` (one process per sample: NVML is cheaper)."""

    name = "nvidia-smi"

    def __init__(self, smi: str):
        self.smi = smi

    def sample(self) -> dict[int, tuple[float, int]]:
        out = subprocess.run([self.smi, "--query-gpu=index,utilization.gpu,memory.used",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=SMI_TIMEOUT_S, check=True).stdout
        return parse_smi(out)

    def close(self) -> None:
        return None


def parse_smi(text: str) -> dict[int, tuple[float, int]]:
    """``index, utilization %, memory used MiB`` lines; a GPU that answers "[N/A]" is left out."""
    out = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        try:
            out[int(parts[0])] = (float(parts[1]), int(float(parts[2]) * 2**20))
        except (ValueError, IndexError):
            continue
    return out


def gpu_source():
    """NVML where nvidia-ml-py is installed and a driver answers, else nvidia-smi where it is
    on the PATH, else None (no GPUs to sample)."""
    try:
        import pynvml
        return NvmlGpus(pynvml)
    except Exception:  # noqa: BLE001  (not installed, or no driver: NVMLError_LibraryNotFound)
        pass
    smi = shutil.which("nvidia-smi")
    return SmiGpus(smi) if smi else None


def asks_gpus(gpus) -> bool:
    return gpus not in (None, "none", 0, "0", "auto")


def run_gpus(gpus, present: list[int]) -> list[int]:
    """Which of the ``present`` GPUs a run with ``gpus=`` was given."""
    if not asks_gpus(gpus):
        return []
    if gpus == "all":
        return list(present)
    if isinstance(gpus, (list, tuple)):
        wanted = {int(g) for g in gpus if str(g).isdigit()}
        return [i for i in present if i in wanted]
    return list(present)[:int(gpus)]


# -- the sampler -------------------------------------------------------------------------------
def sample_once(target, handle, gpus=None) -> dict[str, float]:
    """One sample of the run as ``sys/`` names and values (empty when nothing could be read)."""
    values: dict[str, float] = {}
    usage = target.sample_usage(handle) or {}
    if "cpu_percent" in usage:
        values["cpu_percent"] = round(float(usage["cpu_percent"]), 2)
    if "mem_bytes" in usage:
        values["mem_bytes"] = int(usage["mem_bytes"])
        if usage.get("mem_limit_bytes"):
            values["mem_percent"] = round(100.0 * usage["mem_bytes"] / usage["mem_limit_bytes"], 2)
    for i, (util, used) in (usage.get("gpus") or {}).items():   # a cluster's nodes' GPUs
        values[f"gpu{i}_util"], values[f"gpu{i}_mem_bytes"] = util, used
    if gpus is not None:
        devices = gpus.sample()
        for i in run_gpus(target.spec.resources.gpus, sorted(devices)):
            util, used = devices[i]
            values[f"gpu{i}_util"], values[f"gpu{i}_mem_bytes"] = util, used
    return {PREFIX + name: value for name, value in values.items()}


class Sampler:
    """A thread of the supervisor that samples the run every ``interval`` seconds into the
    store, until ``stop()``.  A failed sample is noted once in the supervisor's log and the
    next one tried: system metrics never stop a run."""

    def __init__(self, store, run_id: str, target, handle, interval: float,
                 log=lambda message: print(message, file=sys.stderr), gpus="find"):
        self.store, self.run_id, self.target, self.handle = store, run_id, target, handle
        self.interval, self.log = interval, log
        self.gpus = gpus
        self.failed = False
        self.samples = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True,
                                       name=f"celltrain-sys-{run_id}")

    def start(self) -> "Sampler":
        if self.interval > 0:
            self.thread.start()
        return self

    def stop(self) -> None:
        """Sample no more.  Not waited for: a Docker stats call in flight (about a second)
        must not hold up the run's end; what it brings is stored or dropped."""
        self._stop.set()

    def sample(self) -> None:
        values = sample_once(self.target, self.handle, self.gpus)
        if values:
            self.store.add_system_sample(self.run_id, time.time(), values)
            self.samples += 1

    def _loop(self) -> None:
        if self.gpus == "find":
            # a cluster's GPUs are on its nodes: the target samples them (sample_usage)
            self.gpus = gpu_source() if (asks_gpus(self.target.spec.resources.gpus)
                                         and getattr(self.target, "one_machine", True)) else None
        try:
            while not self._stop.is_set():
                began = time.monotonic()      # a Docker stats call waits ~1 s for the daemon
                try:
                    self.sample()
                except Exception as e:  # noqa: BLE001  (a gone container, a locked database)
                    if not self.failed and not self._stop.is_set():
                        self.log(f"system metrics: a sample failed ({type(e).__name__}: {e}); "
                                 "trying again")
                    self.failed = True
                self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))
        finally:
            if self.gpus is not None and self.gpus != "find":
                self.gpus.close()
