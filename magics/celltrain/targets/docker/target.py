"""Running a run in a detached Docker container.

The container gets the code snapshot mounted read-only and copied into its workdir (so the
snapshot stays what ran), the telemetry folder mounted read-write, data mounts read-only,
``no-new-privileges``, a 2 GB ``/dev/shm`` for DataLoader workers, and never the Docker socket.
``./outputs`` and ``./logs`` are copied back at the end, from a stopped container too, so a
failed run keeps its checkpoints.
"""
from __future__ import annotations

import dataclasses
import os
import posixpath
import threading
import time
from pathlib import Path

from ... import copyback, distributed, safefiles
from ...runfiles import BUILD_LOG, OUTPUT_LOG, STDERR_LOG
from ..base import ComputeTarget, Handle, Prepared, Result
from ...runtime.wire import TELEMETRY_DIR, WORKDIR_NOTE, ports_environ, run_environ
from ...errors import DockerUnavailable
from ..warmhost import eligible
from . import engine, warm
from .engine import LABEL_BUILD, LABEL_RUN, LABEL_WORKSPACE
from .users import container_user, let_write
from .images import ensure_image
from .nodes import (NodeGroup, create as nodes_create, extract_archive, mpi_env, node_command,
                    settle_distribution)
from .usage import ContainerUsage

WORKDIR = "/celltrain-run/src"
TELEMETRY_IN_CONTAINER = "/celltrain-run/telemetry"
LIB_IN_CONTAINER = "/celltrain-lib"
COPY_BACK = ("outputs", "logs")
SNAPSHOT_IN_CONTAINER = "/celltrain-run/snapshot"
# Copy the read-only snapshot into a writable workdir, then run the script with the image's
# Python.  (A bind mount plus cp is several times faster than put_archive into the rootfs.)
# Docker makes WORKDIR owned by root: an image whose USER is not root gets a temporary folder.
PYTHON = (f'if [ ! -w . ]; then cd "$(mktemp -d)" && pwd > {TELEMETRY_IN_CONTAINER}/'
          f'{WORKDIR_NOTE}; fi && cp -a {SNAPSHOT_IN_CONTAINER}/. . && '
          'exec "$(command -v python3 || command -v python)" -u "$@"')


# What one process weighs with the CPU scheduler (Docker's default for a container): a
# distributed node's container gets this per rank, so under load its ranks get the CPU that as
# many processes on the host would.
CPU_SHARES_PER_PROC = 1024


