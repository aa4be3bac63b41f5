"""The supervisor: one detached process per run that carries it through its states.

``python -m celltrain.supervisor WORKSPACE RUN_ID``.  It holds ``supervisor.lock`` for its whole
life (so nobody starts a second one), picks up wherever the run's recorded state says, and turns
every failure into a Failed state with a reason a person understands.  If it dies, the next
process that opens the workspace starts a new one, which re-attaches or finalizes.
"""
from __future__ import annotations

import fcntl
import os
import select
import sys
import time
import traceback
from pathlib import Path

from . import states
from .errors import CelltrainError, DockerUnavailable, ImageBuildError
from .runfiles import OUTPUT_LOG, STDERR_LOG
from .store import Store
from .telemetry import TELEMETRY_DIR, events_path, ingest

POLL_S = 0.05
STATE_POLL_S = 0.5
DEFAULT_GRACE_S = 10.0
LOCK_TRIES_S = 1.0
SPARE_IDLE_S = float(os.environ.get("CELLTRAIN_SPARE_IDLE", "300"))
SPARE_LOCK, SPARE_FIFO = "spare.lock", "spare.fifo"
FAILURE_FILE = "failure.txt"  # a runner may explain its own failure here (e.g. %%train)
STDERR_TAIL_LINES = 15


class Canceled(Exception):
    pass


def make_backend(store: Store, run: dict, notify):
    if run["target"] == "local":
        from .backend_local import LocalBackend
        return LocalBackend(store, run, notify)
    from .backend_docker import DockerBackend
    return DockerBackend(store, run, notify)


class Supervisor:
    def __init__(self, workspace: str | Path, run_id: str, clock=time.monotonic):
        self.store = Store(workspace)
        self.run_id = run_id
        self.run_dir = self.store.run_dir(run_id)
        self.clock = clock
        self.last_steps: dict[str, int] | None = None
        self.events = events_path(self.store, run_id)
        self.ingested_size = -1

    def log(self, message: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)

    def notify(self, message: str) -> None:
        """A note for the person watching: into the run's output, ahead of the script's own."""
        self.log(message)
        with open(self.run_dir / OUTPUT_LOG, "a") as out:
            out.write(f"[celltrain] {message}\n")

    def status(self, status: str, detail: str | None = None, **fields) -> None:
        self.log(f"{status}{': ' + detail if detail else ''}")
        self.store.set_status(self.run_id, status, detail, **fields)

    def cancel_requested(self) -> bool:
        return bool(self.store.get_run(self.run_id)["cancel_requested"])

    def ingest(self) -> None:
        """Move new telemetry into the store; a stat, not a query, when nothing was logged."""
        try:
            size = os.path.getsize(self.events)
        except FileNotFoundError:
            return
        if size == self.ingested_size:
            return
        if self.last_steps is None:
            self.last_steps = self.store.last_steps(self.run_id)
        ingest(self.store, self.run_id, self.last_steps)
        self.ingested_size = size

    # -- the life of a run ------------------------------------------------------------------------
    def main(self) -> int:
        lock_file = open(self.run_dir / "supervisor.lock", "a")
        if not _lock(lock_file, LOCK_TRIES_S):
            return 0  # another supervisor has this run
        run = self.store.get_run(self.run_id)
        if run is None or states.is_terminal(run["status"]):
            return 0
        try:
            self.carry(run)
        except Canceled:
            self.status(states.CANCELED, reason="canceled before the run started",
                        ended=time.time())
        except ImageBuildError as e:
            self.status(states.FAILED, "image build failed", reason=str(e), ended=time.time())
        except DockerUnavailable as e:
            self.status(states.FAILED, "Docker unreachable", reason=str(e), ended=time.time())
        except Exception as e:  # every failure becomes a state with a reason
            self.log(traceback.format_exc())
            self.status(states.FAILED, "supervisor error",
                        reason=f"celltrain could not carry the run: {_docker_reason(e)}",
                        ended=time.time())
        return 0

    def carry(self, run: dict) -> None:
        backend = make_backend(self.store, run, notify=self.notify)
        handle = run["container_id"]
        resumed = handle is not None
        if handle is None:
            if self.cancel_requested():
                raise Canceled
            if run["status"] != states.PREPARING:
                self.status(states.PREPARING, "preparing the image")
            prepared = backend.prepare()
            detail = ("image cached" if not prepared["image_built"] else "image built")
            if self.cancel_requested():
                raise Canceled
            self.status(states.STARTING, f"{detail}: {prepared['image']}",
                        image=prepared["image"], image_digest=prepared["image_digest"])
            handle = backend.start(prepared["image"])
            self.store.update_run(self.run_id, container_id=handle)
            backend.launch(handle)
            self.status(states.RUNNING, started=time.time())
        elif not backend.exists(handle):
            self.status(states.FAILED, "container vanished", ended=time.time(),
                        reason=f"the run's container {handle[:12]} no longer exists (removed "
                               "by hand or by a Docker prune?); its outputs are lost")
            return
        elif run["status"] in (states.STARTING,):
            if not backend.is_running(handle):
                backend.launch(handle)
            self.status(states.RUNNING, started=time.time())
        canceled, timed_out = self.watch(backend, handle, resumed)
        self.finalize(backend, handle, canceled, timed_out)

    def watch(self, backend, handle: str, resumed: bool) -> tuple[bool, bool]:
        run = self.store.get_run(self.run_id)
        opts = run["options"]
        timeout = opts.get("timeout")
        started = run["started"] or time.time()
        deadline = None if timeout is None else self.clock() + timeout - (time.time() - started)
        pump = backend.stream_output(handle, resumed)
        canceled = timed_out = False
        next_state_check = 0.0
        while True:
            self.ingest()
            now = self.clock()
            output_ended = pump is not None and not pump.is_alive()
            if now >= next_state_check or output_ended:
                next_state_check = now + STATE_POLL_S
                if not backend.is_running(handle):
                    break
                if not canceled and self.cancel_requested():
                    canceled = True
                    self.log("cancel requested: SIGTERM, then SIGKILL after the grace period")
                    backend.stop(handle, self.store.get_run(self.run_id)["options"]
                                 .get("cancel_grace", DEFAULT_GRACE_S))
                elif deadline is not None and now > deadline and not timed_out:
                    timed_out = True
                    self.log(f"timed out after {timeout}s")
                    backend.stop(handle, DEFAULT_GRACE_S)
            if pump is not None and pump.is_alive():
                pump.join(POLL_S)       # wakes the moment the output ends (the run exited)
            else:
                time.sleep(POLL_S)
        if pump is not None:
            pump.join(timeout=5)
        return canceled, timed_out

    def finalize(self, backend, handle: str, canceled: bool, timed_out: bool) -> None:
        self.status(states.FINALIZING, "copying ./outputs and ./logs back")
        exit_code, oom = backend.result(handle)
        try:
            backend.collect(handle)
        finally:
            self.ingest()
        run = self.store.get_run(self.run_id)
        ended = time.time()
        fields = dict(exit_code=exit_code, ended=ended)
        if canceled or (run["cancel_requested"] and exit_code != 0):
            self.status(states.CANCELED, reason="canceled by the user", **fields)
        elif timed_out:
            timeout = run["options"].get("timeout")
            self.status(states.FAILED, reason=f"timed out after {timeout:g}s (timeout="
                        f"{timeout:g}); the run was stopped", **fields)
        elif oom:
            self.status(states.FAILED, reason=(
                f"out of memory: the container was OOM-killed (exit code {exit_code}); "
                f"raise memory= (now {run['options'].get('memory') or 'no limit'}) or lower "
                "the batch size"), **fields)
        elif exit_code == 0:
            self.status(states.COMPLETED, **fields)
        else:
            self.status(states.FAILED, reason=self.failure_reason(exit_code), **fields)
        backend.cleanup(handle)

    def failure_reason(self, exit_code: int | None) -> str:
        explained = self.run_dir / TELEMETRY_DIR / FAILURE_FILE
        if explained.exists():
            return explained.read_text(errors="replace").strip()
        head = f"exit code {exit_code}"
        if exit_code == 137:
            head += " (killed by SIGKILL)"
        elif exit_code == 143:
            head += " (terminated by SIGTERM)"
        stderr = self.run_dir / STDERR_LOG
        lines = stderr.read_text(errors="replace").rstrip().splitlines() if stderr.exists() else []
        if lines:
            return head + "; last lines of stderr:\n" + "\n".join(lines[-STDERR_TAIL_LINES:])
        return head + " (nothing on stderr)"


