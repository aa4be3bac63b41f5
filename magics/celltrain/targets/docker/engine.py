"""Connecting to the Docker engine, with errors that say how to fix a missing one."""
from __future__ import annotations

import os
import shutil
import time

from ...errors import DockerUnavailable, GPUUnavailable
from ...options import NETWORK_MODES, parse_gpus

LABEL_RUN = "celltrain.run"
LABEL_WORKSPACE = "celltrain.workspace"
LABEL_ENV = "celltrain.env"
LABEL_BUILD = "celltrain.build"  # non-empty on build containers only: run containers blank
                                  # what their image inherited from its build


_clients: dict = {}


def client(timeout: int = 60):
    """A docker SDK client that is known to answer, or DockerUnavailable saying why not.

    Clients are kept per DOCKER_HOST and timeout (making one negotiates the API version, a
    round trip); each call still pings, so a stopped engine is noticed at once.
    """
    try:
        import docker
    except ImportError as e:  # pragma: no cover - docker is a hard dependency
        raise DockerUnavailable("the docker SDK is missing: pip install docker") from e
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    key = (host, os.environ.get("DOCKER_TLS_VERIFY"), os.environ.get("DOCKER_CERT_PATH"),
           timeout)
    try:
        c = _clients.get(key) or docker.from_env(timeout=timeout)
        c.ping()
        _clients[key] = c
        return c
    except Exception as e:  # docker raises DockerException, requests errors, FileNotFoundError
        if shutil.which("dockerd") is None and shutil.which("docker") is None:
            hint = ("Docker is not installed: install it (Debian: apt-get install docker.io, or "
                    "`make docker` in the celltrain checkout) and start dockerd")
        else:
            hint = "start the engine (dockerd, or `make docker`) or set DOCKER_HOST"
        raise DockerUnavailable(f"Docker is not reachable at {host}: {hint} ({_short(e)})") from e


def engine_unreachable(e: BaseException) -> bool:
    """Whether ``e`` means the engine stopped answering (down, restarting), not a refusal."""
    if isinstance(e, DockerUnavailable):
        return True
    try:
        import requests
    except ImportError:  # pragma: no cover - docker depends on requests
        return False
    return isinstance(e, (requests.exceptions.ConnectionError, requests.exceptions.Timeout))


def engine_wait_s() -> float:
    """How long a supervisor waits for an engine that stopped answering (CELLTRAIN_ENGINE_WAIT)."""
    value = os.environ.get("CELLTRAIN_ENGINE_WAIT", "300")
    try:
        return max(float(value), 0.0)
    except ValueError:
        raise ValueError(f"CELLTRAIN_ENGINE_WAIT takes seconds, not {value!r}: unset it or "
                         "give a number (the default is 300)") from None


def wait_for_engine(within_s: float, sleep=time.sleep):
    """A client once the engine answers again, or None after ``within_s`` seconds.

    Backs off from half a second to five, so a restart is noticed soon and a long outage costs
    little.
    """
    deadline = time.monotonic() + within_s
    pause = 0.5
    while True:
        try:
            return client(timeout=30)
        except DockerUnavailable:
            if time.monotonic() + pause > deadline:
                return None
            sleep(pause)
            pause = min(pause * 2, 5.0)


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[-1][:200] if text else type(e).__name__


def gpu_runtime_available(c) -> bool:
    """Whether `--gpus` can work: the NVIDIA runtime or its hook is known to the engine."""
    info = c.info()
    runtimes = info.get("Runtimes") or {}
    if "nvidia" in runtimes:
        return True
    # Docker's --gpus uses nvidia-container-runtime-hook / nvidia-container-cli when present.
    return bool(shutil.which("nvidia-container-runtime-hook")
                or shutil.which("nvidia-container-cli"))


def check_gpus(c, gpus) -> None:
    if gpus in (None, "none", 0):
        return
    if not gpu_runtime_available(c):
        raise GPUUnavailable(
            f"gpus={gpus!r} was asked for, but this Docker engine has no GPU runtime "
            "(no 'nvidia' runtime, no nvidia-container-toolkit): install the NVIDIA Container "
            "Toolkit and restart dockerd, or pass gpus='none' to run on the CPU")


def device_requests(gpus):
    """``gpus`` as Docker device requests: 'all', a count, 'none'/0/None, or a list of ids."""
    import docker
    if gpus in (None, "none", 0, "0"):
        return []
    if gpus == "all":
        return [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
    if isinstance(gpus, (list, tuple)):
        return [docker.types.DeviceRequest(device_ids=[str(g) for g in gpus],
                                           capabilities=[["gpu"]])]
    return [docker.types.DeviceRequest(count=parse_gpus(gpus), capabilities=[["gpu"]])]


def check_engine(client, *, network: str | None, cpus: float | None) -> None:
    """What only the Docker engine can say: the network exists, the CPUs are there."""
    if network is not None and network not in NETWORK_MODES:
        import docker
        try:
            client.api.inspect_network(network)
        except docker.errors.NotFound:
            raise ValueError(f"network={network!r} is not a network of this Docker engine: "
                             f"pass one of {', '.join(map(repr, NETWORK_MODES))} or an existing "
                             f"network's name (`docker network ls`; `docker network create "
                             f"{network}` makes it)") from None
    if cpus is not None:
        available = client.info().get("NCPU")
        if available and cpus > available:
            raise ValueError(f"cpus={cpus:g} is more than this Docker engine's {available} CPUs: "
                             f"pass at most cpus={available}")