class DockerTarget(ContainerUsage, ComputeTarget):
    """One container per run on this machine's Docker engine (or ``DOCKER_HOST``'s)."""

    kind = "docker"
    noun = "container"
    unreachable_name = "the Docker engine"

    def __init__(self, store, run: dict, spec, notify, settings: dict | None = None):
        super().__init__(store, run, spec, notify, settings)
        self.pull_failures = store.root / "pull-failures.json"
        self.client = self.container = None
        self.resumed = False
        self.group = NodeGroup(self)
        self.warm_run = self.warm_setup = None   # a warm run's WarmRun; the next run's worker

    # -- in the submitting process, and when a workspace opens -----------------------------------
    @classmethod
    def validate(cls, spec, settings: dict | None = None):
        """Settle gpus="auto" with the engine, and refuse GPUs it cannot give, a network it
        does not have or more CPUs than it has, before the run exists."""
        client = engine.client()
        gpus = spec.resources.gpus
        if gpus == "auto":
            gpus = "all" if engine.gpu_runtime_available(client) else "none"
        engine.check_gpus(client, gpus)
        engine.check_engine(client, network=spec.network, cpus=spec.resources.cpus)
        spec = spec.replace(resources=dataclasses.replace(spec.resources, gpus=gpus))
        return settle_distribution(spec)

    @classmethod
    def reconcile(cls, store, supervisor_alive) -> None:
        from .leftovers import clean
        clean(store, supervisor_alive)
        warm.tidy(store)

    @classmethod
    def describe_environment(cls, environment, cache_dir: Path) -> dict | None:
        from .probe import describe
        return describe(environment.base_image, cache_dir)

    @classmethod
    def gpu_count(cls, settings: dict | None = None) -> int | None:
        """The host's GPUs when the engine can hand them out (the NVIDIA runtime), else 0."""
        from ...gpus import visible_gpu_count
        return visible_gpu_count() if engine.gpu_runtime_available(engine.client()) else 0

    @classmethod
    def warm_up(cls, settings: dict | None = None) -> None:
        engine.client()      # the SDK's import and the client's version negotiation

    # -- an engine that stops answering ------------------------------------------------------------
    def connect(self) -> None:
        self.client = engine.client()

    def unreachable(self, error: BaseException) -> bool:
        return engine.engine_unreachable(error)

    def reach_wait_s(self) -> float:
        return engine.engine_wait_s()

    def wait_until_reachable(self, within_s: float) -> bool:
        return self.reconnect(within_s)

    def leave_for_reconcile(self) -> str:
        from . import leftovers
        leftovers.mark(self.store, self.run["id"])
        return leftovers.PENDING

    def explain(self, error: BaseException) -> str | None:
        text = str(error).strip() or type(error).__name__
        if "could not select device driver" in text:
            return ("GPUs were asked for but this Docker engine has no GPU runtime: install "
                    "the NVIDIA Container Toolkit and restart dockerd, or run with gpus='none'")
        if engine.engine_unreachable(error) and not isinstance(error, DockerUnavailable):
            return (f"Docker became unreachable ({text[:200]}): start the engine again; the "
                    "run's container may still exist (docker ps -a --filter "
                    "label=celltrain.run)")
        return None

    @property
    def labels(self) -> dict:
        """On every container of the run (build and run), so leftovers can be found."""
        return {LABEL_RUN: self.run["id"], LABEL_WORKSPACE: str(self.store.root)}

    def reconnect(self, within_s: float) -> bool:
        """Wait for an engine that stopped answering; whether it answers again in time."""
        client = engine.wait_for_engine(within_s)
        if client is None:
            return False
        self.client, self.container = client, None
        return True

    # -- Preparing ------------------------------------------------------------------------------
    def prepare(self, should_stop=lambda: None) -> Prepared:
        """Pull or build the run's image; ``should_stop`` as for ensure_image (cancel)."""
        env = self.spec.environment
        self.clean_prepare()   # a build an earlier supervisor of this run left
        tag, image_id, built = ensure_image(self.client, env, self.run_dir / BUILD_LOG,
                                            notify=self.notify,
                                            pull_failures=self.pull_failures,
                                            container_labels=self.labels,
                                            stop_requested=should_stop)
        return Prepared(tag, image_id, built)

    def clean_prepare(self) -> None:
        """Remove build containers this run left (a supervisor that died mid-build)."""
        import docker
        filters = {"label": [f"{LABEL_RUN}={self.run['id']}"]}
        for container in self.client.containers.list(all=True, filters=filters):
            if not container.labels.get(LABEL_BUILD):   # the run's own (images inherit the
                continue                                # label: run containers blank it)
            try:
                container.remove(force=True)
            except docker.errors.APIError:  # being removed already
                pass

    # -- Starting ---------------------------------------------------------------------------------
    def start(self, prepared: Prepared) -> Handle:
        dist = self.spec.distribution
        if dist.nodes > 1:
            handle = nodes_create(self, prepared, self.container_kwargs)
            for cid in handle.ids["containers"]:
                let_write(self.run_dir / TELEMETRY_DIR,
                           container_user(self.client.containers.get(cid)))
            return handle
        kwargs = self.container_kwargs(0, None)
        if eligible(self.spec):
            image = prepared.image_digest or prepared.image
            self.warm_setup = (image, kwargs)
            borrowed = warm.claim(self, image, kwargs)
            if borrowed:
                self.container, key = borrowed
                return Handle(self.kind, {"container": self.container.id, "warm": key})
        return self.create_container(prepared.image, kwargs)

    def create_container(self, image: str, kwargs: dict) -> Handle:
        """The run's own container, created (not started)."""
        # A container of this name was created by a supervisor that died before recording it,
        # so it never started (launch follows the record): make room for the new one.
        import docker
        try:
            self.client.containers.get(kwargs["name"]).remove(force=True)
        except docker.errors.NotFound:
            pass
        self.container = self.client.containers.create(image, **kwargs)
        let_write(self.run_dir / TELEMETRY_DIR, container_user(self.container))
        return Handle(self.kind, {"container": self.container.id})

    def container_kwargs(self, node: int, node_gpus, endpoint: str | None = None) -> dict:
        """The container settings of node ``node`` (its share of the GPUs, for several);
        ``endpoint``: node 0's "host:port" for torchrun's rendezvous where it is not node
        0's container name (the Ray target's nodes, on their hosts' networks)."""
        run, spec, res = self.run, self.spec, self.spec.resources
        dist = spec.distribution
        telemetry = self.run_dir / TELEMETRY_DIR
        telemetry.mkdir(parents=True, exist_ok=True)
        telemetry.chmod(0o700)
        self.run_dir.chmod(0o750)
        volumes = {str(telemetry): {"bind": TELEMETRY_IN_CONTAINER, "mode": "rw"},
                   str(self.run_dir / "snapshot"): {"bind": SNAPSHOT_IN_CONTAINER, "mode": "ro"}}
        for name in spec.lib_packages:
            folder = Path(__import__(name).__file__).resolve().parent
            volumes[str(folder)] = {"bind": f"{LIB_IN_CONTAINER}/{name}", "mode": "ro"}
        for host, inside in spec.mounts.items():
            volumes[host] = {"bind": inside, "mode": "ro"}
        environment = {
            **spec.environment.env, **spec.env_vars,
            **run_environ(run["id"], run["experiment"], spec.params, TELEMETRY_IN_CONTAINER,
                          spec.parent),
            "PYTHONPATH": LIB_IN_CONTAINER, "PYTHONUNBUFFERED": "1",
            # listen on every address inside; Docker binds the host side (kwargs["ports"]);
            # on the host's network, on the host's address and port themselves
            **ports_environ({p: list(hp) if spec.network == "host" else ["0.0.0.0", int(p)]
                             for p, hp in spec.ports.items()}),
        }
        command = ["sh", "-c", PYTHON, "sh", *spec.command()]
        if dist.distributed:
            environment.update(distributed.node_env(node, dist.nodes, node_gpus))
            environment.update(mpi_env(self))
            command = node_command(spec, run["id"], node, PYTHON, TELEMETRY_IN_CONTAINER,
                                   endpoint)
        kwargs = dict(
            command=command,
            entrypoint=[], working_dir=WORKDIR, detach=True, environment=environment,
            volumes=volumes, labels={LABEL_RUN: run["id"], LABEL_BUILD: "",
                                     LABEL_WORKSPACE: str(self.store.root)},
            name=f"celltrain-{run['id']}", init=True, security_opt=["no-new-privileges"],
            shm_size=res.shm_size or "2g",
            device_requests=engine.device_requests(res.gpus if node_gpus is None
                                                   else list(node_gpus)),
        )
        if spec.ports and spec.network != "host":
            kwargs["ports"] = {f"{p}/tcp": (host, int(port))
                               for p, (host, port) in spec.ports.items()}
        if res.memory:
            kwargs["mem_limit"] = res.memory
        if res.cpus:
            kwargs["nano_cpus"] = int(float(res.cpus) * 1e9)
        if dist.distributed and (dist.procs_per_node or 1) > 1:
            # the container is one group for the CPU scheduler: it weighs as its processes
            # would on the host, not as one (its ranks got a quarter of their share at 4)
            kwargs["cpu_shares"] = CPU_SHARES_PER_PROC * dist.procs_per_node
        if spec.network and dist.nodes == 1:
            kwargs["network_mode"] = spec.network
        if os.getuid() != 0:   # if we cannot chown telemetry/, the container writes as our group
            kwargs["group_add"] = [str(os.getgid())]
        return kwargs

    def launch(self, handle: Handle) -> Handle | None:
        if "containers" in handle.ids:
            return self.group.launch(handle)
        if "warm" in handle.ids:
            return warm.launch(self, handle)
        self._get(handle).start()
        return None

    # -- Running ----------------------------------------------------------------------------------
    def _warm(self, handle: Handle):
        if "warm" not in handle.ids:
            return None
        if self.warm_run is None:
            self.warm_run = warm.follow(self, handle)
        return self.warm_run

    def _get(self, handle: Handle):
        container_id = handle.ids["container"]
        if self.container is None or self.container.id != container_id:
            self.container = self.client.containers.get(container_id)
        return self.container

    def exists(self, handle: Handle) -> bool:
        if "containers" in handle.ids:
            return self.group.exists(handle)
        import docker
        if self._warm(handle) and not self._warm(handle).handed():
            return True       # not handed yet: launch hands it over, or starts it cold
        try:
            self._get(handle)
            return True
        except docker.errors.NotFound:
            return False

    def stream_output(self, handle: Handle, resumed: bool) -> threading.Thread:
        """Follow the container's log into output.log (both streams) and stderr.log.

        Docker's own log is followed rather than attaching: attach can drop output written
        between its replay and the live stream.  A resumed supervisor takes only what is new
        (``since``); at the end collect() rewrites both files from the complete log.
        """
        self.resumed = self.resumed or resumed   # once resumed, collect() takes Docker's log
        since = int(time.time()) if resumed else None
        if "containers" in handle.ids:
            return self.group.stream_output(handle, resumed, since)
        if self._warm(handle):
            return self._warm(handle).pump(resumed)

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

    def is_running(self, handle: Handle) -> bool:
        if "containers" in handle.ids:
            return self.group.is_running(handle)
        if self._warm(handle):
            return self._warm(handle).handed() and not self._warm(handle).ended()
        container = self._get(handle)
        container.reload()
        return container.status in ("created", "running", "restarting", "paused")

    def stop(self, handle: Handle, grace: float) -> None:
        if "containers" in handle.ids:
            return self.group.stop(handle, grace)
        if self._warm(handle):
            return self._warm(handle).stop(grace)
        self._get(handle).stop(timeout=int(max(grace, 0)))

    def result(self, handle: Handle) -> Result:
        if "containers" in handle.ids:
            return self.group.result(handle)
        if self._warm(handle):
            return self._warm(handle).result()
        container = self._get(handle)
        container.reload()   # the State after a stop, not the one of the last poll
        state = container.attrs["State"]
        return Result(state.get("ExitCode"), bool(state.get("OOMKilled")))

    # -- Finalizing ---------------------------------------------------------------------------------
    def collect(self, handle: Handle) -> None:
        """Copy ./outputs and ./logs back, and rewrite the captured output from Docker's own log."""
        import docker
        if "containers" in handle.ids:
            return self.group.collect(handle, self._workdir(), extract_archive, self.resumed)
        folders = COPY_BACK
        if self._warm(handle):
            self._warm(handle).sync()
            folders = self._warm(handle).present(COPY_BACK)
        container = self._get(handle)
        workdir = self._workdir()
        skipped = []
        for folder in folders:
            try:
                chunks, _ = container.get_archive(f"{workdir}/{folder}")
            except docker.errors.NotFound:
                continue
            skipped += extract_archive(b"".join(chunks), self.run_dir, folder)
        copyback.report(self.store, self.run["id"], skipped)
        if self.resumed and not self._warm(handle):  # output may have come while nobody listened: take Docker's own copy
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

    def cleanup(self, handle: Handle) -> None:
        if "containers" in handle.ids:
            return self.group.cleanup(handle)
        import docker
        if self._warm(handle):
            return self._warm(handle).cleanup()
        try:
            self._get(handle).remove(force=True)
        except docker.errors.APIError:  # gone already, or being removed by someone else
            pass
        if self.warm_setup is not None:   # the next run of this environment starts warm
            warm.after_cold(self, *self.warm_setup)
