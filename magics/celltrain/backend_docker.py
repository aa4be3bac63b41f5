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
import os
import posixpath
import tarfile
import threading
import time
from pathlib import Path

from . import copyback, dockerutil, safefiles
from .dockerutil import LABEL_BUILD, LABEL_RUN, LABEL_WORKSPACE
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

    @property
    def labels(self) -> dict:
        """On every container of the run (build and run), so leftovers can be found."""
        return {LABEL_RUN: self.run["id"], LABEL_WORKSPACE: str(self.store.root)}

    def reconnect(self, within_s: float) -> bool:
        """Wait for an engine that stopped answering; whether it answers again in time."""
        client = dockerutil.wait_for_engine(within_s)
        if client is None:
            return False
        self.client, self.container = client, None
        return True

    # -- Preparing ------------------------------------------------------------------------------
    def prepare(self, stop_requested=lambda: None) -> dict:
        """Pull or build the run's image; ``stop_requested`` as for ensure_image (cancel)."""
        env = Environment.from_dict(self.run["environment"])
        self.remove_build_containers()   # a build an earlier supervisor of this run left
        tag, image_id, built = ensure_image(self.client, env, self.run_dir / BUILD_LOG,
                                            notify=self.notify,
                                            pull_failures=self.pull_failures,
                                            container_labels=self.labels,
                                            stop_requested=stop_requested)
        return {"image": tag, "image_digest": image_id, "image_built": built}

    def remove_build_containers(self) -> None:
        import docker
        filters = {"label": [f"{LABEL_RUN}={self.run['id']}", LABEL_BUILD]}
        for container in self.client.containers.list(all=True, filters=filters):
            try:
                container.remove(force=True)
            except docker.errors.APIError:  # being removed already
                pass

    # -- Starting ---------------------------------------------------------------------------------
    def start(self, image: str) -> str:
        run, opts = self.run, self.run["options"]
        telemetry = self.run_dir / TELEMETRY_DIR
        telemetry.mkdir(parents=True, exist_ok=True)
        telemetry.chmod(0o700)
        self.run_dir.chmod(0o750)
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
        if os.getuid() != 0:   # if we cannot chown telemetry/, the container writes as our group
            kwargs["group_add"] = [str(os.getgid())]
        # A container of this name was created by a supervisor that died before recording it,
        # so it never started (launch follows the record): make room for the new one.
        import docker
        try:
            self.client.containers.get(kwargs["name"]).remove(force=True)
        except docker.errors.NotFound:
            pass
        self.container = self.client.containers.create(image, **kwargs)
        _let_write(telemetry, container_user(self.container))
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
        self.resumed = self.resumed or resumed   # once resumed, collect() takes Docker's log
        since = int(time.time()) if resumed else None

        def follow(name: str, stdout: bool):
            try:
                stream = self._get(handle).logs(stdout=stdout, stderr=True, stream=True,
                                                follow=True, since=since)
                with open(self.run_dir / name, "ab") as f:
                    for chunk in stream:
                        f.write(chunk)
                        f.flush()
            except Exception:  # the engine went away; the supervisor notices and waits for it
                pass

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
        container = self._get(handle)
        container.reload()   # the State after a stop, not the one of the last poll
        state = container.attrs["State"]
        return state.get("ExitCode"), bool(state.get("OOMKilled"))

    # -- Finalizing ---------------------------------------------------------------------------------
    def collect(self, handle: str) -> None:
        """Copy ./outputs and ./logs back, and rewrite the captured output from Docker's own log."""
        import docker
        container = self._get(handle)
        workdir = self._workdir()
        skipped = []
        for folder in COPY_BACK:
            try:
                chunks, _ = container.get_archive(f"{workdir}/{folder}")
            except docker.errors.NotFound:
                continue
            skipped += _extract(b"".join(chunks), self.run_dir, folder)
        copyback.report(self.store, self.run["id"], skipped)
        if self.resumed:  # output may have come while nobody listened: take Docker's own copy
            (self.run_dir / OUTPUT_LOG).write_bytes(container.logs(stdout=True, stderr=True))
            (self.run_dir / STDERR_LOG).write_bytes(container.logs(stdout=False, stderr=True))

    def _workdir(self) -> str:
        """Where the script ran: the note the container left (read without following a
        link, and only if it is a plain absolute path), else Docker's workdir."""
        note = safefiles.read_text(self.run_dir, f"{TELEMETRY_DIR}/{WORKDIR_NOTE}", 4096,
                                   default="").strip()
        if note.startswith("/") and posixpath.normpath(note) == note and note.isprintable():
            return note
        return WORKDIR

    def cleanup(self, handle: str) -> None:
        import docker
        try:
            self._get(handle).remove(force=True)
        except docker.errors.APIError:  # gone already, or being removed by someone else
            pass


def _extract(data: bytes, dest: Path, top: str) -> list[str]:
    """Extract Docker's archive of ``top`` into ``dest``; returns what was skipped (links
    out, devices), never raising for the run's own files."""
    return copyback.extract_tar(io.BytesIO(data), dest, top)


def container_user(container) -> tuple[int, int] | None:
    """(uid, gid) the container's process runs as, from its image's USER: empty or root is
    root, "uid[:gid]" is taken as it is, a name is looked up in the image's /etc/passwd (read
    from the created container).  None when the name is not there (Docker will say so)."""
    user = (container.attrs.get("Config", {}).get("User") or "").strip()
    name, _, group = user.partition(":")
    if name in ("", "root", "0"):
        return 0, int(group) if group.isdigit() else 0
    passwd = {}
    if not (name.isdigit() and group.isdigit()):
        for line in _image_file(container, "/etc/passwd").splitlines():
            fields = line.split(":")
            if len(fields) >= 4 and fields[2].isdigit() and fields[3].isdigit():
                passwd.setdefault(fields[0], (int(fields[2]), int(fields[3])))
                passwd.setdefault(fields[2], (int(fields[2]), int(fields[3])))
    if name.isdigit():
        uid = int(name)
        gid = passwd.get(name, (uid, 0))[1]
    elif name in passwd:
        uid, gid = passwd[name]
    else:
        return None
    return uid, int(group) if group.isdigit() else gid


def _image_file(container, path: str, cap: int = 1 << 20) -> str:
    """A small text file of the container's image (e.g. /etc/passwd), or "" if there is none."""
    import docker
    try:
        chunks, _ = container.get_archive(path)
        with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
            member = tar.next()
            if member is None or not member.isreg():
                return ""
            return tar.extractfile(member).read(cap).decode(errors="replace")
    except (docker.errors.APIError, tarfile.TarError):
        return ""


def _let_write(folder: Path, user: tuple[int, int] | None) -> None:
    """Make the telemetry folder writable by the container's user and nobody else: ours if it
    runs as root or as us, else chowned to it (we are root), else our group's (the container
    has our gid as a supplementary group).  Never world-writable."""
    if user is None or user[0] in (0, os.getuid()):
        folder.chmod(0o700)
        return
    try:
        os.chown(folder, *user)
        folder.chmod(0o700)
    except PermissionError:
        os.chown(folder, -1, os.getgid())
        folder.chmod(0o2770)
