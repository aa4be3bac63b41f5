"""A node's container driven from another machine: the Docker side of a remote node agent.

A cluster target (``celltrain.targets.ray``) runs one agent per node; the agent holds a
``NodeContainer`` for its node's part of a run.  The submitter sends the container settings
``DockerTarget.container_kwargs`` made (the same hardening as a local run) and the code
snapshot as a tar; here the folders the settings name on the submitter's machine are swapped for
this node's own (the snapshot unpacked, a telemetry folder, celltrain's package), and Docker's
log is followed into files the agent hands back in pieces.
"""
from __future__ import annotations

import io
import os
import shutil
import tarfile
import threading
from pathlib import Path

from ...environment import Environment
from ...runfiles import OUTPUT_LOG, STDERR_LOG
from . import engine
from .images import ensure_image
from .users import container_user, let_write

ALIVE = ("created", "running", "restarting", "paused")
LIB_MARK = "lib:"     # a volume key "lib:<package>": that package's folder on this node
BEAT_IN_CONTAINER = "/celltrain-run/agent"
BEAT_FILE = "beat"    # touched by the agent every BEAT_S seconds while it lives
BEAT_S = 2
BEAT_STALE_S = 30
IMAGE_CHUNK = 8 << 20    # bytes of `docker save` per piece sent to a node
IMAGE_TAR = "image.tar"  # where a node gathers the pieces before `docker load`
# Runs beside the script in the container: once the agent has stopped beating (its node's
# raylet died while the machine lives), every process in the container is stopped, so the
# container ends and gives back its GPUs.  Without stat/date in the image there is no watchdog.
WATCHDOG = (f'if command -v stat >/dev/null && command -v date >/dev/null; then ( while sleep 5; '
            f'do t=$(stat -c %Y {BEAT_IN_CONTAINER}/{BEAT_FILE} 2>/dev/null) || t=0; '
            f'if [ $(( $(date +%s) - t )) -gt {BEAT_STALE_S} ]; then echo "celltrain: this '
            'node\'s agent is gone (its Ray node was lost): stopping" >&2; kill -TERM -1; '
            'sleep 10; kill -KILL -1; exit; fi; done ) & fi; ')


def saved_image(tag: str, chunk: int = IMAGE_CHUNK):
    """``docker save`` of ``tag`` from this machine's engine, in pieces of ``chunk`` bytes."""
    buffered = b""
    for piece in engine.client().images.get(tag).save(chunk_size=chunk, named=True):
        buffered += piece
        if len(buffered) >= chunk:
            yield buffered
            buffered = b""
    if buffered:
        yield buffered


