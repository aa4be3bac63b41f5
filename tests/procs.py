"""Finding the detached processes celltrain starts (supervisors, sweep controllers, local warm
workers) by their
command line, so a test can kill one the way a crash or an OOM killer would; and waiting
for what processes and threads do (``until``)."""
from __future__ import annotations

import os
import time

import pytest


def process_with(*needles: bytes) -> int | None:
    """The pid of a process with each of ``needles`` among its arguments, else None."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            if all(needle in cmd for needle in needles):
                return int(entry)
    return None


def until(check, what, within=60.0):
    """Wait for a condition; the deadline only fails the test (no timing assertion)."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {within}s")
        time.sleep(0.05)


def stop_local_workers(workspace) -> None:
    """The local target's warm workers are processes of this machine: end them with the test
    (a worker still importing too)."""
    import signal
    from celltrain.targets.localwarm import worker_pid
    from celltrain.targets.warmhost import WARM_DIR
    for here in (workspace.path / WARM_DIR).glob("local-*"):
        pid = worker_pid(here)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)


HOOKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fault_hooks")


def with_fault_hooks(monkeypatch) -> None:
    """Supervisors started from now on load tests/fault_hooks (each run its own: no spare)."""
    import celltrain.workspace
    monkeypatch.setattr(celltrain.workspace, "SPARES", False)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (HOOKS, os.environ.get("PYTHONPATH")) if p))


def until_held(hold, run, within: float = 120.0) -> None:
    """Wait until the run's supervisor waits at a fault hook's ``hold`` file."""
    from celltrain import states
    deadline = time.monotonic() + within
    while not os.path.exists(f"{hold}.reached"):
        assert time.monotonic() < deadline and run.status in states.ACTIVE, run.reason
        time.sleep(0.1)
