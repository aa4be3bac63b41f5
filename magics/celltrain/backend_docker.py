"""Running a run in a detached Docker container.

The container gets the code snapshot mounted read-only and copied into its workdir (so the
snapshot stays what ran),
the telemetry folder mounted read-write, data mounts read-only, ``no-new-privileges``, a 2 GB
``/dev/shm`` for DataLoader workers, and never the Docker socket.  ``./outputs`` and ``./logs``
are copied back at the end, from a stopped container too, so a failed run keeps its checkpoints.
"""
from __future__ import annotations

import io
import json
import tarfile
import threading
import time
from pathlib import Path

from . import dockerutil
from .dockerutil import LABEL_RUN, LABEL_WORKSPACE
from .environment import Environment, ensure_image
from .runfiles import BUILD_LOG, OUTPUT_LOG, STDERR_LOG
from .telemetry import TELEMETRY_DIR

WORKDIR = "/celltrain-run/src"
TELEMETRY_IN_CONTAINER = "/celltrain-run/telemetry"
LIB_IN_CONTAINER = "/celltrain-lib"
COPY_BACK = ("outputs", "logs")
SNAPSHOT_IN_CONTAINER = "/celltrain-run/snapshot"
WORKDIR_NOTE = "workdir"   # in the telemetry folder: where the script ran, for the copy-back
# Copy the read-only snapshot into a writable workdir, then run the script with the image's
# Python.  (A bind mount plus cp is several times faster than put_archive into the rootfs.)
# Docker makes WORKDIR owned by root: an image whose USER is not root gets a temporary folder.
PYTHON = (f'if [ ! -w . ]; then cd "$(mktemp -d)" && pwd > {TELEMETRY_IN_CONTAINER}/'
          f'{WORKDIR_NOTE}; fi && cp -a {SNAPSHOT_IN_CONTAINER}/. . && '
          'exec "$(command -v python3 || command -v python)" -u "$@"')