class NodeContainer:
    """The container of one node of one run, and its folder on this node: ``snapshot/``,
    ``telemetry/``, ``output.log``, ``stderr.log``."""

    def __init__(self, folder: Path, labels: dict):
        self.folder, self.labels = Path(folder), dict(labels)
        self.telemetry = self.folder / "telemetry"
        self.container_id: str | None = None
        self.name: str | None = None
        self.follower: threading.Thread | None = None
        self.client = engine.client()
        self.beats = self.folder / "agent"
        self.beats.mkdir(parents=True, exist_ok=True)
        self.beating = threading.Event()
        threading.Thread(target=self._beat, daemon=True, name="celltrain-beat").start()

    def _beat(self) -> None:
        """Touch the beat file while this agent lives (the container's watchdog reads it)."""
        beat = self.beats / BEAT_FILE
        while not self.beating.wait(BEAT_S):
            try:
                beat.touch()
            except OSError:      # the folder is being removed
                pass

    def prepare(self, environment: dict) -> tuple[str, str, bool]:
        """The run's image on this node's engine, built here from the same environment when
        it is missing: (tag, image id, built now)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        return ensure_image(self.client, Environment.from_dict(environment),
                            self.folder / "build.log", container_labels=self.labels)

    def has_image(self, image_id: str, tag: str) -> bool:
        """Whether this node's engine has the image ``image_id`` (then tagged ``tag``)."""
        import docker
        try:
            image = self.client.images.get(image_id)
        except docker.errors.ImageNotFound:
            return False
        if tag not in image.tags and tag != image_id:
            repo, _, name = tag.rpartition(":")
            image.tag(repo, name) if repo and "/" not in name else image.tag(tag)
        return True

    def receive_image(self, piece: bytes, first: bool) -> int:
        """One piece of a ``docker save`` tar (the first starts a new one); its size."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / IMAGE_TAR, "wb" if first else "ab") as f:
            f.write(piece)
        return len(piece)

    def load_image(self) -> list[str]:
        """``docker load`` of the pieces received: the ids of the images loaded."""
        path = self.folder / IMAGE_TAR
        try:
            with open(path, "rb") as f:
                return [image.id for image in self.client.images.load(f)]
        finally:
            path.unlink(missing_ok=True)

    def create(self, image: str, kwargs: dict, snapshot_tar: bytes, telemetry_host: str,
               snapshot_host: str) -> str:
        """Unpack the snapshot, make the telemetry folder and create the (not started)
        container; ``telemetry_host``/``snapshot_host``: the submitter's paths in ``kwargs``."""
        return self.create_container(image, self.unpack(kwargs, snapshot_tar, telemetry_host,
                                                        snapshot_host))

    def unpack(self, kwargs: dict, snapshot_tar: bytes, telemetry_host: str,
               snapshot_host: str) -> dict:
        """The snapshot unpacked and the telemetry folder made here; ``kwargs`` with this
        node's folders for the submitter's, the agent's beat mounted and the watchdog."""
        snapshot = self.folder / "snapshot"
        shutil.rmtree(snapshot, ignore_errors=True)
        snapshot.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(snapshot_tar)) as tar:
            tar.extractall(snapshot, filter="data")
        self.telemetry.mkdir(parents=True, exist_ok=True)
        self.telemetry.chmod(0o700)
        volumes = {}
        for host, bind in kwargs["volumes"].items():
            if host == telemetry_host:
                host = str(self.telemetry)
            elif host == snapshot_host:
                host = str(snapshot)
            elif host.startswith(LIB_MARK):
                name = host[len(LIB_MARK):]
                host = str(Path(__import__(name).__file__).resolve().parent)
            volumes[host] = bind
        (self.beats / BEAT_FILE).touch()
        volumes[str(self.beats)] = {"bind": BEAT_IN_CONTAINER, "mode": "ro"}
        command = list(kwargs["command"])
        if command[:2] == ["sh", "-c"]:
            command[2] = WATCHDOG + command[2]
        kwargs = {**kwargs, "volumes": volumes, "command": command}
        if os.getuid() != 0:
            kwargs["group_add"] = [str(os.getgid())]
        else:
            kwargs.pop("group_add", None)
        return kwargs

    def create_container(self, image: str, kwargs: dict) -> str:
        """The node's container from ``unpack``'s settings, created (not started)."""
        self.name = kwargs["name"]
        self.remove()
        container = self.client.containers.create(image, **kwargs)
        let_write(self.telemetry, container_user(container))
        self.container_id = container.id
        return container.id

    def _get(self):
        return self.client.containers.get(self.container_id)

    def start(self) -> None:
        self._get().start()
        self.follow()

    def follow(self) -> None:
        """Docker's log of the container into output.log (both streams) and stderr.log,
        whole lines at a time."""
        def one(name: str, stdout: bool):
            buffered = b""
            try:
                stream = self._get().logs(stdout=stdout, stderr=True, stream=True, follow=True)
                with open(self.folder / name, "wb") as f:
                    for chunk in stream:
                        buffered += chunk
                        whole, sep, buffered = buffered.rpartition(b"\n")
                        if sep:
                            f.write(whole + sep)
                            f.flush()
                    if buffered:
                        f.write(buffered + b"\n")
            except Exception:  # the container was removed under us
                pass

        threads = [threading.Thread(target=one, args=a, daemon=True)
                   for a in ((OUTPUT_LOG, True), (STDERR_LOG, False))]
        for t in threads:
            t.start()

        def both():
            for t in threads:
                t.join()

        self.follower = threading.Thread(target=both, daemon=True)
        self.follower.start()

    def state(self) -> dict:
        """{"status", "exit_code", "oom", "finished", "logs_done"}; status "gone" when the
        container no longer exists."""
        import docker
        try:
            container = self._get()
        except (docker.errors.NotFound, docker.errors.NullResource):
            return {"status": "gone", "exit_code": None, "oom": False, "finished": "",
                    "logs_done": True}
        state = container.attrs["State"]
        return {"status": container.status, "exit_code": state.get("ExitCode"),
                "oom": bool(state.get("OOMKilled")), "finished": state.get("FinishedAt") or "",
                "logs_done": self.follower is None or not self.follower.is_alive()}

    def stop(self, grace: float) -> None:
        import docker
        try:
            self._get().stop(timeout=int(max(grace, 0)))
        except (docker.errors.NotFound, docker.errors.NullResource):
            pass

    def archive(self, path: str) -> bytes | None:
        """Docker's tar of ``path`` in the container, None when it is not there."""
        import docker
        try:
            chunks, _ = self._get().get_archive(path)
        except (docker.errors.NotFound, docker.errors.NullResource):
            return None
        return b"".join(chunks)

    def retire(self) -> None:
        """The container removed and the beat stopped: the agent is done."""
        self.remove()
        self.beating.set()

    def remove(self) -> None:
        """The container, and any other of this run and node left by an earlier agent."""
        import docker
        for ident in {self.container_id, self.name} - {None}:
            try:
                self.client.containers.get(ident).remove(force=True)
            except (docker.errors.NotFound, docker.errors.NullResource):
                pass
            except docker.errors.APIError:   # being removed already
                pass


def engine_here() -> str:
    """This machine's Docker engine in a few words: its version, or why it does not answer."""
    try:
        return f"Docker {engine.client(timeout=10).version().get('Version', '?')}"
    except Exception as e:  # DockerUnavailable says why; anything else: in its own words
        return f"no Docker ({str(e).strip()[:160] or type(e).__name__})"


def remove_all(labels: dict) -> int:
    """Remove this engine's containers that carry ``labels``, running or not; how many."""
    import docker
    client = engine.client(timeout=30)
    found = client.containers.list(all=True, filters={"label": [f"{k}={v}"
                                                                for k, v in labels.items()]})
    for container in found:
        try:
            container.remove(force=True)
        except docker.errors.APIError:  # removed meanwhile
            pass
    return len(found)
