"""A second Docker engine on this machine, with its own data root, socket, exec root and
containerd namespace, so a Ray node that uses it (DOCKER_HOST in its raylet's environment) has
an image store of its own.  Started and stopped by the tests; it leaves no image behind."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from missing import unavailable

NAME = "docker-node2"
START_S = 60
STOP_S = 30


@dataclass
class SecondEngine:
    process: subprocess.Popen
    host: str            # DOCKER_HOST of the engine
    log: Path

    def client(self):
        import docker
        return docker.DockerClient(base_url=self.host, timeout=120)

    def empty(self) -> None:
        """No container or image in it."""
        client = self.client()
        for c in client.containers.list(all=True):
            c.remove(force=True)
        for image in client.images.list():
            client.images.remove(image.id, force=True)

    def stop(self) -> None:
        """Its containers and images removed, then the engine stopped."""
        try:
            self.empty()
        except Exception:  # noqa: BLE001  (an engine that died: stopped below all the same)
            pass
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start_engine(folder: Path) -> SecondEngine:
    """dockerd beside the main one, in a network namespace of its own (``unshare --net``: a
    dockerd started with ``--bridge=none`` deletes the host's ``docker0``, which broke every
    later container of the main engine), with its own pid file, exec root (its containerd's
    sockets) and containerd namespace.  Its default bridge lives in that namespace (image
    builds run on "bridge"); without iptables it reaches nothing outside."""
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        unavailable("a second Docker engine needs dockerd and root")
    sock, pidfile = f"/run/{NAME}.sock", Path(f"/run/{NAME}.pid")
    if pidfile.exists():
        pid = pidfile.read_text().strip()
        if pid.isdigit() and Path(f"/proc/{pid}").exists():
            raise RuntimeError(f"a second dockerd (pid {pid}) already runs: another test run "
                               f"uses /var/lib/{NAME}; stop it or wait for that run")
        pidfile.unlink()                # left by an earlier, killed run of the tests
    if Path(sock).exists():
        Path(sock).unlink()             # a socket an earlier, killed run of the tests left
    log = folder / "dockerd.log"
    args = ["unshare", "--net", "dockerd", f"--data-root=/var/lib/{NAME}", f"--host=unix://{sock}",
            "--iptables=false", "--ip-masq=false", "--ip6tables=false",
            f"--pidfile=/run/{NAME}.pid", f"--exec-root=/run/{NAME}",
            f"--containerd-namespace={NAME}", f"--containerd-plugins-namespace={NAME}-plugins"]
    with open(log, "wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    engine = SecondEngine(process, f"unix://{sock}", log)
    deadline = time.monotonic() + START_S
    while True:
        try:
            engine.client().ping()
            break
        except Exception:  # noqa: BLE001  (not up yet)
            if process.poll() is not None or time.monotonic() > deadline:
                engine.stop()
                raise RuntimeError("the second dockerd did not come up:\n"
                                   + log.read_text(errors="replace")[-3000:])
            time.sleep(0.5)
    try:
        engine.empty()          # what an earlier, killed run of the tests left
    except BaseException:
        engine.stop()
        raise
    return engine