class DockerBackend:
    def __init__(self, store, run: dict, notify):
        self.store, self.run, self.notify = store, run, notify
        self.run_dir: Path = store.run_dir(run["id"])
        self.pull_failures = store.root / "pull-failures.json"
        self.client = dockerutil.client()
        self.container = None
        self.resumed = False

    # -- Preparing ------------------------------------------------------------------------------
    def prepare(self) -> dict:
        env = Environment.from_dict(self.run["environment"])
        tag, image_id, built = ensure_image(self.client, env, self.run_dir / BUILD_LOG,
                                            notify=self.notify,
                                            pull_failures=self.pull_failures)
        return {"image": tag, "image_digest": image_id, "image_built": built}

    # -- Starting ---------------------------------------------------------------------------------
    def start(self, image: str) -> str:
        run, opts = self.run, self.run["options"]
        telemetry = self.run_dir / TELEMETRY_DIR
        telemetry.mkdir(parents=True, exist_ok=True)
        telemetry.chmod(0o777)  # the container's user may not be ours
        volumes = {str(telemetry): {"bind": TELEMETRY_IN_CONTAINER, "mode": "rw"},
                   str(self.run_dir / "snapshot"): {"bind": SNAPSHOT_IN_CONTAINER, "mode": "ro"}}
        for name in opts.get("lib_packages", ["celltrain"]):
            folder = Path(__import__(name).__file__).resolve().parent
            volumes[str(folder)] = {"bind": f"{LIB_IN_CONTAINER}/{name}", "mode": "ro"}
        for host, inside in (opts.get("mounts") or {}).items():
            volumes[host] = {"bind": inside, "mode": "ro"}
        environment = {
            **Environment.from_dict(run["environment"]).env, **(opts.get("env_vars") or {}),
            "CELLTRAIN_RUN_ID": run["id"], "CELLTRAIN_EXPERIMENT": run["experiment"],
            "CELLTRAIN_PARAMS": json.dumps(run["params"]),
            "CELLTRAIN_TELEMETRY_DIR": TELEMETRY_IN_CONTAINER,
            "PYTHONPATH": LIB_IN_CONTAINER, "PYTHONUNBUFFERED": "1",
        }
        kwargs = dict(
            command=["sh", "-c", PYTHON, "sh", run["script"], *run["args"]],
            entrypoint=[], working_dir=WORKDIR, detach=True, environment=environment,
            volumes=volumes, labels={LABEL_RUN: run["id"],
                                     LABEL_WORKSPACE: str(self.store.root)},
            name=f"celltrain-{run['id']}", init=True, security_opt=["no-new-privileges"],
            shm_size=opts.get("shm_size") or "2g",
            device_requests=dockerutil.device_requests(opts.get("gpus")),
        )
        if opts.get("memory"):
            kwargs["mem_limit"] = opts["memory"]
        if opts.get("cpus"):
            kwargs["nano_cpus"] = int(float(opts["cpus"]) * 1e9)
        if opts.get("network"):
            kwargs["network_mode"] = opts["network"]
        self.container = self.client.containers.create(image, **kwargs)
        return self.container.id

    def launch(self, handle: str) -> None:
        self._get(handle).start()

    # -- Running ----------------------------------------------------------------------------------
    def _get(self, handle: str):
        if self.container is None or self.container.id != handle:
            self.container = self.client.containers.get(handle)
        return self.container

    def exists(self, handle: str) -> bool:
        import docker
        try:
            self._get(handle)
            return True
        except docker.errors.NotFound:
            return False

    def stream_output(self, handle: str, resumed: bool) -> threading.Thread:
        """Follow the container's log into output.log (both streams) and stderr.log.

        Docker's own log is followed rather than attaching: attach can drop output written
        between its replay and the live stream.  A resumed supervisor takes only what is new
        (``since``); at the end collect() rewrites both files from the complete log.
        """
        self.resumed = resumed
        since = int(time.time()) if resumed else None

        def follow(name: str, stdout: bool):
            stream = self._get(handle).logs(stdout=stdout, stderr=True, stream=True,
                                            follow=True, since=since)
            with open(self.run_dir / name, "ab") as f:
                for chunk in stream:
                    f.write(chunk)
                    f.flush()

        def both():
            err = threading.Thread(target=follow, args=(STDERR_LOG, False), daemon=True)
            err.start()
            follow(OUTPUT_LOG, True)
            err.join(timeout=5)

        thread = threading.Thread(target=both, daemon=True, name="celltrain-output")
        thread.start()
        return thread

    def is_running(self, handle: str) -> bool:
        container = self._get(handle)
        container.reload()
        return container.status in ("created", "running", "restarting", "paused")

    def stop(self, handle: str, grace: float) -> None:
        self._get(handle).stop(timeout=int(max(grace, 0)))

    def result(self, handle: str) -> tuple[int | None, bool]:
        state = self._get(handle).attrs["State"]
        return state.get("ExitCode"), bool(state.get("OOMKilled"))

    # -- Finalizing ---------------------------------------------------------------------------------
    def collect(self, handle: str) -> None:
        """Copy ./outputs and ./logs back, and rewrite the captured output from Docker's own log."""
        import docker
        container = self._get(handle)
        note = self.run_dir / TELEMETRY_DIR / WORKDIR_NOTE
        workdir = note.read_text().strip() if note.exists() else WORKDIR
        for folder in COPY_BACK:
            try:
                chunks, _ = container.get_archive(f"{workdir}/{folder}")
            except docker.errors.NotFound:
                continue
            _extract(b"".join(chunks), self.run_dir)
        if self.resumed:  # output may have come while nobody listened: take Docker's own copy
            (self.run_dir / OUTPUT_LOG).write_bytes(container.logs(stdout=True, stderr=True))
            (self.run_dir / STDERR_LOG).write_bytes(container.logs(stdout=False, stderr=True))

    def cleanup(self, handle: str) -> None:
        import docker
        try:
            self._get(handle).remove(force=True)
        except docker.errors.APIError:  # gone already, or being removed by someone else
            pass


def _extract(data: bytes, dest: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
        else:  # Python < 3.11.4: refuse anything that leaves dest
            root = dest.resolve()
            for member in tar.getmembers():
                if not (root / member.name).resolve().is_relative_to(root) or member.issym():
                    raise ValueError(f"unsafe path in the container's archive: {member.name}")
            tar.extractall(dest)
