"""The spare supervisor: a process that has paid for its start-up before the next run exists.

``python -m celltrain.spare WORKSPACE``.  Starting Python and importing a target's SDK (the
docker SDK: about half a second) is paid while the user is typing; the next submission hands
its run id to the spare through a fifo, and the spare becomes that run's supervisor.
"""
from __future__ import annotations

import os
import select
import sys
import time
from pathlib import Path

from .locks import take_lock
from .store import Store
from .supervisor import Supervisor
from .targets import kinds, target_class

SPARE_IDLE_S = float(os.environ.get("CELLTRAIN_SPARE_IDLE", "300"))
SPARE_LOCK, SPARE_FIFO = "spare.lock", "spare.fifo"
# whether the spare connects to the saved targets' clusters ahead of a run (README "Ray clusters")
CONNECT = os.environ.get("CELLTRAIN_SPARE_CONNECT", "1") != "0"


def spare(workspace: str) -> int:
    """Wait, with Docker's client already imported, for a run to supervise.

    Starting Python and importing the docker SDK takes about half a second: a spare that has
    done it while the user was typing makes the next submission start that much sooner.  One
    spare per workspace (a lock); it leaves after SPARE_IDLE_S idle.  A submitter that hands it
    a run id checks the run's lock and starts a fresh supervisor if the spare did not take it.
    """
    root = Path(workspace)
    lock = open(root / SPARE_LOCK, "a")
    if not take_lock(lock, 0):
        return 0
    warmed = warm_up(root)
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
    supervisor = Supervisor(root, data.split(b"\n")[0].decode())
    _log_to(supervisor.run_dir / "supervisor.log")
    supervisor.log(f"spare supervisor {os.getpid()} was handed the run")
    cool_down(supervisor, warmed)
    return supervisor.main()


def warm_up(root: Path) -> list:
    """Pay for the targets' imports and connections now: every kind's, then each saved
    target's (a saved Ray target's cluster is connected to here, so its run's supervisor
    does not wait for Ray's import and ``ray.init``; a workspace without one never imports
    Ray).  Failures are left to the run's own supervisor to report.  Returns the classes
    warmed up with a saved target's settings."""
    for kind in kinds():
        try:
            target_class(kind).warm_up()
        except Exception:  # no engine now: the run's own supervisor will say so
            pass
    if not CONNECT:
        return []
    try:
        store = Store(root)
        saved = store.saved_targets()
        store.close()
    except Exception:  # no store yet
        saved = []
    warmed = []
    for target in saved:
        try:
            cls = target_class(target["kind"])
            cls.warm_up(target["settings"])
        except Exception:  # the kind's package is gone, its cluster is down: said at the run
            continue
        if cls not in warmed:
            warmed.append(cls)
    return warmed


def cool_down(supervisor: Supervisor, warmed: list) -> None:
    """Let go of the connections the run handed to this spare does not use (a Docker run's
    supervisor is no Ray driver: it must not depend on a cluster staying up)."""
    run = supervisor.store.get_run(supervisor.run_id) or {}
    settings = (run.get("spec") or {}).get("target_settings") or {}
    for cls in warmed:
        try:
            cls.cool_down(run.get("target"), settings)
        except Exception as e:  # noqa: BLE001  the run goes on; the log says it
            supervisor.log(f"letting go of {cls.kind}'s connection failed: {e}")


def _log_to(path: Path) -> None:
    """Point stderr (until now /dev/null) at the run's supervisor.log, as a fresh supervisor's is."""
    sys.stderr.flush()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
    try:
        os.dup2(fd, 2)
    finally:
        os.close(fd)


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
    if len(argv) != 1:
        print("usage: python -m celltrain.spare WORKSPACE", file=sys.stderr)
        return 2
    return spare(argv[0])


if __name__ == "__main__":
    sys.exit(main())