def _docker_reason(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    if "could not select device driver" in text:
        return ("GPUs were asked for but this Docker engine has no GPU runtime: install the "
                "NVIDIA Container Toolkit and restart dockerd, or run with gpus='none'")
    if isinstance(e, CelltrainError):
        return text
    try:
        import requests
        if isinstance(e, requests.exceptions.ConnectionError):
            return (f"Docker became unreachable ({text[:200]}): start the engine again; the "
                    "run's container may still exist (docker ps -a --filter label=celltrain.run)")
    except ImportError:
        pass
    return f"{type(e).__name__}: {text}"


def _lock(f, within_s: float) -> bool:
    """Take an exclusive lock, retrying briefly: a liveness check may hold it for a moment."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)


def spare(workspace: str) -> int:
    """Wait, with Docker's client already imported, for a run to supervise.

    Starting Python and importing the docker SDK takes about half a second: a spare that has
    done it while the user was typing makes the next submission start that much sooner.  One
    spare per workspace (a lock); it leaves after SPARE_IDLE_S idle.  A submitter that hands it
    a run id checks the run's lock and starts a fresh supervisor if the spare did not take it.
    """
    root = Path(workspace)
    lock = open(root / SPARE_LOCK, "a")
    if not _lock(lock, 0):
        return 0
    from . import backend_docker, dockerutil  # noqa: F401  (pay for the imports now)
    try:
        dockerutil.client()        # and for the client's version negotiation
    except Exception:  # no engine now: the run's own supervisor will say so
        pass
    fifo = root / SPARE_FIFO
    try:
        os.mkfifo(fifo)
    except FileExistsError:
        pass
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    keepalive = os.open(fifo, os.O_WRONLY)  # so select() waits for data instead of EOF
    deadline = time.monotonic() + SPARE_IDLE_S
    data = b""
    try:
        while b"\n" not in data:
            if time.monotonic() > deadline or not root.exists():
                return 0
            if select.select([reader], [], [], 1.0)[0]:
                data += os.read(reader, 4096)
    finally:
        os.close(reader)
        os.close(keepalive)
        lock.close()
    return Supervisor(root, data.split(b"\n")[0].decode()).main()


def hand_to_spare(workspace: Path, run_id: str) -> bool:
    """Give a run to the workspace's spare supervisor if one is waiting."""
    try:
        fd = os.open(workspace / SPARE_FIFO, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:   # no fifo, or nobody reading it
        return False
    try:
        os.write(fd, run_id.encode() + b"\n")
    finally:
        os.close(fd)
    return True


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "--spare":
        return spare(argv[1])
    if len(argv) != 2:
        print("usage: python -m celltrain.supervisor WORKSPACE RUN_ID\n"
              "       python -m celltrain.supervisor --spare WORKSPACE", file=sys.stderr)
        return 2
    return Supervisor(argv[0], argv[1]).main()


if __name__ == "__main__":
    sys.exit(main())
